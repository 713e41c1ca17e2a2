package io.kgweave.neo4j;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.neo4j.graphdb.GraphDatabaseService;
import org.neo4j.harness.Neo4j;
import org.neo4j.harness.Neo4jBuilders;

/**
 * docs/cypher-signatures.md is what SHOW PROCEDURES / SHOW FUNCTIONS print for the plugin, so the
 * cookbook's signatures cannot drift. Regenerate with
 * {@code mvn -q -B test -Dtest=SignaturesTest -Dkgweave.signatures.write=true}.
 */
class SignaturesTest {
  static final Path DOCS = Path.of(System.getProperty("kgweave.docs", "../../../docs"));
  static final Path FILE = DOCS.resolve("cypher-signatures.md");
  /** The cookbook holds the same text between these markers. */
  static final Path COOKBOOK = DOCS.resolve("cypher.md");
  static final String BEGIN = "<!-- signatures:begin -->\n";
  static final String END = "<!-- signatures:end -->\n";

  static String generate(GraphDatabaseService db) {
    StringBuilder out = new StringBuilder();
    out.append("<!-- Generated from the plugin itself (SHOW PROCEDURES / SHOW FUNCTIONS in a Neo4j "
        + "with the plugin loaded).\n     Do not edit: in procedures/neo4j/plugin run\n"
        + "     mvn -q -B test -Dtest=SignaturesTest -Dkgweave.signatures.write=true -->\n");
    section(out, db, "Procedures", "SHOW PROCEDURES YIELD name, signature, description, admin "
        + "WHERE name STARTS WITH 'kgweave.' RETURN name, signature, description, admin "
        + "ORDER BY name");
    section(out, db, "Functions", "SHOW FUNCTIONS YIELD name, signature, description "
        + "WHERE name STARTS WITH 'kgweave.' RETURN name, signature, description, false AS admin "
        + "ORDER BY name");
    return out.toString();
  }

  private static void section(StringBuilder out, GraphDatabaseService db, String title,
      String query) {
    out.append("\n### ").append(title).append("\n");
    List<Map<String, Object>> rows =
        db.executeTransactionally(query, Map.of(), r -> r.stream().toList());
    for (Map<String, Object> row : rows) {
      String description = (String) row.get("description");
      assertFalse(description == null || description.isBlank(), row.get("name") + " has none");
      String text = description.replaceFirst("^[^ ]+\\(.*?\\) - ", "");
      out.append("\n#### `").append(row.get("name")).append("`")
          .append(Boolean.TRUE.equals(row.get("admin")) ? " (admin)" : "")
          .append("\n\n```\n").append(row.get("signature")).append("\n```\n\n")
          .append(Character.toUpperCase(text.charAt(0))).append(text.substring(1)).append("\n");
    }
  }

  @Test
  void docsHoldTheSignaturesThePluginRegisters() throws IOException {
    try (Neo4j neo4j = Plugin.register(Neo4jBuilders.newInProcessBuilder())
        .withDisabledServer().build()) {
      String generated = generate(neo4j.defaultDatabaseService());
      String cookbook = Files.readString(COOKBOOK, StandardCharsets.UTF_8);
      int begin = cookbook.indexOf(BEGIN);
      int end = cookbook.indexOf(END);
      assertTrue(begin >= 0 && end > begin, COOKBOOK + " lacks the signatures markers");
      String withSignatures = cookbook.substring(0, begin + BEGIN.length()) + generated
          + cookbook.substring(end);
      if (Boolean.getBoolean("kgweave.signatures.write")) {
        Files.writeString(FILE, generated, StandardCharsets.UTF_8);
        Files.writeString(COOKBOOK, withSignatures, StandardCharsets.UTF_8);
      }
      String stale = " is stale: regenerate it with "
          + "mvn -q -B test -Dtest=SignaturesTest -Dkgweave.signatures.write=true";
      String committed = Files.exists(FILE) ? Files.readString(FILE, StandardCharsets.UTF_8) : "";
      assertEquals(generated, committed, FILE + stale);
      assertEquals(withSignatures, Files.readString(COOKBOOK, StandardCharsets.UTF_8),
          COOKBOOK + stale);
    }
  }
}
