"""The FalkorDB graph store against a real embedded server."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytest

from graph_support import (
    census_and_relation_reads,
    existing_triples_are_found,
    injection_is_data,
    labelled,
    nearest_is_cosine,
    predicted_links_replaced,
    stored_triples,
)
from kgweave.data import load_dataset
from kgweave.data.reader import read_triples
from kgweave.errors import GraphUnavailableError, InvalidArgumentError
from kgweave.graph import EmbeddedFalkorDB
from kgweave.graph.falkordb_store import FalkorDBStore
from kgweave.graph.store import EntityRow, GraphMapping
from serving_support import HANG_GUARD_S


@pytest.fixture
def store(falkordb: tuple[str, int, str | None], request: pytest.FixtureRequest) -> FalkorDBStore:
    host, port, password = falkordb
    name = f"test_{request.node.name}"[:60]
    s = FalkorDBStore(host, port, graph=name, batch_size=500, password=password)
    s.ensure_schema()
    return s


def test_round_trip_umls(store: FalkorDBStore, datasets_dir: Path) -> None:
    triples = read_triples(datasets_dir / "umls" / "train.tsv")
    ds = load_dataset(datasets_dir / "umls")
    store.upsert_entities(EntityRow(e, e.replace("_", " ")) for e in ds.entities.labels)
    assert store.add_triples(triples) == len(triples)
    assert stored_triples(store) == set(triples)
    assert store.counts() == {
        "entities": ds.num_entities,
        "relations": len({r for _, r, _ in triples}),
        "triples": len(set(triples)),
    }
    # idempotent: adding again changes nothing
    store.add_triples(triples[:100])
    assert store.counts()["triples"] == len(set(triples))
    names = {row.id: row.name for page in store.iter_entities(page_size=50) for row in page}
    assert names["amino_acid_peptide_or_protein"] == "amino acid peptide or protein"


def test_fb15k_relation_names_use_the_generic_type(
    store: FalkorDBStore, datasets_dir: Path
) -> None:
    sample = read_triples(datasets_dir / "fb15k-237" / "train.tsv")[:2000]
    store.add_triples(sample)
    assert stored_triples(store) == set(sample)
    removed = store.remove_triples(sample[:10])
    assert removed == len(set(sample[:10]))
    assert stored_triples(store) == set(sample) - set(sample[:10])
    existing_triples_are_found(store, sample[:10], sample[10:20])
    typed = [("a", "knows", "b"), ("b", "knows", "c")]  # a relationship type of its own
    store.add_triples(typed[:1])
    assert store.existing_triples(typed) == set(typed[:1])
    census_and_relation_reads(store)


def test_injection_attempts_are_data_not_cypher(store: FalkorDBStore) -> None:
    injection_is_data(store, quote="'")


def test_invalid_mapping_names_are_refused() -> None:
    with pytest.raises(InvalidArgumentError, match="entity label 'Entity\\) DELETE'"):
        GraphMapping(entity_label="Entity) DELETE")
    with pytest.raises(InvalidArgumentError, match="relationship type"):
        GraphMapping(relation_types=("ok", "not ok"))


def test_import_then_export_round_trip_with_stable_ids(
    store: FalkorDBStore, datasets_dir: Path, tmp_path: Path
) -> None:
    from kgweave.graph.sync import export_snapshot, import_dataset

    ds = load_dataset(datasets_dir / "umls")
    report = import_dataset(store, ds, progress=False)
    assert report["triples"] == sum(len(ds.split(s)) for s in ("train", "valid", "test"))
    ids_path = tmp_path / "ids.json"
    snap = export_snapshot(store, ids_path, page_size=1000)
    assert labelled(snap, snap.triples) == labelled(ds, ds.all_triples())
    assert snap.triples.tolist() == sorted(snap.triples.tolist())
    # deterministic: the same graph exports the same ids and triples
    again = export_snapshot(store, ids_path, page_size=333)
    assert again.triples.tolist() == snap.triples.tolist() and again.new_entities == 0
    # a new fact with a new entity: old ids never move, the new one comes last
    store.add_triples([("new_thing", "isa", "amino_acid_peptide_or_protein")])
    later = export_snapshot(store, ids_path)
    assert later.entities.labels[: len(snap.entities)] == snap.entities.labels
    assert later.entities.labels[-1] == "new_thing"
    assert later.new_entities == 1 and later.new_relations == 0
    assert len(later.triples) == len(snap.triples) + 1


def test_import_keeps_entity_text(store: FalkorDBStore) -> None:
    from kgweave.data import resolve_dataset
    from kgweave.graph.sync import import_dataset
    from kgweave.settings import get_settings

    demo = load_dataset(resolve_dataset("demo", get_settings()), name="demo")
    import_dataset(store, demo, splits=("train",), progress=False)
    rows = {row.id: row for page in store.iter_entities() for row in page}
    assert rows["marie_curie"].name == "Marie Curie"
    assert "physicist" in (rows["marie_curie"].description or "")
    assert store.counts()["triples"] == len(demo.train)


def test_embeddings_write_back_and_native_vector_query(store: FalkorDBStore) -> None:
    nearest_is_cosine(store, 60)  # the second write drops the HNSW index and builds it afresh
    assert "CREATE VECTOR INDEX FOR (e:`Entity`) ON (e.`embedding`)" in store.vector_index_ddl(
        16, "cosine"
    )


def test_predicted_links_are_replaced_and_kept_apart(store: FalkorDBStore) -> None:
    from kgweave.graph.store import PredictedLink

    store.add_triples([("a", "knows", "b"), ("b", "knows", "c")])
    v1 = [PredictedLink("a", "knows", "c", 0.9), PredictedLink("c", "knows", "a", 0.4)]
    assert store.write_predicted_links(v1, "v1", "kgweave complex") == 2
    v2 = [PredictedLink("a", "knows", "c", 0.95)]
    store.write_predicted_links(v2, "v2", "kgweave complex")
    assert store.predicted_links() == [("a", "knows", "c", 0.95, "v2")]
    assert stored_triples(store) == {("a", "knows", "b"), ("b", "knows", "c")}
    assert store.counts()["triples"] == 2


def test_snapshot_diff_emits_added_and_removed_triples(
    store: FalkorDBStore, tmp_path: Path
) -> None:
    from kgweave.changes import ChangeKind, EventLog
    from kgweave.changes.diff import snapshot_diff

    store.add_triples([("a", "knows", "b"), ("b", "knows", "c")])
    with EventLog(tmp_path / "log") as log:
        first = snapshot_diff(store, tmp_path / "state", log)
        assert (first["added"], first["removed"], first["new_entities"]) == (2, 0, 3)
        store.add_triples([("c", "likes", "d")])
        store.remove_triples([("a", "knows", "b")])
        second = snapshot_diff(store, tmp_path / "state", log)
        assert (second["added"], second["removed"], second["new_entities"]) == (1, 1, 1)
        events = [e for _, e in log.read(second["first_offset"])]
        assert {(e.kind, e.entity) for e in events if e.kind == ChangeKind.ENTITY_UPSERTED} == {
            (ChangeKind.ENTITY_UPSERTED, "d")
        }
        triples = {(e.kind, e.head, e.relation, e.tail) for e in events if e.head}
        assert triples == {
            (ChangeKind.TRIPLE_ADDED, "c", "likes", "d"),
            (ChangeKind.TRIPLE_REMOVED, "a", "knows", "b"),
        }
        assert all(e.source == "snapshot-diff" for e in events)
        third = snapshot_diff(store, tmp_path / "state", log)
        assert (third["added"], third["removed"], third["new_entities"]) == (0, 0, 0)
        # a text change and a deleted entity (with its fact): the diff sees both
        store.upsert_entities([EntityRow("b", "Bee", "the second letter")])
        store.delete_entities(["d"])
        fourth = snapshot_diff(store, tmp_path / "state", log)
        assert (fourth["changed_texts"], fourth["deleted_entities"], fourth["removed"]) == (1, 1, 1)
        events = [e for _, e in log.read(fourth["first_offset"])]
        assert {(e.kind, e.entity or e.tail) for e in events} == {
            (ChangeKind.ENTITY_UPSERTED, "b"),
            (ChangeKind.ENTITY_DELETED, "d"),
            (ChangeKind.TRIPLE_REMOVED, "d"),
        }
        renamed = next(e for e in events if e.kind == ChangeKind.ENTITY_UPSERTED)
        assert renamed.properties == {"name": "Bee", "description": "the second letter"}
        assert snapshot_diff(store, tmp_path / "state", log)["first_offset"] is None


def test_snapshot_diff_leaves_out_what_the_log_already_says(
    store: FalkorDBStore, tmp_path: Path
) -> None:
    """A fact written through the log before the export is not emitted again; a fact the
    export saw, removed through the log before the diff appends, is not added back by the
    export's stale view: the removal stays the last word. A change behind the log is
    emitted."""
    from kgweave.changes import ChangeEvent, ChangeKind, EventLog
    from kgweave.changes.diff import commit_diff, compute_diff, snapshot_diff

    def logged(kind: ChangeKind, h: str, t: str) -> ChangeEvent:
        return ChangeEvent(kind, head=h, relation="knows", tail=t)

    store.add_triples([("a", "knows", "b")])
    with EventLog(tmp_path / "log") as log:
        snapshot_diff(store, tmp_path / "state", log, emit=False)
        store.add_triples([("b", "knows", "c"), ("c", "knows", "a"), ("a", "knows", "c")])
        log.append([logged(ChangeKind.TRIPLE_ADDED, "c", "a")])  # as WriteFacts: graph, log
        since = log.end_offset
        events, result = compute_diff(store, tmp_path / "state")  # the export sees all three
        store.remove_triples([("b", "knows", "c")])  # then a write through kgweave
        log.append([logged(ChangeKind.TRIPLE_REMOVED, "b", "c")])
        done = commit_diff(tmp_path / "state", log, events, result, since)
        # c-a (logged), b-c (removed since), and "c" itself: a new entity without text, which
        # the logged c-a brought into the graph
        assert done["already_logged"] == 3
        last_word = {}
        for _, event in log.read(0):
            if event.head:
                last_word[(event.head, event.tail)] = (event.kind, event.source)
        assert last_word == {
            ("b", "c"): (ChangeKind.TRIPLE_REMOVED, "kgweave"),
            ("c", "a"): (ChangeKind.TRIPLE_ADDED, "kgweave"),
            ("a", "c"): (ChangeKind.TRIPLE_ADDED, "snapshot-diff"),  # behind the log
        }
        # the next run: the removal is in its view and in the log, nothing to say
        assert snapshot_diff(store, tmp_path / "state", log)["first_offset"] is None


def test_a_snapshot_diff_reads_only_the_relations_whose_counts_changed(
    store: FalkorDBStore, tmp_path: Path
) -> None:
    """The census names the relations a change behind the log touched (store.census,
    diff.to_export); the export reads their facts only and keeps the others' from the last
    snapshot, and reads the entities only when their count moved; a later full compare
    finds nothing the log has not said, though the snapshot's other relations are older
    than the partial runs: the log is read back to the last run that read everything."""
    from kgweave.changes import ChangeEvent, ChangeKind, EventLog
    from kgweave.changes.diff import Part, snapshot_diff, to_export
    from kgweave.graph.store import Census

    store.add_triples([("a", "knows", "b"), ("b", "likes", "c"), ("c", "/film/genre", "d")])
    state = tmp_path / "state"

    def emitted(result: dict[str, Any]) -> set[tuple[Any, ...]]:
        start = result["first_offset"]
        return set() if start is None else {
            (e.kind, e.entity or e.head, e.relation, e.tail) for _, e in log.read(start)
        }  # fmt: skip

    with EventLog(tmp_path / "log") as log:
        snapshot_diff(store, state, log, emit=False)
        last = store.census()
        assert last == Census(4, {"knows": 1, "likes": 1, "/film/genre": 1})
        # through the log (as WriteFacts: graph, then log): explained, nothing to read
        store.add_triples([("a", "knows", "c")])
        log.append([ChangeEvent(ChangeKind.TRIPLE_ADDED, head="a", relation="knows", tail="c")])
        logged = [e for _, e in log.read(0)]
        assert to_export(last, store.census(), logged) is None
        # behind the log's back, in two relations (one a generic one): those two are read;
        # a removal and an addition in a third keep its count (left to the full compare),
        # and a renamed entity keeps theirs (left to the next read of the entities)
        store.add_triples([("d", "likes", "a"), ("d", "/film/genre", "b"), ("b", "knows", "d")])
        store.remove_triples([("a", "knows", "b")])
        store.upsert_entities([EntityRow("a", "Ada")])
        part = to_export(last, store.census(), logged)
        assert part == Part(frozenset({"likes", "/film/genre"}), entities=False)
        partial = snapshot_diff(store, state, log, part=part)
        assert (partial["relations_read"], partial["relations"]) == (2, 3)
        assert emitted(partial) == {
            (ChangeKind.TRIPLE_ADDED, "d", "likes", "a"),
            (ChangeKind.TRIPLE_ADDED, "d", "/film/genre", "b"),
        }
        # a new entity and its fact behind the log: the entities are read too (a's new
        # name with them)
        last = store.census()
        store.add_triples([("e", "likes", "a")])
        store.upsert_entities([EntityRow("e", "Eve")])
        part = to_export(last, store.census(), [])
        assert part == Part(frozenset({"likes"}), entities=True)
        assert emitted(snapshot_diff(store, state, log, part=part)) == {
            (ChangeKind.ENTITY_UPSERTED, "e", None, None),
            (ChangeKind.ENTITY_UPSERTED, "a", None, None),
            (ChangeKind.TRIPLE_ADDED, "e", "likes", "a"),
        }
        # the full compare: what changed behind the log in "knows", not a-knows-c again
        full = snapshot_diff(store, state, log)
        assert (full["relations_read"], full["added"], full["removed"]) == (3, 2, 1)
        assert emitted(full) == {
            (ChangeKind.TRIPLE_ADDED, "b", "knows", "d"),
            (ChangeKind.TRIPLE_REMOVED, "a", "knows", "b"),
        }


def test_vector_query_right_after_a_large_write_back(store: FalkorDBStore) -> None:
    # FalkorDB builds vector indexes in the background; write-back waits until it is usable
    import torch

    torch.manual_seed(1)
    ids = [f"n{i}" for i in range(3000)]
    store.upsert_entities(EntityRow(i) for i in ids)
    vectors = torch.randn(3000, 64)
    store.write_embeddings(ids, vectors.tolist())
    assert store.nearest(vectors[1234].tolist(), k=1)[0][0] == "n1234"


def test_write_back_of_a_trained_model(
    store: FalkorDBStore, datasets_dir: Path, tmp_path: Path
) -> None:
    """A real demo model written back: vectors answer native vector queries like the model's
    own cosine neighbours, predicted links are new facts, and a new version replaces them."""
    import torch

    from kgweave.artifact import load_artifact
    from kgweave.graph.sync import import_dataset
    from kgweave.serving.writeback import write_back
    from kgweave.settings import get_settings
    from serving_support import train_demo_model

    settings = get_settings()
    model = load_artifact(train_demo_model(settings, tmp_path / "m", epochs=20, dim=16))
    demo = load_dataset(Path(__file__).resolve().parent.parent / "server" / "kgweave" / "demo")
    import_dataset(store, demo, progress=False)
    report = write_back(store, model, "v0001", max_links=25, progress=False)
    assert report["embeddings"] == len(model.entities) and report["predicted_links"] == 25

    table = torch.nn.functional.normalize(model.model.entity.weight.detach(), dim=1)
    i = model.entities.index["paris"]
    expected = (table @ table[i]).topk(4).indices.tolist()
    found = [e for e, _ in store.nearest(model.model.entity.weight[i].tolist(), 4)]
    assert found[0] == "paris"
    assert len(set(found) & {model.entities.labels[j] for j in expected}) >= 3

    predicted_links_replaced(store, model, stored_triples(store), 25)


def _umls_copy(datasets_dir: Path, folder: Path) -> Path:
    folder.mkdir()
    for name in ("train.tsv", "valid.tsv", "test.tsv"):
        (folder / name).write_bytes((datasets_dir / "umls" / name).read_bytes())
    return folder


def test_nul_byte_import_is_refused_before_any_write(
    falkordb: tuple[str, int, str | None],
    datasets_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The issue's case: a NUL byte aborted a FalkorDB import after 1,996 triples."""
    from kgweave.cli.main import main

    folder = _umls_copy(datasets_dir, tmp_path / "nul")
    lines = (folder / "train.tsv").read_bytes().splitlines(keepends=True)
    lines[3000] = lines[3000].replace(b"\t", b"\x00\t", 1)
    (folder / "train.tsv").write_bytes(b"".join(lines))
    host, port, password = falkordb
    uri = f"falkor://:{password}@{host}:{port}/nul_import"
    code = main(["import", str(folder), "--graph", uri, "--no-progress"])
    err = capsys.readouterr().err
    assert code == 4, err
    assert "train.tsv:3001: contains a NUL byte" in err and err.count("\n") == 1
    store = FalkorDBStore(host, port, graph="nul_import", password=password)
    assert store.counts()["triples"] == 0 and store.counts()["entities"] == 0


def test_an_interrupted_import_is_completed_by_a_rerun(
    falkordb: tuple[str, int, str | None], datasets_dir: Path, tmp_path: Path
) -> None:
    from kgweave.graph.sync import import_dataset

    host, port, password = falkordb
    store = FalkorDBStore(host, port, graph="resumed_import", batch_size=500, password=password)
    full = read_triples(datasets_dir / "umls" / "train.tsv")
    store.ensure_schema()
    store.add_triples(full[:1996])  # what an import that died mid-way left behind
    dataset = load_dataset(datasets_dir / "umls")
    report = import_dataset(store, dataset, ("train",), progress=False)
    assert report["triples"] == len(full)
    assert stored_triples(store) == set(full)
    assert store.counts()["triples"] == len(set(full))
    assert store.counts()["entities"] == dataset.num_entities


def test_a_failing_import_says_how_far_it_got(falkordb: tuple[str, int, str | None]) -> None:
    """A triple that cannot be written mid-way (one the reader would have refused: built
    directly here) stops the import with a clear error that says a rerun completes it."""
    import torch

    from kgweave.data.dataset import IdMap, KGDataset
    from kgweave.errors import KGWeaveError
    from kgweave.graph.sync import import_dataset

    host, port, password = falkordb
    store = FalkorDBStore(host, port, graph="failing_import", batch_size=500, password=password)
    entities = IdMap([f"e{i}" for i in range(30_000)])
    relations = IdMap(["r", "bad\x00type"])
    rows = [(i, 0, i + 1) for i in range(12_000)] + [(0, 1, 1)]
    dataset = KGDataset(
        name="bad",
        entities=entities,
        relations=relations,
        splits={"train": torch.tensor(rows)},
        fingerprint="",
    )
    with pytest.raises(KGWeaveError) as caught:
        import_dataset(store, dataset, ("train",), progress=False)
    assert "up to 10,000 of 12,001 triples written" in str(caught.value)
    assert "run it again to complete it" in str(caught.value)


def test_snapshot_diff_in_its_worker_process(
    store: FalkorDBStore, falkordb: tuple[str, int, str | None], tmp_path: Path
) -> None:
    """The diff as ``kgweave serve`` runs it: exported and compared in the DiffWorker's own
    process (connecting by the graph URI), its events appended by the server's log."""
    from urllib.parse import quote

    from kgweave.changes import ChangeKind, EventLog
    from kgweave.changes.diff import DiffWorker
    from kgweave.settings import Settings

    host, port, password = falkordb
    auth = f":{quote(password, safe='')}@" if password else ""
    settings = Settings(graph_uri=f"falkor://{auth}{host}:{port}/{store.graph.name}")
    store.add_triples([("a", "knows", "b")])
    worker = DiffWorker(settings)
    try:
        with EventLog(tmp_path / "log") as log:
            first = worker.run(tmp_path / "state", log, emit=False)  # the baseline: no events
            assert first["added"] == 1 and log.end_offset == 0
            store.add_triples([("b", "knows", "c")])
            second = worker.run(tmp_path / "state", log)
            triples = {(e.kind, e.head, e.tail) for _, e in log.read(0) if e.head}
            assert second["added"] == 1 and triples == {(ChangeKind.TRIPLE_ADDED, "b", "c")}
    finally:
        worker.close()


def test_a_server_that_stops_answering_is_an_error_not_a_hang(tmp_path: Path) -> None:
    """A stopped (SIGSTOP) FalkorDB: the query fails after the store's timeout with one line
    naming the setting, and the store answers again once the server runs on."""
    server = EmbeddedFalkorDB(tmp_path / "falkordb")
    info = server.start()
    try:
        # (2 s: room for a loaded machine before and after; a stopped server never answers)
        store = FalkorDBStore(info.host, info.port, password=info.password(), timeout_s=2.0)
        assert store.rows("RETURN 1") == [[1]]
        os.kill(info.pid, signal.SIGSTOP)
        try:
            with pytest.raises(GraphUnavailableError, match=r"did not answer a query within 2s"):
                store.rows("RETURN 2")
        finally:
            os.kill(info.pid, signal.SIGCONT)
        assert store.rows("RETURN 3") == [[3]]
    finally:
        server.stop()


def _diff_worker_of(parent: int) -> None:
    """A diff worker's start-up, in a process whose server (``parent``) is not its parent:
    the case of a server killed before its worker started."""
    from kgweave.changes.diff import _worker_started

    _worker_started(parent)
    signal.pause()  # until the watch ends the process (no signal comes)


def test_a_diff_worker_whose_server_died_before_it_started_exits() -> None:
    import multiprocessing

    worker = multiprocessing.get_context("spawn").Process(target=_diff_worker_of, args=(1,))
    worker.start()
    try:
        worker.join(HANG_GUARD_S)  # a hang guard only: the watch exits at its first check
        assert worker.exitcode == 0
    finally:
        if worker.is_alive():
            worker.kill()
