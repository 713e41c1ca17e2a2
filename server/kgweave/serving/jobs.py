"""Training jobs: each runs in its own worker process, beside serving.

A job trains into its own working folder (``jobs/<id>/model``). Only a job that succeeds
hands its artifact to the registry; a cancelled or failed job leaves the registry and the
active model exactly as they were. One job runs at a time.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import queue
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from kgweave.errors import FailedPreconditionError, InvalidArgumentError, NotFoundError, echo
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

    def snapshot(self) -> Job:
        return Job(**asdict(self))


#: called with (artifact folder, job) when a job's model is ready; returns (version,
#: activated, message). Runs on the job's monitor thread.
OnSuccess = Callable[[Path, Job, str], tuple[str, bool, str]]


class JobManager:
    """Starts, watches and cancels training jobs."""

    def __init__(self, settings: Settings, on_success: OnSuccess) -> None:
        self.settings = settings
        self.root = settings.jobs_dir
        self._on_success = on_success
        self._jobs: dict[str, Job] = {}
        self._cancel: dict[str, Any] = {}
        self._lock = threading.Condition()
        self._context = mp.get_context("spawn")
        self.on_change: Callable[[Job], None] | None = None

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

    def wait_for_change(self, job_id: str, revision: int, timeout: float) -> Job:
        """The job once its revision differs from ``revision`` (or after ``timeout``)."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is not None:
                self._lock.wait_for(lambda: job.revision != revision, timeout=timeout)
        return self.get(job_id)

    # ---- commands
    def start(self, config: dict[str, Any], dataset: str, policy: str) -> Job:
        """Queue a job and start its worker process; returns at once."""
        try:
            TrainConfig(**{k: v for k, v in config.items() if k != "joint"})  # refuse bad ones now
        except ValueError as exc:
            raise InvalidArgumentError(f"invalid training settings: {_first_error(exc)}") from None
        with self._lock:
            running = [j.job_id for j in self._jobs.values() if not j.state.final]
            if running:
                raise FailedPreconditionError(
                    f"job {running[0]} is still running; wait for it or cancel it first"
                )
            job = Job(job_id=uuid.uuid4().hex[:12], epochs=int(config.get("epochs") or 0))
            self._jobs[job.job_id] = job
        folder = self.root / job.job_id
        folder.mkdir(parents=True, exist_ok=True)
        events = self._context.Queue()
        cancel = self._context.Event()
        self._cancel[job.job_id] = cancel
        from kgweave.serving.training_run import job_process_main

        process = self._context.Process(
            target=job_process_main,
            args=(
                {"config": config, "dataset": dataset},
                str(folder / "model"),
                self.settings.model_dump_json(),
                events,
                cancel,
            ),
            name=f"kgweave-job-{job.job_id}",
            daemon=True,
        )
        process.start()
        self._update(job.job_id, state=JobState.RUNNING, phase="starting")
        threading.Thread(
            target=self._monitor,
            args=(job.job_id, process, events, folder, policy),
            name=f"kgweave-job-monitor-{job.job_id}",
            daemon=True,
        ).start()
        return self.get(job.job_id)

    def cancel(self, job_id: str) -> Job:
        job = self.get(job_id)
        if not job.state.final:
            self._cancel[job_id].set()
            self._update(job_id, phase="cancelling")
        return self.get(job_id)

    def shutdown(self) -> None:
        """Cancel every running job (on server shutdown)."""
        for job_id, event in list(self._cancel.items()):
            if not self.get(job_id).state.final:
                event.set()

    # ---- internals
    def _update(self, job_id: str, **changes: Any) -> None:
        with self._lock:
            job = self._jobs[job_id]
            for key, value in changes.items():
                setattr(job, key, value)
            job.updated_at = time.time()
            job.revision += 1
            snapshot = job.snapshot()
            self._lock.notify_all()
        if self.on_change is not None:
            self.on_change(snapshot)

    def _monitor(self, job_id: str, process: Any, events: Any, folder: Path, policy: str) -> None:
        final: dict[str, Any] | None = None
        cancel_seen_at: float | None = None
        while final is None:
            try:
                event = events.get(timeout=0.2)
            except queue.Empty:
                if self._cancel[job_id].is_set():
                    cancel_seen_at = cancel_seen_at or time.monotonic()
                    if time.monotonic() - cancel_seen_at > 30 and process.is_alive():
                        process.terminate()  # a worker that ignores cancellation
                if not process.is_alive():
                    try:  # the final message may have raced the exit
                        event = events.get(timeout=1.0)
                    except queue.Empty:
                        final = {
                            "state": "cancelled" if self._cancel[job_id].is_set() else "failed",
                            "message": f"the worker process exited with code {process.exitcode}",
                        }
                        break
                else:
                    continue
            if "state" in event:
                final = event
            else:
                self._progress(job_id, event)
        process.join(timeout=10)
        state = final["state"]
        if state == "succeeded" and self._cancel[job_id].is_set():
            state = "cancelled"  # cancelled after training finished: register nothing
        if state == "succeeded":
            self._update(job_id, phase="registering")
            try:
                version, activated, message = self._on_success(
                    folder / "model", self.get(job_id), policy
                )
            except Exception as exc:
                log.exception("registering job %s failed", job_id)
                self._update(job_id, state=JobState.FAILED, phase="done", message=str(exc))
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
            self._update(
                job_id,
                state=JobState(state),
                phase="done",
                message=final.get(
                    "message", "cancelled by request" if state == "cancelled" else ""
                ),
                eta_s=0.0,
            )
        shutil.rmtree(folder / "model", ignore_errors=True)  # registered versions moved out

    def _progress(self, job_id: str, event: dict[str, Any]) -> None:
        changes: dict[str, Any] = {}
        if self._cancel[job_id].is_set():
            changes["phase"] = "cancelling"
        elif "phase" in event:
            changes["phase"] = event["phase"]
        for key in ("epoch", "epochs", "loss", "valid_mrr", "eta_s"):
            if key in event and event[key] is not None:
                changes[key] = event[key]
        self._update(job_id, **changes)


def _first_error(exc: ValueError) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        first = errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        return f"{where}: {first.get('msg')}" if where else str(first.get("msg"))
    return str(exc)
