#!/usr/bin/env python3
"""Time the full filtered evaluation of FB15k-237's test split (40,932 ranked queries).

Ranks every test triple on both sides against all 14,541 entities with filtering and realistic
ties, as ``kgweave eval`` does. The model is a freshly initialised ComplEx (evaluation cost does
not depend on the weights), or a trained one with ``--model-dir``.

    python benchmarks/eval_speed.py --datasets-dir ../shared/datasets [--dim 200]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time

import torch

from kgweave.allocator import reuse_freed_memory
from kgweave.artifact import load_artifact
from kgweave.data import load_dataset
from kgweave.evaluation.ranking import build_filter, evaluate
from kgweave.models import model_class


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets-dir", type=pathlib.Path, required=True)
    p.add_argument("--dataset", default="fb15k-237")
    p.add_argument("--dim", type=int, default=200)
    p.add_argument("--model-dir", type=pathlib.Path, default=None)
    p.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="queries per scoring pass (default: kgweave's, sized to stay in cache)",
    )
    args = p.parse_args()
    reuse_freed_memory()  # as the `kgweave` CLI does in every command
    ds = load_dataset(args.datasets_dir / args.dataset)
    if args.model_dir is not None:
        model = load_artifact(args.model_dir).model
    else:
        torch.manual_seed(0)
        model = model_class("complex")(ds.num_entities, 2 * ds.num_relations, args.dim)
    started = time.perf_counter()
    known = build_filter(ds.all_triples(), ds.num_entities, ds.num_relations)
    index_seconds = time.perf_counter() - started
    started = time.perf_counter()
    result = evaluate(
        model,
        ds.split("test"),
        known,
        relation_labels=ds.relations.labels,
        batch_size=args.batch_size,
    )
    seconds = time.perf_counter() - started
    print(
        json.dumps(
            {
                "dataset": args.dataset,
                "queries": int(result.metrics["count"]),
                "entities": ds.num_entities,
                "dim": model.dim,
                "filter_index_seconds": round(index_seconds, 2),
                "eval_seconds": round(seconds, 2),
                "queries_per_second": round(result.metrics["count"] / seconds),
                "threads": torch.get_num_threads(),
                "batch_size": args.batch_size or "default",
                "mrr": result.metrics["mrr"],
            }
        )
    )


if __name__ == "__main__":
    main()
