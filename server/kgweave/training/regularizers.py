"""Embedding regularisers: N3 (Lacroix et al., 2018) and L2.

Both penalise the embeddings of the batch's positive triples, each occurrence counted once.
Two equivalent forms: per-triple lookups (:func:`regularization`, for negative sampling, where
only the batch's rows are touched) and frequency-weighted dense tables
(:func:`weighted_regularization`, for 1-N regimes, which touch every entity anyway; it avoids
the slow backward of thousands of embedding lookups).
"""

from __future__ import annotations

import torch

from kgweave.models.base import KGEModel


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


def weighted_regularization(
    model: KGEModel, triples: torch.Tensor, kind: str, weight: float
) -> torch.Tensor:
    """The same penalty as :func:`regularization` over ``triples``, from dense tables.

    Args:
        triples: shape (T, 3) positive triples of the batch.
    Returns:
        scalar tensor: ``weight / T * sum over triples of (|h|^p + |r|^p + |t|^p)``.
    """
    power = _power(kind)
    count = max(len(triples), 1)
    entity_counts = torch.bincount(
        torch.cat((triples[:, 0], triples[:, 2])), minlength=model.num_entities
    ).to(model.entity.weight.dtype)
    total = entity_counts @ (model.entity_magnitudes() ** power).sum(dim=1)
    relations = model.relation_magnitudes()
    if relations is not None:
        relation_counts = torch.bincount(triples[:, 1], minlength=model.num_relations)
        total = total + relation_counts.to(relations.dtype) @ (relations**power).sum(dim=1)
    return weight * total / count
