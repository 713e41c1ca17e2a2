"""LLM-driven completion through the real server: a jointly trained demo model (real MiniLM
text vectors, small LM), Complete over gRPC, suggested links written to the embedded graph."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from joint_support import TINY_JOINT
from kgweave.artifact import load_artifact
from kgweave.cli.main import main
from kgweave.data import load_dataset
from kgweave.graph.embedded import EmbeddedFalkorDB
from kgweave.graph.sync import import_dataset
from kgweave.language.features.text_fusion import FusedScorer
from kgweave.language.joint.artifact import load_text_fusion
from kgweave.language.joint.config import JointConfig
from kgweave.language.joint.pipeline import train_joint
from kgweave.predict import LinkPredictor, Query
from kgweave.serving.served import ServedModel
from kgweave.settings import Settings, get_settings
from kgweave.v1 import admin_pb2, admin_pb2_grpc, knowledge_pb2, knowledge_pb2_grpc
from serving_support import HANG_GUARD_S, ServerThread, serve_model

DEMO = Path(__file__).resolve().parent.parent / "server" / "kgweave" / "demo"
#: larger than the tiny run: completion through the server has to find real answers
SMALL = {
    **TINY_JOINT,
    "kge": {"dim": 32, "epochs": 20, "eval_every": 5},
    "lm_epochs": 3,
    "vocab_size": 800,
}


@pytest.fixture(scope="module")
def joint_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("joint") / "model"
    settings = Settings(data_dir=out.parent / "data", device="cpu", offline=True)
    demo = load_dataset(DEMO, name="demo")
    train_joint(demo, JointConfig.model_validate(SMALL), out, settings, progress=False)
    return out


@pytest.fixture
def served(joint_model: Path) -> Iterator[ServerThread]:
    yield from serve_model(joint_model)
    EmbeddedFalkorDB(get_settings().graph_dir).stop()


def test_complete_returns_scored_candidates_and_writes_suggestions(served: ServerThread) -> None:
    channel = grpc.insecure_channel(served.address)
    knowledge = knowledge_pb2_grpc.KnowledgeServiceStub(channel)
    query = knowledge_pb2.LinkQuery(head="Alan Turing", relation="born_in")
    reply = knowledge.Complete(
        knowledge_pb2.CompleteRequest(query=query, k=5, kge_candidates=20, generate=True),
        timeout=HANG_GUARD_S,
    )
    assert reply.model_version == "v0001" and len(reply.candidates) == 5
    assert [c.rank for c in reply.candidates] == [1, 2, 3, 4, 5]
    combined = [c.combined_score for c in reply.candidates]
    assert combined == sorted(combined, reverse=True)
    # the joint model carries a text fusion: the graph side is the fused score, not the KGE's
    assert any(c.graph_score != c.kge_score for c in reply.candidates)
    # the served completer gives the same answers, each combined from its three signals
    completer, _ = served.service.versions.active().completer(None)
    w = completer.weights
    assert w.w_text is not None and reply.w_kge == pytest.approx(w.w_kge, rel=1e-6)
    mine = completer.complete(Query("born_in", head="Alan Turing"), k=5)
    assert [a.entity for a in mine] == [c.entity_id for c in reply.candidates]
    for a, c in zip(mine, reply.candidates, strict=True):
        lm = a.lm_logprob - (a.lm_marginal if w.lm_feature == "pmi" else 0.0)
        expected = w.w_kge * a.kge_score + w.w_text * a.graph_score + w.w_lm * lm + w.bias
        assert a.combined == pytest.approx(expected, rel=1e-6)
        assert c.combined_score == pytest.approx(a.combined, rel=1e-4, abs=1e-4)
        assert c.source in ("kge", "lm", "kge+lm")
        assert c.evidence.startswith("Alan Turing was born in ") and c.name in c.evidence
    # write the accepted candidates to the (embedded) graph as suggested links
    store = served.service.graph_store()
    import_dataset(store, load_dataset(DEMO, name="demo"), progress=False)
    facts_before = store.counts()["triples"]
    written = knowledge.Complete(
        knowledge_pb2.CompleteRequest(
            query=query, k=3, write_to_graph=True, min_score=-1e9, generate=False
        ),
        timeout=HANG_GUARD_S,
    )
    fresh = [c for c in written.candidates if not c.known]
    assert written.written == len(fresh) > 0
    links = store.suggested_links()  # type: ignore[attr-defined]
    assert {(h, r, t) for h, r, t, _, _ in links} == {
        ("alan_turing", "born_in", c.entity_id) for c in fresh
    }
    assert all(v == "v0001" for *_, v in links)
    assert store.counts()["triples"] == facts_before  # suggestions are not facts
    channel.close()


def test_predict_links_rank_by_the_text_fusion(
    served: ServerThread,
    joint_model: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    channel = grpc.insecure_channel(served.address)
    knowledge = knowledge_pb2_grpc.KnowledgeServiceStub(channel)
    queries = [Query("born_in", head="Alan Turing"), Query("citizen_of", tail="France")]
    request = knowledge_pb2.PredictLinksRequest(
        queries=[
            knowledge_pb2.LinkQuery(head=q.head or "", relation=q.relation, tail=q.tail or "")
            for q in queries
        ],
        k=7,
    )
    reply = knowledge.PredictLinks(request, timeout=HANG_GUARD_S)
    artifact = load_artifact(joint_model)
    fusion = load_text_fusion(joint_model, artifact)
    assert fusion is not None
    expected = LinkPredictor(artifact, scorer=FusedScorer(fusion, artifact.model)).predict(
        queries, k=7
    )
    plain = LinkPredictor(artifact).predict(queries, k=7)
    for got, want, kge in zip(reply.results, expected, plain, strict=True):
        assert [c.entity_id for c in got.candidates] == [p.entity for p in want]
        for c, p in zip(got.candidates, want, strict=True):
            assert c.score == pytest.approx(p.score, rel=1e-5, abs=1e-5)
        assert [c.score for c in got.candidates] != pytest.approx([p.score for p in kge])
    # the model listing shows what the fusion reached beside the embeddings' own metrics
    admin = admin_pb2_grpc.AdminServiceStub(channel)
    listed = admin.ListModels(admin_pb2.ListModelsRequest(), timeout=HANG_GUARD_S).models[0]
    recorded = load_artifact(joint_model).config["metrics"]["text_fusion"]
    assert listed.fused_test_metrics["mrr"] == pytest.approx(recorded["test"]["mrr"])
    assert listed.fused_valid_metrics["mrr"] == pytest.approx(recorded["valid_mrr"])
    assert listed.test_metrics["mrr"] != pytest.approx(listed.fused_test_metrics["mrr"])
    # ... and so does `kgweave models list`
    monkeypatch.setenv("KGWEAVE_SERVER", served.address)
    assert main(["models", "list"]) == 0
    header, row = capsys.readouterr().out.splitlines()[:2]
    assert "fused test" in header and f"{listed.fused_test_metrics['mrr']:.4f}" in row
    # the setting turns it off: the embeddings alone rank
    alone = ServedModel.load("x", joint_model, "cpu", text_fusion=False)
    assert alone.predictor.fused is None
    assert [p.entity for p in alone.predictor.predict(queries[:1], k=7)[0]] == [
        p.entity for p in plain[0]
    ]
    channel.close()


def _assert_columns(out: str, fused: bool) -> None:
    """A header over the columns of `kgweave complete`'s text, aligned with them."""
    lines = out.splitlines()
    assert lines[0].startswith("combined = ")
    header, first, evidence = lines[1:4]
    names = ["rank", "combined", "kge", *(["graph"] if fused else []), "lm", "source"]
    assert header.split()[: len(names)] == names, header
    assert first.split()[0] == "1."
    for name in names[1:-1]:  # each number ends where its column's name ends
        end = header.index(name) + len(name)
        assert first[end - 1].isdigit() and first[end] == " ", (name, header, first)
    start = header.index("entity")  # the entity's name starts under "entity"
    assert first[start - 1] == " " and first[start] != " ", (header, first)
    assert evidence.strip().startswith("Alan Turing was born in ")


def test_complete_cli_text_has_column_headers(
    served: ServerThread,
    joint_model: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`kgweave complete` prints a header over its columns, the same in-process on a model
    folder and from the server (the data plane serves both: the joint model's text fusion adds
    the graph column in each)."""
    args = ["complete", "--head", "Alan Turing", "--relation", "born_in", "-k", "3"]
    assert main([*args, str(joint_model)]) == 0
    _assert_columns(capsys.readouterr().out, fused=True)
    monkeypatch.setenv("KGWEAVE_SERVER", served.address)
    assert main(args) == 0
    _assert_columns(capsys.readouterr().out, fused=True)


def test_complete_errors(served: ServerThread, demo_model_without_lm: Path) -> None:
    channel = grpc.insecure_channel(served.address)
    knowledge = knowledge_pb2_grpc.KnowledgeServiceStub(channel)
    bad = [
        (knowledge_pb2.LinkQuery(head="Alan Turing", relation="born_in", tail="london"),
         grpc.StatusCode.INVALID_ARGUMENT),
        (knowledge_pb2.LinkQuery(head="Nobody Atall", relation="born_in"),
         grpc.StatusCode.NOT_FOUND),
        (knowledge_pb2.LinkQuery(head="Alan Turing", relation="bornn_in"),
         grpc.StatusCode.NOT_FOUND),
    ]  # fmt: skip
    for query, code in bad:
        with pytest.raises(grpc.RpcError) as info:
            knowledge.Complete(knowledge_pb2.CompleteRequest(query=query), timeout=HANG_GUARD_S)
        assert info.value.code() == code, info.value.details()
    with pytest.raises(grpc.RpcError) as info:
        knowledge.Complete(
            knowledge_pb2.CompleteRequest(
                query=knowledge_pb2.LinkQuery(head="Alan Turing", relation="born_in"), k=500
            )
        )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    # a version without a language model: FAILED_PRECONDITION saying how to get one
    service = served.service
    shutil.copytree(demo_model_without_lm, service.versions.registry.root / "v0002")
    service.versions.activate("v0002")
    with pytest.raises(grpc.RpcError) as info:
        knowledge.Complete(
            knowledge_pb2.CompleteRequest(
                query=knowledge_pb2.LinkQuery(head="Alan Turing", relation="born_in")
            )
        )
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "kgweave train --joint" in info.value.details()
    channel.close()


@pytest.fixture(scope="module")
def demo_model_without_lm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from serving_support import train_demo_model

    root = tmp_path_factory.mktemp("plain")
    return train_demo_model(
        Settings(data_dir=root / "data", device="cpu"), root / "m", epochs=5, dim=16
    )


def test_changes_to_a_joint_model_are_served_at_once_and_retrained_jointly(
    served: ServerThread,
) -> None:
    """A served joint model's changes are applied at once (known, listed), nothing says
    updates skip them (an update carries the language side: test_joint_update.py), and its
    full retrain is a joint training."""
    import json

    from serving_support import wait_until

    plane = served.service
    applier = plane.changes.start_applying()
    watcher = plane.changes.start_retraining(None)  # (no graph: no snapshot diff)
    fact = {"kind": "triple_added", "head": "alan_turing", "relation": "born_in", "tail": "paris"}
    assert plane.changes.receive(json.dumps({"source": "test", "events": [fact]}).encode()) == 1
    wait_until(lambda: applier.overlay.next_offset == 1, "the change applied")
    served_now = plane.versions.active()
    assert served_now.version == "v0001@1" and "joint" in served_now.artifact.config
    with grpc.insecure_channel(served.address) as channel:
        reply = knowledge_pb2_grpc.KnowledgeServiceStub(channel).GetEntity(
            knowledge_pb2.GetEntityRequest(entity="alan_turing", max_facts=100),
            timeout=HANG_GUARD_S,
        )
    facts = {(f.head, f.relation, f.tail) for f in reply.facts}
    assert ("alan_turing", "born_in", "paris") in facts
    assert not watcher.state.updates_skipped
    assert watcher._training_config()["joint"] is True
