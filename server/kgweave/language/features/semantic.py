"""Semantic search over entity texts: free text (a user's words, a language model's answer) to
the entities whose text vectors are closest by cosine similarity."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from kgweave import arguments
from kgweave.errors import FailedPreconditionError, InvalidArgumentError

if TYPE_CHECKING:
    from kgweave.language.components.encoder import TextEncoder


class SemanticIndex:
    """Exact cosine top-k over a fixed set of labelled vectors.

    Args:
        vectors: shape (N, D); normalised here (zero rows stay zero and never match).
        labels: N labels (entity ids), in row order.
        encoder: optional; lets :meth:`search` take texts.
        chunk_size: rows of the index scored at once, to bound memory on large graphs.
    """

    def __init__(
        self,
        vectors: torch.Tensor,
        labels: Sequence[str],
        encoder: TextEncoder | None = None,
        chunk_size: int = 65536,
    ) -> None:
        if vectors.dim() != 2 or vectors.shape[0] != len(labels):
            raise InvalidArgumentError(
                f"vectors of shape {tuple(vectors.shape)} do not fit {len(labels)} labels"
            )
        self.vectors = torch.nn.functional.normalize(vectors.detach().float(), dim=1)  # (N, D)
        self.labels = list(labels)
        self.encoder = encoder
        self.chunk_size = chunk_size

    @classmethod
    def from_texts(
        cls,
        texts: Sequence[str],
        labels: Sequence[str],
        encoder: TextEncoder,
        batch_size: int = 64,
        progress: bool = False,
    ) -> SemanticIndex:
        """Encode ``texts`` (one per label) with ``encoder`` and index them."""
        return cls(encoder.encode(texts, batch_size, progress), labels, encoder)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def _queries(self, queries: torch.Tensor | Sequence[str] | str) -> torch.Tensor:
        if isinstance(queries, str):
            queries = [queries]
        if not isinstance(queries, torch.Tensor):
            if self.encoder is None:
                raise FailedPreconditionError("this index has no text encoder: pass vectors")
            return self.encoder.encode(list(queries))
        if queries.dim() == 1:
            queries = queries.unsqueeze(0)
        if queries.shape[1] != self.dim:
            raise InvalidArgumentError(
                f"query vectors have {queries.shape[1]} dimensions, the index {self.dim}"
            )
        return queries

    def topk(
        self, queries: torch.Tensor | Sequence[str] | str, k: int = 10
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Scores and row ids of the ``k`` nearest entries of each query.

        Args:
            queries: shape (B, D) or (D,) vectors, or texts (needs an encoder).
        Returns:
            (scores, ids): two tensors of shape (B, k') with k' = min(k, N), best first; ties
            go to the lower row id.
        """
        if not 1 <= k <= arguments.MAX_K:
            raise InvalidArgumentError(f"k must be between 1 and {arguments.MAX_K}, got {k}")
        q = torch.nn.functional.normalize(self._queries(queries).float(), dim=1)
        q = q.to(self.vectors.device)
        k = min(k, len(self.labels))
        best_scores = torch.full((len(q), 0), float("-inf"))
        best_ids = torch.zeros((len(q), 0), dtype=torch.long)
        for start in range(0, len(self.labels), self.chunk_size):
            part = q @ self.vectors[start : start + self.chunk_size].T  # (B, C)
            scores, ids = part.topk(min(k, part.shape[1]), dim=1)
            best_scores = torch.cat((best_scores, scores.cpu()), dim=1)
            best_ids = torch.cat((best_ids, ids.cpu() + start), dim=1)
            # stable: sort by score descending, then by id ascending
            order = torch.argsort(best_ids, dim=1)
            best_scores, best_ids = best_scores.gather(1, order), best_ids.gather(1, order)
            order = torch.argsort(best_scores, dim=1, descending=True, stable=True)[:, :k]
            best_scores, best_ids = best_scores.gather(1, order), best_ids.gather(1, order)
        return best_scores, best_ids

    def search(
        self, query: torch.Tensor | Sequence[str] | str, k: int = 10
    ) -> list[list[tuple[str, float]]]:
        """The ``k`` nearest labels of each query with their cosine similarity, best first.

        Args:
            query: one text or vector of shape (D,), or a batch: texts or shape (B, D).
        Returns:
            one list of (label, score) per query.
        """
        scores, ids = self.topk(query, k)
        return [
            [(self.labels[i], s) for i, s in zip(row_ids, row_scores, strict=True)]
            for row_ids, row_scores in zip(ids.tolist(), scores.tolist(), strict=True)
        ]

    def search_one(self, query: torch.Tensor | str, k: int = 10) -> list[tuple[str, float]]:
        """:meth:`search` for a single text or vector."""
        return self.search(query, k)[0]
