"""Re-ranking completion candidates: ``combined = w_kge * graph_score + w_lm * lm_logprob +
bias``, and how the weights are fitted on validation (a conditional logistic regression, or a
grid over the mix that maximises MRR; see :mod:`kgweave.language.features.completion`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class RerankWeights:
    """``combined = w_kge * graph_score + w_lm * lm_logprob + bias`` (``graph_score``: the
    KGE score, or the text-fused score when there is a text fusion)."""

    w_kge: float = 1.0
    w_lm: float = 1.0
    bias: float = 0.0
    method: str = "unfitted"
    #: what fitting saw: queries, candidates, validation MRR of KGE alone and combined
    report: dict[str, float] = field(default_factory=dict)

    def combine(self, kge_score: float, lm_logprob: float) -> float:
        """The combined score of one candidate."""
        return self.w_kge * kge_score + self.w_lm * lm_logprob + self.bias

    def to_dict(self) -> dict[str, Any]:
        return {
            "w_kge": self.w_kge,
            "w_lm": self.w_lm,
            "bias": self.bias,
            "method": self.method,
            "report": dict(self.report),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RerankWeights:
        return cls(
            float(data["w_kge"]),
            float(data["w_lm"]),
            float(data["bias"]),
            str(data.get("method", "unfitted")),
            {k: float(v) for k, v in dict(data.get("report") or {}).items()},
        )


@dataclass
class Scored:
    """Candidates of one query with both features (parallel lists)."""

    entities: list[int]
    graph: list[float]  # what the re-ranker weighs: the fused score, else the KGE score
    lm: list[float]
    evidence: list[str]
    kge: list[float]  # the KGE score alone


def fit_logistic(
    z: torch.Tensor, labels: torch.Tensor, sizes: Sequence[int]
) -> tuple[torch.Tensor, float]:
    """Conditional logistic regression, then a calibrating bias (LBFGS, float64).

    The weights maximise the likelihood of the true candidate within each query's list
    (softmax over the list: KGE scores are only comparable within a query, so this separates
    true facts from their own query's negatives); the bias then makes ``sigmoid(combined)``
    a class-balanced probability of being true (the ranking does not depend on it).

    Args: z: shape (C, 2) standardised features, queries' candidates contiguous;
        labels: shape (C,) in {0, 1}, one 1 per query; sizes: candidates per query.
    Returns: weights (2,) and bias, in standardised units.
    """
    width = max(sizes)
    group = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(list(sizes)))
    within = torch.arange(len(z)) - torch.repeat_interleave(
        torch.cumsum(torch.tensor([0, *sizes[:-1]]), 0), torch.tensor(list(sizes))
    )
    features = torch.zeros(len(sizes), width, 2, dtype=z.dtype)
    features[group, within] = z
    mask = torch.zeros(len(sizes), width, dtype=torch.bool)
    mask[group, within] = True
    target = torch.zeros(len(sizes), dtype=torch.long)
    target[group[labels > 0]] = within[labels > 0]
    weights = torch.zeros(2, dtype=z.dtype, requires_grad=True)
    optimizer = torch.optim.LBFGS([weights], max_iter=200, line_search_fn="strong_wolfe")

    def listwise() -> torch.Tensor:
        optimizer.zero_grad()
        logits = (features @ weights).masked_fill(~mask, float("-inf"))  # (G, width)
        loss = F.cross_entropy(logits, target) + 1e-3 * (weights**2).sum()
        loss.backward()  # type: ignore[no-untyped-call]
        return loss

    optimizer.step(listwise)  # type: ignore[no-untyped-call]
    found = weights.detach()
    positives = float(labels.sum())
    pos_weight = torch.tensor((len(labels) - positives) / max(positives, 1.0), dtype=z.dtype)
    base = z @ found
    bias = torch.zeros(1, dtype=z.dtype, requires_grad=True)
    calibrate = torch.optim.LBFGS([bias], max_iter=100, line_search_fn="strong_wolfe")

    def pooled() -> torch.Tensor:
        calibrate.zero_grad()
        loss = F.binary_cross_entropy_with_logits(base + bias, labels, pos_weight=pos_weight)
        loss.backward()  # type: ignore[no-untyped-call]
        return loss

    calibrate.step(pooled)  # type: ignore[no-untyped-call]
    return found, float(bias.detach()[0])


def fit_grid(z: torch.Tensor, groups: list[tuple[Scored, int]], steps: int = 21) -> torch.Tensor:
    """The mix ``(1 - a) * z_kge + a * z_lm`` (a in 0..1) with the best MRR; ties: smaller a."""
    best_a, best = 0.0, -1.0
    sizes = [len(g.entities) for g, _ in groups]
    for i in range(steps):
        a = i / (steps - 1)
        scores = ((1 - a) * z[:, 0] + a * z[:, 1]).tolist()
        rr, start = 0.0, 0
        for size, (_, target) in zip(sizes, groups, strict=True):
            part = scores[start : start + size]
            rr += 1.0 / (1 + sum(1 for x in part if x > part[target]))
            start += size
        mrr = rr / len(groups)
        if mrr > best + 1e-12:
            best_a, best = a, mrr
    return torch.tensor([1 - best_a, best_a], dtype=z.dtype)


def group_mrr(groups: list[tuple[Scored, int]], score: Any) -> float:
    """MRR of the true candidate within each group under ``score(kge, lm)`` (ties: optimistic
    for none: a tie counts half)."""
    total = 0.0
    for g, target in groups:
        values = [score(kg, lm) for kg, lm in zip(g.graph, g.lm, strict=True)]
        better = sum(1 for v in values if v > values[target])
        ties = sum(1 for v in values if v == values[target]) - 1
        total += 1.0 / (1 + better + ties / 2)
    return total / max(len(groups), 1) if groups else math.nan
