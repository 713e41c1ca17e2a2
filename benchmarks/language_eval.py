"""Language side of kgweave, measured: KGE only, LM only, text-enhanced KGE, the combined
re-ranker and cold start, on a fixed seeded sample of a benchmark's test set (CPU-sized).

Usage (one dataset per process; run them one after another)::

    KGWEAVE_DATASETS_DIR=../shared/datasets python benchmarks/language_eval.py \\
        --dataset wn18rr --kge-budget 210 --lm-budget 150
    KGWEAVE_DATASETS_DIR=../shared/datasets python benchmarks/language_eval.py \\
        --dataset fb15k-237 --kge-model /tmp/runs/fb15k-237 --kge-budget 150 --lm-budget 150

Writes ``benchmarks/results/language_eval_<dataset>.json`` and prints a table.

Design (every number is measured here; nothing is copied in):

- **Test sample.** ``--sample`` test triples (default 300) drawn with a seeded permutation
  (``--seed``, default 0) of the test split; each gives a tail query and a head query (the head
  side is the reciprocal relation, as in :mod:`kgweave.evaluation.ranking`), so 600 ranks.
  Ranking is *filtered* (every other known answer from train, valid and test removed) with
  *realistic* ties (mean of optimistic and pessimistic rank), through
  :func:`kgweave.evaluation.ranking.filtered_ranks`. On FB15k-237 the sample skips test triples
  that touch a cold-start entity (below), so every KGE model has seen both ends of each sampled
  triple.
- **(a) KGE only.** WN18RR: ComplEx (dim 200, kvsall, Adagrad 0.1, N3 0.01, batch 256, seed 0)
  trained with :func:`kgweave.engine.train_model` under ``--kge-budget`` seconds of training
  (validation time excluded, as the library does). FB15k-237: the existing artifact given by
  ``--kge-model`` (ComplEx dim 400, trained 44 minutes); it is not retrained.
- **(b) LM only.** A small GPT-2-style LM (:func:`kgweave.language.components.lm.build_small_lm`,
  ``--lm-layers`` 2 blocks, ``--lm-width`` 192, 4 heads, 64 positions, vocabulary 4,000: smaller
  than the joint default of 4 x 256 because a few minutes of CPU see only a fraction of the
  corpus, and a smaller model sees more of it) with a byte-level BPE tokenizer trained on the
  KG-to-text corpus of the training split (:func:`kgweave.language.joint.corpus.write_corpus`:
  description sentences and one sentence per training fact) plus the entity names
  (:func:`kgweave.language.components.tokenizer.train_tokenizer`), trained by
  :func:`kgweave.language.components.lm.train_lm` (AdamW 2e-3, cosine, batch 32, 64 tokens) over a
  seeded
  random subset of the corpus sized to twice what the timed throughput (16 batches after 4
  warm-up ones) fits in ``--lm-budget`` seconds; a deadline guard stops the updates when the
  budget is spent (the CPU is shared, so throughput moves during a run), and the JSON records
  the lines actually trained on. Ranking every entity by LM
  likelihood is too expensive on 2 CPU cores, so **LM-only ranking is trie-constrained beam
  search** (:meth:`kgweave.language.features.constrained.NameSearch.constrained`, beam
  ``--beam``, default 10, on the first ``--lm-sample`` (default 100) triples of the test
  sample, 200 queries, as beam search costs up to seconds per query on the shared CPU; it
  returns the top ``--beam`` names by ``log P(name + rest of sentence | prompt)``). Other
  known answers are removed from that list (filtered); the true entity's rank is its realistic
  rank within the list, and a true entity that was **not generated counts as unranked:
  reciprocal rank 0, no hit**. Several entities can share a name (WordNet lemmas): they then
  tie.
- **(c) Text-enhanced KGE.** The KGE half of :func:`kgweave.language.joint.pipeline.train_joint`
  (``use_text=True``): entity rows ``structural + P · text`` (:class:`TextEnhancedEntities`,
  ``P`` zero-initialised) plus the InfoNCE alignment loss (weight 0.1, temperature 0.1, 256
  entities per step), with the same model, regime, optimiser, bf16 autocast, validation
  schedule and **the same wall-time budget** as its plain partner, trained by the same
  function ``train_joint`` uses (:func:`kgweave.language.joint.text_side.train_text_enhanced_kge`,
  without the LM half). The plain partner: WN18RR the model of (a); FB15k-237 a plain
  ComplEx dim 200 trained by ``train_model`` with the same budget on the same reduced training
  set (not the 44-minute model). Text vectors: the offline all-MiniLM-L6-v2
  (:class:`kgweave.language.components.encoder.TextEncoder`). FB15k-237: ``"name: description"``.
  WN18RR: the lemma only by default (``--text full``: ``lemma, definition``, as SimKGC uses;
  the text-enhanced model is then cached apart, so ``--reuse`` retrains only it).
- **(d) Combined.** :class:`kgweave.language.features.completion.LMCompleter` on the KGE model of
  (a) and
  the LM of (b); :meth:`LMCompleter.fit_weights` (``--fit-method``, default logistic; grid maximises
  validation MRR) on a seeded sample of
  ``--valid-sample`` validation triples (default 100) with ``top_n = --rerank-n`` (default 20).
  For each sampled test query the filtered KGE top-N is re-ranked by
  ``w_kge * kge + w_lm * lm_logprob``; **final rank**: if the true entity is in the filtered
  KGE top-N, its realistic rank among those N under the combined score; otherwise its filtered
  KGE rank (everything in the top-N stays ahead of it, KGE order beyond).
- **(d') Joint.** The same re-ranking, fitted the same way, over the text-enhanced KGE model
  of (c) and the LM of (b): the pair ``kgweave train --joint`` produces and serves as one
  artifact. Compared with its equal-budget plain partner (c0).
- **(e) Cold start.** ``--cold`` entities (default 50) drawn with the seed from the entities of
  the test split whose training degree is between 1 and 100 (hubs left out: removing a hub's
  edges would change the graph much more than adding a new entity does).
  FB15k-237: **truly held out**: every train and valid triple touching them is removed, and the
  budgeted plain and text-enhanced models of (c) are trained on what is left. A ridge
  projection (:class:`kgweave.language.features.coldstart.TextProjection`, l2 1.0) is fitted from
  text
  vectors to the trained embeddings of all *other* entities; the held-out rows are replaced by
  their projected text vectors; the metric is filtered MRR over all test triples touching a
  held-out entity (both sides). Reported next to the rows left as training made them (trained
  only as negatives) and the text-enhanced model's own rows. WN18RR: the held-out entities
  stayed in KGE training (no time for another run); only their embeddings are replaced by the
  projection fitted on the other entities, which measures how well text alone places them.

Trained models, the LM and text vectors are cached under ``--work-dir`` and reused with
``--reuse`` (the JSON records the training times of the cached runs).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import os
import platform
import random
import sys
import time
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from kgweave.artifact import load_artifact, save_artifact
from kgweave.data.dataset import KGDataset, with_reciprocals
from kgweave.engine import ArtifactOutput, align_dataset, open_dataset, train_model
from kgweave.evaluation.ranking import build_filter, filtered_ranks
from kgweave.language.components.encoder import TextEncoder, entity_texts
from kgweave.language.components.lm import (
    build_small_lm,
    causal_lm_loss,
    load_lm,
    save_lm,
    train_lm,
)
from kgweave.language.components.tokenizer import train_tokenizer
from kgweave.language.features.coldstart import TextProjection
from kgweave.language.features.completion import LMCompleter
from kgweave.language.features.verbalize import Verbalizer
from kgweave.language.joint.config import JointConfig
from kgweave.language.joint.corpus import write_corpus
from kgweave.language.joint.text_side import bake, train_text_enhanced_kge
from kgweave.models import KGEModel
from kgweave.predict import LinkPredictor
from kgweave.settings import get_settings
from kgweave.training import TrainConfig

ROOT = Path(__file__).resolve().parent
Side = str


# ---- metrics


def metrics(ranks: list[float]) -> dict[str, float]:
    """MRR and Hits@1/3/10 where an unranked answer is ``inf`` (reciprocal rank 0)."""
    n = max(len(ranks), 1)
    return {
        "mrr": sum(1.0 / r for r in ranks) / n,
        "hits@1": sum(r <= 1 for r in ranks) / n,
        "hits@3": sum(r <= 3 for r in ranks) / n,
        "hits@10": sum(r <= 10 for r in ranks) / n,
        "ranked": sum(math.isfinite(r) for r in ranks) / n,
        "count": len(ranks),
    }


def realistic(scores: list[float], at: int) -> float:
    """Realistic 1-based rank of ``scores[at]`` among ``scores``."""
    better = sum(1 for s in scores if s > scores[at])
    tied = sum(1 for s in scores if s == scores[at]) - 1
    return 1.0 + better + tied / 2.0


def filtered(
    score_fn: Any, queries: torch.Tensor, known: Any, top_n: int
) -> tuple[list[float], list[list[int]]]:
    """Filtered realistic ranks of the answers, and each query's filtered top-N."""
    ranks: list[float] = []
    tops: list[list[int]] = []
    for start in range(0, len(queries), 64):
        batch = queries[start : start + 64]
        with torch.no_grad():
            scores = score_fn(batch[:, :2]).float().clone()
        rows, tails = known.lookup(batch[:, :2])
        idx = torch.arange(len(batch))
        target = scores[idx, batch[:, 2]].clone()
        scores[rows, tails] = float("-inf")
        scores[idx, batch[:, 2]] = target
        better = (scores > target.unsqueeze(1)).sum(1)
        tied = (scores == target.unsqueeze(1)).sum(1) - 1
        ranks += (1.0 + better.double() + tied.double() / 2).tolist()
        tops += scores.topk(top_n, dim=1).indices.tolist()
    return ranks, tops


def kge_ranks(model: KGEModel, triples: torch.Tensor, known: Any, num_base: int) -> list[float]:
    """Filtered realistic ranks, tail queries then head queries (reciprocals)."""
    with torch.no_grad():
        ranks = filtered_ranks(model.eval(), with_reciprocals(triples, num_base), known)
    return ranks.tolist()


def queries_of(triples: torch.Tensor) -> list[tuple[int, int, Side, int]]:
    """(entity, relation, side, answer) for tails first, then heads: kgweave's order."""
    rows = triples.tolist()
    return [(h, r, "tail", t) for h, r, t in rows] + [(t, r, "head", h) for h, r, t in rows]


# ---- data


def sample_test(
    dataset: KGDataset, n: int, seed: int, exclude: set[int]
) -> tuple[torch.Tensor, int]:
    test = dataset.split("test")
    perm = torch.randperm(len(test), generator=torch.Generator().manual_seed(seed))
    keep = [i for i in perm.tolist() if not ({int(test[i, 0]), int(test[i, 2])} & exclude)]
    return test[torch.tensor(keep[:n])], len(keep)


def pick_cold(dataset: KGDataset, n: int, seed: int) -> list[int]:
    train = dataset.train
    degree = torch.bincount(train[:, [0, 2]].flatten(), minlength=dataset.num_entities)
    test = dataset.split("test")
    candidates = sorted(
        e for e in set(test[:, 0].tolist()) | set(test[:, 2].tolist()) if 1 <= degree[e] <= 100
    )
    return sorted(random.Random(seed).sample(candidates, n))


def without(dataset: KGDataset, entities: set[int]) -> KGDataset:
    """The dataset with every train and valid triple touching ``entities`` removed."""
    ids = torch.tensor(sorted(entities))
    splits = dict(dataset.splits)
    for name in ("train", "valid"):
        t = splits[name]
        touch = torch.isin(t[:, 0], ids) | torch.isin(t[:, 2], ids)
        splits[name] = t[~touch]
    return dataclasses.replace(dataset, splits=splits)


def text_vectors(
    dataset: KGDataset, verbalizer: Verbalizer, lemma_only: bool, cache: Path
) -> tuple[torch.Tensor, dict[str, Any]]:
    """MiniLM vectors of every entity in the dataset's id order (cached by label)."""
    labels = dataset.entities.labels
    if lemma_only:
        texts = [verbalizer.name(e) for e in labels]
        what = "lemma (name) only"
    else:
        texts = entity_texts(
            [dataset.entity_names.get(e) for e in labels],
            [dataset.entity_descriptions.get(e) for e in labels],
            labels,
        )
        what = "name: description"
    if cache.is_file():
        saved = torch.load(cache, weights_only=True)
        index = {label: i for i, label in enumerate(saved["labels"])}
        if set(index) == set(labels):
            order = torch.tensor([index[e] for e in labels])
            return saved["vectors"][order], {"texts": what, "seconds": saved["seconds"]}
    encoder = TextEncoder.from_settings(get_settings())
    started = time.perf_counter()
    vectors = encoder.encode(texts, batch_size=128, progress=True)
    seconds = time.perf_counter() - started
    cache.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"labels": list(labels), "vectors": vectors, "seconds": seconds}, cache)
    return vectors, {"texts": what, "seconds": seconds}


# ---- KGE training


def kge_config(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig.model_validate(
        {
            "model": "complex",
            "dim": 200,
            "regime": "kvsall",
            "epochs": 1000,
            "batch_size": 256,
            "optimizer": "adagrad",
            "lr": 0.1,
            "regularizer": "n3",
            "reg_weight": 0.01,
            "seed": args.seed,
            "eval_every": 2,
            "patience": 0,
            "valid_sample": 2000,
            "time_budget_s": float(args.kge_budget),
            "num_threads": 2,
        }
    )


def train_plain(
    dataset: KGDataset, config: TrainConfig, out: Path, reuse: bool
) -> tuple[KGEModel, dict[str, Any]]:
    meta = out / "meta.json"
    if not (reuse and meta.is_file()):
        output = ArtifactOutput(out, evaluate_test=False)
        result, _, _ = train_model(dataset, config, output, get_settings(), progress=True)
        info = {
            "epochs": result.epochs_completed,
            "train_seconds": round(result.train_seconds, 1),
            "stopped_because": result.stopped_because,
            "best_valid_mrr": result.best_valid.metrics["mrr"] if result.best_valid else None,
        }
        meta.write_text(json.dumps(info, indent=2))
    return load_artifact(out).model.eval(), json.loads(meta.read_text())


def train_text_enhanced(
    dataset: KGDataset,
    config: TrainConfig,
    text: torch.Tensor,
    out: Path,
    reuse: bool,
    align_weight: float = 0.1,
    align_temperature: float = 0.1,
    align_batch: int = 256,
) -> tuple[KGEModel, dict[str, Any]]:
    """The KGE half of ``train_joint`` (use_text), by the same function, under ``config``'s
    wall-time budget: what ``kgweave train --joint`` trains before its LM half."""
    meta = out / "meta.json"
    if reuse and meta.is_file():
        return load_artifact(out).model.eval(), json.loads(meta.read_text())
    joint = JointConfig(
        kge=config,
        align_weight=align_weight,
        align_temperature=align_temperature,
        align_batch=align_batch,
        seed=config.seed,
    )
    model, enhanced, _, history, valid = train_text_enhanced_kge(
        dataset, joint, text, torch.device("cpu"), progress=True
    )
    plain = bake(model, enhanced)
    info = {
        "epochs": len(history),
        "train_seconds": round(history[-1]["seconds"], 1) if history else 0.0,
        "stopped_because": "time_budget",
        "best_valid_mrr": valid.get("mrr"),
        "align_weight": align_weight,
        "text_projection_norm": float(enhanced.project.weight.detach().norm()),
    }
    save_artifact(out, plain, dataset, training=config.model_dump(), metrics={}, history=history)
    meta.write_text(json.dumps(info, indent=2))
    return plain, info


# ---- the language model


def train_small_lm(
    dataset: KGDataset, verbalizer: Verbalizer, args: argparse.Namespace, out: Path
) -> tuple[Any, Any, dict[str, Any]]:
    meta = out / "meta.json"
    if args.reuse and meta.is_file():
        lm, tokenizer = load_lm(out, "cpu")
        return lm, tokenizer, json.loads(meta.read_text())
    corpus = out / "corpus.txt"
    counts = write_corpus(dataset, corpus, splits=("train",), progress=False)
    lines = corpus.read_text(encoding="utf-8").splitlines()
    names = [verbalizer.name(e) for e in dataset.entities.labels]
    tokenizer = train_tokenizer([*lines, *names], vocab_size=args.vocab)
    lm = build_small_lm(
        tokenizer, n_layer=args.lm_layers, n_embd=args.lm_width, n_head=4, n_positions=64, seed=0
    )
    rng = random.Random(args.seed)
    order = list(range(len(lines)))
    rng.shuffle(order)
    # throughput of a copy (the real model starts untouched): 4 untimed warm-up batches (the
    # first calls are several times slower), then 16 timed ones
    probe = copy.deepcopy(lm).train()
    opt = torch.optim.AdamW(probe.parameters(), lr=1e-3)
    from kgweave.language.components.lm import encode_texts

    t0 = time.perf_counter()
    for b in range(20):
        if b == 4:
            t0 = time.perf_counter()
        texts = [lines[i] for i in order[b * 32 : (b + 1) * 32]]
        batch = encode_texts(tokenizer, texts, 64)
        opt.zero_grad()
        logits = probe(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        causal_lm_loss(logits, batch.labels).backward()
        opt.step()
    per_text = (time.perf_counter() - t0) / (16 * 32)
    del probe, opt
    n_texts = min(len(lines), int(2 * args.lm_budget / per_text))  # the guard stops it
    subset = [lines[i] for i in order[:n_texts]]
    deadline = time.perf_counter() + args.lm_budget
    skipped, trained, loss_tokens = [0], [0], [0.0, 0]

    def guarded(batch: Any, ids: Any) -> torch.Tensor:
        if time.perf_counter() > deadline:  # budget spent: no more updates
            skipped[0] += 1
            return lm.transformer.wte.weight.sum() * 0.0
        trained[0] += len(ids)
        logits = lm(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        loss = causal_lm_loss(logits, batch.labels)
        tokens = int((batch.labels[:, 1:] != -100).sum())
        loss_tokens[0] += float(loss.detach()) * tokens
        loss_tokens[1] += tokens
        return loss

    started = time.perf_counter()
    train_lm(
        lm,
        tokenizer,
        subset,
        epochs=1,
        batch_size=32,
        lr=2e-3,
        device="cpu",
        progress=True,
        seed=args.seed,
        max_length=64,
        step_loss=guarded,
    )
    info = {
        "corpus_lines": len(lines),
        "corpus": counts,
        "subset_lines": n_texts,
        "trained_lines": trained[0],
        "calibrated_seconds_per_line": per_text,
        "skipped_batches_after_deadline": skipped[0],
        "train_seconds": round(time.perf_counter() - started, 1),
        "train_loss_per_token": loss_tokens[0] / max(loss_tokens[1], 1),
        "trained_tokens": loss_tokens[1],
        "vocab_size": len(tokenizer),
        "parameters": sum(p.numel() for p in lm.parameters()),
        "architecture": f"GPT-2 style, {args.lm_layers} blocks, width {args.lm_width}, 4 heads, "
        "64 positions",
    }
    save_lm(lm, tokenizer, out)
    meta.write_text(json.dumps(info, indent=2))
    return lm.eval(), tokenizer, info


# ---- LM only and combined


def lm_only_ranks(
    completer: LMCompleter, queries: list[tuple[int, int, Side, int]], known: Any, beam: int
) -> list[float]:
    out: list[float] = []
    for entity, relation, side, answer in tqdm(queries, desc="lm-only (beam search)"):
        found = completer.generate(entity, relation, side, beam_size=beam, num_return=beam)
        others = answers_of(known, entity, relation, side, completer) - {answer}
        kept = [(g.entity, g.logprob) for g in found if g.entity not in others]
        ids = [e for e, _ in kept]
        out.append(
            realistic([s for _, s in kept], ids.index(answer)) if answer in ids else math.inf
        )
    return out


def answers_of(known: Any, entity: int, relation: int, side: Side, completer: LMCompleter) -> set:
    num_base = len(completer.artifact.relations)
    rel = relation if side == "tail" else relation + num_base
    _, tails = known.lookup(torch.tensor([[entity, rel]]))
    return set(tails.tolist())


def combined_ranks(
    completer: LMCompleter,
    model: KGEModel,
    triples: torch.Tensor,
    known: Any,
    num_base: int,
    top_n: int,
) -> tuple[list[float], list[float], int]:
    """Re-rank the filtered KGE top-N; beyond it, the KGE rank stands."""
    queries = with_reciprocals(triples, num_base)
    plain = queries_of(triples)
    kge, final, inside = [], [], 0
    w = completer.weights
    ranks, tops = filtered(model.predict_t, queries, known, top_n)
    pairs = list(zip(ranks, tops, strict=True))
    for j, (rank, top) in enumerate(tqdm(pairs, desc="combined re-ranking")):
        entity, relation, side, answer = plain[j]
        kge.append(rank)
        if answer not in top:
            final.append(rank)
            continue
        inside += 1
        scored = completer._score(entity, relation, side, top)
        text = scored.text or [None] * len(top)  # the completers here have no fusion
        combined = [
            w.combine(k, m, t, g)
            for k, m, t, g in zip(scored.kge, scored.lm, text, scored.marginal or [], strict=True)
        ]
        final.append(realistic(combined, top.index(answer)))
    return kge, final, inside


# ---- cold start


def cold_rows(
    model: KGEModel, text: torch.Tensor, cold: list[int], l2: float = 1.0
) -> tuple[KGEModel, float]:
    """A copy of ``model`` whose ``cold`` rows are ridge projections of their text vectors,
    fitted on every other entity."""
    table = model.entity.weight.detach()
    mask = torch.ones(len(table), dtype=torch.bool)
    mask[torch.tensor(cold)] = False
    projection = TextProjection.fit(text[mask], table[mask], l2)
    replaced = copy.deepcopy(model)
    with torch.no_grad():
        replaced.entity.weight[torch.tensor(cold)] = projection.project(text[cold])
    return replaced.eval(), float(projection.info["train_r2"])


def touching(dataset: KGDataset, cold: list[int]) -> torch.Tensor:
    test = dataset.split("test")
    ids = torch.tensor(cold)
    return test[torch.isin(test[:, 0], ids) | torch.isin(test[:, 2], ids)]


# ---- main


def row(name: str, m: dict[str, float], note: str = "") -> dict[str, Any]:
    return {
        "method": name,
        **{k: m[k] for k in ("mrr", "hits@1", "hits@10", "count")},
        "note": note,
    }


#: the printed table's header; :func:`printed_row` writes its rows
PRINTED_HEADER = f"{'method':34s} {'MRR':>7s} {'H@1':>7s} {'H@10':>7s}"


def printed_row(name: str, m: dict[str, Any]) -> str:
    """A row of the printed table: ``name``, then MRR, Hits@1 and Hits@10 under the header."""
    return f"{name:34s} {m['mrr']:7.4f} {m['hits@1']:7.4f} {m['hits@10']:7.4f}"


def add_run_options(p: argparse.ArgumentParser, work_dir: Path) -> None:
    """The options of every language benchmark run (this one and lm_rerank_eval.py): seed,
    the folder of cached models and whether to reuse them, and the JSON output."""
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work-dir", type=Path, default=work_dir)
    p.add_argument("--reuse", action="store_true", help="reuse cached models in --work-dir")
    p.add_argument("--out", type=Path)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", required=True, choices=["wn18rr", "fb15k-237"])
    p.add_argument("--kge-model", type=Path, help="FB15k-237: existing KGE artifact for (a)/(d)")
    p.add_argument("--kge-budget", type=float, default=240, help="seconds per budgeted KGE run")
    p.add_argument("--lm-budget", type=float, default=150, help="seconds of LM training")
    p.add_argument("--sample", type=int, default=300, help="test triples (x2 queries)")
    p.add_argument("--valid-sample", type=int, default=100, help="validation triples to fit on")
    p.add_argument("--rerank-n", type=int, default=20)
    p.add_argument(
        "--fit-method",
        choices=["logistic", "grid"],
        default="logistic",
        help="how the re-ranking weights are fitted on validation (LMCompleter.fit_weights)",
    )
    p.add_argument("--beam", type=int, default=10)
    p.add_argument("--lm-sample", type=int, default=100, help="test triples for LM-only")
    p.add_argument("--cold", type=int, default=50)
    p.add_argument("--vocab", type=int, default=4000)
    p.add_argument("--lm-layers", type=int, default=2)
    p.add_argument("--lm-width", type=int, default=192)
    p.add_argument(
        "--text",
        choices=["auto", "name", "full"],
        default="auto",
        help="entity text for (c)/(d')/(e): name only, or 'name: description'; auto: full on "
        "FB15k-237, name (lemma) only on WN18RR",
    )
    add_run_options(p, Path("/tmp/kgweave-language-eval"))
    args = p.parse_args()
    torch.set_num_threads(2)
    started = time.perf_counter()
    settings = get_settings()
    work = args.work_dir / args.dataset
    work.mkdir(parents=True, exist_ok=True)
    dataset = open_dataset(args.dataset, settings)
    fb = args.dataset == "fb15k-237"
    lemma_only = args.text == "name" or (args.text == "auto" and not fb)
    tag = f"{args.dataset}-{'name' if lemma_only else 'full'}"
    # the text-enhanced model depends on the text; plain models and the LM do not
    text_kge_dir = "text_kge" if lemma_only == (not fb) else f"text_kge-{args.text}"
    reference = None
    if args.kge_model is not None:
        reference = load_artifact(args.kge_model)
        dataset = align_dataset(reference, dataset)
    n, num_base = dataset.num_entities, dataset.num_relations
    known = build_filter(dataset.all_triples(), n, num_base)
    verbalizer = Verbalizer.from_dataset(dataset)
    config = kge_config(args)
    record: dict[str, Any] = {
        "dataset": args.dataset,
        "command": " ".join(["python", *sys.argv]),
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__}",
        "seed": args.seed,
        "kge_config": config.model_dump(),
    }

    # cold-start entities (FB15k-237: truly held out of the budgeted runs)
    cold = pick_cold(dataset, args.cold, args.seed)
    sample, pool = sample_test(dataset, args.sample, args.seed, set(cold) if fb else set())
    record["sample"] = {
        "test_triples": len(sample),
        "queries": 2 * len(sample),
        "drawn_from": pool,
        "excluded_cold_touching": fb,
    }
    print(f"{args.dataset}: {len(sample)} sampled test triples, {len(cold)} cold entities")

    text, text_info = text_vectors(
        dataset, verbalizer, lemma_only=lemma_only, cache=work.parent / f"text-{tag}.pt"
    )
    record["text_vectors"] = {**text_info, "encoder": settings.text_encoder}

    # (a) KGE only, and the budgeted pair for (c)
    train_set = without(dataset, set(cold)) if fb else dataset
    plain_budget, plain_info = train_plain(train_set, config, work / "plain", args.reuse)
    text_model, text_train = train_text_enhanced(
        train_set, config, text, work / text_kge_dir, args.reuse
    )
    if reference is not None:
        kge_model = reference.model.eval()
        kge_note = f"{args.kge_model} (ComplEx dim {reference.model.dim}, existing artifact)"
        kge_path = args.kge_model
    else:
        kge_model = plain_budget
        kge_note = f"ComplEx dim 200, train_model, {args.kge_budget:.0f} s budget"
        kge_path = work / "plain"
    record["kge_only"] = {"model": kge_note, "training": plain_info if reference is None else None}
    r_kge = kge_ranks(kge_model, sample, known, num_base)
    r_plain = kge_ranks(plain_budget, sample, known, num_base)
    r_text = kge_ranks(text_model, sample, known, num_base)

    # (b) LM only
    lm, tokenizer, lm_info = train_small_lm(dataset, verbalizer, args, work / "lm")
    record["lm"] = lm_info

    def completer_on(kge: Any) -> LMCompleter:
        return LMCompleter(
            LinkPredictor(kge),
            lm,
            tokenizer,
            verbalizer=verbalizer,
            top_n=args.rerank_n,
            lm_candidates=0,
            beam_size=args.beam,
        )

    artifact = load_artifact(kge_path)
    completer = completer_on(artifact)
    t0 = time.perf_counter()
    lm_sample = sample[: args.lm_sample]
    r_lm = lm_only_ranks(completer, queries_of(lm_sample), known, args.beam)
    r_kge_lm_sample = kge_ranks(kge_model, lm_sample, known, num_base)
    record["lm_only_seconds"] = round(time.perf_counter() - t0, 1)

    # (d) combined
    t0 = time.perf_counter()
    weights = completer.fit_weights(
        dataset.split("valid"), args.fit_method, max_triples=args.valid_sample, seed=args.seed
    )
    record["fusion_weights"] = weights.to_dict()
    _, r_comb, inside = combined_ranks(
        completer, artifact.model.eval(), sample, known, num_base, args.rerank_n
    )
    record["combined"] = {
        "top_n": args.rerank_n,
        "queries_with_answer_in_top_n": inside,
        "seconds": round(time.perf_counter() - t0, 1),
    }

    # (d') the joint pair: text-enhanced KGE of (c) + the same LM, weights fitted alike
    t0 = time.perf_counter()
    joint_artifact = load_artifact(work / text_kge_dir)
    joint = completer_on(joint_artifact)
    joint_weights = joint.fit_weights(
        dataset.split("valid"), args.fit_method, max_triples=args.valid_sample, seed=args.seed
    )
    _, r_joint, joint_inside = combined_ranks(
        joint, joint_artifact.model.eval(), sample, known, num_base, args.rerank_n
    )
    record["combined_joint"] = {
        "fusion_weights": joint_weights.to_dict(),
        "top_n": args.rerank_n,
        "queries_with_answer_in_top_n": joint_inside,
        "seconds": round(time.perf_counter() - t0, 1),
    }

    # (e) cold start
    cold_triples = touching(dataset, cold)
    cold_models = {
        "rows as trained": plain_budget,
        "text projection (ridge)": cold_rows(plain_budget, text, cold)[0],
    }
    if fb:
        cold_models["text-enhanced model rows"] = text_model
        cold_models["text-enhanced + ridge"] = cold_rows(text_model, text, cold)[0]
        if reference is not None:
            cold_models["reference: 44-min model (seen)"] = reference.model.eval()
    cold_metrics = {
        k: metrics(kge_ranks(m, cold_triples, known, num_base)) for k, m in cold_models.items()
    }
    record["cold_start"] = {
        "entities": [dataset.entities.labels[e] for e in cold],
        "test_triples": len(cold_triples),
        "held_out_of_training": fb,
        "metrics": cold_metrics,
    }

    table = [
        row("(a) KGE only", metrics(r_kge), kge_note),
        row(
            "(b) LM only",
            metrics(r_lm),
            f"constrained beam search, beam {args.beam}, first {len(lm_sample)} sampled triples",
        ),
        row("(a') KGE only, LM-only subset", metrics(r_kge_lm_sample), "same queries as (b)"),
        row("(c0) plain KGE, budget", metrics(r_plain), f"{plain_info}"),
        row("(c) text-enhanced KGE, budget", metrics(r_text), f"{text_train}"),
        row("(d) combined re-ranker", metrics(r_comb), f"KGE top-{args.rerank_n} re-ranked"),
        row(
            "(d') joint: text-KGE (c) + LM",
            metrics(r_joint),
            f"(c)'s top-{args.rerank_n} re-ranked with the LM of (b)",
        ),
    ]
    record["table"] = table
    record["lm_only_metrics"] = metrics(r_lm)
    record["seconds_total"] = round(time.perf_counter() - started, 1)
    out = args.out or ROOT / "results" / f"language_eval_{args.dataset}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2, default=str) + "\n", encoding="utf-8")

    print(f"\n{args.dataset}: {len(sample)} test triples, {2 * len(sample)} queries")
    print(PRINTED_HEADER)
    for r in table:
        print(printed_row(r["method"], r))
    print(f"cold start ({len(cold_triples)} test triples touching {len(cold)} entities):")
    for k, m in cold_metrics.items():
        print(printed_row(f"  {k}", m))
    print(f"fusion weights: {weights.to_dict()}; joint: {joint_weights.to_dict()}")
    print(f"wrote {out} in {record['seconds_total']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
