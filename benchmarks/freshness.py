"""Freshness: how soon a write through kgweave is served, and what ingestion costs queries.

Usage::

    python benchmarks/freshness.py [--model MODEL_DIR] [--train-budget-s 120] [--probes 30]
        [--seconds 20] [--out benchmarks/results/freshness.json] [--plot docs/img/freshness.png]

On FB15k-237 imported into a fresh embedded FalkorDB, with a trained model served (``--model``,
or one trained here for ``--train-budget-s`` seconds) by a real gRPC server (grpc.aio) on the
data plane of ``kgweave serve`` (change applier on), measures through the gRPC API:

- ``known``: a test-split fact written with WriteFacts (graph + log, acknowledged without
  waiting) until GetEntity lists it (which is when filter_known and ``known`` see it too);
- ``deleted``: a training fact removed, until GetEntity no longer lists it;
- ``new_entity``: a new entity with a name, a description and two facts, until PredictLinks
  answers for it;
- PredictLinks p99 (top-10, one query per call, one closed-loop client) idle, then while a
  writer adds one fact every 50 ms.

Each probe polls in a tight loop, so a latency includes up to one GetEntity round trip.
Prints and writes one JSON object; draws the latencies as a plot.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summary(values: list[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "p50_s": round(statistics.median(values), 4),
        "p95_s": round(percentile(values, 0.95), 4),
        "max_s": round(max(values), 4),
    }


def until(condition: Callable[[], bool], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition never held")
        time.sleep(0.002)  # the server shares this process: leave it the interpreter


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=None, help="a trained FB15k-237 artifact")
    parser.add_argument("--train-budget-s", type=float, default=120.0)
    parser.add_argument("--probes", type=int, default=30)
    parser.add_argument("--seconds", type=float, default=20.0, help="per latency phase")
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument(
        "--text-vectors",
        type=Path,
        default=None,
        help="a text-vectors folder of an earlier run (the entity texts encoded once)",
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/freshness.json"))
    parser.add_argument("--plot", type=Path, default=Path("docs/img/freshness.png"))
    args = parser.parse_args()

    import os
    import shutil

    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="kgweave-freshness-"))
    os.environ["KGWEAVE_DATA_DIR"] = str(data_dir)
    os.environ.setdefault("KGWEAVE_DEVICE", "cpu")
    from kgweave.api.server import start_grpc
    from kgweave.bootstrap import prepare_plane
    from kgweave.engine import open_dataset
    from kgweave.graph.connect import open_store
    from kgweave.graph.embedded import EmbeddedFalkorDB
    from kgweave.graph.sync import import_dataset
    from kgweave.serving.registry import ModelRegistry
    from kgweave.serving.training_run import run_training
    from kgweave.settings import get_settings
    from kgweave.v1 import admin_pb2, admin_pb2_grpc, knowledge_pb2, knowledge_pb2_grpc

    settings = get_settings()
    if args.text_vectors is not None and not (data_dir / "text-vectors").exists():
        shutil.copytree(args.text_vectors, data_dir / "text-vectors")
    record: dict[str, Any] = {"date": time.strftime("%Y-%m-%d"), "dataset": "fb15k-237"}
    dataset = open_dataset("fb15k-237", settings)
    began = time.monotonic()
    store = open_store(settings.graph_uri, settings)
    if store.counts()["triples"] == 0:
        import_dataset(store, dataset, progress=False)
    record["import_s"] = round(time.monotonic() - began, 1)
    registry = ModelRegistry(settings.models_dir)
    if not registry.versions():
        model = args.model
        if model is None:
            model = data_dir / "trained"
            began = time.monotonic()
            config = {"epochs": 1000, "time_budget_s": args.train_budget_s, "dim": 200}
            run_training({"config": config, "dataset": "fb15k-237"}, model, settings,
                         lambda _e: None, progress=False)  # fmt: skip
            record["train_s"] = round(time.monotonic() - began, 1)
        staged = data_dir / "staged"
        shutil.copytree(model, staged)
        registry.register(staged)
    plane = prepare_plane(settings, progress=False)
    applier = plane.changes.applier
    assert applier is not None
    served = plane.versions.active()
    record["model"] = {
        "version": served.version,
        "test_mrr": served.artifact.metrics.get("test", {}).get("mrr"),
        "entities": len(served.artifact.entities),
        "known_facts": len(served.artifact.known),
    }
    began = time.monotonic()
    until(lambda: applier._projection is not None or bool(applier._text_failed), 1800)
    record["cold_start_projection_s"] = round(time.monotonic() - began, 1)

    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()
    running = asyncio.run_coroutine_threadsafe(start_grpc(plane, "127.0.0.1", 0), loop).result(60)
    channel = grpc.insecure_channel(f"127.0.0.1:{running.port}")
    admin = admin_pb2_grpc.AdminServiceStub(channel)
    knowledge = knowledge_pb2_grpc.KnowledgeServiceStub(channel)

    def write(**fields: Any) -> None:
        admin.WriteFacts(admin_pb2.WriteFactsRequest(wait_s=-1, **fields), timeout=60)

    def facts(entity: str) -> set[tuple[str, str, str]]:
        reply = knowledge.GetEntity(
            knowledge_pb2.GetEntityRequest(entity=entity, max_facts=1000), timeout=30
        )
        return {(f.head, f.relation, f.tail) for f in reply.facts}

    def fact(h: str, r: str, t: str) -> admin_pb2.Fact:
        return admin_pb2.Fact(head=h, relation=r, tail=t)

    rng = random.Random(0)
    labels_e, labels_r = dataset.entities.labels, dataset.relations.labels
    test = [(labels_e[h], labels_r[r], labels_e[t]) for h, r, t in dataset.split("test").tolist()]
    train = [(labels_e[h], labels_r[r], labels_e[t]) for h, r, t in dataset.train.tolist()]
    known_s, deleted_s, entity_s = [], [], []
    for h, r, t in rng.sample(test, args.probes):
        write(added=[fact(h, r, t)])
        acked = time.monotonic()
        until(lambda h=h, r=r, t=t: (h, r, t) in facts(h))  # type: ignore[misc]
        known_s.append(time.monotonic() - acked)
    for h, r, t in rng.sample(train, args.probes):
        write(removed=[fact(h, r, t)])
        acked = time.monotonic()
        until(lambda h=h, r=r, t=t: (h, r, t) not in facts(h))  # type: ignore[misc]
        deleted_s.append(time.monotonic() - acked)
    for i in range(args.probes):
        a, b = rng.sample(labels_e, 2)
        entity = admin_pb2.EntityWrite(
            id=f"/m/fresh_{i}", name=f"Fresh Person {i}", description="an American film actor"
        )
        write(entities=[entity], added=[fact(f"/m/fresh_{i}", r, a) for r in labels_r[:1]]
              + [fact(b, labels_r[1], f"/m/fresh_{i}")])  # fmt: skip
        acked = time.monotonic()

        def answers(i: int = i) -> bool:
            try:
                reply = knowledge.PredictLinks(
                    knowledge_pb2.PredictLinksRequest(
                        queries=[
                            knowledge_pb2.LinkQuery(head=f"/m/fresh_{i}", relation=labels_r[0])
                        ],
                        k=10,
                    ),
                    timeout=30,
                )
            except grpc.RpcError:
                return False
            return len(reply.results[0].candidates) == 10

        until(answers)
        entity_s.append(time.monotonic() - acked)
    record["known"] = summary(known_s)
    record["deleted"] = summary(deleted_s)
    record["new_entity"] = summary(entity_s)

    # PredictLinks p99, idle and under continuous ingestion
    pairs = [
        (labels_e[h], labels_r[r]) for h, r, _ in rng.sample(dataset.split("test").tolist(), 2000)
    ]

    def load(seconds: float) -> list[float]:
        latencies = []
        deadline = time.monotonic() + seconds
        j = 0
        while time.monotonic() < deadline:
            h, r = pairs[j % len(pairs)]
            j += 1
            began = time.monotonic()
            knowledge.PredictLinks(
                knowledge_pb2.PredictLinksRequest(
                    queries=[knowledge_pb2.LinkQuery(head=h, relation=r)], k=10
                ),
                timeout=30,
            )
            latencies.append(time.monotonic() - began)
        return latencies

    idle = load(args.seconds)
    stop = threading.Event()
    written = [0]

    def ingest() -> None:
        stream = iter(rng.sample(test, len(test)))
        while not stop.is_set():
            h, r, t = next(stream)
            write(added=[fact(h, r, t)])
            written[0] += 1
            stop.wait(0.05)

    writer = threading.Thread(target=ingest)
    batches_before = applier.state.batches
    writer.start()
    busy = load(args.seconds)
    stop.set()
    writer.join()
    record["predict_links_idle"] = {
        "n": len(idle),
        "p50_ms": round(1000 * statistics.median(idle), 2),
        "p99_ms": round(1000 * percentile(idle, 0.99), 2),
    }
    record["predict_links_ingesting"] = {
        "n": len(busy),
        "p50_ms": round(1000 * statistics.median(busy), 2),
        "p99_ms": round(1000 * percentile(busy, 0.99), 2),
        "facts_written": written[0],
        "batches_applied": applier.state.batches - batches_before,
    }
    record["p99_ratio"] = round(
        record["predict_links_ingesting"]["p99_ms"] / record["predict_links_idle"]["p99_ms"], 2
    )
    record["machine"] = f"{os.cpu_count()} CPUs (shared with other jobs), device cpu"
    print(json.dumps(record, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    plot(args.plot, known_s, deleted_s, entity_s, idle, busy)

    channel.close()
    asyncio.run_coroutine_threadsafe(running.stop(1.0), loop).result(60)
    plane.close()
    if plane.owns_embedded_graph or not settings.graph_uri:
        EmbeddedFalkorDB(settings.graph_dir).stop()


def plot(
    path: Path,
    known: list[float],
    deleted: list[float],
    entity: list[float],
    idle: list[float],
    busy: list[float],
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.boxplot([known, deleted, entity], tick_labels=["fact known", "deletion", "new entity"])
    left.axhline(1.0, color="grey", linestyle=":", label="1 s target")
    left.axhline(2.0, color="grey", linestyle="--", label="2 s target (new entity)")
    left.set_ylabel("seconds after the write is acknowledged")
    left.set_title("FB15k-237: write to served")
    left.legend(fontsize=8)
    for values, name in ((idle, "idle"), (busy, "ingesting 20 facts/s")):
        ordered = sorted(1000 * v for v in values)
        right.plot([100 * i / len(ordered) for i in range(len(ordered))], ordered, label=name)
    right.set_yscale("log")
    right.set_xlim(50, 100)
    right.set_xlabel("percentile")
    right.set_ylabel("PredictLinks latency (ms)")
    right.set_title("PredictLinks, one client")
    right.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
