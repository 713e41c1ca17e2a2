"""TransE (Bordes et al., 2013): relations as translations, ``-||h + r - t||_p``."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from kgweave.models.base import KGEModel
from kgweave.typing import AllScores, HRBatch


class TransE(KGEModel):
    """Distance-based scoring; ``p`` is 1 or 2 (2 by default: all-tail scoring is a matmul)."""

    name = "transe"

    def __init__(self, num_entities: int, num_relations: int, dim: int, p: int = 2) -> None:
        if p not in (1, 2):
            raise ValueError("TransE norm p must be 1 or 2")
        self.p = p
        super().__init__(num_entities, num_relations, dim)

    def reset_parameters(self) -> None:
        """Xavier-uniform initialisation, as in the paper."""
        nn.init.xavier_uniform_(self.entity.weight)
        nn.init.xavier_uniform_(self.relation.weight)

    def config(self) -> dict[str, Any]:
        return {**super().config(), "p": self.p}

    def interaction(self, h: torch.Tensor, r: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Args: h, r, t: shape (..., D). Returns: shape (...)."""
        distance: torch.Tensor = torch.linalg.vector_norm(h + r - t, ord=self.p, dim=-1)
        return -distance

    def score_t(self, hr: HRBatch, chunk_size: int = 1024) -> AllScores:
        """All tails at once with ``torch.cdist``. Args: hr: (B, 2). Returns: (B, N)."""
        query = self.lookup_entities(hr[:, 0]) + self.lookup_relations(hr[:, 1])
        weight = self.entity_table()
        if self.p == 2:
            # |q - t|^2 = |q|^2 + |t|^2 - 2 q.t: one matmul; clamp guards rounding below zero
            sq = (query**2).sum(-1, keepdim=True) + (weight**2).sum(-1) - 2 * query @ weight.t()
            return -torch.sqrt(sq.clamp_min(1e-9))
        return -torch.cdist(query, weight, p=1.0)
