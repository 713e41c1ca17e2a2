"""WN18RR text-enhanced KGE under a time budget, with the WN18RR recipe of docs/benchmarks.md.

Usage::

    python benchmarks/wn18rr_text_long.py SECONDS [TEXT_CACHE]

TEXT_CACHE: the lemma + definition MiniLM vectors that ``language_eval.py --dataset wn18rr
--text full`` caches (default ``/tmp/kgweave-language-eval/text-wn18rr-full.pt``). The dataset
comes from ``KGWEAVE_DATASETS_DIR``. Trains with ``kgweave.language.joint.pipeline``'s
``train_text_enhanced_kge`` (the KGE half of ``kgweave train --joint``), then evaluates the
baked model on the full test split; writes ``wn18rr_text_enhanced.json`` beside this run.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import torch

from kgweave.data import load_dataset
from kgweave.engine import evaluate_on
from kgweave.language.joint.config import JointConfig
from kgweave.language.joint.text_side import bake, train_text_enhanced_kge
from kgweave.training import TrainConfig
from kgweave.tuning.recipes import recipe_for


def main() -> None:
    budget = float(sys.argv[1])
    cache = Path(
        sys.argv[2] if len(sys.argv) > 2 else "/tmp/kgweave-language-eval/text-wn18rr-full.pt"
    )
    dataset = load_dataset(
        Path(os.environ.get("KGWEAVE_DATASETS_DIR", "../shared/datasets")) / "wn18rr"
    )
    saved = torch.load(cache, weights_only=True)
    index = {label: i for i, label in enumerate(saved["labels"])}
    order = torch.tensor([index[e] for e in dataset.entities.labels])
    text = saved["vectors"][order].float()  # (N, 384) in the dataset's id order
    # the recipe `kgweave train` picks for WN18RR ("sparse-large": its hand recipe)
    recipe = recipe_for(dataset.train, dataset.num_entities, dataset.num_relations)
    kge = TrainConfig(**recipe.settings, patience=0, epochs=1000, time_budget_s=budget)
    started = time.perf_counter()
    model, enhanced, _, history, valid = train_text_enhanced_kge(
        dataset, JointConfig(kge=kge), text, torch.device("cpu"), progress=True
    )
    test = evaluate_on(bake(model, enhanced), dataset, "test").metrics
    out = {
        "budget_s": budget,
        "recipe": recipe.name,
        "epochs": len(history),
        "valid_sample": valid,
        "test": {k: v for k, v in test.items() if isinstance(v, float)},
        "history": history,
        "wall_s": time.perf_counter() - started,
    }
    Path("wn18rr_text_enhanced.json").write_text(json.dumps(out, indent=1))
    print(out["epochs"], out["test"])


if __name__ == "__main__":
    main()
