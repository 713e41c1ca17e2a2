"""OpenMP's idle policy for the serving process (set before torch loads; no torch import here).

By default the OpenMP threads behind torch's CPU kernels spin for a while after each parallel
region, waiting for the next one. A training loop wants that; a server does not: between
scoring passes its engine thread decodes and answers calls, and the spinning threads take the
core that the gRPC front end and the clients need. Measured on 2 cores (docs/benchmarks.md):
64 clients, one query per call, 8,458 -> 8,661 calls/s with 0.209 -> 0.154 ms of server CPU
per call, and p99 at one client 2.8-4.0 -> 1.7 ms.

``OMP_WAIT_POLICY`` is read once, when OpenMP loads with torch, so ``kgweave serve`` sets it
at the start of the process (unless the user set it) and removes it again once torch is
loaded, so that training jobs, spawned as new processes, keep OpenMP's default.
"""

from __future__ import annotations

import os
import sys

VARIABLE = "OMP_WAIT_POLICY"
_state = {"set_here": False}


def prefer_passive(wanted: bool = True) -> None:
    """Let idle OpenMP threads of this process sleep, if torch is not loaded yet and the user
    chose no policy."""
    if wanted and VARIABLE not in os.environ and "torch" not in sys.modules:
        os.environ[VARIABLE] = "PASSIVE"
        _state["set_here"] = True


def keep_default_for_children() -> None:
    """Once torch is loaded: child processes (training jobs) get OpenMP's default back."""
    if _state["set_here"] and "torch" in sys.modules:
        os.environ.pop(VARIABLE, None)
        _state["set_here"] = False
