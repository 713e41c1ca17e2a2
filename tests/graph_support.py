"""Test support shared by the graph-store tests: a UMLS split through import and export."""

from __future__ import annotations

from pathlib import Path

from kgweave.data import load_dataset
from kgweave.data.reader import read_triples
from kgweave.graph.neo4j_store import Neo4jStore
from kgweave.graph.store import GraphStore
from kgweave.graph.sync import Snapshot, export_snapshot, import_dataset


def umls_round_trip(store: GraphStore, datasets_dir: Path, ids_path: Path) -> Snapshot:
    """Import UMLS's validation split into ``store``, export a snapshot, check the triples."""
    umls = load_dataset(datasets_dir / "umls")
    report = import_dataset(store, umls, splits=("valid",), progress=False)
    assert report["triples"] == len(umls.split("valid"))
    snap = export_snapshot(store, ids_path, page_size=50)
    exported = {
        (snap.entities.labels[h], snap.relations.labels[r], snap.entities.labels[t])
        for h, r, t in snap.triples.tolist()
    }
    expected = {
        (umls.entities.labels[h], umls.relations.labels[r], umls.entities.labels[t])
        for h, r, t in umls.split("valid").tolist()
    }
    assert exported == expected
    return snap


def fb15k_generic_relations(store: Neo4jStore, datasets_dir: Path) -> None:
    """FB15k-237 relation names (not identifiers) go on the generic type; removal works."""
    sample = read_triples(datasets_dir / "fb15k-237" / "train.tsv")[:300]

    def stored() -> set[tuple[str, str, str]]:
        return {t for page in store.iter_triples(page_size=40) for t in page}

    store.add_triples(sample)
    assert stored() == set(sample)
    rows = store.read("MATCH ()-[x:RELATED]->() RETURN count(x) AS n")
    assert rows[0]["n"] == len(set(sample))
    assert store.remove_triples(sample[:10]) == len(set(sample[:10]))
    assert stored() == set(sample) - set(sample[:10])
