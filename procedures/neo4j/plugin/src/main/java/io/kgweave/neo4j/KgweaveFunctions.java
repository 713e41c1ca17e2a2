package io.kgweave.neo4j;

import io.kgweave.v1.ScoreTriplesRequest;
import io.kgweave.v1.ScoreTriplesResponse;
import io.kgweave.v1.Triple;
import io.kgweave.v1.VerbalizeRequest;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import org.neo4j.graphdb.Transaction;
import org.neo4j.kernel.internal.GraphDatabaseAPI;
import org.neo4j.procedure.Context;
import org.neo4j.procedure.Description;
import org.neo4j.procedure.Name;
import org.neo4j.procedure.UserFunction;

/** Functions: triple scores and entity text, usable anywhere in an expression. */
public class KgweaveFunctions {
  /** Most triples the server scores in one call. */
  static final int MAX_TRIPLES_PER_CALL = 10_000;

  @Context public GraphDatabaseAPI db;
  @Context public Transaction tx;

  @UserFunction(name = "kgweave.score")
  @Description("kgweave.score(head, relation, tail) - the active model's plausibility score of "
      + "one triple (higher is more plausible; the scale is the model's). head and tail: nodes "
      + "(their key property) or entity ids or names; relation: a label, its text, or a "
      + "relationship (its relation property, else its type).")
  public Double score(
      @Name("head") Object head, @Name("relation") Object relation, @Name("tail") Object tail) {
    return scoreAll(List.of(Arrays.asList(head, relation, tail))).get(0);
  }

  @UserFunction(name = "kgweave.scoreAll")
  @Description("kgweave.scoreAll(triples) - scores of many triples in one call (10,000 per call), "
      + "in order. Each triple: [head, relation, tail], {head, relation, tail}, or a relationship "
      + "(start node, its relation, end node).")
  public List<Double> scoreAll(@Name("triples") List<Object> triples) {
    if (triples == null) {
      throw KgweaveException.invalidArgument("kgweave.scoreAll needs a list of triples, not null");
    }
    Graph graph = new Graph(db, tx);
    List<Triple> parsed = new ArrayList<>(triples.size());
    for (int i = 0; i < triples.size(); i++) {
      parsed.add(graph.triple(triples.get(i), i));
    }
    List<Double> scores = new ArrayList<>(parsed.size());
    KgweaveClient client = graph.client();
    for (int from = 0; from < parsed.size(); from += MAX_TRIPLES_PER_CALL) {
      ScoreTriplesRequest request = ScoreTriplesRequest.newBuilder()
          .addAllTriples(parsed.subList(from, Math.min(parsed.size(), from + MAX_TRIPLES_PER_CALL)))
          .build();
      ScoreTriplesResponse response = client.knowledge(stub -> stub.scoreTriples(request));
      for (float s : response.getScoresList()) {
        scores.add((double) s);
      }
    }
    return scores;
  }

  @UserFunction(name = "kgweave.verbalize")
  @Description("kgweave.verbalize(entity, maxChars = 600) - the entity (a node, an id or a name) "
      + "with its neighbourhood as fluent text: its description, then its most important facts, "
      + "cut at a sentence boundary within maxChars.")
  public String verbalize(
      @Name("entity") Object entity,
      @Name(value = "maxChars", defaultValue = "600") long maxChars) {
    Graph graph = new Graph(db, tx);
    VerbalizeRequest request = VerbalizeRequest.newBuilder()
        .setEntity(graph.entity(entity, "entity"))
        .setMaxChars((int) Graph.positive(maxChars, "maxChars", 100_000))
        .build();
    return graph.client().knowledge(stub -> stub.verbalize(request)).getText();
  }
}
