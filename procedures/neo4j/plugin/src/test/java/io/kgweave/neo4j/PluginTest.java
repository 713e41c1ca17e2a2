package io.kgweave.neo4j;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.kgweave.v1.Candidate;
import io.kgweave.v1.ChangesStatus;
import io.kgweave.v1.CompleteRequest;
import io.kgweave.v1.CompleteResponse;
import io.kgweave.v1.CompletionCandidate;
import io.kgweave.v1.Entity;
import io.kgweave.v1.GetEntityRequest;
import io.kgweave.v1.GetJobRequest;
import io.kgweave.v1.Job;
import io.kgweave.v1.JobState;
import io.kgweave.v1.LinkQuery;
import io.kgweave.v1.ListModelsRequest;
import io.kgweave.v1.ListModelsResponse;
import io.kgweave.v1.PredictLinksRequest;
import io.kgweave.v1.PredictLinksResponse;
import io.kgweave.v1.QueryResult;
import io.kgweave.v1.ScoreTriplesRequest;
import io.kgweave.v1.SearchEntitiesRequest;
import io.kgweave.v1.StatusRequest;
import io.kgweave.v1.StatusResponse;
import io.kgweave.v1.Triple;
import io.kgweave.v1.VerbalizeRequest;
import io.kgweave.v1.VerbalizeResponse;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Iterator;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.CyclicBarrier;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestInstance;
import org.neo4j.driver.AuthTokens;
import org.neo4j.driver.Driver;
import org.neo4j.driver.GraphDatabase;
import org.neo4j.driver.Record;
import org.neo4j.driver.Session;
import org.neo4j.driver.Value;
import org.neo4j.driver.exceptions.ClientException;
import org.neo4j.harness.Neo4j;

/**
 * Every procedure and function of the plugin in a real Neo4j (the harness, Bolt through the
 * official driver) against a real kgweave server, each answer checked against the same gRPC
 * call made directly.
 */
@TestInstance(TestInstance.Lifecycle.PER_CLASS)
class PluginTest {
  static final Path DEMO = Path.of(System.getProperty("kgweave.pythonpath", "../../../server"))
      .resolve("kgweave/demo");

  /** Entities the tests MATCH by id: always given a node. */
  static final Set<String> MATCHED =
      Set.of("alan_turing", "london", "marie_curie", "physics", "poland");

  KgweaveServer server;
  Neo4j neo4j;
  Driver driver;
  /** Demo entities that have a node in the test database (every other one). */
  final Set<String> inGraph = new java.util.HashSet<>();
  final List<String> allEntities = new ArrayList<>();

  static Neo4j harness(String address, long deadlineMs) {
    return Plugin.start("kgweave.address=" + address, "kgweave.deadline_ms=" + deadlineMs);
  }

  @BeforeAll
  void start() throws IOException {
    server = new KgweaveServer();
    neo4j = harness(server.address(), 120_000);
    driver = GraphDatabase.driver(neo4j.boltURI(), AuthTokens.none());
    List<Map<String, Object>> rows = new ArrayList<>();
    List<String> lines = Files.readAllLines(DEMO.resolve("entity2text.tsv"), StandardCharsets.UTF_8);
    for (int i = 0; i < lines.size(); i++) {
      String[] parts = lines.get(i).split("\t");
      allEntities.add(parts[0]);
      if (i % 2 == 0 || MATCHED.contains(parts[0])) {
        inGraph.add(parts[0]);
        rows.add(Map.of("id", parts[0], "name", parts[1]));
      }
    }
    List<Map<String, Object>> facts = new ArrayList<>();
    for (String line : Files.readAllLines(DEMO.resolve("train.tsv"), StandardCharsets.UTF_8)) {
      String[] t = line.split("\t");
      if (inGraph.contains(t[0]) && inGraph.contains(t[2])) {
        facts.add(Map.of("h", t[0], "r", t[1], "t", t[2]));
      }
    }
    try (Session session = driver.session()) {
      session.run("CREATE INDEX entity_id FOR (e:Entity) ON (e.id)").consume();
      session.run("UNWIND $rows AS row CREATE (:Entity {id: row.id, name: row.name})",
          Map.of("rows", rows)).consume();
      session.run("UNWIND $facts AS f MATCH (h:Entity {id: f.h}), (t:Entity {id: f.t}) "
          + "CREATE (h)-[:RELATED {relation: f.r}]->(t)", Map.of("facts", facts)).consume();
    }
  }

  @AfterAll
  void stop() {
    if (driver != null) {
      driver.close();
    }
    if (neo4j != null) {
      neo4j.close();
    }
    if (server != null) {
      server.close();
    }
    KgweaveClient.closeAll();
  }

  List<Record> cypher(String query, Map<String, Object> params) {
    try (Session session = driver.session()) {
      return session.run(query, params).list();
    }
  }

  /** The Cypher error of a query that must fail: one line, kgweave's message, no Java. */
  String cypherError(String query, Map<String, Object> params) {
    ClientException e = assertThrows(ClientException.class, () -> cypher(query, params));
    String message = e.getMessage();
    assertTrue(message.startsWith("kgweave: "), message);
    assertFalse(message.contains("\n"), message);
    assertFalse(message.contains("Exception"), message);
    assertFalse(message.contains("io.grpc"), message);
    return message;
  }

  void assertSame(QueryResult expected, List<Record> rows, String version) {
    assertEquals(expected.getCandidatesCount(), rows.size());
    for (int i = 0; i < rows.size(); i++) {
      Candidate c = expected.getCandidates(i);
      Record row = rows.get(i);
      assertEquals(c.getEntityId(), row.get("entity").asString());
      assertEquals(c.getName(), row.get("name").asString());
      assertEquals(c.getRank(), row.get("rank").asLong());
      assertEquals((double) c.getScore(), row.get("score").asDouble());
      assertEquals(c.getKnown(), row.get("known").asBoolean());
      assertEquals(version, row.get("version").asString());
      assertNode(c.getEntityId(), row.get("node"));
    }
  }

  void assertNode(String entity, Value node) {
    if (inGraph.contains(entity)) {
      assertEquals(entity, node.asNode().get("id").asString());
    } else {
      assertTrue(node.isNull(), entity + " has no node, yet got " + node);
    }
  }

  PredictLinksResponse predict(List<LinkQuery> queries, int k, boolean filterKnown) {
    return server.knowledge().predictLinks(PredictLinksRequest.newBuilder()
        .addAllQueries(queries).setK(k).setFilterKnown(filterKnown).build());
  }

  static LinkQuery tails(String head, String relation) {
    return LinkQuery.newBuilder().setHead(head).setRelation(relation).build();
  }

  @Test
  void predictTailsOfANodeAndOfANameEqualPredictLinks() {
    PredictLinksResponse expected = predict(List.of(tails("alan_turing", "born_in")), 5, false);
    List<Record> byNode = cypher("MATCH (p:Entity {id: 'alan_turing'}) "
        + "CALL kgweave.predict.tails(p, 'born_in', 5) YIELD node, entity, name, score, rank, "
        + "known, version RETURN *", Map.of());
    assertSame(expected.getResults(0), byNode, expected.getModelVersion());
    List<Record> byName = cypher("CALL kgweave.predict.tails('Alan Turing', 'born_in', 5)",
        Map.of());
    assertSame(expected.getResults(0), byName, expected.getModelVersion());
    // options.k overrides k; the default k is 10
    assertEquals(3, cypher("CALL kgweave.predict.tails('alan_turing', 'born_in', 5, {k: 3})",
        Map.of()).size());
    assertEquals(10, cypher("CALL kgweave.predict.tails('alan_turing', 'born_in')", Map.of())
        .size());
  }

  @Test
  void predictHeadsWithFilterKnownEqualsPredictLinks() {
    LinkQuery query = LinkQuery.newBuilder().setTail("london").setRelation("born_in").build();
    PredictLinksResponse expected = predict(List.of(query), 7, true);
    List<Record> rows = cypher("MATCH (c:Entity {id: 'london'}) "
        + "CALL kgweave.predict.heads(c, 'born_in', 7, {filterKnown: true}) YIELD node, entity, "
        + "name, score, rank, known, version RETURN *", Map.of());
    assertSame(expected.getResults(0), rows, expected.getModelVersion());
    assertTrue(rows.stream().noneMatch(r -> r.get("known").asBoolean()));
  }

  @Test
  void tailsBatchOverAMatchIsOneCallPerThousandRows() {
    List<String> heads = cypher("MATCH (p:Entity) RETURN p.id AS id ORDER BY id", Map.of())
        .stream().map(r -> r.get("id").asString()).toList();
    List<LinkQuery> queries = heads.stream().map(h -> tails(h, "citizen_of")).toList();
    PredictLinksResponse expected = predict(queries, 3, false);
    List<Record> rows = cypher("MATCH (p:Entity) WITH p ORDER BY p.id WITH collect(p) AS people "
        + "CALL kgweave.predict.tailsBatch(people, 'citizen_of', 3) YIELD index, input, node, "
        + "entity, name, score, rank, known, version RETURN * ORDER BY index, rank", Map.of());
    assertEquals(heads.size() * 3, rows.size());
    for (int i = 0; i < heads.size(); i++) {
      List<Record> mine = rows.subList(3 * i, 3 * i + 3);
      assertEquals(heads.get(i), mine.get(0).get("input").asNode().get("id").asString());
      assertTrue(mine.stream().allMatch(r -> r.get("index").asLong() == mine.get(0).get("index")
          .asLong()));
      assertSame(expected.getResults(i), mine, expected.getModelVersion());
    }
    // more than the server's 1,000 queries per call: chunked, answers still in input order
    List<String> many = new ArrayList<>();
    for (int i = 0; i < 2500; i++) {
      many.add(allEntities.get(i % allEntities.size()));
    }
    List<Record> big = cypher("CALL kgweave.predict.tailsBatch($heads, 'located_in', 1) "
        + "YIELD index, input, entity RETURN index, input, entity ORDER BY index",
        Map.of("heads", many));
    assertEquals(2500, big.size());
    PredictLinksResponse first = predict(
        allEntities.stream().map(h -> tails(h, "located_in")).toList(), 1, false);
    for (Record r : big) {
      int index = (int) r.get("index").asLong();
      assertEquals(many.get(index), r.get("input").asString());
      assertEquals(first.getResults(index % allEntities.size()).getCandidates(0).getEntityId(),
          r.get("entity").asString());
    }
    List<Record> heads2 = cypher("CALL kgweave.predict.headsBatch(['london', 'paris'], 'born_in', 2)"
        + " YIELD index, entity RETURN index, entity ORDER BY index", Map.of());
    assertEquals(4, heads2.size());
  }

  @Test
  void scoreAndScoreAllEqualScoreTriples() {
    List<Record> facts = cypher("MATCH (h)-[f:RELATED]->(t) RETURN h.id AS h, f.relation AS r, "
        + "t.id AS t, kgweave.score(h, f.relation, t) AS score ORDER BY h, r, t", Map.of());
    assertFalse(facts.isEmpty());
    ScoreTriplesRequest.Builder request = ScoreTriplesRequest.newBuilder();
    for (Record f : facts) {
      request.addTriples(Triple.newBuilder().setHead(f.get("h").asString())
          .setRelation(f.get("r").asString()).setTail(f.get("t").asString()));
    }
    List<Float> expected = server.knowledge().scoreTriples(request.build()).getScoresList();
    for (int i = 0; i < facts.size(); i++) {
      assertEquals((double) expected.get(i), facts.get(i).get("score").asDouble());
    }
    List<Record> all = cypher("MATCH (h)-[f:RELATED]->(t) WITH h, f, t ORDER BY h.id, f.relation, "
        + "t.id RETURN kgweave.scoreAll(collect([h, f.relation, t.id])) AS scores", Map.of());
    List<Double> scores = all.get(0).get("scores").asList(Value::asDouble);
    for (int i = 0; i < facts.size(); i++) {
      assertEquals((double) expected.get(i), scores.get(i));
    }
    double byName = cypher("RETURN kgweave.score('Alan Turing', 'born_in', 'London') AS s",
        Map.of()).get(0).get("s").asDouble();
    float direct = server.knowledge().scoreTriples(ScoreTriplesRequest.newBuilder()
        .addTriples(Triple.newBuilder().setHead("alan_turing").setRelation("born_in")
            .setTail("london")).build()).getScores(0);
    assertEquals((double) direct, byName);
  }

  @Test
  void verbalizeEqualsVerbalize() {
    VerbalizeResponse entity = server.knowledge().verbalize(
        VerbalizeRequest.newBuilder().setEntity("marie_curie").setMaxChars(600).build());
    String text = cypher("MATCH (m:Entity {id: 'marie_curie'}) RETURN kgweave.verbalize(m) AS t",
        Map.of()).get(0).get("t").asString();
    assertEquals(entity.getText(), text);
    assertFalse(text.isEmpty());
    List<Record> rows = cypher("CALL kgweave.verbalize.triples([['marie_curie', 'born_in', "
        + "'warsaw'], {head: 'Alan Turing', relation: 'born_in', tail: 'london'}])", Map.of());
    VerbalizeResponse expected = server.knowledge().verbalize(VerbalizeRequest.newBuilder()
        .addTriples(Triple.newBuilder().setHead("marie_curie").setRelation("born_in")
            .setTail("warsaw"))
        .addTriples(Triple.newBuilder().setHead("Alan Turing").setRelation("born_in")
            .setTail("london"))
        .build());
    assertEquals(2, rows.size());
    for (int i = 0; i < 2; i++) {
      assertEquals(expected.getSentences(i), rows.get(i).get("sentence").asString());
      assertEquals(i, rows.get(i).get("index").asLong());
    }
  }

  @Test
  void searchAndSimilarEqualSearchEntities() {
    String text = "the mathematician who broke Enigma";
    List<Entity> expected = server.knowledge().searchEntities(
        SearchEntitiesRequest.newBuilder().setText(text).setLimit(5).build()).getEntitiesList();
    List<Record> rows = cypher("CALL kgweave.search($text, 5)", Map.of("text", text));
    assertEquals(expected.size(), rows.size());
    for (int i = 0; i < rows.size(); i++) {
      assertEquals(expected.get(i).getId(), rows.get(i).get("entity").asString());
      assertEquals((double) expected.get(i).getSimilarity(),
          rows.get(i).get("similarity").asDouble());
      assertNode(expected.get(i).getId(), rows.get(i).get("node"));
    }
    List<Entity> prefix = server.knowledge().searchEntities(
        SearchEntitiesRequest.newBuilder().setPrefix("mar").setLimit(4).build()).getEntitiesList();
    List<Record> byPrefix = cypher("CALL kgweave.search('mar', 4, {mode: 'prefix'}) YIELD entity",
        Map.of());
    assertEquals(prefix.stream().map(Entity::getId).toList(),
        byPrefix.stream().map(r -> r.get("entity").asString()).toList());

    Entity curie = server.knowledge().getEntity(
        GetEntityRequest.newBuilder().setEntity("marie_curie").build());
    List<String> neighbours = server.knowledge().searchEntities(SearchEntitiesRequest.newBuilder()
            .setText(curie.getName() + ": " + curie.getDescription()).setLimit(4).build())
        .getEntitiesList().stream().map(Entity::getId).filter(id -> !id.equals("marie_curie"))
        .limit(3).toList();
    List<Record> similar = cypher("MATCH (m:Entity {id: 'marie_curie'}) "
        + "CALL kgweave.similar(m, 3) YIELD entity, rank RETURN entity ORDER BY rank", Map.of());
    assertEquals(neighbours, similar.stream().map(r -> r.get("entity").asString()).toList());
  }

  @Test
  void statusEqualsStatus() {
    StatusResponse expected = server.admin().status(StatusRequest.getDefaultInstance());
    Record row = cypher("CALL kgweave.status()", Map.of()).get(0);
    assertTrue(row.get("ready").asBoolean());
    assertEquals(server.address(), row.get("address").asString());
    assertEquals(expected.getActiveModel().getVersion(), row.get("version").asString());
    assertEquals(expected.getActiveModel().getModel(), row.get("model").asString());
    assertEquals(expected.getActiveModel().getNumEntities(), row.get("entities").asLong());
    assertEquals(expected.getGraphBackend(), row.get("graphBackend").asString());
    assertEquals(expected.getKgweaveVersion(), row.get("kgweaveVersion").asString());
    assertEquals(expected.getActiveModel().getValidMetricsMap().get("mrr"),
        row.get("validMetrics").get("mrr").asDouble());
    // the applier's and the retraining's counters: every ChangesStatus field by its JSON name
    assertTrue(expected.hasChanges(), "kgweave serve applies graph changes by default");
    Map<String, Object> changes = row.get("changes").asMap();
    Set<String> names = new java.util.HashSet<>();
    for (var field : ChangesStatus.getDescriptor().getFields()) {
      names.add(field.getJsonName());
    }
    assertEquals(names, changes.keySet()); // (a Cypher map keeps no order)
    assertEquals(expected.getChanges().getEndOffset(), changes.get("endOffset"));
    assertEquals(expected.getChanges().getAppliedOffset(), changes.get("appliedOffset"));
    assertEquals(expected.getChanges().getUpdatesStarted(), changes.get("updatesStarted"));
    assertNull(changes.get("lastError"));
  }

  /**
   * kgweave.complete yields what Complete returns: every candidate field and the combination
   * used, on the embeddings' candidates alone and with the LM's, the latter also written to the
   * server's graph (writeToGraph, minScore).
   */
  void completeEqualsComplete() {
    for (boolean lm : List.of(false, true)) {
      CompleteResponse expected = server.knowledge().complete(CompleteRequest.newBuilder()
          .setQuery(tails("alan_turing", "field_of_work")).setK(5).setKgeCandidates(50)
          .setGenerate(lm).setWriteToGraph(lm).setMinScore(-1e9f).build());
      List<Record> rows = cypher("CALL kgweave.complete('alan_turing', 'field_of_work', 5, "
          + "{generate: $lm, writeToGraph: $lm, minScore: -1e9})", Map.of("lm", lm));
      assertEquals(expected.getCandidatesCount(), rows.size());
      assertEquals(lm, expected.getWritten() > 0, "written " + expected.getWritten());
      for (int i = 0; i < rows.size(); i++) {
        CompletionCandidate c = expected.getCandidates(i);
        Record r = rows.get(i);
        String id = c.getEntityId();
        assertEquals(c.getNew(), r.get("isNew").asBoolean());
        assertEquals(id.isEmpty() ? null : id, r.get("entity").asString(null));
        assertEquals(c.getName().isEmpty() ? id : c.getName(), r.get("candidate").asString());
        assertEquals(c.getRank(), r.get("rank").asLong());
        assertEquals((double) c.getGraphScore(), r.get("graphScore").asDouble());
        assertEquals((double) c.getKgeScore(), r.get("kgeScore").asDouble());
        assertEquals((double) c.getLmLogprob(), r.get("lmScore").asDouble());
        assertEquals((double) c.getLmMarginal(), r.get("lmMarginal").asDouble());
        assertEquals((double) c.getCombinedScore(), r.get("combinedScore").asDouble());
        assertEquals(c.getEvidence(), r.get("evidence").asString());
        assertFalse(c.getEvidence().isEmpty());
        assertEquals(c.getSource(), r.get("source").asString());
        assertEquals(c.getKnown(), r.get("known").asBoolean());
        if (id.isEmpty()) {
          assertTrue(r.get("node").isNull());
        } else {
          assertNode(id, r.get("node"));
        }
        assertEquals(expected.getModelVersion(), r.get("version").asString());
        assertEquals((double) expected.getWKge(), r.get("wKge").asDouble());
        assertEquals((double) expected.getWLm(), r.get("wLm").asDouble());
        assertEquals((double) expected.getBias(), r.get("bias").asDouble());
        assertEquals(expected.hasWText() ? (Object) (double) expected.getWText() : null,
            r.get("wText").isNull() ? null : r.get("wText").asDouble());
        assertEquals(expected.getLmFeature().isEmpty() ? null : expected.getLmFeature(),
            r.get("lmFeature").asString(null));
        assertEquals(expected.getWritten(), r.get("written").asLong());
      }
    }
    assertEquals("kgweave: INVALID_ARGUMENT: minScore must be a number, not 'high'",
        cypherError("CALL kgweave.complete('alan_turing', 'field_of_work', 5, "
            + "{writeToGraph: true, minScore: 'high'})", Map.of()));
  }

  /** Every recipe of docs/cypher.md but the admin ones runs on this graph (with a joint model). */
  void cookbookRecipesRun() {
    String cookbook;
    try {
      cookbook = Files.readString(SignaturesTest.COOKBOOK, StandardCharsets.UTF_8);
    } catch (IOException e) {
      throw new java.io.UncheckedIOException(e);
    }
    Matcher block = Pattern.compile("```cypher\n(.*?)```", Pattern.DOTALL).matcher(cookbook);
    int ran = 0;
    while (block.find()) {
      String recipe = block.group(1);
      if (recipe.contains("kgweave.admin.")) {
        continue;
      }
      List<Record> rows = cypher(recipe, Map.of());
      assertTrue(!rows.isEmpty() || recipe.contains("MERGE"), "no rows from\n" + recipe);
      ran++;
    }
    assertTrue(ran >= 10, ran + " recipes");
  }

  /** The registry version of a served one ({@code v0002@750}: v0002 with the change log's events
   * up to offset 750 applied, kgweave's overlay). */
  private static String registryVersion(String served) {
    int at = served.indexOf('@');
    return at < 0 ? served : served.substring(0, at);
  }

  /** Trains a joint (KGE + LM) version, which kgweave.complete needs, and completes with it. */
  @Test
  void adminProceduresTrainWatchActivateAndTheNewVersionCompletes() {
    List<Record> procedures = cypher("SHOW PROCEDURES YIELD name, admin "
        + "WHERE name STARTS WITH 'kgweave.admin.' RETURN name, admin", Map.of());
    assertEquals(4, procedures.size());
    assertTrue(procedures.stream().allMatch(r -> r.get("admin").asBoolean()), procedures::toString);

    ListModelsResponse models = server.admin().listModels(ListModelsRequest.getDefaultInstance());
    List<Record> rows = cypher("CALL kgweave.admin.models()", Map.of());
    assertEquals(models.getModelsCount(), rows.size());
    assertEquals(models.getActiveVersion(), rows.stream().filter(r -> r.get("active").asBoolean())
        .findFirst().orElseThrow().get("version").asString());

    assertTrue(cypherError("MATCH (p:Entity {id: 'alan_turing'}) "
        + "CALL kgweave.complete(p, 'field_of_work', 5) YIELD candidate RETURN candidate", Map.of())
        // the served version: the registry's, with the change-log offset its overlay reached
        .matches("kgweave: FAILED_PRECONDITION: model " + models.getActiveVersion()
            + "(@\\d+)? has no language model.*"));
    Record job = cypher("CALL kgweave.admin.train({joint: true, epochs: 10, dim: 16, "
        + "activation: 'never'})", Map.of()).get(0);
    String jobId = job.get("jobId").asString();
    Job last = awaitJob(jobId);
    assertEquals(JobState.JOB_STATE_SUCCEEDED, last.getState(), last.getMessage());
    Record done = cypher("CALL kgweave.admin.job($id)", Map.of("id", jobId)).get(0);
    assertEquals("succeeded", done.get("state").asString());
    assertEquals(last.getModelVersion(), done.get("version").asString());
    assertFalse(done.get("activated").asBoolean());

    String joint = last.getModelVersion();
    String active = models.getActiveVersion();
    try {
      Record activated = cypher("CALL kgweave.admin.activate($v)", Map.of("v", joint)).get(0);
      assertTrue(activated.get("active").asBoolean());
      assertEquals(joint, activated.get("version").asString());
      assertEquals(joint, registryVersion(server.admin().status(
          StatusRequest.getDefaultInstance()).getActiveModel().getVersion()));
      completeEqualsComplete();
      cookbookRecipesRun();
    } finally {
      cypher("CALL kgweave.admin.activate($v)", Map.of("v", active));
    }
    assertEquals(active, registryVersion(server.admin().status(
        StatusRequest.getDefaultInstance()).getActiveModel().getVersion()));

    assertTrue(cypherError("CALL kgweave.admin.job('no-such-job')", Map.of())
        .startsWith("kgweave: NOT_FOUND: "));
    assertTrue(cypherError("CALL kgweave.admin.activate('v9999')", Map.of())
        .startsWith("kgweave: NOT_FOUND: "));
    assertTrue(cypherError("CALL kgweave.admin.train({epoch: 3})", Map.of())
        .startsWith("kgweave: INVALID_ARGUMENT: unknown training setting 'epoch'"));
  }

  /** The final state of a job, followed on WatchJob's stream (no polling, no deadline of ours). */
  Job awaitJob(String jobId) {
    Iterator<Job> updates = server.admin().watchJob(
        GetJobRequest.newBuilder().setJobId(jobId).build());
    Job last = null;
    while (updates.hasNext()) {
      last = updates.next();
    }
    assertNotNull(last);
    return last;
  }

  /** config.tuning makes kgweave.admin.train a search job (kgweave tune); bad settings are one
   * line, the plugin's own or the server's. */
  @Test
  void adminTrainWithTuningRunsASearchJob() {
    assertEquals("kgweave: INVALID_ARGUMENT: unknown tuning setting 'trial' (known: budgetS, "
        + "trials, trialBudgetS, searchModels, pruner, study)",
        cypherError("CALL kgweave.admin.train({tuning: {trial: 1}})", Map.of()));
    assertEquals("kgweave: INVALID_ARGUMENT: trials must be an integer, not 'one'",
        cypherError("CALL kgweave.admin.train({tuning: {trials: 'one'}})", Map.of()));
    assertEquals("kgweave: INVALID_ARGUMENT: search_models must be true or false, not 1",
        cypherError("CALL kgweave.admin.train({tuning: {trials: 1, search_models: 1}})",
            Map.of()));
    assertTrue(cypherError("CALL kgweave.admin.train({tuning: 3})", Map.of())
        .startsWith("kgweave: INVALID_ARGUMENT: tuning must be a map of tuning settings"));
    // the server's checks (kgweave.tuning.study.check_tuning), as the same one line
    String pruner = cypherError(
        "CALL kgweave.admin.train({tuning: {trials: 1, pruner: 'sometimes'}})", Map.of());
    assertTrue(pruner.startsWith("kgweave: INVALID_ARGUMENT: ")
        && pruner.endsWith("tuning: pruner 'sometimes' is not one of median, hyperband, none"),
        pruner);
    assertTrue(cypherError("CALL kgweave.admin.train({tuning: {pruner: 'none'}})", Map.of())
        .endsWith("tuning: give budget_s, trials or both"));
    assertTrue(cypherError("CALL kgweave.admin.train({tuning: {trials: 1, study: '../x'}})",
        Map.of()).contains("is not a study name"));

    Record started = cypher("CALL kgweave.admin.train({epochs: 3, dim: 16, activation: 'never', "
        + "tuning: {trials: 1, trialBudgetS: 600, pruner: 'none', study: 'cypher-test'}})",
        Map.of()).get(0);
    assertEquals(1, started.get("epochs").asLong()); // a search counts its trials as epochs
    Job last = awaitJob(started.get("jobId").asString());
    assertEquals(JobState.JOB_STATE_SUCCEEDED, last.getState(), last.getMessage());
    Record done = cypher("CALL kgweave.admin.job($id)",
        Map.of("id", started.get("jobId").asString())).get(0);
    assertEquals("succeeded", done.get("state").asString());
    assertEquals(1, done.get("epoch").asLong());
    assertTrue(done.get("validMrr").asDouble() > 0, done.toString());
    assertFalse(done.get("activated").asBoolean());
    String version = done.get("version").asString();
    assertEquals(last.getModelVersion(), version);
    assertEquals(1, cypher("CALL kgweave.admin.models() YIELD version WHERE version = $v "
        + "RETURN version", Map.of("v", version)).size());
  }

  @Test
  void badInputIsOneReadableLine() {
    String unknown = cypherError("CALL kgweave.predict.tails('Nobody Atall', 'born_in', 3)",
        Map.of());
    assertTrue(unknown.startsWith("kgweave: NOT_FOUND: unknown entity"), unknown);
    assertTrue(cypherError("CALL kgweave.predict.tails('alan_turing', 'no_such_relation', 3)",
        Map.of()).startsWith("kgweave: NOT_FOUND: "));
    assertEquals("kgweave: INVALID_ARGUMENT: k must be between 1 and 1000, got 0",
        cypherError("CALL kgweave.predict.tails('alan_turing', 'born_in', 0)", Map.of()));
    assertEquals("kgweave: INVALID_ARGUMENT: k must be between 1 and 1000, got 5000",
        cypherError("CALL kgweave.predict.heads('london', 'born_in', 5000)", Map.of()));
    assertTrue(cypherError("CALL kgweave.predict.tails('alan_turing', 'born_in', 3, {fliter: 1})",
        Map.of()).contains("unknown option 'fliter'"));
    assertTrue(cypherError("RETURN kgweave.score('alan_turing', 'born_in', null)", Map.of())
        .contains("tail is null"));
    assertTrue(cypherError("CREATE (n:Thing) WITH n CALL kgweave.predict.tails(n, 'born_in') "
        + "YIELD entity RETURN entity", Map.of()).contains("has no 'id' property"));
    assertTrue(cypherError("RETURN kgweave.scoreAll([['alan_turing', 'born_in']]) AS s", Map.of())
        .contains("triple 0 must be [head, relation, tail]"));
  }

  @Test
  void kgweaveConfIsReadWhenItChangesAndChecked() {
    cypher("CREATE (:Person {qid: 'london', name: 'London as a Person'})", Map.of());
    String search = "CALL kgweave.search('London', 1, {mode: 'prefix'}) YIELD entity, node "
        + "RETURN entity, node";
    try {
      Plugin.writeConf(neo4j, "kgweave.address=" + server.address(),
          "kgweave.deadline_ms=120000", "kgweave.entity_label=Person", "kgweave.key_property=qid");
      Record row = cypher(search, Map.of()).get(0);
      assertEquals("london", row.get("entity").asString());
      assertEquals("London as a Person", row.get("node").get("name").asString());
      Plugin.writeConf(neo4j, "kgweave.adress=" + server.address());
      assertTrue(cypherError(search, Map.of())
          .startsWith("kgweave: INVALID_ARGUMENT: unknown setting 'kgweave.adress' in "));
      Plugin.writeConf(neo4j, "kgweave.address=" + server.address(), "kgweave.deadline_ms=soon");
      assertTrue(cypherError(search, Map.of())
          .startsWith("kgweave: INVALID_ARGUMENT: kgweave.deadline_ms must be a positive number"));
    } finally {
      Plugin.writeConf(neo4j, "kgweave.address=" + server.address(), "kgweave.deadline_ms=120000");
      cypher("MATCH (p:Person) DELETE p", Map.of());
    }
    Record row = cypher(search, Map.of()).get(0);
    assertEquals("london", row.get("node").get("id").asString());
  }

  @Test
  void sixteenSessionsAtOnceGetTheirOwnAnswers() throws Exception {
    int sessions = 16;
    List<String> heads = allEntities.subList(0, sessions);
    CyclicBarrier together = new CyclicBarrier(sessions);
    ExecutorService pool = Executors.newFixedThreadPool(sessions);
    try {
      List<Future<List<Record>>> answers = new ArrayList<>();
      for (String head : heads) {
        answers.add(pool.submit(() -> {
          try (Session session = driver.session()) {
            together.await();
            List<Record> all = new ArrayList<>();
            for (int round = 0; round < 5; round++) {
              all = session.run("CALL kgweave.predict.tails($h, 'citizen_of', 4)",
                  Map.of("h", head)).list();
            }
            return all;
          }
        }));
      }
      PredictLinksResponse expected = predict(
          heads.stream().map(h -> tails(h, "citizen_of")).toList(), 4, false);
      for (int i = 0; i < sessions; i++) {
        assertSame(expected.getResults(i), answers.get(i).get(), expected.getModelVersion());
      }
    } finally {
      pool.shutdownNow();
      assertTrue(pool.awaitTermination(60, TimeUnit.SECONDS));
    }
  }

  @Test
  void aDeadlineTooShortIsAReadableError() {
    try (Neo4j hurried = harness(server.address(), 1);
        Driver d = GraphDatabase.driver(hurried.boltURI(), AuthTokens.none());
        Session session = d.session()) {
      ClientException e = assertThrows(ClientException.class, () -> session.run(
          "CALL kgweave.predict.tailsBatch($heads, 'born_in', 1000)",
          Map.of("heads", allEntities)).list());
      assertEquals("kgweave: DEADLINE_EXCEEDED: no answer from the kgweave server at "
          + server.address() + " within 1 ms (kgweave.deadline_ms)", e.getMessage());
    }
  }
}
