"""Embedding regularisers: N3 (Lacroix et al., 2018) and L2.

Both penalise the embeddings of the batch's positive triples, each occurrence counted once.
Two equivalent forms, methods of a :class:`Penalty`: per-triple lookups
(:meth:`Penalty.per_triple`, for negative sampling, where only the batch's rows are touched) and
frequency-weighted distinct rows (:meth:`Penalty.weighted`, for 1-N regimes, whose batches repeat
the same rows many times: each distinct row once, weighted by its count, which avoids the slow
backward of thousands of repeated embedding lookups).

Each side has its own weight (``TrainConfig.entity_reg_weight`` / ``relation_reg_weight``,
both ``reg_weight`` by default).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from kgweave.models.base import KGEModel

#: graphs up to this many entities regularise from the whole entity table
_SMALL_GRAPH = 5_000


def _power(kind: str) -> int:
    return 3 if kind == "n3" else 2


def regularization(factors: list[torch.Tensor], kind: str, weight: float) -> torch.Tensor:
    """Weighted penalty of a batch's embedding magnitudes.

    Args:
        factors: tensors of shape (B, d) of non-negative magnitudes (see ``KGEModel.factors``).
        kind: ``n3`` (sum of cubes), ``l2`` (sum of squares) or ``none``.
    Returns:
        scalar tensor, averaged over the batch.
    """
    if kind == "none" or weight == 0 or not factors:
        return factors[0].new_zeros(()) if factors else torch.zeros(())
    batch = factors[0].shape[0]
    total = sum((f ** _power(kind)).sum() for f in factors)
    assert isinstance(total, torch.Tensor)
    return weight * total / max(batch, 1)


@dataclass(frozen=True)
class Penalty:
    """A regulariser of a batch's positive triples: ``kind`` (``n3``, ``l2`` or ``none``) and the
    weight of each side (``relation_weight`` None: ``weight``), computed either way below."""

    kind: str
    weight: float
    relation_weight: float | None = None

    @property
    def relation(self) -> float:
        """The weight of the relation side."""
        return self.weight if self.relation_weight is None else self.relation_weight

    def per_triple(self, model: KGEModel, triples: torch.Tensor) -> torch.Tensor:
        """:func:`regularization` of ``triples`` (T, 3) from per-triple lookups, each side
        weighted apart. Returns: scalar tensor."""
        entities = [model.entity_magnitudes(triples[:, 0]), model.entity_magnitudes(triples[:, 2])]
        total = regularization(entities, self.kind, self.weight)
        relations = model.relation_magnitudes(triples[:, 1])
        if relations is not None:
            total = total + regularization([relations], self.kind, self.relation)
        return total

    def weighted(self, model: KGEModel, triples: torch.Tensor) -> torch.Tensor:
        """The same penalty as :meth:`per_triple` over ``triples``, from distinct rows.

        Args:
            triples: shape (T, 3) positive triples of the batch.
        Returns:
            scalar tensor: ``(we * sum(|h|^p + |t|^p) + wr * sum |r|^p) / T`` over the triples.
        """
        power = _power(self.kind)
        count = max(len(triples), 1)
        # each distinct embedding row once, weighted by how often the batch uses it; on small
        # graphs the whole table with bincount weights is cheaper than finding the distinct rows
        used = torch.cat((triples[:, 0], triples[:, 2]))
        if model.num_entities <= _SMALL_GRAPH:
            entities = torch.arange(model.num_entities, device=used.device)
            entity_counts = torch.bincount(used, minlength=model.num_entities)
        else:
            entities, entity_counts = torch.unique(used, return_counts=True)
        magnitudes = model.entity_magnitudes(entities)
        total: torch.Tensor = self.weight * (
            entity_counts.to(magnitudes.dtype) @ (magnitudes**power).sum(dim=1)
        )
        relations, relation_counts = torch.unique(triples[:, 1], return_counts=True)
        per_relation = model.relation_magnitudes(relations)
        if per_relation is not None:
            counts = relation_counts.to(per_relation.dtype)
            total = total + self.relation * (counts @ (per_relation**power).sum(dim=1))
        return total / count
