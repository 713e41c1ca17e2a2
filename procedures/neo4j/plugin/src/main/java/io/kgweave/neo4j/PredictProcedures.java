package io.kgweave.neo4j;

import io.kgweave.v1.Candidate;
import io.kgweave.v1.LinkQuery;
import io.kgweave.v1.PredictLinksRequest;
import io.kgweave.v1.PredictLinksResponse;
import io.kgweave.v1.QueryResult;
import java.util.ArrayList;
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

/** Link prediction: kgweave's PredictLinks, continued with the database's own nodes. */
public class PredictProcedures {
  static final int MAX_K = 1000;
  private static final List<String> OPTIONS = List.of("filterKnown", "k");

  @Context public GraphDatabaseAPI db;
  @Context public Transaction tx;

  /** One predicted entity. */
  public record Prediction(
      Node node, String entity, String name, double score, long rank, boolean known,
      String version) {
    static Prediction of(Graph graph, Candidate c, String version) {
      return new Prediction(graph.node(c.getEntityId()), c.getEntityId(), c.getName(),
          c.getScore(), c.getRank(), c.getKnown(), version);
    }
  }

  /** One predicted entity for the input at position {@code index} of a batch. */
  public record BatchPrediction(
      long index, Object input, Node node, String entity, String name, double score, long rank,
      boolean known, String version) {
    static BatchPrediction of(long index, Object input, Prediction p) {
      return new BatchPrediction(index, input, p.node(), p.entity(), p.name(), p.score(),
          p.rank(), p.known(), p.version());
    }
  }

  @Procedure(name = "kgweave.predict.tails", mode = Mode.READ)
  @Description("kgweave.predict.tails(head, relation, k = 10, options = {filterKnown: false}) - "
      + "the k most plausible tails of (head, relation, ?) under kgweave's active model. head: a "
      + "node (its key property) or an entity id or name. node is the database node of each "
      + "answer (null when the graph has none); version is the model version that answered.")
  public Stream<Prediction> tails(
      @Name("head") Object head,
      @Name("relation") Object relation,
      @Name(value = "k", defaultValue = "10") long k,
      @Name(value = "options", defaultValue = "{}") Map<String, Object> options) {
    return predict(true, List.of(head), relation, k, options, "kgweave.predict.tails")
        .get(0).stream();
  }

  @Procedure(name = "kgweave.predict.heads", mode = Mode.READ)
  @Description("kgweave.predict.heads(tail, relation, k = 10, options = {filterKnown: false}) - "
      + "the k most plausible heads of (?, relation, tail) under kgweave's active model. tail: a "
      + "node (its key property) or an entity id or name. node is the database node of each "
      + "answer (null when the graph has none); version is the model version that answered.")
  public Stream<Prediction> heads(
      @Name("tail") Object tail,
      @Name("relation") Object relation,
      @Name(value = "k", defaultValue = "10") long k,
      @Name(value = "options", defaultValue = "{}") Map<String, Object> options) {
    return predict(false, List.of(tail), relation, k, options, "kgweave.predict.heads")
        .get(0).stream();
  }

  @Procedure(name = "kgweave.predict.tailsBatch", mode = Mode.READ)
  @Description("kgweave.predict.tailsBatch(heads, relation, k = 10, options = {filterKnown: false})"
      + " - tails for a whole list of heads (nodes, ids or names) in as few calls as the server "
      + "allows (1,000 queries each): collect() the rows of a MATCH, then call this once. index "
      + "and input tell which head each answer belongs to.")
  public Stream<BatchPrediction> tailsBatch(
      @Name("heads") List<Object> heads,
      @Name("relation") Object relation,
      @Name(value = "k", defaultValue = "10") long k,
      @Name(value = "options", defaultValue = "{}") Map<String, Object> options) {
    return batch(true, heads, relation, k, options, "kgweave.predict.tailsBatch");
  }

  @Procedure(name = "kgweave.predict.headsBatch", mode = Mode.READ)
  @Description("kgweave.predict.headsBatch(tails, relation, k = 10, options = {filterKnown: false})"
      + " - heads for a whole list of tails (nodes, ids or names) in as few calls as the server "
      + "allows (1,000 queries each). index and input tell which tail each answer belongs to.")
  public Stream<BatchPrediction> headsBatch(
      @Name("tails") List<Object> tails,
      @Name("relation") Object relation,
      @Name(value = "k", defaultValue = "10") long k,
      @Name(value = "options", defaultValue = "{}") Map<String, Object> options) {
    return batch(false, tails, relation, k, options, "kgweave.predict.headsBatch");
  }

  private Stream<BatchPrediction> batch(
      boolean tails, List<Object> inputs, Object relation, long k, Map<String, Object> options,
      String procedure) {
    if (inputs == null) {
      throw KgweaveException.invalidArgument(procedure + " needs a list of entities, not null");
    }
    List<List<Prediction>> results = predict(tails, inputs, relation, k, options, procedure);
    List<BatchPrediction> rows = new ArrayList<>();
    for (int i = 0; i < results.size(); i++) {
      for (Prediction p : results.get(i)) {
        rows.add(BatchPrediction.of(i, inputs.get(i), p));
      }
    }
    return rows.stream();
  }

  private List<List<Prediction>> predict(
      boolean tails, List<Object> inputs, Object relation, long k, Map<String, Object> options,
      String procedure) {
    Graph.knownOptions(options, procedure, OPTIONS);
    Object kValue = options != null && options.get("k") != null ? options.get("k") : k;
    int answers = (int) Graph.positive(kValue, "k", MAX_K);
    boolean filterKnown = Graph.flag(options, "filterKnown", false);
    Graph graph = new Graph(db, tx);
    String rel = Graph.relation(relation);
    String what = tails ? "head" : "tail";
    List<LinkQuery> queries = new ArrayList<>(inputs.size());
    for (int i = 0; i < inputs.size(); i++) {
      String entity = graph.entity(inputs.get(i), inputs.size() == 1 ? what : what + " " + i);
      LinkQuery.Builder q = LinkQuery.newBuilder().setRelation(rel);
      queries.add((tails ? q.setHead(entity) : q.setTail(entity)).build());
    }
    KgweaveClient client = graph.client();
    List<List<Prediction>> out = new ArrayList<>(inputs.size());
    for (int from = 0; from < queries.size(); from += KgweaveClient.MAX_QUERIES_PER_CALL) {
      PredictLinksRequest request = PredictLinksRequest.newBuilder()
          .addAllQueries(queries.subList(
              from, Math.min(queries.size(), from + KgweaveClient.MAX_QUERIES_PER_CALL)))
          .setK(answers)
          .setFilterKnown(filterKnown)
          .build();
      PredictLinksResponse response = client.knowledge(stub -> stub.predictLinks(request));
      for (QueryResult result : response.getResultsList()) {
        List<Prediction> rows = new ArrayList<>(result.getCandidatesCount());
        for (Candidate c : result.getCandidatesList()) {
          rows.add(Prediction.of(graph, c, response.getModelVersion()));
        }
        out.add(rows);
      }
    }
    return out;
  }
}
