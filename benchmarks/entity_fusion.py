"""What the entity fusion adds: one joint run with KG embeddings added at the LM's entity
tokens, one without, everything else equal.

Usage (one dataset per process)::

    KGWEAVE_DATASETS_DIR=../shared/datasets python benchmarks/entity_fusion.py \\
        --dataset umls --lm-steps 164 --sample 150

Writes ``benchmarks/results/entity_fusion_<dataset>.json`` and the plot
``docs/img/entity-fusion-<dataset>.png``, and prints a table.

How each number is made (nothing is copied in):

- **Two runs** of ``train_joint`` (what ``kgweave train --joint`` runs) with the same config,
  seed and entity text vectors (all-MiniLM-L6-v2 of the entity texts, cached in
  ``--work-dir``); the only difference is ``entity_fusion``. With it, the LM (the packaged
  SmolLM2-135M-Instruct with LoRA adapters) is fine-tuned on the verbalized training facts
  with each entity's trained KG embedding, projected, added to the hidden states at its
  mention (:class:`kgweave.language.joint.entity_lm.EntityAwareLM`), and completion scores
  that way; without it, the LM is fine-tuned on the same text alone. Both LMs train for
  ``--lm-steps`` optimiser steps over the same batches (or for ``--lm-budget`` seconds, which
  on a shared machine gives the two runs different numbers of steps); steps and tokens/s are
  recorded. With ``--reuse``, a run found in ``--work-dir`` is kept and only the missing one
  trains. The KGE halves are the same training (their test MRRs are printed side by side as a
  check).
- **Held-out LM loss**: next-token cross-entropy per token on verbalized validation facts
  (a seeded sample of 256; never trained on), from the run's metrics; for the fused run also
  the same LM with the fusion switched off at inference.
- **Completion** on ``--sample`` test triples (seeded), each a tail and a head query, the same
  queries in every row, filtered ranking (other answers from train, valid and test removed),
  realistic ties:

  - *graph alone*: the model's own ranker (its text fusion when fitted, else the KGE model)
    over all entities;
  - *LM alone*: the graph's filtered top ``--top-n`` ordered by the LM feature the fit chose
    (log-likelihood of the verbalized fact or its PMI); an answer outside the top-N keeps its
    graph rank;
  - *re-ranked*: the top-N ordered by the combination fitted on validation in the run
    (``completion_weights``: graph + LM).

  Each row has a 95% bootstrap interval over the queries, and the fused run's rows a paired
  interval of their difference to the text-alone run's (``--bootstrap`` resamples).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from kgweave.data import load_dataset
from kgweave.data.dataset import with_reciprocals
from kgweave.evaluation.ranking import build_filter
from kgweave.language.features.completion import LMCompleter
from kgweave.language.features.verbalize import Verbalizer
from kgweave.language.joint.artifact import load_joint
from kgweave.language.joint.config import JointConfig
from kgweave.language.joint.pipeline import train_joint
from kgweave.settings import get_settings
from kgweave.training.curves import save_figure
from language_eval import filtered, realistic, text_vectors
from lm_rerank_eval import bootstrap, metrics

ROOT = Path(__file__).resolve().parent
ARMS = ("fused", "text alone")


def run_arm(
    name: str, dataset: Any, vectors: torch.Tensor, args: argparse.Namespace
) -> tuple[Path, dict[str, Any]]:
    """One joint run (``entity_fusion`` on for ``fused``), reused from ``--work-dir`` with
    ``--reuse``."""
    out = args.work_dir / f"{args.dataset}-{name.replace(' ', '-')}"
    meta = out / "run.json"
    if args.reuse and meta.is_file():
        return out, json.loads(meta.read_text())
    config = JointConfig.model_validate(
        {
            "kge": {"dim": args.dim, "epochs": args.kge_epochs, "eval_every": 10},
            # the same optimiser steps in both runs (--lm-steps), else the same seconds
            "lm_time_budget_s": None if args.lm_steps else args.lm_budget,
            "lm_max_steps": args.lm_steps,
            "lm_cpu_budget_s": None,
            "lm_epochs": 1000,  # the budget or the steps end it
            "entity_fusion": name == "fused",
            "completion_top_n": args.top_n,
            "seed": args.seed,
        }
    )
    result = train_joint(dataset, config, out, get_settings(), text_vectors=vectors)
    info = {"config": config.model_dump(), "seconds": round(result.seconds, 1)}
    meta.write_text(json.dumps(info, indent=2))
    return out, info


def evaluate_arm(
    folder: Path, dataset: Any, triples: torch.Tensor, args: argparse.Namespace
) -> dict[str, Any]:
    """Per-query ranks of the three completion rows (see the module docstring)."""
    joint = load_joint(folder, device="cpu")
    completer: LMCompleter = joint.completer(top_n=args.top_n)
    completer.lm_candidates = 0
    model = joint.artifact.model.eval()
    ranker = completer.ranker
    num_base = dataset.num_relations
    queries = with_reciprocals(triples, num_base)  # tails, then heads through reciprocals
    known = build_filter(dataset.all_triples(), dataset.num_entities, num_base)
    graph_ranks, tops = filtered(
        ranker if ranker is not None else model.predict_t, queries, known, args.top_n
    )
    weights = joint.completion_weights
    lm_ranks: list[float] = []
    ranks: list[float] = []
    for (e, r, answer), base, top in tqdm(
        list(zip(queries.tolist(), graph_ranks, tops, strict=True)), desc=folder.name
    ):
        if answer not in top:
            lm_ranks.append(base)
            ranks.append(base)
            continue
        side = "tail" if r < num_base else "head"
        s = completer._score(e, r % num_base, side, top)  # type: ignore[arg-type]
        pmi = weights.lm_feature == "pmi"
        lm = [x - (m if pmi else 0.0) for x, m in zip(s.lm, s.marginal or [], strict=True)]
        lm_ranks.append(realistic(lm, top.index(answer)))
        combined = s.combined(weights)
        ranks.append(realistic(combined, top.index(answer)))
    return {
        "graph alone": graph_ranks,
        "LM alone": lm_ranks,
        "re-ranked": ranks,
        "weights": weights.to_dict(),
        "scoring_fusion": completer.scorer.fusion is not None,
    }


def plot(path: Path, title: str, table: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = ("graph alone", "LM alone", "re-ranked")
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4), dpi=110,
                                      gridspec_kw={"width_ratios": [3, 2]})  # fmt: skip
    width = 0.38
    for i, arm in enumerate(ARMS):
        mrr = [table[arm]["rows"][r]["mrr"] for r in rows]
        low = [mrr[j] - table[arm]["rows"][r]["mrr_95"][0] for j, r in enumerate(rows)]
        high = [table[arm]["rows"][r]["mrr_95"][1] - mrr[j] for j, r in enumerate(rows)]
        xs = [j + (i - 0.5) * width for j in range(len(rows))]
        left.bar(xs, mrr, width, yerr=[low, high], capsize=3, label=arm)
        for x, v in zip(xs, mrr, strict=True):
            left.text(x, v + 0.01, f"{v:.3f}", ha="center", fontsize=8)
    left.set_xticks(range(len(rows)), rows)
    left.set_ylabel("filtered MRR (test sample, 95% CI)")
    left.legend(loc="lower right")
    left.grid(axis="y", alpha=0.3)
    labels, values = [], []
    for arm in ARMS:
        lm = table[arm]["lm"]
        labels.append(arm)
        values.append(lm["valid_loss"])
        if lm.get("valid_loss_text_alone") is not None:
            labels.append(f"{arm},\nfusion off at\ninference")
            values.append(lm["valid_loss_text_alone"])
    bars = right.bar(range(len(values)), values, color=["tab:blue", "tab:cyan", "tab:orange"])
    for b, v in zip(bars, values, strict=True):
        right.text(b.get_x() + b.get_width() / 2, v, f"{v:.3f}", ha="center", va="bottom")
    right.set_xticks(range(len(values)), labels, fontsize=8)
    right.set_ylabel("held-out LM loss per token (valid facts)")
    right.grid(axis="y", alpha=0.3)
    fig.suptitle(title, fontsize=10)
    save_figure(fig, left, path, "completion, fused vs text alone")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", default="umls")
    p.add_argument("--lm-budget", type=float, default=600, help="seconds of LM training per run")
    p.add_argument(
        "--lm-steps",
        type=int,
        default=None,
        help="train each LM this many optimiser steps instead of --lm-budget seconds (the "
        "same batches in both runs, whatever the machine's load)",
    )
    p.add_argument("--kge-epochs", type=int, default=100)
    p.add_argument("--dim", type=int, default=100)
    p.add_argument("--sample", type=int, default=200, help="test triples (x2 queries)")
    p.add_argument("--top-n", type=int, default=10)
    p.add_argument("--bootstrap", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--work-dir", type=Path, default=Path("/tmp/kgweave-entity-fusion"))
    p.add_argument("--reuse", action="store_true", help="reuse the runs in --work-dir")
    p.add_argument("--out", type=Path)
    p.add_argument("--plot", type=Path)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = get_settings()
    dataset = load_dataset(settings.datasets_dir / args.dataset, name=args.dataset)
    verbalizer = Verbalizer.from_dataset(dataset)
    vectors, _ = text_vectors(
        dataset, verbalizer, False, args.work_dir / f"{args.dataset}-text-vectors.pt"
    )
    test = dataset.split("test")
    order = torch.randperm(len(test), generator=torch.Generator().manual_seed(args.seed))
    triples = test[order[: args.sample]]
    started = time.perf_counter()
    table: dict[str, Any] = {}
    per_query: dict[str, dict[str, list[float]]] = {}
    for arm in ARMS:
        folder, info = run_arm(arm, dataset, vectors, args)
        found = evaluate_arm(folder, dataset, triples, args)
        per_query[arm] = {r: found[r] for r in ("graph alone", "LM alone", "re-ranked")}
        joint = json.loads((folder / "language" / "joint.json").read_text())
        metrics_, history = joint["metrics"], joint["lm_history"]  # a row per (partial) epoch
        lm = metrics_["lm"]
        tokens = sum(row["tokens"] for row in history)
        table[arm] = {
            "lm_time_budget_s": joint["config"]["lm_time_budget_s"],
            "lm_max_steps": joint["config"]["lm_max_steps"],
            "kge_test_mrr": metrics_["test"]["mrr"],
            "run_seconds": info["seconds"],
            "lm": {
                "steps": lm["steps"],
                "final_train_loss": lm["final_loss"],
                "tokens": tokens,
                "tokens_per_s": round(tokens / history[-1]["seconds"], 1) if history else None,
                "valid_loss": lm.get("valid_loss"),
                "valid_loss_text_alone": lm.get("valid_loss_text_alone"),
            },
            "completion_fit": {k: v for k, v in metrics_["completion"].items() if "mrr" in k},
            "weights": found["weights"],
            "scoring_fusion": found["scoring_fusion"],
            "rows": {},
        }
        for row, ranks in per_query[arm].items():
            m: dict[str, Any] = dict(metrics(ranks))
            m["mrr_95"] = bootstrap([1 / x for x in ranks], args.bootstrap, args.seed)
            table[arm]["rows"][row] = m
    for row in per_query[ARMS[0]]:
        diff = [
            1 / a - 1 / b
            for a, b in zip(per_query[ARMS[0]][row], per_query[ARMS[1]][row], strict=True)
        ]
        table[ARMS[0]]["rows"][row]["minus_text_alone"] = sum(diff) / len(diff)
        table[ARMS[0]]["rows"][row]["minus_text_alone_95"] = bootstrap(
            diff, args.bootstrap, args.seed
        )
    record = {
        "benchmark": "entity_fusion",
        "command": " ".join(["python", *sys.argv]),
        "date": date.today().isoformat(),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads, "
        f"torch {torch.__version__}",
        "dataset": args.dataset,
        "queries": 2 * len(triples),
        "top_n": args.top_n,
        "lm_budget_s": None if args.lm_steps else args.lm_budget,
        "lm_steps": args.lm_steps,
        "seconds": round(time.perf_counter() - started, 1),
        "arms": table,
    }
    out = args.out or ROOT / "results" / f"entity_fusion_{args.dataset}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2))
    figure = args.plot or ROOT.parent / "docs" / "img" / f"entity-fusion-{args.dataset}.png"
    steps = "/".join(str(table[arm]["lm"]["steps"]) for arm in ARMS)
    plot(figure, f"{args.dataset}: SmolLM2 + LoRA, {steps} LM steps (fused/text alone), "
         f"{2 * len(triples)} test queries, top {args.top_n}", table)  # fmt: skip
    print(f"{'':12} {'kge':>6} {'valid loss':>10} {'graph':>7} {'LM':>7} {'rerank':>7} {'w_lm':>7}")
    for arm in ARMS:
        t = table[arm]
        rows = t["rows"]
        print(
            f"{arm:12} {t['kge_test_mrr']:6.3f} {t['lm']['valid_loss']:10.3f} "
            f"{rows['graph alone']['mrr']:7.3f} {rows['LM alone']['mrr']:7.3f} "
            f"{rows['re-ranked']['mrr']:7.3f} {t['weights']['w_lm']:7.3f}"
        )
    for row in per_query[ARMS[0]]:
        r = table[ARMS[0]]["rows"][row]
        low, high = r["minus_text_alone_95"]
        print(f"fused - text alone, {row}: {r['minus_text_alone']:+.4f} [{low:+.4f}, {high:+.4f}]")
    print(f"wrote {out} and {figure}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
