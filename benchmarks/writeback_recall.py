#!/usr/bin/env python3
"""Recall of the relation-aware vector search in the graph against exact link prediction.

Trains (or loads) a model of a dataset, imports the dataset into an embedded FalkorDB, writes
the model back (entity and search vectors, relation nodes, the kgweave.* functions), then asks
both sides of sampled test triples two ways and compares with ``PredictLinks``' exact top-10
(unfiltered, the same model):

- ``index k=10``: ``db.idx.vector.queryNodes(..., 10, vecf32(kgweave.tailQuery(h, r)))``;
- ``index k=30, rescored``: 30 neighbours rescored with ``kgweave.score``, best 10 kept.

    python benchmarks/writeback_recall.py --datasets-dir ../shared/datasets \\
        [--dataset fb15k-237] [--model complex] [--time-budget 120] [--queries 500] \\
        [--model-dir DIR] [--out benchmarks/results/writeback_recall.json]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import tempfile
import time

import torch
from tqdm.auto import tqdm

from kgweave.artifact import ModelArtifact, load_artifact
from kgweave.data import load_dataset
from kgweave.engine import ArtifactOutput, open_dataset, train_model
from kgweave.graph import EmbeddedFalkorDB
from kgweave.graph.falkordb_store import FalkorDBStore
from kgweave.graph.sync import import_dataset
from kgweave.predict import LinkPredictor, Query
from kgweave.serving.writeback import write_back
from kgweave.settings import Settings
from kgweave.training import TrainConfig

SEARCH = (
    "MATCH (a:Entity {{id: $anchor}}), (r:KGWEAVE_Relation {{id: $r}}) "
    "CALL db.idx.vector.queryNodes('Entity', 'kgweave_search', $k, "
    "vecf32(kgweave.{function}(a, r))) YIELD node "
    "RETURN node.id, kgweave.{score}(a, r, node) AS s ORDER BY s DESC LIMIT 10"
)


def trained(args: argparse.Namespace, work: pathlib.Path) -> ModelArtifact:
    if args.model_dir is not None and (args.model_dir / "config.json").is_file():
        return load_artifact(args.model_dir)  # trained before: --model-dir is reused
    settings = Settings(data_dir=work / "data", datasets_dir=args.datasets_dir, device="cpu")
    data = open_dataset(args.dataset, settings)
    config = TrainConfig(
        model=args.model, dim=args.dim, time_budget_s=args.time_budget, eval_every=1000
    )
    output = ArtifactOutput(args.model_dir or work / "model", evaluate_test=False)
    _, _, path = train_model(data, config, output, settings)
    return load_artifact(path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets-dir", type=pathlib.Path, required=True)
    p.add_argument("--dataset", default="fb15k-237")
    p.add_argument("--model", default="complex")
    p.add_argument("--dim", type=int, default=200)
    p.add_argument("--time-budget", type=float, default=120.0)
    p.add_argument(
        "--model-dir",
        type=pathlib.Path,
        default=None,
        help="a trained model folder; if it holds none yet, the model trained here is kept there",
    )
    p.add_argument("--queries", type=int, default=500, help="test triples (both sides each)")
    p.add_argument("--out", type=pathlib.Path, default=None)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = pathlib.Path(tmp)
        artifact = trained(args, work)
        server = EmbeddedFalkorDB(work / "falkordb")
        info = server.start()
        try:
            store = FalkorDBStore(info.host, info.port, graph="recall", password=info.password())
            store.ensure_schema()
            data = load_dataset(args.datasets_dir / args.dataset)
            import_dataset(store, data, progress=False)
            started = time.perf_counter()
            write_back(store, artifact, "bench", max_links=0, progress=False)
            writeback_s = time.perf_counter() - started
            report = measure(store, artifact, data.split("test"), args.queries)
        finally:
            server.stop()
    report |= {
        "dataset": args.dataset,
        "model": artifact.model.name,
        "dim": artifact.model.dim,
        "entities": len(artifact.entities),
        "writeback_seconds": round(writeback_s, 1),
        "date": time.strftime("%Y-%m-%d"),
    }
    print(json.dumps(report, indent=1))
    if args.out is not None:
        args.out.write_text(json.dumps(report, indent=1) + "\n")


def measure(
    store: FalkorDBStore, artifact: ModelArtifact, test: torch.Tensor, queries: int
) -> dict[str, object]:
    generator = torch.Generator().manual_seed(0)
    rows = test[torch.randperm(len(test), generator=generator)[:queries]].tolist()
    predictor = LinkPredictor(artifact)
    e, r_labels = artifact.entities.labels, artifact.relations.labels
    hits = {10: 0, 30: 0}
    total = 0
    times: dict[int, list[float]] = {10: [], 30: []}
    for h, r, t in tqdm(rows, desc="queries", unit="triple"):
        for side, anchor in (("tail", e[h]), ("head", e[t])):
            query = (
                Query(r_labels[r], head=anchor)
                if side == "tail"
                else Query(r_labels[r], tail=anchor)
            )
            (exact,) = predictor.predict([query], k=10)
            want = {a.entity for a in exact}
            cypher = SEARCH.format(
                function="tailQuery" if side == "tail" else "headQuery",
                score="score" if side == "tail" else "headScore",
            )
            for k in (10, 30):
                started = time.perf_counter()
                got = store._query(cypher, {"anchor": anchor, "r": r_labels[r], "k": k})
                times[k].append(time.perf_counter() - started)
                hits[k] += len({row[0] for row in got} & want)
            total += len(want)
    return {
        "queries": 2 * len(rows),
        "recall_at_10_index_k10": round(hits[10] / total, 4),
        "recall_at_10_index_k30_rescored": round(hits[30] / total, 4),
        "p50_ms_k10": round(1000 * statistics.median(times[10]), 2),
        "p50_ms_k30": round(1000 * statistics.median(times[30]), 2),
    }


if __name__ == "__main__":
    main()
