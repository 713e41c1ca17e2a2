"""Re-ranking completion candidates: the weights of ``combined = w_kge * kge + w_text * text +
w_lm * lm + bias`` (:class:`RerankWeights`), each query's scored candidates (:class:`Scored`),
and how the weights are fitted on validation (:func:`fit_weights`).

Fitting sees scored candidate lists, each with its true entity's index
(:meth:`kgweave.language.features.completion.LMCompleter.validation_groups` builds them from
the KGE top-N of validation facts). ``method="logistic"`` (default) fits a conditional logistic
regression: the weights maximise the probability of the true entity under a softmax over its
own query's candidates (KGE scores are comparable only within a query), then ``bias`` is fitted
so that ``sigmoid(combined)`` is a class-balanced probability of the fact being true (features
standardised while fitting, weights mapped back to raw units); ``method="grid"`` picks the
convex mix of the standardised features that maximises validation MRR. Both LM features
(log-likelihood and PMI) are fitted; the one with the better **two-fold cross-validated** MRR
over the validation queries is kept (then refitted on all of them), and the report keeps both
fits' weights and MRRs beside the signals' own.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

import torch
import torch.nn.functional as F

from kgweave.errors import FailedPreconditionError, InvalidArgumentError, echo

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
        return asdict(self)

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

    def signals(self) -> list[tuple[float, float, float | None, float]]:
        """Per candidate, as :meth:`RerankWeights.combine` takes them: kge, lm, text (None
        without a fusion) and the marginal (0 when not scored)."""
        n = len(self.kge)
        text: list[float | None] = list(self.text) if self.text is not None else [None] * n
        marginal = self.marginal or [0.0] * n
        return list(zip(self.kge, self.lm, text, marginal, strict=True))

    def combined(self, weights: RerankWeights) -> list[float]:
        """Every candidate's combined score under ``weights``."""
        return [weights.combine(*signals) for signals in self.signals()]


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


def check_fit(method: str, lm_features: tuple[str, ...]) -> None:
    """A clear error for a fitting method or LM feature that does not exist."""
    if method not in ("logistic", "grid"):
        raise InvalidArgumentError(f"unknown fitting method {echo(method)}: logistic or grid")
    if not lm_features or any(f not in LM_FEATURES for f in lm_features):
        raise InvalidArgumentError(f"lm_features must be among {', '.join(LM_FEATURES)}")


def fit_weights(
    groups: list[tuple[Scored, int]],
    method: Literal["logistic", "grid"] = "logistic",
    lm_features: tuple[str, ...] = LM_FEATURES,
    extra: dict[str, float] | None = None,
    lm_sequences_per_s: float = 0.0,
) -> RerankWeights:
    """The weights fitted on scored candidate lists (each with its true entity's index; see the
    module docstring).

    Args:
        lm_features: the LM features to try (``logprob``, ``pmi``); the better by two-fold
            cross-validated MRR is kept.
        extra: joins the report (after ``queries``); lm_sequences_per_s: the LM's scoring
            throughput, for the report.
    Returns:
        the fitted weights, with a report: queries, candidates, the validation MRR of each
        signal alone, of each LM feature's fit (in-sample and cross-validated, with its weights)
        and of the chosen combination.
    """
    check_fit(method, lm_features)
    if not groups or not any(len(g.entities) > 1 for g, _ in groups):
        raise FailedPreconditionError(
            "cannot fit re-ranking weights: no validation query has a negative candidate"
        )
    has_text = groups[0][0].text is not None
    targets = [t for _, t in groups]
    report: dict[str, float] = {
        "queries": float(len(groups)),
        **(extra or {}),
        "candidates": float(sum(len(g.entities) for g, _ in groups)),
        "valid_mrr_kge": ranked_mrr([g.kge for g, _ in groups], targets),
        "valid_mrr_lm": ranked_mrr([g.lm for g, _ in groups], targets),
        "valid_mrr_pmi": ranked_mrr(
            [[a - b for a, b in zip(g.lm, g.marginal or [], strict=True)] for g, _ in groups],
            targets,
        ),
        "lm_sequences_per_s": lm_sequences_per_s,
    }
    if has_text:
        report["valid_mrr_text"] = ranked_mrr([g.text or [] for g, _ in groups], targets)
    best: tuple[float, RerankWeights] | None = None
    for feature in (None, *lm_features):
        weights = _fit(groups, feature, method, has_text)
        name = feature or "no_lm"
        report[f"{name}_valid_mrr"] = _mrr(groups, weights)
        report[f"{name}_cv_mrr"] = _cross_validated(groups, feature, method, has_text)
        for key in ("w_kge", "w_text", "w_lm"):
            report[f"{name}_{key}"] = float(getattr(weights, key) or 0.0)
        report.update({f"{name}_{k}": v for k, v in weights.report.items()})
        if feature is not None and (best is None or report[f"{name}_cv_mrr"] > best[0]):
            best = (report[f"{name}_cv_mrr"], weights)
    assert best is not None
    chosen = best[1]
    report["valid_mrr_combined"] = _mrr(groups, chosen)
    report.update(chosen.report)  # z_kge, z_text, z_lm: the standardised weights
    return replace(chosen, method=method, report=report)


def _fit(
    groups: list[tuple[Scored, int]], feature: str | None, method: str, has_text: bool
) -> RerankWeights:
    """Weights over kge, text (with a fusion) and the LM ``feature`` (none for None)."""
    x = torch.tensor([row for g, _ in groups for row in g.features(feature)], dtype=torch.float64)
    labels = torch.tensor(
        [1.0 if i == t else 0.0 for g, t in groups for i in range(len(g.entities))],
        dtype=torch.float64,
    )
    mean, std = x.mean(dim=0), x.std(dim=0).nan_to_num(1.0).clamp(min=1e-6)
    z = (x - mean) / std
    if method == "logistic":
        w_std, b_std = fit_logistic(z, labels, [len(g.entities) for g, _ in groups])
    else:
        w_std, b_std = fit_grid(z, groups), 0.0
    w = (w_std / std).tolist()
    bias = b_std - float((w_std * mean / std).sum())
    w_text = w[1] if has_text else 0.0
    w_lm = w[-1] if feature is not None else 0.0
    zw = [float(x) for x in w_std.tolist()]  # standardised: comparable across features
    scale = {"z_kge": zw[0], "z_text": zw[1] if has_text else 0.0}
    scale["z_lm"] = zw[-1] if feature is not None else 0.0
    return RerankWeights(w[0], w_lm, bias, method, scale, w_text, feature or "logprob")


def _mrr(groups: list[tuple[Scored, int]], weights: RerankWeights) -> float:
    return ranked_mrr([g.combined(weights) for g, _ in groups], [t for _, t in groups])


def _cross_validated(
    groups: list[tuple[Scored, int]], feature: str | None, method: str, has_text: bool
) -> float:
    """Two-fold MRR: fit on the even queries, rank the odd ones, and the other way round."""
    folds = [groups[0::2], groups[1::2]]
    if not all(any(len(g.entities) > 1 for g, _ in f) for f in folds):
        return _mrr(groups, _fit(groups, feature, method, has_text))
    total = 0.0
    for train, held in ((folds[0], folds[1]), (folds[1], folds[0])):
        total += _mrr(held, _fit(train, feature, method, has_text)) * len(held)
    return total / len(groups)
