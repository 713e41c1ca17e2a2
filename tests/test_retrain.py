"""Retraining from graph changes: new facts in the graph become a new model version, served
without downtime. Real embedded FalkorDB, real training job in its own process."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from kgweave.bootstrap import prepare_plane
from kgweave.changes.retrain import CONSUMER
from kgweave.dataplane import DataPlane
from kgweave.graph.connect import open_store
from kgweave.graph.embedded import EmbeddedFalkorDB
from kgweave.graph.store import EntityRow
from kgweave.predict import Query
from kgweave.settings import get_settings
from serving_support import wait_until


@pytest.fixture
def service(monkeypatch: pytest.MonkeyPatch) -> Iterator[DataPlane]:
    monkeypatch.setenv("KGWEAVE_BOOTSTRAP_EPOCHS", "20")
    monkeypatch.setenv("KGWEAVE_RETRAIN_MIN_EVENTS", "3")
    monkeypatch.setenv("KGWEAVE_RETRAIN_INTERVAL_S", "0.3")
    monkeypatch.setenv("KGWEAVE_ACTIVATION_POLICY", "always")
    settings = get_settings()
    svc = prepare_plane(settings, progress=False)  # embedded graph, demo, first model
    yield svc
    svc.close()
    EmbeddedFalkorDB(settings.graph_dir).stop()


def wait_for(condition: Callable[[], bool]) -> None:
    """Until ``condition`` holds: a retraining job takes what it takes on this machine."""
    wait_until(condition, "the retraining watcher", poll_s=0.1)


def test_new_facts_in_the_graph_become_a_served_version(service: DataPlane) -> None:
    settings = service.settings
    store = open_store(settings.graph_uri, settings)
    assert service.versions.active().version == "v0001"
    assert "srinivasa_ramanujan" not in service.versions.active().artifact.entities
    watcher = service.changes.start_retraining(lambda: store)
    wait_for(lambda: watcher.state.checks >= 2)
    # the baseline: the graph as the first model saw it triggers nothing
    assert watcher.state.jobs_started == 0 and watcher.state.pending == 0

    # an entity with text and no edges yet: served at once by the change applier (cold start
    # from its text), no retraining
    store.upsert_entities(
        [EntityRow("srinivasa_ramanujan", "Srinivasa Ramanujan", "Indian mathematician")]
    )
    applier = service.changes.applier
    assert applier is not None
    wait_for(lambda: applier.overlay.origins.get("srinivasa_ramanujan") == "text")
    assert service.versions.active().base_version == "v0001" and watcher.state.jobs_started == 0
    version, answers = service.queries.predict(
        [Query("citizen_of", head="Srinivasa Ramanujan")], k=3
    )
    assert version.startswith("v0001@") and len(answers[0]) == 3
    _, answers = service.queries.predict([Query("educated_at", tail="srinivasa_ramanujan")], k=3)
    assert len(answers[0]) == 3
    # people the projection puts nearest are people: the text "Indian mathematician" lands
    # among the demo's scientists rather than among cities or works
    hits = service.versions.active().predictor.model.entity.weight
    table = hits / hits.norm(dim=1, keepdim=True)
    labels = service.versions.active().artifact.entities.labels
    row = table[labels.index("srinivasa_ramanujan")]
    nearest = [labels[i] for i in (table @ row).topk(6).indices.tolist()[1:]]
    people = {h for h, r, _ in service.versions.active().verbalizer.triples if r == "born_in"}
    assert len(set(nearest) & people) >= 3, nearest

    store.add_triples(
        [
            ("srinivasa_ramanujan", "born_in", "london"),
            ("srinivasa_ramanujan", "citizen_of", "united_kingdom"),
            ("srinivasa_ramanujan", "educated_at", "university_of_cambridge"),
        ]
    )
    wait_for(lambda: watcher.state.jobs_started == 1)
    wait_for(lambda: service.versions.active().base_version == "v0002")
    served = service.versions.active()
    assert "srinivasa_ramanujan" in served.artifact.entities
    version, answers = service.queries.predict([Query("born_in", head="Srinivasa Ramanujan")], k=5)
    assert version.split("@")[0] == "v0002" and len(answers[0]) == 5
    # the events are committed once the job succeeded: nothing pending, no second job
    wait_for(
        lambda: service.changes.event_log.position(CONSUMER) == service.changes.event_log.end_offset
    )
    checks = watcher.state.checks  # two more checks of the graph start no second job
    wait_for(lambda: watcher.state.checks >= checks + 2)
    assert watcher.state.jobs_started == 1
