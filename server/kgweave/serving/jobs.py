"""Training jobs: each runs in a worker process, beside serving.

A job trains into its own working folder (``jobs/<id>/model``). Only a job that succeeds
hands its artifact to the registry; a cancelled or failed job leaves the registry and the
active model exactly as they were. One job runs at a time: a training run or a search in a
worker process of its own, an incremental update in the warm updater process kept between
updates (:mod:`kgweave.serving.workers`).

Over 400 lines: one class, the job's whole life on the server side (start, progress, cancel,
registration, the record on disk and its recovery after a crash), which reads best in one
place; the worker side and its processes are in :mod:`kgweave.serving.workers`.

Nothing is stranded when the server dies, even by kill -9: the worker talks to the server over
two one-way pipes, and holds only its own ends (progress out, a lifeline in). When the server is
gone the lifeline reaches end of file and the worker exits at once. Each job's state is kept in
``jobs/<id>/job.json`` (replaced atomically on every change of state or phase); a restarted
server reads them back: finished jobs stay visible to GetJob, and a job that was still running
is reported failed with phase ``interrupted`` and the reason, or, when its worker had finished
the artifact, the model is registered (not activated). Its working files are then removed.

A job reads the graph, or a dataset confined to the server's datasets folder and cache
(:func:`~kgweave.data.sources.confine_dataset`). What a client reads of a failed job says what
failed in its own terms; server paths and internal detail go to the server log only
(:func:`public_message`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import multiprocessing as mp
import re
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from kgweave import atomic, killpoints
from kgweave.errors import FailedPreconditionError, InvalidArgumentError, NotFoundError, echo
from kgweave.serving.placement import lower_thread_priority
from kgweave.serving.workers import (
    RESULT,
    UPDATER_NICE,
    WORKER_LOCK,
    Worker,
    wait_for_worker_exit,
)
from kgweave.settings import Settings
from kgweave.training import TrainConfig

log = logging.getLogger(__name__)


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def final(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


@dataclass
class Job:
    """What a client sees of a job."""

    job_id: str
    state: JobState = JobState.QUEUED
    phase: str = "queued"
    epoch: int = 0
    epochs: int = 0
    loss: float = 0.0
    valid_mrr: float = 0.0
    eta_s: float = -1.0
    model_version: str = ""
    activated: bool = False
    message: str = ""
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)
    revision: int = 0
    #: the running phase's throughput, in ``rate_unit`` (0 and "": not measured)
    rate: float = 0.0
    rate_unit: str = ""

    def snapshot(self) -> Job:
        return Job(**asdict(self))


#: the job's record on disk (its worker's lock and finished mark: :mod:`kgweave.serving.workers`)
RECORD = "job.json"


#: how long a training request waits for an incremental update under way, or for a retrain the
#: server started to end once cancelled (seconds: an update is a bounded number of steps;
#: past this the request is refused as when any job runs)
UPDATE_WAIT_S = 300.0
#: why a retrain the server started ends when a user's training request comes
SUPERSEDED = (
    "cancelled: a training request went first (the server starts its retrain again if it is "
    "still due)"
)

#: called with (artifact folder, job) when a job's model is ready; returns (version,
#: activated, message). Runs on the job's monitor thread.
OnSuccess = Callable[[Path, Job, str], tuple[str, bool, str]]


class JobManager:
    """Starts, watches and cancels training jobs."""

    def __init__(self, settings: Settings, on_success: OnSuccess, recover: bool = True) -> None:
        self.settings = settings
        self.root = settings.jobs_dir
        self._on_success = on_success
        self._jobs: dict[str, Job] = {}
        self._cancel: dict[str, threading.Event] = {}
        #: each running job's worker, and the warm one (the updater) kept between its jobs
        self._workers: dict[str, Worker] = {}
        self._warm: Worker | None = None
        self._policies: dict[str, str] = {}
        self._pids: dict[str, int] = {}
        self._lock = threading.Condition()
        #: the incremental updates the server started on its own after graph changes, and the
        #: full retrains it started (``background``): a user's training request goes first
        self._updates: set[str] = set()
        self._retrains: set[str] = set()
        self._superseded: set[str] = set()
        #: training requests waiting for an update under way (see :meth:`start`)
        self.waiting = 0
        #: asyncio watchers per job: futures woken (in their own loops) on the next change
        self._watchers: dict[str, list[asyncio.Future[None]]] = {}
        self._context = mp.get_context("spawn")
        self._cpus = settings.background_cpu_set  # the workers' CPUs (empty: any)
        self.on_change: Callable[[Job], None] | None = None
        #: called with every change of a job too (the retrain watcher's wake-up)
        self.listeners: list[Callable[[Job], None]] = []
        #: jobs found running by :meth:`recover` (reported interrupted or registered)
        self.recovered: list[Job] = []
        if recover:  # the serving process owns jobs/: no other one may settle its jobs
            self.recover()

    # ---- queries
    def get(self, job_id: str) -> Job:
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                raise NotFoundError(f"no job {echo(job_id)}")
            return job.snapshot()

    def active_count(self) -> int:
        with self._lock:
            return sum(not j.state.final for j in self._jobs.values())

    @property
    def busy(self) -> bool:
        """A job is under way, or a training request waits to start: the retrain watcher
        starts nothing now (it is woken when the job changes)."""
        with self._lock:  # (re-entrant: active_count takes it too)
            return self.waiting > 0 or self.active_count() > 0

    async def next_change(self, job_id: str, revision: int) -> Job:
        """The job once its revision differs from ``revision``, awaited in the event loop:
        a watcher (a WatchJob stream) holds no thread while it waits."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None or job.revision != revision:
                return self.get(job_id)
            self._watchers.setdefault(job_id, []).append(waiter)
        try:
            await waiter
        finally:
            with self._lock, contextlib.suppress(KeyError, ValueError):
                self._watchers[job_id].remove(waiter)
        return self.get(job_id)

    # ---- commands
    def start(
        self,
        config: dict[str, Any],
        dataset: str,
        policy: str,
        spec: dict[str, Any] | None = None,
        background: bool = False,
    ) -> Job:
        """Queue a job and start its worker process; returns at once. ``spec``: the worker's
        spec as it is (an incremental update, :mod:`kgweave.changes.incremental`) instead of
        a training run (or a search: ``config["tuning"]``) of ``config`` on ``dataset``;
        ``background``: the run's worker at a lowered OS priority (a retrain the server
        started on its own: serving comes first).

        A training request that arrives while an incremental update (``spec`` kind
        ``incremental``: seconds of work the server started after graph changes) is under way
        waits for it, up to :data:`UPDATE_WAIT_S`, instead of being refused (one request at a
        time: a second one would find the first one's job under way, and is refused at once);
        a full retrain the server started (``background``) is cancelled for it
        (:data:`SUPERSEDED`), and the request waits for it to end; a user's job under way
        refuses it. While a request waits, no update starts.

        Raises:
            FailedPreconditionError: another job is under way.
        """
        if spec is None:
            try:  # refuse bad ones now
                TrainConfig(**{k: v for k, v in config.items() if k not in ("joint", "tuning")})
                if "tuning" in config:
                    from kgweave.tuning.study import check_tuning

                    check_tuning(config["tuning"])
            except ValueError as exc:
                raise InvalidArgumentError(
                    f"invalid training settings: {_first_error(exc)}"
                ) from None
            from kgweave.data.sources import confine_dataset

            dataset = confine_dataset(dataset, self.settings)
        with self._lock:
            # one request waits (the next would find its job under way), holding one thread
            request = spec is None and not background
            server_jobs = self._running_updates() or self._running_retrains()
            if request and self.waiting == 0 and server_jobs:
                for job_id in self._running_retrains():  # the server's own: the user's first
                    self._superseded.add(job_id)
                    self._request_cancel(job_id)
                    log.info("job %s (a retrain the server started) cancelled: a training "
                             "request goes first", job_id)  # fmt: skip
                self.waiting += 1
                self._lock.notify_all()  # whoever waits for this request to wait
                try:
                    self._lock.wait_for(
                        lambda: not self._running_updates() and not self._running_retrains(),
                        UPDATE_WAIT_S,
                    )
                finally:
                    self.waiting -= 1
            if spec is not None and self.waiting:  # the waiting request goes first
                raise FailedPreconditionError("a training request is waiting to start")
            running = [j.job_id for j in self._jobs.values() if not j.state.final]
            if running:
                raise FailedPreconditionError(
                    f"job {running[0]} is still running; wait for it or cancel it first"
                )
            # a search counts trials as its epochs
            epochs = config["tuning"].get("trials") if "tuning" in config else config.get("epochs")
            job = Job(job_id=uuid.uuid4().hex[:12], epochs=int(epochs or 0))
            self._jobs[job.job_id] = job
            if spec is not None and spec.get("kind") == "incremental":
                self._updates.add(job.job_id)
            elif background:
                self._retrains.add(job.job_id)
            self._cancel[job.job_id] = threading.Event()
            self._policies[job.job_id] = policy
        folder = self.root / job.job_id
        folder.mkdir(parents=True, exist_ok=True)
        self._save(job.snapshot())
        spec = spec if spec is not None else {"config": config, "dataset": dataset}
        if background:
            spec = {**spec, "background": True}
        warm = bool(spec.get("warm"))
        try:
            worker = self._submit(job.job_id, spec, str(folder / "model"), warm)
        except Exception as exc:
            log.exception("job %s: the worker could not start", job.job_id)
            why = "the training worker could not start; see the server log"
            self._update(job.job_id, state=JobState.FAILED, phase="done", message=why)
            raise FailedPreconditionError(why) from exc
        self._workers[job.job_id] = worker
        self._update(job.job_id, state=JobState.RUNNING, phase="starting", pid=worker.pid)
        threading.Thread(
            target=self._monitor,
            args=(job.job_id, worker, folder, policy),
            name=f"kgweave-job-monitor-{job.job_id}",
            daemon=True,
        ).start()
        return self.get(job.job_id)

    def _running_updates(self) -> list[str]:
        """The incremental updates under way (call with the lock held; forgets ended ones)."""
        self._updates = {j for j in self._updates if not self._jobs[j].state.final}
        return sorted(self._updates)

    def _running_retrains(self) -> list[str]:
        """The full retrains the server started that are under way (call with the lock held;
        forgets ended ones)."""
        self._retrains = {j for j in self._retrains if not self._jobs[j].state.final}
        return sorted(self._retrains)

    def superseded(self, job_id: str) -> bool:
        """Whether job ``job_id``, a retrain the server started, was cancelled for a user's
        training request (not failed: the server starts it again when still due)."""
        with self._lock:
            return job_id in self._superseded

    def cancel(self, job_id: str) -> Job:
        job = self.get(job_id)
        if not job.state.final:
            self._request_cancel(job_id)
            self._update(job_id, phase="cancelling")
        return self.get(job_id)

    def wrap_up(self, job_id: str) -> None:
        """Ask a running job to end soon and keep what it did (a refinement; a job that
        cannot just runs on)."""
        worker = self._workers.get(job_id)
        if worker is not None and not self.get(job_id).state.final:
            worker.wrap_up(job_id)

    def shutdown(self) -> None:
        """Cancel every running job and let the updater go (on server shutdown)."""
        for job_id in list(self._cancel):
            if not self.get(job_id).state.final:
                self._request_cancel(job_id)
        with self._lock:
            warm, self._warm = self._warm, None
        if warm is not None and warm not in self._workers.values():
            warm.close()

    def warm_up(self) -> None:
        """Start the updater now (torch imported, the update code loaded), so the first
        incremental update does not wait for a process to start."""
        with self._lock:
            if self._warm is None or not self._warm.alive:
                self._warm = Worker(self._context, warm=True, name="kgweave-updater",
                                    cpus=self._cpus, nice=UPDATER_NICE)  # fmt: skip

    def _submit(self, job_id: str, spec: dict[str, Any], out: str, warm: bool) -> Worker:
        """Hand the job to a worker: the updater for a ``warm`` spec (a fresh one when it is
        gone), else a one-shot worker process of its own."""
        settings_json = self.settings.model_dump_json()
        if not warm:
            # the server's own work (a retrain) at the updater's priority; a user's job at theirs
            nice = UPDATER_NICE if spec.get("background") else None
            worker = Worker(self._context, warm=False, name=f"kgweave-job-{job_id}",
                            cpus=self._cpus, nice=nice)  # fmt: skip
            worker.submit(job_id, spec, out, settings_json)
            return worker
        for _ in range(2):
            self.warm_up()
            assert self._warm is not None
            try:
                self._warm.submit(job_id, spec, out, settings_json)
            except OSError:  # it died while idle: start another
                self._warm.close()
                self._warm = None
                continue
            return self._warm
        raise FailedPreconditionError("the updater process could not take the job")

    def _request_cancel(self, job_id: str) -> None:
        self._cancel[job_id].set()
        worker = self._workers.get(job_id)
        if worker is not None:
            worker.cancel(job_id)

    # ---- restart: the jobs a previous server left
    def recover(self) -> None:
        """Read back ``jobs/*/job.json``; settle jobs a dead server left running; clean up."""
        self.root.mkdir(parents=True, exist_ok=True)
        for folder in sorted(p for p in self.root.iterdir() if p.is_dir()):
            record = folder / RECORD
            try:
                data = json.loads(record.read_text()) if record.is_file() else {}
                job = Job(**{k: v for k, v in data.items() if k in _JOB_FIELDS}) if data else None
                if job is not None:
                    job.state = JobState(job.state)
            except (OSError, ValueError, TypeError):
                log.warning("jobs: unreadable %s; removing the job's working files", record)
                job = None
            if job is not None:
                if not job.state.final:
                    self._settle_interrupted(folder, job, str(data.get("policy", "")))
                with self._lock:
                    self._jobs[job.job_id] = job
            self._clean(folder)

    def _settle_interrupted(self, folder: Path, job: Job, policy: str) -> None:
        pid = wait_for_worker_exit(folder / WORKER_LOCK)
        was = job.phase
        job.state, job.phase, job.eta_s = JobState.FAILED, "interrupted", 0.0
        job.message = (
            f"interrupted: the server stopped while the job was {was}"
            + (f" (its worker, pid {pid}, ended with it)" if pid else "")
            + "; start it again"
        )
        if (folder / RESULT).is_file() and (folder / "model").is_dir():
            try:
                version, _, _ = self._on_success(folder / "model", job.snapshot(), "never")
            except Exception as exc:  # a damaged artifact stays unregistered: say why
                log.warning("job %s: its finished model was not registered: %s", job.job_id, exc)
                job.message = public_message(
                    "interrupted: the server stopped before registering the model; it could "
                    f"not be registered on restart: {getattr(exc, 'message', None) or exc}",
                    self.settings,
                )
            else:
                job.state, job.phase, job.model_version = JobState.SUCCEEDED, "done", version
                job.message = (
                    f"the server stopped before registering the model; registered on restart "
                    f"as {version}, not activated (policy {policy or 'unknown'} not applied)"
                )
        job.updated_at = time.time()
        job.revision += 1
        self._save(job)
        self.recovered.append(job.snapshot())
        log.warning("job %s: %s", job.job_id, job.message)

    def _clean(self, folder: Path) -> None:
        """Remove a finished job's working files; keep its record and log."""
        shutil.rmtree(folder / "model", ignore_errors=True)
        # (a record's temporary file: the server was killed while it replaced job.json)
        for path in [folder / RESULT, folder / WORKER_LOCK, *atomic.leftovers(folder / RECORD)]:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    # ---- internals
    def _save(self, job: Job) -> None:
        """Replace ``job.json`` atomically."""
        folder = self.root / job.job_id
        record = {**asdict(job), "policy": self._policies.get(job.job_id, "")}
        record["pid"] = self._pids.get(job.job_id, 0)
        atomic.write_json(folder / RECORD, record)

    def _update(self, job_id: str, pid: int = 0, **changes: Any) -> None:
        with self._lock:
            if pid:
                self._pids[job_id] = pid
            job = self._jobs[job_id]
            persist = pid or any(
                changes.get(key, getattr(job, key)) != getattr(job, key)
                for key in ("state", "phase", "model_version")
            )
            if changes.get("phase", job.phase) != job.phase and "rate" not in changes:
                changes.update(rate=0.0, rate_unit="")  # a phase's rate is its own
            for key, value in changes.items():
                setattr(job, key, value)
            job.updated_at = time.time()
            job.revision += 1
            snapshot = job.snapshot()
            if persist:  # under the lock: records are written in revision order
                self._save(snapshot)
            self._lock.notify_all()
            watchers = self._watchers.pop(job_id, [])
            listeners = [*self.listeners, *([self.on_change] if self.on_change else [])]
        for waiter in watchers:
            with contextlib.suppress(RuntimeError):  # its loop is closed: no one is waiting
                waiter.get_loop().call_soon_threadsafe(_wake, waiter)
        for listener in listeners:
            listener(snapshot)

    def _monitor(self, job_id: str, worker: Worker, folder: Path, policy: str) -> None:
        lower_thread_priority()  # registering loads and warms the model: calls come first
        final: dict[str, Any] | None = None
        cancel_seen_at: float | None = None
        events, process = worker.events, worker.process
        while final is None:
            if not events.poll(0.5):
                if self._cancel[job_id].is_set():
                    cancel_seen_at = cancel_seen_at or time.monotonic()
                    if time.monotonic() - cancel_seen_at > 30 and process.is_alive():
                        process.terminate()  # a worker that ignores cancellation
                continue
            try:
                event = events.recv()
            except (EOFError, OSError):  # the worker exited without a final message
                process.join()
                final = {
                    "state": "cancelled" if self._cancel[job_id].is_set() else "failed",
                    "message": f"the worker process exited with code {process.exitcode}",
                }
                if (folder / RESULT).is_file():  # after it finished the artifact: register it
                    log.warning("job %s: %s after its model was written", job_id, final["message"])
                    final = {"state": "succeeded"}
                break
            if "state" in event:
                final = event
            else:
                self._progress(job_id, event)
        with self._lock:
            self._workers.pop(job_id, None)
            if worker.warm and worker is self._warm and not worker.alive:
                self._warm = None
        if not worker.warm or not worker.alive or worker is not self._warm:
            worker.close()  # one-shot, dead, or an updater let go meanwhile
        state = final["state"]
        if state == "succeeded" and self._cancel[job_id].is_set():
            state = "cancelled"  # cancelled after training finished: register nothing
        if state == "succeeded":
            self._update(job_id, phase="registering")
            killpoints.reached("registering", server=True)
            try:
                version, activated, message = self._on_success(
                    folder / "model", self.get(job_id), policy
                )
            except Exception as exc:
                log.exception("registering job %s failed", job_id)
                why = public_message(
                    f"the model could not be registered: {getattr(exc, 'message', None) or exc}",
                    self.settings,
                )
                self._update(job_id, state=JobState.FAILED, phase="done", message=why)
            else:
                self._update(
                    job_id,
                    state=JobState.SUCCEEDED,
                    phase="done",
                    model_version=version,
                    activated=activated,
                    message=message,
                    eta_s=0.0,
                )
        else:
            if final.get("detail"):
                log.warning("job %s failed: %s", job_id, final["detail"])
            message = final.get("message", "cancelled by request" if state == "cancelled" else "")
            if state == "cancelled" and job_id in self._superseded:
                message = SUPERSEDED
            self._update(
                job_id,
                state=JobState(state),
                phase="done",
                message=public_message(message, self.settings),
                eta_s=0.0,
            )
        self._clean(folder)  # registered versions moved out

    def _progress(self, job_id: str, event: dict[str, Any]) -> None:
        changes: dict[str, Any] = {}
        if self._cancel[job_id].is_set():
            changes["phase"] = "cancelling"
        elif "phase" in event:
            changes["phase"] = event["phase"]
        for key in ("epoch", "epochs", "loss", "valid_mrr", "eta_s", "rate", "rate_unit"):
            if key in event and event[key] is not None:
                changes[key] = event[key]
        self._update(job_id, **changes)


_JOB_FIELDS = set(Job.__dataclass_fields__)


#: an absolute path (POSIX) in a message: a server path a client must not read (a quoted one
#: is an echo of what the client sent, e.g. a Freebase id '/m/027rn', and stays)
_PATH = re.compile(r"(?<![\w.~>'\"])(?:/[^\s/:;,'\"()<>\[\]]+)+/?")


def public_message(message: str, settings: Settings) -> str:
    """``message`` as a client may read it: the server's folders and any other absolute path
    replaced by what they are (the whole message goes to the server log when it differs)."""
    public = message
    folders = (
        (settings.datasets_dir, "<datasets folder>"),
        (settings.cache_dir, "<dataset cache>"),
        (settings.data_dir, "<data folder>"),
        (Path.home(), "~"),
    )
    for folder, name in folders:
        if folder is not None and str(folder) not in ("", "/"):
            public = public.replace(str(folder), name)
    public = _PATH.sub("<server path>", public)
    if public != message:
        log.info("job message (server side): %s", message)
    return public


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():  # (cancelled meanwhile: the stream ended)
        waiter.set_result(None)


def _first_error(exc: ValueError) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        first = errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        return f"{where}: {first.get('msg')}" if where else str(first.get("msg"))
    return str(exc)
