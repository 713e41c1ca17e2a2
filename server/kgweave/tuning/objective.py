"""One search trial: draw settings, train, report validation MRR per evaluation, keep the best.

The trial's value is its best validation MRR (filtered, the split ``train`` early-stops on).
Each validation is reported to Optuna; a pruner that finds it hopeless stops the training
there (:meth:`TrainingHooks.on_evaluation`), and the trial ends PRUNED. A trial whose loss
diverges is complete with MRR 0 (the sampler learns to avoid its region).

The best trial's model is kept as trained (not retrained): when a trial beats every earlier
one, its artifact replaces ``<out>/model`` and its recipe (the TrainConfig that reproduces it:
the same seed gives the same run) is stored with the trial.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kgweave.errors import DivergedError
from kgweave.training.config import TrainConfig
from kgweave.training.loop import TrainingHooks
from kgweave.tuning import space

if TYPE_CHECKING:
    import optuna

    from kgweave.data import KGDataset
    from kgweave.settings import Settings


class PruningHooks(TrainingHooks):
    """Reports each validation MRR to the trial at its epoch; stops when the pruner says so,
    or when the MRR reaches ``target`` (the search's ``--target-mrr``: it has what it wants)."""

    def __init__(self, trial: optuna.Trial, target: float | None = None) -> None:
        self.trial = trial
        self.target = target
        self.pruned_at: int | None = None
        self.target_at: int | None = None

    def on_evaluation(self, epoch: int, metrics: dict[str, float]) -> bool:
        self.trial.report(metrics["mrr"], epoch)
        if self.target is not None and metrics["mrr"] >= self.target:
            self.target_at = epoch
            return False
        if self.trial.should_prune():
            self.pruned_at = epoch
            return False
        return True


def recipe_of(config: TrainConfig, epochs_completed: int, stopped_because: str) -> dict[str, Any]:
    """The TrainConfig fields that reproduce a finished run: a run cut by its time budget or
    stopped at the search's target MRR ran ``epochs_completed`` epochs, which the recipe then
    asks for instead (a time budget depends on the machine's speed; an epoch count does not)."""
    recipe = config.model_dump()
    if stopped_because in ("time_budget", "target_reached"):
        recipe["epochs"], recipe["time_budget_s"] = epochs_completed, None
    return recipe


@dataclass
class Objective:
    """Trains one trial on ``dataset``.

    ``fixed``: TrainConfig fields the user set (never searched); ``deadline``: the search's
    end (``time.monotonic()``), which caps each trial's training time; ``trial_time_s``: a cap
    per trial; ``should_stop``: cancels the trial's training (a cancelled job); ``out``: where
    the best trial's model is kept (``out/model``); ``target_mrr``: a trial's training stops
    at the validation that reaches it (the trial completes with that MRR; the search then
    stops, :func:`kgweave.tuning.study.run_search`).
    """

    dataset: KGDataset
    fixed: dict[str, Any]
    settings: Settings
    out: Path
    deadline: float | None = None
    trial_time_s: float | None = None
    should_stop: Callable[[], bool] | None = None
    target_mrr: float | None = None
    best_mrr: float = field(default=-1.0)

    def config_for(self, trial: optuna.Trial) -> TrainConfig:
        values = {**self.fixed, **space.suggest(trial, self.fixed)}
        limits = [t for t in (self.trial_time_s, values.get("time_budget_s")) if t]
        if self.deadline is not None:
            limits.append(max(self.deadline - time.monotonic(), 1.0))
        if limits:
            values["time_budget_s"] = min(limits)
        return TrainConfig(**values)

    def __call__(self, trial: optuna.Trial) -> float:
        import optuna

        from kgweave.device import resolve_device
        from kgweave.engine import ArtifactOutput
        from kgweave.training.loop import train

        config = self.config_for(trial)
        trial.set_user_attr("config", config.model_dump())
        hooks = PruningHooks(trial, self.target_mrr)
        try:
            result = train(
                self.dataset,
                config,
                device=resolve_device(self.settings.device),
                progress=False,
                should_stop=self.should_stop,
                hooks=hooks,
            )
        except DivergedError:
            trial.set_user_attr("stopped_because", "diverged")
            return 0.0
        mrr = result.best_valid.metrics["mrr"] if result.best_valid is not None else 0.0
        trial.set_user_attr("epochs_completed", result.epochs_completed)
        trial.set_user_attr("train_seconds", round(result.train_seconds, 3))
        stopped_because = (
            "target_reached" if hooks.target_at is not None else result.stopped_because
        )
        trial.set_user_attr("stopped_because", stopped_because)
        if result.stopped_because == "cancelled":
            raise optuna.TrialPruned("cancelled")
        if hooks.pruned_at is not None:
            raise optuna.TrialPruned(f"pruned at epoch {hooks.pruned_at} (valid MRR {mrr:.4f})")
        recipe = recipe_of(config, result.epochs_completed, stopped_because)
        trial.set_user_attr("recipe", recipe)
        if mrr > max(self.best_mrr, _study_best(trial.study)):
            self.best_mrr = mrr
            staging = self.out / "model.partial"
            shutil.rmtree(staging, ignore_errors=True)
            ArtifactOutput(
                staging,
                evaluate_test=len(self.dataset.split("test")) > 0,
                extra={"recipe": {"name": f"tuned trial {trial.number}", "settings": recipe}},
            ).write(result, self.dataset, self.settings)
            shutil.rmtree(self.out / "model", ignore_errors=True)
            staging.rename(self.out / "model")
            trial.set_user_attr("kept", True)
        return float(mrr)


def _study_best(study: optuna.Study) -> float:
    """The best completed trial's value, -1 when none has completed (a resumed study's best
    came from an earlier run; its model is in ``out/model`` already)."""
    try:
        return float(study.best_value)
    except ValueError:
        return -1.0
