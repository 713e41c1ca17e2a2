"""Link prediction from Cypher vs plain gRPC, in one run on this machine.

Usage::

    python benchmarks/cypher_predict.py [--calls 300] [--warmup 50] [--max-warmup 2000]
        [--rows 10000] [--k 10] [--frontend python|native]
        [--out benchmarks/results/cypher_predict.json]

Starts the whole Cypher path (tests/cypher_support.py): a real Neo4j 5.26 with APOC Core and
the kgweave plugin jar (launcher in procedures/neo4j/launcher), the demo graph imported into
it, and ``kgweave serve`` (``--frontend``'s gRPC front end) on that Neo4j with its bootstrap
model. Then, with the same model, the same heads and relation, k answers each:

- single: ``MATCH (p:Entity {id: $id}) CALL kgweave.predict.tails(p, $r, $k)`` from one Bolt
  session (official ``neo4j`` driver), ``--calls`` calls after ``--warmup``: p50, p99; beside it
  the same MATCH without the CALL (what Bolt and Cypher cost alone), one-query
  ``PredictLinks`` calls over gRPC (Python stub, one channel), and ``kgweave.status()`` beside
  gRPC ``Status`` (a call with no work: the plugin's own cost). Interleaved, one of each per
  round, so the machine's other load falls on all alike.
- batch: ``--rows`` heads (the demo's entities, cycled) matched and collected, then one
  ``kgweave.predict.tailsBatch`` (the plugin sends ``PredictLinks`` calls of 1,000 queries),
  answers counted in the database (``count(*)``) and, second, all returned to the client;
  beside it the same queries as ``PredictLinks`` calls of 1,000 over gRPC: rows/s and
  queries/s, the median of ``--repeats`` runs, interleaved.

Neo4j's JVM runs the full JIT (C2) by default, as a production Neo4j does (``--jit c1``: the
fast-start flags of ``kgweave neo4j``). After ``--warmup`` rounds the warm-up goes on, in
rounds of 50, until Neo4j's JIT compiler threads are quiet (under 2% of the wall time over a
round; at most ``--max-warmup`` rounds): C2 compiling Neo4j's Cypher code on the shared cores
otherwise inflates the first minutes of calls. ``--frontend`` picks kgweave serve's gRPC front
end (``python``: grpc.aio; ``native``: kgweave-frontend, which ``auto``, serve's default, picks
when it is built). Beside the wall times, the CPU time each process spends per call (Neo4j's
JVM, kgweave serve with its front end, this client), from ``/proc``, in blocks of ``--calls``
calls per path: these move far less with the machine's other load than the wall times.
Prints the numbers and ratios and writes JSON (``--out``). Targets (issue 17): p50 <= 3 ms per
single Cypher call; the batch at >= 50% of plain gRPC's throughput.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "server"), str(ROOT / "tests")]

import grpc  # noqa: E402

from cypher_support import cypher_stack, missing_tools  # noqa: E402
from kgweave.v1 import admin_pb2, admin_pb2_grpc, knowledge_pb2, knowledge_pb2_grpc  # noqa: E402

SINGLE = (
    "MATCH (p:Entity {id: $id}) CALL kgweave.predict.tails(p, $relation, $k) "
    "YIELD entity, score RETURN entity, score"
)
MATCH_ONLY = "MATCH (p:Entity {id: $id}) RETURN p.id AS entity"
STATUS = "CALL kgweave.status() YIELD ready RETURN ready"
BATCH = (
    "UNWIND $ids AS id MATCH (p:Entity {id: id}) WITH collect(p) AS heads "
    "CALL kgweave.predict.tailsBatch(heads, $relation, $k) YIELD index, entity, score "
)
BATCH_COUNTED = BATCH + "RETURN count(*) AS answers"
BATCH_RETURNED = BATCH + "RETURN index, entity, score"
CHUNK = 1000


def percentiles(samples_s: list[float]) -> dict[str, float]:
    ordered = sorted(samples_s)
    at = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1e3  # noqa: E731
    return {"p50_ms": at(0.50), "p99_ms": at(0.99), "mean_ms": statistics.fmean(ordered) * 1e3}


def interleaved(
    calls: dict[str, Callable[[int], Any]], count: int, warmup: int
) -> dict[str, list[float]]:
    """Each call ``count`` times after ``warmup``, in rounds of one call of each: load from
    other work on the machine falls on all of them alike."""
    samples: dict[str, list[float]] = {name: [] for name in calls}
    for i in range(warmup, warmup + count):
        for name, call in calls.items():
            start = time.perf_counter()
            call(i)
            samples[name].append(time.perf_counter() - start)
    return samples


CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
#: warm-up goes on while Neo4j's JIT compiler threads use more than this share of the wall time
JIT_QUIET = 0.02
WARMUP_ROUND = 50


def thread_cpu_s(pid: int, name_prefix: str = "") -> float:
    """CPU seconds of ``pid``'s threads whose name starts with ``name_prefix`` (Linux /proc)."""
    total = 0.0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            if not (task / "comm").read_text().startswith(name_prefix):
                continue
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the thread ended
        total += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return total


def tree_cpu_s(pid: int) -> float:
    """CPU seconds of ``pid`` and its children (kgweave serve and its native front end)."""
    total = 0.0
    children = Path(f"/proc/{pid}/task/{pid}/children")
    kids = children.read_text().split() if children.exists() else []
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    total += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return total + sum(tree_cpu_s(int(kid)) for kid in kids)


def warm_up(
    calls: dict[str, Callable[[int], Any]], jvm_pid: int, first: int, most: int
) -> dict[str, Any]:
    """``first`` rounds, then rounds of 50 until Neo4j's JIT compiler threads are quiet."""
    rounds = 0
    compiler_share = None
    while rounds < most:
        batch = first if rounds == 0 else WARMUP_ROUND
        jit0, wall0 = thread_cpu_s(jvm_pid, "C"), time.perf_counter()  # C1/C2 CompilerThread
        for i in range(rounds, rounds + batch):
            for call in calls.values():
                call(i)
        rounds += batch
        compiler_share = (thread_cpu_s(jvm_pid, "C") - jit0) / (time.perf_counter() - wall0)
        if compiler_share < JIT_QUIET:
            break
    return {"rounds": rounds, "jit_compiler_share_last_round": round(compiler_share or 0.0, 4)}


def cpu_per_call(
    calls: dict[str, Callable[[int], Any]], count: int, pids: dict[str, int]
) -> dict[str, dict[str, float]]:
    """CPU milliseconds per call of each process, each path in a block of ``count`` calls."""
    out = {}
    for name, call in calls.items():
        before = {who: tree_cpu_s(pid) for who, pid in pids.items()}
        client0 = time.process_time()
        for i in range(count):
            call(i)
        row = {
            f"{who}_ms": (tree_cpu_s(pid) - before[who]) * 1e3 / count for who, pid in pids.items()
        }
        row["client_ms"] = (time.process_time() - client0) * 1e3 / count
        out[name] = {key: round(value, 3) for key, value in row.items()}
    return out


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def run(args: argparse.Namespace) -> dict[str, Any]:
    from neo4j import GraphDatabase

    with (
        tempfile.TemporaryDirectory(prefix="kgweave-cypherbench-") as folder,
        cypher_stack(Path(folder), args.bootstrap_epochs, args.jit == "c2", args.frontend) as stack,
        GraphDatabase.driver(stack.bolt_uri, auth=stack.auth) as driver,
        grpc.insecure_channel(stack.grpc_address) as channel,
    ):
        stub = knowledge_pb2_grpc.KnowledgeServiceStub(channel)
        admin = admin_pb2_grpc.AdminServiceStub(channel)
        load_start = loadavg()
        records, _, _ = driver.execute_query("MATCH (e:Entity) RETURN e.id AS id ORDER BY id")
        entities = [r["id"] for r in records]
        relation, k = args.relation, args.k
        with driver.session(database="neo4j") as session:

            def cypher_single(i: int) -> None:
                params = {"id": entities[i % len(entities)], "relation": relation, "k": k}
                assert len(session.run(SINGLE, params).data()) == k

            def cypher_match(i: int) -> None:
                session.run(MATCH_ONLY, {"id": entities[i % len(entities)]}).consume()

            def grpc_single(i: int) -> None:
                query = knowledge_pb2.LinkQuery(head=entities[i % len(entities)], relation=relation)
                request = knowledge_pb2.PredictLinksRequest(queries=[query], k=k)
                assert len(stub.PredictLinks(request, timeout=60).results[0].candidates) == k

            def cypher_status(_: int) -> None:
                assert session.run(STATUS).single(strict=True)["ready"]

            def grpc_status(_: int) -> None:
                assert admin.Status(admin_pb2.StatusRequest(), timeout=60).active_model.version

            paths = {
                "cypher_predict_tails": cypher_single,
                "cypher_match_only": cypher_match,
                "grpc_predict_links": grpc_single,
                "cypher_status": cypher_status,
                "grpc_status": grpc_status,
            }
            jvm = stack.neo4j.status()
            assert jvm is not None, "Neo4j is not running"
            warmed = warm_up(paths, jvm.pid, args.warmup, args.max_warmup)
            samples = interleaved(paths, args.calls, 0)
            single = {name: percentiles(times) for name, times in samples.items()}
            cpu = cpu_per_call(paths, args.calls, {"neo4j": jvm.pid, "serve": stack.serve.pid})

            ids = [entities[i % len(entities)] for i in range(args.rows)]
            requests = [
                knowledge_pb2.PredictLinksRequest(
                    queries=[knowledge_pb2.LinkQuery(head=h, relation=relation) for h in chunk],
                    k=k,
                )
                for chunk in (ids[i : i + CHUNK] for i in range(0, len(ids), CHUNK))
            ]

            def batch_counted() -> None:
                params = {"ids": ids, "relation": relation, "k": k}
                (row,) = session.run(BATCH_COUNTED, params).data()
                assert row["answers"] == args.rows * k, row

            def batch_returned() -> None:
                rows = session.run(BATCH_RETURNED, {"ids": ids, "relation": relation, "k": k})
                assert len(rows.data()) == args.rows * k

            def grpc_batch() -> None:
                answers = sum(
                    len(r.candidates)
                    for request in requests
                    for r in stub.PredictLinks(request, timeout=600).results
                )
                assert answers == args.rows * k

            runs: dict[str, list[float]] = {"cypher_counted": [], "cypher_returned": [], "grpc": []}
            batch_counted()  # warm-up of both paths
            grpc_batch()
            for _ in range(args.repeats):
                for name, call in (
                    ("cypher_counted", batch_counted),
                    ("grpc", grpc_batch),
                    ("cypher_returned", batch_returned),
                ):
                    start = time.perf_counter()
                    call()
                    runs[name].append(args.rows / (time.perf_counter() - start))
        batch = {name: round(statistics.median(rates)) for name, rates in runs.items()}
        graph = {"graph_uri": stack.bolt_uri, "entities": len(entities), "relation": relation}
    p50 = single["cypher_predict_tails"]["p50_ms"]
    return {
        "benchmark": "cypher_predict",
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared with other work)",
        "loadavg_start": load_start,
        "loadavg_end": loadavg(),
        "setup": {
            **graph,
            "graph": "demo (kgweave import demo into Neo4j 5.26 Community + APOC Core)",
            "model": f"serve's bootstrap model ({args.bootstrap_epochs} epochs)",
            "grpc_front_end": "python (grpc.aio)"
            if args.frontend == "python"
            else "native (kgweave-frontend)",
            "neo4j_jvm": "full JIT (C2), default GC, -Xmx1g"
            if args.jit == "c2"
            else "kgweave neo4j's flags: -XX:TieredStopAtLevel=1 -XX:+UseSerialGC -Xmx1g",
            "k": k,
            "single_calls": args.calls,
            "warmup": warmed,
            "batch_rows": args.rows,
            "repeats": args.repeats,
        },
        "single": single,
        "cpu_ms_per_call": cpu,
        "batch_rows_per_s": batch,
        "ratios": {
            "single_p50_cypher_over_grpc": round(p50 / single["grpc_predict_links"]["p50_ms"], 2),
            "batch_cypher_counted_over_grpc": round(batch["cypher_counted"] / batch["grpc"], 3),
            "batch_cypher_returned_over_grpc": round(batch["cypher_returned"] / batch["grpc"], 3),
        },
        "targets": {
            "single_p50_le_3ms": p50 <= 3.0,
            "batch_ge_half_of_grpc": batch["cypher_counted"] >= 0.5 * batch["grpc"],
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--max-warmup", type=int, default=2000)
    parser.add_argument("--frontend", choices=("python", "native"), default="python")
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--relation", default="located_in")
    parser.add_argument("--bootstrap-epochs", type=int, default=5)
    parser.add_argument(
        "--jit",
        choices=("c2", "c1"),
        default="c2",
        help="Neo4j's JVM: the full JIT as in production (c2), or kgweave neo4j's fast-start "
        "flags (c1: -XX:TieredStopAtLevel=1 -XX:+UseSerialGC)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/cypher_predict.json")
    args = parser.parse_args(argv)
    why = missing_tools()
    if why:
        print(f"cypher_predict: {why}", file=sys.stderr)
        return 2
    result = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    single, batch, ratios = result["single"], result["batch_rows_per_s"], result["ratios"]
    for name, row in single.items():
        print(f"single {name:22s} p50 {row['p50_ms']:7.2f} ms  p99 {row['p99_ms']:7.2f} ms")
    for name, row in result["cpu_ms_per_call"].items():
        print(f"cpu    {name:22s} " + "  ".join(f"{k} {v:6.3f}" for k, v in row.items()))
    for name, rate in batch.items():
        print(f"batch  {name:22s} {rate:9,d} rows/s")
    print(f"ratios {ratios}")
    print(f"targets {result['targets']} -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
