"""What one change batch costs the serving process: deriving the served model from a version.

The change applier (server/kgweave/changes/apply.py) derives a new immutable served model per
batch of graph changes. This times each step of that on a trained model, best of
``--repeats``, for three batches: one added fact, 1,000 added facts, and 1,000 facts that bring
a new entity (its row appended to the model); and a 64-query PredictLinks pass (top-10,
filter_known) on the derived model against the same pass on the version itself::

    python benchmarks/change_batch.py --model MODEL_DIR [--repeats 5] [--threads 2]
        [--out benchmarks/results/change_batch.json]

Steps: ``derive`` (the artifact with the overlay applied: id maps, the model with new rows,
the known facts), ``served`` (the served model: predictor, known-fact indexes, facts by
entity), ``warm_up`` (a first request of each kind and the transports' per-version data).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import random
import time
from pathlib import Path
from typing import Any

import torch

from kgweave.api import wire  # noqa: F401  (registers the transports' warm-ups)
from kgweave.changes.derive import BaseFacts, derive_artifact
from kgweave.changes.overlay import Overlay
from kgweave.serving.served import ServedModel


def overlay_of(base: ServedModel, facts: int, new_entity: bool, seed: int = 0) -> Overlay:
    """``facts`` random facts among the version's entities (and one with a new entity)."""
    art = base.artifact
    entities, relations = art.entities.labels, art.relations.labels
    rng = random.Random(seed)
    overlay = Overlay(base_version=base.version)
    for _ in range(facts):
        overlay.added.add((rng.choice(entities), rng.choice(relations), rng.choice(entities)))
    if new_entity:
        overlay.added.add(("benchmark:new", relations[0], entities[0]))
        overlay.new_entities = ["benchmark:new"]
        overlay.origins = {"benchmark:new": "neighbours"}
        overlay.entity_rows = art.model.entity.weight.detach()[:1].clone().cpu()
    return overlay


def change_of(base: ServedModel, derived: Any) -> Any:
    """The served model's known-fact change (also for kgweave before 2026-12-05's
    ``known_delta``, whose derived models merged their base's indexes: an A/B of the two in
    one run, with ``PYTHONPATH`` at the older tree's ``server/``)."""
    try:
        delta = importlib.import_module("kgweave.serving.known_delta")
    except ImportError:
        merge = importlib.import_module("kgweave.serving.known_merge")
        by_entity = base.by_entity  # type: ignore[attr-defined]
        return merge.KnownChange(base.predictor, by_entity, derived.keep, derived.added)
    return delta.KnownChange(base, derived.facts.added, derived.gone)


def time_batch(base: ServedModel, overlay: Overlay, repeats: int) -> dict[str, float]:
    """Best-of-``repeats`` milliseconds of each step."""
    facts = BaseFacts(base.artifact)
    n, r2 = len(base.artifact.entities), 2 * len(base.artifact.relations)
    generator = torch.Generator().manual_seed(0)
    hr = torch.stack(
        (
            torch.randint(n, (64,), generator=generator),
            torch.randint(r2, (64,), generator=generator),
        ),
        dim=1,
    )
    best: dict[str, float] = {}
    for _ in range(repeats):
        took: dict[str, float] = {}
        began = time.perf_counter()
        derived = derive_artifact(base.artifact, overlay, facts)
        took["derive"] = time.perf_counter() - began
        began = time.perf_counter()
        served = ServedModel(
            f"{base.version}@1",
            derived.artifact,
            base.precision,
            base.version,
            prepack=base.prepack,
            excluded=derived.excluded,
            change=change_of(base, derived),
        )
        took["served"] = time.perf_counter() - began
        began = time.perf_counter()
        served.warm_up(base)
        took["warm_up"] = time.perf_counter() - began
        for name, model in (("query_64_derived", served), ("query_64_version", base)):
            began = time.perf_counter()
            model.predictor.top_ids(hr, 10, filter_known=True)
            took[name] = time.perf_counter() - began
        for key, value in took.items():
            best[key] = min(best.get(key, float("inf")), value)
    return {key: round(value * 1000, 2) for key, value in best.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="a trained artifact folder")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    base = ServedModel.load("v0001", args.model, "cpu", language=False)
    record: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d"),
        "model": str(args.model),
        "entities": len(base.artifact.entities),
        "known_facts": len(base.artifact.known),
        "threads": args.threads,
        "machine": f"{os.cpu_count()} CPUs, torch {torch.__version__}",
        "loadavg": list(os.getloadavg()),
        "batches_ms": {},
    }
    for name, facts, new_entity in (
        ("1 fact", 1, False),
        ("1,000 facts", 1000, False),
        ("1,000 facts + a new entity", 1000, True),
    ):
        record["batches_ms"][name] = time_batch(
            base, overlay_of(base, facts, new_entity), args.repeats
        )
        print(name, record["batches_ms"][name], flush=True)
    text = json.dumps(record, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
