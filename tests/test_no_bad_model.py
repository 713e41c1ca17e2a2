"""No bad model is ever served (issue 16): diverged runs fail, versions are compared only when
alike, and a damaged ``active.json`` never serves an arbitrary version."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from kgweave import atomic
from kgweave.artifact import save_artifact
from kgweave.cli.main import main
from kgweave.data import KGDataset, load_dataset
from kgweave.dataplane import DataPlane
from kgweave.engine import evaluate_on, open_dataset
from kgweave.errors import DivergedError, FailedPreconditionError
from kgweave.models import DistMult
from kgweave.serving.activation import POLICIES, decide
from kgweave.serving.registry import ModelRegistry, ModelVersion
from kgweave.settings import get_settings
from kgweave.training import TrainConfig, train


@pytest.fixture(scope="module")
def nations(datasets_dir: Path):  # type: ignore[no-untyped-def]
    return load_dataset(datasets_dir / "nations")


# ---- non-finite scores fail the evaluation


def test_nan_model_is_not_evaluated_as_mrr_2(nations) -> None:  # type: ignore[no-untyped-def]
    """Regression: NaN scores compare false both ways, so every target ranked 0.5 (MRR 2.0,
    hits@1 1.0) and the diverged model beat every other under ``if_better``."""
    model = DistMult(nations.num_entities, 2 * nations.num_relations, 8)
    with torch.no_grad():
        model.entity.weight[0, 0] = float("nan")
    with pytest.raises(DivergedError, match="scores are NaN or infinite"):
        evaluate_on(model, nations, "valid")
    with torch.no_grad():
        model.entity.weight[0, 0] = float("inf")
    with pytest.raises(DivergedError):
        evaluate_on(model, nations, "valid")


def test_diverging_training_fails_with_the_epoch_and_loss(nations) -> None:  # type: ignore[no-untyped-def]
    config = TrainConfig(model="distmult", dim=8, epochs=10, lr=1e30, eval_every=5)
    with pytest.raises(DivergedError, match=r"training diverged at epoch \d+: the loss is"):
        train(nations, config, device="cpu", progress=False)


def test_local_train_with_diverging_lr_exits_non_zero_and_writes_no_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Regression: ``kgweave train --lr 1e30`` wrote an artifact with metrics as if good."""
    out = tmp_path / "m"
    args = ["-d", "nations", "-m", "distmult", "-o", str(out), "--epochs", "10", "--dim", "8"]
    code = main(["train", *args, "--lr", "1e30", "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == DivergedError.exit_code
    assert err.splitlines()[-1].startswith("error: training diverged at epoch"), err
    assert "Traceback" not in err
    assert not (out / "config.json").exists()


# ---- if_better compares only versions measured alike


def _artifact(
    folder: Path, dataset: KGDataset, mrr: float, training: dict[str, Any] | None = None
) -> Path:
    """A real artifact of an untrained model with the given validation MRR."""
    torch.manual_seed(0)
    model = DistMult(dataset.num_entities, 2 * dataset.num_relations, 8)
    return save_artifact(folder, model, dataset, training or {}, {"valid": {"mrr": mrr}})


@pytest.fixture
def registry(tmp_path: Path) -> ModelRegistry:
    return ModelRegistry(tmp_path / "models")


def test_if_better_refuses_a_version_trained_on_other_data(  # type: ignore[no-untyped-def]
    registry: ModelRegistry, tmp_path: Path, nations
) -> None:
    """Regression (issue 16): a job on another dataset replaced the served graph's model
    because its validation MRR, measured on other data, was higher."""
    demo = open_dataset("demo", get_settings())
    served = registry.register(_artifact(tmp_path / "a", demo, 0.30))
    other = registry.register(_artifact(tmp_path / "b", nations, 0.90))
    activate, why = decide("if_better", other, served)
    assert not activate
    assert "not comparable, v0002 was trained on other data (nations" in why
    assert "kgweave models activate v0002" in why
    # the other policies do not compare
    assert decide("always", other, served)[0] and not decide("never", other, served)[0]


def test_if_better_refuses_a_version_validated_on_other_triples(  # type: ignore[no-untyped-def]
    registry: ModelRegistry, tmp_path: Path, nations
) -> None:
    served = registry.register(_artifact(tmp_path / "a", nations, 0.30))
    sampled = registry.register(_artifact(tmp_path / "b", nations, 0.90, {"valid_sample": 50}))
    activate, why = decide("if_better", sampled, served)
    assert not activate and "v0002 was validated on other triples (50" in why
    alike = registry.register(_artifact(tmp_path / "c", nations, 0.31))
    assert decide("if_better", alike, served) == (
        True,
        "activated: validation MRR 0.3100 beats 0.3000",
    )
    assert not decide("if_better", served, alike)[0]


def test_if_better_does_not_compare_with_a_format_1_version(  # type: ignore[no-untyped-def]
    registry: ModelRegistry, tmp_path: Path, nations
) -> None:
    served = registry.register(_artifact(tmp_path / "a", nations, 0.30))
    new = registry.register(_artifact(tmp_path / "b", nations, 0.90))
    legacy = ModelVersion(served.version, served.path, json.loads(json.dumps(served.config)))
    del legacy.config["dataset"]["valid_fingerprint"]
    activate, why = decide("if_better", new, legacy)
    assert not activate and "v0001 records no validation fingerprint (artifact format 1" in why


def test_policy_names_live_in_one_place() -> None:
    from kgweave.api import convert
    from kgweave.serving import versions

    assert POLICIES == ("if_better", "always", "never")
    assert versions.POLICIES is POLICIES and set(convert.POLICY_TO_PB) == set(POLICIES)
    with pytest.raises(ValueError, match="use one of if_better, always, never"):
        decide("sometimes", None, None)  # type: ignore[arg-type]


# ---- a damaged active.json never serves an arbitrary version


def _three_versions(registry: ModelRegistry, tmp_path: Path, dataset: KGDataset) -> None:
    """v0001 and v0002 activated in turn, then v0003 registered with the policy never."""
    for i, policy in enumerate(("always", "always", "never"), start=1):
        version = registry.register(_artifact(tmp_path / f"m{i}", dataset, 0.1 * i), policy)
        if policy != "never":
            registry.set_active(version.version)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("", "is empty"),
        ('{"version": "v00', "is not valid JSON"),
        ("[1, 2]", "names no version"),
        ('{"version": "v0009"}', "names v0009, which does not exist"),
    ],
)
def test_damaged_active_json_falls_back_to_the_last_known_good_not_the_newest(  # type: ignore[no-untyped-def]
    registry: ModelRegistry,
    tmp_path: Path,
    nations,
    caplog: pytest.LogCaptureFixture,
    content: str,
    problem: str,
) -> None:
    """Regression (issue 16): an empty or corrupt active.json served the newest version, even
    one registered with the policy never."""
    _three_versions(registry, tmp_path, nations)
    (registry.root / "active.json").write_text(content)
    with caplog.at_level(logging.WARNING):
        assert registry.choose_active() == "v0002"
    assert f"active.json {problem}: serving v0002, the last version activated before" in (
        caplog.text
    )


def test_fallback_skips_activated_versions_that_are_gone(  # type: ignore[no-untyped-def]
    registry: ModelRegistry, tmp_path: Path, nations
) -> None:
    _three_versions(registry, tmp_path, nations)
    shutil.rmtree(registry.root / "v0002")  # active.json now names a missing version
    assert registry.active_version() is None
    assert registry.choose_active() == "v0001"


def test_damaged_active_json_without_a_record_is_a_clear_error(  # type: ignore[no-untyped-def]
    registry: ModelRegistry, tmp_path: Path, nations
) -> None:
    registry.register(_artifact(tmp_path / "a", nations, 0.3))
    (registry.root / "active.json").write_text("{")
    with pytest.raises(
        FailedPreconditionError, match=r'active\.json is not valid JSON and no earlier .*"version"'
    ):
        registry.choose_active()


def test_never_activated_registry_serves_its_newest_but_not_a_never_version(  # type: ignore[no-untyped-def]
    registry: ModelRegistry, tmp_path: Path, nations
) -> None:
    registry.register(_artifact(tmp_path / "a", nations, 0.3), "if_better")
    registry.register(_artifact(tmp_path / "b", nations, 0.3), "never")
    assert registry.choose_active() == "v0001"
    (registry.root / "journal.json").unlink()  # a registry made by hand: the newest
    assert registry.choose_active() == "v0002"


def test_service_start_serves_the_known_good_version_and_repairs_active_json(  # type: ignore[no-untyped-def]
    tmp_path: Path, nations
) -> None:
    settings = get_settings()
    registry = ModelRegistry(settings.models_dir)
    _three_versions(registry, tmp_path, nations)
    (registry.root / "active.json").write_text("")
    service = DataPlane(settings)
    try:
        served = service.versions.load_active()
        assert served is not None and served.version == "v0002"
        assert registry.active_version() == "v0002"
    finally:
        service.close()


# ---- durable writes


def test_atomic_write_fsyncs_file_and_folder_and_leaves_nothing_on_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    target = tmp_path / "state.json"
    atomic.write_json(target, {"a": 1})
    assert json.loads(target.read_text()) == {"a": 1}
    assert synced[-1] == str(tmp_path) and synced[-2].startswith(str(tmp_path / ".state.json."))
    with pytest.raises(RuntimeError), atomic.open_atomic(target) as handle:
        handle.write("half")
        raise RuntimeError("writer died")
    assert json.loads(target.read_text()) == {"a": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_a_fixed_set_drop_within_its_noise_is_not_a_regression(tmp_path: Path) -> None:
    """An incremental update is judged against its base in one run, with the standard error
    of the difference: on a small fixed set a drop must exceed the noise as well as the
    tolerance (``noise_z`` standard errors) to refuse it."""
    base = ModelVersion("v0001", tmp_path, {})

    def update(mrr: float, se: float | None) -> ModelVersion:
        fixed = {"mrr": mrr, "base_mrr": 0.55, "base_version": "v0001", "triples": 26,
                 "fingerprint": "f", "difference_se": se}  # fmt: skip
        return ModelVersion("v0002", tmp_path, {"fixed_valid": fixed})

    # 0.015 below, the noise 2 x 0.01: one query's rank, activated
    activate, why = decide("if_better", update(0.535, 0.01), base)
    assert activate and why == (
        "activated: MRR on the fixed validation set 0.5350 vs v0001's 0.5500 "
        "(tolerance 0.01, noise 0.0200 on 26 facts)"
    )
    # the same drop, judged by the tolerance alone
    assert not decide("if_better", update(0.535, 0.01), base, noise_z=0)[0]
    assert not decide("if_better", update(0.535, None), base)[0]
    # a drop beyond the noise, and one beyond the tolerance on a precise (large) set
    activate, why = decide("if_better", update(0.50, 0.01), base)
    assert not activate and why.endswith("0.0500 below v0001's 0.5500 (tolerance 0.01, "
                                         "noise 0.0200 on 26 facts)")  # fmt: skip
    activate, why = decide("if_better", update(0.535, 0.001), base)
    assert not activate and why.endswith("(tolerance 0.01)")


def test_a_chain_of_updates_may_not_drift_below_its_full_training(tmp_path: Path) -> None:
    """Each update is judged against the version it replaces and against the full training
    its chain descends from (its anchor): drops within the margin cannot add up."""
    active = ModelVersion("v0003", tmp_path, {})

    def update(mrr: float) -> ModelVersion:
        fixed = {"mrr": mrr, "base_mrr": 0.54, "base_version": "v0003", "triples": 26,
                 "fingerprint": "f", "difference_se": 0.01, "anchor_version": "v0001",
                 "anchor_mrr": 0.555}  # fmt: skip
        return ModelVersion("v0004", tmp_path, {"fixed_valid": fixed})

    assert decide("if_better", update(0.54), active)[0]  # 0.015 below v0001: within 0.02
    activate, why = decide("if_better", update(0.53), active)  # 0.010 below v0003 only
    assert not activate and why == (
        "not activated: MRR on the fixed validation set 0.5300 is 0.0250 below v0001's 0.5550, "
        "the full training its updates descend from; a full retrain starts over "
        "(tolerance 0.01, noise 0.0200 on 26 facts)"
    )
