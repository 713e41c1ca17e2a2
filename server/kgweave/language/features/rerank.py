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

#: how the LM enters the combination: the fact's log-likelihood, or its PMI (the log-likelihood
#: minus ``log P(name alone)``: raw log-probabilities favour short, frequent names)
LM_FEATURES = ("logprob", "pmi")


@dataclass(frozen=True)
class RerankWeights:
    """``combined = w_kge * kge + w_text * text + w_lm * lm + bias``.

    ``kge`` is the embedding model's score, ``text`` the text-fused score
    (:class:`kgweave.language.features.text_fusion.FusedScorer`; 0 without a fusion), ``lm``
    the LM log-likelihood of the verbalized fact (``lm_feature="logprob"``) or its PMI
    (``"pmi"``: minus ``log P(candidate's name alone)``).

    ``w_text=None`` is the two-signal form of earlier artifacts (and of unfitted weights):
    ``w_kge`` then weighs the graph score, the fused score where there is one, else the KGE
    score.
    """

    w_kge: float = 1.0
    w_lm: float = 1.0
    bias: float = 0.0
    method: str = "unfitted"
    #: what fitting saw: queries, candidates, validation MRR of each signal and combined
    report: dict[str, float] = field(default_factory=dict)
    w_text: float | None = None
    lm_feature: str = "logprob"

    def combine(
        self,
        kge_score: float,
        lm_logprob: float,
        text_score: float | None = None,
        lm_marginal: float = 0.0,
    ) -> float:
        """The combined score of one candidate (``text_score``: its fused score, None
        without a text fusion; ``lm_marginal``: ``log P(name alone)``, used by ``pmi``)."""
        lm = lm_logprob - lm_marginal if self.lm_feature == "pmi" else lm_logprob
        if self.w_text is None:  # two signals: w_kge weighs the graph score
            graph = text_score if text_score is not None else kge_score
            return self.w_kge * graph + self.w_lm * lm + self.bias
        text = text_score if text_score is not None else 0.0
        return self.w_kge * kge_score + self.w_text * text + self.w_lm * lm + self.bias

    def describe(self) -> str:
        """The formula with its weights, e.g. ``0.8*kge + 1.2*text + 0.16*pmi + -0.3``."""
        lm = "pmi" if self.lm_feature == "pmi" else "lm"
        if self.w_text is None:
            return f"{self.w_kge:.4g}*graph + {self.w_lm:.4g}*{lm} + {self.bias:.4g}"
        return (
            f"{self.w_kge:.4g}*kge + {self.w_text:.4g}*text + {self.w_lm:.4g}*{lm} "
            f"+ {self.bias:.4g}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "w_kge": self.w_kge,
            "w_text": self.w_text,
            "w_lm": self.w_lm,
            "lm_feature": self.lm_feature,
            "bias": self.bias,
            "method": self.method,
            "report": dict(self.report),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RerankWeights:
        w_text = data.get("w_text")
        return cls(
            float(data["w_kge"]),
            float(data["w_lm"]),
            float(data["bias"]),
            str(data.get("method", "unfitted")),
            {k: float(v) for k, v in dict(data.get("report") or {}).items()},
            None if w_text is None else float(w_text),
            str(data.get("lm_feature", "logprob")),
        )


@dataclass
class Scored:
    """Candidates of one query with every signal (parallel lists)."""

    entities: list[int]
    graph: list[float]  # the fused score where there is a text fusion, else the KGE score
    lm: list[float]  # log P(verbalized fact after the slot's prefix | prefix)
    evidence: list[str]
    kge: list[float]  # the KGE score alone
    text: list[float] | None = None  # the fused score (None without a text fusion)
    marginal: list[float] | None = None  # log P(name alone): the PMI's second term

    def features(self, lm_feature: str | None) -> list[list[float]]:
        """Per candidate: kge, text (with a fusion), then the LM feature (none for None)."""
        columns: list[list[float]] = [self.kge]
        if self.text is not None:
            columns.append(self.text)
        if lm_feature == "pmi":
            marginal = self.marginal or [0.0] * len(self.lm)
            columns.append([a - b for a, b in zip(self.lm, marginal, strict=True)])
        elif lm_feature == "logprob":
            columns.append(self.lm)
        return [list(row) for row in zip(*columns, strict=True)]


def fit_logistic(
    z: torch.Tensor, labels: torch.Tensor, sizes: Sequence[int]
) -> tuple[torch.Tensor, float]:
    """Conditional logistic regression, then a calibrating bias (LBFGS, float64).

    The weights maximise the likelihood of the true candidate within each query's list
    (softmax over the list: KGE scores are only comparable within a query, so this separates
    true facts from their own query's negatives); the bias then makes ``sigmoid(combined)``
    a class-balanced probability of being true (the ranking does not depend on it).

    Args: z: shape (C, D) standardised features, queries' candidates contiguous;
        labels: shape (C,) in {0, 1}, one 1 per query; sizes: candidates per query.
    Returns: weights (D,) and bias, in standardised units.
    """
    width = max(sizes)
    group = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(list(sizes)))
    within = torch.arange(len(z)) - torch.repeat_interleave(
        torch.cumsum(torch.tensor([0, *sizes[:-1]]), 0), torch.tensor(list(sizes))
    )
    dims = z.shape[1]
    features = torch.zeros(len(sizes), width, dims, dtype=z.dtype)
    features[group, within] = z
    mask = torch.zeros(len(sizes), width, dtype=torch.bool)
    mask[group, within] = True
    target = torch.zeros(len(sizes), dtype=torch.long)
    target[group[labels > 0]] = within[labels > 0]
    weights = torch.zeros(dims, dtype=z.dtype, requires_grad=True)
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


def fit_grid(z: torch.Tensor, groups: list[tuple[Scored, int]], steps: int = 11) -> torch.Tensor:
    """The convex mix of the standardised features (weights on a grid of ``steps`` values
    per feature, summing to 1) with the best MRR; ties: the earlier mix (more KGE)."""
    dims = z.shape[1]
    sizes = [len(g.entities) for g, _ in groups]
    targets = [t for _, t in groups]
    best_w, best = torch.eye(dims, dtype=z.dtype)[0], -1.0
    for mix in _simplex(dims, steps - 1):
        w = torch.tensor(mix, dtype=z.dtype) / (steps - 1)
        mrr = ranked_mrr(split_sizes((z @ w).tolist(), sizes), targets)
        if mrr > best + 1e-12:
            best_w, best = w, mrr
    return best_w


def _simplex(dims: int, total: int) -> list[tuple[int, ...]]:
    """Non-negative integer vectors of length ``dims`` summing to ``total`` (first coordinate
    largest first)."""
    if dims == 1:
        return [(total,)]
    return [(a, *rest) for a in range(total, -1, -1) for rest in _simplex(dims - 1, total - a)]


def split_sizes(values: Sequence[float], sizes: Sequence[int]) -> list[list[float]]:
    """``values`` cut into consecutive groups of ``sizes``."""
    out, start = [], 0
    for size in sizes:
        out.append(list(values[start : start + size]))
        start += size
    return out


def ranked_mrr(scores: Sequence[Sequence[float]], targets: Sequence[int]) -> float:
    """MRR of each group's target under its scores; a tie counts half (realistic rank)."""
    if not scores:
        return math.nan
    total = 0.0
    for values, target in zip(scores, targets, strict=True):
        better = sum(1 for v in values if v > values[target])
        ties = sum(1 for v in values if v == values[target]) - 1
        total += 1.0 / (1 + better + ties / 2)
    return total / len(scores)
