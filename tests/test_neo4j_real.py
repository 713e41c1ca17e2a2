"""Every Neo4j path against a real Neo4j 5.26 Community DBMS with real APOC Core.

One DBMS per session, started through ``kgweave neo4j``'s own code (the Maven launcher in
``procedures/neo4j/launcher`` around Neo4j's test harness) on free ports in a temporary data
folder, with authentication on. Skipped only when ``java`` or ``mvn`` is missing.
(``db.cdc.*`` is an Enterprise feature: tests/test_neo4j_cdc.py keeps checking that path by
the manuals' exact text.)
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from cypher_support import drop_trigger, install_trigger, serve_ready, stop_process
from graph_support import predicted_links_replaced, stored_triples
from kgweave.changes.diff import Part, to_export
from kgweave.cli.main import main
from kgweave.data import load_dataset
from kgweave.errors import GraphUnavailableError, InvalidArgumentError
from kgweave.graph.embedded import free_port
from kgweave.graph.neo4j_server import Neo4jInfo, Neo4jServer, source_root
from kgweave.graph.neo4j_store import Neo4jStore, Neo4jTarget
from kgweave.graph.store import EntityRow, GraphMapping, PredictedLink

pytestmark = pytest.mark.skipif(
    shutil.which("java") is None or shutil.which("mvn") is None,
    reason="a real Neo4j needs java and mvn on PATH (the launcher is built with Maven)",
)

DEMO = source_root() / "server" / "kgweave" / "demo"


@dataclass
class RealNeo4j:
    server: Neo4jServer
    info: Neo4jInfo
    data_dir: Path

    @property
    def uri(self) -> str:
        return self.info.bolt_uri

    @property
    def auth(self) -> tuple[str, str]:
        return ("neo4j", self.server.password())

    def target(self) -> Neo4jTarget:
        return Neo4jTarget(self.uri, "neo4j", self.server.password())

    def system(self, cypher: str, **params: Any) -> list[dict[str, Any]]:
        """Run one statement against the system database (admin procedures)."""
        from neo4j import GraphDatabase

        with GraphDatabase.driver(self.uri, auth=("neo4j", self.server.password())) as driver:
            records, _, _ = driver.execute_query(cypher, params, database_="system")
            return [r.data() for r in records]


@pytest.fixture(scope="session")
def neo4j(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealNeo4j]:
    data_dir = tmp_path_factory.mktemp("kgweave-neo4j")
    server = Neo4jServer(data_dir / "neo4j", plugins=None)
    info = server.start(bolt_port=free_port())
    try:
        yield RealNeo4j(server, info, data_dir)
    finally:
        server.stop()


@pytest.fixture
def store(neo4j: RealNeo4j) -> Iterator[Neo4jStore]:
    """A store on the default mapping over an emptied database."""
    with Neo4jStore(neo4j.target(), batch_size=100) as opened:
        opened.write("MATCH (n) DETACH DELETE n")
        yield opened


def _wait_for(
    condition: Callable[[], Any], what: str | Callable[[], str], timeout: float = 120.0
) -> Any:
    """Poll ``condition`` until it is truthy; fail naming ``what`` (a hang guard, not a timing)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what() if callable(what) else what}")
        time.sleep(0.2)


def test_a_query_over_the_timeout_is_ended_by_the_dbms(neo4j: RealNeo4j) -> None:
    """The transaction timeout: Neo4j ends a query that runs over it (10^10 rows here), the
    store says so in one line, and its next query runs."""
    endless = (
        "UNWIND range(1, 100000) AS a UNWIND range(1, 100000) AS b "
        "WITH a WHERE a < 0 RETURN count(*) AS n"
    )
    with Neo4jStore(neo4j.target(), timeout_s=0.5) as store:
        with pytest.raises(GraphUnavailableError, match=r"ran over its timeout of 0\.5s") as caught:
            store.read(endless)
        assert "\n" not in str(caught.value)
        assert store.read("RETURN 1 AS one") == [{"one": 1}]


# ---- kgweave neo4j
def test_cli_status_reuses_and_reports_the_running_dbms(
    neo4j: RealNeo4j, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("KGWEAVE_DATA_DIR", str(neo4j.data_dir))
    assert main(["neo4j", "status", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["running"] and status["bolt_uri"] == neo4j.uri and status["user"] == "neo4j"
    assert status["password"] == neo4j.server.password_file.read_text().strip()
    assert neo4j.server.password_file.stat().st_mode & 0o777 == 0o600
    # start while running: the same DBMS, no second JVM
    assert main(["neo4j", "start", "--bolt-port", str(free_port()), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["pid"] == neo4j.info.pid
    # the password is a real login and the DBMS is Neo4j 5.26 Community with APOC Core
    with Neo4jStore(neo4j.target()) as opened:
        (row,) = opened.read("CALL dbms.components() YIELD versions, edition RETURN *")
        assert row["edition"] == "community" and row["versions"][0].startswith("5.26.")
        assert opened.read("RETURN apoc.version() AS v")[0]["v"].startswith("5.26")


def test_wrong_password_is_one_clear_error(neo4j: RealNeo4j) -> None:
    with pytest.raises(InvalidArgumentError, match="refused the credentials") as caught:
        Neo4jStore(Neo4jTarget(neo4j.uri, "neo4j", "not-the-password"), retry_s=5)
    assert "\n" not in str(caught.value)


def test_a_local_uri_logs_in_with_the_data_folders_password(
    neo4j: RealNeo4j, store: Neo4jStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kgweave.graph.connect import open_store
    from kgweave.settings import get_settings

    store.add_triples([("a", "knows", "b")])
    monkeypatch.setenv("KGWEAVE_DATA_DIR", str(neo4j.data_dir))
    with open_store(neo4j.uri, get_settings()) as opened:
        assert opened.counts() == {"entities": 2, "relations": 1, "triples": 1}


def test_no_server_notifications_on_the_terminal(
    store: Neo4jStore, caplog: pytest.LogCaptureFixture
) -> None:
    # regression: on an empty graph every count logged "label does not exist" warnings, each a
    # multi-line record, through the driver's "neo4j.notifications" logger
    with caplog.at_level("INFO", logger="neo4j"):
        assert store.counts() == {"entities": 0, "relations": 0, "triples": 0}
    assert [r for r in caplog.records if r.name.startswith("neo4j.notifications")] == []


# ---- import and export
def test_round_trip_and_stable_snapshot_ids(
    store: Neo4jStore, datasets_dir: Path, tmp_path: Path
) -> None:
    from graph_support import umls_round_trip
    from kgweave.graph.sync import export_snapshot

    snap = umls_round_trip(store, datasets_dir, tmp_path / "ids.json")
    labels = snap.entities.labels
    # a new fact with a new entity: old ids stay, the new one is appended
    store.add_triples([("zz_new_entity", "isa", labels[0])])
    again = export_snapshot(store, tmp_path / "ids.json", page_size=7)
    assert again.entities.labels[: len(labels)] == labels
    assert again.new_entities == 1 and again.entities.labels[-1] == "zz_new_entity"


def test_text_quotes_and_generic_relations(store: Neo4jStore, datasets_dir: Path) -> None:
    from graph_support import census_and_relation_reads, fb15k_generic_relations

    fb15k_generic_relations(store, datasets_dir)
    census_and_relation_reads(store)
    # both quote kinds are data (FalkorDB's Bolt endpoint refuses single quotes; Neo4j not)
    evil = [("o'brien", "x]->() MATCH (n) DETACH DELETE n //", 'say "hi"')]
    store.upsert_entities([EntityRow("o'brien", "Pat O'Brien", 'the "real" one')])
    store.add_triples(evil)
    assert evil[0] in stored_triples(store)
    assert store.entities(["o'brien"]) == [EntityRow("o'brien", "Pat O'Brien", 'the "real" one')]


def test_a_user_graph_with_its_own_labels_key_and_types(neo4j: RealNeo4j, tmp_path: Path) -> None:
    from kgweave.graph.sync import export_snapshot

    mapping = GraphMapping(
        entity_label="Person",
        key_property="uid",
        name_property="fullName",
        description_property="bio",
        relation_types=("KNOWS", "MENTORS"),
        embedding_property="vec",
    )
    with Neo4jStore(neo4j.target(), mapping=mapping, batch_size=3) as user:
        user.write("MATCH (n) DETACH DELETE n")
        # the user's own graph, written by plain Cypher: other labels and types are not relations
        user.write(
            "UNWIND range(1, 8) AS i CREATE (:Person {uid: 'p' + i, fullName: 'Person ' + i}) "
            "WITH 1 AS one LIMIT 1 "
            "MATCH (a:Person {uid: 'p1'}), (b:Person {uid: 'p2'}), (c:Person {uid: 'p3'}) "
            "CREATE (a)-[:KNOWS]->(b), (b)-[:MENTORS]->(c), (a)-[:LIKES]->(c), "
            "(a)-[:WORKS_AT]->(:Company {uid: 'acme'})"
        )
        user.ensure_schema()
        assert stored_triples(user, page_size=3) == {("p1", "KNOWS", "p2"), ("p2", "MENTORS", "p3")}
        assert user.counts() == {"entities": 8, "relations": 2, "triples": 2}
        user.add_triples([("p4", "KNOWS", "p5"), ("p9", "MENTORS", "p1")])
        assert (
            user.read("MATCH (:Person {uid: 'p4'})-[x:KNOWS]->() RETURN count(x) AS n")[0]["n"] == 1
        )
        rows = {r.id: r for page in user.iter_entities(page_size=4) for r in page}
        assert rows["p1"].name == "Person 1" and "acme" not in rows and len(rows) == 9
        snap = export_snapshot(user, tmp_path / "ids.json", page_size=3)
        assert len(snap.triples) == 4 and set(snap.relations.labels) == {"KNOWS", "MENTORS"}
        ids = [f"p{i}" for i in range(1, 10)]
        vectors = [[float(i == j) + 0.1 for j in range(4)] for i in range(9)]
        assert user.write_embeddings(ids, vectors) == 9
        assert user.nearest(vectors[2], k=1)[0][0] == "p3"
        constraints = user.read("SHOW CONSTRAINTS YIELD labelsOrTypes, properties RETURN *")
        assert {"labelsOrTypes": ["Person"], "properties": ["uid"]} in constraints


# ---- write-back
def test_vector_index_and_query_nodes(store: Neo4jStore) -> None:
    import torch

    torch.manual_seed(0)
    ids = [f"e{i:02d}" for i in range(60)]
    store.upsert_entities(EntityRow(i) for i in ids)
    vectors = torch.randn(60, 16)
    # an index of the same shape made by hand with Neo4j 5.26's defaults quantizes the vectors
    # (regression: its neighbours were not the exact cosine ones); write-back replaces it
    store.write(
        "CREATE VECTOR INDEX kgweave_Entity_embedding FOR (n:Entity) ON (n.embedding) "
        "OPTIONS {indexConfig: {`vector.dimensions`: 16, `vector.similarity_function`: 'cosine'}}"
    )
    assert store.write_embeddings(ids, vectors.tolist()) == 60
    (index,) = store.read(
        "SHOW VECTOR INDEXES YIELD name, state, options WHERE name = 'kgweave_Entity_embedding' "
        "RETURN state, options"
    )
    assert index["state"] == "ONLINE"
    assert index["options"]["indexConfig"]["vector.dimensions"] == 16
    assert index["options"]["indexConfig"]["vector.quantization.enabled"] is False
    cosine = torch.nn.functional.cosine_similarity(vectors, vectors[7].unsqueeze(0))
    expected = [ids[i] for i in cosine.argsort(descending=True)[:5].tolist()]
    rows = store.read(
        "MATCH (e:Entity {id: 'e07'}) "
        "CALL db.index.vector.queryNodes('kgweave_Entity_embedding', 5, e.embedding) "
        "YIELD node, score RETURN node.id AS id, score",
    )
    assert [r["id"] for r in rows] == expected
    assert rows[0]["score"] == pytest.approx(1.0, abs=1e-4)  # Neo4j: similarity, 1 = same
    assert [e for e, _ in store.nearest(vectors[7].tolist(), k=5)] == expected
    # a new shape replaces the index; the same shape keeps it
    store.write_embeddings(ids, torch.randn(60, 8).tolist(), similarity="euclidean")
    (index,) = store.read(
        "SHOW VECTOR INDEXES YIELD name, options WHERE name = 'kgweave_Entity_embedding' "
        "RETURN options"
    )
    config = index["options"]["indexConfig"]
    assert config["vector.dimensions"] == 8 and config["vector.similarity_function"] == "EUCLIDEAN"


def test_write_back_of_a_trained_model(store: Neo4jStore, tmp_path: Path) -> None:
    """A real demo model written back: Neo4j's vector index answers like the model's own cosine
    neighbours, predicted links are new facts, and a new version replaces them."""
    import torch

    from kgweave.artifact import load_artifact
    from kgweave.graph.sync import import_dataset
    from kgweave.serving.writeback import write_back
    from kgweave.settings import get_settings
    from serving_support import train_demo_model

    model = load_artifact(train_demo_model(get_settings(), tmp_path / "m", epochs=20, dim=16))
    import_dataset(store, load_dataset(DEMO), progress=False)
    facts = stored_triples(store)
    report = write_back(store, model, "v0001", max_links=150, progress=False)
    assert report["embeddings"] == len(model.entities) and report["predicted_links"] == 150

    table = torch.nn.functional.normalize(model.model.entity.weight.detach(), dim=1)
    i = model.entities.index["paris"]
    expected = [model.entities.labels[j] for j in (table @ table[i]).topk(4).indices.tolist()]
    rows = store.read(
        "MATCH (p:Entity {id: 'paris'}) "
        "CALL db.index.vector.queryNodes('kgweave_Entity_embedding', 4, p.embedding) "
        "YIELD node, score RETURN node.id AS id ORDER BY score DESC"
    )
    assert [r["id"] for r in rows] == expected and expected[0] == "paris"

    predicted_links_replaced(store, model, facts, 150)


#: the relation-aware top-k in plain Cypher (no plugin: what Aura users can run): the ComplEx
#: query h * r (complex product), scaled to the search vectors' radius, with a 0 appended, and
#: Neo4j's euclidean vector index over the written-back search vectors (docs/cypher.md)
COMPLEX_TAILS = """
MATCH (h:Entity {id: $head}), (r:KGWEAVE_Relation {id: $relation})
WITH h.embedding AS e, r.embedding AS w, r.search_norm AS radius, size(h.embedding) / 2 AS d
WITH [i IN range(0, d - 1) | e[i] * w[i] - e[d + i] * w[d + i]]
   + [i IN range(0, d - 1) | e[i] * w[d + i] + e[d + i] * w[i]] AS q, radius
WITH q, radius / sqrt(reduce(s = 0.0, x IN q | s + x * x)) AS scale
CALL db.index.vector.queryNodes('kgweave_Entity_kgweave_search', $k, [x IN q | x * scale] + [0.0])
YIELD node, score
RETURN node.id AS id ORDER BY score DESC
"""


def test_relation_aware_top_k_in_plain_cypher(store: Neo4jStore, tmp_path: Path) -> None:
    """Without the plugin: the written-back relation and search vectors and Neo4j's own vector
    index give the model's top-10 tails (PredictLinks), computed in Cypher alone."""
    from kgweave.artifact import load_artifact
    from kgweave.graph.sync import import_dataset
    from kgweave.predict import LinkPredictor, Query
    from kgweave.serving.writeback import write_back
    from kgweave.settings import get_settings
    from serving_support import train_demo_model

    path = train_demo_model(get_settings(), tmp_path / "m", epochs=15, dim=16, eval_every=15)
    model = load_artifact(path)
    import_dataset(store, load_dataset(DEMO), progress=False)
    write_back(store, model, "v0001", max_links=0, progress=False)
    predictor = LinkPredictor(model)
    found = total = 0
    for head, relation in (("paris", "located_in"), ("alan_turing", "born_in"),
                           ("marie_curie", "citizen_of"), ("london", "capital_of")):  # fmt: skip
        (exact,) = predictor.predict([Query(relation, head=head)], k=10)
        rows = store.read(COMPLEX_TAILS, {"head": head, "relation": relation, "k": 10})
        found += len({r["id"] for r in rows} & {a.entity for a in exact})
        total += len(exact)
    assert found / total >= 0.95, found / total


def test_predicted_links_are_replaced_in_bounded_batches(store: Neo4jStore) -> None:
    store.add_triples([("a", "knows", "b"), ("b", "knows", "c")])
    store.upsert_entities(EntityRow(f"e{i}") for i in range(250))
    v1 = [PredictedLink(f"e{i}", "knows", "a", 0.5) for i in range(250)]
    assert store.write_predicted_links(v1, "v1", "kgweave complex") == 250
    store.write_predicted_links([PredictedLink("a", "knows", "c", 0.95)], "v2", "kgweave complex")
    assert store.predicted_links() == [("a", "knows", "c", 0.95, "v2")]
    assert stored_triples(store) == {("a", "knows", "b"), ("b", "knows", "c")}


# ---- the APOC trigger into a real kgweave serve
def _logged_events(data_dir: Path) -> list[dict[str, Any]]:
    """The change events serve appended, read from its segment files without opening the log
    (serve holds it): records of a header (length, CRC-32, offset) and JSON, see
    changes/segments.py."""
    from kgweave.changes.segments import HEADER

    events = []
    for path in sorted((data_dir / "changes" / "segments").glob("*.seg")):
        data = path.read_bytes()
        position = 0
        while position + HEADER.size <= len(data):
            length, _, _ = HEADER.unpack_from(data, position)
            start = position + HEADER.size
            if start + length > len(data):
                break
            events.append(json.loads(data[start : start + length]))
            position = start + length
    return events


@pytest.fixture
def serving(
    neo4j: RealNeo4j, store: Neo4jStore, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[int]:
    """``kgweave serve`` on the real Neo4j (demo graph imported by the CLI): its HTTP port."""
    monkeypatch.setenv("KGWEAVE_DATA_DIR", str(neo4j.data_dir))
    assert main(["import", "demo", "--graph", neo4j.uri, "--no-progress"]) == 0
    grpc_port, http_port = free_port(), free_port()
    env = {
        **os.environ,
        "KGWEAVE_GRAPH_URI": neo4j.uri,  # the password comes from the data folder
        "KGWEAVE_GRPC_PORT": str(grpc_port),
        "KGWEAVE_HTTP_PORT": str(http_port),
        "KGWEAVE_BOOTSTRAP_EPOCHS": "5",
        "KGWEAVE_FRONTEND": "python",
        "KGWEAVE_RETRAIN_MIN_EVENTS": "0",
    }
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "kgweave.cli.main", "serve", "--no-progress"],
            env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:

        def healthy() -> bool:
            if process.poll() is not None:
                pytest.fail(f"kgweave serve exited: {log.read_text()[-2000:]}")
            return serve_ready(http_port)

        _wait_for(healthy, "kgweave serve on the real Neo4j to be ready", timeout=600)
        yield http_port
    finally:
        stop_process(process)


class _Receiver(ThreadingHTTPServer):
    """A real HTTP endpoint that accepts what APOC sends (chunked bodies) and parses each body
    with kgweave's own parser."""

    def __init__(self) -> None:
        self.events: list[Any] = []
        self.lock = threading.Lock()

        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                from kgweave.changes.http_payload import parse_change_payload

                body = b""
                if self.headers.get("Transfer-Encoding") == "chunked":
                    while size := int(self.rfile.readline().strip(), 16):
                        body += self.rfile.read(size)
                        self.rfile.readline()
                    self.rfile.readline()
                else:
                    body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with outer.lock:
                    outer.events.extend(parse_change_payload(body))
                self.send_response(202)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"accepted": 1}')

            def log_message(self, *args: object) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def seen(self) -> list[tuple[str, ...]]:
        with self.lock:
            return [
                (e.kind.value, *(x for x in (e.entity, e.head, e.relation, e.tail) if x))
                for e in self.events
            ]


def test_apoc_trigger_sends_each_kind_of_change(neo4j: RealNeo4j, store: Neo4jStore) -> None:
    """The template, installed by install.sh's statement with real APOC Core, fires after each
    commit; every body parses with kgweave's parser. Phase ``after``: the default ``afterAsync``
    was seen to drop a transaction's events now and then (procedures/neo4j/README.md)."""
    store.write("CREATE (:Entity {id: 'london'})")
    receiver = _Receiver()
    install_trigger(neo4j.uri, neo4j.auth, f"127.0.0.1:{receiver.server_address[1]}", phase="after")
    try:
        steps = [
            (
                "CREATE (:Entity {id: 'ada', name: 'Ada Lovelace', description: 'mathematician'})",
                ("entity_upserted", "ada"),
            ),
            (
                "MATCH (a:Entity {id: 'ada'}), (l:Entity {id: 'london'}) "
                "CREATE (a)-[:born_in]->(l), (a)-[:RELATED {relation: '/people/lived'}]->(l)",
                ("triple_added", "ada", "born_in", "london"),
            ),
            (
                "MATCH (:Entity {id: 'ada'})-[x:RELATED]->() DELETE x",
                ("triple_removed", "ada", "/people/lived", "london"),
            ),
            ("MATCH (a:Entity {id: 'ada'}) DETACH DELETE a", ("entity_deleted", "ada")),
            (  # created and deleted in one transaction each: read from what APOC captured
                "CREATE (:Entity {id: 'bob'})-[:knows]->(:Entity {id: 'eve'})",
                ("triple_added", "bob", "knows", "eve"),
            ),
            (
                "MATCH (n:Entity) WHERE n.id IN ['bob', 'eve'] DETACH DELETE n",
                ("triple_removed", "bob", "knows", "eve"),
            ),
            (
                "CREATE (:Other {id: 'x'})-[:KGWEAVE_PREDICTED]->(:Entity {id: 'y'})",
                ("entity_upserted", "y"),
            ),
        ]
        for cypher, event in steps:
            store.write(cypher)
            _wait_for(
                lambda event=event: event in receiver.seen(),
                lambda event=event: f"the trigger to send {event} (received: {receiver.seen()})",
            )
        seen = receiver.seen()
        assert ("triple_added", "ada", "/people/lived", "london") in seen
        assert ("triple_removed", "ada", "born_in", "london") in seen  # DETACH DELETE
        assert {("entity_upserted", "bob"), ("entity_upserted", "eve")} <= set(seen)
        assert {("entity_deleted", "bob"), ("entity_deleted", "eve")} <= set(seen)
        assert not any("x" in e[1:] for e in seen)  # neither :Other nor kgweave's own links
        ada = next(e for e in receiver.events if e.entity == "ada")
        assert ada.properties == {"name": "Ada Lovelace", "description": "mathematician"}
    finally:
        drop_trigger(neo4j.uri, neo4j.auth)
        receiver.shutdown()


def test_the_census_explains_what_the_trigger_logged(neo4j: RealNeo4j, store: Neo4jStore) -> None:
    """The snapshot diff exports nothing when Neo4j's census (entities, facts per relation) is
    the last export's plus the changes the APOC trigger logged since (changes/diff.py:
    to_export), and reads the relation a change that bypassed the trigger touched."""
    store.write("CREATE (:Entity {id: 'london'})-[:capital_of]->(:Entity {id: 'uk'})")
    last = store.census()  # as at the last export
    receiver = _Receiver()
    install_trigger(neo4j.uri, neo4j.auth, f"127.0.0.1:{receiver.server_address[1]}", phase="after")
    try:
        steps = [
            ("CREATE (:Entity {id: 'ada', name: 'Ada Lovelace'})", ("entity_upserted", "ada")),
            (  # a new relation type, a generic relationship, and a new entity made on the way
                "MATCH (a:Entity {id: 'ada'}), (l:Entity {id: 'london'}) "
                "MERGE (m:Entity {id: 'maths'}) "
                "CREATE (a)-[:born_in]->(l), (a)-[:RELATED {relation: '/people/field'}]->(m)",
                ("triple_added", "ada", "/people/field", "maths"),
            ),
            (
                "MATCH (:Entity {id: 'london'})-[x:capital_of]->() DELETE x",
                ("triple_removed", "london", "capital_of", "uk"),
            ),
        ]
        for cypher, event in steps:
            store.write(cypher)
            _wait_for(lambda event=event: event in receiver.seen(), f"the trigger to send {event}")
        with receiver.lock:
            logged = list(receiver.events)
        assert to_export(last, store.census(), logged) is None
    finally:
        drop_trigger(neo4j.uri, neo4j.auth)
        receiver.shutdown()
    # behind the log's back: the counts no longer add up, and the export runs
    store.write("MATCH (a:Entity {id: 'uk'}), (b:Entity {id: 'ada'}) CREATE (a)-[:knows]->(b)")
    assert to_export(last, store.census(), logged) == Part(frozenset({"knows"}), entities=False)
    # what a write through kgweave asks before it writes (the facts the graph holds already)
    held = [("ada", "born_in", "london"), ("ada", "/people/field", "maths"), ("uk", "knows", "ada")]
    asked = [*held, ("london", "capital_of", "uk"), ("ada", "knows", "london")]
    assert store.existing_triples(asked) == set(held)


def test_apoc_trigger_into_a_real_serve(neo4j: RealNeo4j, store: Neo4jStore, serving: int) -> None:
    import http.client

    # what APOC sends, byte for byte in its framing: a chunked POST
    connection = http.client.HTTPConnection("127.0.0.1", serving, timeout=60)
    body = json.dumps(
        {"source": "neo4j-apoc", "events": [{"kind": "entity_deleted", "entity": "nobody"}]}
    )
    headers = {"Content-Type": "application/json", "Transfer-Encoding": "chunked"}
    connection.request("POST", "/v1/changes", iter([body.encode()]), headers, encode_chunked=True)
    assert connection.getresponse().status == 202
    install_trigger(neo4j.uri, neo4j.auth, f"127.0.0.1:{serving}", phase="after")
    try:
        before = len(_logged_events(neo4j.data_dir))
        store.write("CREATE (:Entity {id: 'ada', name: 'Ada Lovelace'})")
        _wait_for(
            lambda: any(e.get("entity") == "ada" for e in _logged_events(neo4j.data_dir)[before:]),
            "the trigger's event in serve's event log",
        )
        # and served: the new entity and its fact, through the applier, by the HTTP gateway
        store.write(
            "MATCH (a:Entity {id: 'ada'}), (l:Entity {id: 'london'}) CREATE (a)-[:born_in]->(l)"
        )

        def served_facts() -> set[tuple[str, str, str]]:
            url = f"http://127.0.0.1:{serving}/v1/entities/ada?maxFacts=10"
            try:
                with urllib.request.urlopen(url, timeout=60) as reply:
                    entity = json.loads(reply.read())
            except urllib.error.HTTPError:  # 404 until the entity is applied
                return set()
            return {(f["head"], f["relation"], f["tail"]) for f in entity.get("facts", [])}

        _wait_for(
            lambda: ("ada", "born_in", "london") in served_facts(),
            "the trigger's entity and fact served by kgweave serve",
        )
    finally:
        drop_trigger(neo4j.uri, neo4j.auth)


# ---- restarts (last: it restarts the session's DBMS)
def test_the_store_retries_while_neo4j_restarts(neo4j: RealNeo4j, store: Neo4jStore) -> None:
    store.add_triples([("a", "knows", "b")])
    patient = Neo4jStore(neo4j.target(), retry_s=600)
    assert neo4j.server.stop()
    calling = threading.Event()
    result: dict[str, Any] = {}

    def count() -> None:
        calling.set()
        try:
            result["counts"] = patient.counts()
        except Exception as exc:  # reported by the assertion below
            result["error"] = exc

    worker = threading.Thread(target=count)
    worker.start()
    calling.wait()  # the call is under way while nothing listens on the port
    neo4j.info = neo4j.server.start(bolt_port=neo4j.info.bolt_port)
    worker.join()
    patient.close()
    assert result == {"counts": {"entities": 2, "relations": 1, "triples": 1}}
