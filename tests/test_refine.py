"""Refinement (changes/refine.py): the server's first model, cut short by its time budget, is
trained on in the background between incremental updates, each refinement a version
activated only when it beats the served one on the fixed validation set. Real gRPC server,
real embedded FalkorDB, the real updater process; the demo graph."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from kgweave.changes.refine import epochs_left
from kgweave.dataplane import DataPlane
from kgweave.v1 import admin_pb2
from serving_support import HANG_GUARD_S
from test_incremental import Api, base, serve_demo, wait_for

EPOCHS = 20  # the first model's, as the running fixture sets them


@pytest.fixture
def running(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[DataPlane, Api]]:
    yield from serve_demo(monkeypatch)


@pytest.fixture
def cut_short(monkeypatch: pytest.MonkeyPatch) -> None:
    """The first model's budget spent by its first step: served after it, EPOCHS planned;
    a refinement bounded by the epochs left, not by its seconds. Updates judged with a wide
    tolerance (a test of the path: whether an update of a barely trained model keeps its
    fixed-set MRR is not the point); a refinement must beat the served version whatever the
    tolerance."""
    monkeypatch.setenv("KGWEAVE_BOOTSTRAP_BUDGET_S", "1e-9")
    monkeypatch.setenv("KGWEAVE_REFINE_CHUNK_S", "3600")
    monkeypatch.setenv("KGWEAVE_VALIDATION_TOLERANCE", "1")


def test_a_first_model_cut_short_is_refined_in_the_background(
    cut_short: None, running: tuple[DataPlane, Api]
) -> None:
    plane, api = running
    watcher = plane.changes.retrainer
    assert watcher is not None
    first = plane.versions.registry.get("v0001").config
    assert first["refinable"] and first["run"]["stopped_because"] == "time_budget"
    left = epochs_left(first)
    assert 0 < left <= EPOCHS and left == EPOCHS - first["run"]["epochs_completed"]

    # with no change pending, a refinement trains v0001 on: every known fact, the epochs left
    wait_for(lambda: base(plane) == "v0002", "a refinement activated")
    refined = plane.versions.active().artifact.config
    update = refined["incremental"]
    assert update["base_version"] == "v0001" and update["new_facts"] == 0
    assert update["refine"]["epochs"] == pytest.approx(left, abs=1.0)
    assert update["refine_left"] == pytest.approx(0.0, abs=1.0)
    assert update["candidates"] == len(plane.versions.active().artifact.entities)  # full softmax
    judged = refined["fixed_valid"]
    assert judged["improve_only"] and judged["mrr"] > judged["base_mrr"]
    info = api.models()["v0002"]
    assert info.active and info.decision.startswith("activated: MRR on the fixed validation set")
    # (the watcher counts the job at its check after the job's end, which may follow the swap)
    wait_for(lambda: watcher.state.refinements_activated == 1, "the refinement counted")
    assert watcher.state.refinements_started == 1
    metrics = plane.metrics.render().decode()
    assert 'kgweave_retrain_jobs_total{kind="refine",outcome="activated"} 1.0' in metrics
    changes = api.admin.Status(admin_pb2.StatusRequest(), timeout=HANG_GUARD_S).changes
    assert (changes.refinements_started, changes.refinements_activated) == (1, 1)

    # its epochs done: no other refinement; an update on top of it is judged against it
    checks = watcher.state.checks
    wait_for(lambda: watcher.state.checks >= checks + 3, "three more checks")
    assert watcher.state.refinements_started == 1
    api.write([("albert_einstein", "born_in", "paris")])
    wait_for(lambda: base(plane) == "v0003")
    judged = plane.versions.active().artifact.config["fixed_valid"]
    assert judged["base_version"] == "v0002" and judged["anchor_version"] == "v0002"
    assert watcher.state.refinements_started == 1


@pytest.fixture
def stalled(monkeypatch: pytest.MonkeyPatch) -> None:
    """Refinements that learn nothing (a learning rate too small to move a rank): the fixed-set
    MRR stays where it was."""
    monkeypatch.setenv("KGWEAVE_INCREMENTAL_LR", "1e-12")
    monkeypatch.setenv("KGWEAVE_REFINE_PATIENCE", "2")


def test_refinements_that_do_not_beat_the_served_model_are_not_served_and_stop(
    cut_short: None, stalled: None, running: tuple[DataPlane, Api]
) -> None:
    plane, api = running
    watcher = plane.changes.retrainer
    assert watcher is not None and epochs_left(plane.versions.registry.get("v0001").config) > 0
    wait_for(lambda: {"v0002", "v0003"} <= set(api.models()), "two refinements registered")
    models = api.models()
    for version in ("v0002", "v0003"):
        assert not models[version].active
        assert models[version].decision.startswith(
            "not activated: a refinement, MRR on the fixed validation set"
        ), models[version].decision
        assert "does not beat v0001's" in models[version].decision
    assert base(plane) == "v0001"
    # refine_patience misses in a row: no more refinements
    wait_for(lambda: watcher.state.refinements_started == 2 and watcher._job is None)
    checks = watcher.state.checks
    wait_for(lambda: watcher.state.checks >= checks + 3, "three more checks")
    assert watcher.state.refinements_started == 2 and set(api.models()) == {
        "v0001",
        "v0002",
        "v0003",
    }
    # changes still train: an update is registered (judged as updates are)
    api.write([("albert_einstein", "born_in", "paris")])
    wait_for(lambda: "v0004" in api.models(), "an update registered")
    assert "refine" not in plane.versions.registry.get("v0004").config["incremental"]


@pytest.fixture
def long_plan(monkeypatch: pytest.MonkeyPatch) -> None:
    """A first model planned for far more epochs than one refinement gets through."""
    monkeypatch.setenv("KGWEAVE_BOOTSTRAP_EPOCHS", "100000")


def test_a_change_wraps_up_a_running_refinement(
    cut_short: None, long_plan: None, running: tuple[DataPlane, Api]
) -> None:
    """A refinement of an hour (its chunk) runs; a write arrives: the refinement ends after
    its current step, is judged on the steps it made, and the update of the write is served
    next, not an hour later."""
    plane, api = running
    watcher = plane.changes.retrainer
    assert watcher is not None
    left = epochs_left(plane.versions.registry.get("v0001").config)
    assert left > 99_000
    wait_for(lambda: watcher._refining, "a refinement under way")
    fact = ("albert_einstein", "born_in", "paris")
    api.write([fact])
    wait_for(
        lambda: plane.versions.active().artifact.config.get("incremental", {}).get("new_facts"),
        "the update of the write served",
    )
    refined = plane.versions.registry.get("v0002").config["incremental"]
    assert 0 < refined["refine"]["epochs"] < left  # wrapped up, with its steps so far
    update = plane.versions.active().artifact.config["incremental"]
    assert update["new_facts"] == 1 and "refine" not in update
    assert api.candidate(*fact).known
