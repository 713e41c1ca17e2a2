"""Nothing stranded: kill -9 of a real `kgweave serve` during a job, then a restart.

The worker must die with its server (it holds only its own pipe ends), the restarted server
must report the job (failed, phase ``interrupted``, with the reason) and clean ``jobs/``; a job
whose artifact was finished is registered on restart, and a worker still holding its lock is
killed. Every wait is on an explicit condition (a job state, a pid's exit, a server answering).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from kgweave import killpoints
from kgweave.dataplane import DataPlane
from kgweave.graph import EmbeddedFalkorDB
from kgweave.graph.embedded import free_port
from kgweave.settings import Settings, get_settings
from kgweave.v1 import admin_pb2, admin_pb2_grpc
from serving_support import registry_with

pytest_plugins = ["serving_support"]  # fixture: weak_model (a barely trained demo model)


@pytest.fixture(scope="module")
def graph_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = EmbeddedFalkorDB(tmp_path_factory.mktemp("falkordb"))
    info = server.start()
    yield f"falkor://:{info.password()}@{info.host}:{info.port}/recovery"
    server.stop()


def wait_until(condition: Callable[[], Any], what: str, limit_s: float = 300) -> Any:
    """Poll ``condition`` until it returns something truthy (the cap only stops a hang)."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    pytest.fail(f"gave up waiting for {what}")


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie nobody reaped yet has exited)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


class Serve:
    """A real `kgweave serve` subprocess (Python front end) on free ports."""

    def __init__(self, log: Path, graph_uri: str, kill: str = "") -> None:
        """``kill``: a kill point for this server and its job workers (kgweave.killpoints)."""
        self.port = free_port()
        env = {
            **os.environ,
            "KGWEAVE_GRPC_PORT": str(self.port),
            "KGWEAVE_HTTP_PORT": str(free_port()),
            "KGWEAVE_GRAPH_URI": graph_uri,
            "KGWEAVE_FRONTEND": "python",
            killpoints.ENV: kill,
        }
        self.log = log
        with log.open("a") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "kgweave.cli.main", "serve", "--no-progress"],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.port}")
        self.admin = admin_pb2_grpc.AdminServiceStub(self.channel)
        wait_until(self._ready, "the server to answer")

    def _ready(self) -> bool:
        assert self.process.poll() is None, self.log.read_text()
        try:
            return bool(self.admin.Status(admin_pb2.StatusRequest(), timeout=5).ready)
        except grpc.RpcError:
            return False

    def train(self, epochs: int) -> Any:
        """Start a small job on the demo dataset, activated by the policy ``always``."""
        return self.admin.StartTraining(
            admin_pb2.StartTrainingRequest(
                settings=admin_pb2.TrainingSettings(epochs=epochs, dim=16),
                dataset="demo",
                activation=admin_pb2.ACTIVATION_POLICY_ALWAYS,
            ),
            timeout=30,
        )

    def job(self, job_id: str) -> Any:
        return self.admin.GetJob(admin_pb2.GetJobRequest(job_id=job_id), timeout=30)

    def close(self) -> None:
        self.channel.close()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait()


def test_kill_9_of_serve_during_a_job_strands_nothing(
    weak_model: Path, graph_uri: str, tmp_path: Path
) -> None:
    settings = get_settings()
    registry_with(settings, [weak_model])
    log = tmp_path / "serve.log"
    first = Serve(log, graph_uri)
    pid = 0
    try:
        job = first.train(epochs=100_000)
        wait_until(lambda: first.job(job.job_id).epoch >= 1, "the job to train an epoch")
        record = json.loads((settings.jobs_dir / job.job_id / "job.json").read_text())
        pid = record["pid"]
        assert record["state"] == "running" and alive(pid)

        first.process.kill()  # kill -9: no cleanup runs in the server
        first.process.wait()
        wait_until(lambda: not alive(pid), f"worker {pid} to exit after its server")
    finally:
        first.close()
        if pid and alive(pid):
            os.kill(pid, signal.SIGKILL)

    second = Serve(log, graph_uri)
    try:
        after = second.job(job.job_id)
        assert after.state == admin_pb2.JOB_STATE_FAILED
        assert after.phase == "interrupted"
        assert "interrupted: the server stopped while the job was training" in after.message
        assert f"pid {pid}" in after.message
        assert not after.model_version
        listing = second.admin.ListModels(admin_pb2.ListModelsRequest(), timeout=30)
        assert [m.version for m in listing.models] == ["v0001"]
        assert second.admin.Status(admin_pb2.StatusRequest(), timeout=30).active_jobs == 0
        folder = settings.jobs_dir / job.job_id
        assert sorted(p.name for p in folder.iterdir()) == ["job.json", "job.log"]
        assert json.loads((folder / "job.json").read_text())["phase"] == "interrupted"
    finally:
        second.close()
    assert second.process.returncode == 0, log.read_text()


#: kill point -> the job as the restarted server reports it: (state, phase, what its message
#: says). A crash can come before the server recorded the phase the worker just reported, so
#: an interrupted job names the phase it was in or the one before ("training|evaluating").
KILLS = {
    # kill -9 of the worker alone: its server reports the job failed at once
    "worker:training": ("failed", "done", "the worker process exited with code -9"),
    # ... after it marked the artifact finished: the server registers it (and applies the policy)
    "worker:saved": ("succeeded", "done", r"activated \(policy always\)"),
    # the server and the worker together (a crash): interrupted, reported on restart
    "crash:training": ("failed", "interrupted", "while the job was (snapshot|training) "),
    "crash:evaluating": ("failed", "interrupted", "while the job was (training|evaluating) "),
    "crash:saving": ("failed", "interrupted", "while the job was (training|evaluating) "),
    # the server while it registers the finished model: registered on restart, not activated
    "server:registering": (
        "succeeded",
        "done",
        "the server stopped before registering the model; registered on restart as v0002, "
        "not activated",
    ),
}


@pytest.mark.parametrize("kill", list(KILLS))
def test_kill_9_at_a_point_of_a_job_then_restart(
    kill: str, weak_model: Path, graph_uri: str, tmp_path: Path
) -> None:
    """kill -9 at a named point of a job (kgweave.killpoints: the process stops itself there,
    nothing depends on timing), then a restart: the job is reported failed, interrupted or
    recovered as KILLS says; nothing half-written is registered, nothing unfinished is
    served (v0001 stays active unless the job succeeded while its server lived); no worker is
    left and jobs/ keeps only the job's record and log."""
    settings = get_settings()
    registry_with(settings, [weak_model])
    log = tmp_path / "serve.log"
    who = kill.partition(":")[0]
    first = Serve(log, graph_uri, kill=kill)
    try:
        job = first.train(epochs=2)
        folder = settings.jobs_dir / job.job_id
        if who == "worker":  # the server lives on and settles the job
            wait_until(lambda: first.job(job.job_id).phase == "done", "the job to end")
        else:
            wait_until(lambda: first.process.poll() is not None, "the kill point to stop serve")
            assert first.process.returncode == -signal.SIGKILL, log.read_text()
        pid = json.loads((folder / "job.json").read_text())["pid"]
        wait_until(lambda: not alive(pid), f"worker {pid} to exit")
        model = folder / "model"
        if kill == "crash:saving":  # killed with the artifact half written
            assert (model / "model.safetensors").is_file() and (model / "id_maps.json").is_file()
            assert not (model / "config.json").exists()
        if kill == "server:registering":  # the finished artifact waits in jobs/
            assert (folder / "result.json").is_file() and (model / "config.json").is_file()
    finally:
        first.close()
    state, phase, message = KILLS[kill]
    registered = state == "succeeded"
    active = "v0002" if kill == "worker:saved" else "v0001"
    second = Serve(log, graph_uri)
    try:
        after = second.job(job.job_id)
        assert (admin_pb2.JobState.Name(after.state), after.phase) == (
            f"JOB_STATE_{state.upper()}",
            phase,
        ), after
        assert re.search(message, after.message), after.message
        assert after.message.startswith("interrupted: ") == (phase == "interrupted")
        assert after.model_version == ("v0002" if registered else "")
        listing = second.admin.ListModels(admin_pb2.ListModelsRequest(), timeout=30)
        versions = ["v0002", "v0001"] if registered else ["v0001"]
        assert [m.version for m in listing.models] == versions
        assert listing.active_version == active
        status = second.admin.Status(admin_pb2.StatusRequest(), timeout=30)
        assert status.active_model.version == active and status.active_jobs == 0
        assert sorted(p.name for p in folder.iterdir()) == ["job.json", "job.log"]
    finally:
        second.close()
    assert second.process.returncode == 0, log.read_text()


def _left_running(
    settings: Settings, job_id: str, phase: str, model: Path | None = None, finished: bool = False
) -> Path:
    folder = settings.jobs_dir / job_id
    folder.mkdir(parents=True)
    record = {"job_id": job_id, "state": "running", "phase": phase, "policy": "always", "pid": 1}
    (folder / "job.json").write_text(json.dumps(record))
    (folder / "job.log").write_text("training\n")
    if model is not None:
        shutil.copytree(model, folder / "model")
    if finished:
        (folder / "result.json").write_text("{}")
    return folder


def test_a_finished_artifact_is_registered_on_restart_and_a_live_worker_killed(
    weak_model: Path, tmp_path: Path
) -> None:
    settings = get_settings()
    registry_with(settings, [weak_model])
    folder = _left_running(settings, "f1n15hed", "registering", weak_model, finished=True)
    # a worker still holding its lock (its lifeline not closed yet): a real process
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, os, sys\n"
            f"f = open({str(folder / 'worker.lock')!r}, 'w')\n"
            "fcntl.flock(f, fcntl.LOCK_EX); f.write(str(os.getpid())); f.flush()\n"
            "print('locked', flush=True); sys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        service = DataPlane(settings)
        assert holder.wait() == -signal.SIGKILL
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
    try:
        job = service.jobs.get("f1n15hed")
        assert job.state == "succeeded" and job.model_version == "v0002" and not job.activated
        assert "registered on restart as v0002, not activated" in job.message
        assert [v.version for v in service.versions.registry.versions()] == ["v0002", "v0001"]
        assert service.versions.registry.active_version() is None  # activation was not decided
        assert sorted(p.name for p in folder.iterdir()) == ["job.json", "job.log"]
        assert [j.job_id for j in service.jobs.recovered] == ["f1n15hed"]
    finally:
        service.close()


def test_an_unfinished_job_is_reported_and_leftovers_cleaned(
    weak_model: Path, tmp_path: Path
) -> None:
    settings = get_settings()
    folder = _left_running(settings, "unf1n15hed", "evaluating", weak_model)
    (folder / "model" / "config.json").unlink()  # an artifact the worker never finished
    # the record's temporary file, left by a server killed while it replaced job.json
    (folder / ".job.json.4242.140627165984448.tmp").write_text('{"job_id": "unf1n')
    leftover = settings.jobs_dir / "bootstrap" / "model"
    leftover.mkdir(parents=True)
    (leftover / "embeddings.safetensors").write_bytes(b"partial")
    done = settings.jobs_dir / "d0ne"
    done.mkdir()
    (done / "job.json").write_text(
        json.dumps({"job_id": "d0ne", "state": "succeeded", "model_version": "v0007"})
    )
    service = DataPlane(settings)
    try:
        job = service.jobs.get("unf1n15hed")
        assert (job.state, job.phase) == ("failed", "interrupted")
        assert job.message.startswith(
            "interrupted: the server stopped while the job was evaluating"
        )
        assert service.versions.registry.versions() == []
        assert not (folder / "model").exists() and not leftover.exists()
        assert sorted(p.name for p in folder.iterdir()) == ["job.json", "job.log"]
        assert service.jobs.get("d0ne").model_version == "v0007"  # finished jobs stay visible
        assert service.jobs.active_count() == 0
    finally:
        service.close()
    # the report is on disk: a second restart says the same and settles nothing again
    again = DataPlane(settings)
    try:
        assert again.jobs.get("unf1n15hed").phase == "interrupted"
        assert again.jobs.recovered == []
    finally:
        again.close()
