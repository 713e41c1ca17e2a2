"""Where the serving process's background work runs: at a lower OS priority, and optionally
on CPUs of its own.

Background work is what `kgweave serve` does besides answering calls: in the serving process,
the change applier, the snapshot diff's thread and the job monitors (which load and warm up
registered versions); in processes of their own, the updater (incremental updates), training
jobs and full retrains, and the snapshot diff's worker. All of it runs at nice
:data:`BACKGROUND_NICE` (user's training jobs keep their priority), so a call's thread takes a
busy core first.

A lower priority still shares the cores: on a machine where serving, its clients and the
background work together want more cores than there are, a call now and then waits for a
core the background work holds (docs/benchmarks.md, PredictLinks p99 while ingesting). The
setting ``background_cpus`` (a Linux CPU list, ``"2-3"`` or ``"1,3"``) confines all of it to
those CPUs, with as many torch threads as CPUs, and leaves the others to the calls (the
serving threads themselves stay free to use every CPU). Meant for machines with cores to
spare; on 2 vCPUs it made updates slower and the tail no shorter (docs/benchmarks.md).
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading

#: the OS priority (nice) of background work
BACKGROUND_NICE = 10
#: the CPUs background work of this process is confined to (empty: anywhere); see configure
_confined: dict[str, frozenset[int]] = {"cpus": frozenset()}


def configure(cpus: frozenset[int]) -> None:
    """Confine this process's background threads (from now on) to ``cpus``
    (``background_cpus``; empty: anywhere)."""
    _confined["cpus"] = cpus


def background_cpus() -> frozenset[int]:
    """The CPUs :func:`configure` confined background work to (empty: anywhere)."""
    return _confined["cpus"]


def lower_thread_priority(nice: int = BACKGROUND_NICE) -> None:
    """Lower the OS priority of the calling thread (Linux; elsewhere nothing) and confine it
    to the background CPUs when configured, before it runs torch: OpenMP gives each thread
    that starts parallel regions its own team of worker threads, which inherit both, so the
    thread's kernels yield the cores to the threads that answer calls (the change applier,
    the snapshot diff, the job monitors that load and warm up registered versions)."""
    native = threading.get_native_id()
    with contextlib.suppress(OSError, AttributeError):  # Linux: this thread only
        os.setpriority(os.PRIO_PROCESS, native, nice)
    cpus = background_cpus()
    if cpus:
        with contextlib.suppress(OSError, AttributeError):
            os.sched_setaffinity(native, cpus)


def lower_process_priority(nice: int | None, cpus: frozenset[int]) -> None:
    """In a worker process, before it runs torch: lower its priority by ``nice`` (None: keep
    it) and confine it to ``cpus`` (empty: anywhere), with as many torch threads as CPUs
    (unless the user sized the pool with OMP_NUM_THREADS)."""
    if nice:
        with contextlib.suppress(OSError):
            os.nice(nice)
    if not cpus:
        return
    with contextlib.suppress(OSError, AttributeError):
        for task in os.listdir("/proc/self/task"):  # every thread, not only this one
            with contextlib.suppress(OSError):
                os.sched_setaffinity(int(task), cpus)
        os.sched_setaffinity(0, cpus)
    if "OMP_NUM_THREADS" in os.environ:
        return
    if "torch" in sys.modules:
        import torch

        torch.set_num_threads(min(torch.get_num_threads(), len(cpus)))
    else:
        os.environ["OMP_NUM_THREADS"] = str(len(cpus))
