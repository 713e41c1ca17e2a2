package io.kgweave.neo4j;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.jar.JarEntry;
import java.util.jar.JarFile;
import org.junit.jupiter.api.Test;
import org.neo4j.driver.AuthTokens;
import org.neo4j.driver.Driver;
import org.neo4j.driver.GraphDatabase;
import org.neo4j.driver.Record;
import org.neo4j.driver.Session;
import org.neo4j.driver.exceptions.ClientException;
import org.neo4j.configuration.GraphDatabaseSettings;
import org.neo4j.harness.Neo4j;
import org.neo4j.harness.Neo4jBuilders;

/**
 * The jar that goes into plugins/, not target/classes: run by the `shaded-jar` execution after
 * the shade step, with the jar in place of the classes folder. Everything it bundles is
 * relocated under io.kgweave.shaded; loaded from a plugins folder it is sandboxed until
 * unrestricted, and then its shaded gRPC reaches a real kgweave server.
 */
class ShadedJarTest {
  @Test
  void theJarIsRelocatedAndItsShadedGrpcWorks() throws IOException {
    Path jar = Path.of(KgweaveClient.class.getProtectionDomain().getCodeSource().getLocation()
        .getPath());
    assertTrue(jar.toString().endsWith(".jar"), "testing " + jar + ", not the shaded jar");
    List<String> stray = new ArrayList<>();
    try (JarFile file = new JarFile(jar.toFile())) {
      for (JarEntry entry : file.stream().toList()) {
        String name = entry.getName();
        if (name.endsWith(".class") && !name.startsWith("io/kgweave/")) {
          stray.add(name);
        }
      }
      assertTrue(file.getEntry("io/kgweave/shaded/io/grpc/ManagedChannel.class") != null);
      assertTrue(file.getEntry(
          "io/kgweave/shaded/com/google/protobuf/GeneratedMessageV3.class") != null);
    }
    assertEquals(List.of(), stray, "classes outside io.kgweave in the jar");

    // installed as a user installs it: the jar alone in the plugins folder
    Path plugins = Files.createTempDirectory("kgweave-plugins");
    Files.copy(jar, plugins.resolve(jar.getFileName()));
    try (Neo4j sandboxed = Neo4jBuilders.newInProcessBuilder()
            .withConfig(GraphDatabaseSettings.plugin_dir, plugins).withDisabledServer().build()) {
      // without dbms.security.procedures.unrestricted=kgweave.* Neo4j refuses to run them
      Exception e = assertThrows(Exception.class, () -> sandboxed.defaultDatabaseService()
          .executeTransactionally("CALL kgweave.status()", Map.of(), r -> r.stream().toList()));
      assertTrue(e.getMessage().contains("dbms.security.procedures.unrestricted"), e.getMessage());
    }
    try (KgweaveServer server = new KgweaveServer();
        Neo4j neo4j = Neo4jBuilders.newInProcessBuilder()
            .withConfig(GraphDatabaseSettings.plugin_dir, plugins)
            .withConfig(GraphDatabaseSettings.procedure_unrestricted, List.of("kgweave.*"))
            .build();
        Driver driver = GraphDatabase.driver(neo4j.boltURI(), AuthTokens.none());
        Session session = driver.session()) {
      Plugin.writeConf(neo4j, "kgweave.address=" + server.address(), "kgweave.deadline_ms=120000");
      Record status = session.run("CALL kgweave.status()").single();
      assertTrue(status.get("ready").asBoolean());
      List<Record> rows = session.run(
          "CALL kgweave.predict.tails('Alan Turing', 'born_in', 3) YIELD rank, entity, version")
          .list();
      assertEquals(List.of(1L, 2L, 3L), rows.stream().map(r -> r.get("rank").asLong()).toList());
      assertEquals(status.get("version").asString(), rows.get(0).get("version").asString());
      ClientException e = assertThrows(ClientException.class,
          () -> session.run("CALL kgweave.predict.tails('Nobody Atall', 'born_in')").list());
      assertTrue(e.getMessage().startsWith("kgweave: NOT_FOUND: unknown entity"), e.getMessage());
      assertFalse(e.getMessage().contains("\n"));
    } finally {
      Files.deleteIfExists(plugins.resolve(jar.getFileName()));
      Files.deleteIfExists(plugins);
    }
  }
}
