"""What a search leaves: the trials table, two plots, the recipe file and the best model.

``<out>/recipe.json`` holds the best trial's TrainConfig fields (``kgweave train --recipe``
reproduces its model), ``<out>/model`` the best trial's model itself, ``<out>/trials.png``
validation MRR against trial, ``<out>/importance.png`` parameter importance (Optuna's default
evaluator, PED-ANOVA, over the completed trials), ``<out>/report.json`` all of it as data.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kgweave import atomic
from kgweave.errors import FailedPreconditionError
from kgweave.training.curves import save_figure

if TYPE_CHECKING:
    import optuna

    from kgweave.data import KGDataset
    from kgweave.settings import Settings

#: completed trials parameter importance needs (fewer: the plot is left out, and said why)
MIN_TRIALS_FOR_IMPORTANCE = 4


def trial_rows(study: optuna.Study) -> list[dict[str, Any]]:
    """One row per trial: number, state, validation MRR, epochs, seconds, why it stopped, and
    the settings it drew."""
    rows = []
    for t in study.trials:
        last = max(t.intermediate_values) if t.intermediate_values else None
        value = t.value if t.value is not None or last is None else t.intermediate_values[last]
        rows.append(
            {
                "trial": t.number,
                "state": t.state.name.lower(),
                "valid_mrr": value,
                "epochs": t.user_attrs.get("epochs_completed"),
                "seconds": t.user_attrs.get("train_seconds"),
                "stopped_because": t.user_attrs.get("stopped_because", ""),
                "params": dict(t.params),
            }
        )
    return rows


def format_table(rows: list[dict[str, Any]], best: int | None) -> str:
    """The trials as aligned text; ``*`` marks the best."""
    lines = [f"  {'trial':>5} {'state':<8} {'valid mrr':>9} {'epochs':>6} {'seconds':>8}  settings"]
    for row in rows:
        mrr = "-" if row["valid_mrr"] is None else f"{row['valid_mrr']:.4f}"
        seconds = "-" if row["seconds"] is None else f"{row['seconds']:.1f}"
        params = " ".join(f"{k}={_short(v)}" for k, v in row["params"].items())
        lines.append(
            f"{'*' if row['trial'] == best else ' '} {row['trial']:>5} {row['state']:<8} "
            f"{mrr:>9} {row['epochs'] or '-':>6} {seconds:>8}  {params}"
        )
    return "\n".join(lines)


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def plot_trials(study: optuna.Study, path: Path, title: str) -> Path:
    """Validation MRR of each trial (pruned ones at their last report) and the best so far."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    best, best_line = -math.inf, []
    for kind, color in (("complete", "tab:blue"), ("pruned", "tab:gray")):
        points = [
            (r["trial"], r["valid_mrr"])
            for r in trial_rows(study)
            if r["state"] == kind and r["valid_mrr"] is not None
        ]
        if points:
            xs, ys = zip(*points, strict=True)
            ax.scatter(xs, ys, color=color, label=f"{kind} trials", s=18)
    for t in study.trials:
        if t.value is not None and t.state.name == "COMPLETE":
            best = max(best, t.value)
        best_line.append((t.number, best if best > -math.inf else None))
    shown = [(n, b) for n, b in best_line if b is not None]
    if shown:
        ax.step(*zip(*shown, strict=True), where="post", color="tab:orange", label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel("filtered MRR (valid)")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    return save_figure(fig, ax, path, title)


def importance(study: optuna.Study) -> tuple[dict[str, float], str]:
    """Parameter importance over the completed trials, or ``({}, why not)``."""
    import optuna

    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if len(complete) < MIN_TRIALS_FOR_IMPORTANCE:
        return {}, (
            f"parameter importance needs at least {MIN_TRIALS_FOR_IMPORTANCE} completed "
            f"trials, the study has {len(complete)}: no importance plot"
        )
    try:
        with warnings.catch_warnings():  # "few trials in some regimes": said in the docs
            warnings.simplefilter("ignore", UserWarning)
            found = optuna.importance.get_param_importances(study)
    except (RuntimeError, ValueError) as exc:  # e.g. no parameter common to all trials
        return {}, f"parameter importance could not be computed ({exc}): no importance plot"
    if not found:
        return {}, "no parameter was drawn in every completed trial: no importance plot"
    return dict(found), ""


def plot_importance(found: dict[str, float], path: Path, title: str) -> Path:
    """Horizontal bars, most important on top."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(found)[::-1]
    fig, ax = plt.subplots(figsize=(7, 0.4 * len(names) + 1.5), dpi=110)
    ax.barh(names, [found[n] for n in names], color="tab:blue")
    ax.set_xlabel("importance for validation MRR (Optuna, PED-ANOVA; sums to 1)")
    return save_figure(fig, ax, path, title)


def write_recipe(path: Path, recipe: dict[str, Any]) -> Path:
    """The recipe file: TrainConfig fields as JSON (``kgweave train --recipe FILE``)."""
    atomic.write_text(path, json.dumps(recipe, indent=2) + "\n")
    return path


def kept_trial(model_dir: Path) -> int | None:
    """The trial whose model ``model_dir`` holds (None when there is none)."""
    config = model_dir / "config.json"
    if not config.is_file():
        return None
    name = str(json.loads(config.read_text()).get("recipe", {}).get("name", ""))
    number = name.removeprefix("tuned trial ")
    return int(number) if number.isdigit() else None


def finish(
    study: optuna.Study,
    dataset: KGDataset,
    settings: Settings,
    out: Path,
    progress: bool = False,
) -> dict[str, Any]:
    """Write the recipe, plots and report of ``study`` to ``out``, and make sure ``out/model``
    is the best trial's model: kept as trained by the search, or retrained from its recipe
    when it is not there (a study resumed with another output folder). Returns the report."""
    import optuna

    complete = [  # a diverged trial completes with MRR 0 and no model: not a candidate
        t
        for t in study.trials
        if t.state == optuna.trial.TrialState.COMPLETE and "recipe" in t.user_attrs
    ]
    if not complete:
        raise FailedPreconditionError(
            "no trial completed within the budget (every one was pruned, diverged or failed): "
            "give a larger --budget or more --trials"
        )
    best = max(complete, key=lambda t: t.value or 0.0)
    recipe = dict(best.user_attrs["recipe"])
    model_dir = out / "model"
    how = "kept from the search"
    if kept_trial(model_dir) != best.number:
        from kgweave.engine import ArtifactOutput, train_model
        from kgweave.training.config import TrainConfig

        output = ArtifactOutput(
            model_dir,
            evaluate_test=len(dataset.split("test")) > 0,
            extra={"recipe": {"name": f"tuned trial {best.number}", "settings": recipe}},
        )
        train_model(
            dataset, TrainConfig(**recipe), output, settings, progress=progress, checkpoint=False
        )
        how = "retrained from its recipe"
    test = json.loads((model_dir / "config.json").read_text()).get("metrics", {}).get("test", {})
    title = f"{study.study_name}: {dataset.name}"
    files = {
        "recipe": write_recipe(out / "recipe.json", recipe),
        "trials_plot": plot_trials(study, out / "trials.png", title),
    }
    found, why_not = importance(study)
    if found:
        files["importance_plot"] = plot_importance(found, out / "importance.png", title)
    report = {
        "study": study.study_name,
        "dataset": dataset.name,
        "best_trial": best.number,
        "best_valid_mrr": best.value,
        "test": {k: v for k, v in test.items() if k != "per_relation"},
        "model": str(model_dir.resolve()),
        "model_is": how,
        "recipe": recipe,
        "importance": found,
        "importance_note": why_not,
        "files": {k: str(v.resolve()) for k, v in files.items()},
        "trials": trial_rows(study),
    }
    atomic.write_text(out / "report.json", json.dumps(report, indent=1, default=str) + "\n")
    return report
