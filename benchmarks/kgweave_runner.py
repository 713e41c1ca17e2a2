#!/usr/bin/env python3
"""kgweave side of the side-by-side benchmark: same arguments and JSON as pykeen_runner.py.

Trains with kgweave's 1-N trainer (KvsAll with reciprocal relations, soft-target
cross-entropy), no validation during training (as on the PyKEEN side), then evaluates the
test split with filtered, both-sides, realistic ranks. For a like-for-like record, test triples
whose entities never occur in training are dropped (PyKEEN drops them) and ``--eval-sample N``
draws ``torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:N]`` over the kept
test triples, exactly as pykeen_runner.py does.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

import torch

from kgweave import __version__
from kgweave.allocator import reuse_freed_memory
from kgweave.data import load_dataset
from kgweave.evaluation.ranking import build_filter, evaluate
from kgweave.training import TrainConfig, train


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", type=pathlib.Path, required=True, help="dataset folder")
    p.add_argument("--model", default="complex")
    p.add_argument("--dim", type=int, default=200)
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--optimizer", default="adagrad")
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--regularizer", default="n3")
    p.add_argument("--reg-weight", type=float, default=0.01)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--regime", default="kvsall")
    p.add_argument("--precision", default="auto", help="auto, fp32 or bf16")
    p.add_argument("--time-budget", type=float, default=None, help="training seconds")
    p.add_argument("--eval-sample", type=int, default=None, help="test triples to evaluate")
    p.add_argument("--json-out", type=pathlib.Path, required=True)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    reuse_freed_memory()  # as the `kgweave` CLI does in every command
    dataset = load_dataset(args.dataset)
    config = TrainConfig(
        model=args.model,
        dim=args.dim,
        regime=args.regime,
        epochs=args.epochs,
        batch_size=args.batch_size,
        optimizer=args.optimizer,
        lr=args.lr,
        regularizer=args.regularizer,
        reg_weight=args.reg_weight,
        seed=args.seed,
        eval_every=10**9,  # no validation during training, as on the PyKEEN side
        patience=0,
        valid_sample=1,  # the single end-of-training validation is kept negligible
        precision=args.precision,
        time_budget_s=args.time_budget,
    )
    result = train(dataset, config, device="cpu", progress=sys.stderr.isatty())

    test = dataset.split("test")
    seen = torch.zeros(dataset.num_entities, dtype=torch.bool)
    seen[dataset.train[:, 0]] = True
    seen[dataset.train[:, 2]] = True
    kept = test[seen[test[:, 0]] & seen[test[:, 2]]]
    if args.eval_sample is not None and args.eval_sample < len(kept):
        generator = torch.Generator().manual_seed(args.seed)
        kept = kept[torch.randperm(len(kept), generator=generator)[: args.eval_sample]]
    known = build_filter(dataset.all_triples(), dataset.num_entities, dataset.num_relations)
    started = time.perf_counter()
    metrics = evaluate(result.model, kept, known).metrics
    eval_seconds = time.perf_counter() - started

    record = {
        "tool": "kgweave",
        "version": __version__,
        "dataset": args.dataset.name,
        "model": args.model,
        "dim": args.dim,
        "regime": args.regime,
        "epochs_completed": result.epochs_completed,
        "batch_size": args.batch_size,
        "optimizer": args.optimizer,
        "lr": args.lr,
        "bf16": result.extra.get("bf16", False),
        "train_seconds": round(result.train_seconds, 3),
        "eval_seconds": round(eval_seconds, 3),
        "mrr": metrics["mrr"],
        "hits@1": metrics["hits@1"],
        "hits@3": metrics["hits@3"],
        "hits@10": metrics["hits@10"],
        "test_triples_evaluated": len(kept),
        "test_triples_dropped": len(test) - int((seen[test[:, 0]] & seen[test[:, 2]]).sum()),
        "stopped_because": result.stopped_because,
        "threads": torch.get_num_threads(),
    }
    text = json.dumps(record)
    print(text)
    args.json_out.parent.mkdir(parents=True, exist_ok=True)
    args.json_out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
