"""Named points where crash tests stop a process with SIGKILL, deterministically.

Read only by tests (``tests/test_job_recovery.py``, ``tests/test_change_crash.py``); unset,
:func:`reached` does nothing.
``KGWEAVE_TEST_KILL=<who>:<point>`` kills, when the process reaches ``<point>``:

- ``worker``: the job's worker process itself (kill -9 of the worker; its server lives on);
- ``crash``: the worker's server first (its parent, ``kgweave serve``), then the worker, as a
  crash of the machine would;
- ``server``: the serving process, at a point of its own.

Points of a training job: ``training`` (its first epoch reported), ``evaluating`` (training
done, the evaluation starting), ``saving`` (the artifact half written: its weights, not yet
its config), ``saved`` (the artifact complete and marked finished, the server not yet told),
and in the server ``registering`` (about to register a finished job's model). An incremental
update is a job too (its worker is the warm updater), so these points stop it alike.

Points of the change pipeline, in the serving process: ``graph-written`` (a write's changes
are in the graph, not yet in the event log, not acknowledged), ``logged`` (its events are
appended and fsynced, the write not yet acknowledged), ``served`` (the applier swapped in the
batch's model, the write not yet acknowledged, the overlay not saved), ``overlay-saved`` (the
applier's checkpoint saved the overlay, its offset not yet committed) and ``update-registered`` (an
incremental update's version registered and activated, the updates' log position not yet
committed).

Not a setting (:mod:`kgweave.settings`): nothing an operator sets, and it can only stop a
process.
"""

from __future__ import annotations

import os
import signal

ENV = "KGWEAVE_TEST_KILL"
POINTS = ("training", "evaluating", "saving", "saved", "registering")
CHANGE_POINTS = ("graph-written", "logged", "served", "overlay-saved", "update-registered")


def reached(point: str, server: bool = False) -> None:
    """``point`` is reached, in a job's worker (or, with ``server``, in the serving process):
    SIGKILL as ``KGWEAVE_TEST_KILL`` says, if it names this point and this process."""
    wanted = os.environ.get(ENV, "")
    if not wanted:
        return
    who, _, where = wanted.partition(":")
    if where != point or (who == "server") != server:
        return
    if who == "crash":
        os.kill(os.getppid(), signal.SIGKILL)
    if who in ("crash", "worker", "server"):
        os.kill(os.getpid(), signal.SIGKILL)
