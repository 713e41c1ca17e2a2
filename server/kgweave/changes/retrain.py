"""Retraining in batches from graph change events, with no downtime.

Every ``interval_s`` the watcher (a daemon thread of the server):

1. runs the snapshot diff of the graph (works on any backend), which appends one event per added
   or removed triple and per new entity to the durable event log; events posted by the Neo4j
   APOC trigger (POST /v1/changes) or appended by the CDC poller land in the same log;
2. counts the events its consumer (``retrain``) has not committed; once there are at least
   ``min_events`` and no job is running, it starts a training job on a fresh graph snapshot with
   the active model's settings, activated by the server's policy (hot swap, no downtime);
3. commits the consumer offset only when that job succeeds, so a failed or cancelled job is
   retried at the next check: at-least-once, nothing lost.

Meanwhile every change is served at once, without training, by the change applier
(:mod:`kgweave.changes.apply`: facts known, new entities placed from their text or
neighbours, deleted entities gone), which reads the same log as its own consumer.

On its first run it records the graph as it is as the baseline (the active model was trained on
it), so starting the watcher does not retrain by itself.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kgweave.changes.log import EventLog
from kgweave.errors import KGWeaveError
from kgweave.graph.store import GraphStore
from kgweave.serving.jobs import Job, JobManager, JobState
from kgweave.serving.queries import QueryPlane
from kgweave.serving.versions import ModelVersions
from kgweave.settings import Settings
from kgweave.training.config import JOB_FIELDS

log = logging.getLogger(__name__)

CONSUMER = "retrain"


@dataclass(frozen=True)
class ServingSide:
    """What of the serving side the change pipeline uses: the served versions, the query
    plane (its text encoder), and training jobs (started with the server's activation
    policy)."""

    versions: ModelVersions
    queries: QueryPlane
    jobs: JobManager
    start_job: Callable[[dict[str, Any]], Job]


@dataclass
class RetrainState:
    """What the watcher last did, for status and tests."""

    checks: int = 0
    pending: int = 0
    jobs_started: int = 0
    last_job: str = ""
    last_error: str = ""


class RetrainWatcher:
    """Starts training jobs when enough graph changes have accumulated."""

    def __init__(
        self,
        settings: Settings,
        serving: ServingSide,
        event_log: EventLog,
        store_factory: Callable[[], GraphStore] | None = None,
    ) -> None:
        self.versions = serving.versions
        self.queries = serving.queries
        self.jobs = serving.jobs
        self._start_job = serving.start_job
        self.log = event_log
        self.min_events = settings.retrain_min_events
        self.interval_s = settings.retrain_interval_s
        self._store_factory = store_factory
        self._state_dir = settings.data_dir / "snapshot-diff"
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._job: tuple[str, int] | None = None  # running job id, offset it covers
        self.state = RetrainState()
        self._thread = threading.Thread(target=self._run, name="kgweave-retrain", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=30)

    def check_now(self) -> None:
        """Run a check without waiting for the interval."""
        self._wake.set()

    # ---- the loop
    def _run(self) -> None:
        first = True
        while not self._stop.is_set():
            try:
                self._check(baseline=first)
                first = False
            except KGWeaveError as exc:
                self.state.last_error = exc.message
                log.warning("retrain check failed: %s", exc.message)
            except Exception as exc:
                self.state.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("retrain check failed")
            self._wake.wait(self.interval_s)
            self._wake.clear()

    def _diff(self) -> dict[str, Any] | None:
        if self._store_factory is None:
            return None
        from kgweave.changes.diff import snapshot_diff

        return snapshot_diff(self._store_factory(), self._state_dir, self.log)

    def _check(self, baseline: bool) -> None:
        had_state = (self._state_dir / "snapshot.safetensors").is_file()
        diff = self._diff()
        if baseline and diff is not None and not had_state:
            # the graph as it is now is what the active model was trained on
            self.log.commit(CONSUMER, self.log.end_offset)
            log.info("retrain: baseline of %d triples recorded", diff["added"])
        self.state.checks += 1
        self._settle_job()
        if self._job is not None:
            return
        end = self.log.end_offset
        self.state.pending = end - self.log.position(CONSUMER)
        if self.min_events <= 0 or self.state.pending < self.min_events:
            return
        config = self._training_config()
        job = self._start_job(config)
        self._job = (job.job_id, end)
        self.state.jobs_started += 1
        self.state.last_job = job.job_id
        log.info(
            "retrain: %d change events pending, started job %s", self.state.pending, job.job_id
        )

    def _settle_job(self) -> None:
        if self._job is None:
            return
        job_id, offset = self._job
        job = self.jobs.get(job_id)
        if not job.state.final:
            return
        self._job = None
        if job.state == JobState.SUCCEEDED:
            self.log.commit(CONSUMER, offset)
            log.info("retrain: job %s registered %s", job_id, job.model_version)
        else:
            self.state.last_error = f"job {job_id} {job.state.value}: {job.message}"
            log.warning("retrain: job %s %s (%s); will retry", job_id, job.state, job.message)

    def _training_config(self) -> dict[str, Any]:
        """The active model's training settings (the defaults when none is active)."""
        if not self.versions.ready:
            return {}
        training = self.versions.active().artifact.config.get("training", {})
        return {k: training[k] for k in JOB_FIELDS if training.get(k) is not None}
