"""Background work yields to calls: a lower OS priority, and the ``background_cpus`` setting
confines it (the server's background threads and their OpenMP teams, job workers with as many
torch threads as CPUs)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from kgweave.cpus import format_cpus, parse_cpus
from kgweave.errors import InvalidArgumentError
from kgweave.serving import placement
from kgweave.settings import get_settings
from kgweave.v1 import admin_pb2, admin_pb2_grpc
from serving_support import ServerThread, job_updates, serve_model

pytest_plugins = ["serving_support"]  # fixture: weak_model (a barely trained demo model)

LINUX = sys.platform.startswith("linux")
CPUS = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []


def test_cpu_lists() -> None:
    assert format_cpus({0, 1, 2, 5, 7, 8}) == "0-2,5,7-8"
    assert format_cpus(set()) == ""
    if CPUS:
        every = ",".join(str(c) for c in CPUS)
        assert parse_cpus(every) == frozenset(CPUS)
        assert parse_cpus(format_cpus(set(CPUS))) == frozenset(CPUS)
        assert parse_cpus(f" {CPUS[0]} , ") == {CPUS[0]}
    assert parse_cpus("") == frozenset()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("one", "expected a CPU list such as '1' or '2-3,6'"),
        ("3-1", "'3-1' is no CPU range"),
        ("-1", "expected a CPU list"),
        ("100000", "CPU 100000 is not one this process may run on"),
    ],
)
def test_a_bad_cpu_list_is_one_line(
    text: str, message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        parse_cpus(text)
    monkeypatch.setenv("KGWEAVE_BACKGROUND_CPUS", text)
    with pytest.raises(InvalidArgumentError) as caught:
        get_settings()
    assert caught.value.message.startswith(f"KGWEAVE_BACKGROUND_CPUS={text!r}: ")
    assert "\n" not in caught.value.message


PROBE = r"""
import json, os, sys, threading, torch
from kgweave.serving import placement
from kgweave.cpus import parse_cpus
placement.configure(parse_cpus(sys.argv[1]))
torch.set_num_threads(2)
x = torch.randn(4_000_000)
x.sum()  # the main thread's own OpenMP team

def tasks():
    out = {}
    for tid in os.listdir("/proc/self/task"):
        stat = open(f"/proc/self/task/{tid}/stat").read()
        nice = int(stat[stat.rindex(")") + 2 :].split()[16])
        out[int(tid)] = [nice, sorted(os.sched_getaffinity(int(tid)))]
    return out

seen = {}
def background():
    placement.lower_thread_priority()
    for _ in range(5):
        (x * 2).sum()  # parallel regions started by this thread
    seen.update(me=threading.get_native_id(), tasks=tasks())

thread = threading.Thread(target=background)
thread.start()
thread.join()
print(json.dumps([placement.BACKGROUND_NICE, threading.get_native_id(), seen["me"], seen["tasks"]]))
"""


def probe(cpus: str) -> tuple[int, int, int, dict[int, list]]:  # type: ignore[type-arg]
    done = subprocess.run(
        [sys.executable, "-c", PROBE, cpus], capture_output=True, text=True, check=True
    )
    nice, main, me, tasks = json.loads(done.stdout)
    return nice, main, me, {int(tid): value for tid, value in tasks.items()}


@pytest.mark.skipif(not LINUX, reason="per-thread priority: Linux")
def test_background_threads_and_their_openmp_team_yield_the_cores() -> None:
    """A background thread of the server (the change applier, the snapshot diff, a job
    monitor) runs at a lower priority, and so do the OpenMP workers its kernels start;
    the threads that answer calls keep theirs."""
    nice, main, me, tasks = probe("")
    nices = {tid: value[0] for tid, value in tasks.items()}
    assert nice > 0
    assert nices[main] == 0 and nices[me] == nice
    team = [tid for tid, value in nices.items() if tid not in (main, me) and value == nice]
    assert team, nices  # its OpenMP worker inherited the priority
    assert any(value == 0 for tid, value in nices.items() if tid != main)  # the main team's
    assert all(cpus == CPUS for _, cpus in tasks.values())  # no CPUs set: anywhere


@pytest.mark.skipif(len(CPUS) < 2, reason="confining needs two CPUs or more")
def test_background_threads_and_their_openmp_team_keep_to_the_background_cpus() -> None:
    last = CPUS[-1]
    nice, main, me, tasks = probe(str(last))
    assert tasks[main] == [0, CPUS] and tasks[me] == [nice, [last]]
    team = [tid for tid, (n, cpus) in tasks.items() if tid not in (main, me) and n == nice]
    assert team and all(tasks[tid][1] == [last] for tid in team), tasks
    calls = [tid for tid, (n, _) in tasks.items() if tid != main and n == 0]
    assert calls and all(tasks[tid][1] == CPUS for tid in calls)  # the main team: anywhere


@pytest.fixture
def confined(weak_model: Path) -> Iterator[ServerThread]:
    yield from serve_model(weak_model, "python", background_cpus=str(CPUS[-1]))
    placement.configure(frozenset())  # (process-wide: the later tests' threads go anywhere)


@pytest.mark.skipif(len(CPUS) < 2, reason="confining needs two CPUs or more")
def test_jobs_run_on_the_background_cpus(confined: ServerThread) -> None:
    """A training job's worker (as the updater's and every job's) runs on the background
    CPUs with one torch thread per CPU; the server's own threads keep every CPU."""
    with grpc.insecure_channel(confined.address) as channel:
        admin = admin_pb2_grpc.AdminServiceStub(channel)
        job = admin.StartTraining(
            admin_pb2.StartTrainingRequest(
                settings=admin_pb2.TrainingSettings(epochs=2, dim=16),
                dataset="demo",
                activation=admin_pb2.ACTIVATION_POLICY_NEVER,
            )
        )
        final = job_updates(admin, job.job_id)[-1]
    assert final.state == admin_pb2.JOB_STATE_SUCCEEDED, final.message
    job_log = (confined.service.settings.jobs_dir / job.job_id / "job.log").read_text()
    assert f", CPUs {CPUS[-1]}, torch threads 1\n" in job_log
    assert sorted(os.sched_getaffinity(0)) == CPUS
