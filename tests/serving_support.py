"""Test support: real models trained on the demo graph, and a real gRPC server in a thread."""

from __future__ import annotations

import asyncio
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from kgweave.api.auth import Security
from kgweave.api.frontend import find_frontend, start_native
from kgweave.api.server import RunningServer, start_grpc
from kgweave.dataplane import DataPlane
from kgweave.serving.training_run import run_training
from kgweave.settings import Settings, get_settings
from kgweave.v1 import admin_pb2

#: Tests wait on explicit conditions (a job's terminal state, a server's readiness), never on
#: a machine's speed; this only keeps a test that truly hangs from hanging the whole suite:
#: far beyond any run, on any machine (the slowest training here takes minutes on 2 loaded
#: cores)
HANG_GUARD_S = 3600.0

FINAL = {admin_pb2.JOB_STATE_SUCCEEDED, admin_pb2.JOB_STATE_FAILED, admin_pb2.JOB_STATE_CANCELLED}


def wait_until(condition: Callable[[], bool], what: str, poll_s: float = 0.05) -> None:
    """Return once ``condition()`` holds (checked every ``poll_s``); fail only on a hang."""
    guard = time.monotonic() + HANG_GUARD_S
    while not condition():
        assert time.monotonic() < guard, f"hung for {HANG_GUARD_S:.0f} s waiting for {what}"
        time.sleep(poll_s)


def job_updates(admin: object, job_id: str) -> list[admin_pb2.Job]:
    """Every update WatchJob streams for a job, up to its terminal state (the stream ends
    when the job does: the test waits as long as the job takes, not a fixed deadline)."""
    request = admin_pb2.GetJobRequest(job_id=job_id)
    updates = list(admin.WatchJob(request, timeout=HANG_GUARD_S))  # type: ignore[attr-defined]
    assert updates and updates[-1].state in FINAL, updates[-1:]
    return updates


def train_demo_model(settings: Settings, out: Path, **config: object) -> Path:
    """A real (small) model trained on the demo graph, written as an artifact to ``out``."""
    run_training({"config": config, "dataset": "demo"}, out, settings, lambda _e: None)
    return out


def registry_with(settings: Settings, models: list[Path]) -> None:
    """Copy trained artifacts into ``settings``' registry as v0001, v0002, ..."""
    for i, path in enumerate(models, start=1):
        shutil.copytree(path, settings.models_dir / f"v{i:04d}")


def serving_plane(model: Path, settings: Settings | None = None) -> DataPlane:
    """A data plane serving ``model`` as v0001 from this test's registry."""
    settings = settings or get_settings()
    registry_with(settings, [model])
    plane = DataPlane(settings)
    plane.versions.activate("v0001")
    return plane


TRANSPORTS = ("python", "native")


def frontend_binary() -> Path:
    """The built kgweave-frontend, or skip: building it needs gRPC's C++ library
    (``.ci/run`` builds it; README says how)."""
    binary = find_frontend(get_settings())
    if binary is None:
        pytest.skip("kgweave-frontend is not built (bash frontend/build.sh)")
    return binary


class ServerThread:
    """A real gRPC server on a free port, run by an event loop in a thread: grpc.aio
    (``transport="python"``) or the native front end (``"native"``) with the engine here."""

    def __init__(
        self, service: DataPlane, transport: str = "python", security: Security | None = None
    ) -> None:
        self.service = service
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        if transport == "native":
            settings = service.settings.model_copy(
                update={"grpc_host": "127.0.0.1", "grpc_port": 0}
            )
            starting = start_native(service, settings, frontend_binary(), security)
        else:
            starting = start_grpc(service, "127.0.0.1", 0, security)
        future = asyncio.run_coroutine_threadsafe(starting, self.loop)
        self.running: RunningServer = future.result(timeout=HANG_GUARD_S)
        self.address = f"127.0.0.1:{self.running.port}"

    def stop(self, grace: float = 1.0) -> None:
        asyncio.run_coroutine_threadsafe(self.running.stop(grace), self.loop).result(
            timeout=HANG_GUARD_S
        )
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=HANG_GUARD_S)
        self.service.close()
