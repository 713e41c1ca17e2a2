"""kill -9 of ``kgweave serve`` during event ingestion, then a restart (issue 16): every change
event the server acknowledged (202) is in the durable log, once, and offsets go on after the
restart without reuse.

A real ``kgweave serve`` subprocess (Python front end, embedded FalkorDB, a registered demo
model) on free loopback ports; POST /v1/changes in a loop from a thread; SIGKILL once enough
batches were acknowledged; the log read back with :class:`~kgweave.changes.log.EventLog`.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kgweave.changes.log import EventLog
from kgweave.graph.embedded import EmbeddedFalkorDB
from kgweave.settings import Settings, get_settings
from serving_support import registry_with, train_demo_model

HANG_GUARD_S = 300.0
BATCH = 20  # events per POST


@pytest.fixture(scope="module")
def demo_model(tmp_path_factory: pytest.TempPathFactory, datasets_dir: Path) -> Path:
    root = tmp_path_factory.mktemp("crash-model")
    settings = Settings(data_dir=root / "data", datasets_dir=datasets_dir, device="cpu")
    return train_demo_model(settings, root / "m", epochs=5, dim=16, seed=0)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _until(condition: Callable[[], bool], why: str) -> None:
    deadline = time.monotonic() + HANG_GUARD_S
    while not condition():
        assert time.monotonic() < deadline, f"hang guard: {why}"
        time.sleep(0.05)


class Serve:
    """``kgweave serve`` in a subprocess of its own (this checkout's code)."""

    def __init__(self, http_port: int, grpc_port: int, log: Path) -> None:
        env = {
            **os.environ,
            "KGWEAVE_GRPC_PORT": str(grpc_port),
            "KGWEAVE_HTTP_PORT": str(http_port),
            "KGWEAVE_FRONTEND": "python",
            "PYTHONPATH": os.pathsep.join(p for p in sys.path if p),
        }
        self.http_port = http_port
        self.log = log.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-c", "from kgweave.cli.main import main; raise SystemExit(main())",
             "serve", "--no-progress"],
            env=env, stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip

    def healthy(self) -> bool:
        assert self.process.poll() is None, "kgweave serve exited"
        try:
            url = f"http://127.0.0.1:{self.http_port}/healthz"
            with urllib.request.urlopen(url, timeout=5) as answer:
                return bool(answer.status == 200)
        except OSError:
            return False

    def end(self, sig: int) -> None:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        self.process.wait(timeout=HANG_GUARD_S)
        self.log.close()


def post(port: int, first: int) -> int:
    """POST one batch of events (heads ``h<first>`` ...); returns the HTTP status."""
    events = [
        {"kind": "triple_added", "head": f"h{first + i}", "relation": "r", "tail": "t"}
        for i in range(BATCH)
    ]
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/changes",
        data=json.dumps({"source": "crash-test", "events": events}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        return int(answer.status)


@pytest.fixture
def embedded_cleanup() -> Iterator[None]:
    yield
    EmbeddedFalkorDB(get_settings().graph_dir).stop()  # serve was killed: its database stays


def test_kill_9_during_ingestion_loses_no_acknowledged_event(
    demo_model: Path, tmp_path: Path, embedded_cleanup: None
) -> None:
    settings = get_settings()
    registry_with(settings, [demo_model])
    http_port, grpc_port = _free_port(), _free_port()
    serve = Serve(http_port, grpc_port, tmp_path / "serve.log")
    acknowledged: list[int] = []  # first head number of each acknowledged batch
    stop = threading.Event()

    def ingest() -> None:
        n = 0
        while not stop.is_set():
            try:
                status = post(http_port, n)
            except (OSError, urllib.error.URLError):  # the server is gone
                return
            if status == 202:
                acknowledged.append(n)
            n += BATCH

    try:
        _until(serve.healthy, "serve did not become healthy")
        writer = threading.Thread(target=ingest, daemon=True)
        writer.start()
        _until(lambda: len(acknowledged) >= 50, "ingestion did not progress")
        serve.process.kill()  # kill -9, mid-ingestion
        serve.process.wait(timeout=HANG_GUARD_S)
        writer.join(timeout=HANG_GUARD_S)
        assert not writer.is_alive()
        serve.log.close()
        serve = Serve(http_port, grpc_port, tmp_path / "serve.log")
        _until(serve.healthy, "serve did not come back")
        after = 10**9  # a batch after the restart: accepted, and offsets go on
        assert post(http_port, after) == 202
    finally:
        stop.set()
        serve.end(signal.SIGTERM)
    with EventLog(settings.data_dir / "changes") as log:
        records = []
        offset = log.first_offset
        while batch := log.read(offset, 10_000):
            records += batch
            offset = batch[-1][0] + 1
    offsets = [o for o, _ in records]
    assert offsets == sorted(set(offsets))  # unique, increasing
    heads = [event.head for _, event in records]
    assert len(heads) == len(set(heads)), "an event is in the log twice"
    logged = set(heads)
    lost = [n for n in acknowledged for i in range(BATCH) if f"h{n + i}" not in logged]
    assert not lost, f"{len(lost)} acknowledged events lost, first h{lost[0]}"
    assert f"h{after}" in logged
    restart_offsets = [o for o, e in records if e.head and e.head.startswith(f"h{after}")]
    assert min(restart_offsets) > max(o for o, e in records if e.head == f"h{acknowledged[-1]}")
