package io.kgweave.neo4j;

import com.google.protobuf.Descriptors.FieldDescriptor;
import com.google.protobuf.Message;
import io.kgweave.v1.CompleteRequest;
import io.kgweave.v1.CompleteResponse;
import io.kgweave.v1.CompletionCandidate;
import io.kgweave.v1.Entity;
import io.kgweave.v1.GetEntityRequest;
import io.kgweave.v1.LinkQuery;
import io.kgweave.v1.ModelInfo;
import io.kgweave.v1.SearchEntitiesRequest;
import io.kgweave.v1.StatusRequest;
import io.kgweave.v1.StatusResponse;
import io.kgweave.v1.Triple;
import io.kgweave.v1.VerbalizeRequest;
import io.kgweave.v1.VerbalizeResponse;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.stream.Stream;
import org.neo4j.graphdb.Node;
import org.neo4j.graphdb.Transaction;
import org.neo4j.kernel.internal.GraphDatabaseAPI;
import org.neo4j.procedure.Context;
import org.neo4j.procedure.Description;
import org.neo4j.procedure.Mode;
import org.neo4j.procedure.Name;
import org.neo4j.procedure.Procedure;

/** Graph to text, LLM-driven completion, semantic search and the server's status. */
public class KnowledgeProcedures {
  private static final List<String> COMPLETE_OPTIONS =
      List.of("direction", "generate", "kgeCandidates", "writeToGraph", "minScore");
  private static final List<String> SEARCH_OPTIONS = List.of("mode");

  @Context public GraphDatabaseAPI db;
  @Context public Transaction tx;

  /** One verbalized triple. */
  public record Sentence(
      long index, String head, String relation, String tail, String sentence, String version) {}

  /**
   * One completion candidate, re-ranked by the fitted combination of graph and LM scores, with
   * the combination the server used (the same on every row of a call).
   */
  public record Completion(
      long rank, String candidate, String entity, Node node, boolean isNew, double graphScore,
      double kgeScore, double lmScore, double combinedScore, String evidence, String source,
      boolean known, String version, double lmMarginal, double wKge, Double wText, double wLm,
      double bias, String lmFeature, long written) {
    static Completion of(Graph graph, CompletionCandidate c, CompleteResponse r) {
      String id = c.getEntityId().isEmpty() ? null : c.getEntityId();
      return new Completion(c.getRank(), c.getName().isEmpty() ? id : c.getName(), id,
          id == null ? null : graph.node(id), c.getNew(), c.getGraphScore(), c.getKgeScore(),
          c.getLmLogprob(), c.getCombinedScore(), c.getEvidence(), c.getSource(), c.getKnown(),
          r.getModelVersion(), c.getLmMarginal(), r.getWKge(),
          r.hasWText() ? Double.valueOf(r.getWText()) : null, r.getWLm(), r.getBias(),
          r.getLmFeature().isEmpty() ? null : r.getLmFeature(), r.getWritten());
    }
  }

  /** One entity found by search. */
  public record Found(
      long rank, Node node, String entity, String name, String description, double similarity,
      String version) {
    static Found of(Graph graph, long rank, Entity e) {
      return new Found(rank, graph.node(e.getId()), e.getId(), e.getName(), e.getDescription(),
          e.getSimilarity(), e.getModelVersion());
    }
  }

  /**
   * The kgweave server's state; changes: the graph changes applied to the served model and the
   * retraining from them (every ChangesStatus field by its JSON name, e.g. appliedOffset,
   * events, updatesRegistered, refinementsActivated; null when the server applies none).
   */
  public record ServerStatus(
      String address, boolean ready, String version, String model, long dim, long entities,
      long relations, Map<String, Object> validMetrics, Map<String, Object> testMetrics,
      String graphBackend, String graphUri, String device, String frontend,
      String kgweaveVersion, double uptimeSeconds, long activeJobs, long processMemoryBytes,
      Map<String, Object> changes) {
    static ServerStatus of(String address, StatusResponse s) {
      ModelInfo m = s.getActiveModel();
      return new ServerStatus(address, s.getReady(), s.hasActiveModel() ? m.getVersion() : null,
          s.hasActiveModel() ? m.getModel() : null, m.getDim(), m.getNumEntities(),
          m.getNumRelations(), Map.<String, Object>copyOf(m.getValidMetricsMap()),
          Map.<String, Object>copyOf(m.getTestMetricsMap()), s.getGraphBackend(), s.getGraphUri(),
          s.getDevice(), s.getFrontend(), s.getKgweaveVersion(), s.getUptimeS(),
          s.getActiveJobs(), s.getProcessMemoryBytes(),
          s.hasChanges() ? fields(s.getChanges()) : null);
    }

    /**
     * Every field of {@code message}, set or not, by its JSON name, as Cypher values (integers
     * as INTEGER, an empty string as null): read from the descriptor, so a field the server
     * adds to the message is listed without a change here.
     */
    static Map<String, Object> fields(Message message) {
      Map<String, Object> out = new LinkedHashMap<>();
      for (FieldDescriptor f : message.getDescriptorForType().getFields()) {
        Object value = message.getField(f);
        if (value instanceof Integer i) {
          value = i.longValue();
        } else if (value instanceof String text && text.isEmpty()) {
          value = null;
        }
        out.put(f.getJsonName(), value);
      }
      return out;
    }
  }

  @Procedure(name = "kgweave.verbalize.triples", mode = Mode.READ)
  @Description("kgweave.verbalize.triples(triples) - one fluent sentence per triple, in order. "
      + "Each triple: [head, relation, tail], {head, relation, tail}, or a relationship (start "
      + "node, its relation, end node); entities as nodes, ids or names.")
  public Stream<Sentence> verbalizeTriples(@Name("triples") List<Object> triples) {
    if (triples == null || triples.isEmpty()) {
      throw KgweaveException.invalidArgument("kgweave.verbalize.triples needs at least one triple");
    }
    Graph graph = new Graph(db, tx);
    List<Triple> parsed = new ArrayList<>(triples.size());
    for (int i = 0; i < triples.size(); i++) {
      parsed.add(graph.triple(triples.get(i), i));
    }
    VerbalizeRequest request = VerbalizeRequest.newBuilder().addAllTriples(parsed).build();
    VerbalizeResponse response = graph.client().knowledge(stub -> stub.verbalize(request));
    List<Sentence> rows = new ArrayList<>(parsed.size());
    for (int i = 0; i < parsed.size(); i++) {
      Triple t = parsed.get(i);
      rows.add(new Sentence(i, t.getHead(), t.getRelation(), t.getTail(),
          response.getSentences(i), response.getModelVersion()));
    }
    return rows.stream();
  }

  @Procedure(name = "kgweave.complete", mode = Mode.READ)
  @Description("kgweave.complete(entity, relation, k = 10, options = {direction: 'tails', "
      + "generate: true, kgeCandidates: 50, writeToGraph: false, minScore: 0.0}) - LLM-driven "
      + "completion of (entity, relation, ?) (direction 'heads': (?, relation, entity)): "
      + "candidates from the embeddings and from the language model, re-ranked by the fitted "
      + "combination of graphScore and lmScore (weights wKge, wText, wLm, bias; lmFeature "
      + "'logprob' or 'pmi'), each with the verbalized evidence. isNew: a name the language model "
      + "proposed that is no entity of the graph (entity and node null); node: the candidate's "
      + "node in this database, null when it has none. writeToGraph: the server writes the "
      + "candidates scoring at least minScore to its graph as suggested links (written).")
  public Stream<Completion> complete(
      @Name("entity") Object entity,
      @Name("relation") Object relation,
      @Name(value = "k", defaultValue = "10") long k,
      @Name(value = "options", defaultValue = "{}") Map<String, Object> options) {
    Graph.knownOptions(options, "kgweave.complete", COMPLETE_OPTIONS);
    Object direction = options == null ? null : options.get("direction");
    boolean heads = "heads".equals(direction);
    if (direction != null && !heads && !"tails".equals(direction)) {
      throw KgweaveException.invalidArgument(
          "direction must be 'tails' or 'heads', not " + Graph.describe(direction));
    }
    Object candidates = options == null ? null : options.get("kgeCandidates");
    Object minScore = options == null ? null : options.get("minScore");
    Graph graph = new Graph(db, tx);
    String fixed = graph.entity(entity, heads ? "tail" : "head");
    LinkQuery.Builder query = LinkQuery.newBuilder().setRelation(Graph.relation(relation));
    CompleteRequest request = CompleteRequest.newBuilder()
        .setQuery(heads ? query.setTail(fixed) : query.setHead(fixed))
        .setK((int) Graph.positive(k, "k", 100))
        .setKgeCandidates(
            candidates == null ? 50 : (int) Graph.positive(candidates, "kgeCandidates", 1000))
        .setGenerate(Graph.flag(options, "generate", true))
        .setWriteToGraph(Graph.flag(options, "writeToGraph", false))
        .setMinScore(minScore == null ? 0f : (float) Graph.number(minScore, "minScore"))
        .build();
    CompleteResponse response = graph.client().knowledge(stub -> stub.complete(request));
    List<Completion> rows = new ArrayList<>(response.getCandidatesCount());
    for (CompletionCandidate c : response.getCandidatesList()) {
      rows.add(Completion.of(graph, c, response));
    }
    return rows.stream();
  }

  @Procedure(name = "kgweave.similar", mode = Mode.READ)
  @Description("kgweave.similar(entity, k = 10) - the k entities whose text (name and "
      + "description) is semantically closest to this entity's, under the server's text "
      + "encoder, most similar first; the entity itself is left out.")
  public Stream<Found> similar(
      @Name("entity") Object entity, @Name(value = "k", defaultValue = "10") long k) {
    int limit = (int) Graph.positive(k, "k", PredictProcedures.MAX_K - 1);
    Graph graph = new Graph(db, tx);
    GetEntityRequest get =
        GetEntityRequest.newBuilder().setEntity(graph.entity(entity, "entity")).setMaxFacts(0).build();
    KgweaveClient client = graph.client();
    Entity self = client.knowledge(stub -> stub.getEntity(get));
    String text = self.getName().isEmpty() ? self.getId() : self.getName();
    if (!self.getDescription().isEmpty()) {
      text = text + ": " + self.getDescription();
    }
    SearchEntitiesRequest search =
        SearchEntitiesRequest.newBuilder().setText(text).setLimit(limit + 1).build();
    return found(graph, client, search, self.getId(), limit);
  }

  @Procedure(name = "kgweave.search", mode = Mode.READ)
  @Description("kgweave.search(text, k = 10, options = {mode: 'semantic'}) - entities for free "
      + "text: mode 'semantic' ranks them by the cosine similarity of their text to it; mode "
      + "'prefix' finds names (or ids) starting with it, case-insensitively, shortest first.")
  public Stream<Found> search(
      @Name("text") String text,
      @Name(value = "k", defaultValue = "10") long k,
      @Name(value = "options", defaultValue = "{}") Map<String, Object> options) {
    Graph.knownOptions(options, "kgweave.search", SEARCH_OPTIONS);
    Object mode = options == null || options.get("mode") == null ? "semantic" : options.get("mode");
    if (!"semantic".equals(mode) && !"prefix".equals(mode)) {
      throw KgweaveException.invalidArgument(
          "mode must be 'semantic' or 'prefix', not " + Graph.describe(mode));
    }
    if (text == null || text.isBlank()) {
      throw KgweaveException.invalidArgument("kgweave.search needs a non-empty text");
    }
    SearchEntitiesRequest.Builder request = SearchEntitiesRequest.newBuilder()
        .setLimit((int) Graph.positive(k, "k", PredictProcedures.MAX_K));
    SearchEntitiesRequest built =
        ("prefix".equals(mode) ? request.setPrefix(text) : request.setText(text)).build();
    Graph graph = new Graph(db, tx);
    return found(graph, graph.client(), built, null, Integer.MAX_VALUE);
  }

  /**
   * The entities a search finds as rows ranked from 1: at most {@code limit}, leaving out the
   * entity {@code skip} (null: none).
   */
  private static Stream<Found> found(
      Graph graph, KgweaveClient client, SearchEntitiesRequest request, String skip, int limit) {
    List<Found> rows = new ArrayList<>();
    for (Entity e : client.knowledge(stub -> stub.searchEntities(request)).getEntitiesList()) {
      if (!e.getId().equals(skip) && rows.size() < limit) {
        rows.add(Found.of(graph, rows.size() + 1, e));
      }
    }
    return rows.stream();
  }

  @Procedure(name = "kgweave.status", mode = Mode.READ)
  @Description("kgweave.status() - the kgweave server this database talks to (kgweave.address) "
      + "and its state: ready, the active model version and metrics, graph backend, device, "
      + "front end, uptime, running jobs, and changes: a map of the graph changes applied to the "
      + "served model (appliedOffset, endOffset, events, factsAdded, ...) and the retraining from "
      + "them (updatesStarted, updatesRegistered, fullRetrainsStarted, refinementsActivated, "
      + "...), null when the server applies none.")
  public Stream<ServerStatus> status() {
    Graph graph = new Graph(db, tx);
    KgweaveClient client = graph.client();
    StatusResponse response =
        client.admin(stub -> stub.status(StatusRequest.getDefaultInstance()));
    return Stream.of(ServerStatus.of(client.address(), response));
  }
}
