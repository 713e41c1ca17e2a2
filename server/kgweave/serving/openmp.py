"""OpenMP for the serving process: idle threads sleep, and one core is left to the transport.

By default the OpenMP threads behind torch's CPU kernels spin for a while after each parallel
region, waiting for the next one. A training loop wants that; a server does not: between
scoring passes its engine thread decodes and answers calls, and the spinning threads take the
core that the gRPC front end and the clients need. Measured on 2 cores (docs/benchmarks.md):
64 clients, one query per call, 8,458 -> 8,661 calls/s with 0.209 -> 0.154 ms of server CPU
per call, and p99 at one client 2.8-4.0 -> 1.7 ms.

``OMP_WAIT_POLICY`` is read once, when OpenMP loads with torch, so ``kgweave serve`` sets it
at the start of the process (unless the user set it) and removes it again once torch is
loaded, so that training jobs, spawned as new processes, keep OpenMP's default.

:func:`serve_threads` then sizes torch's thread pool for serving: with the native front end,
by default one less than the CPUs the process may use. Scoring a burst of calls in parallel
only pays when the other threads find a free core; on a machine the front end and the
clients share, a thread that must wait for a core holds up the whole parallel region
(measured on 2 cores, 64 clients, one query per call, three A/B pairs: 2 threads 7,400-7,700
calls/s, the engine's thread a sixth of its time waiting for a core; 1 thread 8,100-9,100;
docs/benchmarks.md).
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


THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def serve_threads(
    setting: int,
    native: bool,
    default: int,
    cpus: int | None = None,
    environ: dict[str, str] | None = None,
) -> int | None:
    """Threads for torch in the serving process, or None to keep torch's ``default``.

    ``setting`` when positive. Otherwise, with the native front end, one less than ``cpus``
    (default: the CPUs this process may run on) and never more than ``default`` (torch counts
    physical cores), at least 1; None with the Python front end (its transport shares the
    process and the GIL, and its batcher scores whole batches of 16-query calls, where every
    core counts) or when the user sized the pool (``OMP_NUM_THREADS``, ``MKL_NUM_THREADS``).
    """
    if setting > 0:
        return setting
    env = os.environ if environ is None else environ
    if not native or any(name in env for name in THREAD_VARIABLES):
        return None
    if cpus is None:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(default, (cpus or 1) - 1))


def use_serve_threads(setting: int, native: bool) -> int:
    """Size torch's thread pool for serving (:func:`serve_threads`), from the thread that will
    score, before other threads start scoring (they take the size when they first run torch).
    Returns the number of threads."""
    import torch

    threads = serve_threads(setting, native, torch.get_num_threads())
    if threads is not None:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def keep_default_for_children() -> None:
    """Once torch is loaded: child processes (training jobs) get OpenMP's default back."""
    if _state["set_here"] and "torch" in sys.modules:
        os.environ.pop(VARIABLE, None)
        _state["set_here"] = False
