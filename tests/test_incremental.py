"""Incremental updates from graph changes (changes/incremental.py, changes/retrain.py): a
write is known at once, then a warm-started update trained on it in a job worker is
registered, judged on the fixed validation set and served. Real gRPC server, real embedded
FalkorDB, real job worker processes; small steps on the demo graph."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

import test_freshness as freshness
from kgweave.artifact import ModelArtifact, load_artifact
from kgweave.bootstrap import prepare_plane
from kgweave.changes.apply import warm_started_from
from kgweave.changes.retrain import INCREMENTAL, RETRY_MAX_S, SkipKind, retry_delay
from kgweave.cli.main import main
from kgweave.dataplane import DataPlane
from kgweave.graph.connect import open_store
from kgweave.graph.embedded import EmbeddedFalkorDB
from kgweave.serving.jobs import SUPERSEDED, JobState
from kgweave.serving.validation import load_fixed, path_of
from kgweave.settings import get_settings
from kgweave.v1 import admin_pb2, knowledge_pb2
from serving_support import HANG_GUARD_S, ServerThread, job_updates, wait_until
from test_freshness_crash import Server, expect_killed, serve_env


def wait_for(condition: Callable[[], bool], what: str = "an incremental update") -> None:
    wait_until(condition, what, poll_s=0.1)


class Api(freshness.Api):
    """The gRPC services of a running server, and what these tests read of them."""

    def candidate(self, head: str, relation: str, tail: str) -> knowledge_pb2.Candidate:
        """The candidate ``tail`` for (head, relation, ?) over every entity."""
        reply = self.knowledge.PredictLinks(
            knowledge_pb2.PredictLinksRequest(
                queries=[knowledge_pb2.LinkQuery(head=head, relation=relation)], k=1000
            ),
            timeout=HANG_GUARD_S,
        )
        (found,) = [c for c in reply.results[0].candidates if c.entity_id == tail]
        return found

    def models(self) -> dict[str, admin_pb2.ModelInfo]:
        reply = self.admin.ListModels(admin_pb2.ListModelsRequest(), timeout=HANG_GUARD_S)
        return {m.version: m for m in reply.models}


@pytest.fixture
def running(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[DataPlane, Api]]:
    yield from serve_demo(monkeypatch)


def serve_demo(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[DataPlane, Api]]:
    """A server of the demo graph (its first model trained now) with the retrain watcher,
    small steps; the settings a test's fixtures set first are kept."""
    if "KGWEAVE_BOOTSTRAP_EPOCHS" not in os.environ:  # (a test's own fixture may set it)
        monkeypatch.setenv("KGWEAVE_BOOTSTRAP_EPOCHS", "20")
    if "KGWEAVE_RETRAIN_INTERVAL_S" not in os.environ:  # (a test's own fixture may set it)
        monkeypatch.setenv("KGWEAVE_RETRAIN_INTERVAL_S", "0.3")
    monkeypatch.setenv("KGWEAVE_INCREMENTAL_STEPS", "30")
    if "KGWEAVE_FULL_RETRAIN_DRIFT" not in os.environ:  # (a test's own fixture may set it)
        monkeypatch.setenv("KGWEAVE_FULL_RETRAIN_DRIFT", "0")  # only incremental updates here
    settings = get_settings()
    plane = prepare_plane(settings, progress=False)  # embedded graph, demo, first model
    yield from serve_plane(plane)


def serve_plane(plane: DataPlane) -> Iterator[tuple[DataPlane, Api]]:
    """``plane`` served, with the retrain watcher started (its baseline taken)."""
    settings = plane.settings
    server = ServerThread(plane)
    api = Api(server.address)
    store = open_store(settings.graph_uri, settings)
    watcher = plane.changes.start_retraining(lambda: store)
    wait_for(lambda: watcher.state.checks >= 1, "the baseline")
    try:
        yield plane, api
    finally:
        api.channel.close()
        server.stop()
        EmbeddedFalkorDB(settings.graph_dir).stop()


@pytest.fixture
def tolerant(monkeypatch: pytest.MonkeyPatch) -> None:
    """Judged on the fixed set with a wide tolerance: a test of the path, not of the policy."""
    monkeypatch.setenv("KGWEAVE_VALIDATION_TOLERANCE", "1")


@pytest.fixture
def wrecking(monkeypatch: pytest.MonkeyPatch) -> None:
    """Updates with a learning rate that wrecks the warm-started weights."""
    monkeypatch.setenv("KGWEAVE_INCREMENTAL_LR", "5")
    monkeypatch.setenv("KGWEAVE_INCREMENTAL_STEPS", "40")


def base(plane: DataPlane) -> str:
    return plane.versions.active().base_version


@pytest.fixture
def local(monkeypatch: pytest.MonkeyPatch) -> None:
    """Updates train a local model over a candidate set smaller than the demo graph, as they
    do on any graph over incremental_candidates entities."""
    monkeypatch.setenv("KGWEAVE_INCREMENTAL_CANDIDATES", "24")


def test_written_fact_is_known_then_trained_then_served(
    tolerant: None, local: None, running: tuple[DataPlane, Api]
) -> None:
    plane, api = running
    watcher = plane.changes.retrainer
    assert watcher is not None and base(plane) == "v0001"
    fact = ("albert_einstein", "born_in", "paris")
    before = api.candidate(*fact)
    assert not before.known
    # the graph's facts the first version held out (the fixed validation set and its test
    # split) are known all the same, though never trained on
    fixed = load_fixed(plane.settings)
    assert fixed is not None and len(fixed.triples) > 0
    first = plane.versions.active().artifact
    assert first.config["dataset"]["held_out_known"] > len(fixed.triples)  # valid and test
    assert len(first.known) == len(first.training_facts) + first.config["dataset"]["held_out_known"]
    held = fixed.triples[0]
    assert held not in labelled(first.training_facts, first) and held in labelled(
        first.known, first
    )
    assert api.candidate(*held).known and held in api.facts(held[0])

    # known at once (the overlay), before any training
    reply = api.write([fact])
    assert reply.applied and reply.version.startswith("v0001@")
    assert api.candidate(*fact).known and fact in api.facts("albert_einstein")

    # then an incremental update trains on it and is served
    wait_for(lambda: base(plane) == "v0002")
    served = plane.versions.active()
    assert served.artifact.config["source"] == "incremental"
    assert warm_started_from(served.artifact.config) == "v0001"
    # the cold-start projection (text vectors into entity space) is fitted once per entity
    # space: an update, warm-started from its base, keeps its base's (not fitted again)
    applier = plane.changes.applier
    assert applier is not None
    wait_for(lambda: applier._projection is not None, "the cold-start projection fitted")
    projection = applier._projection
    update = served.artifact.config["incremental"]
    assert update["base_version"] == "v0001" and update["new_facts"] >= 1
    assert update["candidates"] < len(served.artifact.entities)  # a local model trained
    after = api.candidate(*fact)
    assert after.known and after.score > before.score, (before, after)
    assert after.rank <= before.rank
    # the update trained on every fact of the graph but the fixed set, which it knows too
    assert held not in labelled(served.artifact.training_facts, served.artifact)
    assert served.artifact.config["dataset"]["held_out_known"] == len(fixed.triples)
    assert api.candidate(*held).known and held in api.facts(held[0])
    assert len(served.artifact.training_facts) + len(fixed.triples) == len(served.artifact.known)
    # the version knows the fact itself: nothing of it is left in the overlay
    assert fact not in applier.overlay.added
    # judged on the fixed validation set, which holds none of the new facts; the reason is
    # with the version and in the job's final event
    assert fact not in fixed.triples
    assert served.artifact.config["fixed_valid"]["fingerprint"] == fixed.fingerprint
    assert served.artifact.config["fixed_valid"]["anchor_version"] == "v0001"
    info = api.models()["v0002"]
    assert info.active and info.decision.startswith("activated: MRR on the fixed validation set")
    final = job_updates(api.admin, watcher.state.last_job)[-1]
    assert final.activated and final.model_version == "v0002"
    assert final.message == info.decision
    wait_for(lambda: plane.changes.event_log.position(INCREMENTAL) >= reply.next_offset)
    # visible in the metrics: the update's outcome, its duration, the lag until it is served
    metrics = plane.metrics.render().decode()
    assert 'kgweave_retrain_jobs_total{kind="incremental",outcome="activated"} 1.0' in metrics
    assert 'kgweave_retrain_job_seconds_count{kind="incremental"} 1.0' in metrics
    assert 'kgweave_trained_lag_seconds_count{kind="incremental"} 1.0' in metrics
    changes = api.admin.Status(admin_pb2.StatusRequest(), timeout=HANG_GUARD_S).changes
    assert changes.trained_offset >= reply.next_offset and changes.updates_registered == 1
    assert changes.updates_started == 1 and not changes.updates_skipped

    # a new entity with text and two facts: a cold-start row at once, a trained row next
    stored = path_of(plane.settings).read_bytes()
    emmy = admin_pb2.EntityWrite(
        id="emmy_noether", name="Emmy Noether", description="German mathematician"
    )
    reply = api.write(
        added=[("emmy_noether", "citizen_of", "germany"),
               ("emmy_noether", "field_of_work", "mathematics")],
        entities=[emmy],
    )  # fmt: skip
    assert reply.applied and reply.version.startswith("v0002@")
    assert applier.overlay.origins.get("emmy_noether") == "text"  # the projection was ready
    assert len(api.facts("Emmy Noether")) == 2
    cold = plane.versions.active()
    cold_row = cold.predictor.model.entity.weight[
        cold.artifact.entities.index["emmy_noether"]
    ].clone()
    wait_for(lambda: base(plane) == "v0003")
    trained = plane.versions.active()
    assert "emmy_noether" in trained.artifact.entities and not applier.overlay.new_entities
    assert applier._projection is projection  # v0001's, through two updates
    # an update of an update is still judged against the full training it descends from
    judged = trained.artifact.config["fixed_valid"]
    assert judged["base_version"] == "v0002" and judged["anchor_version"] == "v0001"
    assert judged["anchor_mrr"] == served.artifact.config["fixed_valid"]["base_mrr"]
    row = trained.predictor.model.entity.weight[trained.artifact.entities.index["emmy_noether"]]
    assert not torch.equal(row, cold_row)
    assert trained.artifact.entity_names[trained.artifact.entities.index["emmy_noether"]] == (
        "Emmy Noether"
    )
    assert len(api.facts("Emmy Noether")) == 2
    assert api.candidate("emmy_noether", "citizen_of", "germany").known
    # the fixed validation set is stored once: the same file for every version
    assert path_of(plane.settings).read_bytes() == stored
    assert watcher.state.jobs_started == 0  # no full retrain: updates only

    # both updates ran in the one warm updater process, which lives on between them (a job's
    # record says it succeeded just after its version is served: waited for, so the updater
    # is idle when it is killed below)
    wait_for(lambda: len(update_pids(plane.settings.jobs_dir)) == 2, "both updates recorded")
    pids = update_pids(plane.settings.jobs_dir)
    assert len(set(pids)) == 1, pids
    (updater,) = set(pids)
    assert Path(f"/proc/{updater}").exists()
    # an updater killed while idle: the next update starts a fresh one, and is served
    os.kill(updater, signal.SIGKILL)
    wait_for(lambda: not Path(f"/proc/{updater}/cmdline").exists()
             or not Path(f"/proc/{updater}/cmdline").read_bytes(), "the updater gone")  # fmt: skip
    fact = ("emmy_noether", "influenced_by", "albert_einstein")
    api.write([fact])
    wait_for(lambda: base(plane) == "v0004")
    wait_for(lambda: len(update_pids(plane.settings.jobs_dir)) == 3, "the third update recorded")
    pids = update_pids(plane.settings.jobs_dir)
    assert pids[-1] != updater, pids
    assert fact in api.facts("emmy_noether") and api.candidate(*fact).known


def labelled(facts: torch.Tensor, artifact: ModelArtifact) -> set[tuple[str, str, str]]:
    """``facts`` (M, 3) of ``artifact`` as labels."""
    e, r = artifact.entities.labels, artifact.relations.labels
    return {(e[h], r[p], e[t]) for h, p, t in facts.tolist()}


@pytest.fixture
def rare_ticks(monkeypatch: pytest.MonkeyPatch) -> None:
    """The watcher's periodic tick a day apart (beyond any wait of these tests): only events
    wake it."""
    monkeypatch.setenv("KGWEAVE_RETRAIN_INTERVAL_S", "86400")


def test_changes_held_back_by_a_users_job_are_trained_when_it_ends(
    rare_ticks: None, running: tuple[DataPlane, Api]
) -> None:
    """While a user's job runs the watcher starts nothing; the job's end wakes it, and the
    update of the changes written meanwhile starts then, not at the next tick (a day here)."""
    plane, api = running
    watcher = plane.changes.retrainer
    assert watcher is not None
    job = plane.start_training({"epochs": 100_000, "dim": 8}, "", "never")  # until cancelled
    wait_for(lambda: plane.jobs.get(job.job_id).state == JobState.RUNNING, "the user's job")
    checks = watcher.state.checks
    fact = ("albert_einstein", "born_in", "paris")  # a fact the version does not know
    assert not api.candidate(*fact).known
    api.write([fact])
    wait_for(lambda: watcher.state.checks > checks, "a check while the user's job runs")
    assert watcher.state.updates_started == 0 and plane.jobs.busy
    plane.jobs.cancel(job.job_id)
    wait_for(lambda: watcher.state.updates_started == 1, "the update after the user's job")


def test_a_worse_update_is_refused_with_its_reason(
    wrecking: None,
    running: tuple[DataPlane, Api],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    plane, api = running
    watcher = plane.changes.retrainer
    assert watcher is not None
    fact = ("alan_turing", "born_in", "paris")
    reply = api.write([fact])
    assert reply.applied
    wait_for(lambda: watcher.state.updates_registered >= 1)
    info = api.models()["v0002"]
    assert not info.active and base(plane) == "v0001"
    assert info.decision.startswith("not activated: MRR on the fixed validation set"), info
    assert "below v0001's" in info.decision and "tolerance 0.01" in info.decision
    final = job_updates(api.admin, watcher.state.last_job)[-1]
    assert final.state == admin_pb2.JOB_STATE_SUCCEEDED and not final.activated
    assert final.message == info.decision
    metrics = plane.metrics.render().decode()
    assert 'kgweave_retrain_jobs_total{kind="incremental",outcome="refused"} 1.0' in metrics
    assert 'kgweave_trained_lag_seconds_count{kind="incremental"}' not in metrics
    # full retrains are off here: updates go on from v0001, and the status says why
    changes = api.admin.Status(admin_pb2.StatusRequest(), timeout=HANG_GUARD_S).changes
    assert changes.updates_skipped.startswith("update v0002 was refused (not activated: MRR")
    assert "full retrains are off" in changes.updates_skipped
    assert watcher.state.jobs_started == 0
    # the fact stays served as known (the overlay), on the version still active
    assert api.candidate(*fact).known
    assert plane.versions.active().version.startswith("v0001@")
    # the reason is a column of `kgweave models list`
    monkeypatch.setenv("KGWEAVE_SERVER", api.channel._channel.target().decode())  # type: ignore[attr-defined]
    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out
    assert "decision" in out.splitlines()[0]
    line = next(row for row in out.splitlines() if "v0002" in row)
    assert "not activated: MRR on the fixed validation set" in line


@pytest.fixture
def full_retrains(monkeypatch: pytest.MonkeyPatch) -> None:
    """Full retrains on (by drift, as by default), out of reach of the tests' few events."""
    monkeypatch.setenv("KGWEAVE_FULL_RETRAIN_DRIFT", "0.9")


def test_a_refused_update_starts_a_full_retrain(
    wrecking: None, full_retrains: None, running: tuple[DataPlane, Api]
) -> None:
    """Updates warm-start from the active version and are judged against the full training
    they descend from, so once one is refused the next would be too: a full retrain on the
    graph starts over (trained on the written fact), updates wait for it, then go on."""
    plane, api = running
    watcher = plane.changes.retrainer
    assert watcher is not None
    fact = ("alan_turing", "born_in", "paris")
    assert api.write([fact]).applied
    wait_for(lambda: watcher.state.jobs_started == 1, "a full retrain")
    assert watcher.state.updates_started == 1 and watcher.state.updates_registered == 1
    assert not api.models()["v0002"].active
    changes = api.admin.Status(admin_pb2.StatusRequest(), timeout=HANG_GUARD_S).changes
    assert changes.full_retrains_started == 1
    assert changes.updates_skipped.startswith("update v0002 was refused (not activated: MRR")
    assert changes.updates_skipped.endswith(
        f"full retrain {watcher.state.last_job} starts over, updates wait for it"
    )
    # a write while it trains is served at once, and waits for it (no update starts)
    later = ("alan_turing", "field_of_work", "chemistry")
    assert api.write([later]).applied and api.candidate(*later).known
    wait_for(lambda: "v0003" in api.models(), "the full retrain's version")
    assert watcher.state.updates_started == 1
    # a retrain the server started on its own runs at a lowered OS priority
    job_log = (plane.settings.jobs_dir / watcher.state.last_job / "job.log").read_text()
    assert f"OS priority: nice {min(os.nice(0) + 10, 19)}, CPUs " in job_log
    retrained = load_artifact(plane.settings.models_dir / "v0003")
    assert "incremental" not in retrained.config  # a full training, on the graph
    assert warm_started_from(retrained.config) == ""  # its own entity space: fitted anew
    e, r = retrained.entities.index, retrained.relations.index
    row = torch.tensor([e[fact[0]], r[fact[1]], e[fact[2]]])
    assert (retrained.known == row).all(dim=1).any()  # the refused update's fact trained in
    # settled: the status is clear, and updates go on (whichever version the policy serves)
    wait_for(lambda: not api.admin.Status(admin_pb2.StatusRequest(), timeout=HANG_GUARD_S)
             .changes.updates_skipped, "the status cleared")  # fmt: skip
    assert api.candidate(*later).known
    assert api.write([("alan_turing", "citizen_of", "germany")]).applied
    wait_for(lambda: watcher.state.updates_started == 2, "updates going on")


def test_a_training_request_goes_before_the_servers_own_retrain(
    wrecking: None,
    full_retrains: None,
    running: tuple[DataPlane, Api],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The README's `kgweave write` then `kgweave train --remote`, when the write's update is
    refused: the server starts a full retrain over, and the user's request that comes while
    it runs is not refused ("job ... is still running"): the server's retrain gives way
    (cancelled, not counted as a failure), the user's job runs, and once its version is
    served there is nothing left to start over."""
    plane, api = running
    watcher = plane.changes.retrainer
    assert watcher is not None
    # the server's retrain: long enough to be under way when the request comes
    long_run = {"dim": 8, "epochs": 100_000, "eval_every": 100_000}
    monkeypatch.setattr(watcher, "_training_config", lambda: long_run)
    assert api.write([("alan_turing", "born_in", "paris")]).applied
    wait_for(lambda: watcher.state.jobs_started == 1, "the server's full retrain")
    retrain = watcher.state.last_job
    assert watcher.state.skipping(SkipKind.START_OVER)
    request = admin_pb2.StartTrainingRequest(
        settings=admin_pb2.TrainingSettings(epochs=5, dim=16),
        activation=admin_pb2.ACTIVATION_POLICY_ALWAYS,
    )
    job = api.admin.StartTraining(request, timeout=HANG_GUARD_S)
    final = job_updates(api.admin, job.job_id)[-1]
    assert final.state == admin_pb2.JOB_STATE_SUCCEEDED and final.activated, final
    given_way = plane.jobs.get(retrain)
    assert given_way.state == JobState.CANCELLED and given_way.message == SUPERSEDED
    wait_for(lambda: watcher._job is None, "the watcher to settle its retrain")
    assert watcher.state.failures == 0 and not watcher.state.last_error
    # the user's full training is served: nothing to start over, no second retrain
    wait_for(lambda: not watcher.state.updates_skipped, "the status cleared")
    assert base(plane) == final.model_version and watcher.state.jobs_started == 1


def test_removed_fact_is_unlearned_by_an_update(
    tolerant: None, local: None, running: tuple[DataPlane, Api]
) -> None:
    """A fact removed from the graph stops being known at once; then an incremental update
    with no new facts unlearns it (the regime's forget loss, tested on its own in
    test_training.py): its score goes down, the model no longer ranks it first (the update
    goes on past its passes while it does), and the version no longer knows it."""
    plane, api = running
    fixed = load_fixed(plane.settings)
    assert fixed is not None
    fact = ("albert_einstein", "born_in", "ulm")  # README's
    assert fact not in fixed.triples
    before = api.candidate(*fact)
    assert before.known and before.rank == 1

    reply = api.write(removed=[fact])
    assert reply.applied and not api.candidate(*fact).known  # at once, before any training
    wait_for(lambda: base(plane) == "v0002")
    served = plane.versions.active()
    update = served.artifact.config["incremental"]
    assert update["removed_facts"] == 1 and update["new_facts"] == 0, update
    after = api.candidate(*fact)
    assert not after.known and after.score < before.score, (before, after)
    assert after.rank > 1, (before, after, update)
    assert update["unlearning_steps"] > 0 and update["removed_still_first"] == 0, update
    trained = load_artifact(plane.settings.models_dir / "v0002")
    e, r = trained.entities.index, trained.relations.index
    row = torch.tensor([e[fact[0]], r[fact[1]], e[fact[2]]])
    assert not (trained.known == row).all(dim=1).any()  # the version does not know it
    applier = plane.changes.applier
    assert applier is not None and not applier.overlay.removed  # nothing left to unlearn
    wait_for(lambda: plane.changes.event_log.position(INCREMENTAL) >= reply.next_offset)


def worker_pids(jobs: Path) -> list[int]:
    """Pids of job workers alive now (each holds its job's worker.lock with its pid)."""
    pids = []
    for lock in jobs.glob("*/worker.lock"):
        try:
            pid = int(lock.read_text().strip() or 0)
        except (OSError, ValueError):
            continue
        if pid and Path(f"/proc/{pid}").exists():
            pids.append(pid)
    return pids


def update_pids(jobs: Path) -> list[int]:
    """The worker pid of each succeeded incremental update, oldest first."""
    records = [json.loads(p.read_text()) for p in jobs.glob("*/job.json")]
    done = [r for r in records if r["state"] == "succeeded" and r["model_version"]]
    return [r["pid"] for r in sorted(done, key=lambda r: r["model_version"])]


def running_update(jobs: Path) -> bool:
    for record in jobs.glob("*/job.json"):
        try:
            job = json.loads(record.read_text())
        except (OSError, ValueError):
            continue
        if job.get("state") == "running" and job.get("phase") == "training":
            return True
    return False


def test_a_version_without_a_fixed_set_gets_one_when_the_watcher_starts(
    tolerant: None, local: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A served version trained elsewhere leaves the graph without a fixed validation set: the
    server makes it when it starts watching (off the serving threads), of the facts that
    version held out less those that came in through change events; the first update finds
    it made."""
    for name, value in (("BOOTSTRAP_EPOCHS", "20"), ("RETRAIN_INTERVAL_S", "0.3"),
                        ("INCREMENTAL_STEPS", "30"), ("FULL_RETRAIN_DRIFT", "0"),
                        ("INCREMENTAL_MIN_EVENTS", "2")):  # fmt: skip
        monkeypatch.setenv(f"KGWEAVE_{name}", value)
    settings = get_settings()
    plane = prepare_plane(settings, progress=False)
    server = ServerThread(plane)
    api = Api(server.address)
    try:
        path_of(settings).unlink()  # as if v0001 had been trained elsewhere and registered
        fact = ("albert_einstein", "born_in", "paris")
        assert api.write([fact]).applied  # in the graph and the log: updates train on it
        store = open_store(settings.graph_uri, settings)
        watcher = plane.changes.start_retraining(lambda: store)
        wait_for(lambda: path_of(settings).is_file(), "the fixed validation set")
        assert watcher.state.updates_started == 0  # one event pending: no update ran yet
        fixed = load_fixed(settings)
        assert fixed is not None and fixed.created_from == "v0001"
        assert len(fixed.triples) > 0 and fact not in fixed.triples
        art = plane.versions.active().artifact  # every fact of the set was held out
        assert not set(fixed.triples) & labelled(art.training_facts, art)
        assert set(fixed.triples) <= labelled(art.known, art)  # (facts of the graph: known)
        made = path_of(settings).stat().st_ino
        assert api.write([("albert_einstein", "field_of_work", "mathematics")]).applied
        wait_for(lambda: base(plane) == "v0002")
        judged = plane.versions.active().artifact.config["fixed_valid"]
        assert judged["fingerprint"] == fixed.fingerprint
        assert path_of(settings).stat().st_ino == made  # found, not made again
    finally:
        api.channel.close()
        server.stop()
        EmbeddedFalkorDB(settings.graph_dir).stop()


def test_kill_9_during_an_update_loses_nothing(tmp_path: Path) -> None:
    """kill -9 of the job worker mid-update, then of the server with another update running:
    after a restart every acknowledged fact is served, the update is done again and
    registered whole, and no half version or overlay is left."""
    settings = get_settings()
    env = serve_env(
        RETRAIN_INTERVAL_S="0.3",
        FULL_RETRAIN_DRIFT="0",
        VALIDATION_TOLERANCE="1",
        INCREMENTAL_STEPS="100000000",  # an update that lasts until it is killed
        INCREMENTAL_EPOCHS="0",
    )
    log = tmp_path / "serve.log"
    server = Server(env, log)
    written = [(f"probe_{i}", "born_in", "london") for i in range(5)]
    try:
        for h, r, t in written:
            request = admin_pb2.WriteFactsRequest(added=[admin_pb2.Fact(head=h, relation=r,
                                                                        tail=t)])  # fmt: skip
            server.admin.WriteFacts(request, timeout=HANG_GUARD_S)
        jobs = settings.jobs_dir
        wait_for(lambda: running_update(jobs) and bool(worker_pids(jobs)), "an update running")
        (pid,) = worker_pids(jobs)
        os.kill(pid, signal.SIGKILL)  # the worker dies mid-update
        # the job fails, its events stay pending, and the update is started again
        wait_for(lambda: any(p != pid for p in worker_pids(jobs)) and running_update(jobs),
                 "the update retried")  # fmt: skip
        assert server.status().changes.retrain_error.endswith("; retrying in 1 s")
        os.kill(server.process.pid, signal.SIGKILL)  # now the server, mid-update
        server.process.wait()
        server.channel.close()
        wait_for(lambda: not worker_pids(jobs), "the orphaned worker to exit")
        assert [p.name for p in settings.models_dir.glob("v*")] == ["v0001"]

        env["KGWEAVE_INCREMENTAL_STEPS"] = "5"
        server = Server(env, log)
        # every acknowledged fact served at once from the saved overlay, then by an update
        for h, r, t in written:
            assert (h, r, t) in set(server.facts(h) or [])
        wait_for(lambda: server.status().active_model.version.startswith("v0002"), "v0002")
        for h, r, t in written:
            assert (h, r, t) in set(server.facts(h) or [])
        config = json.loads((settings.models_dir / "v0002" / "config.json").read_text())
        assert config["source"] == "incremental" and config["incremental"]["new_facts"] >= 5
        trained = load_artifact(settings.models_dir / "v0002")
        e, r = trained.entities.labels, trained.relations.labels
        known = {(e[h], r[p], e[t]) for h, p, t in trained.known.tolist()}
        assert set(written) <= known
        assert sorted(p.name for p in settings.models_dir.glob("v*")) == ["v0001", "v0002"]

        def states() -> list[tuple[str, str]]:
            records = [json.loads(p.read_text()) for p in jobs.glob("*/job.json")]
            return sorted((r["state"], r["phase"]) for r in records)

        # v0002 is served once swapped in, a moment before its job's record says it is done
        wait_for(lambda: all(state != "running" for state, _ in states()), "the job to end")
        assert states() == [("failed", "done"), ("failed", "interrupted"), ("succeeded", "done")]
        assert not list(jobs.glob("*/model"))  # working files cleaned up
        assert not server.status().changes.last_error
    finally:
        server.stop()
        for pid in worker_pids(settings.jobs_dir):
            os.kill(pid, signal.SIGKILL)
        EmbeddedFalkorDB(settings.graph_dir).stop()


@pytest.mark.parametrize("kill", ["server:update-registered", "crash:saved"])
def test_kill_9_at_a_point_of_an_update_then_restart(kill: str, tmp_path: Path) -> None:
    """kill -9 at a named point of an incremental update (kgweave.killpoints: the process stops
    itself there): ``server:update-registered``, its version registered and active but the
    updates' log position not committed; ``crash:saved``, the machine gone with the update's
    artifact finished and not registered. After a restart the fact is served at once, the
    updates' position reaches the log's end with the fact trained into the active version
    (registered on restart, or trained again: at least once), and no half version, overlay
    copy or job folder is left."""
    settings = get_settings()
    env = serve_env(
        RETRAIN_INTERVAL_S="0.3",
        FULL_RETRAIN_DRIFT="0",
        VALIDATION_TOLERANCE="1",  # every update activated
        INCREMENTAL_STEPS="5",
    )
    log = tmp_path / "serve.log"
    server = Server({**env, "KGWEAVE_TEST_KILL": kill}, log)
    fact = ("probe_0", "born_in", "london")
    try:
        request = admin_pb2.WriteFactsRequest(
            added=[admin_pb2.Fact(head=fact[0], relation=fact[1], tail=fact[2])], wait_s=-1
        )
        server.admin.WriteFacts(request, timeout=HANG_GUARD_S)  # acknowledged, then the update
        expect_killed(server, lambda: wait_for(lambda: not server.status().ready, "the kill"))
        jobs = settings.jobs_dir
        wait_for(lambda: not worker_pids(jobs), "the killed updater to exit")
        versions = sorted(p.name for p in settings.models_dir.glob("v*"))
        assert versions == (["v0001", "v0002"] if kill.startswith("server") else ["v0001"])

        server = Server(env, log)
        assert fact in set(server.facts(fact[0]) or [])  # served at once (the overlay)

        def caught_up() -> bool:
            changes = server.status().changes
            return changes.trained_offset == changes.end_offset and not running_update(jobs)

        wait_for(caught_up, "the update done again after the restart")
        status = server.status()
        assert not status.changes.retrain_error
        active = status.active_model.version.partition("@")[0]
        assert active >= "v0002" and fact in set(server.facts(fact[0]) or [])
        trained = load_artifact(settings.models_dir / active)
        e, r = trained.entities.labels, trained.relations.labels
        assert fact in {(e[h], r[p], e[t]) for h, p, t in trained.known.tolist()}
        assert trained.config["source"] == "incremental"
        assert not list(jobs.glob("*/model")) and not list(settings.models_dir.glob(".*"))
        assert not list((settings.data_dir / "incremental").glob("overlay-*"))
    finally:
        server.stop()
        for pid in worker_pids(settings.jobs_dir):
            os.kill(pid, signal.SIGKILL)
        EmbeddedFalkorDB(settings.graph_dir).stop()


def test_failed_jobs_are_retried_later_and_later() -> None:
    """A job that fails at once is not restarted at every check: 1 s after the first failure,
    doubling with each failure in a row, at most RETRY_MAX_S."""
    assert [retry_delay(n) for n in range(1, 6)] == [1, 2, 4, 8, 16]
    assert retry_delay(10) == 512 and retry_delay(11) == retry_delay(10_000) == RETRY_MAX_S


@pytest.fixture
def keep_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KGWEAVE_KEEP_UPDATES", "1")


def test_old_updates_are_deleted_and_full_trainings_kept(
    tolerant: None, keep_one: None, running: tuple[DataPlane, Api]
) -> None:
    """Each update is a full copy of the weights, and they come every few seconds while the
    graph changes: past KGWEAVE_KEEP_UPDATES the older ones are deleted (never the active
    version, never a full training), from the folder and the journal alike."""
    plane, api = running
    facts = [("albert_einstein", "born_in", "paris"), ("marie_curie", "born_in", "paris"),
             ("alan_turing", "born_in", "paris")]  # fmt: skip
    for n, fact in enumerate(facts, start=2):
        api.write([fact])
        wait_for(lambda n=n: base(plane) == f"v{n:04d}", f"update v{n:04d} served")
    registry = plane.versions.registry
    wait_for(lambda: [v.version for v in registry.versions()] == ["v0004", "v0001"],
             "the older updates deleted")  # fmt: skip
    assert set(api.models()) == {"v0004", "v0001"}
    journal = json.loads((registry.root / "journal.json").read_text())
    assert set(journal["registered"]) == {"v0001", "v0004"}
    assert not [p.name for p in registry.root.iterdir() if p.name.startswith(".deleted-")]
    # the full training stays, to roll back to
    api.admin.ActivateModel(admin_pb2.ActivateModelRequest(version="v0001"), timeout=HANG_GUARD_S)
    assert base(plane) == "v0001"
