"""The Cypher path end to end from Python: a real Neo4j 5.26 with real APOC Core and the kgweave
plugin jar, a real ``kgweave serve`` whose graph is that Neo4j, and every procedure and function
called through the official ``neo4j`` driver, each answer checked against the same query over
gRPC (:class:`kgweave.api.client.Client`); errors (unknown entity, bad k, server down) equal
to gRPC's; 16 Bolt sessions calling at once; ``apoc.load.jsonParams`` against serve's JSON
gateway (``POST /v1/predict``); every non-admin recipe of docs/cypher.md on the imported graph.
One Neo4j and one serve for the module (tests/cypher_support.py, about 45 s on 2 cores).
Skipped only when java or mvn is missing; the launcher and plugin jars are built when missing.

``kgweave.complete`` needs a model trained with ``--joint`` (or ``KGWEAVE_LANGUAGE_MODEL``);
training one here costs minutes on 2 cores, so this module checks that Cypher gives gRPC's
FAILED_PRECONDITION for serve's bootstrap model word for word, and the plugin's own PluginTest
(procedures/neo4j/plugin) covers complete's answers on a joint version.
"""

from __future__ import annotations

import json
import re
import struct
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import pytest
from google.protobuf import json_format

from cypher_support import (
    HANG_GUARD_S,
    CypherStack,
    cypher_stack,
    drop_trigger,
    install_trigger,
    missing_tools,
)
from kgweave.api.client import Client
from kgweave.graph.embedded import free_port
from kgweave.graph.neo4j_server import source_root
from kgweave.predict import Query
from kgweave.v1 import admin_pb2, admin_pb2_grpc, knowledge_pb2, knowledge_pb2_grpc
from process_support import until

pytestmark = pytest.mark.skipif(missing_tools() is not None, reason=missing_tools() or "")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CypherStack]:
    with cypher_stack(tmp_path_factory.mktemp("cypher")) as running:
        yield running


@pytest.fixture(scope="module")
def driver(stack: CypherStack) -> Iterator[Any]:
    from neo4j import GraphDatabase

    with GraphDatabase.driver(stack.bolt_uri, auth=stack.auth) as opened:
        yield opened


@pytest.fixture(scope="module")
def client(stack: CypherStack) -> Iterator[Client]:
    with Client(stack.grpc_address, timeout=HANG_GUARD_S) as opened:
        yield opened


@pytest.fixture(scope="module")
def knowledge(stack: CypherStack) -> Iterator[Any]:
    """The raw KnowledgeService stub (SearchEntities and GetEntity have no Client method)."""
    with grpc.insecure_channel(stack.grpc_address) as channel:
        yield knowledge_pb2_grpc.KnowledgeServiceStub(channel)


def cypher(driver: Any, query: str, **params: Any) -> list[dict[str, Any]]:
    records, _, _ = driver.execute_query(query, params, database_="neo4j")
    return [r.data() for r in records]


def cypher_error(driver: Any, query: str, **params: Any) -> str:
    """The message of a Cypher call that must fail: kgweave's one line, no Java."""
    from neo4j.exceptions import Neo4jError

    with pytest.raises(Neo4jError) as caught:
        cypher(driver, query, **params)
    message = caught.value.message or ""
    assert message.startswith("kgweave: "), message
    assert "\n" not in message and "Exception" not in message and "io.grpc" not in message
    return message


def grpc_error(call: Any, request: Any) -> str:
    """``kgweave: CODE: details`` of a gRPC call that must fail."""
    with pytest.raises(grpc.RpcError) as caught:
        call(request, timeout=HANG_GUARD_S)
    error: Any = caught.value
    return f"kgweave: {error.code().name}: {error.details()}"


def f32(value: float) -> float:
    """``value`` as the proto's float32 (the JSON mapping prints its shortest repr, Java its
    exact double: both are the same float32)."""
    return float(struct.unpack("f", struct.pack("f", value))[0])


def node_ids(driver: Any) -> set[str]:
    return {r["id"] for r in cypher(driver, "MATCH (e:Entity) RETURN e.id AS id")}


def assert_rows_equal(
    rows: list[dict[str, Any]], expected: dict[str, Any], graph: set[str]
) -> None:
    """Cypher rows (node, entity, name, score, rank, known, version) equal one gRPC answer."""
    (result,) = expected["results"]
    assert len(rows) == len(result["candidates"]) > 0
    for row, want in zip(rows, result["candidates"], strict=True):
        assert (row["entity"], row["name"], row["rank"], row["known"]) == (
            want["entity_id"], want["name"], want["rank"], want["known"],
        )  # fmt: skip
        assert f32(row["score"]) == f32(want["score"])
        assert row["version"] == expected["model_version"]
        node = row["node"]
        assert (node["id"] if node is not None else None) == (
            want["entity_id"] if want["entity_id"] in graph else None
        )


PREDICT = (
    "CALL kgweave.predict.{side}($entity, $relation, $k, $options) "
    "YIELD node, entity, name, score, rank, known, version RETURN * ORDER BY rank"
)


# ---- link prediction
def test_predict_tails_of_a_node_an_id_and_a_name_equal_predict_links(
    driver: Any, client: Client
) -> None:
    graph = node_ids(driver)
    expected = client.predict(Query("born_in", head="alan_turing"), k=5)
    by_node = cypher(
        driver,
        "MATCH (p:Entity {id: 'alan_turing'}) CALL kgweave.predict.tails(p, 'born_in', 5) "
        "YIELD node, entity, name, score, rank, known, version RETURN * ORDER BY rank",
    )
    assert_rows_equal(by_node, expected, graph)
    for given in ("alan_turing", "Alan Turing"):
        rows = cypher(driver, PREDICT.format(side="tails"), entity=given, relation="born_in",
                      k=5, options={})  # fmt: skip
        assert_rows_equal(rows, expected, graph)
    # options.k wins over k; the default k is 10
    assert (
        len(cypher(driver, "CALL kgweave.predict.tails('alan_turing', 'born_in', 5, {k: 3})")) == 3
    )
    assert len(cypher(driver, "CALL kgweave.predict.tails('alan_turing', 'born_in')")) == 10


def test_predict_heads_with_filter_known_equal_predict_links(driver: Any, client: Client) -> None:
    expected = client.predict(Query("born_in", tail="london"), k=7, filter_known=True)
    rows = cypher(
        driver,
        "MATCH (c:Entity {id: 'london'}) CALL kgweave.predict.heads(c, 'born_in', 7, "
        "{filterKnown: true}) YIELD node, entity, name, score, rank, known, version "
        "RETURN * ORDER BY rank",
    )
    graph = node_ids(driver)
    assert_rows_equal(rows, expected, graph)
    assert not any(row["known"] for row in rows)
    by_name = cypher(driver, PREDICT.format(side="heads"), entity="London", relation="born_in",
                     k=7, options={"filterKnown": True})  # fmt: skip
    assert_rows_equal(by_name, expected, graph)


def test_batch_forms_over_a_match_equal_one_predict_links(driver: Any, client: Client) -> None:
    graph = node_ids(driver)
    heads = sorted(graph)
    rows = cypher(
        driver,
        "MATCH (p:Entity) WITH p ORDER BY p.id WITH collect(p) AS people "
        "CALL kgweave.predict.tailsBatch(people, 'citizen_of', 3) YIELD index, input, node, "
        "entity, name, score, rank, known, version RETURN * ORDER BY index, rank",
    )
    assert len(rows) == 3 * len(heads)
    for i, head in enumerate(heads):
        mine = rows[3 * i : 3 * i + 3]
        assert {r["index"] for r in mine} == {i} and mine[0]["input"]["id"] == head
        assert_rows_equal(mine, client.predict(Query("citizen_of", head=head), k=3), graph)
    tails = ["london", "Paris", "warsaw"]
    heads_rows = cypher(
        driver,
        "CALL kgweave.predict.headsBatch($tails, 'born_in', 2, {filterKnown: true}) "
        "YIELD index, input, node, entity, name, score, rank, known, version "
        "RETURN * ORDER BY index, rank",
        tails=tails,
    )
    for i, tail in enumerate(tails):
        mine = [r for r in heads_rows if r["index"] == i]
        assert all(r["input"] == tail for r in mine)
        expected = client.predict(Query("born_in", tail=tail), k=2, filter_known=True)
        assert_rows_equal(mine, expected, graph)


# ---- scores, text, search, status
def test_score_and_score_all_equal_score_triples(driver: Any, client: Client) -> None:
    # `kgweave import` stores a relation whose name is a valid type as that type (born_in)
    facts = cypher(
        driver,
        "MATCH (h:Entity)-[f]->(t:Entity) WHERE NOT type(f) STARTS WITH 'KGWEAVE_' "
        "RETURN h.id AS h, type(f) AS r, t.id AS t, kgweave.score(h, type(f), t) AS score "
        "ORDER BY h, r, t",
    )
    assert len(facts) > 10
    expected = client.score([(f["h"], f["r"], f["t"]) for f in facts])["scores"]
    assert [f32(f["score"]) for f in facts] == [f32(s) for s in expected]
    for given in ("[h, type(f), t.id]", "f", "{head: h.name, relation: type(f), tail: t}"):
        (row,) = cypher(
            driver,
            "MATCH (h:Entity)-[f]->(t:Entity) WHERE NOT type(f) STARTS WITH 'KGWEAVE_' "
            f"WITH h, f, t ORDER BY h.id, type(f), t.id RETURN kgweave.scoreAll(collect({given})) "
            "AS scores",
        )
        assert [f32(s) for s in row["scores"]] == [f32(s) for s in expected], given
    (by_name,) = cypher(driver, "RETURN kgweave.score('Alan Turing', 'born_in', 'London') AS s")
    (direct,) = client.score([("alan_turing", "born_in", "london")])["scores"]
    assert f32(by_name["s"]) == f32(direct)
    # a generic relationship (names that are no valid type) stands for its relation property
    (generic,) = cypher(
        driver,
        "MATCH (h:Entity {id: 'alan_turing'}), (t:Entity {id: 'london'}) "
        "CREATE (h)-[g:RELATED {relation: 'born_in'}]->(t) "
        "WITH g, kgweave.scoreAll([g]) AS scores DELETE g RETURN scores",
    )
    assert [f32(s) for s in generic["scores"]] == [f32(direct)]


def test_verbalize_and_verbalize_triples_equal_verbalize(driver: Any, client: Client) -> None:
    (row,) = cypher(driver, "MATCH (m:Entity {id: 'marie_curie'}) RETURN kgweave.verbalize(m) AS t")
    assert row["t"] and row["t"] == client.verbalize("marie_curie", max_chars=600)["text"]
    triples = [("marie_curie", "born_in", "warsaw"), ("Alan Turing", "born_in", "london")]
    rows = cypher(
        driver,
        "CALL kgweave.verbalize.triples($triples) YIELD index, sentence "
        "RETURN index, sentence ORDER BY index",
        triples=[list(t) for t in triples],
    )
    expected = client.verbalize(triples=triples)["sentences"]
    assert [r["sentence"] for r in rows] == expected and len(expected) == 2


def test_search_and_similar_equal_search_entities(driver: Any, knowledge: Any) -> None:
    graph = node_ids(driver)
    text = "the mathematician who broke Enigma"
    request = knowledge_pb2.SearchEntitiesRequest(text=text, limit=5)
    expected = knowledge.SearchEntities(request, timeout=HANG_GUARD_S).entities
    rows = cypher(driver, "CALL kgweave.search($text, 5) YIELD entity, node, similarity "
                  "RETURN * ORDER BY similarity DESC", text=text)  # fmt: skip
    assert [(r["entity"], r["similarity"]) for r in rows] == [
        (e.id, e.similarity) for e in expected
    ]
    assert all((r["node"]["id"] if r["node"] else None) ==
               (r["entity"] if r["entity"] in graph else None) for r in rows)  # fmt: skip
    prefix = knowledge.SearchEntities(
        knowledge_pb2.SearchEntitiesRequest(prefix="mar", limit=4), timeout=120
    ).entities
    by_prefix = cypher(driver, "CALL kgweave.search('mar', 4, {mode: 'prefix'}) YIELD entity")
    assert [r["entity"] for r in by_prefix] == [e.id for e in prefix] != []
    curie = knowledge.GetEntity(
        knowledge_pb2.GetEntityRequest(entity="marie_curie"), timeout=HANG_GUARD_S
    )
    neighbours = knowledge.SearchEntities(
        knowledge_pb2.SearchEntitiesRequest(text=f"{curie.name}: {curie.description}", limit=4),
        timeout=HANG_GUARD_S,
    ).entities
    similar = cypher(
        driver,
        "MATCH (m:Entity {id: 'marie_curie'}) CALL kgweave.similar(m, 3) YIELD entity, rank "
        "RETURN entity ORDER BY rank",
    )
    assert [r["entity"] for r in similar] == [e.id for e in neighbours if e.id != "marie_curie"][:3]


def test_status_equals_status(driver: Any, client: Client, stack: CypherStack) -> None:
    expected = client.status()
    (row,) = cypher(driver, "CALL kgweave.status()")
    active = expected["active_model"]
    assert row["ready"] and row["address"] == stack.grpc_address
    assert (row["version"], row["model"], row["entities"]) == (
        active["version"], active["model"], active["num_entities"],
    )  # fmt: skip
    assert row["graphBackend"] == expected["graph_backend"] == "neo4j"
    assert row["kgweaveVersion"] == expected["kgweave_version"]
    assert row["validMetrics"]["mrr"] == pytest.approx(active["valid_metrics"]["mrr"], rel=1e-6)


def test_complete_without_a_joint_model_is_grpcs_error(driver: Any, knowledge: Any) -> None:
    query = knowledge_pb2.LinkQuery(head="alan_turing", relation="field_of_work")
    expected = grpc_error(
        knowledge.Complete, knowledge_pb2.CompleteRequest(query=query, k=5, generate=False)
    )
    assert expected.startswith("kgweave: FAILED_PRECONDITION: ")
    message = cypher_error(
        driver,
        "MATCH (p:Entity {id: 'alan_turing'}) "
        "CALL kgweave.complete(p, 'field_of_work', 5, {generate: false}) YIELD candidate "
        "RETURN candidate",
    )
    assert message == expected


# ---- errors
def test_unknown_entity_and_bad_k_are_grpcs_errors(driver: Any, knowledge: Any) -> None:
    def predict(head: str, k: int) -> Any:
        return knowledge_pb2.PredictLinksRequest(
            queries=[knowledge_pb2.LinkQuery(head=head, relation="born_in")], k=k
        )

    for head, k, code in (
        ("Nobody At All", 5, "NOT_FOUND"),
        ("alan_turing", 0, "INVALID_ARGUMENT"),
    ):
        expected = grpc_error(knowledge.PredictLinks, predict(head, k or -1))
        message = cypher_error(driver, PREDICT.format(side="tails"), entity=head,
                               relation="born_in", k=k or -1, options={})  # fmt: skip
        assert message.startswith(f"kgweave: {code}: ")
        assert message == expected
    unknown_option = cypher_error(
        driver, "CALL kgweave.predict.tails('alan_turing', 'born_in', 5, {filterknown: true})"
    )
    assert (
        unknown_option.startswith("kgweave: INVALID_ARGUMENT: ") and "filterknown" in unknown_option
    )


def test_server_down_is_one_readable_cypher_error(driver: Any, stack: CypherStack) -> None:
    dead = f"127.0.0.1:{free_port()}"  # nothing listens there
    stack.write_conf(dead)
    try:
        for query in (
            "CALL kgweave.predict.tails('alan_turing', 'born_in', 5)",
            "RETURN kgweave.score('alan_turing', 'born_in', 'london') AS s",
            "CALL kgweave.status()",
        ):
            message = cypher_error(driver, query)
            assert message.startswith("kgweave: UNAVAILABLE: ") and dead in message
    finally:
        stack.write_conf(stack.grpc_address)
    assert cypher(driver, "CALL kgweave.status() YIELD ready RETURN ready") == [{"ready": True}]


# ---- concurrency
def test_sixteen_cypher_sessions_at_once_equal_grpc(driver: Any, client: Client) -> None:
    heads = sorted(node_ids(driver))[:16]
    assert len(heads) == 16
    graph = node_ids(driver)

    together = threading.Barrier(16)

    def one(head: str) -> list[dict[str, Any]]:
        with driver.session(database="neo4j") as session:
            session.run("RETURN 1").consume()  # connected: all 16 then call at once
            together.wait(timeout=HANG_GUARD_S)  # a hang guard only
            query = PREDICT.format(side="tails")
            params = {"entity": head, "relation": "located_in", "k": 4, "options": {}}
            return [r.data() for r in session.run(query, params)]

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(one, heads))
    for head, rows in zip(heads, answers, strict=True):
        assert_rows_equal(rows, client.predict(Query("located_in", head=head), k=4), graph)


# ---- APOC against the HTTP JSON gateway
def test_apoc_load_json_params_against_the_json_gateway(
    driver: Any, stack: CypherStack, knowledge: Any
) -> None:
    body = {"queries": [{"head": "alan_turing", "relation": "born_in"}], "k": 5}
    request = json_format.ParseDict(body, knowledge_pb2.PredictLinksRequest())
    expected = json_format.MessageToDict(
        knowledge.PredictLinks(request, timeout=HANG_GUARD_S),
        always_print_fields_with_no_presence=True,
    )
    rows = cypher(
        driver,
        "CALL apoc.load.jsonParams($url, {`Content-Type`: 'application/json'}, $payload) "
        "YIELD value RETURN value",
        url=f"http://127.0.0.1:{stack.http_port}/v1/predict",
        payload=json.dumps(body),
    )
    assert [r["value"] for r in rows] == [expected]
    assert len(expected["results"][0]["candidates"]) == 5


# ---- the cookbook
def test_every_cookbook_recipe_runs_on_an_imported_graph(driver: Any) -> None:
    """docs/cypher.md's recipes (but the admin ones, and complete: no joint model here) on the
    graph `kgweave import` wrote: each returns rows (the write-back recipe writes links)."""
    cookbook = (source_root() / "docs" / "cypher.md").read_text()
    recipes = re.findall(r"```cypher\n(.*?)```", cookbook, flags=re.DOTALL)
    ran = [r for r in recipes if "kgweave.admin." not in r and "kgweave.complete" not in r]
    assert len(ran) >= 8
    try:
        for recipe in ran:
            rows = cypher(driver, recipe)
            if "MERGE" in recipe:
                (count,) = cypher(driver, "MATCH ()-[s:SUGGESTED]->() RETURN count(s) AS n")
                assert count["n"] > 0, recipe
            else:
                assert rows, f"no rows from\n{recipe}"
    finally:
        cypher(driver, "MATCH ()-[s:SUGGESTED]->() DELETE s")


# ---- a graph change made in Cypher (last: the served model moves on from here)
def test_a_fact_written_in_cypher_is_known_and_counted_by_status(
    driver: Any, stack: CypherStack
) -> None:
    """A Cypher user's write reaches kgweave through the APOC trigger (procedures/neo4j):
    kgweave.predict.* marks the fact known, and kgweave.status()'s ``changes`` map counts it,
    field for field what gRPC's Status says."""
    with grpc.insecure_channel(stack.grpc_address) as channel:
        admin = admin_pb2_grpc.AdminServiceStub(channel)

        def both() -> tuple[Any, dict[str, Any]]:
            expected = admin.Status(admin_pb2.StatusRequest(), timeout=HANG_GUARD_S).changes
            (row,) = cypher(driver, "CALL kgweave.status() YIELD changes RETURN changes")
            return expected, row["changes"]

        before, row = both()
        # every ChangesStatus field, by its JSON name (empty strings as null)
        assert set(row) == {f.json_name for f in before.DESCRIPTOR.fields}  # (maps keep no order)
        graph = node_ids(driver)
        candidates = cypher(
            driver,
            "CALL kgweave.predict.tails('alan_turing', 'born_in', 20) YIELD entity, known "
            "RETURN entity, known ORDER BY entity",
        )
        tail = next(r["entity"] for r in candidates if not r["known"] and r["entity"] in graph)
        install_trigger(stack.bolt_uri, stack.auth, f"127.0.0.1:{stack.http_port}", phase="after")
        try:
            cypher(
                driver,
                "MATCH (h:Entity {id: 'alan_turing'}), (t:Entity {id: $tail}) "
                "CREATE (h)-[:born_in]->(t)",
                tail=tail,
            )
        finally:
            drop_trigger(stack.bolt_uri, stack.auth)

        def known() -> bool:
            rows = cypher(
                driver,
                "CALL kgweave.predict.tails('alan_turing', 'born_in', 20) YIELD entity, known "
                "WHERE entity = $tail RETURN known",
                tail=tail,
            )
            return bool(rows) and rows[0]["known"]

        until(known, "the fact written in Cypher to be known to kgweave.predict")
        after, row = both()
        assert after.events > before.events and after.applied_offset > before.applied_offset
        for field in before.DESCRIPTOR.fields:  # what moves with no write (jobs) may differ
            if field.name in ("applied_offset", "end_offset", "batches", "events"):
                assert row[field.json_name] == getattr(after, field.name), field.name
        assert row["lastError"] is None and after.last_error == ""
