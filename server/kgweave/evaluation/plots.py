"""Evaluation as a picture: where the true answers rank, per side, and MRR per relation."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

from kgweave.errors import InvalidArgumentError
from kgweave.evaluation.ranking import EvaluationResult


def plot_rank_distribution(
    result: EvaluationResult, path: Path, title: str, max_relations: int = 20
) -> Path:
    """Write a PNG: left, the share of queries per filtered-rank bucket (1, 2-3, 4-10, 11-100,
    ...) for tail and head queries; right, MRR of the ``max_relations`` relations with the most
    queries (when ``result.per_relation`` is filled).

    Args:
        result: from :func:`kgweave.evaluation.ranking.evaluate` (its ``ranks`` are used).
    """
    if result.ranks is None or len(result.ranks) == 0:
        raise InvalidArgumentError("no ranks to plot: the evaluated split is empty")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ranks = result.ranks.double()
    m = len(ranks) // 2
    top = max(float(ranks.max()), 1.0)
    edges = [1.0, 2.0, 4.0, 11.0]
    while edges[-1] <= top:
        edges.append(edges[-1] * 10 - 9)  # 11, 101, 1001, ...
    edges[-1] = max(min(edges[-1], math.floor(top) + 1), edges[-2] + 1)  # end at the worst rank
    labels = [
        "1" if lo == 1 else f"{int(lo)}–{int(hi) - 1}" for lo, hi in itertools.pairwise(edges)
    ]
    per_relation = sorted(
        result.per_relation.items(), key=lambda item: item[1]["count"], reverse=True
    )[:max_relations]
    fig, axes = plt.subplots(
        1, 2 if per_relation else 1, figsize=(12 if per_relation else 7, 4.5), dpi=110
    )
    ax = axes[0] if per_relation else axes
    width = 0.4
    sides = ((-width / 2, "tail", ranks[:m]), (width / 2, "head", ranks[m:]))
    for offset, side, part in sides:
        shares = [
            float(((part >= lo) & (part < hi)).double().mean()) if len(part) else 0.0
            for lo, hi in itertools.pairwise(edges)
        ]
        mrr = result.tail["mrr"] if side == "tail" else result.head["mrr"]
        ax.bar(
            [i + offset for i in range(len(labels))],
            shares,
            width=width,
            label=f"{side} queries (MRR {mrr:.3f})",
        )
    ax.set_xticks(range(len(labels)), labels, rotation=30)
    ax.set_xlabel("filtered rank of the true entity")
    ax.set_ylabel("share of queries")
    ax.set_ylim(0, 1)
    ax.grid(axis="y", alpha=0.3)
    ax.legend()
    overall = result.metrics
    ax.set_title(f"{title}: MRR {overall['mrr']:.3f}, Hits@10 {overall['hits@10']:.3f}")
    if per_relation:
        right = axes[1]
        names = [_short(name) for name, _ in per_relation][::-1]
        values = [m_["mrr"] for _, m_ in per_relation][::-1]
        right.barh(range(len(names)), values, color="tab:green")
        right.set_yticks(range(len(names)), names, fontsize=7)
        right.set_xlim(0, 1)
        right.set_xlabel("MRR (both sides)")
        right.set_title(f"{len(per_relation)} relations with the most queries")
        right.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def _short(name: str, width: int = 40) -> str:
    """The end of a long relation name (``/people/person/...``) is its most telling part."""
    return name if len(name) <= width else "…" + name[-(width - 1) :]


__all__ = ["plot_rank_distribution"]
