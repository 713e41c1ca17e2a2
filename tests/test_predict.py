"""Link prediction's bf16 candidate search gives the fp32 answers, with fp32 scores."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from kgweave.artifact import load_artifact
from kgweave.engine import ArtifactOutput, open_dataset, train_model
from kgweave.predict import LinkPredictor, resolve_score_precision
from kgweave.settings import get_settings
from kgweave.training import TrainConfig


@pytest.fixture(scope="module")
def umls_model(tmp_path_factory: pytest.TempPathFactory, datasets_dir: Path) -> Path:
    out = tmp_path_factory.mktemp("umls") / "model"
    settings = get_settings().model_copy(update={"datasets_dir": datasets_dir})
    dataset = open_dataset("umls", settings)
    output = ArtifactOutput(out, evaluate_test=False)
    train_model(dataset, TrainConfig(epochs=20, dim=64), output, settings, progress=False)
    return out


@pytest.mark.parametrize("filter_known", [False, True])
def test_bf16_candidates_rescored_match_fp32(umls_model: Path, filter_known: bool) -> None:
    artifact = load_artifact(umls_model)
    exact = LinkPredictor(artifact, precision="fp32")
    fast = LinkPredictor(artifact, precision="bf16")
    assert fast.precision == "bf16"
    generator = torch.Generator().manual_seed(0)
    hr = torch.stack(
        (
            torch.randint(0, len(artifact.entities), (200,), generator=generator),
            torch.randint(0, 2 * len(artifact.relations), (200,), generator=generator),
        ),
        dim=1,
    )
    want = exact.predict_ids(hr, 10, filter_known)
    got = fast.predict_ids(hr, 10, filter_known)
    same = sum(
        [p.entity for p in a] == [p.entity for p in b] for a, b in zip(got, want, strict=True)
    )
    assert same == len(want)
    for a, b in zip(got, want, strict=True):
        # scores are the fp32 model's, not bf16 approximations
        assert [p.score for p in a] == pytest.approx([p.score for p in b], rel=1e-5, abs=1e-5)
        assert [p.known for p in a] == [p.known for p in b]


def test_precision_resolution() -> None:
    cpu = torch.device("cpu")
    assert resolve_score_precision("auto", cpu, 100) == "fp32"
    assert resolve_score_precision("bf16", cpu, 100) == "bf16"
    with pytest.raises(Exception, match="use auto, fp32 or bf16"):
        resolve_score_precision("fp8", cpu, 100)


def test_prepacked_table_gives_the_same_answers(umls_model: Path) -> None:
    artifact = load_artifact(umls_model)
    hr = torch.stack(
        (
            torch.arange(len(artifact.entities)) % len(artifact.entities),
            torch.arange(len(artifact.entities)) % (2 * len(artifact.relations)),
        ),
        dim=1,
    )
    for precision in ("fp32", "bf16"):
        plain = LinkPredictor(artifact, precision, prepack=False).top_ids(hr, 10, True)
        packed = LinkPredictor(artifact, precision, prepack=True).top_ids(hr, 10, True)
        same = sum(a == b for a, b in zip(packed.ids, plain.ids, strict=True))
        assert same >= 0.99 * len(hr)  # another summation order may swap near-ties
        for a, b in zip(packed.scores, plain.scores, strict=True):
            assert a == pytest.approx(b, rel=1e-5, abs=1e-5)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_passes_of_rows_give_the_one_pass_answers(umls_model: Path, precision: str) -> None:
    """A batch scored in several passes (as large batches are on the CPU) answers as one."""
    artifact = load_artifact(umls_model)
    generator = torch.Generator().manual_seed(1)
    hr = torch.stack(
        (
            torch.randint(0, len(artifact.entities), (150,), generator=generator),
            torch.randint(0, 2 * len(artifact.relations), (150,), generator=generator),
        ),
        dim=1,
    )
    per_row = torch.rand(150, generator=generator) < 0.5
    whole = LinkPredictor(artifact, precision)
    passes = LinkPredictor(artifact, precision)
    passes.PASS_ELEMENTS = 1  # type: ignore[misc]  # the floor: 64 rows per pass
    assert passes.rows_per_pass(10) == 64 and whole.rows_per_pass(10) >= 150
    for filter_known in (False, True, per_row):
        want = whole.top_ids(hr, 10, filter_known)
        got = passes.top_ids(hr, 10, filter_known)
        # a kernel chosen for another row count may sum in another order and swap near-ties
        same = sum(a == b for a, b in zip(got.ids, want.ids, strict=True))
        assert same >= len(hr) - 2
        for a, b in zip(got.scores, want.scores, strict=True):
            assert a == pytest.approx(b, rel=1e-5, abs=1e-5)
