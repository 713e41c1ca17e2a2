"""ComplEx (Trouillon et al., 2016): ``Re(<h, r, conj(t)>)`` with complex embeddings.

An embedding of ``dim`` complex components is stored as ``2 * dim`` reals: real parts first, then
imaginary parts.
"""

from __future__ import annotations

import torch

from kgweave.models.base import KGEModel
from kgweave.typing import AllScores, HRBatch, TripleBatch


def _split(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    half = x.shape[-1] // 2
    return x[..., :half], x[..., half:]


class ComplEx(KGEModel):
    """Complex bilinear scoring; models symmetric, antisymmetric and inverse relations."""

    name = "complex"
    real_width = 2

    @staticmethod
    def _query(h: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        """``h * r`` as complex numbers. Args: h, r: (..., 2d). Returns: (..., 2d)."""
        h_re, h_im = _split(h)
        r_re, r_im = _split(r)
        return torch.cat((h_re * r_re - h_im * r_im, h_re * r_im + h_im * r_re), dim=-1)

    def interaction(self, h: torch.Tensor, r: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Args: h, r, t: shape (..., 2d). Returns: shape (...)."""
        return (self._query(h, r) * t).sum(dim=-1)

    def tail_query(self, hr: HRBatch) -> torch.Tensor:
        """``h * r`` as complex numbers: ``Re(h r conj(t)) = query . t`` for every t.
        Args: hr: (B, 2). Returns: (B, 2d)."""
        return self._query(self.lookup_entities(hr[:, 0]), self.lookup_relations(hr[:, 1]))

    def score_t(self, hr: HRBatch, chunk_size: int = 1024) -> AllScores:
        """One matmul: ``Re(h r conj(t))`` for all t. Args: hr: (B, 2). Returns: (B, N)."""
        return self.tail_query(hr) @ self.entity_table().t()

    def score_r(self, ht: torch.Tensor, chunk_size: int = 64) -> torch.Tensor:
        """One matmul: ``Re(h r conj(t)) = r_re·Re(h conj t) - r_im·Im(h conj t)`` for all r.

        Args: ht: (B, 2) of (head, tail) ids. Returns: (B, R).
        """
        h_re, h_im = _split(self.lookup_entities(ht[:, 0]))
        t_re, t_im = _split(self.lookup_entities(ht[:, 1]))
        pair = torch.cat((h_re * t_re + h_im * t_im, h_re * t_im - h_im * t_re), dim=-1)
        return pair @ self.relation_table().t()

    def entity_magnitudes(self, ids: torch.Tensor) -> torch.Tensor:
        """Moduli of the complex coordinates: ids (K,) -> (K, d)."""
        re, im = _split(self.entity(ids))
        return torch.sqrt(re**2 + im**2 + 1e-12)

    def relation_magnitudes(self, ids: torch.Tensor) -> torch.Tensor:
        """Moduli of the complex coordinates: ids (K,) -> (K, d)."""
        re, im = _split(self.relation(ids))
        return torch.sqrt(re**2 + im**2 + 1e-12)

    def factors(self, triples: TripleBatch) -> list[torch.Tensor]:
        """Moduli of the complex coordinates (Lacroix et al., 2018): three (B, d) tensors."""
        out = []
        for emb, ids in (
            (self.entity, triples[:, 0]),
            (self.relation, triples[:, 1]),
            (self.entity, triples[:, 2]),
        ):
            re, im = _split(emb(ids))
            out.append(torch.sqrt(re**2 + im**2 + 1e-12))
        return out
