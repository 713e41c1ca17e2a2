"""The learning rate of every step: a linear warm-up, then the schedule.

``rate = lr × warm-up × schedule``:

- warm-up (``warmup_epochs`` > 0): step ``s`` of the first ``W`` epochs' ``S`` steps uses
  ``s / S`` (so from ``lr / S`` up to ``lr``), then 1;
- ``constant``: 1;
- ``cosine``: ``0.01 + 0.99 (1 + cos(π e / E)) / 2`` after epoch ``e`` of ``E`` (down to 1 %);
- ``plateau``: multiplied by ``plateau_factor`` each time validation MRR has not improved (by
  more than a relative 1e-4) for more than ``plateau_patience`` evaluations in a row, as
  ``torch.optim.lr_scheduler.ReduceLROnPlateau(mode="max")`` does; the count restarts after
  each reduction. Driven by the same validation MRR as early stopping and the best model.

The state (the plateau's best MRR, count and factor) is saved with checkpoints.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from kgweave.training.config import TrainConfig

#: ReduceLROnPlateau's default: an improvement must beat the best by this relative margin
_THRESHOLD = 1e-4


class LearningRate:
    """Sets the optimizer's rate before every step (:meth:`step`) and follows the epochs
    (:meth:`end_epoch`) and validations (:meth:`evaluated`).

    Args:
        steps_per_epoch: optimizer steps in one epoch (for the per-step warm-up).
    """

    def __init__(
        self, config: TrainConfig, optimizer: torch.optim.Optimizer, steps_per_epoch: int
    ) -> None:
        self.config = config
        self.optimizer = optimizer
        self.warmup_steps = config.warmup_epochs * max(steps_per_epoch, 1)
        self.steps_done = 0
        self.schedule = 1.0  # the cosine or plateau factor
        self.best = -math.inf
        self.bad = 0

    @property
    def rate(self) -> float:
        """The rate of the next step."""
        warm = 1.0
        if self.steps_done < self.warmup_steps:
            warm = (self.steps_done + 1) / self.warmup_steps
        return self.config.lr * warm * self.schedule

    def step(self) -> None:
        """Before an optimizer step: set its rate."""
        rate = self.rate
        for group in self.optimizer.param_groups:
            group["lr"] = rate
        self.steps_done += 1

    def end_epoch(self, epoch: int) -> None:
        """After epoch ``epoch`` (1-based): the cosine decay."""
        if self.config.lr_schedule == "cosine":
            progress = min(epoch / self.config.epochs, 1.0)
            self.schedule = 0.01 + 0.99 * (1 + math.cos(math.pi * progress)) / 2

    def evaluated(self, mrr: float) -> bool:
        """After a validation: the plateau decay. Returns whether the rate was lowered."""
        if self.config.lr_schedule != "plateau":
            return False
        if mrr > self.best * (1 + _THRESHOLD):  # the first always is (best: -inf)
            self.best, self.bad = mrr, 0
            return False
        self.bad += 1
        if self.bad <= self.config.plateau_patience:
            return False
        self.schedule *= self.config.plateau_factor
        self.bad = 0
        return True

    def state(self) -> dict[str, Any]:
        """For a checkpoint."""
        return {"schedule": self.schedule, "best": self.best, "bad": self.bad}

    def restore(self, state: dict[str, Any], epoch: int, steps_per_epoch: int) -> None:
        """Continue after ``epoch`` from a checkpoint's :meth:`state` (empty: an older
        checkpoint, whose cosine factor follows from the epoch)."""
        self.steps_done = epoch * steps_per_epoch
        self.end_epoch(epoch)
        if state:
            self.schedule = float(state["schedule"])
            self.best = float(state["best"])
            self.bad = int(state["bad"])
