"""Fixtures and helpers the reliability suite's files share (tests/test_reliability*.py,
tests/test_fuzz.py), loaded with ``pytest_plugins``: a small real model of the demo graph and
both front ends."""

from __future__ import annotations

from pathlib import Path

import pytest

from serving_support import demo_model_in

pytest_plugins = ["serving_support"]  # fixture: transport


@pytest.fixture(scope="module")
def demo_model(tmp_path_factory: pytest.TempPathFactory, datasets_dir: Path) -> Path:
    """A small real model of the demo graph, trained once per test module."""
    return demo_model_in(tmp_path_factory, datasets_dir, "reliability-model", epochs=5, dim=16)
