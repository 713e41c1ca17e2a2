"""kill -9 of ``kgweave serve`` during event ingestion, then a restart (issue 16): every change
event the server acknowledged (202) is in the durable log, once, and offsets go on after the
restart without reuse.

A real ``kgweave serve`` subprocess (Python front end, embedded FalkorDB, a registered demo
model) on free loopback ports; POST /v1/changes in a loop from a thread; SIGKILL once enough
batches were acknowledged; the log read back with :class:`~kgweave.changes.log.EventLog`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ingest_support import BATCH, Ingestion
from kgweave.graph.embedded import EmbeddedFalkorDB
from kgweave.settings import get_settings
from process_support import ServeProcess, free_ports, logged_events, post_events, until
from serving_support import registry_with

pytest_plugins = ["reliability_support"]  # fixtures: demo_model, transport


@pytest.fixture
def embedded_cleanup() -> Iterator[None]:
    yield
    EmbeddedFalkorDB(get_settings().graph_dir).stop()  # serve was killed: its database stays


def test_kill_9_during_ingestion_loses_no_acknowledged_event(
    demo_model: Path, tmp_path: Path, embedded_cleanup: None
) -> None:

    settings = get_settings()
    registry_with(settings, [demo_model])
    http_port, grpc_port = free_ports()
    serve = ServeProcess(http_port, grpc_port, tmp_path / "serve.log").wait_healthy()
    after = 10**9  # a batch after the restart: accepted, and offsets go on
    ingestion = Ingestion(http_port)
    acknowledged = ingestion.acknowledged  # first head number of each acknowledged batch
    try:
        until(lambda: len(acknowledged) >= 50, "ingestion did not progress")
        serve.kill()  # kill -9, mid-ingestion
        assert ingestion.join()  # the server is gone: the writer stops by itself
        serve = ServeProcess(http_port, grpc_port, tmp_path / "serve.log").wait_healthy()
        assert post_events(http_port, after, BATCH) == 202
    finally:
        ingestion.stop()
        serve.end()
    records = logged_events(settings.data_dir / "changes")
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
