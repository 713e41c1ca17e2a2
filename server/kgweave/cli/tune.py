"""``kgweave tune``: a budgeted hyperparameter search (Optuna), here or as a server job."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from kgweave.cli.options import job_options, report_options, training_options
from kgweave.cli.output import emit_json, err
from kgweave.errors import InvalidArgumentError
from kgweave.settings import get_settings

if TYPE_CHECKING:
    import optuna

ANY_MODEL = "any"


def _tune_options(command: Any) -> Any:
    command = training_options(command)
    for param in command.__click_params__:
        if param.name == "model":
            param.help = (
                "Scoring model searched: transe, distmult, complex, rotate, or 'any' to search "
                "the models too. [default: complex]"
            )
    return command


@click.command()
@click.option("--dataset", "-d", default=None, help="Dataset name or folder of triples.")
@click.option(
    "--out",
    "-o",
    type=click.Path(path_type=Path),
    default=None,
    help="Folder for the best model (OUT/model), recipe.json, the plots and report.json "
    "[default: DATA/tuning/STUDY].",
)
@click.option(
    "--budget",
    default=None,
    help="Time for the search: 90s, 30m, 1h, 1h30m (each trial's training ends by then).",
)
@click.option("--trials", type=click.IntRange(min=1), default=None, help="Trials to run.")
@click.option(
    "--trial-budget",
    default=None,
    help="Longest training of one trial (same units as --budget) [default: no cap but the "
    "budget's end: the pruner stops trials that fall behind].",
)
@click.option(
    "--study",
    default=None,
    help="Study name: the search is stored in DATA/tuning/STUDY.db, and the same name "
    "continues it [default: DATASET-MODEL].",
)
@click.option("--resume", is_flag=True, help="Continue the study (it must exist).")
@click.option(
    "--pruner",
    type=click.Choice(["median", "hyperband", "none"]),
    default="median",
    show_default=True,
    help="How trials whose validation MRR falls behind are stopped early.",
)
@click.option(
    "--target-mrr",
    type=click.FloatRange(min=0.0, max=1.0, min_open=True),
    default=None,
    help="Stop the search as soon as a trial's validation MRR reaches this (that trial's "
    "training stops there too).",
)
@_tune_options
@click.option(
    "--remote",
    is_flag=True,
    help="Search as a job of the running server (on its graph unless --dataset is given); the "
    "best model is registered as a version and activated by policy.",
)
@job_options(served="the best model")
@report_options
def tune(
    dataset: str | None,
    out: Path | None,
    budget: str | None,
    trials: int | None,
    trial_budget: str | None,
    study: str | None,
    resume: bool,
    pruner: str,
    target_mrr: float | None,
    remote: bool,
    activation: str | None,
    detach: bool,
    no_progress: bool,
    as_json: bool,
    **options: Any,
) -> None:
    """Search training settings within a budget: Optuna's TPE draws them, trials that fall
    behind are pruned on their validation MRR, the study is stored so that it can continue.

    A training flag given holds its setting fixed (the defaults shown are kgweave train's);
    the settings of the search table left unset (model with --model any, dim, regime, batch
    size, optimiser and learning rate, schedule (plateau factor and patience), warm-up,
    regulariser and its weight per side, entity and relation dropout, initialisation, label
    smoothing, negative sampling's knobs) are searched. Writes the best trial's model (as trained in
    the search), a recipe file that `kgweave train --recipe` reproduces, a table of trials
    and two plots.
    """
    from kgweave.tuning.study import default_study_name, parse_budget, run_tuning

    budget_s = parse_budget(budget) if budget is not None else None
    trial_s = parse_budget(trial_budget) if trial_budget is not None else None
    if budget_s is None and trials is None:
        raise InvalidArgumentError("give --budget, --trials or both")
    fixed = {k: v for k, v in options.items() if v is not None}
    search_models = fixed.get("model") == ANY_MODEL
    if search_models:
        del fixed["model"]
    if remote:
        if target_mrr is not None:
            raise InvalidArgumentError(
                "--target-mrr is for local searches (a server job runs its budget or trials)"
            )
        if out is not None or resume:
            raise InvalidArgumentError(
                "--out and --resume are for local searches (a server job continues a study "
                "given the same --study name; its best model becomes a version)"
            )
        tuning = {
            "budget_s": budget_s or 0.0,
            "trials": trials or 0,
            "trial_budget_s": trial_s or 0.0,
            "search_models": search_models,
            "pruner": pruner,
            "study": study or "",
        }
        from kgweave.cli.remote import train_remote

        train_remote(fixed, dataset or "", activation or "", detach, no_progress, as_json, tuning)
        return
    if dataset is None:
        raise InvalidArgumentError("give --dataset (or --remote to search on the server's graph)")
    from kgweave.cli.recipe import train_config
    from kgweave.engine import open_dataset

    if not search_models:
        fixed.setdefault("model", "complex")
    train_config(fixed)  # a bad flag is refused before the dataset is read
    settings = get_settings()
    data = open_dataset(dataset, settings)
    name = study or default_study_name(data.name, fixed)
    bar = TrialProgress(trials, budget_s, enabled=not (no_progress or as_json))

    def announce(line: str) -> None:  # the study is open: the search starts
        if not as_json:
            err(line)
        bar.start()

    try:
        report = run_tuning(
            data,
            fixed,
            settings,
            name,
            out,
            budget_s=budget_s,
            trials=trials,
            trial_budget_s=trial_s,
            pruner=pruner,
            resume=resume,
            on_trial=bar.update_trial,
            say=announce,
            target_mrr=target_mrr,
        )
    finally:
        bar.close()
    if as_json:
        emit_json(report)
        return
    _print_report(report)


class TrialProgress:
    """Trial i/N, best validation MRR so far, and the time left of the budget."""

    def __init__(self, trials: int | None, budget_s: float | None, enabled: bool) -> None:
        self.trials, self.budget_s, self.enabled = trials, budget_s, enabled
        self.started = time.monotonic()
        self.bar: Any = None

    def start(self) -> None:
        from tqdm.auto import tqdm

        self.started = time.monotonic()
        self.bar = tqdm(total=self.trials, unit="trial", desc="tune", disable=not self.enabled)

    def update_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        postfix: dict[str, str] = {"last": trial.state.name.lower()}
        try:
            postfix["best_mrr"] = f"{study.best_value:.4f}"
        except ValueError:
            postfix["best_mrr"] = "-"
        if self.budget_s is not None:
            left = max(self.budget_s - (time.monotonic() - self.started), 0.0)
            postfix["budget_left"] = f"{left:.0f}s"
        self.bar.set_postfix(postfix, refresh=False)
        self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _print_report(report: dict[str, Any]) -> None:
    from kgweave.tuning.report import format_table

    click.echo(format_table(report["trials"], report["best_trial"]))
    click.echo(
        f"best: trial {report['best_trial']}, valid MRR {report['best_valid_mrr']:.4f}"
        + (f", test MRR {report['test']['mrr']:.4f}" if report["test"].get("mrr") else "")
        + f" ({report['new_trials']} trials in {report['seconds']:.0f}s: "
        f"{report['stopped_because']})"
    )
    click.echo(f"model ({report['model_is']}): {report['model']}")
    click.echo(f"recipe: {report['files']['recipe']}  (kgweave train --recipe FILE reproduces it)")
    click.echo(f"plots: {report['files']['trials_plot']}")
    if "importance_plot" in report["files"]:
        top = ", ".join(f"{k} {v:.2f}" for k, v in list(report["importance"].items())[:4])
        click.echo(f"       {report['files']['importance_plot']} ({top})")
    else:
        click.echo(f"       {report['importance_note']}")


def register(group: click.Group) -> None:
    group.add_command(tune)
