"""Training jobs through the real server: start, watch, cancel, failure, activation policy.

Each job runs in its own worker process (spawned), exactly as in production.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from kgweave.dataplane import DataPlane
from kgweave.settings import Settings, get_settings
from kgweave.v1 import admin_pb2, admin_pb2_grpc
from serving_support import TRANSPORTS, ServerThread, registry_with, train_demo_model

FINAL = {admin_pb2.JOB_STATE_SUCCEEDED, admin_pb2.JOB_STATE_FAILED, admin_pb2.JOB_STATE_CANCELLED}


@pytest.fixture(scope="module")
def weak_model(tmp_path_factory: pytest.TempPathFactory, datasets_dir: Path) -> Path:
    """A real but barely trained demo model (1 epoch): any decent job beats it."""
    root = tmp_path_factory.mktemp("weak")
    settings = Settings(data_dir=root / "data", datasets_dir=datasets_dir, device="cpu")
    return train_demo_model(settings, root / "weak", epochs=1, dim=16, eval_every=1)


def _server(weak_model: Path, transport: str) -> Iterator[ServerThread]:
    settings = get_settings()
    registry_with(settings, [weak_model])
    service = DataPlane(settings)
    service.versions.activate("v0001")
    running = ServerThread(service, transport)
    yield running
    running.stop()


@pytest.fixture(params=TRANSPORTS)
def server(weak_model: Path, request: pytest.FixtureRequest) -> Iterator[ServerThread]:
    """A server on each front end (the job lifecycle streams through WatchJob on both)."""
    yield from _server(weak_model, request.param)


@pytest.fixture
def python_server(weak_model: Path) -> Iterator[ServerThread]:
    """For the slow joint job: the engine is the same behind both front ends."""
    yield from _server(weak_model, "python")


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
    updates = list(admin.WatchJob(admin_pb2.GetJobRequest(job_id=job.job_id), timeout=180))
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
        "valid_sample": 40,
        "precision": "fp32",
    }
    job = start(admin, admin_pb2.ACTIVATION_POLICY_NEVER, **sent)
    final = list(admin.WatchJob(admin_pb2.GetJobRequest(job_id=job.job_id), timeout=180))[-1]
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
    for update in admin.WatchJob(admin_pb2.GetJobRequest(job_id=job.job_id), timeout=180):
        if update.epoch >= 2:
            break
    cancelled = admin.CancelJob(admin_pb2.GetJobRequest(job_id=job.job_id))
    assert cancelled.state not in FINAL or cancelled.state == admin_pb2.JOB_STATE_CANCELLED
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        state = admin.GetJob(admin_pb2.GetJobRequest(job_id=job.job_id))
        if state.state in FINAL:
            break
        time.sleep(0.1)
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


def test_joint_job_registers_a_version_that_completes(python_server: ServerThread) -> None:
    """`kgweave train --remote --joint`: the job trains KGE + LM together in its worker; the
    new version serves Complete (the LM, its fitted weights) through the same engine."""
    from kgweave.v1 import knowledge_pb2, knowledge_pb2_grpc

    admin, channel = admin_stub(python_server)
    job = start(admin, admin_pb2.ACTIVATION_POLICY_ALWAYS, epochs=10, dim=16, joint=True)
    final = list(admin.WatchJob(admin_pb2.GetJobRequest(job_id=job.job_id), timeout=600))[-1]
    assert final.state == admin_pb2.JOB_STATE_SUCCEEDED, final.message
    assert final.model_version == "v0002" and final.activated
    knowledge = knowledge_pb2_grpc.KnowledgeServiceStub(channel)
    reply = knowledge.Complete(
        knowledge_pb2.CompleteRequest(
            query=knowledge_pb2.LinkQuery(relation="born_in", tail="london"), k=3
        ),
        timeout=300,
    )
    assert reply.model_version == "v0002" and len(reply.candidates) == 3
    assert all(c.evidence.endswith(" was born in London.") for c in reply.candidates)
    assert reply.w_kge != 0 or reply.w_lm != 0
    channel.close()
