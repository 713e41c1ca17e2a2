"""The graph database's state as serving sees it, watched by ``kgweave serve``.

Serving answers queries from the model in memory, so it stays up when the graph database goes
down; it says so instead: :class:`GraphHealth` probes the graph every few seconds and reports
``up`` or ``down`` (``unknown`` before the first probe, or where nothing watches: then
``/healthz`` leaves it out) to ``/healthz`` (``{"ready": true, "graph": "down"}``, still HTTP
200: degraded, not dead) and to the gRPC health service (service ``kgweave.graph``
NOT_SERVING; the overall status and the kgweave services stay SERVING).

The embedded FalkorDB has one owner that restarts it: the serving process that claimed its
folder (:func:`kgweave.graph.embedded.claim`). When it finds the database gone it starts it
again, on the same port, so open clients reconnect. ``kgweave graph start|stop`` refuse while
the claim is held.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable
from urllib.parse import urlparse

from kgweave.errors import KGWeaveError
from kgweave.graph.embedded import EmbeddedFalkorDB, Ownership, claim
from kgweave.settings import Settings

log = logging.getLogger(__name__)

#: seconds between two probes of the graph database
PROBE_INTERVAL_S = 2.0
#: seconds a probe waits for the database to answer
PROBE_TIMEOUT_S = 1.0
_DEFAULT_PORTS = {"falkor": 6379, "falkors": 6379, "redis": 6379, "rediss": 6379}


class GraphHealth:
    """``state``: "up", "down" or "unknown"; ``listeners`` are called with True/False (from
    the probe thread) when it changes."""

    def __init__(self, settings: Settings, interval_s: float = PROBE_INTERVAL_S) -> None:
        self.settings = settings
        self.interval_s = interval_s
        self.state = "unknown"
        self.restarts = 0
        self.listeners: list[Callable[[bool], None]] = []
        self._owner: Ownership | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def embedded(self) -> bool:
        return not self.settings.graph_uri

    @property
    def owns_embedded(self) -> bool:
        """This process restarts the embedded database when it dies."""
        return self._owner is not None

    def start(self) -> None:
        """Claim the embedded database (when it is the graph and no live process holds the
        claim) and probe the graph every ``interval_s`` seconds in a thread."""
        if self._thread is not None:
            return
        if self.embedded and EmbeddedFalkorDB(self.settings.graph_dir).status() is not None:
            # (serving on the embedded database it found running: no other process owns it)
            self._owner = claim(self.settings.graph_dir)
            if self._owner is None:
                log.warning("another process owns the embedded graph database: not restarting it")
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="kgweave-graph-health", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
            self._thread = None
        if self._owner is not None:
            self._owner.release()
            self._owner = None

    def check(self) -> str:
        """Probe once now (restarting an owned embedded database that is down)."""
        up = self._probe()
        if not up and self._owner is not None:
            up = self._restart()
        state = "up" if up else "down"
        if state != self.state:
            (log.info if up else log.error)(
                "the graph database is %s%s", state, "" if up else ": serving goes on, degraded"
            )
            self.state = state
            for listener in list(self.listeners):
                listener(up)
        return state

    def _run(self) -> None:
        while True:
            try:
                self.check()
            except Exception:  # a probe must never end the watch
                log.exception("graph health probe failed")
            if self._stop.wait(self.interval_s):
                return

    def _probe(self) -> bool:
        if self.embedded:
            return EmbeddedFalkorDB(self.settings.graph_dir).status() is not None
        parsed = urlparse(self.settings.graph_uri or "")
        host = parsed.hostname or "127.0.0.1"
        try:
            port = parsed.port or _DEFAULT_PORTS.get(parsed.scheme, 7687)
        except ValueError:
            return False
        try:
            with socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S):
                return True
        except OSError:
            return False

    def _restart(self) -> bool:
        try:
            info = EmbeddedFalkorDB(self.settings.graph_dir).start()
        except KGWeaveError as exc:
            log.error("restarting the embedded graph database failed: %s", exc.message)
            return False
        self.restarts += 1
        log.warning("restarted the embedded graph database (pid %d, port %d)", info.pid, info.port)
        return True
