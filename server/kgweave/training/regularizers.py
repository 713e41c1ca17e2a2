"""Embedding regularisers: N3 (Lacroix et al., 2018) and L2.

Both penalise the embeddings of the batch's positive triples, each occurrence counted once.
Two equivalent forms: per-triple lookups (:func:`regularization`, for negative sampling, where
only the batch's rows are touched) and frequency-weighted distinct rows
(:func:`weighted_regularization`, for 1-N regimes, whose batches repeat the same rows many
times: each distinct row once, weighted by its count, which avoids the slow backward of
thousands of repeated embedding lookups).
"""

from __future__ import annotations

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


def weighted_regularization(
    model: KGEModel, triples: torch.Tensor, kind: str, weight: float
) -> torch.Tensor:
    """The same penalty as :func:`regularization` over ``triples``, from distinct rows.

    Args:
        triples: shape (T, 3) positive triples of the batch.
    Returns:
        scalar tensor: ``weight / T * sum over triples of (|h|^p + |r|^p + |t|^p)``.
    """
    power = _power(kind)
    count = max(len(triples), 1)
    # each distinct embedding row once, weighted by how often the batch uses it; on small graphs
    # the whole table with bincount weights is cheaper than finding the distinct rows
    used = torch.cat((triples[:, 0], triples[:, 2]))
    if model.num_entities <= _SMALL_GRAPH:
        entities = torch.arange(model.num_entities, device=used.device)
        entity_counts = torch.bincount(used, minlength=model.num_entities)
    else:
        entities, entity_counts = torch.unique(used, return_counts=True)
    magnitudes = model.entity_magnitudes(entities)
    total: torch.Tensor = entity_counts.to(magnitudes.dtype) @ (magnitudes**power).sum(dim=1)
    relations, relation_counts = torch.unique(triples[:, 1], return_counts=True)
    per_relation = model.relation_magnitudes(relations)
    if per_relation is not None:
        counts = relation_counts.to(per_relation.dtype)
        total = total + counts @ (per_relation**power).sum(dim=1)
    return weight * total / count
