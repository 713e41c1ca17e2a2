"""The change pipeline: how graph changes reach the served model.

Inputs, all landing in one durable event log (``data_dir/changes``): events posted to
``POST /v1/changes`` (the Neo4j APOC trigger, or any client), the Neo4j CDC poller
(:mod:`kgweave.changes.neo4j_cdc`, Enterprise) and the periodic snapshot diff
(:mod:`kgweave.changes.diff`, any backend), and the write API (:meth:`ChangePipeline.write`:
graph first, then the log). Two consumers read it: the change applier
(:mod:`kgweave.changes.apply`, consumer ``serve``) applies each batch to the served model at
once, and the retrain watcher (:mod:`kgweave.changes.retrain`, consumer ``retrain``) starts
training jobs in batches.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from kgweave import killpoints
from kgweave.changes.apply import ChangeApplier
from kgweave.changes.events import UNCHANGED, ChangeEvent, ChangeKind
from kgweave.changes.log import EventLog
from kgweave.changes.retrain import INCREMENTAL, RetrainWatcher, ServingSide
from kgweave.errors import InvalidArgumentError
from kgweave.settings import Settings

if TYPE_CHECKING:
    from kgweave.graph.store import GraphStore

Triple = tuple[str, str, str]


@dataclass(frozen=True)
class WriteResult:
    """What :meth:`ChangePipeline.write` did: the events appended, the log offset after
    them, whether they are served already and by which version."""

    events: int
    next_offset: int
    applied: bool
    version: str


log = logging.getLogger(__name__)


class ChangePipeline:
    """The event log and what feeds and consumes it, owned by one serving process."""

    def __init__(self, settings: Settings, serving: ServingSide) -> None:
        self.settings = settings
        self._serving = serving
        self._log: EventLog | None = None
        self._lock = threading.Lock()
        #: one write at a time through the graph and the log, so the log's order is the
        #: graph's (two writes of one fact cannot land in opposite orders)
        self._write_lock = threading.Lock()
        self._cdc_stop: threading.Event | None = None
        #: retraining from change events, when started (:meth:`start_retraining`)
        self.retrainer: RetrainWatcher | None = None
        #: graph changes applied to the served model at once, when started
        #: (:meth:`start_applying`)
        self.applier: ChangeApplier | None = None

    @property
    def event_log(self) -> EventLog:
        """The durable change-event log (``data_dir/changes``), opened once per process."""
        with self._lock:
            if self._log is None:
                self._log = EventLog.from_settings(
                    self.settings.data_dir / "changes", self.settings
                )
            return self._log

    def receive(self, body: bytes) -> int:
        """Append the change events of a ``POST /v1/changes`` body; returns how many."""
        from kgweave.changes.http_payload import parse_change_payload

        events = parse_change_payload(body)
        self.event_log.append(events)
        self._appended()
        return len(events)

    def _appended(self) -> None:
        if self.applier is not None:
            self.applier.wake()
        if self.retrainer is not None:
            self.retrainer.check_now()

    def prepare_applying(self) -> ChangeApplier:
        """Create the change applier; it hooks into activation, so versions loaded from now
        on are served with the applied changes (call before the first version loads)."""
        if self.applier is None:
            versions = self._serving.versions
            self.applier = ChangeApplier(
                self.settings,
                versions,
                self.event_log,
                versions.metrics,
                self._serving.queries.text_encoder,
            )
        return self.applier

    def status(self) -> dict[str, int | str] | None:
        """The applier's progress (None when it is off): the ChangesStatus message's fields."""
        applier = self.applier
        if applier is None:
            return None
        summary = applier.overlay.summary()
        return {
            "applied_offset": applier.overlay.next_offset,
            "end_offset": self.event_log.end_offset,
            "batches": applier.state.batches,
            "events": applier.state.events,
            **{k: v for k, v in summary.items() if k not in ("base_version", "next_offset")},
            "last_error": applier.state.last_error,
            **self._retrain_status(),
        }

    def _retrain_status(self) -> dict[str, int | str]:
        """The retrain watcher's part of the ChangesStatus message (none when it is off)."""
        watcher = self.retrainer
        if watcher is None:
            return {}
        state = watcher.state
        return {
            "trained_offset": self.event_log.position(INCREMENTAL),
            "updates_started": state.updates_started,
            "updates_registered": state.updates_registered,
            "full_retrains_started": state.jobs_started,
            "refinements_started": state.refinements_started,
            "refinements_activated": state.refinements_activated,
            "updates_skipped": state.updates_skipped,
            "retrain_error": state.last_error,
            "snapshot_diffs": state.diffs,
            "snapshot_diff_reads": state.diffs - state.diffs_skipped,
            "snapshot_diff_partial_reads": state.diffs_partial,
            "changes_behind_the_log": state.diff_events,
        }

    def start_applying(self) -> ChangeApplier:
        """Apply graph changes to the served model at once, on the applier's thread."""
        applier = self.prepare_applying()
        current = self._serving.versions.current
        if current is not None and applier.base is None:
            # a version was served before the applier existed: load it again through it
            self._serving.versions.activate(current.base_version, reload=True)
        applier.start()
        return applier

    def write(
        self,
        store: GraphStore,
        added: list[Triple],
        removed: list[Triple],
        entities: list[tuple[str, str | None, str | None]],
        deleted: list[str],
        wait_s: float,
    ) -> WriteResult:
        """Write to the graph, then append the events to the log, then wait (up to
        ``wait_s``) until they are served. Writes through kgweave go one at a time (graph and
        log together), so the log orders them as the graph does.

        The graph is the source of truth, so it is written first: a crash after the graph
        write and before the append loses the events, but the graph has the change and the
        snapshot diff (the retrain watcher's, ``retrain_interval_s``) emits it again. The
        events are acknowledged once appended (fsynced); ``applied`` says whether they were
        served within ``wait_s`` (else they are within the next batch)."""
        from kgweave.graph.store import EntityRow

        events = [
            ChangeEvent(
                ChangeKind.ENTITY_UPSERTED,
                entity=e,
                properties={
                    k: v for k, v in (("name", name), ("description", desc)) if v is not None
                },
            )
            for e, name, desc in entities
        ]
        if not (entities or added or removed or deleted):
            raise InvalidArgumentError(
                "nothing to write: give facts to add or remove, or entities to upsert or delete"
            )
        with self._write_lock:
            # a fact added that the graph holds already, or removed that it does not hold,
            # changes no count: marked, so the snapshot diff's count check need not export
            had = store.existing_triples([*added, *removed]) if added or removed else set()
            events += _triple_events(ChangeKind.TRIPLE_ADDED, added, lambda f: f in had)
            events += _triple_events(ChangeKind.TRIPLE_REMOVED, removed, lambda f: f not in had)
            events += [ChangeEvent(ChangeKind.ENTITY_DELETED, entity=e) for e in deleted]
            if entities:
                store.upsert_entities(EntityRow(e, name, desc) for e, name, desc in entities)
            if added:
                store.add_triples(added)
            if removed:
                store.remove_triples(removed)
            if deleted:
                store.delete_entities(deleted)
            killpoints.reached("graph-written", server=True)
            offsets = self.event_log.append(events)
            killpoints.reached("logged", server=True)
        end = offsets[-1] + 1
        self._appended()
        applier = self.applier
        applied = False
        if applier is not None and wait_s > 0:
            applied = applier.wait_applied(end, wait_s)
        current = self._serving.versions.current
        return WriteResult(len(events), end, applied, current.version if current else "")

    def start_retraining(self, store_factory: Callable[[], GraphStore] | None) -> RetrainWatcher:
        """Watch graph changes: incremental updates of what the applier serves (settings
        ``incremental_*``) and full retrains (``retrain_*``, ``full_retrain_*``)."""
        self.retrainer = RetrainWatcher(
            self.settings, self._serving, self.event_log, store_factory, self.applier
        )
        self.retrainer.start()
        return self.retrainer

    def start_cdc(self, store: GraphStore) -> None:
        """Poll Neo4j change data capture into the event log on a daemon thread."""
        from kgweave.changes.neo4j_cdc import Neo4jCdcPoller
        from kgweave.graph.neo4j_store import Neo4jStore

        if not isinstance(store, Neo4jStore):
            raise InvalidArgumentError("change data capture needs a Neo4j graph (bolt:// URI)")
        poller = Neo4jCdcPoller(
            lambda cypher, params: [dict(r) for r in store.read(cypher, params)],
            self.event_log,
            self.settings.data_dir / "neo4j-cdc.json",
            mapping=store.mapping,
        )
        self._cdc_stop = threading.Event()
        threading.Thread(
            target=poller.run, args=(self._cdc_stop,), name="kgweave-cdc", daemon=True
        ).start()

    def close(self) -> None:
        """Stop the CDC poller, the applier and the retrain watcher, close the log."""
        if self._cdc_stop is not None:
            self._cdc_stop.set()
        if self.applier is not None:
            self.applier.stop()
        if self.retrainer is not None:
            self.retrainer.stop()
        if self._log is not None:
            self._log.close()


def _triple_events(
    kind: ChangeKind, facts: list[Triple], unchanged: Callable[[Triple], bool]
) -> list[ChangeEvent]:
    """One event per fact, marked ``UNCHANGED`` where the write changes no count: where
    ``unchanged`` says so, or the fact came earlier in the same write."""
    seen: set[Triple] = set()
    events = []
    for fact in facts:
        same = unchanged(fact) or fact in seen
        seen.add(fact)
        h, r, t = fact
        properties = dict(UNCHANGED) if same else {}
        events.append(ChangeEvent(kind, head=h, relation=r, tail=t, properties=properties))
    return events
