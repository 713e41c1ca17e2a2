package io.kgweave.neo4j;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

import io.grpc.ClientInterceptors;
import io.grpc.Contexts;
import io.grpc.Context;
import io.grpc.Metadata;
import io.grpc.Server;
import io.grpc.ServerCall;
import io.grpc.ServerCallHandler;
import io.grpc.ServerInterceptor;
import io.grpc.ServerInterceptors;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.grpc.netty.shaded.io.grpc.netty.NettyServerBuilder;
import io.grpc.stub.MetadataUtils;
import io.grpc.stub.StreamObserver;
import io.kgweave.v1.Candidate;
import io.kgweave.v1.Entity;
import io.kgweave.v1.GetEntityRequest;
import io.kgweave.v1.KnowledgeServiceGrpc;
import io.kgweave.v1.LinkQuery;
import io.kgweave.v1.PredictLinksRequest;
import io.kgweave.v1.PredictLinksResponse;
import io.kgweave.v1.QueryResult;
import java.io.IOException;
import java.net.InetSocketAddress;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;

/**
 * {@link DirectChannel} against grpc-java's own Netty server (another HTTP/2 implementation
 * than the C-core one of kgweave serve, which PluginTest covers): answers and metadata, large
 * messages both ways (flow control), status codes and messages, a passed deadline, a server
 * restarted under a pooled connection, and no server at all.
 */
class DirectChannelTest {
  static final Metadata.Key<String> AUTHORIZATION =
      Metadata.Key.of("authorization", Metadata.ASCII_STRING_MARSHALLER);
  static final Context.Key<String> TOKEN = Context.key("token");

  final CountDownLatch release = new CountDownLatch(1);
  Server server;
  DirectChannel channel;

  /** Echoes each query's head and the caller's authorization header, k candidates each. */
  final class Knowledge extends KnowledgeServiceGrpc.KnowledgeServiceImplBase {
    @Override
    public void predictLinks(PredictLinksRequest request, StreamObserver<PredictLinksResponse> out) {
      PredictLinksResponse.Builder response =
          PredictLinksResponse.newBuilder().setModelVersion(String.valueOf(TOKEN.get()));
      for (LinkQuery q : request.getQueriesList()) {
        QueryResult.Builder result = QueryResult.newBuilder();
        for (int i = 0; i < request.getK(); i++) {
          result.addCandidates(Candidate.newBuilder().setEntityId(q.getHead()).setRank(i + 1));
        }
        response.addResults(result);
      }
      out.onNext(response.build());
      out.onCompleted();
    }

    @Override
    public void getEntity(GetEntityRequest request, StreamObserver<Entity> out) {
      if (request.getEntity().equals("wait")) {
        try {
          release.await(); // until the test saw the client's deadline pass
        } catch (InterruptedException e) {
          Thread.currentThread().interrupt();
        }
      }
      if (request.getEntity().startsWith("Zo")) {
        out.onError(Status.NOT_FOUND
            .withDescription("unknown entity '" + request.getEntity() + "' (100% sure)")
            .asRuntimeException());
        return;
      }
      out.onNext(Entity.newBuilder().setId(request.getEntity()).build());
      out.onCompleted();
    }
  }

  Server start(int port) throws IOException {
    ServerInterceptor token = new ServerInterceptor() {
      @Override
      public <Q, R> ServerCall.Listener<Q> interceptCall(
          ServerCall<Q, R> call, Metadata headers, ServerCallHandler<Q, R> next) {
        Context context = Context.current().withValue(TOKEN, headers.get(AUTHORIZATION));
        return Contexts.interceptCall(context, call, headers, next);
      }
    };
    return NettyServerBuilder.forAddress(new InetSocketAddress("127.0.0.1", port))
        .maxInboundMessageSize(64 * 1024 * 1024)
        .addService(ServerInterceptors.intercept(new Knowledge(), token))
        .build()
        .start();
  }

  KnowledgeServiceGrpc.KnowledgeServiceBlockingStub stub() {
    return KnowledgeServiceGrpc.newBlockingStub(channel).withDeadlineAfter(1, TimeUnit.HOURS);
  }

  @AfterEach
  void stop() throws InterruptedException {
    release.countDown();
    if (channel != null) {
      channel.close();
    }
    if (server != null) {
      server.shutdownNow().awaitTermination();
    }
  }

  @Test
  void answersMetadataAndLargeMessagesBothWays() throws IOException {
    server = start(0);
    channel = new DirectChannel("127.0.0.1:" + server.getPort(), 64 * 1024 * 1024);
    Metadata headers = new Metadata();
    headers.put(AUTHORIZATION, "Bearer s3cret");
    KnowledgeServiceGrpc.KnowledgeServiceBlockingStub stub = KnowledgeServiceGrpc.newBlockingStub(
        ClientInterceptors.intercept(channel, MetadataUtils.newAttachHeadersInterceptor(headers)));
    PredictLinksResponse one = stub.predictLinks(PredictLinksRequest.newBuilder()
        .addQueries(LinkQuery.newBuilder().setHead("alan_turing").setRelation("born_in"))
        .setK(3).build());
    assertEquals("Bearer s3cret", one.getModelVersion());
    assertEquals(3, one.getResults(0).getCandidatesCount());
    assertEquals("alan_turing", one.getResults(0).getCandidates(2).getEntityId());
    // about 1 MB out (past the 64 KiB initial window) and about 30 MB back
    PredictLinksRequest.Builder big = PredictLinksRequest.newBuilder().setK(100);
    for (int i = 0; i < 30_000; i++) {
      big.addQueries(LinkQuery.newBuilder().setHead("entity_" + i).setRelation("located_in"));
    }
    PredictLinksResponse many = stub().predictLinks(big.build());
    assertEquals(30_000, many.getResultsCount());
    assertEquals("entity_29999", many.getResults(29_999).getCandidates(99).getEntityId());
    assertEquals(100, many.getResults(29_999).getCandidates(99).getRank());
  }

  @Test
  void statusCodesAndMessagesArriveAsSent() throws IOException {
    server = start(0);
    channel = new DirectChannel("127.0.0.1:" + server.getPort(), 64 * 1024 * 1024);
    StatusRuntimeException e = assertThrows(StatusRuntimeException.class,
        () -> stub().getEntity(GetEntityRequest.newBuilder().setEntity("Zoë").build()));
    assertEquals(Status.Code.NOT_FOUND, e.getStatus().getCode());
    assertEquals("unknown entity 'Zoë' (100% sure)", e.getStatus().getDescription());
  }

  @Test
  void aPassedDeadlineFailsAloneAndTheChannelGoesOn() throws IOException {
    server = start(0);
    channel = new DirectChannel("127.0.0.1:" + server.getPort(), 64 * 1024 * 1024);
    // the server holds this call until the client has given up on it: the deadline passes
    // whatever the machine's speed
    StatusRuntimeException e = assertThrows(StatusRuntimeException.class,
        () -> KnowledgeServiceGrpc.newBlockingStub(channel)
            .withDeadlineAfter(200, TimeUnit.MILLISECONDS)
            .getEntity(GetEntityRequest.newBuilder().setEntity("wait").build()));
    assertEquals(Status.Code.DEADLINE_EXCEEDED, e.getStatus().getCode());
    release.countDown();
    assertEquals("ada", stub().getEntity(GetEntityRequest.newBuilder().setEntity("ada").build())
        .getId());
  }

  @Test
  void aRestartedServerIsReachedThroughAFreshConnection() throws Exception {
    server = start(0);
    int port = server.getPort();
    channel = new DirectChannel("127.0.0.1:" + port, 64 * 1024 * 1024);
    assertEquals("a", stub().getEntity(GetEntityRequest.newBuilder().setEntity("a").build())
        .getId());
    server.shutdownNow().awaitTermination(); // closes the pooled connection under the channel
    StatusRuntimeException down = assertThrows(StatusRuntimeException.class,
        () -> stub().getEntity(GetEntityRequest.newBuilder().setEntity("b").build()));
    assertEquals(Status.Code.UNAVAILABLE, down.getStatus().getCode());
    server = start(port);
    assertEquals("c", stub().getEntity(GetEntityRequest.newBuilder().setEntity("c").build())
        .getId());
    // and a pooled connection the server closed while idle is replaced without an error
    server.shutdownNow().awaitTermination();
    server = start(port);
    assertEquals("d", stub().getEntity(GetEntityRequest.newBuilder().setEntity("d").build())
        .getId());
  }
}
