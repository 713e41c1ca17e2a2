"""Job worker processes: where training jobs and incremental updates run, beside serving.

A worker is a spawned process that talks to the server over two one-way pipes, and holds only
its own ends (progress out, a lifeline in). The server sends jobs (``("run", job_id, spec,
out, settings)``), cancellations (``("cancel", job_id)``) and requests to end soon keeping the
work done (``("wrap_up", job_id)``, a refinement when changes wait) down the lifeline; when the
server is gone (even by kill -9) the lifeline reaches end of file and the worker exits at once
instead of training for nobody. Two kinds, one code path (:func:`worker_main`):

- a one-shot worker runs one job and exits: full retrains and searches (their memory goes
  back to the system with the process);
- the warm worker (the *updater*, ``warm=True``) is started with the change pipeline and runs
  incremental updates one after the other: Python, torch and the update code are imported
  once, and what a runner keeps between jobs (:mod:`kgweave.changes.incremental` keeps the
  version it loaded and the model it wrote last, so the next update starts from memory) stays
  in the process. Starting a worker per update cost most of an update's seconds
  (docs/benchmarks.md, "Incremental updates and quality").

Crash safety is the same for both: while a job runs the worker holds ``worker.lock`` in the
job's folder (with its pid), so a restarted server knows whether it is still there; a job's
artifact is complete only once ``result.json`` is written beside it; a worker killed midway
fails its job (the server's monitor reads end of file on its pipe) and the next warm job
starts a fresh updater.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import importlib
import logging
import os
import queue
import signal
import threading
import traceback
from pathlib import Path
from typing import Any

from kgweave import atomic, killpoints
from kgweave.allocator import reuse_freed_memory
from kgweave.errors import KGWeaveError
from kgweave.serving.placement import BACKGROUND_NICE, lower_process_priority

log = logging.getLogger(__name__)

#: exit status of a worker whose server went away (its lifeline pipe reached end of file)
ORPHANED_EXIT = 75
#: in a job's folder: the lock its worker holds (with its pid) while it runs the job, and the
#: worker's mark that the artifact is complete
WORKER_LOCK, RESULT = "worker.lock", "result.json"
#: what the updater imports when it starts, before its first job ("module" or
#: "module:function", the function then called once)
WARM_IMPORTS = ("torch", "kgweave.changes.incremental:warm_up")
#: the OS priority of the updater and of background jobs (retrains the server started on its
#: own), lowered: the serving process's queries come first on a busy machine (PredictLinks
#: p99 while updates run, docs/benchmarks.md)
UPDATER_NICE = BACKGROUND_NICE


class Worker:
    """The server's side of one worker process: its pipes and the process."""

    def __init__(
        self,
        context: Any,
        warm: bool,
        name: str,
        cpus: frozenset[int] = frozenset(),
        nice: int | None = None,
    ) -> None:
        """``cpus``: the CPUs the worker is confined to (``background_cpus``; empty:
        anywhere); ``nice``: how much lower its OS priority is (None: the server's)."""
        self.warm = warm
        # one-way pipes; after the start each side holds only its own ends
        self.events, events_child = context.Pipe(duplex=False)
        lifeline_child, self.lifeline = context.Pipe(duplex=False)
        self.process = context.Process(
            target=worker_main,
            args=(events_child, lifeline_child, not warm, WARM_IMPORTS if warm else (), cpus, nice),
            name=name,
            daemon=True,
        )
        try:
            self.process.start()
        finally:
            events_child.close()
            lifeline_child.close()

    @property
    def pid(self) -> int:
        return int(self.process.pid or 0)

    @property
    def alive(self) -> bool:
        return bool(self.process.is_alive())

    def submit(self, job_id: str, spec: dict[str, Any], out: str, settings_json: str) -> None:
        """Hand the worker a job (OSError: the worker is gone)."""
        self.lifeline.send(("run", job_id, spec, out, settings_json))

    def cancel(self, job_id: str) -> None:
        with contextlib.suppress(OSError):  # a worker that already exited
            self.lifeline.send(("cancel", job_id))

    def wrap_up(self, job_id: str) -> None:
        """Ask the job to end soon and keep what it did (a refinement: its steps so far)."""
        with contextlib.suppress(OSError):
            self.lifeline.send(("wrap_up", job_id))

    def close(self) -> None:
        """Let the worker go (its lifeline closes: an idle updater exits) and reap it."""
        with contextlib.suppress(OSError):
            self.lifeline.close()
        with contextlib.suppress(OSError):
            self.events.close()
        self.process.join(timeout=10)


def thread_locked_progress() -> None:
    """Progress bars of this (child) process lock with a thread lock: tqdm's default is a
    process-shared semaphore, which a worker that ends with ``os._exit`` (its server gone)
    never releases, and the resource tracker then warns of at the server's exit ("leaked
    semaphore objects")."""
    from tqdm import tqdm

    tqdm.set_lock(threading.RLock())


def worker_main(
    events: Any,
    lifeline: Any,
    once: bool,
    imports: tuple[str, ...] = (),
    cpus: frozenset[int] = frozenset(),
    nice: int | None = None,
) -> None:
    """Entry point of a worker process: run the jobs the server sends, one at a time (only the
    first when ``once``), on ``cpus`` (empty: anywhere), ``nice`` lower (None: as the
    server).

    ``events`` is the sending end of a pipe to the server: per job, progress rows, then exactly
    one of ``{"state": "succeeded", "metrics": ...}``, ``{"state": "cancelled"}`` or
    ``{"state": "failed", "message": ...}``. ``lifeline`` is the receiving end of a pipe from
    the server, which only the server can write (see the module doc)."""
    jobs: queue.Queue[tuple[str, dict[str, Any], str, str]] = queue.Queue()
    cancelled: set[str] = set()
    wrapping: set[str] = set()  # asked to end soon, keeping their work

    def watch_server() -> None:
        try:
            while True:
                message = lifeline.recv()
                if message[0] == "run":
                    jobs.put(message[1:])
                elif message[0] == "cancel":
                    cancelled.add(message[1])
                elif message[0] == "wrap_up":
                    wrapping.add(message[1])
        except (EOFError, OSError):
            os._exit(ORPHANED_EXIT)  # the server died: nobody is waiting for this run

    threading.Thread(target=watch_server, name="kgweave-lifeline", daemon=True).start()
    thread_locked_progress()
    reuse_freed_memory()  # a fresh process: tuned as the CLI's
    lower_process_priority(nice, cpus)
    warm(imports)  # the updater: paid once, before its first job
    while True:
        job_id, spec, out, settings_json = jobs.get()
        run_one(spec, Path(out), settings_json, events, lambda j=job_id: j in cancelled,
                lambda j=job_id: j in wrapping)  # fmt: skip
        if once:
            return


def where() -> str:
    """This process's CPUs and torch threads, as the job log shows them."""
    import torch

    from kgweave.cpus import format_cpus

    cpus = format_cpus(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else "any"
    return f"CPUs {cpus}, torch threads {torch.get_num_threads()}"


def warm(imports: tuple[str, ...]) -> None:
    """Import each of ``imports`` ("module", or "module:function": then call it once)."""
    for name in imports:
        module, _, function = name.partition(":")
        imported = importlib.import_module(module)
        if function:
            getattr(imported, function)()


def run_one(
    spec: dict[str, Any],
    out: Path,
    settings_json: str,
    events: Any,
    should_stop: Any,
    should_wrap_up: Any = None,
) -> None:
    """One job in a worker: hold its ``worker.lock``, log to its ``job.log``, run it
    (:func:`kgweave.serving.training_run.run_job`), mark a finished artifact with
    ``result.json``, and tell the server how it ended."""
    from kgweave.serving.training_run import JobRun, run_job
    from kgweave.settings import Settings

    folder = out.parent
    log_path = folder / "job.log"
    handler = logging.FileHandler(log_path)
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)

    def report(event: dict[str, Any]) -> None:
        events.send(event)
        if "epoch" in event or event.get("phase") == "evaluating":  # (tests: kgweave.killpoints)
            killpoints.reached("training" if "epoch" in event else "evaluating")

    with (folder / WORKER_LOCK).open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        lock.write(str(os.getpid()))
        lock.flush()
        try:
            log.info("worker pid %d, OS priority: nice %d, %s", os.getpid(), os.nice(0), where())
            settings = Settings.model_validate_json(settings_json)
            metrics = run_job(JobRun(spec, out, settings, report, should_stop, should_wrap_up))
            if metrics is None:
                events.send({"state": "cancelled"})
            else:
                atomic.write_json(folder / RESULT, {"metrics": metrics})
                killpoints.reached("saved")
                events.send({"state": "succeeded", "metrics": metrics})
        except KGWeaveError as exc:
            events.send({"state": "failed", "message": exc.message})
        except BaseException as exc:  # the server must always hear how the job ended
            with log_path.open("a") as handle:
                handle.write(traceback.format_exc())
            events.send(  # the client reads "message"; "detail" goes to the server log only
                {
                    "state": "failed",
                    "message": f"internal error in the training job ({type(exc).__name__}); "
                    "see the server log",
                    "detail": f"{type(exc).__name__}: {exc} (traceback in {log_path})",
                }
            )
        finally:
            root.removeHandler(handler)
            handler.close()


def wait_for_worker_exit(lock_path: Path) -> int:
    """Make sure a dead server's worker is gone; returns its pid (0 when none is known).

    The worker holds ``lock_path`` locked while it runs the job, so the lock proves the pid in
    it is still that worker: one still there (its lifeline just closed) is killed, then waited
    for.
    """
    if not lock_path.is_file():
        return 0
    with lock_path.open("r+") as handle:
        try:
            pid = int(handle.read().strip() or 0)
        except ValueError:
            pid = 0
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            if pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            fcntl.flock(handle, fcntl.LOCK_EX)  # released by the kernel when it is gone
    return pid
