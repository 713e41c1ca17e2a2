"""Retraining from graph change events, with no downtime: incremental updates and full retrains.

Two daemon threads of the server:

- the snapshot diff (``kgweave-diff``, every ``interval_s``): the safety net that works on any
  backend. It first compares the graph's census (entities, facts per relation) with its last
  export's plus the changes logged since (WriteFacts, the APOC trigger, the CDC poller) and
  exports nothing when they agree, so changes that come through the log cost one count
  query (every ``snapshot_diff_full_every`` checks it compares all facts anyway: an unlogged
  removal plus an addition keeps the counts); otherwise a worker process at lowered OS
  priority (:class:`~kgweave.changes.diff.DiffWorker`) exports the facts of the relations
  whose counts changed (and the entities when their count did) and compares them with the
  last snapshot, and
  this thread appends one event per added or removed triple, per new, retexted or deleted
  entity to the durable event log (less what the log already says). Events posted by the
  Neo4j APOC trigger (POST /v1/changes), written through WriteFacts or appended by the CDC
  poller land in the same log, at once;
- the watcher (``kgweave-retrain``), woken by every append and every ``interval_s``. One job
  runs at a time; when none is running it starts

  1. a full retrain on a fresh graph snapshot with the active model's settings, in a job
     worker, when the events since the last one (its consumer ``retrain``) reach
     ``min_events`` (when set), or ``full_retrain_drift`` of the active version's known
     facts, or (with some pending) ``full_retrain_interval_s`` has passed since the last;
  2. else an incremental update (consumer ``incremental``) once ``incremental_min_events``
     are pending and the change applier's overlay holds facts the active version was not
     trained on: the overlay as served (a copy, up to one log offset) and the version it is
     based on go to a job worker (:mod:`kgweave.changes.incremental`), which warm-starts
     from that version and trains a bounded number of steps.

  Both register their model and apply the server's activation policy (hot swap; versions
  judged on the fixed validation set, :mod:`kgweave.serving.validation`). A consumer's offset
  is committed only when its job has registered a model, so a failed, cancelled or killed job
  is retried: at-least-once, nothing lost. The served world never waits for either: every
  change is applied at once by the change applier (:mod:`kgweave.changes.apply`).

The diff's baseline is the graph the first model was trained on (recorded by the bootstrap
before it trains, :func:`~kgweave.changes.diff.record_baseline`); where there is none (a model
trained elsewhere), its first run records the graph as it is, so starting the watcher does not
retrain by itself.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from kgweave import killpoints
from kgweave.changes.apply import ChangeApplier
from kgweave.changes.diff import SNAPSHOT, DiffWorker, Part, state_dir_of, to_export
from kgweave.changes.events import ChangeEvent, ChangeKind
from kgweave.changes.incremental import SOURCE
from kgweave.changes.log import EventLog
from kgweave.changes.overlay import Triple
from kgweave.changes.refine import SPEC_KEY, epochs_left
from kgweave.errors import KGWeaveError
from kgweave.graph.store import Census, GraphStore
from kgweave.serving.jobs import Job, JobManager, JobState
from kgweave.serving.placement import lower_thread_priority
from kgweave.serving.queries import QueryPlane
from kgweave.serving.registry import version_number
from kgweave.serving.validation import load_fixed
from kgweave.serving.versions import ModelVersions
from kgweave.settings import Settings
from kgweave.training.config import JOB_FIELDS

log = logging.getLogger(__name__)

#: the event-log consumers of full retrains and of incremental updates
CONSUMER = "retrain"
INCREMENTAL = "incremental"
#: a failed job is retried after RETRY_BASE_S, doubled at each failure in a row, at most
#: RETRY_MAX_S (a job that fails at once is not restarted at every check)
RETRY_BASE_S, RETRY_MAX_S = 1.0, 600.0


class SkipKind(StrEnum):
    """Why pending changes are not given to an incremental update."""

    #: an update was refused and full retrains are off: updates go on from the same version
    REFUSED = "refused"
    #: an update was refused: a full retrain starts over, and updates wait for it
    START_OVER = "start_over"


@dataclass(frozen=True)
class Skip:
    """Why updates skip changes: its kind, its cause (the refused update's line) and,
    starting over, the full retrain's job once it started."""

    kind: SkipKind
    cause: str
    job: str = ""
    #: the refused update's version (starting over)
    version: str = ""

    @property
    def text(self) -> str:
        """The line status shows (``ChangesStatus.updates_skipped``)."""
        if self.kind == SkipKind.REFUSED:
            return (
                f"{self.cause}; full retrains are off (KGWEAVE_FULL_RETRAIN_DRIFT, "
                "KGWEAVE_FULL_RETRAIN_INTERVAL_S, KGWEAVE_RETRAIN_MIN_EVENTS)"
            )
        if not self.job:
            return f"{self.cause}; a full retrain starts over"
        return f"{self.cause}; full retrain {self.job} starts over, updates wait for it"


#: the facts an incremental update trains on: (added, removed)
Changed = tuple[frozenset[Triple], frozenset[Triple]]


def retry_delay(failures: int) -> float:
    """Seconds before the watcher starts a job again after ``failures`` failed in a row."""
    return float(min(RETRY_BASE_S * 2 ** min(failures - 1, 30), RETRY_MAX_S))


def full_retrains_on(settings: Settings) -> bool:
    """Whether full retrains run at all: by events, drift or schedule."""
    return (
        settings.retrain_min_events > 0
        or settings.full_retrain_drift > 0
        or settings.full_retrain_interval_s > 0
    )


def retraining_wanted(settings: Settings) -> bool:
    """Whether ``kgweave serve`` runs the watcher: incremental updates (with the change
    applier), or full retrains (:func:`full_retrains_on`); each alone is enough, and the
    snapshot diff, its safety net, comes with it."""
    return (settings.incremental_updates and settings.apply_changes) or full_retrains_on(settings)


class StartJob(Protocol):
    """Starts a training job of ``config`` on the graph with the server's activation policy
    (:meth:`kgweave.dataplane.DataPlane.start_training`)."""

    def __call__(self, config: dict[str, Any], *, background: bool = ...) -> Job: ...


@dataclass(frozen=True)
class ServingSide:
    """What of the serving side the change pipeline uses: the served versions, the query
    plane (its text encoder), and training jobs (started with the server's activation
    policy)."""

    versions: ModelVersions
    queries: QueryPlane
    jobs: JobManager
    start_job: StartJob


@dataclass
class RetrainState:
    """What the watcher last did, for status and tests."""

    checks: int = 0
    pending: int = 0
    #: full retrains started
    jobs_started: int = 0
    #: incremental updates started, and those that registered a version
    updates_started: int = 0
    updates_registered: int = 0
    #: refinements started, and those activated (kgweave.changes.refine)
    refinements_started: int = 0
    refinements_activated: int = 0
    #: why pending changes are not given to an update (None when they are)
    skip: Skip | None = None
    last_job: str = ""
    last_error: str = ""
    #: snapshot diffs run, those the census let skip the export, those whose export read
    #: only the relations whose counts changed, and the events the diffs appended
    diffs: int = 0
    diffs_skipped: int = 0
    diffs_partial: int = 0
    diff_events: int = 0
    #: failed jobs in a row, and when the next job may start (monotonic; 0: at once)
    failures: int = 0
    retry_at: float = 0.0

    @property
    def updates_skipped(self) -> str:
        """Why pending changes are not given to an update, as status shows it ("" when they
        are)."""
        return self.skip.text if self.skip is not None else ""

    def skipping(self, kind: SkipKind) -> bool:
        return self.skip is not None and self.skip.kind == kind


class RetrainWatcher:
    """Starts full retrains and incremental updates from graph changes (see the module doc)."""

    def __init__(
        self,
        settings: Settings,
        serving: ServingSide,
        event_log: EventLog,
        store_factory: Callable[[], GraphStore] | None = None,
        applier: ChangeApplier | None = None,
    ) -> None:
        self.settings = settings
        self.versions = serving.versions
        self.queries = serving.queries
        self.jobs = serving.jobs
        self._start_job = serving.start_job
        self.log = event_log
        self.applier = applier
        self.min_events = settings.retrain_min_events
        self.interval_s = settings.retrain_interval_s
        self._store_factory = store_factory
        self._state_dir = state_dir_of(settings)
        self._staging = settings.data_dir / "incremental"
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._diffed = threading.Event()  # the first diff ran (the baseline is recorded)
        #: the graph has its fixed validation set (or making it failed: updates make it)
        self._fixed_ready = threading.Event()
        #: the running job: its id, the consumer it commits and the offset it covers
        self._job: tuple[str, str, int] | None = None
        #: when the running job started (monotonic), and its oldest event's time (epoch)
        self._job_began = 0.0
        self._job_oldest: float | None = None
        #: the new facts of the running update, and of the last one registered: a version
        #: that was not activated is not trained again on the same facts
        #: the facts (added, removed) the running update trains on, and the last finished one
        self._training: Changed = (frozenset(), frozenset())
        self._trained: Changed = (frozenset(), frozenset())
        #: the running job is a refinement; refinements in a row not activated
        self._refining = False
        self._wrapping = ""  # the refinement asked to wrap up
        self._refine_misses = 0
        #: a version made from changes registered: older ones to delete (keep_updates)
        self._prune_due = False
        self._last_full = time.monotonic()
        #: the graph's counts at the last export, and the log's end offset before them
        self._last_census: Census | None = None
        self._counted_at = 0
        self._diffs_since_full = 0
        self._differ: DiffWorker | None = None  # the export, in a process of its own
        self._differ_lock = threading.Lock()
        self.state = RetrainState()
        self._thread = threading.Thread(target=self._run, name="kgweave-retrain", daemon=True)
        self._diff_thread = threading.Thread(
            target=self._run_diff, name="kgweave-diff", daemon=True
        )

    def start(self) -> None:
        shutil.rmtree(self._staging, ignore_errors=True)  # a dead server's overlay copies
        # woken when a job changes (the next update starts as soon as one ends) and when the
        # applier has served a batch (an update of it can start)
        self.jobs.listeners.append(self._job_changed)
        if self.applier is not None:
            self.applier.listeners.append(self.check_now)
        if self.settings.incremental_updates and self.applier is not None:
            self.jobs.warm_up()  # the updater: started now, warm for the first update
            if self._store_factory is not None and load_fixed(self.settings) is None:
                threading.Thread(
                    target=self._make_fixed, name="kgweave-fixed-set", daemon=True
                ).start()
            else:
                self._fixed_ready.set()
        else:
            self._fixed_ready.set()
        if self._store_factory is None:
            self._diffed.set()
        else:
            self._diff_thread.start()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        with contextlib.suppress(ValueError):
            self.jobs.listeners.remove(self._job_changed)
        if self.applier is not None:
            with contextlib.suppress(ValueError):
                self.applier.listeners.remove(self.check_now)
        if self._differ is not None:  # first: an export under way ends now (no wait for it)
            self._differ.close()
        for thread in (self._thread, self._diff_thread):
            if thread.is_alive():
                thread.join(timeout=30)

    def check_now(self) -> None:
        """Run a check without waiting for the interval."""
        self._wake.set()

    def _job_changed(self, job: Job) -> None:
        """Any job that ends wakes the watcher: its own (to settle it), or a user's, which
        held back the changes pending meanwhile (:meth:`_check` starts nothing while one
        runs)."""
        if job.state.final:
            self._wake.set()

    # ---- the fixed validation set of a graph whose versions predate it
    def _make_fixed(self) -> None:
        """Make the graph's fixed validation set now (:mod:`kgweave.changes.fixed_set`; the
        graph scanned in the diff's worker process), so the first update does not wait for a
        scan of the graph; updates start once it is made."""
        try:
            self._guarded("making the fixed validation set", self._fixed_now)
        finally:
            self._fixed_ready.set()
            self._wake.set()

    def _fixed_now(self) -> None:
        from kgweave.changes.fixed_set import fixed_of

        applier = self.applier
        assert applier is not None
        while applier.base is None and not self._stop.is_set():
            if not self.versions.ready:
                return  # no version served: the first training stores the set
            self._stop.wait(0.05)  # the applier is being started on the served version
        base = applier.base
        if base is None or load_fixed(self.settings) is not None:
            return
        began = time.monotonic()
        held_out = self._diff_worker().held_out(base.artifact.path)  # off the serving process
        # facts added through change events (the applier's, and those still in the log), read
        # after the scan: updates train on them
        overlay = applier.overlay
        added, offset = set(overlay.added), overlay.next_offset
        while page := self.log.read(offset, limit=self.EXPLAIN_EVENTS):
            added |= {(str(e.head), str(e.relation), str(e.tail))
                      for _, e in page if e.kind == ChangeKind.TRIPLE_ADDED}  # fmt: skip
            offset = page[-1][0] + 1
        fixed = fixed_of(self.settings, held_out, added, base.base_version)
        log.info(
            "retrain: fixed validation set of %d facts made in %.1f s",
            len(fixed.triples),
            time.monotonic() - began,
        )

    def _diff_worker(self) -> DiffWorker:
        with self._differ_lock:
            if self._differ is None:
                self._differ = DiffWorker(self.settings)
            return self._differ

    # ---- the snapshot diff: a safety net, off the serving threads' way
    def _run_diff(self) -> None:
        lower_thread_priority()
        baseline = [True]  # the first run records the baseline
        while not self._stop.is_set():
            if self._guarded("snapshot diff", lambda: self._diff(baseline=baseline[0])):
                baseline[0] = False
            self._diffed.set()
            self._wake.set()
            self._stop.wait(self.interval_s)

    def _diff(self, baseline: bool) -> None:
        assert self._store_factory is not None
        store = self._store_factory()
        had_state = (self._state_dir / SNAPSHOT).is_file()
        logged = self.log.end_offset  # before the census: every event below it is in it
        census = store.census()
        self.state.diffs += 1
        every = (
            not had_state
            or self._last_census is None
            or self._diffs_since_full + 1 >= self.settings.snapshot_diff_full_every
        )
        part: Part | None = None  # None: every fact and entity
        logged_since = None if every else self._logged_since()
        if logged_since is not None:
            assert self._last_census is not None
            part = to_export(self._last_census, census, logged_since)
            if part is None:  # every change came through the log
                self._diffs_since_full += 1
                self.state.diffs_skipped += 1
                return
        # the first run's graph is what the active model was trained on: a baseline, no events
        first = baseline and not had_state
        diff = self._diff_worker().run(self._state_dir, self.log, emit=not first, part=part)
        if part is None:
            self._diffs_since_full = 0
        else:
            self._diffs_since_full += 1
            self.state.diffs_partial += 1
        self._last_census, self._counted_at = census, logged
        start = diff["first_offset"]
        appended = 0 if start is None else diff["next_offset"] - start
        self.state.diff_events += appended
        if first:
            log.info("retrain: baseline of %d triples recorded", diff["added"])
        else:
            log.info(
                "snapshot diff: %d of %d relations read, %d facts added, %d removed, %d events",
                diff["relations_read"], diff["relations"], diff["added"], diff["removed"],
                appended,
            )  # fmt: skip

    #: at most this many events logged since the last export are read to explain the
    #: graph's census; more, and the export reads every relation
    EXPLAIN_EVENTS = 100_000

    def _logged_since(self) -> list[ChangeEvent] | None:
        """The events logged since the census of the last export; None: too many to read
        (the export then reads every relation)."""
        events = self.log.read(self._counted_at, limit=self.EXPLAIN_EVENTS + 1)
        if len(events) > self.EXPLAIN_EVENTS:
            return None
        return [event for _, event in events]

    # ---- the watcher
    def _run(self) -> None:
        while not self._stop.is_set():
            if self._diffed.is_set():
                self._guarded("retrain check", self._check)
            wait = self.interval_s
            if self.state.retry_at:  # (woken for the retry, whatever the interval)
                wait = min(wait, max(self.state.retry_at - time.monotonic(), 0.01))
            self._wake.wait(wait)
            self._wake.clear()

    def _guarded(self, what: str, step: Callable[[], None]) -> bool:
        """Run one step of a loop; a failure is logged and kept in the state, and the loop
        goes on. Returns whether it succeeded."""
        try:
            step()
        except KGWeaveError as exc:
            self.state.last_error = exc.message
            log.warning("%s failed: %s", what, exc.message)
        except Exception as exc:
            if self._stop.is_set():  # stopping ended it (the diff's worker is gone)
                log.info("%s ended by the stop", what)
                return False
            self.state.last_error = f"{type(exc).__name__}: {exc}"
            log.exception("%s failed", what)
        else:
            return True
        return False

    def _check(self) -> None:
        self.state.checks += 1
        self._settle_job()
        self._start_next()
        if self._prune_due:  # after the next job started: the deleting overlaps its work
            self._prune_due = False
            self._guarded("deleting old updates", self._prune_updates)

    def _start_next(self) -> None:
        """Start the job that is due, if any (see the module doc)."""
        if self._job is not None:
            if self._refining and self.log.position(INCREMENTAL) < self.log.end_offset:
                self._wrap_up_refinement(self._job[0])
            return
        end = self.log.end_offset
        self.state.pending = end - self.log.position(CONSUMER)
        if time.monotonic() < self.state.retry_at:
            return  # after a failed job: woken at retry_at
        if self.jobs.busy:
            return  # a user's job (or request) goes first: woken when it changes
        if self.state.skipping(SkipKind.START_OVER) and self._full_training_served():
            self.state.skip = None  # a full training (a user's) was activated meanwhile
        starting_over = self.state.skipping(SkipKind.START_OVER)
        if self._full_due():
            # at a lowered OS priority: serving comes first (as for updates and the diff)
            job = self._start_job(self._training_config(), background=True)
            self._job = (job.job_id, CONSUMER, end)
            self._began(CONSUMER)
            self.state.jobs_started += 1
            self.state.last_job = job.job_id
            if starting_over and self.state.skip is not None:
                self.state.skip = replace(self.state.skip, job=job.job_id)
            log.info(
                "retrain: %d change events pending, started job %s%s",
                self.state.pending,
                job.job_id,
                f" ({self.state.updates_skipped})" if starting_over else "",
            )
            return
        if not starting_over:
            self._start_update()
            if self._job is None:
                self._start_refine()

    def _full_training_served(self) -> bool:
        """Whether the served version is a full training registered after the update whose
        refusal made the retrain start over (a user's, say): nothing is left to start over."""
        skip = self.state.skip
        if skip is None or not skip.version or not self.versions.ready:
            return False
        active = self.versions.active()
        newer = version_number(active.base_version) > version_number(skip.version)
        return newer and active.artifact.config.get("source") != SOURCE

    def _full_due(self) -> bool:
        if self.state.skipping(SkipKind.START_OVER):
            return True
        pending = self.state.pending
        if pending <= 0:
            return False
        if self.min_events > 0 and pending >= self.min_events:
            return True
        drift = self.settings.full_retrain_drift
        if drift > 0 and self.versions.ready:
            known = self.versions.active().artifact.known_count
            if pending >= max(drift * known, 1):
                return True
        every = self.settings.full_retrain_interval_s
        return every > 0 and time.monotonic() - self._last_full >= every

    def _start_update(self) -> None:
        """Start an incremental update of the overlay as served, when it is due."""
        applier = self.applier
        if not self.settings.incremental_updates or applier is None:
            return
        if not self._fixed_ready.is_set():
            return  # woken when the graph's fixed validation set is made
        position = self.log.position(INCREMENTAL)
        if self.log.end_offset - position < self.settings.incremental_min_events:
            return
        with self.versions.swap_lock:  # the overlay and the version it is based on, together
            overlay, current = applier.overlay, self.versions.current
            if current is None or overlay.base_version != current.base_version:
                return  # an activation is under way
            offset = overlay.next_offset
            if offset <= position:
                return  # the applier has not reached the pending events yet
            fixed = load_fixed(self.settings)
            new = overlay.trained_changes(set(fixed.triples) if fixed is not None else set())
            if not any(new) or new == self._trained:
                # nothing to train on or unlearn: facts the fixed validation set holds out,
                # facts of deleted entities (masked out anyway), or what the last update (not
                # activated) was trained on already
                self.log.commit(INCREMENTAL, offset)
                return
            folder = self._staging / f"overlay-{offset}"
            overlay.save(folder)
        job = self._start_incremental(overlay.base_version, folder, {})
        self._job, self._training = (job.job_id, INCREMENTAL, offset), new
        self._began(INCREMENTAL)
        self.state.updates_started += 1
        self.state.last_job = job.job_id
        log.info(
            "incremental update: %d new facts, %d removed on %s, job %s",
            len(new[0]),
            len(new[1]),
            overlay.base_version,
            job.job_id,
        )

    def _start_incremental(self, base: str, folder: Path, extra: dict[str, Any]) -> Job:
        """Start an incremental job in the updater on version ``base`` and the overlay copy
        in ``folder`` (removed when the job cannot start)."""
        spec = {
            "kind": "incremental",
            "warm": True,  # in the updater process, kept between updates
            "runner": "kgweave.changes.incremental:run_incremental",
            "base": str(self.versions.registry.get(base).path),
            "base_version": base,
            "overlay": str(folder),
            **extra,
        }
        try:
            return self.jobs.start({}, "", self.settings.activation_policy, spec=spec)
        except KGWeaveError:
            shutil.rmtree(folder, ignore_errors=True)
            raise

    def _start_refine(self) -> None:
        """Start a refinement of the served version (:mod:`kgweave.changes.refine`) when no
        change is pending, its epochs are not all done, and fewer than ``refine_patience`` in
        a row were not activated."""
        settings, applier = self.settings, self.applier
        if not settings.continue_training or not settings.incremental_updates or applier is None:
            return
        if self._refine_misses >= settings.refine_patience or not self._fixed_ready.is_set():
            return
        if self.log.position(INCREMENTAL) < self.log.end_offset:
            return  # the changes first
        with self.versions.swap_lock:
            overlay, current = applier.overlay, self.versions.current
            if current is None or overlay.base_version != current.base_version:
                return  # an activation is under way
            left = epochs_left(self.versions.registry.get(overlay.base_version).config)
            if left <= 0:
                return
            offset = overlay.next_offset
            folder = self._staging / f"overlay-{offset}"
            overlay.save(folder)
        chunk = {SPEC_KEY: {"seconds": settings.refine_chunk_s, "epochs": left}}
        job = self._start_incremental(overlay.base_version, folder, chunk)
        self._job, self._refining = (job.job_id, INCREMENTAL, offset), True
        self._began(INCREMENTAL)
        self.state.refinements_started += 1
        self.state.last_job = job.job_id
        log.info(
            "refinement of %s: %.1f epochs left, %g s, job %s",
            overlay.base_version, left, settings.refine_chunk_s, job.job_id,
        )  # fmt: skip

    def _prune_updates(self) -> None:
        """Keep the ``keep_updates`` newest versions made from changes, and the active one
        (a job started meanwhile is based on the active version: none reads an older one)."""
        registry = self.versions.registry
        current = self.versions.current
        active = current.base_version if current is not None else registry.active_version()
        updates = [v.version for v in registry.versions() if v.config.get("source") == SOURCE]
        for version in updates[self.settings.keep_updates :]:
            if version != active:
                registry.delete(version)
                log.info("retrain: deleted %s (KGWEAVE_KEEP_UPDATES=%d)", version,
                         self.settings.keep_updates)  # fmt: skip

    def _wrap_up_refinement(self, job_id: str) -> None:
        """Changes wait while a refinement runs: it ends after its current step and is
        judged on what it did, and the update of the changes starts next."""
        if self._wrapping != job_id:
            self._wrapping = job_id
            self.jobs.wrap_up(job_id)
            log.info("refinement %s: changes pending, wrapping up", job_id)

    def _refined(self, job: Job) -> None:
        """A refinement registered: activated (it beat the served version), or a miss."""
        if job.activated:
            self._refine_misses = 0
            self.state.refinements_activated += 1
            return
        self._refine_misses += 1
        if self._refine_misses >= self.settings.refine_patience:
            log.info(
                "refinement: %d in a row did not beat the served version; no more until a "
                "full retrain", self._refine_misses,
            )  # fmt: skip

    def _began(self, consumer: str) -> None:
        """Note a job's start and the time of the oldest event it covers (for metrics)."""
        self._job_began = time.monotonic()
        first = self.log.read(self.log.position(consumer), limit=1)
        self._job_oldest = first[0][1].time if first else None

    def _settle_job(self) -> None:
        if self._job is None:
            return
        job_id, consumer, offset = self._job
        job = self.jobs.get(job_id)
        if not job.state.final:
            return
        self._job, refining, self._refining = None, self._refining, False
        kind = "refine" if refining else "incremental" if consumer == INCREMENTAL else "full"
        outcome = job.state.value
        if job.state == JobState.SUCCEEDED:
            outcome = "activated" if job.activated else "refused"
        metrics = self.versions.metrics
        metrics.retrain_jobs.labels(kind=kind, outcome=outcome).inc()
        metrics.retrain_job_seconds.labels(kind=kind).observe(time.monotonic() - self._job_began)
        if job.activated and self._job_oldest is not None:
            lag = max(0.0, time.time() - self._job_oldest)
            metrics.trained_lag_seconds.labels(kind=kind).observe(lag)
        if consumer == INCREMENTAL:
            shutil.rmtree(self._staging / f"overlay-{offset}", ignore_errors=True)
            self._prune_due = job.state == JobState.SUCCEEDED
        if job.state == JobState.SUCCEEDED:
            if consumer == INCREMENTAL and job.activated:
                killpoints.reached("update-registered", server=True)
            self.log.commit(consumer, offset)
            self.state.failures, self.state.retry_at = 0, 0.0
            if consumer == CONSUMER:
                self._last_full = time.monotonic()
                self._refine_misses = 0  # a new full training: refined if cut short
                self.state.skip = None  # a new full training: updates go on from it
            elif refining:
                self._refined(job)
            else:
                self.state.updates_registered += 1
                self._trained = self._training
                if job.activated:
                    self.state.skip = None
                else:
                    self._refused(job)
            log.info("retrain: job %s registered %s (%s)", job_id, job.model_version, job.message)
        elif self.jobs.superseded(job_id):  # a user's training went first: no failure
            log.info("retrain: job %s gave way to a training request", job_id)
        else:
            self.state.failures += 1
            if refining:  # a refinement that fails is a miss: they stop, not retry for ever
                self._refine_misses += 1
            delay = retry_delay(self.state.failures)
            self.state.retry_at = time.monotonic() + delay
            self.state.last_error = (
                f"job {job_id} {job.state.value}: {job.message}; retrying in {delay:.0f} s"
            )
            log.warning("retrain: %s", self.state.last_error)

    def _refused(self, job: Job) -> None:
        """An update the policy refused: later updates would warm-start from the same version
        (and drift from the same full training), so a full retrain starts over, when full
        retrains are on; else updates go on, and the status says so."""
        why = f"update {job.model_version} was refused ({job.message})"
        if full_retrains_on(self.settings):
            self.state.skip = Skip(SkipKind.START_OVER, why, version=job.model_version)
            log.warning("retrain: %s; starting a full retrain", why)
            return
        self.state.skip = Skip(SkipKind.REFUSED, why)
        log.warning("retrain: %s", self.state.updates_skipped)

    def _training_config(self) -> dict[str, Any]:
        """The active model's training settings (the defaults when none is active); a joint
        model's retrain is a joint training (its language side retrained with it)."""
        if not self.versions.ready:
            return {}
        config = self.versions.active().artifact.config
        training = config.get("training", {})
        chosen = {k: training[k] for k in JOB_FIELDS if training.get(k) is not None}
        return {**chosen, "joint": True} if "joint" in config else chosen
