"""The reliability suite's longer runs (issue 16): fuzzing, kill -9 during ingestion, load
during hot swaps, against real ``kgweave serve`` processes on loopback.

Usage::

    python benchmarks/reliability.py [--calls 4000] [--http-calls 1000] [--kills 3]
        [--swaps 12] [--seed 16] [--out results.json]

What it runs (each part in a fresh data folder, a small demo model registered):

* fuzz: ``--calls`` hostile gRPC calls spread over every RPC (tests/fuzz_support.py) on each
  front end (python; native when ``kgweave-frontend`` is built), and ``--http-calls`` hostile
  HTTP requests; counts the answers by code, the improper ones (INTERNAL, UNKNOWN, dropped
  connections, hangs, 5xx) and crashes (the server process gone, or unhealthy at the end);
* ingestion: ``--kills`` rounds of POST /v1/changes in a loop, kill -9 of serve once some
  batches were acknowledged, restart; counts acknowledged events and those missing from the
  log (lost) or in it twice;
* swaps: clients query without pause while ``--swaps`` activations alternate two versions;
  counts answers, errors and mixed answers (candidates not those of the version named).

Prints a summary and writes JSON (``--out``). docs/reliability.md records the figures.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "server"), str(REPO / "tests")]

import grpc  # noqa: E402

from fuzz_support import Tally, fuzz_grpc, fuzz_http  # noqa: E402
from ingest_support import BATCH, Ingestion  # noqa: E402
from process_support import HANG_GUARD_S, ServeProcess, free_ports, logged_events, until  # noqa: E402


@contextmanager
def data_folder(models: list[Path]) -> Iterator[Path]:
    """A fresh KGWEAVE_DATA_DIR with ``models`` registered as v0001, v0002, ...; its embedded
    FalkorDB stopped at the end."""
    from kgweave.graph.embedded import EmbeddedFalkorDB

    root = Path(tempfile.mkdtemp(prefix="kgweave-reliability-"))
    data = root / "data"
    for i, model in enumerate(models, start=1):
        shutil.copytree(model, data / "models" / f"v{i:04d}")
    os.environ["KGWEAVE_DATA_DIR"] = str(data)
    try:
        yield root
    finally:
        EmbeddedFalkorDB(data / "graph").stop()
        shutil.rmtree(root, ignore_errors=True)


def train_models(folder: Path) -> list[Path]:
    from kgweave.serving.training_run import run_training
    from kgweave.settings import Settings

    settings = Settings(data_dir=folder / "train-data", device="cpu")
    out = []
    for name, config in (
        ("a", {"epochs": 5, "dim": 16, "seed": 0}),
        ("b", {"epochs": 5, "dim": 24, "seed": 1, "model": "distmult"}),
    ):
        run_training(
            {"config": config, "dataset": "demo"}, folder / name, settings, lambda _e: None
        )
        out.append(folder / name)
    return out


def fuzz(
    models: list[Path], frontend: str, calls: int, http_calls: int, seed: int
) -> dict[str, Any]:
    with data_folder(models[:1]) as root:
        serve = ServeProcess(
            *free_ports(), root / "serve.log", {"KGWEAVE_FRONTEND": frontend}
        ).wait_healthy()
        started = time.monotonic()
        grpc_tally, http_tally = Tally(), Tally()
        crashed = False
        try:
            fuzz_grpc(serve.address, calls, seed, tally=grpc_tally)
            fuzz_http(serve.http_port, http_calls, seed, tally=http_tally)
            healthy = serve.healthy()
        except AssertionError:  # the process is gone
            healthy, crashed = False, True
        finally:
            code = serve.end()
        errors = [  # the server's own account of improper answers (its tracebacks' last lines)
            line
            for line in (root / "serve.log").read_text(errors="replace").splitlines()
            if line.startswith(("Traceback", '  File "' + str(REPO)))
            or "Error" in line.split(":", 1)[0]
        ]
        return {
            "frontend": frontend,
            "grpc_calls": grpc_tally.calls,
            "grpc_codes": grpc_tally.by_code(),
            "grpc_improper": grpc_tally.bad,
            "http_requests": http_tally.calls,
            "http_statuses": http_tally.by_code(),
            "http_improper": http_tally.bad,
            "server_errors": errors[-30:] if grpc_tally.bad or http_tally.bad else [],
            "crashed": crashed or not healthy,
            "exit_code_on_sigterm": code,
            "seconds": round(time.monotonic() - started, 1),
        }


def ingestion(models: list[Path], kills: int) -> dict[str, Any]:
    with data_folder(models[:1]) as root:
        http_port, grpc_port = free_ports()
        acknowledged: list[int] = []
        first = 0
        for _ in range(kills):
            serve = ServeProcess(http_port, grpc_port, root / "serve.log").wait_healthy()
            ingestion = Ingestion(http_port, first)
            until(lambda i=ingestion: len(i.acknowledged) >= 200, "ingestion stalled")
            serve.kill()
            ingestion.stop()
            ingestion.join()
            acknowledged += ingestion.acknowledged
            first = (acknowledged[-1] if acknowledged else first) + 10 * BATCH
        serve = ServeProcess(http_port, grpc_port, root / "serve.log").wait_healthy()
        serve.end()
        records = logged_events(Path(os.environ["KGWEAVE_DATA_DIR"]) / "changes")
        heads = collections.Counter(event.head for _, event in records)
        wanted = [f"h{n + i}" for n in acknowledged for i in range(BATCH)]
        return {
            "kills": kills,
            "events_acknowledged": len(wanted),
            "events_lost": sum(1 for h in wanted if h not in heads),
            "events_twice": sum(1 for n in heads.values() if n > 1),
            "events_in_log": len(records),
        }


def swaps(models: list[Path], count: int, clients: int = 8) -> dict[str, Any]:
    from kgweave.v1 import admin_pb2, admin_pb2_grpc, knowledge_pb2, knowledge_pb2_grpc

    with data_folder(models) as root:
        serve = ServeProcess(*free_ports(), root / "serve.log").wait_healthy()
        channel = grpc.insecure_channel(serve.address)
        admin = admin_pb2_grpc.AdminServiceStub(channel)
        knowledge = knowledge_pb2_grpc.KnowledgeServiceStub(channel)
        query = knowledge_pb2.LinkQuery(head="alan_turing", relation="born_in")
        request = knowledge_pb2.PredictLinksRequest(queries=[query] * 4, k=5)

        def answer(reply: Any) -> tuple[tuple[str, ...], ...]:
            return tuple(tuple(sorted(c.entity_id for c in r.candidates)) for r in reply.results)

        expected = {}
        for version in ("v0001", "v0002"):
            admin.ActivateModel(admin_pb2.ActivateModelRequest(version=version), timeout=60)
            expected[version] = answer(knowledge.PredictLinks(request, timeout=60))
        tally = {"answers": 0, "errors": 0, "mixed": 0}
        lock = threading.Lock()
        stop = threading.Event()

        def client() -> None:
            with grpc.insecure_channel(serve.address) as own:
                stub = knowledge_pb2_grpc.KnowledgeServiceStub(own)
                while not stop.is_set():
                    try:
                        reply = stub.PredictLinks(request, timeout=60)
                        key = (
                            "answers"
                            if expected.get(reply.model_version) == answer(reply)
                            else "mixed"
                        )
                    except grpc.RpcError:
                        key = "errors"
                    with lock:
                        tally[key] += 1

        threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
        for thread in threads:
            thread.start()
        started = time.monotonic()
        for n in range(count):
            before = tally["answers"]
            version = "v0001" if n % 2 else "v0002"
            admin.ActivateModel(admin_pb2.ActivateModelRequest(version=version), timeout=60)
            until(lambda b=before: tally["answers"] >= b + 4 * clients, "no answers after a swap")
        stop.set()
        for thread in threads:
            thread.join(timeout=HANG_GUARD_S)
        channel.close()
        serve.end()
        return {"swaps": count, **tally, "seconds": round(time.monotonic() - started, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=4000)
    parser.add_argument("--http-calls", type=int, default=1000)
    parser.add_argument("--kills", type=int, default=3)
    parser.add_argument("--swaps", type=int, default=12)
    parser.add_argument("--seed", type=int, default=16)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--only", choices=("fuzz", "ingestion", "swaps"), default=None)
    args = parser.parse_args()
    os.environ.setdefault("KGWEAVE_DEVICE", "cpu")
    os.environ.setdefault("KGWEAVE_OFFLINE", "1")
    from kgweave.api.frontend import find_frontend
    from kgweave.settings import get_settings

    frontends = ["python"] + (["native"] if find_frontend(get_settings()) else [])
    work = Path(tempfile.mkdtemp(prefix="kgweave-reliability-models-"))
    try:
        models = train_models(work)
        report: dict[str, Any] = {
            "machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} CPUs",
            "python": platform.python_version(),
            "date": time.strftime("%Y-%m-%d"),
            "seed": args.seed,
        }
        if args.only in (None, "fuzz"):
            report["fuzz"] = [
                fuzz(models, f, args.calls, args.http_calls, args.seed) for f in frontends
            ]
        if args.only in (None, "ingestion"):
            report["ingestion"] = ingestion(models, args.kills)
        if args.only in (None, "swaps"):
            report["swaps"] = swaps(models, args.swaps)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
