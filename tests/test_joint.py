"""Joint KG-LM training: one run on the demo graph writes one artifact that loads back."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from joint_support import TINY_JOINT
from kgweave.artifact import load_artifact
from kgweave.data import load_dataset
from kgweave.data.sources import demo_path
from kgweave.errors import ArtifactError, InvalidArgumentError, NotFoundError
from kgweave.language.features.lexical_links import LexicalLinks
from kgweave.language.features.text_fusion import FusedScorer, TextFusion
from kgweave.language.joint.artifact import load_joint, load_text_fusion
from kgweave.language.joint.config import JointConfig
from kgweave.language.joint.pipeline import train_joint
from kgweave.predict import Query
from kgweave.settings import Settings


@pytest.fixture(scope="module")
def joint_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    demo = load_dataset(demo_path(), name="demo")
    # precomputed text vectors (the MiniLM encoder is exercised by the encoder's own tests)
    text = torch.randn(demo.num_entities, 24, generator=torch.Generator().manual_seed(0))
    out = tmp_path_factory.mktemp("joint") / "model"
    result = train_joint(
        demo,
        JointConfig.model_validate(TINY_JOINT),
        out,
        Settings(device="cpu", offline=True),
        progress=False,
        text_vectors=text,
        extra={"source": "graph", "fixed_valid": {"fingerprint": "f00d", "triples": 26}},
    )
    assert result.path == out
    assert len(result.kge_history) == 8 and len(result.lm_history) == 2
    assert {"valid", "test", "lm", "text_fusion"} <= set(result.metrics)
    fused = result.metrics["text_fusion"]
    assert 0 < fused["valid_mrr"] <= 1 and 0 < fused["test"]["mrr"] <= 1
    lm = result.metrics["lm"]
    assert lm["entity_fusion"] is True
    assert 0 < lm["valid_loss"] < 20 and 0 < lm["valid_loss_text_alone"] < 20
    return out


def test_joint_run_writes_one_artifact_that_loads_back(joint_folder: Path) -> None:
    language = joint_folder / "language"
    for name in ("config.json", "model.safetensors", "id_maps.json"):
        assert (joint_folder / name).is_file()
    for name in (
        "model.safetensors",
        "tokenizer.json",
        "fusion.safetensors",
        "text.safetensors",
        "text_fusion.json",
    ):
        assert (language / name).is_file()
    assert not list(joint_folder.rglob("*.bin")) and not list(joint_folder.rglob("*.pt"))
    # the KGE part is a normal artifact, the text-enhanced table baked in
    artifact = load_artifact(joint_folder)
    # a job's own config (the fixed set a training on the graph is judged on) kept whole
    assert artifact.config["fixed_valid"] == {"fingerprint": "f00d", "triples": 26}
    assert artifact.config["source"] == "graph" and "joint" in artifact.config
    joint = load_joint(joint_folder)
    torch.testing.assert_close(joint.artifact.model.entity.weight, artifact.model.entity.weight)
    enhanced = joint.structural + joint.text_projection(joint.text_vectors)
    torch.testing.assert_close(enhanced.detach(), artifact.model.entity.weight, atol=1e-5, rtol=0)
    assert joint.text_vectors.shape == (len(artifact.entities), 24)
    torch.testing.assert_close(joint.fused.entities.weight, artifact.model.entity.weight)
    assert joint.config["files"]  # sha256 of every part
    # the text fusion comes back with the weights fitted on validation
    assert joint.text_fusion is not None
    stored = json.loads((language / "text_fusion.json").read_text())
    torch.testing.assert_close(joint.text_fusion.weights, torch.tensor(stored["weights"]))
    assert not torch.equal(joint.text_fusion.weights, joint.text_fusion.initial_weights())
    served_fusion = load_text_fusion(joint_folder, artifact)  # without the LM, for serving
    assert served_fusion is not None
    torch.testing.assert_close(served_fusion.weights, joint.text_fusion.weights)
    torch.testing.assert_close(served_fusion.vectors, joint.text_fusion.vectors)
    too_small = TextFusion(
        torch.randn(3, 8),
        LexicalLinks(["x", "y", "z"], [None, None, None]),
        torch.zeros(0, 3, dtype=torch.long),
        len(artifact.relations),
    )
    with pytest.raises(InvalidArgumentError, match="cannot rank a model"):
        FusedScorer(too_small, artifact.model)
    # the loaded parts answer a completion query with the fitted weights, the LM scoring with
    # the entity fusion it was trained with (as the weights were fitted)
    assert joint.config["fusion"]["scoring"] is True
    assert joint.scoring_fusion is joint.fused
    assert joint.completer().scorer.fusion is joint.fused
    assert joint.completion_weights.method == "logistic"
    answers = joint.completer().complete(Query("born_in", head="Marie Curie"), k=3)
    assert len(answers) == 3
    w = joint.completion_weights
    entity = joint.artifact.entities.index["marie_curie"]
    relation = joint.artifact.relations.index["born_in"]
    fused = joint.text_fusion.scores(joint.artifact.model, torch.tensor([[entity, relation]]))[0]
    for a in answers:
        lm = a.lm_logprob - (a.lm_marginal if w.lm_feature == "pmi" else 0.0)
        text = (w.w_text or 0.0) * a.graph_score  # three signals: KGE, text-fused, LM
        assert a.combined == pytest.approx(w.w_kge * a.kge_score + text + w.w_lm * lm + w.bias)
        # the graph score is the text-fused score of the candidate
        assert a.graph_score == pytest.approx(
            float(fused[joint.artifact.entities.index[a.entity]]), abs=1e-5
        )


def test_the_entity_fusion_ablation_trains_and_scores_text_alone(
    joint_folder: Path, tmp_path: Path
) -> None:
    """``entity_fusion: false``: the LM is fine-tuned on the facts' text alone (the fusion's
    projection never trains) and completion scores without it; an artifact written before
    the fusion scored (no ``scoring`` key) scores text alone as its weights were fitted."""
    from safetensors.torch import load_file

    demo = load_dataset(demo_path(), name="demo")
    text = torch.randn(demo.num_entities, 24, generator=torch.Generator().manual_seed(0))
    out = tmp_path / "ablation"
    config = JointConfig.model_validate(
        {**TINY_JOINT, "entity_fusion": False, "completion_fit_triples": 3}
    )
    settings = Settings(device="cpu", offline=True)
    result = train_joint(demo, config, out, settings, progress=False, text_vectors=text)
    lm = result.metrics["lm"]
    assert lm["entity_fusion"] is False and "valid_loss_text_alone" not in lm
    assert 0 < lm["valid_loss"] < 20
    fit = result.metrics["completion"]  # a head and a tail query of each of 3 facts
    assert 1 <= fit["queries"] + fit["queries_answer_outside_top_n"] <= 6
    assert not load_file(out / "language" / "fusion.safetensors")["project.bias"].any()
    trained = load_file(joint_folder / "language" / "fusion.safetensors")["project.bias"]
    assert trained.any()  # the fused run's projection did train
    joint = load_joint(out)
    assert joint.config["fusion"]["scoring"] is False and joint.scoring_fusion is None
    assert joint.completer().scorer.fusion is None
    older = _copy(joint_folder, tmp_path / "older")
    config_path = older / "language" / "joint.json"
    stored = json.loads(config_path.read_text())
    del stored["fusion"]["scoring"]
    config_path.write_text(json.dumps(stored))
    assert load_joint(older).scoring_fusion is None


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_corrupt_or_missing_parts_are_refused(joint_folder: Path, tmp_path: Path) -> None:
    broken = _copy(joint_folder, tmp_path / "corrupt")
    data = bytearray((broken / "language" / "text.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (broken / "language" / "text.safetensors").write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=r"text\.safetensors: checksum mismatch"):
        load_joint(broken)

    missing = _copy(joint_folder, tmp_path / "missing")
    (missing / "language" / "fusion.safetensors").unlink()
    with pytest.raises(ArtifactError, match=r"missing fusion\.safetensors"):
        load_joint(missing)

    unfinished = _copy(joint_folder, tmp_path / "unfinished")
    (unfinished / "language" / "joint.json").unlink()
    with pytest.raises(ArtifactError, match=r"missing joint\.json"):
        load_joint(unfinished)

    lm_weights = _copy(joint_folder, tmp_path / "lm")
    (lm_weights / "language" / "model.safetensors").write_bytes(b"not weights")
    with pytest.raises(ArtifactError, match="checksum mismatch"):
        load_joint(lm_weights)

    kge_only = _copy(joint_folder, tmp_path / "kge-only")
    shutil.rmtree(kge_only / "language")
    with pytest.raises(NotFoundError, match="no joint language part"):
        load_joint(kge_only)
    assert load_text_fusion(kge_only, load_artifact(kge_only)) is None

    fusion_edited = _copy(joint_folder, tmp_path / "fusion-edited")
    stored = json.loads((fusion_edited / "language" / "text_fusion.json").read_text())
    stored["weights"][0][0] = 9.0
    (fusion_edited / "language" / "text_fusion.json").write_text(json.dumps(stored))
    for load in (load_joint, lambda p: load_text_fusion(p, load_artifact(p))):
        with pytest.raises(ArtifactError, match=r"text_fusion\.json: checksum mismatch"):
            load(fusion_edited)

    edited = _copy(joint_folder, tmp_path / "edited")
    config = json.loads((edited / "language" / "joint.json").read_text())
    config["format"] = "something-else"
    (edited / "language" / "joint.json").write_text(json.dumps(config))
    with pytest.raises(ArtifactError, match="not a kgweave joint config"):
        load_joint(edited)

    with pytest.raises(NotFoundError, match="does not exist"):
        load_joint(tmp_path / "nowhere")


def test_time_budgets_bound_both_halves_of_a_joint_run(tmp_path: Path) -> None:
    """`--time-budget` bounds the text-enhanced KGE training (validated at the cut, bf16
    autocast on), `lm_time_budget_s` the LM. A budget spent by the first step stops each half
    after that step, whatever the machine's speed: one epoch row each, not 5000 / 500."""
    demo = load_dataset(demo_path(), name="demo")
    text = torch.randn(demo.num_entities, 24, generator=torch.Generator().manual_seed(0))
    config = JointConfig.model_validate(
        {
            **TINY_JOINT,
            "kge": {"dim": 16, "epochs": 5000, "eval_every": 1000, "precision": "bf16",
                    "time_budget_s": 1e-9},
            "lm_epochs": 500,
            "lm_time_budget_s": 1e-9,
            "fit_completion": False,
        }
    )  # fmt: skip
    stale = tmp_path / "m" / "language" / "adapter_model.safetensors"  # an earlier run's
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"adapters of another run")
    result = train_joint(
        demo, config, tmp_path / "m", Settings(device="cpu", offline=True), False, text
    )
    assert not stale.exists()
    kge, lm = result.kge_history, result.lm_history
    assert len(kge) == 1 and "valid_mrr" in kge[0] and math.isfinite(kge[0]["loss"])
    assert len(lm) == 1 and lm[0]["tokens"] > 0 and math.isfinite(lm[0]["loss"])
    assert load_joint(tmp_path / "m").config["config"]["lm_time_budget_s"] == 1e-9


def test_a_run_without_a_test_split_records_no_test_metrics(tmp_path: Path) -> None:
    """A graph's snapshot (`kgweave train --remote --joint`) has no test split: the version's
    test metrics and its text fusion's are absent (`models list` shows "-"), not an MRR of 0
    over no facts."""
    from dataclasses import replace

    from kgweave.serving.registry import ModelRegistry

    demo = load_dataset(demo_path(), name="demo")
    graph = replace(demo, splits={**demo.splits, "test": demo.split("test")[:0]})
    text = torch.randn(demo.num_entities, 24, generator=torch.Generator().manual_seed(0))
    config = JointConfig.model_validate({**TINY_JOINT, "fit_completion": False})
    result = train_joint(
        graph, config, tmp_path / "m", Settings(device="cpu", offline=True), False, text
    )
    assert result.metrics["test"] == {} and result.metrics["text_fusion"]["test"] == {}
    assert result.metrics["valid"]["mrr"] > 0
    summary = ModelRegistry(tmp_path / "models").register(tmp_path / "m").summary(False)
    assert summary["test_metrics"] == {} and summary["fused_test_metrics"] == {}


def test_held_out_facts_never_reach_the_lm_corpus(datasets_dir: Path) -> None:
    """The LM trains on the verbalized training facts only: no validation or test fact's
    sentence is in the corpus (unless a training fact says the very same)."""
    from kgweave.language.features.verbalize import Verbalizer
    from kgweave.language.joint.pipeline import fact_corpus

    umls = load_dataset(datasets_dir / "umls", name="umls")
    verbalizer = Verbalizer.from_dataset(umls)
    texts, mentions = fact_corpus(umls, verbalizer)
    assert len(texts) == len(mentions) == len(umls.train)
    ents, rels = umls.entities.labels, umls.relations.labels
    train = {tuple(t) for t in umls.train.tolist()}
    corpus = set(texts)
    held_out = [
        verbalizer.triple(ents[h], rels[r], ents[t])
        for split in ("valid", "test")
        for h, r, t in umls.split(split).tolist()
        if (h, r, t) not in train
    ]
    assert held_out and not corpus & set(held_out)


def test_a_missing_default_lm_fails_before_training_and_says_how_to_fetch(tmp_path: Path) -> None:
    """Offline with the default LM not fetched: the run stops at once (not after the KGE half)
    with the command that fetches it, and writes nothing."""
    from kgweave.errors import FailedPreconditionError

    demo = load_dataset(demo_path(), name="demo")
    config = JointConfig.model_validate(
        {k: v for k, v in TINY_JOINT.items() if k != "language_model"}
    )
    settings = Settings(data_dir=tmp_path / "data", device="cpu", offline=True)
    with pytest.raises(FailedPreconditionError, match="run `kgweave lm fetch`"):
        train_joint(demo, config, tmp_path / "m", settings, progress=False)
    assert not (tmp_path / "m").exists()
