package io.kgweave.neo4j;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

import io.grpc.Metadata;
import io.grpc.Server;
import io.grpc.ServerCall;
import io.grpc.ServerCallHandler;
import io.grpc.ServerInterceptor;
import io.grpc.ServerInterceptors;
import io.grpc.Status;
import io.grpc.netty.shaded.io.grpc.netty.NettyServerBuilder;
import io.grpc.stub.StreamObserver;
import io.kgweave.v1.AdminServiceGrpc;
import io.kgweave.v1.StatusRequest;
import io.kgweave.v1.StatusResponse;
import java.net.InetSocketAddress;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestInstance;
import org.neo4j.driver.AuthTokens;
import org.neo4j.driver.Driver;
import org.neo4j.driver.GraphDatabase;
import org.neo4j.driver.Session;
import org.neo4j.driver.exceptions.ClientException;
import org.neo4j.harness.Neo4j;

/** The connection itself: a down server, and the token, with no kgweave server needed. */
@TestInstance(TestInstance.Lifecycle.PER_CLASS)
class ConnectionTest {
  static final Metadata.Key<String> AUTHORIZATION =
      Metadata.Key.of("authorization", Metadata.ASCII_STRING_MARSHALLER);

  Neo4j neo4j;
  Driver driver;

  @BeforeAll
  void start() {
    neo4j = Plugin.start();
    driver = GraphDatabase.driver(neo4j.boltURI(), AuthTokens.none());
  }

  @AfterAll
  void stop() {
    driver.close();
    neo4j.close();
  }

  String error(String query) {
    try (Session session = driver.session()) {
      return assertThrows(ClientException.class, () -> session.run(query).list()).getMessage();
    }
  }

  /**
   * No kgweave server at the configured address: every call fails at once with UNAVAILABLE (the
   * deadline is an hour, so a hang would surface as DEADLINE_EXCEEDED, never as this message).
   */
  @Test
  void aDownServerIsOneReadableErrorNotAHang() {
    String address = "127.0.0.1:" + KgweaveServer.freePort();
    Plugin.writeConf(neo4j, "kgweave.address=" + address, "kgweave.deadline_ms=3600000");
    String expected = "kgweave: UNAVAILABLE: no kgweave server answers at " + address;
    for (String query : new String[] {
        "CALL kgweave.status()",
        "CALL kgweave.predict.tails('alan_turing', 'born_in', 3)",
        "RETURN kgweave.score('alan_turing', 'born_in', 'london')",
        "CALL kgweave.admin.models()"}) {
      String message = error(query);
      assertEquals(expected, message.substring(0, Math.min(message.length(), expected.length())),
          message);
      assertEquals(-1, message.indexOf('\n'), message);
      assertEquals(-1, message.indexOf("Exception"), message);
    }
  }

  /**
   * kgweave.token goes out as `authorization: Bearer <token>` on every call. kgweave serve does
   * not check tokens (a proxy in front of it does), so a gRPC server stands in its place that
   * answers Status only with the right header and UNAUTHENTICATED otherwise, as such a proxy does.
   */
  @Test
  void theTokenIsSentAsABearerHeader() throws Exception {
    ServerInterceptor gate = new ServerInterceptor() {
      @Override
      public <Q, R> ServerCall.Listener<Q> interceptCall(
          ServerCall<Q, R> call, Metadata headers, ServerCallHandler<Q, R> next) {
        if (!"Bearer s3cret".equals(headers.get(AUTHORIZATION))) {
          call.close(Status.UNAUTHENTICATED.withDescription("bad or missing token"),
              new Metadata());
          return new ServerCall.Listener<>() {};
        }
        return next.startCall(call, headers);
      }
    };
    AdminServiceGrpc.AdminServiceImplBase admin = new AdminServiceGrpc.AdminServiceImplBase() {
      @Override
      public void status(StatusRequest request, StreamObserver<StatusResponse> reply) {
        reply.onNext(StatusResponse.newBuilder().setReady(true).setGraphBackend("gate").build());
        reply.onCompleted();
      }
    };
    Server server = NettyServerBuilder.forAddress(new InetSocketAddress("127.0.0.1", 0))
        .addService(ServerInterceptors.intercept(admin, gate)).build().start();
    String address = "127.0.0.1:" + server.getPort();
    String query = "CALL kgweave.status() YIELD graphBackend RETURN graphBackend";
    try (Session session = driver.session()) {
      Plugin.writeConf(neo4j, "kgweave.address=" + address, "kgweave.token=s3cret");
      assertEquals("gate", session.run(query).single().get("graphBackend").asString());
      Plugin.writeConf(neo4j, "kgweave.address=" + address, "kgweave.token=wrong");
      assertEquals("kgweave: UNAUTHENTICATED: bad or missing token", error(query));
      Plugin.writeConf(neo4j, "kgweave.address=" + address);
      assertEquals("kgweave: UNAUTHENTICATED: bad or missing token", error(query));
    } finally {
      server.shutdownNow().awaitTermination();
    }
  }
}
