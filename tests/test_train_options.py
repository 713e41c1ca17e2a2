"""Training options that tuned KGE systems use (dropout, per-side regulariser weights,
initialisations, warm-up, plateau decay), validation that can be trusted, several seeds, the
evaluation hook a pruner uses, and the limits on every training setting. Real models, real
datasets, a real gRPC server; no timing assertions."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import grpc
import pytest
import torch

from kgweave.artifact import load_artifact
from kgweave.cli.main import main
from kgweave.data import load_dataset
from kgweave.engine import evaluate_on
from kgweave.evaluation.ranking import build_filter, evaluate
from kgweave.models import MODELS, KGEModel, model_class
from kgweave.training import TrainConfig, train
from kgweave.training.hardware import check_memory
from kgweave.training.loop import TrainingHooks, validation_triples
from kgweave.training.regularizers import Penalty
from kgweave.training.schedule import LearningRate
from kgweave.training.validation import (
    TOLERANCE,
    ValidationSet,
    mrr_half_width,
    sample_size_for,
)
from test_models import N, R, _triples

DIM = 8


@pytest.fixture(scope="module")
def nations(datasets_dir: Path) -> Any:
    return load_dataset(datasets_dir / "nations")


@pytest.fixture(scope="module")
def umls(datasets_dir: Path) -> Any:
    return load_dataset(datasets_dir / "umls")


@pytest.fixture(params=sorted(MODELS))
def model(request: pytest.FixtureRequest) -> KGEModel:
    torch.manual_seed(0)
    built = model_class(request.param)(N, 2 * R, DIM)
    with torch.no_grad():  # away from the tiny default so that dropout visibly matters
        built.entity.weight.normal_(std=0.5)
    return built


def _paths(model: KGEModel) -> dict[str, torch.Tensor]:
    triples = _triples()
    return {
        "score_hrt": model.score_hrt(triples),
        "score_t": model.score_t(triples[:, :2]),
        "score_candidates": model.score_candidates(triples[:, :2], triples[:, [2, 0]]),
        "score_r": model.score_r(triples[:, [0, 2]]),
    }


# ---- 1. dropout


def test_dropout_acts_on_every_scoring_path_in_training_mode_only(model: KGEModel) -> None:
    plain = {k: v.detach() for k, v in _paths(model.eval()).items()}
    model.set_dropout(0.5, 0.5)
    model.eval()
    for name, scores in _paths(model).items():
        torch.testing.assert_close(scores, plain[name], msg=name)  # never in eval mode
    model.train()
    torch.manual_seed(3)
    for name, scores in _paths(model).items():
        assert not torch.allclose(scores, plain[name]), f"{name}: no dropout while training"
    model.set_dropout(0.0, 0.0)
    for name, scores in _paths(model).items():
        torch.testing.assert_close(scores, plain[name], msg=name)


def test_relation_dropout_alone_leaves_entities_whole(model: KGEModel) -> None:
    model.set_dropout(0.0, 0.9)
    model.train()
    ids = torch.arange(N)
    torch.testing.assert_close(model.lookup_entities(ids), model.entity(ids))
    assert not torch.allclose(model.lookup_relations(torch.arange(2 * R)), model.relation.weight)


def test_regularisers_and_ranking_ignore_dropout(model: KGEModel, nations: Any) -> None:
    triples = _triples()
    before = Penalty("n3", 0.1).weighted(model, triples)
    model.set_dropout(0.5, 0.5)
    model.train()
    torch.testing.assert_close(Penalty("n3", 0.1).weighted(model, triples), before)
    # a ranking pass on a model left in training mode scores as in eval mode (TailScorer)
    known = build_filter(triples, N, R)
    queries = triples[triples[:, 1] < R]
    ranked_training = evaluate(model, queries, known).ranks
    model.set_dropout(0.0, 0.0)
    torch.testing.assert_close(evaluate(model.eval(), queries, known).ranks, ranked_training)


def test_dropout_must_be_below_one() -> None:
    with pytest.raises(ValueError, match="dropout"):
        model_class("complex")(N, 2 * R, DIM).set_dropout(1.0, 0.0)
    with pytest.raises(ValueError, match="entity_dropout"):
        TrainConfig(entity_dropout=1.0)


@pytest.mark.parametrize("regime", ["kvsall", "1vsall", "negative-sampling"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_dropout_trains_in_every_regime_and_model(nations: Any, regime: str, name: str) -> None:
    settings: dict[str, Any] = {
        "model": name,
        "dim": 16,
        "epochs": 3,
        "batch_size": 128,
        "eval_every": 3,
        "regime": regime,
        "lr": 0.1,
        "margin": 0.0 if name in ("distmult", "complex") else 6.0,
        "num_negatives": 16,
    }
    plain = train(nations, TrainConfig(**settings), device="cpu", progress=False)
    dropped = train(
        nations,
        TrainConfig(**settings, entity_dropout=0.3, relation_dropout=0.2),
        device="cpu",
        progress=False,
    )
    assert dropped.model.entity_dropout == 0.3 and dropped.model.relation_dropout == 0.2
    assert math.isfinite(dropped.history[-1]["loss"])
    # the same seed without dropout trains differently: dropout reached the steps
    assert dropped.history[-1]["loss"] != plain.history[-1]["loss"]
    # and it learns: better than the untrained model of the same seed
    torch.manual_seed(0)
    untrained = model_class(name)(nations.num_entities, 2 * nations.num_relations, 16).eval()
    before = evaluate_on(untrained, nations, "valid").metrics["mrr"]
    assert dropped.best_valid is not None and dropped.best_valid.metrics["mrr"] > before + 0.02


# ---- 2. regulariser weights per side


@pytest.mark.parametrize("kind", ["n3", "l2"])
def test_per_side_weights_agree_between_dense_and_per_triple(model: KGEModel, kind: str) -> None:
    triples = _triples()
    dense = Penalty(kind, 0.3, 0.05).weighted(model, triples)
    sparse = Penalty(kind, 0.3, 0.05).per_triple(model, triples)
    torch.testing.assert_close(dense, sparse)
    power = 3 if kind == "n3" else 2
    heads = model.entity_magnitudes(triples[:, 0]) ** power
    tails = model.entity_magnitudes(triples[:, 2]) ** power
    entity_only = 0.3 * (heads.sum() + tails.sum()) / len(triples)
    torch.testing.assert_close(Penalty(kind, 0.3, 0.0).weighted(model, triples), entity_only)
    # one weight for both sides, as before
    torch.testing.assert_close(
        Penalty(kind, 0.1).weighted(model, triples),
        Penalty(kind, 0.1, 0.1).weighted(model, triples),
    )


def test_per_side_weights_default_to_reg_weight_and_old_configs_load() -> None:
    assert TrainConfig(reg_weight=0.05).reg_weights() == (0.05, 0.05)
    assert TrainConfig(reg_weight=0.05, relation_reg_weight=0.5).reg_weights() == (0.05, 0.5)
    assert TrainConfig(entity_reg_weight=0.2).reg_weights() == (0.2, 0.01)
    # an artifact's training settings written before these options existed
    old = {
        "model": "complex",
        "dim": 200,
        "regime": "kvsall",
        "epochs": 100,
        "batch_size": 256,
        "optimizer": "adagrad",
        "lr": 0.1,
        "lr_schedule": "constant",
        "regularizer": "n3",
        "reg_weight": 0.01,
        "label_smoothing": 0.0,
        "relation_prediction": 0.0,
        "num_negatives": 256,
        "margin": 9.0,
        "adversarial_temperature": 1.0,
        "seed": 0,
        "eval_every": 5,
        "patience": 5,
        "eval_batch_size": None,
        "valid_sample": None,
        "precision": "auto",
        "time_budget_s": None,
        "num_threads": None,
    }
    config = TrainConfig.model_validate(old)
    assert config.reg_weights() == (0.01, 0.01)
    assert (config.entity_dropout, config.init, config.warmup_epochs) == (0.0, "default", 0)


# ---- 3. initialisation


@pytest.mark.parametrize("init", ["normal", "uniform", "xavier_uniform", "xavier_normal"])
def test_initialisations_and_their_scale(init: str) -> None:
    for name in sorted(MODELS):
        torch.manual_seed(0)
        model = model_class(name)(2000, 2 * R, 64)
        phases = model.relation.weight.detach().clone()
        model.initialize(init, 0.2)
        table = model.entity.weight.detach()
        fan = table.shape[0] + table.shape[1]
        if init == "normal":
            assert float(table.std()) == pytest.approx(0.2, rel=0.05)
        elif init == "uniform":
            assert float(table.abs().max()) <= 0.2 and float(table.abs().max()) > 0.19
        elif init == "xavier_uniform":
            bound = 0.2 * math.sqrt(6 / fan)
            assert float(table.abs().max()) <= bound and float(table.abs().max()) > 0.95 * bound
        else:
            assert float(table.std()) == pytest.approx(0.2 * math.sqrt(2 / fan), rel=0.05)
        if name == "rotate":  # phases stay uniform on the circle
            torch.testing.assert_close(model.relation.weight.detach(), phases)
        else:
            assert not torch.equal(model.relation.weight.detach(), phases)


def test_default_init_is_each_models_own_and_training_applies_the_choice(nations: Any) -> None:
    torch.manual_seed(0)
    fresh = model_class("complex")(50, 4, 8)
    torch.manual_seed(0)
    kept = model_class("complex")(50, 4, 8)
    kept.initialize("default", 5.0)
    torch.testing.assert_close(kept.entity.weight, fresh.entity.weight)

    seen: list[float] = []

    class Probe(TrainingHooks):
        def build(self, model: KGEModel) -> list[torch.nn.Module]:
            seen.append(float(model.entity.weight.detach().std()))
            return []

    settings = {"dim": 32, "epochs": 1, "eval_every": 1}
    for init_scale in (0.3, None):
        config = TrainConfig(**settings, init="normal", init_scale=init_scale)
        train(nations, config, device="cpu", progress=False, hooks=Probe())
    assert seen[0] == pytest.approx(0.3, rel=0.1)
    assert seen[1] == pytest.approx(1e-3, rel=0.1)  # normal's default scale


# ---- 4. warm-up and plateau decay


def _rates(config: TrainConfig, steps_per_epoch: int, epochs: int) -> list[float]:
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=123.0)
    rate = LearningRate(config, optimizer, steps_per_epoch)
    seen = []
    for epoch in range(1, epochs + 1):
        for _ in range(steps_per_epoch):
            rate.step()
            seen.append(optimizer.param_groups[0]["lr"])
        rate.end_epoch(epoch)
    return seen


def test_warmup_is_linear_per_step_then_the_rate() -> None:
    seen = _rates(TrainConfig(lr=0.4, warmup_epochs=2), steps_per_epoch=5, epochs=3)
    assert seen[:10] == pytest.approx([0.4 * (i + 1) / 10 for i in range(10)])
    assert seen[10:] == pytest.approx([0.4] * 5)
    cosine = _rates(
        TrainConfig(lr=0.4, warmup_epochs=1, lr_schedule="cosine", epochs=4), 2, epochs=4
    )
    assert cosine[:2] == pytest.approx([0.2, 0.4])  # warm-up, then the cosine decay
    assert cosine[2] < 0.4 and cosine[1:] == sorted(cosine[1:], reverse=True)


def test_plateau_factor_and_patience() -> None:
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    config = TrainConfig(lr=1.0, lr_schedule="plateau", plateau_factor=0.1, plateau_patience=2)
    rate = LearningRate(config, optimizer, 1)
    lowered = [rate.evaluated(mrr) for mrr in (0.5, 0.5, 0.5, 0.5, 0.6, 0.6, 0.6, 0.6)]
    # the first is the best; the third stalled validation in a row lowers it, then the count
    # restarts; 0.6 is a new best
    assert lowered == [False, False, False, True, False, False, False, True]
    assert rate.rate == pytest.approx(0.01)
    # a gain within ReduceLROnPlateau's relative threshold (1e-4) is no improvement
    fresh = LearningRate(config.model_copy(update={"plateau_patience": 0}), optimizer, 1)
    assert [fresh.evaluated(m) for m in (0.5, 0.50001)] == [False, True]


def test_plateau_and_warmup_survive_a_resume(nations: Any, tmp_path: Path) -> None:
    settings = {
        "dim": 16,
        "batch_size": 64,
        "eval_every": 1,
        "patience": 0,
        "lr_schedule": "plateau",
        "lr": 1e-7,  # too small to change a rank: validation stalls, the rate drops
        "plateau_factor": 0.25,
        "plateau_patience": 0,
        "warmup_epochs": 1,
        "reg_weight": 0.0,
    }
    whole = train(nations, TrainConfig(**settings, epochs=4), device="cpu", progress=False)
    train(
        nations,
        TrainConfig(**settings, epochs=2),
        device="cpu",
        checkpoint_dir=tmp_path,
        progress=False,
    )
    resumed = train(
        nations,
        TrainConfig(**settings, epochs=4),
        device="cpu",
        checkpoint_dir=tmp_path,
        resume=True,
        progress=False,
    )
    rates = [h["lr"] for h in whole.history]
    # each row: the rate after its epoch, before its validation's plateau decision
    assert rates == pytest.approx([1e-7, 1e-7, 2.5e-8, 6.25e-9])
    assert [h["lr"] for h in resumed.history] == pytest.approx(rates)


# ---- 5. validation that can be trusted


def test_half_width_matches_repeated_sampling() -> None:
    """The 95% half-width bounds the error of 95% of random samples' MRR (checked against
    2,000 seeded random samples of a skewed population of reciprocal ranks)."""
    g = torch.Generator().manual_seed(0)
    population = 8000
    ranks = torch.cat(
        (
            torch.ones(population // 3),
            torch.randint(2, 400, (population - population // 3,), generator=g).double(),
        )
    )
    tails, heads = ranks[torch.randperm(population, generator=g)], ranks.flip(0)
    per_triple = (1 / tails + 1 / heads) / 2
    full = float(per_triple.mean())
    n = 1500
    errors = []
    widths = []
    for _ in range(2000):
        pick = torch.randperm(population, generator=g)[:n]
        errors.append(abs(float(per_triple[pick].mean()) - full))
        widths.append(mrr_half_width(torch.cat((tails[pick], heads[pick])), population))
    covered = sum(e <= w for e, w in zip(errors, widths, strict=True)) / len(errors)
    assert 0.93 <= covered <= 0.97, covered
    assert mrr_half_width(torch.cat((tails, heads)), population) == 0.0


def test_sample_size_is_the_smallest_within_tolerance() -> None:
    for sd, population in ((0.4, 17535), (0.3, 3034), (0.45, 100_000)):
        n = sample_size_for(sd, population)
        widths = [
            1.96 * sd / math.sqrt(k) * math.sqrt((population - k) / (population - 1))
            for k in (n, n - 1)
        ]
        assert widths[0] <= TOLERANCE < widths[1]
    assert 0.95 * 500 < sample_size_for(0.4, 500) <= 500  # small splits: nearly all of it
    assert sample_size_for(0.0, 500) == 0  # no spread (all ranks alike)


def test_a_small_sample_grows_and_keeps_its_first_triples(datasets_dir: Path) -> None:
    wn18rr = load_dataset(datasets_dir / "wn18rr")
    config = TrainConfig(valid_sample=300, seed=7)
    validation = ValidationSet(wn18rr, config)
    # before its first check it claims no half-width (it logged "±0.0000" of an unmeasured one)
    assert validation.describe().endswith(
        "checked at each evaluation to be within ±0.005 of the full split's MRR (95% "
        "confidence), and grown when it is not"
    )
    first = validation.triples
    torch.testing.assert_close(first, validation_triples(wn18rr, config))
    g = torch.Generator().manual_seed(0)
    spread = torch.randint(1, 50, (2 * len(first),), generator=g).double()  # per-triple sd ~0.2
    assert validation.grow_if_needed(spread)
    grown = validation.triples
    assert 300 < len(grown) < validation.population
    torch.testing.assert_close(grown[:300], first)  # the earlier sample stays
    # the artifact records the grown size: the same triples come back from the settings
    again = validation_triples(wn18rr, config.model_copy(update={"valid_sample": len(grown)}))
    torch.testing.assert_close(again, grown)
    ranks = torch.randint(1, 50, (2 * len(grown),), generator=g).double()
    assert not validation.grow_if_needed(ranks)
    assert validation.half_width is not None and validation.half_width <= TOLERANCE
    assert f"sample of {len(grown)} of 3034 triples, grown from 300" in validation.describe()


def test_training_validates_on_enough_triples_and_says_so(umls: Any) -> None:
    config = TrainConfig(dim=32, epochs=2, eval_every=1, valid_sample=40)
    result = train(umls, config, device="cpu", progress=False)
    validation = result.extra["validation"]
    # 652 triples are too few to sample from for ±0.005: the whole split is used
    assert validation["triples"] == 652 and validation["of"] == 652
    assert result.config.valid_sample is None
    assert result.best_valid is not None and result.best_valid.metrics["count"] == 2 * 652
    assert "all 652 validation triples (a sample of 40 was too small" in validation["described"]
    assert result.extra["seed"] == 0


def test_evaluation_hook_sees_every_validation_and_can_stop_the_run(nations: Any) -> None:
    calls: list[tuple[int, dict[str, float]]] = []

    class Pruner(TrainingHooks):
        def on_evaluation(self, epoch: int, metrics: dict[str, float]) -> bool:
            calls.append((epoch, metrics))
            return len(calls) < 2

    config = TrainConfig(dim=16, epochs=20, eval_every=2, patience=0)
    result = train(nations, config, device="cpu", progress=False, hooks=Pruner())
    assert result.stopped_because == "pruned" and result.epochs_completed == 4
    assert [epoch for epoch, _ in calls] == [2, 4]
    logged = [h["valid_mrr"] for h in result.history if "valid_mrr" in h]
    assert [m["mrr"] for _, m in calls] == logged
    assert {"mrr", "hits@1", "hits@10"} <= set(calls[0][1])


def test_seeds_report_mean_and_spread_and_keep_the_best(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out = tmp_path / "m"
    args = ["train", "-d", "nations", "-o", str(out), "--epochs", "4", "--dim", "16"]
    code = main(
        [*args, "--seed", "3", "--seeds", "3", "--eval-every", "2", "--no-progress", "--json"]
    )
    printed, _ = capsys.readouterr()
    assert code == 0
    report = json.loads(printed)
    assert report["seeds"] == [3, 4, 5] and len(report["runs"]) == 3
    valid = [run["valid"]["mrr"] for run in report["runs"]]
    test = [run["test"]["mrr"] for run in report["runs"]]
    assert len(set(test)) > 1  # the seeds made different models
    summary = report["summary"]["test"]["mrr"]
    assert summary["mean"] == pytest.approx(sum(test) / 3)
    mean = sum(test) / 3
    assert summary["sd"] == pytest.approx(math.sqrt(sum((t - mean) ** 2 for t in test) / 2))
    best = report["runs"][valid.index(max(valid))]["seed"]
    assert report["kept_seed"] == best and report["selected_by"] == "best validation MRR"
    artifact = load_artifact(out)
    assert artifact.config["training"]["seed"] == best
    assert artifact.config["seeds"]["kept_seed"] == best
    assert not [p for p in tmp_path.iterdir() if p.name != "m"]  # the other seeds are gone


# ---- 6. limits on every setting


def test_every_numeric_setting_has_both_limits() -> None:
    """lr aside: any finite rate (one too high diverges, and the run fails cleanly)."""
    for name, field in TrainConfig.model_fields.items():
        if name == "lr":
            continue
        kinds = {type(m).__name__ for m in field.metadata}
        annotation = str(field.annotation)
        if "int" in annotation or "float" in annotation:
            assert kinds & {"Ge", "Gt"} and kinds & {"Le", "Lt"}, f"{name}: {kinds}"


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--dim", "1000000000", "--dim: Input should be less than or equal to 8192"),
        ("--epochs", "1000000", "--epochs: Input should be less than or equal to 100000"),
        ("--batch-size", "2000000", "--batch-size: Input should be less than or equal to 1048576"),
        ("--lr", "inf", "--lr: Input should be a finite number"),
        ("--reg-weight", "11", "--reg-weight: Input should be less than or equal to 10"),
        ("--entity-dropout", "1.5", "--entity-dropout: Input should be less than 1"),
        ("--seed", "-1", "--seed: Input should be greater than or equal to 0"),
    ],
)
def test_settings_out_of_range_are_one_line_errors(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, flag: str, value: str, message: str
) -> None:
    code = main(["train", "-d", "nations", "-o", str(tmp_path / "m"), flag, value])
    out, err = capsys.readouterr()
    assert code == 2, err
    assert err == f"error: {message}\n" and out == ""
    assert not (tmp_path / "m").exists()


def test_seeds_outside_their_range_or_with_remote_are_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    args = ["train", "-d", "nations", "-o", str(tmp_path / "m"), "--epochs", "1"]
    assert main([*args, "--seeds", "0"]) == 2
    assert "--seeds must be between 1 and 100" in capsys.readouterr().err
    assert main([*args, "--seeds", "2", "--seed", str(2**31 - 1)]) == 2
    assert "--seed plus --seeds" in capsys.readouterr().err
    assert main([*args, "--seeds", "2", "--remote"]) == 2
    assert "--seeds is for local training" in capsys.readouterr().err


def test_start_training_with_a_huge_dim_is_invalid_argument() -> None:
    """Through a real server: refused before any worker starts, never an out-of-memory."""
    from kgweave.dataplane import DataPlane
    from kgweave.settings import get_settings
    from kgweave.v1 import admin_pb2, admin_pb2_grpc
    from serving_support import ServerThread

    server = ServerThread(DataPlane(get_settings()), "python")
    channel = grpc.insecure_channel(server.address)
    try:
        admin = admin_pb2_grpc.AdminServiceStub(channel)
        for settings in (
            {"dim": 10**9},
            {"epochs": 10**7},
            {"lr": math.inf},
            {"batch_size": 2**30},
        ):
            request = admin_pb2.StartTrainingRequest(
                settings=admin_pb2.TrainingSettings(**settings), dataset="demo"
            )
            with pytest.raises(grpc.RpcError) as info:
                admin.StartTraining(request)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, settings
            details = info.value.details() or ""
            assert "less than or equal to" in details or "finite" in details, details
            assert "\n" not in details
        assert server.service.jobs.active_count() == 0  # no job was ever queued
        assert not list(server.service.jobs.root.glob("*"))
    finally:
        channel.close()
        server.stop()


def test_tables_larger_than_memory_are_refused_before_training() -> None:
    from kgweave.errors import InvalidArgumentError

    config = TrainConfig(dim=8192)  # within limits, yet too large for a huge graph
    cpu = torch.device("cpu")
    check_memory(config, 14_541, 474, cpu, memory_bytes=16 << 30)  # FB15k-237: ~4.5 GiB
    with pytest.raises(
        InvalidArgumentError, match=r"dim 8192 for 2000000 entities needs about 610\.5 GiB"
    ):
        check_memory(config, 2_000_000, 474, cpu, memory_bytes=16 << 30)
    with pytest.raises(InvalidArgumentError, match="lower --dim"):
        check_memory(config, 10**9, 2, cpu)  # this machine's own memory
