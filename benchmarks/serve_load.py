"""Serving load test: PredictLinks top-10 through the real gRPC server vs in-process scoring.

Usage::

    python benchmarks/serve_load.py --model MODEL_DIR [--seconds 10] [--clients 1,8,64]

Starts ``kgweave``'s server (the same code as ``kgweave serve``: registry, hot-swappable
model, micro-batcher, grpc.aio) in its own process with MODEL_DIR registered and active, then
runs closed-loop clients (one query per call, tail prediction for a random (head, relation) of
the model's graph, k=10) from a separate process with grpc.aio, for each concurrency level.
In the same run it measures the in-process baseline: the engine's scoring + top-k
(``LinkPredictor.top_ids``) called directly with batches of the same sizes, before and after
the served runs (the faster of the two counts). Prints and writes JSON (``--out``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _stat(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds so far of process ``pid`` and its live child processes (the
    native front end is the server's child); Linux ``/proc``, None elsewhere."""
    fields = _stat(pid)
    if fields is None:
        return None
    total = int(fields[11]) + int(fields[12])
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (child := _stat(int(entry.name))) and child[1] == str(pid):
            total += int(child[11]) + int(child[12])
    return total / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# ---- server process


def run_server(model: Path, port: int, data_dir: Path, frontend: str) -> None:
    from kgweave.serving.openmp import keep_default_for_children, prefer_passive, use_serve_threads

    prefer_passive()  # as `kgweave serve` does, before torch loads
    from kgweave.api.server import serve_forever
    from kgweave.dataplane import DataPlane
    from kgweave.settings import Settings

    settings = Settings(
        data_dir=data_dir,
        grpc_port=port,
        http_port=0,
        log_level="WARNING",
        device="auto",
        frontend=frontend,
    )
    shutil.copytree(model, settings.models_dir / "v0001")
    keep_default_for_children()
    service = DataPlane(settings)
    service.versions.activate("v0001")
    from kgweave.api.frontend import serves_natively

    use_serve_threads(settings.serve_threads, serves_natively(settings))  # as `kgweave serve`
    asyncio.run(serve_forever(service, settings, lambda _g, _h: print("READY", flush=True)))


@contextlib.contextmanager
def server_process(model: Path, frontend: str) -> Iterator[tuple[str, int]]:
    """A server (:func:`run_server`) in its own process, ready: its address and pid."""
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        server = subprocess.Popen(
            [sys.executable, __file__, "--role", "server", "--model", str(model),
             "--port", str(port), "--data-dir", tmp, "--frontends", frontend],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            assert server.stdout is not None
            assert server.stdout.readline().strip() == "READY"
            yield f"127.0.0.1:{port}", server.pid
        finally:
            server.terminate()
            server.wait(timeout=60)


# ---- client process


def queries_of(model: Path, n: int, seed: int = 0) -> list[tuple[str, str]]:
    ids = json.loads((model / "id_maps.json").read_text())
    from safetensors.torch import load_file

    train = load_file(str(model / "model.safetensors"))["graph.train"]
    rng = random.Random(seed)
    rows = [train[rng.randrange(len(train))].tolist() for _ in range(n)]
    return [(ids["entities"][h], ids["relations"][r]) for h, r, _ in rows]


def requests_of(queries: list[tuple[str, str]], method: str, per_call: int) -> list[Any]:
    """PredictLinks top-10 requests of ``per_call`` queries, or GetEntity requests."""
    from kgweave.v1 import knowledge_pb2

    if method == "PredictLinks":
        return [
            knowledge_pb2.PredictLinksRequest(
                queries=[
                    knowledge_pb2.LinkQuery(head=h, relation=r)
                    for h, r in queries[i : i + per_call]
                ],
                k=10,
            )
            for i in range(0, len(queries) - per_call + 1, per_call)
        ]
    return [knowledge_pb2.GetEntityRequest(entity=h, max_facts=1) for h, _ in queries]


LOADGEN = Path(__file__).resolve().parent / "loadgen" / "build" / "kgweave-loadgen"


def cpu_used(pid: int, start: float | None) -> float | None:
    """CPU seconds process ``pid`` (with its children) used since :func:`cpu_seconds` said
    ``start``; None where unknown."""
    end = cpu_seconds(pid)
    return None if start is None or end is None else end - start


@dataclass(frozen=True)
class LoadRun:
    """One closed-loop measurement: ``clients`` callers of ``method`` (PredictLinks top-10 with
    ``per_call`` queries a call, or GetEntity: the transport ceiling, an RPC that does almost
    nothing) on ``address`` for ``seconds``; the CPU time of ``server_pid`` is measured."""

    address: str
    queries: list[tuple[str, str]]
    clients: int
    seconds: float
    method: str = "PredictLinks"
    per_call: int = 1
    server_pid: int = 0

    def requests(self) -> list[Any]:
        return requests_of(self.queries, self.method, self.per_call)

    def row(
        self,
        calls: int,
        errors: int,
        seconds: float,
        latency_ms: tuple[float, float, float],
        cpu_s: tuple[float | None, float],
    ) -> dict[str, Any]:
        """One row of the report. ``latency_ms``: p50, p99, mean; ``cpu_s``: CPU seconds of
        the server (None where unknown) and of the load generator over the run."""
        per_call = self.per_call if self.method == "PredictLinks" else 0
        server_cpu, client_cpu = cpu_s
        return {
            "method": self.method,
            "clients": self.clients,
            "queries_per_call": per_call,
            "requests": calls,
            "errors": errors,
            "qps": calls * max(per_call, 1) / seconds,
            "p50_ms": latency_ms[0],
            "p99_ms": latency_ms[1],
            "mean_ms": latency_ms[2],
            # CPU time per call: where the two cores go (server process, load generator)
            "server_cpu_ms_per_call": (
                None if server_cpu is None else 1000 * server_cpu / max(calls, 1)
            ),
            "client_cpu_ms_per_call": 1000 * client_cpu / max(calls, 1),
        }


def load_native(run: LoadRun) -> dict[str, Any]:
    """The same closed loop as :func:`load`, run by ``kgweave-loadgen`` (C++)."""
    if not LOADGEN.is_file():
        raise SystemExit(
            f"{LOADGEN} is not built: cmake -S benchmarks/loadgen -B benchmarks/loadgen/build "
            "&& cmake --build benchmarks/loadgen/build"
        )
    with tempfile.NamedTemporaryFile(suffix=".bin") as file:
        for request in run.requests():
            data = request.SerializeToString()
            file.write(len(data).to_bytes(4, "little") + data)
        file.flush()
        server_cpu = cpu_seconds(run.server_pid)
        done = subprocess.run(
            [str(LOADGEN), "--target", run.address,
             "--method", f"/kgweave.v1.KnowledgeService/{run.method}", "--requests", file.name,
             "--clients", str(run.clients), "--seconds", str(run.seconds)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        server_s = cpu_used(run.server_pid, server_cpu)
    got = json.loads(done.stdout)
    return run.row(
        got["calls"],
        got["errors"],
        got["seconds"],
        (got["p50_ms"], got["p99_ms"], got["mean_ms"]),
        (server_s, got["cpu_seconds"]),
    )


async def load(run: LoadRun) -> dict[str, Any]:
    """Closed-loop grpc.aio clients in this process for ``run.seconds``."""
    import grpc

    from kgweave.v1 import knowledge_pb2_grpc

    requests = run.requests()
    latencies: list[float] = []
    errors = 0
    async with grpc.aio.insecure_channel(run.address) as channel:
        stub = knowledge_pb2_grpc.KnowledgeServiceStub(channel)
        call = getattr(stub, run.method)
        for request in requests[:50]:  # warm-up
            await call(request)
        stop_at = time.perf_counter() + run.seconds

        async def client(offset: int) -> None:
            nonlocal errors
            i = offset
            while time.perf_counter() < stop_at:
                started = time.perf_counter()
                try:
                    await call(requests[i % len(requests)], timeout=10)
                    latencies.append(time.perf_counter() - started)
                except grpc.aio.AioRpcError:
                    errors += 1  # failed calls are no throughput (fast refusals would be)
                i += run.clients

        began, client_cpu = time.perf_counter(), time.process_time()
        server_cpu = cpu_seconds(run.server_pid)
        await asyncio.gather(*(client(c) for c in range(run.clients)))
        elapsed = time.perf_counter() - began
        client_cpu = time.process_time() - client_cpu
        server_s = cpu_used(run.server_pid, server_cpu)
    return run.row(
        len(latencies),
        errors,
        elapsed,
        (
            1000 * percentile(latencies or [0.0], 0.50),
            1000 * percentile(latencies or [0.0], 0.99),
            1000 * statistics.fmean(latencies or [0.0]),
        ),
        (server_s, client_cpu),
    )


def run_clients(
    address: str,
    model: Path,
    levels: list[int],
    seconds: float,
    server_pid: int,
    loadgens: list[str],
    batched: list[int],
) -> None:
    queries = queries_of(model, 4096)
    top = max(levels)
    runs = [(c, "PredictLinks", 1) for c in levels]
    runs += [(top, "PredictLinks", n) for n in batched if n > 1]
    runs += [(top, "GetEntity", 1)]
    results = []
    for loadgen in loadgens:
        for clients, method, per_call in runs:
            run = LoadRun(address, queries, clients, seconds, method, per_call, server_pid)
            row = load_native(run) if loadgen == "native" else asyncio.run(load(run))
            results.append({**row, "loadgen": loadgen})
    print(json.dumps(results), flush=True)


# ---- in-process baseline


def in_process(
    model: Path, batch_sizes: list[int], seconds: float, precision: str
) -> list[dict[str, Any]]:
    import torch

    from kgweave.artifact import load_artifact
    from kgweave.device import resolve_device
    from kgweave.predict import LinkPredictor, Query

    predictor = LinkPredictor(load_artifact(model, device=resolve_device("auto")), precision)
    queries = queries_of(model, 4096)
    hr_all = torch.tensor(
        [predictor.hr_of(Query(relation=r, head=h)) for h, r in queries],
        device=predictor.device,
    )
    out = []
    for batch in batch_sizes:
        predictor.top_ids(hr_all[:batch], 10, False)  # warm-up
        done, latencies = 0, []
        stop_at = time.perf_counter() + seconds
        began = time.perf_counter()
        i = 0
        while time.perf_counter() < stop_at:
            rows = hr_all[i : i + batch] if i + batch <= len(hr_all) else hr_all[:batch]
            started = time.perf_counter()
            predictor.top_ids(rows, 10, False)
            latencies.append(time.perf_counter() - started)
            done += len(rows)
            i = (i + batch) % len(hr_all)
        elapsed = time.perf_counter() - began
        out.append(
            {
                "batch": batch,
                "qps": done / elapsed,
                "p50_ms": 1000 * percentile(latencies, 0.5),
                "p99_ms": 1000 * percentile(latencies, 0.99),
            }
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="model artifact folder")
    parser.add_argument("--seconds", type=float, default=10.0, help="per level")
    parser.add_argument("--clients", default="1,8,64")
    parser.add_argument(
        "--frontends",
        default="python,native",
        help="gRPC front ends to load, one after the other in this run: python (grpc.aio), "
        "native (kgweave-frontend)",
    )
    parser.add_argument(
        "--loadgens",
        default="python,native",
        help="load generators: python (grpc.aio clients in one process), native "
        "(kgweave-loadgen, C++: far less CPU per call on a machine the server shares)",
    )
    parser.add_argument(
        "--per-call",
        default="16",
        help="queries per PredictLinks call for the extra runs at the highest client level "
        "(one query per call always runs at every level)",
    )
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--role", choices=["main", "server", "clients"], default="main")
    parser.add_argument("--address", default="")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--server-pid", type=int, default=0)
    parser.add_argument("--data-dir", type=Path, default=None)
    args = parser.parse_args()
    levels = [int(c) for c in args.clients.split(",")]
    if args.role == "server":
        run_server(args.model, args.port, args.data_dir, args.frontends)
        return
    if args.role == "clients":
        run_clients(
            args.address,
            args.model,
            levels,
            args.seconds,
            args.server_pid,
            args.loadgens.split(","),
            [int(n) for n in args.per_call.split(",")],
        )
        return

    from kgweave.allocator import reuse_freed_memory
    from kgweave.settings import get_settings

    reuse_freed_memory()  # the in-process baseline at its best (kgweave.allocator)
    precision = get_settings().score_precision  # the server resolves the same setting
    batches = sorted({1, *levels, 256})
    # the baseline before and after the served runs, the better of the two kept: the ratio
    # is not flattered when the machine's speed drifts during the run (it does, by ~30%)
    before = in_process(args.model, batches, args.seconds, precision)
    served: list[dict[str, Any]] = []
    ceiling: list[dict[str, Any]] = []
    for frontend in args.frontends.split(","):
        with server_process(args.model, frontend) as (address, pid):
            done = subprocess.run(
                [sys.executable, __file__, "--role", "clients", "--model", str(args.model),
                 "--address", address, "--clients", args.clients,
                 "--seconds", str(args.seconds), "--server-pid", str(pid),
                 "--loadgens", args.loadgens, "--per-call", args.per_call],
                capture_output=True, text=True, check=True,
            )  # fmt: skip
        measured = json.loads(done.stdout.strip().splitlines()[-1])
        for m in measured:
            m["frontend"] = frontend
        served += [m for m in measured if m["method"] == "PredictLinks"]
        ceiling += [m for m in measured if m["method"] == "GetEntity"]
    after = in_process(args.model, batches, args.seconds, precision)
    baseline = [max(b, a, key=lambda m: m["qps"]) for b, a in zip(before, after, strict=True)]
    best_in_process = max(b["qps"] for b in baseline)
    config = json.loads((args.model / "config.json").read_text())
    report = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "model": {**config["model"], "dataset": config["dataset"]["name"]},
        "score_precision": precision,
        "served": served,
        "transport_ceiling": ceiling,
        "in_process": baseline,
        "in_process_before_and_after": {"before": before, "after": after},
        "served_over_best_in_process": {
            f"{s['frontend']}/{s['loadgen']} {s['clients']}x{s['queries_per_call']}": s["qps"]
            / best_in_process
            for s in served
        },
    }
    header = f"{'clients':>7} {'qps':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6}"
    print(f"{header} {'cpu ms/call server':>18} {'client':>6}  front end/load generator, method")
    for s in served + ceiling:
        server_ms = s["server_cpu_ms_per_call"]
        print(
            f"{s['clients']:>7} {s['qps']:>9.0f} {s['p50_ms']:>8.2f} {s['p99_ms']:>8.2f} "
            f"{s['errors']:>6} {'-' if server_ms is None else f'{server_ms:.3f}':>18} "
            f"{s['client_cpu_ms_per_call']:>6.3f}  {s['frontend']}/{s['loadgen']}, {s['method']} "
            f"({s['queries_per_call']} per call)"
        )
    print(
        f"{'batch':>7} {'qps':>9} {'p50 ms':>8} {'p99 ms':>8} {'before':>9} {'after':>9}"
        "  (in-process scoring + top-k: the faster of before and after the served runs)"
    )
    for b, first, last in zip(baseline, before, after, strict=True):
        print(
            f"{b['batch']:>7} {b['qps']:>9.0f} {b['p50_ms']:>8.2f} {b['p99_ms']:>8.2f} "
            f"{first['qps']:>9.0f} {last['qps']:>9.0f}"
        )
    if args.out:
        args.out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
