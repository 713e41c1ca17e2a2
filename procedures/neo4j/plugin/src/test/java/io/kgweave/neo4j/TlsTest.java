package io.kgweave.neo4j;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import io.grpc.TlsChannelCredentials;
import java.io.File;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.Map;
import java.util.stream.Stream;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestInstance;
import org.neo4j.driver.AuthTokens;
import org.neo4j.driver.Driver;
import org.neo4j.driver.GraphDatabase;
import org.neo4j.driver.Record;
import org.neo4j.driver.Session;
import org.neo4j.driver.exceptions.ClientException;
import org.neo4j.harness.Neo4j;

/**
 * The plugin calls a real {@code kgweave serve} that serves TLS only, requires a client
 * certificate (mTLS) and checks bearer tokens (a read token and an admin token): certificates
 * made here with the {@code openssl} command (skipped without it), one CA for the server's and
 * the client's. A missing piece (the CA, the client certificate, TLS itself, the token) is one
 * readable line, never a hang or a stack trace.
 */
@TestInstance(TestInstance.Lifecycle.PER_CLASS)
class TlsTest {
  static final String READ_TOKEN = "read-t0ken-for-tests";
  static final String ADMIN_TOKEN = "admin-t0ken-for-tests";

  Path certs;
  KgweaveServer server;
  Neo4j neo4j;
  Driver driver;

  @BeforeAll
  void start() throws Exception {
    assumeTrue(onPath("openssl"), "the openssl command is not installed");
    certs = Files.createTempDirectory("kgweave-tls-test");
    authority("ca");
    leaf("server", "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n");
    leaf("client", "extendedKeyUsage=clientAuth\n");
    server = new KgweaveServer(
        Map.of(
            "KGWEAVE_TLS_CERT", pem("server.pem"),
            "KGWEAVE_TLS_KEY", pem("server.key"),
            "KGWEAVE_TLS_CLIENT_CA", pem("ca.pem"),
            "KGWEAVE_READ_TOKENS", READ_TOKEN,
            "KGWEAVE_ADMIN_TOKEN", ADMIN_TOKEN),
        TlsChannelCredentials.newBuilder()
            .trustManager(certs.resolve("ca.pem").toFile())
            .keyManager(certs.resolve("client.pem").toFile(), certs.resolve("client.key").toFile())
            .build());
    neo4j = Plugin.start();
    driver = GraphDatabase.driver(neo4j.boltURI(), AuthTokens.none());
  }

  @AfterAll
  void stop() throws Exception {
    for (AutoCloseable part : new AutoCloseable[] {driver, neo4j, server}) {
      if (part != null) {
        part.close();
      }
    }
    KgweaveClient.closeAll();
    if (certs != null) {
      try (Stream<Path> files = Files.walk(certs)) {
        files.sorted(Comparator.reverseOrder()).map(Path::toFile).forEach(File::delete);
      }
    }
  }

  /** kgweave.conf: the server's address, then these lines. */
  void conf(String... lines) {
    List<String> all = new ArrayList<>(List.of("kgweave.address=127.0.0.1:" + server.grpcPort));
    all.addAll(List.of(lines));
    Plugin.writeConf(neo4j, all.toArray(String[]::new));
  }

  /** The CA, the client certificate and key, and the token. */
  String[] trusted(String token) {
    return new String[] {
      "kgweave.tls_ca=" + pem("ca.pem"),
      "kgweave.tls_client_cert=" + pem("client.pem"),
      "kgweave.tls_client_key=" + pem("client.key"),
      "kgweave.token=" + token};
  }

  List<Record> cypher(String query) {
    try (Session session = driver.session()) {
      return session.run(query).list();
    }
  }

  String error(String query) {
    try (Session session = driver.session()) {
      String message =
          assertThrows(ClientException.class, () -> session.run(query).list()).getMessage();
      assertEquals(-1, message.indexOf('\n'), message);
      assertEquals(-1, message.indexOf("Exception"), message);
      return message;
    }
  }

  @Test
  void queriesAndAdminCallsGoOverTlsWithTheClientCertificateAndTheirTokens() {
    conf(trusted(READ_TOKEN));
    Record status = cypher("CALL kgweave.status() YIELD ready RETURN ready").get(0);
    assertTrue(status.get("ready").asBoolean());
    List<Record> tails = cypher("CALL kgweave.predict.tails('alan_turing', 'born_in', 3)");
    assertEquals(3, tails.size());
    // a read token lists models but may not activate one; the admin token may
    String active = cypher("CALL kgweave.admin.models() YIELD version, active "
        + "WHERE active RETURN version").get(0).get("version").asString();
    String activate = "CALL kgweave.admin.activate('" + active + "')";
    assertTrue(error(activate).startsWith("kgweave: PERMISSION_DENIED: "), error(activate));
    conf(trusted(ADMIN_TOKEN));
    assertEquals(active, cypher(activate).get(0).get("version").asString());
  }

  @Test
  void aWrongOrMissingTokenIsUnauthenticated() {
    String query = "CALL kgweave.status()";
    conf(trusted("not-a-token"));
    assertTrue(error(query).startsWith("kgweave: UNAUTHENTICATED: "), error(query));
    conf(trusted(""));
    assertTrue(error(query).startsWith("kgweave: UNAUTHENTICATED: "), error(query));
  }

  /** Each missing piece ends the connection, as one UNAVAILABLE line. */
  @Test
  void withoutTlsTheCaOrTheClientCertificateTheServerIsNotReached() {
    String query = "RETURN kgweave.score('alan_turing', 'born_in', 'london')";
    String unavailable = "kgweave: UNAVAILABLE: no kgweave server answers at 127.0.0.1:"
        + server.grpcPort;
    conf("kgweave.token=" + READ_TOKEN); // plaintext to a TLS port
    assertTrue(error(query).startsWith(unavailable), error(query));
    conf("kgweave.tls=true", "kgweave.tls_client_cert=" + pem("client.pem"),
        "kgweave.tls_client_key=" + pem("client.key"), "kgweave.token=" + READ_TOKEN);
    assertTrue(error(query).startsWith(unavailable), error(query)); // the JVM's CAs: untrusted
    conf("kgweave.tls_ca=" + pem("ca.pem"), "kgweave.token=" + READ_TOKEN); // no client cert
    assertTrue(error(query).startsWith(unavailable), error(query));
  }

  @Test
  void tlsSettingsAreCheckedAsTheyAreRead() {
    String query = "CALL kgweave.status()";
    conf("kgweave.tls_ca=" + certs.resolve("missing.pem"));
    assertTrue(error(query).startsWith("kgweave: INVALID_ARGUMENT: kgweave.tls_ca: cannot read "),
        error(query));
    conf("kgweave.tls_ca=" + pem("ca.pem"), "kgweave.tls_client_cert=" + pem("client.pem"));
    assertTrue(error(query).startsWith("kgweave: INVALID_ARGUMENT: kgweave.tls_client_cert and "
        + "kgweave.tls_client_key go together"), error(query));
    conf("kgweave.tls_client_cert=" + pem("client.pem"),
        "kgweave.tls_client_key=" + pem("client.key"));
    assertTrue(error(query).startsWith("kgweave: INVALID_ARGUMENT: kgweave.tls_client_cert needs "
        + "TLS"), error(query));
  }

  // ---- certificates (the openssl command, as tests/test_security.py makes them)

  String pem(String name) {
    return certs.resolve(name).toString();
  }

  void authority(String name) throws IOException, InterruptedException {
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-nodes", "-keyout", name + ".key", "-out", name + ".pem", "-days", "2",
        "-subj", "/CN=" + name, "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign");
  }

  void leaf(String name, String extensions) throws IOException, InterruptedException {
    Files.writeString(certs.resolve(name + ".ext"), extensions);
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", name + ".key", "-out", name + ".csr", "-subj", "/CN=" + name);
    openssl("x509", "-req", "-in", name + ".csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", name + ".pem", "-days", "2", "-extfile", name + ".ext");
  }

  void openssl(String... args) throws IOException, InterruptedException {
    List<String> command = new ArrayList<>(List.of("openssl"));
    command.addAll(List.of(args));
    Path log = certs.resolve("openssl.log");
    Process process = new ProcessBuilder(command).directory(certs.toFile())
        .redirectErrorStream(true).redirectOutput(log.toFile()).start();
    assertEquals(0, process.waitFor(), Files.readString(log));
  }

  static boolean onPath(String command) {
    String path = System.getenv("PATH");
    return path != null && Stream.of(path.split(File.pathSeparator))
        .anyMatch(dir -> Files.isExecutable(Path.of(dir, command)));
  }
}
