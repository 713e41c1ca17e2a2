"""Change events posted in a loop from a thread, as the kill -9 runs do (the test in
tests/test_reliability_crash.py and the longer rounds of benchmarks/reliability.py)."""

from __future__ import annotations

import threading
import urllib.error

from process_support import HANG_GUARD_S, post_events

BATCH = 20  # events per POST


class Ingestion:
    """POST /v1/changes batches of :data:`BATCH` events (heads ``h<first>``, ``h<first+1>``,
    ...) from a daemon thread until :meth:`stop` or until the server is gone.

    Attributes:
        acknowledged: the first head number of each batch the server answered 202.
    """

    def __init__(self, http_port: int, first: int = 0) -> None:
        self.acknowledged: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(http_port, first), daemon=True)
        self._thread.start()

    def _run(self, http_port: int, first: int) -> None:
        n = first
        while not self._stop.is_set():
            try:
                status = post_events(http_port, n, BATCH)
            except (OSError, urllib.error.URLError):  # the server is gone
                return
            if status == 202:
                self.acknowledged.append(n)
            n += BATCH

    def stop(self) -> None:
        """No batch after the one in flight."""
        self._stop.set()

    def join(self) -> bool:
        """Wait for the thread (the hang guard at most); True when it has ended."""
        self._thread.join(timeout=HANG_GUARD_S)
        return not self._thread.is_alive()
