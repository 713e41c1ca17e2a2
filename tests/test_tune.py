"""`kgweave tune` end to end on a real dataset (Nations), its pieces, and the recipes that
`kgweave train` picks from the graph's statistics."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch

from kgweave.cli.main import main
from kgweave.engine import open_dataset
from kgweave.errors import FailedPreconditionError, InvalidArgumentError
from kgweave.settings import get_settings
from kgweave.training.config import TrainConfig
from kgweave.tuning import recipes, space
from kgweave.tuning.report import finish
from kgweave.tuning.study import open_study, parse_budget, run_search

#: every trial here is tiny: a few epochs of a small model on one thread (the search, its
#: pruning and its files are what is tested, not the quality)
TINY = ("--epochs", "4", "--eval-every", "2", "--dim", "16", "--num-threads", "1")
#: (a server job takes no --num-threads: local training only)


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


# ---- the search space


def test_every_row_of_the_space_is_a_train_config_field_and_draws_valid_settings() -> None:
    for param in space.SPACE:
        assert param.field in TrainConfig.model_fields, f"{param.field} is not a TrainConfig field"
        values = param.choices if param.kind == "choice" else (param.low, param.high)
        for value in values:
            TrainConfig(**{param.field: value})  # raises on a value TrainConfig refuses
    names = [p.name for p in space.SPACE]
    assert len(names) == len(set(names)), "two rows share an Optuna name"


def test_conditions_decide_what_is_drawn() -> None:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(20):
        trial = study.ask()
        drawn = space.suggest(trial, {"model": "complex", "regime": "negative-sampling"})
        assert "model" not in drawn and "regime" not in drawn  # fixed: never drawn
        assert "label_smoothing" not in drawn and "num_negatives" in drawn
        assert ("reg_weight" in drawn) == (drawn["regularizer"] != "none")
        assert ("lr_adam" in trial.params) == (drawn["optimizer"] == "adam")
        TrainConfig(**drawn)
        study.tell(trial, 0.0)


# ---- budgets


@pytest.mark.parametrize(
    ("text", "seconds"), [("90s", 90), ("30m", 1800), ("1h", 3600), ("1h30m", 5400), ("45", 45)]
)
def test_budget_strings(text: str, seconds: float) -> None:
    assert parse_budget(text) == seconds


def test_a_bad_budget_is_a_one_line_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "tune", "-d", "nations", "--budget", "3x")
    assert code == InvalidArgumentError.exit_code and out == ""
    assert err.strip().splitlines() == [
        "error: --budget: '3x' is not a duration: use 90s, 30m, 1h or 1h30m"
    ]
    with pytest.raises(InvalidArgumentError, match="more than 0"):
        parse_budget("0m")
    code, _, err = run(capsys, "tune", "-d", "nations")
    assert code == InvalidArgumentError.exit_code and "give --budget, --trials" in err


# ---- a real search, continued, and its recipe reproduced


def test_search_resume_and_recipe_round_trip(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out = tmp_path / "search"
    code, stdout, err = run(
        capsys, "tune", "-d", "nations", "--trials", "3", *TINY, "-o", str(out), "--json"
    )
    assert code == 0, err
    report = json.loads(stdout)
    assert report["study"] == "nations-complex" and report["new_trials"] == 3
    assert len(report["trials"]) == 3 and report["stopped_because"] == "3 trials run"
    # the first trial is the recipe kgweave train picks for the graph (here the defaults)
    first = report["trials"][0]["params"]
    assert (first["regime"], first["optimizer"], first["lr_adagrad"]) == ("kvsall", "adagrad", 0.1)
    best = report["trials"][report["best_trial"]]
    assert best["state"] == "complete" and best["valid_mrr"] == report["best_valid_mrr"]
    for name in ("recipe.json", "trials.png", "report.json", "model/config.json"):
        assert (out / name).is_file(), name
    assert "importance_plot" not in report["files"]  # 3 trials: too few, and it says so
    assert "at least 4 completed trials" in report["importance_note"]
    assert report["model_is"] == "kept from the search"
    assert (get_settings().data_dir / "tuning" / "nations-complex.db").is_file()

    # the same study continues (--resume), with new draws
    code, stdout, err = run(
        capsys, "tune", "-d", "nations", "--trials", "2", *TINY, "-o", str(out), "--resume"
    )
    assert code == 0, err
    assert "continuing after 3 trials" in err
    rows = [line.lstrip("* ").split() for line in stdout.splitlines()]
    assert [int(r[0]) for r in rows if r and r[0].isdigit()] == [0, 1, 2, 3, 4]  # the table
    report = json.loads((out / "report.json").read_text())
    params = [json.dumps(t["params"], sort_keys=True) for t in report["trials"]]
    assert len(set(params)) == len(params), "a continued study drew the same settings again"
    # other fixed settings are another search: refused, in one line
    code, _, err = run(capsys, "tune", "-d", "nations", "--trials", "1", "--epochs", "3")
    assert code == FailedPreconditionError.exit_code
    assert "epochs: 4 then, 3 now" in err and len(err.strip().splitlines()) == 1

    # the recipe file reproduces the best trial's model
    recipe = json.loads((out / "recipe.json").read_text())
    kept = json.loads((out / "model" / "config.json").read_text())
    assert kept["training"] == recipe
    code, stdout, err = run(
        capsys, "train", "-d", "nations", "--recipe", str(out / "recipe.json"),
        "-o", str(tmp_path / "again"), "--no-progress", "--json",
    )  # fmt: skip
    assert code == 0, err
    again = json.loads((tmp_path / "again" / "config.json").read_text())
    assert again["training"] == recipe
    assert again["recipe"]["name"] == "file recipe.json"
    assert json.loads(stdout)["valid"]["mrr"] == pytest.approx(kept["metrics"]["valid"]["mrr"])
    # flags override the recipe
    code, stdout, err = run(
        capsys, "train", "-d", "nations", "--recipe", str(out / "recipe.json"), "--epochs", "2",
        "-o", str(tmp_path / "short"), "--no-progress", "--json",
    )  # fmt: skip
    assert code == 0, err
    short = json.loads((tmp_path / "short" / "config.json").read_text())
    assert short["training"] == {**recipe, "epochs": 2}
    assert short["recipe"]["overridden_by_flags"] == ["epochs"]


def test_a_bad_recipe_file_is_a_one_line_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    bad = tmp_path / "r.json"
    bad.write_text(json.dumps({"dim": -3}))
    code, _, err = run(
        capsys, "train", "-d", "nations", "-o", str(tmp_path / "m"), "--recipe", str(bad)
    )
    assert code == InvalidArgumentError.exit_code
    assert err.strip() == f"error: --dim: Input should be greater than or equal to 1 (in {bad})"
    code, _, err = run(
        capsys,
        "train",
        "-d",
        "nations",
        "-o",
        str(tmp_path / "m"),
        "--recipe",
        str(tmp_path / "none.json"),
    )
    assert code == InvalidArgumentError.exit_code and "--recipe: no file" in err


# ---- pruning


def test_a_trial_below_the_pruners_threshold_is_stopped_at_its_first_validation(
    tmp_path: Path,
) -> None:
    settings = get_settings()
    data = open_dataset("nations", settings)
    fixed: dict[str, Any] = {
        "model": "complex", "dim": 16, "epochs": 10, "eval_every": 2, "num_threads": 1,
    }  # fmt: skip
    # no Nations model reaches a validation MRR of 0.999 after 2 epochs: a fixed threshold
    # makes the pruner's verdict certain
    study = open_study(
        tmp_path / "s.db",
        "pruned",
        optuna.pruners.ThresholdPruner(lower=0.999),
        identity={"dataset": data.fingerprint, "fixed": fixed},
    )
    result = run_search(study, data, fixed, settings, tmp_path / "out", trials=2)
    assert result.new_trials == 2
    for trial in study.trials:
        assert trial.state == optuna.trial.TrialState.PRUNED
        assert trial.user_attrs["epochs_completed"] == 2  # stopped at its first validation
        assert trial.user_attrs["stopped_because"] == "pruned"
        assert list(trial.intermediate_values) == [2]
    assert not (tmp_path / "out" / "model").exists()
    with pytest.raises(FailedPreconditionError, match="no trial completed"):
        finish(study, data, settings, tmp_path / "out")


# ---- recipes from the graph's statistics


def _ids(rows: list[tuple[str, str, str]]) -> tuple[torch.Tensor, int, int]:
    entities = sorted({x for h, _, t in rows for x in (h, t)})
    relations = sorted({r for _, r, _ in rows})
    e = {x: i for i, x in enumerate(entities)}
    r = {x: i for i, x in enumerate(relations)}
    return torch.tensor([(e[h], r[rel], e[t]) for h, rel, t in rows]), len(e), len(r)


def test_graph_statistics_of_a_hand_built_graph() -> None:
    rows = [
        # symmetric: every fact also holds reversed
        ("a", "married", "b"), ("b", "married", "a"), ("c", "married", "d"), ("d", "married", "c"),
        # parent_of and child_of: each the other's inverse
        ("a", "parent_of", "c"), ("b", "parent_of", "d"),
        ("c", "child_of", "a"), ("d", "child_of", "b"),
        # hierarchical: many heads, one tail each, never reversed
        ("c", "is_a", "x"), ("d", "is_a", "x"), ("a", "is_a", "y"), ("b", "is_a", "y"),
        ("e", "is_a", "x"), ("f", "is_a", "y"),
        # none of these: one fact per head and per tail, nothing reversed
        ("a", "likes", "e"), ("b", "likes", "f"),
    ]  # fmt: skip
    train, entities, relations = _ids(rows)
    stats = recipes.graph_statistics(train, entities, relations)
    assert (stats.entities, stats.relations, stats.facts) == (8, 5, 16)
    assert stats.facts_per_entity == pytest.approx(4.0)
    assert stats.symmetric_share == pytest.approx(1 / 5)
    assert stats.inverse_share == pytest.approx(2 / 5)
    assert stats.hierarchical_share == pytest.approx(1 / 5)


def _stats(entities: int, relations: int, facts: int) -> recipes.GraphStatistics:
    return recipes.GraphStatistics(
        entities, relations, facts, 2 * facts / entities, facts / relations, 0.0, 0.0, 0.0
    )


@pytest.mark.parametrize(
    ("shape", "name"),
    [
        ((135, 46, 5216), "small"),  # UMLS
        ((40943, 11, 86835), "sparse-large"),  # WN18RR
        ((14541, 237, 272115), "dense-large"),  # FB15k-237
        ((2_000_000, 50, 10_000_000), "huge"),
    ],
)
def test_the_recipe_follows_the_graphs_shape(shape: tuple[int, int, int], name: str) -> None:
    chosen = recipes.choose_recipe(_stats(*shape))
    assert chosen.name == name
    TrainConfig(**chosen.settings)


def test_train_with_no_flags_prints_and_stores_its_recipe(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, _, err = run(
        capsys, "train", "-d", "nations", "-o", str(tmp_path / "m"), "--epochs", "1",
        "--no-progress",
    )  # fmt: skip
    assert code == 0, err
    assert "recipe small: a small graph" in err
    stored = json.loads((tmp_path / "m" / "config.json").read_text())["recipe"]
    assert stored["name"] == "small" and stored["statistics"]["entities"] == 14


# ---- as a server job


def test_tune_remote_runs_a_search_job_and_registers_the_best_model(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from kgweave.dataplane import DataPlane
    from serving_support import ServerThread, registry_with, train_demo_model

    settings = get_settings()
    first = train_demo_model(settings, tmp_path / "first", epochs=1, dim=16, eval_every=1)
    registry_with(settings, [first])
    plane = DataPlane(settings)
    plane.versions.activate("v0001")
    server = ServerThread(plane)
    monkeypatch.setenv("KGWEAVE_SERVER", server.address)
    seen: list[Any] = []
    plane.jobs.on_change = seen.append  # every change of the job, as WatchJob streams them
    try:
        code, out, err = run(
            capsys, "tune", "--remote", "-d", "nations", "--trials", "2", *TINY[:-2],
            "--activation", "always", "--json",
        )  # fmt: skip
        assert code == 0, err
        job = json.loads(out)
        assert job["state"] == "JOB_STATE_SUCCEEDED", job["message"]
        assert job["model_version"] == "v0002" and job["activated"]
        # trials counted as the job's epochs, the best validation MRR so far as valid_mrr
        assert job["epochs"] == 2 and job["epoch"] == 2 and job["valid_mrr"] > 0
        assert "tuning" in [j.phase for j in seen]
        trials = [j.epoch for j in seen if j.phase == "tuning"]
        assert trials == sorted(trials) and trials[-1] == 2
        active = plane.versions.active()
        assert active.version == "v0002"
        # a bad search is refused at the start, in one line
        code, _, err = run(capsys, "tune", "--remote", "-d", "nations", "--trials", "1",
                           "--pruner", "none", "--study", "bad name")  # fmt: skip
        assert code == InvalidArgumentError.exit_code
        assert err.strip().splitlines() == [
            "error: --study: 'bad name' is not a study name: letters, digits, '.', '_' and '-' "
            "(at most 100, starting with a letter or digit)"
        ]
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("tuning", "message"),
    [
        ({}, "give budget_s, trials or both"),
        ({"budget_s": math.nan}, "budget_s must be a finite number ≥ 0, got nan"),
        ({"trials": 2, "trial_budget_s": -math.inf}, "trial_budget_s must be a finite"),
        ({"trials": 2, "pruner": "sometimes"}, "pruner 'sometimes' is not one of"),
        ({"trials": 2, "study": "../x"}, "'../x' is not a study name"),
    ],
)
def test_a_search_job_that_cannot_run_is_refused(tuning: dict[str, Any], message: str) -> None:
    from kgweave.api.convert import job_from_pb
    from kgweave.serving.jobs import JobManager
    from kgweave.v1 import admin_pb2

    request = admin_pb2.StartTrainingRequest(tuning=admin_pb2.TuningSettings(**tuning))
    jobs = JobManager(get_settings(), on_success=lambda *_: ("", False, ""))
    with pytest.raises(InvalidArgumentError, match=re.escape(message)):
        jobs.start(job_from_pb(request), "nations", "never")
    assert jobs.active_count() == 0


def test_a_diverged_trial_counts_as_mrr_0_and_keeps_no_model(tmp_path: Path) -> None:
    settings = get_settings()
    data = open_dataset("nations", settings)
    fixed: dict[str, Any] = {
        "model": "complex", "dim": 8, "epochs": 3, "eval_every": 1, "lr": 1e30,
        "optimizer": "adagrad", "num_threads": 1,
    }  # fmt: skip
    study = open_study(tmp_path / "s.db", "diverged", optuna.pruners.NopPruner(), {"fixed": fixed})
    run_search(study, data, fixed, settings, tmp_path / "out", trials=1)
    (trial,) = study.trials
    assert trial.state == optuna.trial.TrialState.COMPLETE and trial.value == 0.0
    assert trial.user_attrs["stopped_because"] == "diverged"
    with pytest.raises(FailedPreconditionError, match="pruned, diverged or failed"):
        finish(study, data, settings, tmp_path / "out")
