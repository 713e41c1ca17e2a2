"""Test support shared by the graph-store tests: a UMLS split through import and export."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import torch

from kgweave.artifact import ModelArtifact
from kgweave.data import load_dataset
from kgweave.data.reader import read_triples
from kgweave.errors import InvalidArgumentError
from kgweave.graph.cypher_store import CypherStore
from kgweave.graph.neo4j_store import Neo4jStore
from kgweave.graph.store import EntityRow, GraphStore, Triple
from kgweave.graph.sync import Snapshot, export_snapshot, import_dataset
from kgweave.serving.writeback import write_back


def stored_triples(store: GraphStore, page_size: int = 97) -> set[tuple[str, str, str]]:
    """Every fact in ``store``, read page by page."""
    return {t for page in store.iter_triples(page_size=page_size) for t in page}


def injection_is_data(store: GraphStore, quote: str) -> None:
    """Names that would be Cypher if pasted into a query are stored as data. ``quote``: the
    quote the injection tries (FalkorDB's Bolt endpoint refuses any parameter string holding a
    single quote, "unknown error" with nothing executed; its own client and Neo4j take both)."""
    evil = [
        ("a", "x]->() MATCH (n) DETACH DELETE n //", "b"),
        (f"a{quote}}}) DETACH DELETE n //", "knows", "c"),
        ("c", "KGWEAVE_PREDICTED", "a"),
    ]
    store.add_triples(evil)
    assert stored_triples(store) == set(evil)
    assert store.counts()["entities"] == 4


def predicted_links_replaced(
    store: CypherStore, model: ModelArtifact, facts: set[tuple[str, str, str]], written: int
) -> None:
    """After ``write_back`` of ``model`` as v0001 wrote ``written`` predicted links: they are
    new facts of v0001, a write-back of v0002 replaces them, and the real facts stay."""
    links = store.predicted_links()
    assert len(links) == written and all((h, r, t) not in facts for h, r, t, _, _ in links)
    assert {v for *_, v in links} == {"v0001"}
    write_back(store, model, "v0002", embeddings=False, max_links=5, progress=False)
    assert {v for *_, v in store.predicted_links()} == {"v0002"}
    assert len(store.predicted_links()) == 5
    assert stored_triples(store) == facts  # real facts untouched


def nearest_is_cosine(store: GraphStore, n: int) -> None:
    """``n`` random entity vectors, written twice (a new version over the old one): the
    database's vector index finds a vector's three cosine-nearest; a similarity other than
    cosine or euclidean and vectors of different dimensions are refused."""
    torch.manual_seed(0)
    ids = [f"e{i}" for i in range(n)]
    store.upsert_entities(EntityRow(i) for i in ids)
    vectors = torch.randn(n, 16)
    assert store.write_embeddings(ids, vectors.tolist()) == n
    store.write_embeddings(ids, vectors.tolist())
    query = vectors[7]
    cosine = torch.nn.functional.cosine_similarity(vectors, query.unsqueeze(0))
    expected = [ids[i] for i in cosine.argsort(descending=True)[:3].tolist()]
    found = [entity for entity, _ in store.nearest(query.tolist(), k=3)]
    assert found == expected and found[0] == "e7"
    with pytest.raises(InvalidArgumentError, match="similarity 'dot'"):
        store.write_embeddings(ids[:1], vectors[:1].tolist(), similarity="dot")
    with pytest.raises(InvalidArgumentError, match="same dimension"):
        store.write_embeddings(ids[:2], [[1.0, 2.0], [1.0]])


def labelled(vocab: Any, triples: torch.Tensor) -> set[tuple[str, str, str]]:
    """Id triples ``(M, 3)`` as (head, relation, tail) labels of ``vocab``'s id maps (a
    dataset's or an exported snapshot's)."""
    e, r = vocab.entities.labels, vocab.relations.labels
    return {(e[h], r[rel], e[t]) for h, rel, t in triples.tolist()}


def umls_round_trip(store: GraphStore, datasets_dir: Path, ids_path: Path) -> Snapshot:
    """Import UMLS's validation split into ``store``, export a snapshot, check the triples."""
    umls = load_dataset(datasets_dir / "umls")
    report = import_dataset(store, umls, splits=("valid",), progress=False)
    assert report["triples"] == len(umls.split("valid"))
    snap = export_snapshot(store, ids_path, page_size=50)
    assert labelled(snap, snap.triples) == labelled(umls, umls.split("valid"))
    return snap


def fb15k_generic_relations(store: Neo4jStore, datasets_dir: Path) -> None:
    """FB15k-237 relation names (not identifiers) go on the generic type; removal works."""
    sample = read_triples(datasets_dir / "fb15k-237" / "train.tsv")[:300]

    store.add_triples(sample)
    assert stored_triples(store) == set(sample)
    rows = store.read("MATCH ()-[x:RELATED]->() RETURN count(x) AS n")
    assert rows[0]["n"] == len(set(sample))
    assert store.remove_triples(sample[:10]) == len(set(sample[:10]))
    assert stored_triples(store) == set(sample) - set(sample[:10])
    existing_triples_are_found(store, sample[:10], sample[10:20])


def census_and_relation_reads(store: GraphStore) -> None:
    """The census counts each relation's facts, generic (FB15k-237's names) or typed; a read
    of some relations returns theirs and nothing else (of none: nothing)."""
    held = stored_triples(store)
    typed = ("/m/a", "knows", "/m/b")
    store.add_triples([typed])
    held.add(typed)
    census = store.census()
    assert census.facts == dict(Counter(r for _, r, _ in held))
    assert census.counts()["triples"] == len(held)
    generic = sorted({r for _, r, _ in held} - {"knows"})[:2]
    some = {"knows", *generic}
    read = {t for page in store.iter_triples(page_size=7, relations=some) for t in page}
    assert read == {t for t in held if t[1] in some} and len(read) > 2
    assert not any(store.iter_triples(relations=set()))


def existing_triples_are_found(store: GraphStore, absent: list[Triple], held: list[Triple]) -> None:
    """``existing_triples`` names exactly the held facts asked about (a typed relation and the
    generic type alike; a fact with another relation between the same entities is not it)."""
    twisted = [(h, r + "_not", t) for h, r, t in held[:3]]
    asked = absent + held + twisted + [("nobody", held[0][1], "nowhere")]
    assert store.existing_triples(asked) == set(held)
    assert store.existing_triples([]) == set()
