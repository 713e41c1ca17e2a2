"""kgweave's Cypher functions on a real embedded FalkorDB (UDFs over written-back vectors):
scores equal ScoreTriples for every model kind, and the relation-aware vector search finds the
model's own top-10 (PredictLinks) through FalkorDB's vector index."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from kgweave.artifact import ModelArtifact, load_artifact
from kgweave.data import load_dataset
from kgweave.graph.falkordb_store import FalkorDBStore
from kgweave.graph.sync import import_dataset
from kgweave.predict import LinkPredictor, Query
from kgweave.serving.writeback import write_back
from kgweave.settings import Settings
from serving_support import train_demo_model

DEMO = Path(__file__).resolve().parent.parent / "server" / "kgweave" / "demo"
MODELS = ("distmult", "complex", "transe", "rotate")


@pytest.fixture(scope="module", params=MODELS)
def written(
    request: pytest.FixtureRequest,
    falkordb: tuple[str, int, str | None],
    tmp_path_factory: pytest.TempPathFactory,
    datasets_dir: Path,
) -> tuple[FalkorDBStore, ModelArtifact]:
    """A demo model of each kind, trained here and written back into its own graph."""
    kind = request.param
    root = tmp_path_factory.mktemp(kind)
    settings = Settings(data_dir=root / "data", datasets_dir=datasets_dir, device="cpu")
    config = {"model": kind, "epochs": 15, "dim": 16, "eval_every": 15}
    if kind in ("transe", "rotate"):
        config |= {"regime": "negative-sampling", "num_negatives": 16, "lr": 0.05}
    artifact = load_artifact(train_demo_model(settings, root / "model", **config))
    host, port, password = falkordb
    store = FalkorDBStore(host, port, graph=f"functions_{kind}", password=password)
    store.ensure_schema()
    import_dataset(store, load_dataset(DEMO), progress=False)
    report = write_back(store, artifact, "v0007", max_links=0, progress=False)
    assert report["functions"] is True and report["relations"] == len(artifact.relations)
    return store, artifact


def _sample(artifact: ModelArtifact, n: int = 40) -> list[tuple[str, str, str]]:
    generator = torch.Generator().manual_seed(0)
    rows = artifact.known[torch.randperm(len(artifact.known), generator=generator)[:n]]
    e, r = artifact.entities.labels, artifact.relations.labels
    return [(e[h], r[rel], e[t]) for h, rel, t in rows.tolist()]


def test_score_equals_score_triples(written: tuple[FalkorDBStore, ModelArtifact]) -> None:
    store, artifact = written
    triples = _sample(artifact)
    expected = LinkPredictor(artifact).score(triples)
    got = store._query(
        "UNWIND $rows AS row MATCH (h:Entity {id: row[0]}), (r:KGWEAVE_Relation {id: row[1]}), "
        "(t:Entity {id: row[2]}) RETURN kgweave.score(h, r, t)",
        {"rows": [list(t) for t in triples]},
    )
    assert [row[0] for row in got] == pytest.approx(expected, rel=1e-4, abs=1e-5)


def test_head_score_is_what_predict_links_ranks_heads_by(
    written: tuple[FalkorDBStore, ModelArtifact],
) -> None:
    store, artifact = written
    _, r, t = _sample(artifact, 1)[0]
    predictor = LinkPredictor(artifact)
    (answers,) = predictor.predict([Query(r, tail=t)], k=len(artifact.entities))
    expected = {a.entity: a.score for a in answers}
    got = store._query(
        "MATCH (t:Entity {id: $t}), (r:KGWEAVE_Relation {id: $r}), (h:Entity) "
        "RETURN h.id, kgweave.headScore(t, r, h)",
        {"t": t, "r": r},
    )
    assert len(got) == len(expected)
    for entity, score in got:
        assert score == pytest.approx(expected[entity], rel=1e-4, abs=1e-5)


def test_vector_search_finds_the_models_top_10(
    written: tuple[FalkorDBStore, ModelArtifact],
) -> None:
    """Tails and heads through db.idx.vector.queryNodes and the query functions, rescored with
    kgweave.score, against PredictLinks: every answer exact for the bilinear models and TransE;
    RotatE's euclidean search is a candidate search (sum of moduli), so most of its top-10."""
    store, artifact = written
    predictor = LinkPredictor(artifact)
    found = total = 0
    for h, r, t in _sample(artifact, 15):
        for side, anchor in (("tail", h), ("head", t)):
            query = Query(r, head=anchor) if side == "tail" else Query(r, tail=anchor)
            (exact,) = predictor.predict([query], k=10)
            function = "tailQuery" if side == "tail" else "headQuery"
            rescore = (
                "kgweave.score(a, r, node)" if side == "tail" else ("kgweave.headScore(a, r, node)")
            )
            rows = store._query(
                "MATCH (a:Entity {id: $anchor}), (r:KGWEAVE_Relation {id: $r}) "
                f"CALL db.idx.vector.queryNodes('Entity', 'kgweave_search', 30, "
                f"vecf32(kgweave.{function}(a, r))) YIELD node "
                f"RETURN node.id, {rescore} AS s ORDER BY s DESC LIMIT 10",
                {"anchor": anchor, "r": r},
            )
            found += len({row[0] for row in rows} & {a.entity for a in exact})
            total += len(exact)
    recall = found / total
    assert recall >= (0.8 if artifact.model.name == "rotate" else 0.98), recall


def test_a_relation_node_is_needed(written: tuple[FalkorDBStore, ModelArtifact]) -> None:
    store, _ = written
    with pytest.raises(Exception, match="relation node"):
        store._query("MATCH (h:Entity {id: 'paris'}) RETURN kgweave.score(h, h.id, h)")


def test_each_activated_version_is_written_back_with_its_name(
    falkordb: tuple[str, int, str | None], tmp_path: Path, datasets_dir: Path
) -> None:
    """KGWEAVE_WRITEBACK_ON_ACTIVATE: activating a version writes it into the graph (relation
    nodes, search vectors, predicted links) labelled with the registry version; the next
    activation relabels everything."""
    from kgweave.dataplane import DataPlane
    from serving_support import HANG_GUARD_S, registry_with

    host, port, password = falkordb
    settings = Settings(
        data_dir=tmp_path / "data",
        datasets_dir=datasets_dir,
        device="cpu",
        graph_uri=f"falkordb://:{password}@{host}:{port}/activation",
        writeback_on_activate=True,
        writeback_links=7,
    )
    store = FalkorDBStore(host, port, graph="activation", password=password)
    store.ensure_schema()
    import_dataset(store, load_dataset(DEMO), progress=False)
    models = [
        train_demo_model(settings, tmp_path / name, epochs=3, dim=8, eval_every=3)
        for name in ("a", "b")
    ]
    registry_with(settings, models)
    plane = DataPlane(settings)
    try:
        assert plane.writeback is not None
        for version in ("v0001", "v0002"):
            plane.versions.activate(version)
            assert plane.writeback.wait_idle(timeout=HANG_GUARD_S), "write-back never finished"
            assert plane.writeback.last_error == ""
            assert {v for *_, v in store.predicted_links()} == {version}
            assert len(store.predicted_links()) == 7
            labels = store._query("MATCH (r:KGWEAVE_Relation) RETURN DISTINCT r.model_version")
            assert labels == [[version]]
    finally:
        plane.close()
