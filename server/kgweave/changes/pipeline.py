"""The change pipeline: how graph changes reach the served model.

Inputs, all landing in one durable event log (``data_dir/changes``): events posted to
``POST /v1/changes`` (the Neo4j APOC trigger, or any client), the Neo4j CDC poller
(:mod:`kgweave.changes.neo4j_cdc`, Enterprise) and the periodic snapshot diff
(:mod:`kgweave.changes.diff`, any backend). The retrain watcher (:mod:`kgweave.changes.retrain`)
consumes the log: cold start for new entities, then training jobs in batches.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from kgweave.changes.log import EventLog
from kgweave.changes.retrain import RetrainWatcher, ServingSide
from kgweave.errors import InvalidArgumentError
from kgweave.settings import Settings

if TYPE_CHECKING:
    from kgweave.graph.store import GraphStore

log = logging.getLogger(__name__)


class ChangePipeline:
    """The event log and what feeds and consumes it, owned by one serving process."""

    def __init__(self, settings: Settings, serving: ServingSide) -> None:
        self.settings = settings
        self._serving = serving
        self._log: EventLog | None = None
        self._lock = threading.Lock()
        self._cdc_stop: threading.Event | None = None
        #: retraining from change events, when started (:meth:`start_retraining`)
        self.retrainer: RetrainWatcher | None = None

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
        if self.retrainer is not None:
            self.retrainer.check_now()
        return len(events)

    def start_retraining(self, store_factory: Callable[[], GraphStore] | None) -> RetrainWatcher:
        """Watch graph changes and retrain in batches (settings ``retrain_*``)."""
        self.retrainer = RetrainWatcher(self.settings, self._serving, self.event_log, store_factory)
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
        """Stop the CDC poller and the retrain watcher, close the log."""
        if self._cdc_stop is not None:
            self._cdc_stop.set()
        if self.retrainer is not None:
            self.retrainer.stop()
        if self._log is not None:
            self._log.close()
