"""Training jobs through the real server: start, watch, cancel, failure, activation policy.

Each job runs in its own worker process (spawned), exactly as in production.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from kgweave.v1 import admin_pb2, admin_pb2_grpc
from serving_support import FINAL, HANG_GUARD_S, TRANSPORTS, ServerThread, job_updates, serve_model

pytest_plugins = ["serving_support"]  # fixture: weak_model (a barely trained demo model)


@pytest.fixture(params=TRANSPORTS)
def server(weak_model: Path, request: pytest.FixtureRequest) -> Iterator[ServerThread]:
    """A server on each front end (the job lifecycle streams through WatchJob on both)."""
    yield from serve_model(weak_model, request.param)


@pytest.fixture
def python_server(weak_model: Path) -> Iterator[ServerThread]:
    """For the slow joint job: the engine is the same behind both front ends (the small
    scratch LM: the pretrained one's joint run is test_lora's)."""
    yield from serve_model(weak_model, "python", language_model="small")


def admin_stub(server: ServerThread) -> tuple[object, grpc.Channel]:
    channel = grpc.insecure_channel(server.address)
    return admin_pb2_grpc.AdminServiceStub(channel), channel


def start(admin: object, policy: int, dataset: str = "demo", **settings: object) -> object:
    return admin.StartTraining(  # type: ignore[attr-defined]
        admin_pb2.StartTrainingRequest(
            settings=admin_pb2.TrainingSettings(**settings), dataset=dataset, activation=policy
        )
    )


def versions(admin: object) -> tuple[list[str], str]:
    listing = admin.ListModels(admin_pb2.ListModelsRequest())  # type: ignore[attr-defined]
    return [m.version for m in listing.models], listing.active_version


def test_job_trains_streams_progress_registers_and_activates(server: ServerThread) -> None:
    admin, channel = admin_stub(server)
    job = start(admin, admin_pb2.ACTIVATION_POLICY_IF_BETTER, epochs=20, dim=32, eval_every=5)
    assert job.state in (admin_pb2.JOB_STATE_QUEUED, admin_pb2.JOB_STATE_RUNNING)
    updates = job_updates(admin, job.job_id)
    final = updates[-1]
    assert final.state == admin_pb2.JOB_STATE_SUCCEEDED, final.message
    phases = [u.phase for u in updates]
    assert "training" in phases and phases[-1] == "done"
    # WatchJob sends the latest state on each change, so a busy client may see the last epoch
    # only in a later phase: epochs never go back, and the job ends on its last one
    epochs = [u.epoch for u in updates if u.epoch]
    assert epochs == sorted(epochs) and epochs[-1] == final.epoch == 20
    assert any(u.valid_mrr > 0 for u in updates) and any(u.eta_s > 0 for u in updates)
    assert final.model_version == "v0002" and final.activated, final.message
    assert "beats" in final.message
    assert versions(admin) == (["v0002", "v0001"], "v0002")
    assert server.service.versions.active().version == "v0002"
    # a job a user started runs at the server's OS priority (the server's own are lowered)
    job_log = (server.service.settings.jobs_dir / job.job_id / "job.log").read_text()
    assert f"OS priority: nice {os.nice(0)}, CPUs " in job_log
    channel.close()


def test_policy_never_registers_without_activating(server: ServerThread) -> None:
    admin, channel = admin_stub(server)
    # every job setting travels to the worker and into the registered artifact
    sent = {
        "epochs": 2,
        "dim": 16,
        "regime": "1vsall",
        "lr_schedule": "cosine",
        "label_smoothing": 0.1,
        "relation_prediction": 0.5,
        "precision": "fp32",
        "plateau_factor": 0.3,
        "plateau_patience": 2,
        "warmup_epochs": 1,
        "entity_reg_weight": 0.02,
        "relation_reg_weight": 0.005,
        "entity_dropout": 0.1,
        "relation_dropout": 0.05,
        "init": "xavier_uniform",
        "init_scale": 0.5,
        "num_negatives": 64,
        "margin": 6.0,
        "adversarial_temperature": 0.5,
    }  # (valid_sample is not here: a sample too small for ±0.005 MRR grows to the split)
    job = start(admin, admin_pb2.ACTIVATION_POLICY_NEVER, **sent)
    final = job_updates(admin, job.job_id)[-1]
    assert final.state == admin_pb2.JOB_STATE_SUCCEEDED and not final.activated
    assert versions(admin) == (["v0002", "v0001"], "v0001")
    training = server.service.versions.registry.get("v0002").config["training"]
    assert {k: training[k] for k in sent} == pytest.approx(sent)
    channel.close()


def test_cancelled_job_leaves_registry_and_active_model_untouched(server: ServerThread) -> None:
    admin, channel = admin_stub(server)
    job = start(admin, admin_pb2.ACTIVATION_POLICY_ALWAYS, epochs=100_000, dim=16)
    # a second job while one runs is refused
    with pytest.raises(grpc.RpcError) as info:
        start(admin, admin_pb2.ACTIVATION_POLICY_ALWAYS, epochs=1)
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    request = admin_pb2.GetJobRequest(job_id=job.job_id)
    for update in admin.WatchJob(request, timeout=HANG_GUARD_S):
        if update.epoch >= 2:
            break
    cancelled = admin.CancelJob(request)
    assert cancelled.state not in FINAL or cancelled.state == admin_pb2.JOB_STATE_CANCELLED
    state = job_updates(admin, job.job_id)[-1]  # the job's own end, however long it takes
    assert state.state == admin_pb2.JOB_STATE_CANCELLED
    assert not state.model_version and not state.activated
    assert versions(admin) == (["v0001"], "v0001")
    channel.close()


def test_failed_job_leaves_state_untouched(server: ServerThread) -> None:
    """An unknown dataset is refused before a job starts (NOT_FOUND, no server path)."""
    admin, channel = admin_stub(server)
    with pytest.raises(grpc.RpcError) as info:
        start(admin, admin_pb2.ACTIVATION_POLICY_ALWAYS, dataset="no-such-dataset", epochs=1)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    message = info.value.details() or ""
    assert "no-such-dataset" in message and "/" not in message
    assert versions(admin) == (["v0001"], "v0001")
    assert server.service.versions.active().version == "v0001"
    channel.close()


def test_diverged_job_fails_clearly_and_registers_nothing(
    server: ServerThread, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Regression (issue 16): `kgweave train --remote --lr 1e30 --epochs 10` was evaluated as
    MRR 2.0, registered and activated by if_better, and the client died with exit 70 "Unknown
    format code 'f'" on the NaN loss."""
    from kgweave.cli.main import main

    monkeypatch.setenv("KGWEAVE_SERVER", server.address)
    code = main(["train", "--remote", "-d", "demo", "--lr", "1e30", "--epochs", "10"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code not in (0, 70), err
    assert "failed: training diverged at epoch" in err[-1], err
    assert "Traceback" not in "\n".join(err) and "Unknown format" not in "\n".join(err)
    admin, channel = admin_stub(server)
    assert versions(admin) == (["v0001"], "v0001")
    assert server.service.versions.active().version == "v0001"
    channel.close()


def test_job_on_another_dataset_does_not_replace_the_served_model(server: ServerThread) -> None:
    """Regression (issue 16): `if_better` compared a validation MRR measured on another
    dataset with the served model's, and the job replaced the served graph's model."""
    admin, channel = admin_stub(server)
    job = start(admin, admin_pb2.ACTIVATION_POLICY_IF_BETTER, dataset="nations", epochs=5, dim=16)
    final = list(admin.WatchJob(admin_pb2.GetJobRequest(job_id=job.job_id), timeout=180))[-1]
    assert final.state == admin_pb2.JOB_STATE_SUCCEEDED, final.message
    assert final.model_version == "v0002" and not final.activated
    assert "not comparable, v0002 was trained on other data (nations" in final.message
    assert versions(admin) == (["v0002", "v0001"], "v0001")
    channel.close()


def test_remote_progress_shows_non_finite_numbers() -> None:
    """Regression: protobuf's JSON form gives a NaN loss as the string "NaN", and formatting
    it with ``:.4f`` killed `train --remote` (exit 70 "Unknown format code 'f'")."""
    from kgweave.cli.remote import job_postfix

    update = {"phase": "training", "loss": "NaN", "valid_mrr": "Infinity", "eta_s": 3.0}
    assert job_postfix(update) == {
        "phase": "training",
        "loss": "nan",
        "valid_mrr": "inf",
        "eta": "3s",
    }
    # a joint job's LM phase: its throughput
    update = {"phase": "language model", "loss": 3.5, "rate": 56.84, "rate_unit": "tokens/s"}
    assert job_postfix(update)["rate"] == "56.8 tokens/s"


def test_remote_bar_follows_a_joint_jobs_language_model(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Regression: `train --remote --joint` showed the KGE half's epochs, 200/200, through
    the minutes its language model trained. The LM phase gets a bar of its own, its share
    done from the time spent in it and the ETA; the phases after it leave it full."""
    from kgweave.cli import remote

    clock = [100.0]
    monkeypatch.setattr(remote.time, "monotonic", lambda: clock[0])
    bar = remote.JobBar("epoch")
    bar.show({"phase": "training", "epoch": 150, "epochs": 200, "eta_s": 5.0})
    assert (bar.bar.n, bar.bar.total, bar.phase) == (150, 200, "")
    bar.show({"phase": "training", "epoch": 200, "epochs": 200, "eta_s": 0.0})
    lm = {"phase": "language model", "epoch": 200, "epochs": 200, "rate": 900.0,
          "rate_unit": "tokens/s", "loss": 3.2}  # fmt: skip
    bar.show({**lm, "eta_s": 300.0})  # the phase begins: nothing done yet
    assert (bar.bar.n, bar.bar.total, bar.phase) == (0, 100, "language model")
    clock[0] += 100.0
    bar.show({**lm, "eta_s": 300.0})  # 100 s spent, 300 s to go
    assert bar.bar.n == 25
    assert "900.0 tokens/s" in str(bar.bar) and "language model" in str(bar.bar)
    clock[0] += 300.0
    bar.show({**lm, "eta_s": 0.0})
    assert bar.bar.n == 100
    bar.show({"phase": "completion weights", "epoch": 200, "epochs": 200})
    assert (bar.bar.n, bar.phase) == (100, "language model")
    assert "completion weights" in str(bar.bar)
    bar.close()


def test_a_cancelled_joint_job_stops(python_server: ServerThread) -> None:
    """A joint job is cancelled while it trains (here its KGE half; the LM's training polls
    the same flag, test_lm.py): it ends cancelled, and nothing is registered."""
    admin, channel = admin_stub(python_server)
    job = start(admin, admin_pb2.ACTIVATION_POLICY_ALWAYS, epochs=100_000, dim=16, joint=True)
    request = admin_pb2.GetJobRequest(job_id=job.job_id)
    for update in admin.WatchJob(request, timeout=HANG_GUARD_S):
        if update.epoch >= 1:
            break
    admin.CancelJob(request)
    state = job_updates(admin, job.job_id)[-1]  # the job's own end, however long it takes
    assert state.state == admin_pb2.JOB_STATE_CANCELLED, state
    assert not state.model_version and versions(admin) == (["v0001"], "v0001")
    channel.close()


@pytest.mark.slow
def test_joint_job_registers_a_version_that_completes(python_server: ServerThread) -> None:
    """`kgweave train --remote --joint`: the job trains KGE + LM together in its worker; the
    new version serves Complete (the LM, its fitted weights) through the same engine.

    Slow: a job trains the LM with its default size (minutes on 2 busy cores); the test
    waits for the job's own end, however long it takes."""
    from kgweave.v1 import knowledge_pb2, knowledge_pb2_grpc

    admin, channel = admin_stub(python_server)
    job = start(admin, admin_pb2.ACTIVATION_POLICY_ALWAYS, epochs=10, dim=16, joint=True)
    updates = job_updates(admin, job.job_id)
    final = updates[-1]
    assert final.state == admin_pb2.JOB_STATE_SUCCEEDED, final.message
    # its progress: the KGE half's epochs, then the later phases by name
    assert final.epoch > 0 and final.epochs == 10
    assert {"text fusion", "language model"} <= {u.phase for u in updates}, updates
    # the LM's training reports its loss and tokens/s (every 2 s of its minutes)
    lm = [u for u in updates if u.phase == "language model" and u.rate_unit]
    assert lm and all(u.rate_unit == "tokens/s" and u.rate > 0 and u.loss > 0 for u in lm)
    assert not final.rate_unit  # a phase's rate is its own
    assert final.model_version == "v0002" and final.activated
    knowledge = knowledge_pb2_grpc.KnowledgeServiceStub(channel)
    reply = knowledge.Complete(
        knowledge_pb2.CompleteRequest(
            query=knowledge_pb2.LinkQuery(relation="born_in", tail="london"), k=3
        ),
        timeout=HANG_GUARD_S,
    )
    assert reply.model_version == "v0002" and len(reply.candidates) == 3
    assert all(c.evidence.endswith(" was born in London.") for c in reply.candidates)
    assert reply.w_kge != 0 or reply.w_lm != 0
    channel.close()


def test_a_training_request_waits_for_an_incremental_update_under_way() -> None:
    """A user's training request that comes while an incremental update (started by the server
    after graph changes) runs waits for the update instead of failing with "job ... is still
    running" (the README's `kgweave write` then `train --remote` did on a busy machine); a
    job of any other kind under way still refuses it."""
    import threading

    from kgweave.errors import FailedPreconditionError, KGWeaveError
    from kgweave.serving.jobs import JobManager
    from kgweave.settings import get_settings
    from serving_support import wait_until

    jobs = JobManager(get_settings(), on_success=lambda *_: ("", False, ""))
    long_run = {"dim": 8, "epochs": 100_000, "eval_every": 100_000}
    # a long training tagged as an update: a real worker, ended by the test
    update = jobs.start({}, "", "never", spec={"kind": "incremental", "config": long_run,
                                              "dataset": "demo"})  # fmt: skip
    outcome: dict[str, object] = {}

    def request() -> None:
        try:
            outcome["job"] = jobs.start(long_run, "demo", "never")
        except KGWeaveError as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=request)
    thread.start()
    wait_until(lambda: jobs.waiting == 1 or bool(outcome), "the request to wait or fail")
    assert not outcome, outcome  # waiting, not refused
    with pytest.raises(FailedPreconditionError, match="still running"):
        jobs.start(long_run, "demo", "never")  # a second request does not wait too
    assert jobs.busy  # the retrain watcher starts nothing meanwhile
    with pytest.raises(FailedPreconditionError, match="request is waiting"):
        jobs.start({}, "", "never", spec={"kind": "incremental"})  # nor would it start one
    jobs.cancel(update.job_id)
    thread.join(HANG_GUARD_S)
    started = outcome.get("job")
    assert started is not None and started.job_id != update.job_id, outcome  # type: ignore[attr-defined]
    assert jobs.get(update.job_id).state.final
    with pytest.raises(FailedPreconditionError, match="still running"):
        jobs.start(long_run, "demo", "never")  # a user's job under way refuses another
    jobs.shutdown()
    wait_until(lambda: not jobs.busy, "the jobs to end")
