package io.kgweave.neo4j;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import org.neo4j.configuration.GraphDatabaseSettings;
import org.neo4j.harness.Neo4j;
import org.neo4j.harness.Neo4jBuilder;
import org.neo4j.harness.Neo4jBuilders;

/** A harness Neo4j with the plugin's classes registered, as the jar in plugins/ registers them. */
final class Plugin {
  static final List<Class<?>> PROCEDURES = List.of(
      PredictProcedures.class, KnowledgeProcedures.class, AdminProcedures.class);

  private Plugin() {}

  static Neo4jBuilder register(Neo4jBuilder builder) {
    for (Class<?> procedures : PROCEDURES) {
      builder = builder.withProcedure(procedures);
    }
    return builder.withFunction(KgweaveFunctions.class)
        .withConfig(GraphDatabaseSettings.procedure_unrestricted, List.of("kgweave.*"));
  }

  /** A Neo4j whose conf/kgweave.conf holds these lines (Bolt on a free port). */
  static Neo4j start(String... confLines) {
    Neo4j neo4j = register(Neo4jBuilders.newInProcessBuilder()).build();
    writeConf(neo4j, confLines);
    return neo4j;
  }

  static void writeConf(Neo4j neo4j, String... confLines) {
    Path conf = neo4j.config().get(GraphDatabaseSettings.neo4j_home).resolve("conf");
    try {
      Files.createDirectories(conf);
      Files.writeString(conf.resolve(KgweaveConfig.FILE), String.join("\n", confLines) + "\n",
          StandardCharsets.UTF_8);
    } catch (IOException e) {
      throw new UncheckedIOException(e);
    }
  }
}
