"""DistMult (Yang et al., 2015): a trilinear product, ``<h, r, t>``."""

from __future__ import annotations

import torch

from kgweave.models.base import KGEModel
from kgweave.typing import AllScores, HRBatch


class DistMult(KGEModel):
    """``score(h, r, t) = sum_i h_i r_i t_i``. Symmetric in head and tail."""

    name = "distmult"

    def interaction(self, h: torch.Tensor, r: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Args: h, r, t: shape (..., D). Returns: shape (...)."""
        return (h * r * t).sum(dim=-1)

    def tail_query(self, hr: HRBatch) -> torch.Tensor:
        """``h * r``: ``<h, r, t> = query . t`` for every t. Args: hr: (B, 2). Returns: (B, D)."""
        query: torch.Tensor = self.lookup_entities(hr[:, 0]) * self.lookup_relations(hr[:, 1])
        return query

    def score_t(self, hr: HRBatch, chunk_size: int = 1024) -> AllScores:
        """One matmul: ``(h * r) @ E^T``. Args: hr: (B, 2). Returns: (B, N)."""
        scores: torch.Tensor = self.tail_query(hr) @ self.entity_table().t()
        return scores

    def score_r(self, ht: torch.Tensor, chunk_size: int = 64) -> torch.Tensor:
        """One matmul: ``(h * t) @ R^T``. Args: ht: (B, 2) of (head, tail) ids. Returns: (B, R)."""
        pair = self.lookup_entities(ht[:, 0]) * self.lookup_entities(ht[:, 1])
        scores: torch.Tensor = pair @ self.relation_table().t()
        return scores
