"""Filtered ranking against all entities, on both sides, with realistic tie handling.

For a test triple ``(h, r, t)`` the tail side ranks ``t`` among all entities for ``(h, r, ?)``
and the head side ranks ``h`` for ``(?, r, t)``, computed as tails of the reciprocal query
``(t, r + R, ?)``. "Filtered": every other entity that forms a known triple (train, valid or
test) is removed from the ranking. Ties count the realistic way: the mean of the optimistic rank
(``1 + #better``) and the pessimistic rank (``1 + #better + #tied others``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from kgweave.data.dataset import TailIndex, with_reciprocals
from kgweave.errors import DivergedError
from kgweave.models.base import KGEModel
from kgweave.models.products import TailScorer

HITS_AT = (1, 3, 10)

#: (B, 2) queries -> (B, N) scores of every entity
Scorer = Callable[[torch.Tensor], torch.Tensor]


def realistic_rank(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Realistic 1-based rank of each row's target among the row's scores.

    Filtered-out candidates must already be ``-inf`` (and the target must not be).

    Args:
        scores: shape (B, N).
        targets: shape (B,) entity ids.
    Returns:
        shape (B,) float ranks.
    """
    target_scores = scores.gather(1, targets.unsqueeze(1))
    better = (scores > target_scores).sum(dim=1)
    tied = (scores == target_scores).sum(dim=1) - 1  # the target ties with itself
    return 1.0 + better.double() + tied.double() / 2.0


#: scores one CPU evaluation pass holds (8 MB in fp32): the pass's few sweeps over its
#: ``(B, N)`` scores (filter, compare, count) then run in cache. 2 cores, ComplEx-200:
#: FB15k-237 test 6.4-6.7 s with 4,096-query passes (238 MB), 2.4-3.7 s with these (144
#: queries); WN18RR 2.8-2.9 s -> 1.3-1.7 s (51 queries). docs/benchmarks.md
CPU_PASS_SCORES = 1 << 21
#: on an accelerator: few large passes (its memory is fast and every launch costs)
DEVICE_PASS_SCORES = 64 << 20


_NON_FINITE = (
    "the model's scores are NaN or infinite: training diverged (lower the learning rate); "
    "a diverged model is never evaluated, saved or served"
)


def ranking_batch_size(num_entities: int, device: torch.device) -> int:
    """Queries per evaluation pass: ``CPU_PASS_SCORES`` scores on the CPU (at least 16
    queries), ``DEVICE_PASS_SCORES`` elsewhere (at least 1); at most 4,096."""
    if device.type == "cpu":
        return max(16, min(4096, CPU_PASS_SCORES // max(num_entities, 1)))
    return max(1, min(4096, DEVICE_PASS_SCORES // max(num_entities, 1)))


def filtered_ranks(
    model: KGEModel,
    queries: torch.Tensor,
    known: TailIndex,
    batch_size: int | None = None,
    progress: bool = False,
    scorer: Scorer | None = None,
    prepack: bool = True,
) -> torch.Tensor:
    """Filtered realistic ranks of the tails of ``queries``.

    Args:
        queries: shape (Q, 3) of (head, relation, tail), relations may be reciprocal ids.
        known: index of every known triple (with reciprocals), on the model's device.
        batch_size: queries per scoring pass; by default :func:`ranking_batch_size`.
        scorer: scores of every entity for (B, 2) queries, shape (B, N) on the model's
            device; default the model's own, through a :class:`TailScorer` (the entity table
            prepacked once for this pass on the CPU unless ``prepack`` is false, as
            ``KGWEAVE_SCORE_PREPACK=false`` asks of ``kgweave eval``); e.g. a text fusion's
            scores instead.
    Returns:
        shape (Q,) float64 ranks, on the CPU.
    Raises:
        DivergedError: a score is NaN or infinite.
    """
    device = model.entity.weight.device
    if batch_size is None:
        batch_size = ranking_batch_size(model.num_entities, device)
    if scorer is None:
        scorer = TailScorer(model, prepack=prepack)
    out = []
    bar = tqdm(total=len(queries), unit="q", desc="evaluate", disable=not progress, leave=False)
    for start in range(0, len(queries), batch_size):
        batch = queries[start : start + batch_size].to(device)
        scores = scorer(batch[:, :2])
        # NaN compares false both ways, so it would rank as "better than everything" (MRR 2.0):
        # refuse. One row-sum sweep catches any NaN or inf (a quarter of a comparison's cost)
        if not bool(torch.isfinite(scores.sum(dim=1)).all()):
            raise DivergedError(_NON_FINITE)
        rows, tails = known.lookup(batch[:, :2])
        targets = batch[:, 2]
        target_scores = scores[torch.arange(len(batch), device=device), targets]
        scores[rows, tails] = float("-inf")
        scores[torch.arange(len(batch), device=device), targets] = target_scores
        out.append(realistic_rank(scores, targets).cpu())
        bar.update(len(batch))
    bar.close()
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.float64)


def metrics_from_ranks(ranks: torch.Tensor) -> dict[str, float]:
    """MRR, Hits@1/3/10 and mean rank of a (Q,) tensor of ranks."""
    if len(ranks) == 0:
        return {"mrr": 0.0, **{f"hits@{k}": 0.0 for k in HITS_AT}, "mean_rank": 0.0, "count": 0}
    ranks = ranks.double()
    return {
        "mrr": float((1.0 / ranks).mean()),
        **{f"hits@{k}": float((ranks <= k).double().mean()) for k in HITS_AT},
        "mean_rank": float(ranks.mean()),
        "count": len(ranks),
    }


@dataclass
class EvaluationResult:
    """Both-sides metrics plus per-side and per-relation breakdowns."""

    metrics: dict[str, float]
    tail: dict[str, float]
    head: dict[str, float]
    per_relation: dict[str, dict[str, float]] = field(default_factory=dict)
    #: shape (2M,) the realistic filtered ranks: M tail queries, then M head queries
    ranks: torch.Tensor | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, object]:
        return {
            **self.metrics,
            "tail": self.tail,
            "head": self.head,
            "per_relation": self.per_relation,
        }


def evaluate(
    model: KGEModel,
    triples: torch.Tensor,
    known: TailIndex,
    relation_labels: list[str] | None = None,
    batch_size: int | None = None,
    progress: bool = False,
    scorer: Scorer | None = None,
    prepack: bool = True,
) -> EvaluationResult:
    """Filtered evaluation of ``triples`` (shape (M, 3), relations in ``0..R/2-1``).

    ``known`` must index every known triple with reciprocals (see :func:`build_filter`).
    """
    num_base = model.num_relations // 2
    queries = with_reciprocals(triples, num_base)  # tails first, then heads
    ranks = filtered_ranks(
        model,
        queries,
        known,
        batch_size=batch_size,
        progress=progress,
        scorer=scorer,
        prepack=prepack,
    )
    return result_of_ranks(ranks.detach().cpu(), triples, relation_labels)


def result_of_ranks(
    ranks: torch.Tensor, triples: torch.Tensor, relation_labels: list[str] | None = None
) -> EvaluationResult:
    """The metrics of ``ranks`` (shape (2M,): the M tail queries of ``triples``, shape (M, 3),
    then their M head queries), by side and, with ``relation_labels``, by relation."""
    m = len(triples)
    tail_ranks, head_ranks = ranks[:m], ranks[m:]
    per_relation: dict[str, dict[str, float]] = {}
    if relation_labels is not None and m:
        grouped: dict[int, list[int]] = defaultdict(list)
        for i, rel in enumerate(triples[:, 1].tolist()):
            grouped[rel].append(i)
        for rel, idx in sorted(grouped.items()):
            index = torch.tensor(idx)
            both = torch.cat((tail_ranks[index], head_ranks[index]))
            per_relation[relation_labels[rel]] = metrics_from_ranks(both)
    return EvaluationResult(
        metrics=metrics_from_ranks(ranks),
        tail=metrics_from_ranks(tail_ranks),
        head=metrics_from_ranks(head_ranks),
        per_relation=per_relation,
        ranks=ranks,
    )


def build_filter(all_triples: torch.Tensor, num_entities: int, num_relations: int) -> TailIndex:
    """Index of every known triple with reciprocals, for filtered ranking.

    Args:
        all_triples: shape (M, 3), relations in ``0..num_relations-1`` (no reciprocals).
    """
    return TailIndex(with_reciprocals(all_triples, num_relations), num_entities, 2 * num_relations)
