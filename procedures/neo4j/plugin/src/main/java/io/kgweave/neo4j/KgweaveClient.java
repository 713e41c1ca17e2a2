package io.kgweave.neo4j;

import io.grpc.CallOptions;
import io.grpc.Channel;
import io.grpc.ChannelCredentials;
import io.grpc.ClientCall;
import io.grpc.ClientInterceptor;
import io.grpc.ClientInterceptors;
import io.grpc.ForwardingClientCall;
import io.grpc.InsecureChannelCredentials;
import io.grpc.ManagedChannel;
import io.grpc.Metadata;
import io.grpc.MethodDescriptor;
import io.grpc.StatusRuntimeException;
import io.grpc.netty.shaded.io.grpc.netty.NettyChannelBuilder;
import io.kgweave.v1.AdminServiceGrpc;
import io.kgweave.v1.KnowledgeServiceGrpc;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.TimeUnit;
import java.util.function.Function;

/**
 * One gRPC channel per (address, TLS, token) for the whole database process, shared by every
 * procedure call; each call gets a fresh deadline. Plaintext addresses use {@link
 * DirectChannel} (each call runs on the calling thread, over pooled connections); TLS uses
 * grpc-java's Netty channel.
 */
public final class KgweaveClient {
  /** Most queries the server takes in one PredictLinks call. */
  public static final int MAX_QUERIES_PER_CALL = 1000;

  private static final Metadata.Key<String> AUTHORIZATION =
      Metadata.Key.of("authorization", Metadata.ASCII_STRING_MARSHALLER);
  private static final int MAX_MESSAGE_BYTES = 64 * 1024 * 1024;
  private static final Map<String, KgweaveClient> CLIENTS = new ConcurrentHashMap<>();

  static {
    Runtime.getRuntime().addShutdownHook(new Thread(KgweaveClient::closeAll, "kgweave-close"));
  }

  private final String address;
  private final long deadlineMs;
  /** The Netty channel (TLS), or null when {@link #direct} serves the calls. */
  private final ManagedChannel channel;
  private final DirectChannel direct;
  private final KnowledgeServiceGrpc.KnowledgeServiceBlockingStub knowledge;
  private final AdminServiceGrpc.AdminServiceBlockingStub admin;

  private KgweaveClient(
      String address, ChannelCredentials credentials, String token, long deadlineMs) {
    this.address = address;
    this.deadlineMs = deadlineMs;
    boolean plaintext = credentials instanceof InsecureChannelCredentials;
    if (plaintext && DirectChannel.supports(address)) {
      this.direct = new DirectChannel(address, MAX_MESSAGE_BYTES);
      this.channel = null;
    } else {
      this.direct = null;
      this.channel = NettyChannelBuilder.forTarget(address, credentials)
          .maxInboundMessageSize(MAX_MESSAGE_BYTES)
          .build();
    }
    Channel base = direct != null ? direct : channel;
    Channel intercepted =
        token.isEmpty() ? base : ClientInterceptors.intercept(base, new BearerToken(token));
    this.knowledge = KnowledgeServiceGrpc.newBlockingStub(intercepted);
    this.admin = AdminServiceGrpc.newBlockingStub(intercepted);
  }

  /** The shared client for this database's configuration. */
  static KgweaveClient of(KgweaveConfig config) {
    return CLIENTS.computeIfAbsent(config.channelKey(), k -> new KgweaveClient(
        config.address(), config.credentials(), config.token(), config.deadlineMs()));
  }

  /** Close every channel (tests, JVM shutdown). */
  public static void closeAll() {
    for (KgweaveClient client : CLIENTS.values()) {
      if (client.channel != null) {
        client.channel.shutdownNow();
      } else {
        client.direct.close();
      }
    }
    CLIENTS.clear();
  }

  public String address() {
    return address;
  }

  /** A KnowledgeService call with the configured deadline; failures become one-line errors. */
  public <T> T knowledge(Function<KnowledgeServiceGrpc.KnowledgeServiceBlockingStub, T> call) {
    return invoke(call, knowledge);
  }

  /** An AdminService call with the configured deadline; failures become one-line errors. */
  public <T> T admin(Function<AdminServiceGrpc.AdminServiceBlockingStub, T> call) {
    return invoke(call, admin);
  }

  private <S extends io.grpc.stub.AbstractStub<S>, T> T invoke(Function<S, T> call, S stub) {
    try {
      return call.apply(stub.withDeadlineAfter(deadlineMs, TimeUnit.MILLISECONDS));
    } catch (StatusRuntimeException e) {
      throw KgweaveException.fromGrpc(e, address, deadlineMs);
    }
  }

  private static final class BearerToken implements ClientInterceptor {
    private final String value;

    BearerToken(String token) {
      this.value = token.regionMatches(true, 0, "bearer ", 0, 7) ? token : "Bearer " + token;
    }

    @Override
    public <Q, R> ClientCall<Q, R> interceptCall(
        MethodDescriptor<Q, R> method, CallOptions options, Channel next) {
      return new ForwardingClientCall.SimpleForwardingClientCall<>(next.newCall(method, options)) {
        @Override
        public void start(Listener<R> listener, Metadata headers) {
          headers.put(AUTHORIZATION, value);
          super.start(listener, headers);
        }
      };
    }
  }
}
