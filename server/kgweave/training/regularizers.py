"""Embedding regularisers: N3 (Lacroix et al., 2018) and L2, on the batch's factors."""

from __future__ import annotations

import torch


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
    power = 3 if kind == "n3" else 2
    batch = factors[0].shape[0]
    total = sum((f**power).sum() for f in factors)
    assert isinstance(total, torch.Tensor)
    return weight * total / max(batch, 1)
