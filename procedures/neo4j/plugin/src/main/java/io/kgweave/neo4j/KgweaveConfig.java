package io.kgweave.neo4j;

import io.grpc.ChannelCredentials;
import io.grpc.InsecureChannelCredentials;
import io.grpc.TlsChannelCredentials;
import java.io.IOException;
import java.io.StringReader;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.util.List;
import java.util.Locale;
import java.util.Objects;
import java.util.Properties;
import java.util.concurrent.atomic.AtomicReference;
import org.neo4j.configuration.Config;
import org.neo4j.configuration.GraphDatabaseSettings;

/**
 * The plugin's settings. Neo4j 5 refuses settings outside its own namespaces in neo4j.conf, so
 * they live in {@code kgweave.conf} beside it (the conf folder: $NEO4J_CONF, the server's
 * --config-dir, or NEO4J_HOME/conf), like APOC's apoc.conf; a Java system property of the same
 * name ({@code server.jvm.additional=-Dkgweave.address=host:port} in neo4j.conf) wins over the
 * file.
 *
 * <p>TLS: {@code kgweave.tls=true} trusts the JVM's CAs; {@code kgweave.tls_ca} (a PEM file of
 * CA certificates) trusts those instead and turns TLS on by itself; {@code
 * kgweave.tls_client_cert} and {@code kgweave.tls_client_key} (PEM, the key PKCS#8) present a
 * client certificate, for a server that requires one (mTLS). Null paths: unset.
 */
record KgweaveConfig(
    String address, boolean tls, String token, long deadlineMs, String entityLabel,
    String keyProperty, Path tlsCa, Path tlsClientCert, Path tlsClientKey) {

  static final String FILE = "kgweave.conf";
  static final List<String> KEYS = List.of(
      "kgweave.address", "kgweave.tls", "kgweave.token", "kgweave.deadline_ms",
      "kgweave.entity_label", "kgweave.key_property", "kgweave.tls_ca",
      "kgweave.tls_client_cert", "kgweave.tls_client_key");

  /** The channel's credentials: plaintext, or TLS with the configured CAs and certificate. */
  ChannelCredentials credentials() {
    if (!tls) {
      return InsecureChannelCredentials.create();
    }
    TlsChannelCredentials.Builder builder = TlsChannelCredentials.newBuilder();
    try {
      if (tlsCa != null) {
        builder.trustManager(tlsCa.toFile());
      }
      if (tlsClientCert != null) {
        builder.keyManager(tlsClientCert.toFile(), tlsClientKey.toFile());
      }
    } catch (IOException | IllegalArgumentException e) {
      throw KgweaveException.invalidArgument("cannot use the TLS files of " + FILE + ": "
          + e.getMessage());
    }
    return builder.build();
  }

  /** What decides the channel (a different value: another channel). */
  String channelKey() {
    return String.join("|", address, Boolean.toString(tls), String.valueOf(tlsCa),
        String.valueOf(tlsClientCert), String.valueOf(tlsClientKey), token,
        Long.toString(deadlineMs));
  }

  /** The last file read, its text (null: absent), the system properties, and the result. */
  private record Cached(Path path, String text, String properties, KgweaveConfig config) {}

  private static final AtomicReference<Cached> CACHE = new AtomicReference<>();

  /**
   * The settings for the database whose Neo4j configuration is {@code neo4j}. The file is read
   * on every call (a few hundred bytes, against a network round trip) and parsed when its text
   * changes, so an edit takes effect at the next call.
   */
  static KgweaveConfig of(Config neo4j) {
    Path file = confDir(neo4j).resolve(FILE);
    String text = read(file);
    StringBuilder properties = new StringBuilder();
    for (String key : KEYS) {
      properties.append(System.getProperty(key)).append('\n');
    }
    Cached cached = CACHE.get();
    if (cached != null && cached.path.equals(file) && Objects.equals(cached.text, text)
        && cached.properties.equals(properties.toString())) {
      return cached.config;
    }
    KgweaveConfig config = parse(file, text);
    CACHE.set(new Cached(file, text, properties.toString(), config));
    return config;
  }

  static Path confDir(Config neo4j) {
    String env = System.getenv("NEO4J_CONF");
    if (env != null && !env.isBlank()) {
      return Path.of(env);
    }
    String command = System.getProperty("sun.java.command", "");
    for (String arg : command.split(" ")) {
      if (arg.startsWith("--config-dir=")) {
        return Path.of(arg.substring("--config-dir=".length()));
      }
    }
    return neo4j.get(GraphDatabaseSettings.neo4j_home).resolve("conf");
  }

  private static String read(Path file) {
    try {
      return Files.readString(file, StandardCharsets.UTF_8);
    } catch (NoSuchFileException e) {
      return null;
    } catch (IOException e) {
      throw KgweaveException.invalidArgument("cannot read " + file + ": " + e.getMessage());
    }
  }

  private static KgweaveConfig parse(Path file, String text) {
    Properties values = new Properties();
    boolean exists = text != null;
    if (exists) {
      try {
        values.load(new StringReader(text));
      } catch (IOException | IllegalArgumentException e) {
        throw KgweaveException.invalidArgument("cannot read " + file + ": " + e.getMessage());
      }
      for (String key : values.stringPropertyNames()) {
        if (!KEYS.contains(key)) {
          throw KgweaveException.invalidArgument("unknown setting '" + key + "' in " + file
              + " (known: " + String.join(", ", KEYS) + ")");
        }
      }
    }
    for (String key : KEYS) {
      String property = System.getProperty(key);
      if (property != null) {
        values.setProperty(key, property);
      }
    }
    String where = exists ? " in " + file : "";
    String address = values.getProperty("kgweave.address", "localhost:50051").trim();
    if (address.isEmpty()) {
      throw KgweaveException.invalidArgument("kgweave.address is empty" + where);
    }
    String tls = values.getProperty("kgweave.tls", "false").trim().toLowerCase(Locale.ROOT);
    if (!tls.equals("true") && !tls.equals("false")) {
      throw KgweaveException.invalidArgument("kgweave.tls must be true or false" + where);
    }
    long deadlineMs;
    try {
      deadlineMs = Long.parseLong(values.getProperty("kgweave.deadline_ms", "10000").trim());
    } catch (NumberFormatException e) {
      deadlineMs = -1;
    }
    if (deadlineMs <= 0) {
      throw KgweaveException.invalidArgument(
          "kgweave.deadline_ms must be a positive number of milliseconds" + where);
    }
    Path ca = pemFile(values, "kgweave.tls_ca", where);
    Path clientCert = pemFile(values, "kgweave.tls_client_cert", where);
    Path clientKey = pemFile(values, "kgweave.tls_client_key", where);
    if ((clientCert == null) != (clientKey == null)) {
      throw KgweaveException.invalidArgument(
          "kgweave.tls_client_cert and kgweave.tls_client_key go together" + where);
    }
    boolean useTls = tls.equals("true") || ca != null;
    if (clientCert != null && !useTls) {
      throw KgweaveException.invalidArgument(
          "kgweave.tls_client_cert needs TLS (kgweave.tls=true or kgweave.tls_ca)" + where);
    }
    return new KgweaveConfig(
        address,
        useTls,
        values.getProperty("kgweave.token", "").trim(),
        deadlineMs,
        values.getProperty("kgweave.entity_label", "Entity").trim(),
        values.getProperty("kgweave.key_property", "id").trim(),
        ca,
        clientCert,
        clientKey);
  }

  /** A PEM file setting: null when unset or empty; an error when it names no readable file. */
  private static Path pemFile(Properties values, String key, String where) {
    String value = values.getProperty(key, "").trim();
    if (value.isEmpty()) {
      return null;
    }
    Path path = Path.of(value);
    if (!Files.isReadable(path) || Files.isDirectory(path)) {
      throw KgweaveException.invalidArgument(key + ": cannot read " + value + where);
    }
    return path;
  }
}
