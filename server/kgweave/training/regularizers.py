"""Embedding regularisers: N3 (Lacroix et al., 2018) and L2.

Both penalise the embeddings of the batch's positive triples, each occurrence counted once.
Two equivalent forms: per-triple lookups (:func:`regularization`, for negative sampling, where
only the batch's rows are touched) and frequency-weighted distinct rows
(:func:`weighted_regularization`, for 1-N regimes, whose batches repeat the same rows many
times: each distinct row once, weighted by its count, which avoids the slow backward of
thousands of repeated embedding lookups).

Each side has its own weight (``TrainConfig.entity_reg_weight`` / ``relation_reg_weight``,
both ``reg_weight`` by default).
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


def per_triple_regularization(
    model: KGEModel,
    triples: torch.Tensor,
    kind: str,
    weight: float,
    relation_weight: float | None = None,
) -> torch.Tensor:
    """:func:`regularization` of ``triples`` (T, 3) from per-triple lookups, each side
    weighted apart (``relation_weight`` None: ``weight``). Returns: scalar tensor."""
    relation_weight = weight if relation_weight is None else relation_weight
    entities = [model.entity_magnitudes(triples[:, 0]), model.entity_magnitudes(triples[:, 2])]
    total = regularization(entities, kind, weight)
    relations = model.relation_magnitudes(triples[:, 1])
    if relations is not None:
        total = total + regularization([relations], kind, relation_weight)
    return total


def weighted_regularization(
    model: KGEModel,
    triples: torch.Tensor,
    kind: str,
    weight: float,
    relation_weight: float | None = None,
) -> torch.Tensor:
    """The same penalty as :func:`regularization` over ``triples``, from distinct rows.

    Args:
        triples: shape (T, 3) positive triples of the batch.
        weight: of the entity side (and of the relation side unless ``relation_weight``).
    Returns:
        scalar tensor: ``(we * sum(|h|^p + |t|^p) + wr * sum |r|^p) / T`` over the triples.
    """
    relation_weight = weight if relation_weight is None else relation_weight
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
    total: torch.Tensor = weight * (
        entity_counts.to(magnitudes.dtype) @ (magnitudes**power).sum(dim=1)
    )
    relations, relation_counts = torch.unique(triples[:, 1], return_counts=True)
    per_relation = model.relation_magnitudes(relations)
    if per_relation is not None:
        counts = relation_counts.to(per_relation.dtype)
        total = total + relation_weight * (counts @ (per_relation**power).sum(dim=1))
    return total / count
