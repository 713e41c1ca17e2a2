"""RotatE (Sun et al., 2019): relations as rotations in the complex plane.

``score = -sum_i |h_i * r_i - t_i|`` with ``|r_i| = 1``; a relation is stored as ``dim`` phases.
Entities hold ``dim`` complex components (``2 * dim`` reals, real parts first).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from kgweave.models.base import KGEModel
from kgweave.models.complex import _split
from kgweave.typing import AllScores, HRBatch, TripleBatch


class RotatE(KGEModel):
    """Rotation-based scoring; all-tail scores are computed in entity chunks."""

    name = "rotate"
    real_width = 2

    @property
    def relation_width(self) -> int:
        """One phase per complex component."""
        return self.dim

    def reset_parameters(self) -> None:
        """Entities uniform in a small box; phases uniform on the circle."""
        bound = 1.0 / math.sqrt(self.dim)
        nn.init.uniform_(self.entity.weight, -bound, bound)
        nn.init.uniform_(self.relation.weight, -math.pi, math.pi)

    def initialized_tables(self) -> list[torch.Tensor]:
        """Only the entities: the relations are phases, uniform on the circle."""
        return [self.entity.weight]

    def interaction(self, h: torch.Tensor, r: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Args: h, t: shape (..., 2d); r: shape (..., d) phases. Returns: shape (...)."""
        h_re, h_im = _split(h)
        t_re, t_im = _split(t)
        cos, sin = torch.cos(r), torch.sin(r)
        d_re = h_re * cos - h_im * sin - t_re
        d_im = h_re * sin + h_im * cos - t_im
        return -torch.sqrt(d_re**2 + d_im**2 + 1e-9).sum(dim=-1)

    def score_t(self, hr: HRBatch, chunk_size: int = 1024) -> AllScores:
        """Rotate each head once, then distances to entity chunks.

        Args: hr: (B, 2). Returns: (B, N). Memory per chunk: B × chunk_size × d.
        """
        h_re, h_im = _split(self.lookup_entities(hr[:, 0]))
        r = self.lookup_relations(hr[:, 1])
        cos, sin = torch.cos(r), torch.sin(r)
        q_re = (h_re * cos - h_im * sin).unsqueeze(1)  # (B, 1, d)
        q_im = (h_re * sin + h_im * cos).unsqueeze(1)
        t_re, t_im = _split(self.entity_table())
        chunk_size = max(1, min(chunk_size, (1 << 24) // max(len(hr) * self.dim, 1)))
        parts = []
        for start in range(0, self.num_entities, chunk_size):
            d_re = q_re - t_re[start : start + chunk_size].unsqueeze(0)
            d_im = q_im - t_im[start : start + chunk_size].unsqueeze(0)
            parts.append(-torch.sqrt(d_re**2 + d_im**2 + 1e-9).sum(dim=-1))
        return torch.cat(parts, dim=1)

    def entity_magnitudes(self, ids: torch.Tensor) -> torch.Tensor:
        """Moduli of the complex coordinates: ids (K,) -> (K, d)."""
        re, im = _split(self.entity(ids))
        return torch.sqrt(re**2 + im**2 + 1e-12)

    def relation_magnitudes(self, ids: torch.Tensor) -> None:
        """Rotations have unit modulus: nothing to penalise."""
        return None

    def factors(self, triples: TripleBatch) -> list[torch.Tensor]:
        """Moduli of head and tail coordinates (rotations have unit modulus)."""
        out = []
        for ids in (triples[:, 0], triples[:, 2]):
            re, im = _split(self.entity(ids))
            out.append(torch.sqrt(re**2 + im**2 + 1e-12))
        return out
