"""No bad model is ever served (issue 16): diverged runs fail, versions are compared only when
alike, and a damaged ``active.json`` never serves an arbitrary version."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from kgweave.cli.main import main
from kgweave.data import load_dataset
from kgweave.engine import evaluate_on
from kgweave.errors import DivergedError
from kgweave.models import DistMult
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
