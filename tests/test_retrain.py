"""Retraining from graph changes: new facts in the graph become a new model version, served
without downtime. Real embedded FalkorDB, real training job in its own process."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from kgweave.api.convert import status_to_pb, to_dict
from kgweave.bootstrap import prepare_plane
from kgweave.changes.diff import SOURCE as SNAPSHOT_DIFF
from kgweave.changes.diff import Part, to_export
from kgweave.changes.events import UNCHANGED, ChangeEvent, ChangeKind
from kgweave.changes.retrain import CONSUMER
from kgweave.cli.remote import _print_status
from kgweave.dataplane import DataPlane
from kgweave.graph.connect import open_store
from kgweave.graph.embedded import EmbeddedFalkorDB
from kgweave.graph.store import Census, EntityRow
from kgweave.predict import Query
from kgweave.serving.activation import IF_BETTER, decide
from kgweave.serving.registry import ModelRegistry
from kgweave.settings import get_settings
from kgweave.v1 import admin_pb2
from serving_support import wait_until


def plane_with(monkeypatch: pytest.MonkeyPatch, **env: str) -> Iterator[DataPlane]:
    """A data plane on the embedded graph and the demo's first model, with these settings."""
    monkeypatch.setenv("KGWEAVE_BOOTSTRAP_EPOCHS", "20")
    monkeypatch.setenv("KGWEAVE_RETRAIN_INTERVAL_S", "0.3")
    for name, value in env.items():
        monkeypatch.setenv(f"KGWEAVE_{name.upper()}", value)
    settings = get_settings()
    svc = prepare_plane(settings, progress=False)
    try:
        yield svc
    finally:
        svc.close()
        EmbeddedFalkorDB(settings.graph_dir).stop()


@pytest.fixture
def service(monkeypatch: pytest.MonkeyPatch) -> Iterator[DataPlane]:
    yield from plane_with(monkeypatch, retrain_min_events="3", activation_policy="always")


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
    # both trainings held out the graph's fixed validation set (the first one made it), so
    # the default policy judges the retrain against v0001 on those facts: comparable, though
    # the graph (and so the data fingerprint) changed in between
    registry = ModelRegistry(settings.models_dir)
    first, second = registry.get("v0001"), registry.get("v0002")
    assert first.config["fixed_valid"]["fingerprint"] == second.config["fixed_valid"]["fingerprint"]
    assert decide(IF_BETTER, second, first)[1].split(":")[1].startswith(" MRR on the fixed")
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


@pytest.fixture
def diff_only(monkeypatch: pytest.MonkeyPatch) -> Iterator[DataPlane]:
    """The snapshot diff and the change applier, no training; no periodic full compare."""
    yield from plane_with(
        monkeypatch,
        incremental_updates="false",
        full_retrain_drift="0",
        snapshot_diff_full_every="1000000",
    )


def diff_events(service: DataPlane) -> list[tuple[str | None, str | None, str | None]]:
    return [(e.head, e.relation, e.tail)
            for _, e in service.changes.event_log.read(0, limit=100_000)
            if e.source == SNAPSHOT_DIFF]  # fmt: skip


def test_changes_through_the_log_cost_the_snapshot_diff_no_export(
    diff_only: DataPlane, capsys: pytest.CaptureFixture[str]
) -> None:
    service = diff_only
    settings = service.settings
    store = open_store(settings.graph_uri, settings)
    watcher = service.changes.start_retraining(lambda: store)
    wait_for(lambda: watcher.state.diffs >= 2)
    exports = watcher.state.diffs - watcher.state.diffs_skipped  # the baseline's
    assert exports == 1
    # written through kgweave (graph and log): the counts are explained by the log
    service.write_facts(
        added=[("alan_turing", "born_in", "paris"), ("srinivasa_ramanujan", "born_in", "london")],
        removed=[("albert_einstein", "born_in", "ulm")],
        entities=[("srinivasa_ramanujan", "Srinivasa Ramanujan", None)],
        deleted=[],
        wait_s=-1,
    )
    diffs = watcher.state.diffs
    wait_for(lambda: watcher.state.diffs >= diffs + 3)
    assert watcher.state.diffs - watcher.state.diffs_skipped == exports
    assert diff_events(service) == []
    # a fact the graph holds written again, one it does not hold removed, one fact twice:
    # logged (and served) all the same, marked as changing no count, and still no export
    again = ("alan_turing", "born_in", "paris")
    service.write_facts(added=[again, ("ada_lovelace", "born_in", "paris")] * 2,
                        removed=[("alan_turing", "born_in", "ulm")], entities=[], deleted=[],
                        wait_s=-1)  # fmt: skip
    unchanged = [(e.kind.value, e.head, e.tail)
                 for _, e in service.changes.event_log.read(0, limit=100_000)
                 if e.graph_unchanged]  # fmt: skip
    assert unchanged == [("triple_added", "alan_turing", "paris"),
                         ("triple_added", "alan_turing", "paris"),
                         ("triple_added", "ada_lovelace", "paris"),
                         ("triple_removed", "alan_turing", "ulm")]  # fmt: skip
    diffs = watcher.state.diffs
    wait_for(lambda: watcher.state.diffs >= diffs + 3)
    assert watcher.state.diffs - watcher.state.diffs_skipped == exports
    assert diff_events(service) == []
    # written behind kgweave's back: the counts differ, the diff exports and finds it
    store.add_triples([("alan_turing", "citizen_of", "france")])
    wait_for(lambda: ("alan_turing", "citizen_of", "france") in diff_events(service))
    assert watcher.state.diffs - watcher.state.diffs_skipped == exports + 1
    # reading the one relation whose count changed: the others are kept from the last
    # snapshot, so nothing else is emitted (neither the logged writes again nor removals)
    assert watcher.state.diffs_partial == 1
    assert diff_events(service) == [("alan_turing", "citizen_of", "france")]
    # and in the server's status (gRPC and HTTP ChangesStatus, Cypher's status map, the CLI)
    status = status_to_pb(service.status())
    changes = status.changes
    assert changes.snapshot_diffs >= changes.snapshot_diff_reads == exports + 1
    assert (changes.snapshot_diff_partial_reads, changes.changes_behind_the_log) == (1, 1)
    _print_status(to_dict(status))
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("diff "))
    assert line.endswith(f"checks of the graph, {exports + 1} reads (1 of some relations only); "
                         "changes found behind the log: 1"), line  # fmt: skip


def test_a_change_before_the_watcher_starts_is_emitted(diff_only: DataPlane) -> None:
    """The diff's baseline is the graph the first model was trained on (recorded by the
    bootstrap), not the graph when the watcher first runs: a fact written behind kgweave's
    back in between is emitted by the first diff and served."""
    service = diff_only
    settings = service.settings
    store = open_store(settings.graph_uri, settings)
    fact = ("alan_turing", "citizen_of", "france")
    store.add_triples([fact])  # after the first model's training, before any diff ran
    watcher = service.changes.start_retraining(lambda: store)
    wait_for(lambda: fact in diff_events(service))
    applier = service.changes.applier
    assert applier is not None
    wait_for(lambda: fact in applier.overlay.added)
    _, answers = service.queries.predict([Query("citizen_of", head="alan_turing")], k=50)
    assert any(a.entity == "france" and a.known for a in answers[0])
    assert watcher.state.diffs >= 1


def test_the_census_is_explained_by_the_logged_events() -> None:
    last = Census(6, {"r": 7, "s": 3})

    def added(h: str, t: str, source: str = "kgweave", relation: str = "r") -> ChangeEvent:
        return ChangeEvent(ChangeKind.TRIPLE_ADDED, head=h, relation=relation, tail=t,
                           source=source)  # fmt: skip

    def read(*relations: str, entities: bool = False) -> Part:
        return Part(frozenset(relations), entities)

    removed = ChangeEvent(ChangeKind.TRIPLE_REMOVED, head="a", relation="r", tail="b")
    upsert = ChangeEvent(ChangeKind.ENTITY_UPSERTED, entity="c")
    assert to_export(last, last, []) is None
    assert to_export(last, Census(8, {"r": 8, "s": 3}), [added("x", "y")]) is None
    assert to_export(last, last, [added("x", "y"), removed]) is None
    assert to_export(last, Census(7, last.facts), [upsert]) is None
    # a new relation through the log
    assert (
        to_export(last, Census(8, {**last.facts, "t": 1}), [added("x", "y", relation="t")]) is None
    )
    # a change the log does not hold: its relation is read, the entities when their count moved
    assert to_export(last, Census(6, {"r": 8, "s": 3}), []) == read("r")
    assert to_export(last, Census(6, {"r": 8, "s": 2, "t": 1}), []) == read("r", "s", "t")
    assert to_export(last, Census(8, {"r": 8, "s": 3}), []) == read("r", entities=True)
    assert to_export(last, Census(7, last.facts), []) == read(entities=True)
    # the diff's own events are in its snapshot already
    assert to_export(last, Census(6, {"r": 8, "s": 3}), [added("x", "y", SNAPSHOT_DIFF)]) == read(
        "r"
    )
    # a deleted entity: the relations of the facts it took are read (their counts tell)
    deleted = ChangeEvent(ChangeKind.ENTITY_DELETED, entity="a")
    assert to_export(last, Census(5, last.facts), [deleted]) is None
    assert to_export(last, Census(5, {"r": 5, "s": 3}), [deleted]) == read("r")
    assert to_export(last, Census(4, last.facts), [deleted]) == read(entities=True)
    # a write that changed no count: a fact the graph held added, one it lacked removed
    same = dict(UNCHANGED)
    unchanged = [ChangeEvent(ChangeKind.TRIPLE_ADDED, head="a", relation="r", tail="b",
                             properties=same),
                 ChangeEvent(ChangeKind.TRIPLE_REMOVED, head="x", relation="s", tail="y",
                             properties=same)]  # fmt: skip
    assert to_export(last, last, unchanged) is None
    assert to_export(last, Census(6, {"r": 8, "s": 3}), unchanged) == read("r")


def test_the_watcher_runs_for_any_kind_of_retraining() -> None:
    """Turning incremental updates off keeps full retrains (drift, schedule, event count) and
    the snapshot diff; only turning every kind off stops the watcher."""
    from kgweave.changes.retrain import retraining_wanted

    none = {"incremental_updates": False, "retrain_min_events": 0, "full_retrain_drift": 0.0,
            "full_retrain_interval_s": 0.0}  # fmt: skip
    base = get_settings()
    assert not retraining_wanted(base.model_copy(update=none))
    alone = [("incremental_updates", True), ("retrain_min_events", 5),
             ("full_retrain_drift", 0.2), ("full_retrain_interval_s", 3600.0)]  # fmt: skip
    for name, value in alone:
        assert retraining_wanted(base.model_copy(update={**none, name: value})), name
    # updates need the change applier
    updates_alone = {**none, "incremental_updates": True, "apply_changes": False}
    assert not retraining_wanted(base.model_copy(update=updates_alone))
    assert retraining_wanted(base)  # the defaults: updates and drift


def test_status_prints_what_the_retraining_did(capsys: pytest.CaptureFixture[str]) -> None:
    """`kgweave status` on the JSON form of Status (int64 fields come as strings): the
    refinements only where one ran, the diff's line only once it checked."""

    def printed(**changes: int) -> str:
        status = admin_pb2.StatusResponse(ready=True, kgweave_version="x",
                                          changes=admin_pb2.ChangesStatus(**changes))  # fmt: skip
        _print_status(to_dict(status))
        return capsys.readouterr().out

    out = printed(updates_started=2, updates_registered=1)
    assert "1 of 2 updates registered" in out and "refinement" not in out and "diff " not in out
    out = printed(updates_started=1, refinements_started=2, refinements_activated=1)
    assert "1 of 2 refinements activated" in out
    out = printed(snapshot_diffs=5, snapshot_diff_reads=2, snapshot_diff_partial_reads=1,
                  changes_behind_the_log=3)  # fmt: skip
    assert "diff        5 checks of the graph, 2 reads (1 of some relations only); " in out
