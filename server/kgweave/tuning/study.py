"""A budgeted search: an Optuna study stored in the data folder, run until its budget is spent.

The study lives in ``<data>/tuning/<study>.db`` (SQLite), so a search stopped by its budget,
Ctrl-C or a crash continues where it was with the same study name. TPE draws the settings
(:mod:`kgweave.tuning.space`); a pruner stops trials whose validation MRR falls behind (median:
below the median of earlier trials at the same epoch; hyperband: successive halving over
epochs). The first trial is the recipe ``kgweave train`` would pick for this graph (enqueued
whenever the study has not tried it yet: a new study, or one continued after the rules
changed), so a search never ends below the no-flag default it started from. A target MRR
stops the search at the first validation that reaches it.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kgweave.errors import FailedPreconditionError, InvalidArgumentError, echo
from kgweave.tuning import space
from kgweave.tuning.objective import Objective

if TYPE_CHECKING:
    import optuna

    from kgweave.data import KGDataset
    from kgweave.settings import Settings

PRUNERS = ("median", "hyperband", "none")

_DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?")
_STUDY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")


def parse_budget(text: str) -> float:
    """Seconds in ``90s``, ``30m``, ``1h``, ``1h30m`` or a plain number of seconds."""
    value = text.strip().lower()
    try:
        seconds = float(value)
    except ValueError:
        match = _DURATION.fullmatch(value)
        if not value or match is None or not any(match.groups()):
            raise InvalidArgumentError(
                f"--budget: {echo(text)} is not a duration: use 90s, 30m, 1h or 1h30m"
            ) from None
        hours, minutes, secs = (float(g) if g else 0.0 for g in match.groups())
        seconds = hours * 3600 + minutes * 60 + secs
    if seconds <= 0:
        raise InvalidArgumentError(f"--budget: {echo(text)} must be more than 0 seconds")
    return seconds


def study_path(settings: Settings, name: str) -> Path:
    """Where study ``name`` is stored: ``<data>/tuning/<name>.db``."""
    return settings.data_dir / "tuning" / f"{study_path_name(name)}.db"


def make_pruner(name: str, eval_every: int, epochs: int) -> optuna.pruners.BasePruner:
    """``median``: prune below the median of earlier trials at the same epoch, from the second
    validation on and once 3 trials have finished; ``hyperband`` over epochs; ``none``."""
    import optuna

    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=eval_every)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=eval_every, max_resource=epochs)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise InvalidArgumentError(f"--pruner: {echo(name)} is not one of {', '.join(PRUNERS)}")


def open_study(
    path: Path,
    name: str,
    pruner: optuna.pruners.BasePruner,
    identity: dict[str, Any],
    must_exist: bool = False,
    seed: int = 0,
) -> optuna.Study:
    """Create study ``name`` in the SQLite file ``path``, or continue it.

    ``identity`` (the dataset's fingerprint and the fixed settings) is stored with a new study;
    continuing one asks for the same, since trials on another graph are not comparable.
    ``must_exist``: refuse to create (``--resume``).
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if must_exist and not path.is_file():
        raise FailedPreconditionError(
            f"no study {echo(name)} to resume (looked for {path}); leave out --resume to start it"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    storage = optuna.storages.RDBStorage(f"sqlite:///{path}")
    if must_exist and name not in {s.study_name for s in storage.get_all_studies()}:
        raise FailedPreconditionError(f"no study {echo(name)} in {path} to resume")
    study = optuna.create_study(
        storage=storage,
        study_name=name,
        direction="maximize",
        pruner=pruner,
        load_if_exists=True,
    )
    # seeded, and by the trials so far: a continued study draws new settings, not the
    # sequence its first run drew
    study.sampler = optuna.samplers.TPESampler(
        seed=seed + len(study.trials), n_startup_trials=5, multivariate=True
    )
    stored = study.user_attrs.get("identity")
    if stored is None:
        study.set_user_attr("identity", identity)
    elif stored != identity:
        if stored.get("dataset") != identity.get("dataset"):
            what = "on another graph (its dataset fingerprint differs)"
        else:
            was, now = stored.get("fixed", {}), identity.get("fixed", {})
            what = (
                "with other fixed settings ("
                + ", ".join(
                    f"{k}: {was.get(k)} then, {now.get(k)} now"
                    for k in sorted({*was, *now})
                    if was.get(k) != now.get(k)
                )
                + ")"
            )
        raise FailedPreconditionError(
            f"study {echo(name)} was run {what}: give the same flags to continue it, or "
            "another --study name for a new search"
        )
    return study


@dataclass
class SearchResult:
    """How a search ended: the study, the trials this run added, the seconds it took, and why
    it stopped (``N trials run``, ``budget of Ts spent``, ``target reached after N trials,
    Ts``, ``cancelled``)."""

    study: optuna.Study
    new_trials: int
    seconds: float
    stopped_because: str


#: called after each trial with (study, trial): the progress bar
TrialCallback = Callable[["optuna.Study", "optuna.trial.FrozenTrial"], None]


def run_search(
    study: optuna.Study,
    dataset: KGDataset,
    fixed: dict[str, Any],
    settings: Settings,
    out: Path,
    budget_s: float | None = None,
    trials: int | None = None,
    trial_time_s: float | None = None,
    first: dict[str, Any] | None = None,
    on_trial: TrialCallback | None = None,
    should_stop: Callable[[], bool] | None = None,
    target_mrr: float | None = None,
) -> SearchResult:
    """Run trials until ``trials`` more have run or ``budget_s`` is spent (at least one of the
    two); each trial's training ends by the budget's end. ``first``: TrainConfig settings
    tried first unless the study has tried them (the graph's recipe). ``should_stop``: polled
    after each trial. ``target_mrr``: stop as soon as a trial's validation MRR reaches it (its
    training stops at that validation; a continued study that has reached it runs nothing).
    """
    if budget_s is None and trials is None:
        raise InvalidArgumentError("give --budget, --trials or both")
    started = time.monotonic()
    deadline = started + budget_s if budget_s is not None else None
    before = len(study.trials)
    if target_mrr is not None:
        reached = _reached(study, target_mrr)
        if reached is not None:
            return SearchResult(
                study,
                0,
                0.0,
                f"target already reached by trial {reached.number} (valid MRR {reached.value:.4f})",
            )
    if first is not None:
        enqueue_once(study, space.params_of(first, fixed))
    objective = Objective(
        dataset, fixed, settings, out, deadline, trial_time_s, should_stop, target_mrr
    )

    def after_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if on_trial is not None:
            on_trial(study, trial)
        if should_stop is not None and should_stop():
            study.stop()
        if target_mrr is not None and trial.value is not None and trial.value >= target_mrr:
            study.stop()

    study.optimize(
        objective,
        n_trials=trials,
        timeout=budget_s,
        callbacks=[after_trial],
        catch=(),
        gc_after_trial=True,
    )
    done = len(study.trials) - before
    seconds = time.monotonic() - started
    if target_mrr is not None and _reached(study, target_mrr, since=before) is not None:
        plural = "s" if done != 1 else ""
        why = f"target reached after {done} trial{plural}, {seconds:.0f} s"
    elif trials is not None and done >= trials:
        why = f"{trials} trials run"
    elif should_stop is not None and should_stop():
        why = "cancelled"
    else:
        why = f"budget of {budget_s or 0:g}s spent"
    return SearchResult(study, done, seconds, why)


def _reached(study: optuna.Study, target: float, since: int = 0) -> optuna.trial.FrozenTrial | None:
    """The first completed trial (numbered ``since`` or later) whose MRR reaches ``target``."""
    import optuna

    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        if trial.number >= since and trial.value is not None and trial.value >= target:
            return trial
    return None


def enqueue_once(study: optuna.Study, params: dict[str, Any]) -> bool:
    """Queue a trial with ``params`` (Optuna names) to run next, unless one with the same
    values has completed, been pruned or is queued already; True when queued. A trial that
    failed or was interrupted (a crash leaves it RUNNING) does not count: it runs again.

    (Optuna's ``enqueue_trial(skip_if_exists=True)`` counts those too, so a search stopped
    during its first trial would never try the recipe.)"""
    if tried(study, params) is not None:
        return False
    study.enqueue_trial(params)
    return True


def tried(study: optuna.Study, params: dict[str, Any]) -> optuna.trial.FrozenTrial | None:
    """The first trial with ``params`` (Optuna names) that completed, was pruned or is
    queued."""
    import optuna

    states = (
        optuna.trial.TrialState.COMPLETE,
        optuna.trial.TrialState.PRUNED,
        optuna.trial.TrialState.WAITING,
    )
    for trial in study.get_trials(deepcopy=False, states=states):
        if trial.system_attrs.get("fixed_params", trial.params) == params:
            return trial
    return None


def default_study_name(dataset: str, fixed: dict[str, Any]) -> str:
    """``DATASET-MODEL`` (``-any`` when the model is searched), in study-name characters."""
    name = f"{dataset}-{fixed.get('model', 'any')}"
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:100]


def check_tuning(tuning: dict[str, Any]) -> None:
    """Refuse a server job's TuningSettings that cannot run (one-line errors)."""
    if not tuning.get("budget_s") and not tuning.get("trials"):
        raise InvalidArgumentError("tuning: give budget_s, trials or both")
    for key in ("budget_s", "trial_budget_s", "trials"):
        value = tuning.get(key) or 0
        if not math.isfinite(value) or value < 0:
            raise InvalidArgumentError(f"tuning: {key} must be a finite number ≥ 0, got {value}")
    if tuning.get("pruner") and tuning["pruner"] not in PRUNERS:
        raise InvalidArgumentError(
            f"tuning: pruner {echo(tuning['pruner'])} is not one of {', '.join(PRUNERS)}"
        )
    if tuning.get("study"):
        study_path_name(tuning["study"])


def study_path_name(name: str) -> str:
    """``name`` when it is a valid study name (else a one-line error)."""
    if not _STUDY_NAME.fullmatch(name):
        raise InvalidArgumentError(
            f"--study: {echo(name)} is not a study name: letters, digits, '.', '_' and '-' "
            "(at most 100, starting with a letter or digit)"
        )
    return name


def run_tuning(
    data: KGDataset,
    fixed: dict[str, Any],
    settings: Settings,
    name: str,
    out: Path | None,
    budget_s: float | None,
    trials: int | None,
    trial_budget_s: float | None = None,
    pruner: str = "median",
    resume: bool = False,
    on_trial: TrialCallback | None = None,
    should_stop: Callable[[], bool] | None = None,
    say: Callable[[str], None] = lambda line: None,
    target_mrr: float | None = None,
) -> dict[str, Any]:
    """A whole search, as ``kgweave tune`` and a server job run it: open (or continue) study
    ``name``, run trials, then write the report, recipe, plots and best model to ``out``
    (default ``<data>/tuning/<name>``); returns the report (:func:`report.finish`).

    The graph's recipe (:mod:`kgweave.tuning.recipes`) is the first trial unless the study
    has tried it, and its settings outside the search table (validation sample, evaluation
    interval) hold for every trial unless ``fixed`` sets them. ``target_mrr``: stop at the
    first validation MRR that reaches it.
    """
    from kgweave.training.config import TrainConfig
    from kgweave.tuning import recipes
    from kgweave.tuning.report import finish

    graph = recipes.recipe_for(data.train, data.num_entities, data.num_relations)
    base = {k: v for k, v in graph.settings.items() if k not in space.fields()}
    if graph.settings.get("regime") == "negative-sampling":  # 1-N would not fit: not searched
        base["regime"] = "negative-sampling"
    fixed = {**base, **fixed}
    path = study_path(settings, name)
    out = out or settings.data_dir / "tuning" / name
    shape = TrainConfig(**fixed)
    study = open_study(
        path,
        name,
        make_pruner(pruner, shape.eval_every, shape.epochs),
        identity={"dataset": data.fingerprint, "fixed": fixed},
        must_exist=resume,
    )
    first = TrainConfig(**{**graph.settings, **fixed}).model_dump()
    done = tried(study, space.params_of(first, fixed))
    say(
        f"study {name} ({path}): "
        + (f"continuing after {len(study.trials)} trials" if study.trials else "new")
        + f"; dataset {data.name}: {data.num_entities} entities, {data.num_relations} "
        + "relations; "
        + (
            f"first trial: recipe {graph.name}"
            if done is None
            else f"recipe {graph.name} tried already (trial {done.number})"
        )
    )
    result = run_search(
        study,
        data,
        fixed,
        settings,
        out,
        budget_s=budget_s,
        trials=trials,
        trial_time_s=trial_budget_s,
        first=first,
        on_trial=on_trial,
        should_stop=should_stop,
        target_mrr=target_mrr,
    )
    if result.stopped_because == "cancelled":
        return {"study": name, "stopped_because": "cancelled", "new_trials": result.new_trials}
    report = finish(study, data, settings, out)
    report["stopped_because"] = result.stopped_because
    report["seconds"] = round(result.seconds, 1)
    report["new_trials"] = result.new_trials
    if target_mrr is not None:
        report["target_mrr"] = target_mrr
        report["target_reached"] = report["best_valid_mrr"] >= target_mrr
    return report
