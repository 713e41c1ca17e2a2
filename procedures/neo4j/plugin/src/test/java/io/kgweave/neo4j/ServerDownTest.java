package io.kgweave.neo4j;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

import org.junit.jupiter.api.Test;
import org.neo4j.driver.AuthTokens;
import org.neo4j.driver.Driver;
import org.neo4j.driver.GraphDatabase;
import org.neo4j.driver.Session;
import org.neo4j.driver.exceptions.ClientException;
import org.neo4j.harness.Neo4j;

/**
 * No kgweave server at the configured address: every call fails at once with UNAVAILABLE (the
 * deadline is an hour, so a hang would surface as DEADLINE_EXCEEDED, never as this message).
 */
class ServerDownTest {
  @Test
  void aDownServerIsOneReadableErrorNotAHang() {
    String address = "127.0.0.1:" + KgweaveServer.freePort();
    try (Neo4j neo4j = Plugin.start(
            "kgweave.address=" + address, "kgweave.deadline_ms=3600000");
        Driver driver = GraphDatabase.driver(neo4j.boltURI(), AuthTokens.none());
        Session session = driver.session()) {
      String expected = "kgweave: UNAVAILABLE: no kgweave server answers at " + address;
      for (String query : new String[] {
          "CALL kgweave.status()",
          "CALL kgweave.predict.tails('alan_turing', 'born_in', 3)",
          "RETURN kgweave.score('alan_turing', 'born_in', 'london')",
          "CALL kgweave.admin.models()"}) {
        ClientException e = assertThrows(ClientException.class, () -> session.run(query).list());
        String message = e.getMessage();
        assertEquals(expected, message.substring(0, Math.min(message.length(), expected.length())),
            message);
        assertEquals(-1, message.indexOf('\n'), message);
        assertEquals(-1, message.indexOf("Exception"), message);
      }
    }
  }
}
