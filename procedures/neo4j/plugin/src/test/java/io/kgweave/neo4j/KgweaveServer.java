package io.kgweave.neo4j;

import io.grpc.ChannelCredentials;
import io.grpc.Context;
import io.grpc.Grpc;
import io.grpc.InsecureChannelCredentials;
import io.grpc.ManagedChannel;
import io.grpc.health.v1.HealthCheckRequest;
import io.grpc.health.v1.HealthCheckResponse;
import io.grpc.health.v1.HealthGrpc;
import io.kgweave.v1.AdminServiceGrpc;
import io.kgweave.v1.KnowledgeServiceGrpc;
import java.io.File;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.net.ServerSocket;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Comparator;
import java.util.Iterator;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;

/**
 * A real {@code kgweave serve} on free ports with its own data folder (embedded FalkorDB, demo
 * graph, a first model trained at start), and a plain gRPC channel to it for the tests' own
 * calls. Startup waits on the health service turning SERVING (a streamed condition, no sleeps);
 * the only time limit is a hang guard.
 */
final class KgweaveServer implements AutoCloseable {
  static final long START_GUARD_S = 600;

  final int grpcPort;
  final Path dataDir;
  final Path log;
  final ManagedChannel channel;
  private final Process process;

  KgweaveServer() throws IOException {
    this(Map.of(), InsecureChannelCredentials.create());
  }

  /**
   * With more environment for {@code kgweave serve} (TLS, tokens) and the credentials the
   * tests' own channel needs to reach it (health needs no token).
   */
  KgweaveServer(Map<String, String> env, ChannelCredentials credentials) throws IOException {
    String command = System.getProperty("kgweave.command", "../../../.venv/bin/kgweave");
    String pythonPath = System.getProperty("kgweave.pythonpath", "");
    dataDir = Files.createTempDirectory("kgweave-plugin-test");
    log = dataDir.resolve("serve.log");
    grpcPort = freePort();
    ProcessBuilder builder = new ProcessBuilder(List.of(command, "serve", "--no-progress"))
        .redirectErrorStream(true)
        .redirectOutput(log.toFile());
    builder.environment().put("KGWEAVE_DATA_DIR", dataDir.toString());
    builder.environment().put("KGWEAVE_GRPC_PORT", Integer.toString(grpcPort));
    builder.environment().put("KGWEAVE_HTTP_PORT", "0");
    builder.environment().put("KGWEAVE_BOOTSTRAP_EPOCHS", "30");
    builder.environment().put("KGWEAVE_OFFLINE", "true");
    // joint jobs in these tests train the small scratch LM (the pretrained one is tested in
    // Python, tests/test_lora.py): seconds, not minutes, and nothing to fetch
    builder.environment().put("KGWEAVE_LANGUAGE_MODEL", "small");
    if (!pythonPath.isEmpty()) {
      String old = System.getenv("PYTHONPATH");
      builder.environment().put(
          "PYTHONPATH", old == null ? pythonPath : pythonPath + File.pathSeparator + old);
    }
    builder.environment().putAll(env);
    process = builder.start();
    channel = Grpc.newChannelBuilderForAddress("127.0.0.1", grpcPort, credentials).build();
    awaitServing();
  }

  String address() {
    return "127.0.0.1:" + grpcPort;
  }

  KnowledgeServiceGrpc.KnowledgeServiceBlockingStub knowledge() {
    return KnowledgeServiceGrpc.newBlockingStub(channel).withDeadlineAfter(START_GUARD_S, TimeUnit.SECONDS);
  }

  AdminServiceGrpc.AdminServiceBlockingStub admin() {
    return AdminServiceGrpc.newBlockingStub(channel).withDeadlineAfter(START_GUARD_S, TimeUnit.SECONDS);
  }

  /** Follow the health stream until SERVING; fail at once if the server process exits. */
  private void awaitServing() throws IOException {
    Context.CancellableContext watch = Context.current().withCancellation();
    process.onExit().thenRun(() -> watch.cancel(null));
    try {
      boolean serving = watch.call(() -> {
        Iterator<HealthCheckResponse> updates = HealthGrpc.newBlockingStub(channel)
            .withWaitForReady()
            .withDeadlineAfter(START_GUARD_S, TimeUnit.SECONDS)
            .watch(HealthCheckRequest.getDefaultInstance());
        while (updates.hasNext()) {
          if (updates.next().getStatus() == HealthCheckResponse.ServingStatus.SERVING) {
            return true;
          }
        }
        return false;
      });
      if (!serving) {
        throw new IllegalStateException("health stream ended before SERVING");
      }
    } catch (Exception e) {
      String output = Files.exists(log) ? Files.readString(log) : "";
      close();
      throw new IllegalStateException(
          "kgweave serve did not become SERVING (" + e.getMessage() + "):\n" + output, e);
    } finally {
      watch.cancel(null);
    }
  }

  static int freePort() {
    try (ServerSocket socket = new ServerSocket(0)) {
      return socket.getLocalPort();
    } catch (IOException e) {
      throw new UncheckedIOException(e);
    }
  }

  @Override
  public void close() {
    channel.shutdownNow();
    if (process.isAlive()) {
      process.destroy(); // SIGTERM: the server drains and stops the graph server it started
      try {
        if (!process.waitFor(120, TimeUnit.SECONDS)) {
          process.destroyForcibly().waitFor();
        }
      } catch (InterruptedException e) {
        Thread.currentThread().interrupt();
        process.destroyForcibly();
      }
    }
    try (Stream<Path> files = Files.walk(dataDir)) {
      files.sorted(Comparator.reverseOrder()).map(Path::toFile).forEach(File::delete);
    } catch (IOException e) {
      // a leftover temp folder is harmless
    }
  }
}
