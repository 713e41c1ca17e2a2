"""LM scoring throughput for completion re-ranking, in sequences/s: every ``prompt +
continuation`` in full (``lm.sequence_logprob``) against one cached prompt pass with the
candidates batched on it (``LMScorer``), fp32 and bf16, interleaved so both see the same load.

Usage::

    python benchmarks/lm_scoring_speed.py LM_FOLDER [--threads 1] [--rounds 3]

Each round scores ``--prompts`` verbalized queries ("X was born in") x 20 city continuations
with each method; prints sequences/s per method (median over rounds) and whether bf16 keeps
the fp32 order of the candidates.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch

from kgweave.language.components.lm import load_causal_lm, sequence_logprob
from kgweave.language.features.lm_scoring import LMScorer

CITIES = [
    "Warsaw",
    "Paris",
    "London",
    "Tokyo",
    "Berlin",
    "Madrid",
    "Rome",
    "Vienna",
    "Prague",
    "Moscow",
    "Oslo",
    "Athens",
    "Dublin",
    "Lisbon",
    "Bern",
    "Sofia",
    "Riga",
    "Kyiv",
    "Minsk",
    "Baku",
]
PEOPLE = ["Albert Einstein", "Marie Curie", "Franz Kafka", "Niels Bohr", "Alan Turing"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("lm")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--prompts", type=int, default=3)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model, tokenizer = load_causal_lm(args.lm, device="cpu")
    half = copy.deepcopy(model).to(torch.bfloat16)
    conts = [f" {c}." for c in CITIES]
    prompts = [f"{who} was born in" for who in PEOPLE[: args.prompts]]
    rates: dict[str, list[float]] = {"sequence_logprob": [], "LMScorer fp32": [], "bf16": []}
    orders: dict[str, list[list[int]]] = {"fp32": [], "bf16": []}
    for _ in range(args.rounds):
        started = time.perf_counter()
        for prompt in prompts:
            sequence_logprob(model, tokenizer, [prompt] * len(conts), conts)
        rates["sequence_logprob"].append(
            len(prompts) * len(conts) / (time.perf_counter() - started)
        )
        for name, lm in (("LMScorer fp32", model), ("bf16", half)):
            scorer = LMScorer(lm, tokenizer)
            scored = [scorer.score(prompt, conts) for prompt in prompts]
            rates[name].append(scorer.sequences_per_second)
            orders["fp32" if lm is model else "bf16"] = [
                sorted(range(len(conts)), key=lambda i, s=s: -s[i]) for s in scored
            ]
    for name, values in rates.items():
        print(f"{name:18s} {statistics.median(values):7.2f} sequences/s ({args.threads} thread)")
    kept = sum(a == b for a, b in zip(orders["fp32"], orders["bf16"], strict=True))
    print(f"bf16 keeps the fp32 order of the candidates in {kept} of {len(prompts)} prompts")


if __name__ == "__main__":
    main()
