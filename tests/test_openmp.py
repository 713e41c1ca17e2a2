"""`kgweave serve` lets idle OpenMP threads sleep; training jobs keep OpenMP's default."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

PROBE = r"""
import json, os, sys
sys.argv = ["kgweave", *sys.argv[1:]]
before = os.environ.get("OMP_WAIT_POLICY")
import kgweave.cli.main  # sets the policy first; the CLI itself no longer imports torch
cli_loaded_torch = "torch" in sys.modules
import torch  # as serve does when it loads a model
loaded = os.environ.get("OMP_WAIT_POLICY")
from kgweave.serving.openmp import keep_default_for_children
keep_default_for_children()
print(json.dumps([before, loaded, os.environ.get("OMP_WAIT_POLICY"), cli_loaded_torch]))
"""


def probe(*argv: str, policy: str | None = None) -> list[object]:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if policy is not None:
        env["OMP_WAIT_POLICY"] = policy
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *argv], env=env, capture_output=True, text=True, check=True
    )
    return list(json.loads(done.stdout))


@pytest.mark.parametrize(
    ("argv", "policy", "expected"),
    [
        # serve: passive while torch loads, gone for child processes afterwards
        (["serve"], None, [None, "PASSIVE", None, False]),
        # other commands (training) keep OpenMP's default
        (["train"], None, [None, None, None, False]),
        # a user's own choice wins and stays
        (["serve"], "ACTIVE", ["ACTIVE", "ACTIVE", "ACTIVE", False]),
    ],
)
def test_serve_prefers_passive_openmp(
    argv: list[str], policy: str | None, expected: list[object]
) -> None:
    assert probe(*argv, policy=policy) == expected


def test_serve_threads_leave_a_core_to_the_transport() -> None:
    from kgweave.serving.openmp import serve_threads

    def native(cpus: int, default: int, **env: str) -> int | None:
        return serve_threads(0, native=True, default=default, cpus=cpus, environ=env)

    assert native(cpus=2, default=2) == 1
    assert native(cpus=16, default=16) == 15
    assert native(cpus=16, default=8) == 8  # 16 hardware threads on 8 cores: torch's 8
    assert native(cpus=1, default=1) == 1
    assert native(cpus=16, default=16, OMP_NUM_THREADS="4") is None  # the user's choice
    assert serve_threads(0, native=False, default=16, cpus=16, environ={}) is None
    assert serve_threads(3, native=True, default=2, cpus=2, environ={}) == 3  # the setting
    assert serve_threads(3, native=False, default=2, cpus=2, environ={}) == 3


THREADS_PROBE = r"""
import json, threading
import torch
from kgweave.serving.openmp import use_serve_threads
default = torch.get_num_threads()
chosen = use_serve_threads(1, native=True)
seen = []
worker = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
worker.start(); worker.join()
print(json.dumps([default, chosen, torch.get_num_threads(), seen[0]]))
"""


def test_use_serve_threads_sizes_this_and_later_threads() -> None:
    done = subprocess.run(
        [sys.executable, "-c", THREADS_PROBE], capture_output=True, text=True, check=True
    )
    default, chosen, here, worker = json.loads(done.stdout)
    assert default >= 1
    assert (chosen, here, worker) == (1, 1, 1)  # the scoring thread and a batcher started later
