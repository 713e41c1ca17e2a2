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
import kgweave.cli.main  # loads torch
loaded = os.environ.get("OMP_WAIT_POLICY")
from kgweave.serving.openmp import keep_default_for_children
keep_default_for_children()
print(json.dumps([before, loaded, os.environ.get("OMP_WAIT_POLICY"), "torch" in sys.modules]))
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
        (["serve"], None, [None, "PASSIVE", None, True]),
        # other commands (training) keep OpenMP's default
        (["train"], None, [None, None, None, True]),
        # a user's own choice wins and stays
        (["serve"], "ACTIVE", ["ACTIVE", "ACTIVE", "ACTIVE", True]),
    ],
)
def test_serve_prefers_passive_openmp(
    argv: list[str], policy: str | None, expected: list[object]
) -> None:
    assert probe(*argv, policy=policy) == expected
