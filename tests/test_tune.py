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

from kgweave.cli.main import main
from kgweave.engine import open_dataset
from kgweave.errors import FailedPreconditionError, InvalidArgumentError
from kgweave.settings import get_settings
from kgweave.training.config import TrainConfig
from kgweave.tuning import space
from kgweave.tuning.report import finish
from kgweave.tuning.study import enqueue_once, open_study, parse_budget, run_search

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
    # the first trial is the recipe kgweave train picks for the graph (here small-dense's)
    first = report["trials"][0]["params"]
    assert (first["regime"], first["optimizer"], first["lr_adagrad"]) == ("1vsall", "adagrad", 0.08)
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


# ---- the search starts from the no-flag recipe; a target MRR ends it


def test_the_first_trial_is_the_no_flag_run(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, stdout, err = run(
        capsys, "train", "-d", "nations", *TINY, "-o", str(tmp_path / "plain"), "--no-progress",
        "--json",
    )  # fmt: skip
    assert code == 0, err
    plain = json.loads(stdout)["valid"]["mrr"]
    out = tmp_path / "search"
    code, stdout, err = run(
        capsys, "tune", "-d", "nations", "--trials", "1", *TINY, "-o", str(out), "--json"
    )
    assert code == 0, err
    (first,) = json.loads(stdout)["trials"]
    assert first["valid_mrr"] == pytest.approx(plain, abs=1e-9)  # the same run, to the bit
    # continued, the study does not run the recipe again
    code, _, err = run(
        capsys, "tune", "-d", "nations", "--trials", "1", *TINY, "-o", str(out), "--resume"
    )
    assert code == 0, err
    assert "recipe small-dense tried already (trial 0)" in err
    trials = json.loads((out / "report.json").read_text())["trials"]
    assert len(trials) == 2 and trials[1]["params"] != trials[0]["params"]


def test_the_recipe_is_enqueued_once_into_a_study_that_lacks_it(tmp_path: Path) -> None:
    settings = get_settings()
    data = open_dataset("nations", settings)
    fixed: dict[str, Any] = {
        "model": "complex", "dim": 8, "epochs": 2, "eval_every": 1, "num_threads": 1,
    }  # fmt: skip
    study = open_study(tmp_path / "s.db", "late", optuna.pruners.NopPruner(), {"fixed": fixed})
    recipe = TrainConfig(**fixed).model_dump()
    wanted = space.params_of(recipe, fixed)
    run_search(study, data, fixed, settings, tmp_path / "out", trials=1)  # a random draw
    assert study.trials[0].params != wanted
    run_search(study, data, fixed, settings, tmp_path / "out", trials=1, first=recipe)
    assert study.trials[1].params == wanted  # enqueued: the study had not tried it
    run_search(study, data, fixed, settings, tmp_path / "out", trials=1, first=recipe)
    assert study.trials[2].params != wanted  # tried already: not again
    # a trial that failed (or was cut by a crash) does not count as tried
    other = {**wanted, "batch_size": 128}
    assert enqueue_once(study, other)
    assert not enqueue_once(study, other)  # queued already
    trial = study.ask()
    study.tell(trial, state=optuna.trial.TrialState.FAIL)
    assert enqueue_once(study, other)


def test_a_target_mrr_ends_the_search_at_the_validation_that_reaches_it(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out = tmp_path / "search"
    reports = []
    for _ in range(2):  # the search, then the same study continued
        # every Nations model has a validation MRR above 0.05 after 2 epochs: a certain target
        code, stdout, err = run(
            capsys, "tune", "-d", "nations", "--trials", "5", *TINY, "--target-mrr", "0.05",
            "-o", str(out), "--json",
        )  # fmt: skip
        assert code == 0, err
        reports.append(json.loads(stdout))
    report, again = reports
    assert report["new_trials"] == 1 and report["target_reached"]
    assert report["stopped_because"].startswith("target reached after 1 trial, ")
    (trial,) = report["trials"]
    assert trial["stopped_because"] == "target_reached"
    assert trial["epochs"] == 2  # its first validation (--eval-every 2 of --epochs 4)
    assert json.loads((out / "recipe.json").read_text())["epochs"] == 2  # as trained
    # a continued study that has reached it runs nothing
    assert again["new_trials"] == 0
    assert again["stopped_because"].startswith("target already reached by trial 0")
    # a server job has no target: refused in one line
    code, _, err = run(
        capsys, "tune", "--remote", "-d", "nations", "--trials", "1", "--target-mrr", "0.5"
    )
    assert code == InvalidArgumentError.exit_code
    assert err.strip().splitlines() == [
        "error: --target-mrr is for local searches (a server job runs its budget or trials)"
    ]


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


# ---- recipes from the graph's statistics (their statistics: test_recipes.py)


def test_train_with_no_flags_prints_and_stores_its_recipe(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, _, err = run(
        capsys, "train", "-d", "nations", "-o", str(tmp_path / "m"), "--epochs", "1",
        "--no-progress",
    )  # fmt: skip
    assert code == 0, err
    assert "recipe small-dense: a small dense graph" in err
    # the statistics it was chosen from, relation patterns included, on the next line
    assert "graph: 14 entities, 55 relations, 1592 facts (227.4 per entity); relations " in err
    assert "symmetric 18%, with an inverse 42%" in err
    stored = json.loads((tmp_path / "m" / "config.json").read_text())["recipe"]
    assert stored["name"] == "small-dense" and stored["statistics"]["entities"] == 14
    assert stored["statistics"]["inverse_share"] == pytest.approx(23 / 55, abs=1e-4)
    assert stored["statistics"]["cardinality"]["N-N"] == pytest.approx(36 / 55, abs=1e-4)


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
