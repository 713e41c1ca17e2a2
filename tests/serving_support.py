"""Test support: real models trained on the demo graph, and a real gRPC server in a thread.

Also a pytest plugin (``pytest_plugins = ["serving_support"]``): the ``transport`` and
``weak_model`` fixtures."""

from __future__ import annotations

import asyncio
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from kgweave.api.auth import Security
from kgweave.api.frontend import find_frontend, start_native
from kgweave.api.server import RunningServer, start_grpc
from kgweave.dataplane import DataPlane
from kgweave.serving.training_run import run_training
from kgweave.settings import Settings, get_settings
from kgweave.v1 import admin_pb2, knowledge_pb2_grpc
from process_support import HANG_GUARD_S

#: Tests wait on explicit conditions (a job's terminal state, a server's readiness), never on
#: a machine's speed; this only keeps a test that truly hangs from hanging the whole suite:
#: far beyond any run, on any machine (the slowest training here takes minutes on 2 loaded
#: cores)

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


def demo_model_in(
    factory: pytest.TempPathFactory, datasets_dir: Path, name: str, **config: object
) -> Path:
    """:func:`train_demo_model` in a fresh temporary folder ``name`` (with its own data folder),
    for module- and session-scoped fixtures."""
    root = factory.mktemp(name)
    settings = Settings(data_dir=root / "data", datasets_dir=datasets_dir, device="cpu")
    return train_demo_model(settings, root / "m", **config)


def two_demo_models(
    factory: pytest.TempPathFactory, datasets_dir: Path, name: str, epochs: int, dims: list[int]
) -> list[Path]:
    """Two real models of the demo graph that answer differently: the default kind (seed 0,
    ``dims[0]``) and DistMult (seed 1, ``dims[1]``)."""
    return [
        demo_model_in(factory, datasets_dir, f"{name}-a", epochs=epochs, dim=dims[0], seed=0),
        demo_model_in(
            factory, datasets_dir, f"{name}-b", epochs=epochs, dim=dims[1], seed=1, model="distmult"
        ),
    ]


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


def serve_model(
    model: Path, transport: str = "python", **overrides: object
) -> Iterator[ServerThread]:
    """For fixtures (``yield from``): a real server of ``model`` as v0001 of this test's
    registry, on ``transport`` (settings ``overrides`` on this test's), stopped when the test
    ends."""
    settings = get_settings().model_copy(update=overrides) if overrides else None
    running = ServerThread(serving_plane(model, settings), transport)
    yield running
    running.stop()


@pytest.fixture(params=TRANSPORTS)
def transport(request: pytest.FixtureRequest) -> str:
    """Both gRPC front ends, for the tests of a served API: grpc.aio ("python") and
    kgweave-frontend ("native"). A test module gets this fixture with
    ``pytest_plugins = ["serving_support"]``."""
    return str(request.param)


@pytest.fixture(scope="module")
def weak_model(tmp_path_factory: pytest.TempPathFactory, datasets_dir: Path) -> Path:
    """A real but barely trained demo model (1 epoch), once per test module: any decent job
    beats it."""
    return demo_model_in(tmp_path_factory, datasets_dir, "weak", epochs=1, dim=16, eval_every=1)


class HeldScoring:
    """The active model's scoring passes wait for :attr:`gate` (the scoring stays real):
    :attr:`scoring` is set once a pass is held, :attr:`held_rows` counts the rows held."""

    def __init__(self, plane: DataPlane, monkeypatch: pytest.MonkeyPatch) -> None:
        self.gate = threading.Event()
        self.scoring = threading.Event()
        self.held_rows = 0
        predictor = plane.versions.active().predictor
        original = predictor.top_ids

        def held(hr: Any, *args: Any, **kwargs: Any) -> Any:
            if not self.gate.is_set():
                self.held_rows += len(hr)
                self.scoring.set()
                self.gate.wait(timeout=HANG_GUARD_S)
            return original(hr, *args, **kwargs)

        monkeypatch.setattr(predictor, "top_ids", held)


class HeldServer:
    """A real server of ``model`` (as v0001, on ``transport``) whose scoring passes wait for
    ``held.gate``, with a KnowledgeService stub on it; :meth:`close` opens the gate and stops
    it all."""

    def __init__(
        self, model: Path, monkeypatch: pytest.MonkeyPatch, transport: str = "python"
    ) -> None:
        self.plane = serving_plane(model)
        self.held = HeldScoring(self.plane, monkeypatch)
        self.server = ServerThread(self.plane, transport)
        self.channel = grpc.insecure_channel(self.server.address)
        self.knowledge = knowledge_pb2_grpc.KnowledgeServiceStub(self.channel)

    def close(self) -> None:
        self.held.gate.set()
        self.channel.close()
        self.server.stop()


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
