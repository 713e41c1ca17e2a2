"""Refinement: the server's own first model, cut short by its time budget, trained on in the
background.

`kgweave serve` trains its first model within ``bootstrap_budget_s`` (and a full retrain it
starts on its own keeps that budget), so on a big graph the served model may be cut short of
its planned epochs. With ``continue_training`` the watcher (:mod:`kgweave.changes.retrain`)
then goes on training it between incremental updates, in the updater, at its lower OS
priority: each *refinement* is an incremental job (:mod:`kgweave.changes.incremental`) that
warm-starts from the served version and trains on every known fact, both directions, with
the full softmax, for ``refine_chunk_s`` seconds; it is registered as a version and activated
only when its MRR on the fixed validation set beats the served one's. Refinements stop when
the epochs the first training planned are done, or after ``refine_patience`` in a row that
were not activated. Changes come first: a refinement starts only when none is pending, and
when one arrives meanwhile the refinement wraps up after its current step (judged on the
steps it made), so the update of the changes waits one step, not ``refine_chunk_s``.

What is left is carried by the versions themselves (``incremental.refine_left`` of each
update, :func:`epochs_left`), so a restarted server goes on where the served version stands.
"""

from __future__ import annotations

from typing import Any

from kgweave.artifact import UPDATE
from kgweave.serving.training_run import REFINABLE

#: the job spec's key of a refinement: {"seconds": its time, "epochs": at most}
SPEC_KEY = "refine"


def epochs_left(config: dict[str, Any]) -> float:
    """The epochs a version's refinements have left (0: none to run): for an incremental
    version, what it carries; for a full training the server ran and its time budget cut
    short, its planned epochs less those it completed; else 0."""
    update = config.get(UPDATE)
    if isinstance(update, dict):
        left = update.get("refine_left", 0.0)
        return float(left) if isinstance(left, int | float) else 0.0
    run = config.get("run")
    if not config.get(REFINABLE) or not isinstance(run, dict):
        return 0.0
    if run.get("stopped_because") != "time_budget":
        return 0.0
    planned = config.get("training", {}).get("epochs")
    done = run.get("epochs_completed", 0)
    if not isinstance(planned, int | float) or not isinstance(done, int | float):
        return 0.0
    return max(float(planned) - float(done), 0.0)


def is_refinement(config: dict[str, Any]) -> bool:
    """Whether a version is a refinement (it then stands for a full training: the updates
    on top of it are judged against it, :func:`kgweave.changes.incremental.anchor_of`)."""
    update = config.get(UPDATE)
    return isinstance(update, dict) and isinstance(update.get(SPEC_KEY), dict)
