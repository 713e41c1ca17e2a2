"""What the pretrained LM earns in completion re-ranking, side by side on the same test queries:
KGE alone, KGE + text fusion, + LM zero-shot (SmolLM2 as is), + LM fine-tuned.

Usage (one dataset per process)::

    KGWEAVE_DATASETS_DIR=../shared/datasets python benchmarks/lm_rerank_eval.py \\
        --dataset fb15k-237 --kge-model MODEL_DIR [--lm-tuned JOINT_MODEL_DIR] \\
        [--finetune-budget 600] --sample 100 --valid-sample 60 --top-n 10

Writes ``benchmarks/results/lm_rerank_<dataset>.json`` and a plot
``docs/img/lm-rerank-<dataset>.png`` (MRR by row with 95% bootstrap intervals, and the fitted
weights), and prints a table.

How each number is made (nothing is copied in):

- **Queries.** ``--sample`` test triples drawn by a seeded permutation (``--seed``) of the test
  split, each a tail and a head query: ``2 * sample`` queries, the same for every row. Ranking
  is filtered (other answers from train, valid and test removed), ties realistic. Every figure
  is on this sample only, with a 95% bootstrap interval (``--bootstrap`` resamples of the
  queries) and, for the LM rows, a paired interval of the difference to the row without LM.
- **KGE alone.** The artifact of ``--kge-model``, ranking all entities.
- **KGE + text fusion.** :class:`kgweave.language.features.text_fusion.TextFusion` on that
  model (all-MiniLM-L6-v2 vectors of ``name: description``, the lexical links), fitted on a
  seeded sample of ``--fusion-valid`` validation triples with ``--fusion-candidates``
  candidates per query; it ranks all entities.
- **+ LM.** :class:`kgweave.language.features.completion.LMCompleter` over the fused model:
  each query's filtered fused top ``--top-n`` is re-ranked by ``w_kge * kge + w_text * fused
  + w_lm * lm + b``, ``lm`` the log-likelihood of the verbalized fact or its PMI, the weights
  and the LM feature fitted on ``--valid-sample`` validation triples
  (:meth:`LMCompleter.fit_weights`, logistic, the LM feature picked by two-fold
  cross-validated MRR). An answer outside the top-N keeps its fused rank. Rows: the LM as it
  ships (zero-shot), the LM of a joint model (``--lm-tuned``: a model folder of ``kgweave train
  --joint``, its ``language/`` LM, or any causal LM folder), and with ``--finetune-budget`` a
  fine-tune made here through the product's own LoRA path: ``lm_side.prepare_lm`` wraps the
  zero-shot LM in ``peft`` LoRA adapters with the joint defaults (rank 8 on the attention
  projections, lr 5e-4, batch 32), ``pipeline.fact_corpus`` verbalizes the **training**
  facts and ``train_lm`` trains on them (seeded order, each text after the start token
  ``LMScorer`` scores from) for that many seconds; the adapters are saved under
  ``--work-dir`` and merged for scoring, as serving does; validation and test facts never
  reach it. ``--no-text``: no text fusion
  (encoding every entity's text is the slow part on a shared CPU); the LM rows then re-rank
  the KGE top-N and their gain is measured against KGE alone.
- **Speed.** LM scoring uses :class:`kgweave.language.features.lm_scoring.LMScorer` (one
  cached prompt pass per query); sequences/s is recorded per LM. ``--threads`` (default 1)
  torch threads: on the shared 2-core machine one thread scored 4x faster than two
  (`benchmarks/lm_scoring_speed.py`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import time
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from kgweave.artifact import load_artifact
from kgweave.data import load_dataset
from kgweave.data.dataset import with_reciprocals
from kgweave.evaluation.ranking import build_filter
from kgweave.language.components.lm import load_causal_lm, train_lm
from kgweave.language.components.lora import describe, load_adapters, save_adapters
from kgweave.language.components.pretrained import resolve_language_model
from kgweave.language.features.completion import LMCompleter
from kgweave.language.features.lm_scoring import LMScorer
from kgweave.language.features.text_fusion import FusedScorer, TextFusion
from kgweave.language.features.verbalize import Verbalizer
from kgweave.language.joint.config import JointConfig
from kgweave.language.joint.lm_side import prepare_lm
from kgweave.language.joint.pipeline import fact_corpus
from kgweave.predict import LinkPredictor
from kgweave.settings import get_settings
from language_eval import (  # the cached MiniLM vectors, `name: description`; filtered ranks
    add_run_options,
    filtered,
    realistic,
    text_vectors,
)

ROOT = Path(__file__).resolve().parent


# ---- ranks and intervals


def metrics(ranks: list[float]) -> dict[str, float]:
    n = len(ranks)
    return {
        "mrr": sum(1 / r for r in ranks) / n,
        "hits@1": sum(r <= 1 for r in ranks) / n,
        "hits@10": sum(r <= 10 for r in ranks) / n,
        "count": n,
    }


def bootstrap(values: list[float], draws: int, seed: int) -> tuple[float, float]:
    """95% percentile interval of the mean of ``values`` over query resamples."""
    rng = random.Random(seed)
    n = len(values)
    means = sorted(sum(values[rng.randrange(n)] for _ in range(n)) / n for _ in range(draws))
    return means[int(0.025 * draws)], means[int(0.975 * draws) - 1]


# ---- LMs


def load_tuned(path: Path) -> tuple[Any, Any]:
    """The LM of a joint model folder (``language/``), or a causal LM folder itself."""
    folder = path / "language" if (path / "language" / "config.json").is_file() else path
    return load_causal_lm(folder, device="cpu")


def finetune(
    base: str, dataset: Any, verbalizer: Verbalizer, args: argparse.Namespace, out: Path
) -> tuple[Any, Any, dict[str, Any]]:
    """LoRA adapters trained on the verbalized training facts for a time budget, the way
    ``kgweave train --joint`` fine-tunes its LM, on text alone (without the entity fusion:
    ``benchmarks/entity_fusion.py`` measures what the fusion adds): :func:`prepare_lm` wraps
    the base in peft adapters with the joint defaults, :func:`fact_corpus` verbalizes the
    training facts only, :func:`train_lm` trains them from the start token scoring reads.
    The adapters are saved in ``out`` and merged for scoring (as serving does)."""
    meta = out / "finetune.json"
    if args.reuse and meta.is_file():
        lm, tokenizer = load_causal_lm(base, device="cpu")
        return (
            load_adapters(lm, out).merge_and_unload().eval(),
            tokenizer,
            json.loads(meta.read_text()),
        )
    config = JointConfig(language_model=base, lm_lora=True, seed=args.seed)
    texts, _ = fact_corpus(dataset, verbalizer)  # training facts only
    lm, tokenizer, identity, lr = prepare_lm(
        config, get_settings(), dataset, verbalizer, texts, torch.device("cpu")
    )
    losses: list[float] = []
    history = train_lm(
        lm,
        tokenizer,
        texts,
        epochs=1,
        batch_size=config.lm_batch_size,
        lr=lr,
        device="cpu",
        progress=True,
        seed=args.seed,
        max_length=config.lm_max_length,
        time_budget_s=args.finetune_budget,
        step_losses=losses,
    )
    last = history[-1] if history else {"loss": None, "tokens": 0, "seconds": 0.0}
    info = {
        "method": "LoRA (peft) via language.joint.lm_side.prepare_lm",
        "lora": {"rank": config.lora_rank, "alpha": config.lora_alpha, "mlp": config.lora_mlp},
        "lr": lr,
        "batch_size": config.lm_batch_size,
        "trained_parameters": sum(p.numel() for p in lm.parameters() if p.requires_grad),
        "facts_seen": min(len(losses) * config.lm_batch_size, len(texts)),
        "corpus_facts": len(texts),
        "steps": len(losses),
        "first_step_loss": losses[0] if losses else None,
        "loss": last["loss"],
        "tokens": last["tokens"],
        "seconds": last["seconds"],
        "tokens_per_s": round(last["tokens"] / last["seconds"], 1) if last["seconds"] else 0.0,
    }
    save_adapters(lm, out, describe(identity))
    meta.write_text(json.dumps(info, indent=2))
    return lm.merge_and_unload().eval(), tokenizer, info


# ---- one LM row


def lm_row(
    name: str,
    lm: Any,
    tokenizer: Any,
    predictor: LinkPredictor,
    ranker: Any,
    verbalizer: Verbalizer,
    dataset: Any,
    queries: list[tuple[int, int, str, int]],
    base_ranks: list[float],
    tops: list[list[int]],
    args: argparse.Namespace,
) -> dict[str, Any]:
    completer = LMCompleter(
        predictor,
        lm,
        tokenizer,
        verbalizer,
        top_n=args.top_n,
        lm_candidates=0,
        ranker=ranker,
        scorer=LMScorer(lm, tokenizer, cache_size=200_000),
    )
    started = time.perf_counter()
    weights = completer.fit_weights(
        dataset.split("valid"), max_triples=args.valid_sample, seed=args.seed
    )
    fit_s = time.perf_counter() - started
    started = time.perf_counter()
    ranks: list[float] = []
    for (entity, relation, side, answer), rank, top in tqdm(
        list(zip(queries, base_ranks, tops, strict=True)), desc=f"re-rank ({name})"
    ):
        if answer not in top:
            ranks.append(rank)
            continue
        s = completer._score(entity, relation, side, top)  # type: ignore[arg-type]
        combined = [
            weights.combine(k, m, t, g)
            for k, m, t, g in zip(
                s.kge, s.lm, s.text or [None] * len(top), s.marginal or [], strict=True
            )
        ]
        ranks.append(realistic(combined, top.index(answer)))
    return {
        "ranks": ranks,
        "weights": weights.to_dict(),
        "fit_seconds": round(fit_s, 1),
        "rerank_seconds": round(time.perf_counter() - started, 1),
        "lm_sequences": completer.scorer.sequences,
        "lm_sequences_per_s": round(completer.scorer.sequences_per_second, 2),
    }


# ---- the plot


def plot(path: Path, title: str, table: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 0.6 * len(table) + 2.5))
    names = [r["method"] for r in table]
    y = list(range(len(table)))
    mrr = [r["mrr"] for r in table]
    err = [[m - r["mrr_ci"][0] for m, r in zip(mrr, table, strict=True)],
           [r["mrr_ci"][1] - m for m, r in zip(mrr, table, strict=True)]]  # fmt: skip
    left.barh(y, mrr, xerr=err, color="#4c72b0", capsize=4)
    left.set_yticks(y, names)
    left.invert_yaxis()
    left.set_xlabel("filtered MRR on the sampled queries (95% bootstrap)")
    lm_rows = [r for r in table if r.get("weights")]
    keys = ("w_kge", "w_text", "w_lm")
    for i, key in enumerate(keys):
        right.bar(
            [j + 0.25 * (i - 1) for j in range(len(lm_rows))],
            [r["weights"]["report"][key.replace("w_", "z_")] for r in lm_rows],
            width=0.25,
            label=f"{key} (standardised)",
        )
    right.set_xticks(
        range(len(lm_rows)), [f"{r['method']}\n({r['weights']['lm_feature']})" for r in lm_rows]
    )
    right.axhline(0, color="black", linewidth=0.5)
    right.set_ylabel("fitted weight, standardised features (validation)")
    right.legend()
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


# ---- main


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", required=True)
    p.add_argument("--kge-model", type=Path, required=True)
    p.add_argument("--lm", default=None, help="zero-shot LM (default: the packaged SmolLM2)")
    p.add_argument("--lm-tuned", type=Path, action="append", default=[])
    p.add_argument("--finetune-budget", type=float, default=0.0, help="seconds; 0: no row")
    p.add_argument("--sample", type=int, default=100, help="test triples (x2 queries)")
    p.add_argument("--valid-sample", type=int, default=60)
    p.add_argument("--top-n", type=int, default=10)
    p.add_argument("--no-text", action="store_true", help="no text fusion rows (LM on KGE)")
    p.add_argument("--fusion-valid", type=int, default=1000)
    p.add_argument("--fusion-candidates", type=int, default=100)
    p.add_argument("--bootstrap", type=int, default=1000)
    p.add_argument("--threads", type=int, default=1)
    add_run_options(p, Path("/tmp/kgweave-lm-rerank"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    settings = get_settings()
    work = args.work_dir / args.dataset
    work.mkdir(parents=True, exist_ok=True)
    root = Path(os.environ.get("KGWEAVE_DATASETS_DIR", "../shared/datasets"))
    dataset = load_dataset(root / args.dataset)
    artifact = load_artifact(args.kge_model)
    if artifact.entities.labels != dataset.entities.labels:
        raise SystemExit(f"{args.kge_model} was not trained on {args.dataset} (entities differ)")
    model = artifact.model.eval()
    verbalizer = Verbalizer.from_artifact(artifact)
    n, num_base = dataset.num_entities, dataset.num_relations
    known = build_filter(dataset.all_triples(), n, num_base)
    timings: dict[str, float] = {}

    test = dataset.split("test")
    perm = torch.randperm(len(test), generator=torch.Generator().manual_seed(args.seed))
    sample = test[perm[: args.sample]]
    queries = with_reciprocals(sample, num_base)
    plain = [(h, r, "tail", t) for h, r, t in sample.tolist()]
    plain += [(t, r, "head", h) for h, r, t in sample.tolist()]

    # KGE alone, and the text fusion fitted on validation
    kge_ranks, kge_tops = filtered(model.predict_t, queries, known, args.top_n)
    predictor = LinkPredictor(artifact)
    rows: list[tuple[str, list[float], dict[str, Any]]] = [
        ("KGE alone", kge_ranks, {"note": f"{args.kge_model}"})
    ]
    ranker: Any = None
    base_ranks, tops, encoded = kge_ranks, kge_tops, {}
    if not args.no_text:
        t0 = time.perf_counter()
        vectors, encoded = text_vectors(dataset, verbalizer, False, work / "text-full.pt")
        fusion = TextFusion.from_verbalizer(
            vectors, verbalizer, dataset.entities.labels, artifact.known, num_base
        )
        valid = dataset.split("valid")
        vperm = torch.randperm(len(valid), generator=torch.Generator().manual_seed(args.seed))
        report = fusion.fit(
            model,
            valid[vperm[: args.fusion_valid]],
            known,
            candidates=args.fusion_candidates,
            progress=True,
            relation_labels=dataset.relations.labels,
        )
        timings["text_fusion_s"] = round(time.perf_counter() - t0, 1)
        ranker = FusedScorer(fusion, model)
        base_ranks, tops = filtered(ranker, queries, known, args.top_n)
        fit = {"accepted": report.accepted, "valid_mrr": report.fused_mrr}
        rows.append(("KGE + text fusion", base_ranks, {"fusion": fit}))
    base = resolve_language_model(args.lm, settings.data_dir, fetch=True)
    lms: list[tuple[str, Any, Any, dict[str, Any]]] = []
    zero, zero_tok = load_causal_lm(base, device="cpu")
    lms.append(("+ LM zero-shot", zero, zero_tok, {"lm": str(base)}))
    for path in args.lm_tuned:
        lm, tok = load_tuned(path)
        lms.append((f"+ LM fine-tuned ({path.name})", lm, tok, {"lm": str(path)}))
    if args.finetune_budget > 0:
        lm, tok, info = finetune(base, dataset, verbalizer, args, work / "finetuned")
        label = f"+ LM LoRA-fine-tuned here ({args.finetune_budget:.0f} s)"
        lms.append((label, lm, tok, {"finetune": info}))
    for name, lm, tok, info in lms:
        res = lm_row(
            name, lm, tok, predictor, ranker, verbalizer, dataset, plain, base_ranks, tops, args
        )
        rows.append((name, res.pop("ranks"), {**info, **res}))

    table: list[dict[str, Any]] = []
    rr_base = [1 / r for r in base_ranks]  # the row without LM: text fusion, or KGE alone
    for i, (name, ranks, info) in enumerate(rows):
        rr = [1 / r for r in ranks]
        entry = {"method": name, **metrics(ranks), "mrr_ci": bootstrap(rr, args.bootstrap, i)}
        if "weights" in info:
            diff = [a - b for a, b in zip(rr, rr_base, strict=True)]
            entry["mrr_gain_without_lm"] = sum(diff) / len(diff)
            entry["mrr_gain_ci"] = bootstrap(diff, args.bootstrap, 100 + i)
            entry["weights"] = info["weights"]
        entry["info"] = {k: v for k, v in info.items() if k != "weights"}
        table.append(entry)
    record = {
        "dataset": args.dataset,
        "command": " ".join(["python", *sys.argv]),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores "
        f"(shared), torch {torch.__version__}, {args.threads} torch thread(s)",
        "sample": {"test_triples": len(sample), "queries": len(plain), "seed": args.seed},
        "settings": {k: str(v) for k, v in vars(args).items()},
        "text_vectors": encoded,
        "timings": timings,
        "table": table,
        "seconds_total": round(time.perf_counter() - started, 1),
    }
    out = args.out or ROOT / "results" / f"lm_rerank_{args.dataset}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2, default=str) + "\n", encoding="utf-8")
    plot(ROOT.parent / "docs" / "img" / f"lm-rerank-{args.dataset}.png", args.dataset, table)
    print(f"\n{args.dataset}: {len(sample)} test triples, {len(plain)} queries")
    print(f"{'method':58s} {'MRR':>7s} {'95% CI':>17s} {'H@1':>7s} {'H@10':>7s}")
    for r in table:
        lo, hi = r["mrr_ci"]
        print(
            f"{r['method']:58s} {r['mrr']:7.4f} [{lo:.4f}, {hi:.4f}] "
            f"{r['hits@1']:7.4f} {r['hits@10']:7.4f}"
        )
        if "weights" in r:
            w = r["weights"]
            print(
                f"   w_kge {w['w_kge']:.4g} w_text {w['w_text']:.4g} w_lm {w['w_lm']:.4g} "
                f"({w['lm_feature']}); gain {r['mrr_gain_without_lm']:+.4f} "
                f"[{r['mrr_gain_ci'][0]:+.4f}, {r['mrr_gain_ci'][1]:+.4f}]"
            )
    print(f"wrote {out} in {record['seconds_total']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
