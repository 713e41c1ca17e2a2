"""Test support: ``kgweave serve`` as a real subprocess (this checkout's code), and change
events posted to it; shared by tests/test_reliability_crash.py and benchmarks/reliability.py."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: the one hang guard of the suite: reached only when something hangs (a wait on an explicit
#: condition never depends on it; no test asserts a duration)
HANG_GUARD_S = 3600.0


def free_ports(count: int = 2) -> list[int]:
    """``count`` distinct loopback ports nobody listens on now (held together while picked, so
    two calls cannot hand out the same one)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def until(condition: Callable[[], bool], why: str, timeout: float = HANG_GUARD_S) -> None:
    """Wait for ``condition`` (checked every 50 ms); fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"hang guard: {why}")
        time.sleep(0.05)


class ServeProcess:
    """``kgweave serve`` in a subprocess of its own, on the given ports, with the caller's
    environment (``KGWEAVE_DATA_DIR`` and the rest) plus ``env``."""

    def __init__(
        self, http_port: int, grpc_port: int, log: Path, env: dict[str, str] | None = None
    ) -> None:
        full = {
            **os.environ,
            "KGWEAVE_GRPC_PORT": str(grpc_port),
            "KGWEAVE_HTTP_PORT": str(http_port),
            "KGWEAVE_FRONTEND": "python",
            "PYTHONPATH": os.pathsep.join(p for p in sys.path if p),
            **(env or {}),
        }
        self.http_port = http_port
        self.address = f"127.0.0.1:{grpc_port}"
        self.log = log.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-c", "from kgweave.cli.main import main; raise SystemExit(main())",
             "serve", "--no-progress"],
            env=full, stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def healthy(self) -> bool:
        """/healthz answers 200 (raises when the process has exited)."""
        if not self.alive:
            raise AssertionError(f"kgweave serve exited with {self.process.returncode}")
        try:
            url = f"http://127.0.0.1:{self.http_port}/healthz"
            with urllib.request.urlopen(url, timeout=5) as answer:
                return bool(answer.status == 200)
        except OSError:
            return False

    def wait_healthy(self) -> ServeProcess:
        until(self.healthy, "kgweave serve did not become healthy")
        return self

    def kill(self) -> None:
        """kill -9."""
        self.process.kill()
        self.process.wait(timeout=HANG_GUARD_S)
        self.log.close()

    def end(self) -> int:
        """SIGTERM, and the exit code."""
        if self.alive:
            self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=HANG_GUARD_S)
        self.log.close()
        return code


def post_events(port: int, first: int, count: int) -> int:
    """POST ``count`` triple_added events with heads ``h<first>``, ``h<first+1>``, ... to
    /v1/changes; returns the HTTP status."""
    events = [
        {"kind": "triple_added", "head": f"h{first + i}", "relation": "r", "tail": "t"}
        for i in range(count)
    ]
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/changes",
        data=json.dumps({"source": "reliability", "events": events}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        return int(answer.status)


def logged_events(folder: Path) -> list[tuple[int, Any]]:
    """Every event retained in the change log in ``folder``, with its offset."""
    from kgweave.changes.log import EventLog

    records: list[tuple[int, Any]] = []
    with EventLog(folder) as log:
        offset = log.first_offset
        while batch := log.read(offset, 10_000):
            records += batch
            offset = batch[-1][0] + 1
    return records
