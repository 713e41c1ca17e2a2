package io.kgweave.neo4j;

import io.kgweave.v1.CompleteRequest;
import io.kgweave.v1.CompleteResponse;
import io.kgweave.v1.CompletionCandidate;
import io.kgweave.v1.Entity;
import io.kgweave.v1.GetEntityRequest;
import io.kgweave.v1.LinkQuery;
import io.kgweave.v1.SearchEntitiesRequest;
import io.kgweave.v1.StatusRequest;
import io.kgweave.v1.StatusResponse;
import io.kgweave.v1.Triple;
import io.kgweave.v1.VerbalizeRequest;
import io.kgweave.v1.VerbalizeResponse;
import java.util.ArrayList;
import java.util.HashMap;
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
      List.of("direction", "generate", "kgeCandidates");
  private static final List<String> SEARCH_OPTIONS = List.of("mode");

  @Context public GraphDatabaseAPI db;
  @Context public Transaction tx;

  /** One verbalized triple. */
  public static class Sentence {
    public long index;
    public String head;
    public String relation;
    public String tail;
    public String sentence;
    public String version;

    Sentence(long index, Triple t, String sentence, String version) {
      this.index = index;
      this.head = t.getHead();
      this.relation = t.getRelation();
      this.tail = t.getTail();
      this.sentence = sentence;
      this.version = version;
    }
  }

  /** One completion candidate, re-ranked by the fitted combination of graph and LM scores. */
  public static class Completion {
    public long rank;
    public String candidate;
    public String entity;
    public Node node;
    public boolean isNew;
    public double graphScore;
    public double kgeScore;
    public double lmScore;
    public double combinedScore;
    public String evidence;
    public String source;
    public boolean known;
    public String version;

    Completion(Graph graph, CompletionCandidate c, String version) {
      this.rank = c.getRank();
      this.candidate = c.getName().isEmpty() ? c.getEntityId() : c.getName();
      this.entity = c.getEntityId();
      this.node = graph.node(c.getEntityId());
      this.isNew = node == null;
      this.graphScore = c.getGraphScore();
      this.kgeScore = c.getKgeScore();
      this.lmScore = c.getLmLogprob();
      this.combinedScore = c.getCombinedScore();
      this.evidence = c.getEvidence();
      this.source = c.getSource();
      this.known = c.getKnown();
      this.version = version;
    }
  }

  /** One entity found by search. */
  public static class Found {
    public long rank;
    public Node node;
    public String entity;
    public String name;
    public String description;
    public double similarity;
    public String version;

    Found(Graph graph, long rank, Entity e) {
      this.rank = rank;
      this.node = graph.node(e.getId());
      this.entity = e.getId();
      this.name = e.getName();
      this.description = e.getDescription();
      this.similarity = e.getSimilarity();
      this.version = e.getModelVersion();
    }
  }

  /** The kgweave server's state. */
  public static class ServerStatus {
    public String address;
    public boolean ready;
    public String version;
    public String model;
    public long dim;
    public long entities;
    public long relations;
    public Map<String, Object> validMetrics;
    public Map<String, Object> testMetrics;
    public String graphBackend;
    public String graphUri;
    public String device;
    public String frontend;
    public String kgweaveVersion;
    public double uptimeSeconds;
    public long activeJobs;
    public long processMemoryBytes;

    ServerStatus(String address, StatusResponse s) {
      this.address = address;
      this.ready = s.getReady();
      this.version = s.hasActiveModel() ? s.getActiveModel().getVersion() : null;
      this.model = s.hasActiveModel() ? s.getActiveModel().getModel() : null;
      this.dim = s.getActiveModel().getDim();
      this.entities = s.getActiveModel().getNumEntities();
      this.relations = s.getActiveModel().getNumRelations();
      this.validMetrics = new HashMap<String, Object>(s.getActiveModel().getValidMetricsMap());
      this.testMetrics = new HashMap<String, Object>(s.getActiveModel().getTestMetricsMap());
      this.graphBackend = s.getGraphBackend();
      this.graphUri = s.getGraphUri();
      this.device = s.getDevice();
      this.frontend = s.getFrontend();
      this.kgweaveVersion = s.getKgweaveVersion();
      this.uptimeSeconds = s.getUptimeS();
      this.activeJobs = s.getActiveJobs();
      this.processMemoryBytes = s.getProcessMemoryBytes();
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
      rows.add(new Sentence(i, parsed.get(i), response.getSentences(i), response.getModelVersion()));
    }
    return rows.stream();
  }

  @Procedure(name = "kgweave.complete", mode = Mode.READ)
  @Description("kgweave.complete(entity, relation, k = 10, options = {direction: 'tails', "
      + "generate: true, kgeCandidates: 50}) - LLM-driven completion of (entity, relation, ?) "
      + "(direction 'heads': (?, relation, entity)): candidates from the embeddings and from the "
      + "language model, re-ranked by the fitted combination of graphScore and lmScore, each with "
      + "the verbalized evidence; node is the candidate's node when the graph has it (isNew "
      + "false), else null (isNew true).")
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
    Graph graph = new Graph(db, tx);
    String fixed = graph.entity(entity, heads ? "tail" : "head");
    LinkQuery.Builder query = LinkQuery.newBuilder().setRelation(Graph.relation(relation));
    CompleteRequest request = CompleteRequest.newBuilder()
        .setQuery(heads ? query.setTail(fixed) : query.setHead(fixed))
        .setK((int) Graph.positive(k, "k", 100))
        .setKgeCandidates(
            candidates == null ? 50 : (int) Graph.positive(candidates, "kgeCandidates", 1000))
        .setGenerate(Graph.flag(options, "generate", true))
        .build();
    CompleteResponse response = graph.client().knowledge(stub -> stub.complete(request));
    List<Completion> rows = new ArrayList<>(response.getCandidatesCount());
    for (CompletionCandidate c : response.getCandidatesList()) {
      rows.add(new Completion(graph, c, response.getModelVersion()));
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
    List<Found> rows = new ArrayList<>(limit);
    for (Entity e : client.knowledge(stub -> stub.searchEntities(search)).getEntitiesList()) {
      if (!e.getId().equals(self.getId()) && rows.size() < limit) {
        rows.add(new Found(graph, rows.size() + 1, e));
      }
    }
    return rows.stream();
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
    List<Found> rows = new ArrayList<>();
    for (Entity e : graph.client().knowledge(stub -> stub.searchEntities(built)).getEntitiesList()) {
      rows.add(new Found(graph, rows.size() + 1, e));
    }
    return rows.stream();
  }

  @Procedure(name = "kgweave.status", mode = Mode.READ)
  @Description("kgweave.status() - the kgweave server this database talks to (kgweave.address) "
      + "and its state: ready, the active model version and metrics, graph backend, device, "
      + "front end, uptime, running jobs.")
  public Stream<ServerStatus> status() {
    Graph graph = new Graph(db, tx);
    KgweaveClient client = graph.client();
    StatusResponse response =
        client.admin(stub -> stub.status(StatusRequest.getDefaultInstance()));
    return Stream.of(new ServerStatus(client.address(), response));
  }
}
