"""Fixtures and helpers the reliability suite's files share (tests/test_reliability*.py,
tests/test_fuzz.py), loaded with ``pytest_plugins``: a small real model of the demo graph and
both front ends."""

from __future__ import annotations

from pathlib import Path

import pytest

from kgweave.settings import Settings
from serving_support import TRANSPORTS, train_demo_model


@pytest.fixture(scope="module")
def demo_model(tmp_path_factory: pytest.TempPathFactory, datasets_dir: Path) -> Path:
    """A small real model of the demo graph, trained once per test module."""
    root = tmp_path_factory.mktemp("reliability-model")
    settings = Settings(data_dir=root / "data", datasets_dir=datasets_dir, device="cpu")
    return train_demo_model(settings, root / "m", epochs=5, dim=16, seed=0)


@pytest.fixture(params=TRANSPORTS)
def transport(request: pytest.FixtureRequest) -> str:
    """Both gRPC front ends: grpc.aio ("python") and kgweave-frontend ("native")."""
    return str(request.param)
