"""The model interface: representations plus a scoring function (interaction).

Every model holds embeddings for ``num_entities`` entities and ``num_relations`` relations, where
``num_relations`` counts reciprocal relations too: relation ``r + R`` is the inverse of ``r``, so
head prediction ``(?, r, t)`` is tail prediction ``(t, r + R, ?)`` and one scoring path serves
both sides.

Scores are "higher is more plausible". Training paths (``score_hrt``, ``score_t``) keep
gradients; :meth:`KGEModel.predict_t` is the eval-mode, no-grad path used for ranking and serving.

Dropout (LibKGE style): in training mode, every embedding a scoring path looks up (the batch's
rows and the whole table that 1-N scoring multiplies with) passes through dropout with
``entity_dropout`` / ``relation_dropout`` (set by the training loop; 0 by default, and never in
eval mode). The regularisers read the raw embeddings (``entity_magnitudes``, ``factors``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from kgweave.errors import echo
from kgweave.typing import AllScores, HRBatch, Scores, TripleBatch


def _over_chunks(
    score: Callable[[torch.Tensor], torch.Tensor], table: torch.Tensor, chunk_size: int
) -> torch.Tensor:
    """Score every row of ``table`` in chunks and join the columns.

    Args:
        score: maps a (1, C, D) chunk of rows to (B, C) scores (broadcasting against the batch).
        table: shape (M, D), e.g. all entity or all relation embeddings.
    Returns:
        shape (B, M).
    """
    parts = [
        score(table[start : start + chunk_size].unsqueeze(0))
        for start in range(0, len(table), chunk_size)
    ]
    return torch.cat(parts, dim=1)


class KGEModel(nn.Module, ABC):
    """Base class of all scoring models."""

    #: registry name, e.g. ``"complex"``
    name: ClassVar[str]
    #: how many real numbers one entity embedding of ``dim`` holds (2 for complex models)
    real_width: ClassVar[int] = 1
    #: dropout probabilities of looked-up embeddings in training mode (:meth:`set_dropout`)
    entity_dropout: float = 0.0
    relation_dropout: float = 0.0

    #: initialisations :meth:`initialize` knows besides each model's own ("default")
    INITS: ClassVar[tuple[str, ...]] = ("normal", "uniform", "xavier_uniform", "xavier_normal")

    def __init__(self, num_entities: int, num_relations: int, dim: int) -> None:
        """Args: num_relations: relations *including* reciprocals (twice the data's count)."""
        super().__init__()
        if num_relations % 2:
            raise ValueError("num_relations must count reciprocal relations (an even number)")
        self.num_entities = num_entities
        self.num_relations = num_relations
        self.dim = dim
        self.entity = nn.Embedding(num_entities, dim * self.real_width)
        self.relation = nn.Embedding(num_relations, self.relation_width)
        self.reset_parameters()

    @property
    def relation_width(self) -> int:
        """Width of one relation embedding row."""
        return self.dim * self.real_width

    def reset_parameters(self) -> None:
        """Initialise embeddings (small normal by default, as for ComplEx-N3)."""
        nn.init.normal_(self.entity.weight, std=1e-3)
        nn.init.normal_(self.relation.weight, std=1e-3)

    def initialized_tables(self) -> list[torch.Tensor]:
        """The tables :meth:`initialize` sets (RotatE keeps its relation phases)."""
        return [self.entity.weight, self.relation.weight]

    @torch.no_grad()
    def initialize(self, init: str, scale: float | None = None) -> None:
        """Re-initialise the embeddings (from torch's global generator).

        Args:
            init: ``default`` (keep :meth:`reset_parameters`' values), ``normal`` (std
                ``scale``), ``uniform`` (in ``[-scale, scale]``), ``xavier_uniform`` or
                ``xavier_normal`` (gain ``scale``; each table is an (N, D) matrix).
            scale: default 1e-3 for normal and uniform, 1 for the xavier ones.
        """
        if init == "default":
            return
        if init not in self.INITS:
            raise ValueError(f"unknown init {echo(init)}: choose default or one of {self.INITS}")
        xavier = init.startswith("xavier")
        value = (1.0 if xavier else 1e-3) if scale is None else scale
        for table in self.initialized_tables():
            if init == "normal":
                nn.init.normal_(table, std=value)
            elif init == "uniform":
                nn.init.uniform_(table, -value, value)
            elif init == "xavier_uniform":
                nn.init.xavier_uniform_(table, gain=value)
            else:
                nn.init.xavier_normal_(table, gain=value)

    def set_dropout(self, entity: float, relation: float) -> None:
        """Dropout of looked-up entity and relation embeddings in training mode."""
        for p in (entity, relation):
            if not 0 <= p < 1:
                raise ValueError(f"dropout must be in [0, 1), not {p}")
        self.entity_dropout, self.relation_dropout = entity, relation

    def _drop(self, x: torch.Tensor, p: float) -> torch.Tensor:
        return F.dropout(x, p) if p and self.training else x

    def lookup_entities(self, ids: torch.Tensor) -> torch.Tensor:
        """Entity embeddings of ``ids`` as scoring sees them (dropout while training):
        ids (...) -> (..., D_e)."""
        return self._drop(self.entity(ids), self.entity_dropout)

    def lookup_relations(self, ids: torch.Tensor) -> torch.Tensor:
        """Relation embeddings as scoring sees them: ids (...) -> (..., D_r)."""
        return self._drop(self.relation(ids), self.relation_dropout)

    def entity_table(self) -> torch.Tensor:
        """The whole entity table as scoring sees it: (N, D_e)."""
        return self._drop(self.entity.weight, self.entity_dropout)

    def relation_table(self) -> torch.Tensor:
        """The whole relation table as scoring sees it: (R, D_r)."""
        return self._drop(self.relation.weight, self.relation_dropout)

    def config(self) -> dict[str, Any]:
        """Everything needed to rebuild this model (stored in the artifact)."""
        return {
            "name": self.name,
            "num_entities": self.num_entities,
            "num_relations": self.num_relations,
            "dim": self.dim,
        }

    @abstractmethod
    def interaction(self, h: torch.Tensor, r: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Score broadcastable representations.

        Args:
            h: shape (..., D_e) head embeddings.
            r: shape (..., D_r) relation embeddings.
            t: shape (..., D_e) tail embeddings.
        Returns:
            shape (...) scores.
        """

    def score_hrt(self, triples: TripleBatch) -> Scores:
        """Score a batch of triples.

        Args:
            triples: shape (B, 3) of (head, relation, tail) ids.
        Returns:
            shape (B,).
        """
        h = self.lookup_entities(triples[:, 0])
        r = self.lookup_relations(triples[:, 1])
        t = self.lookup_entities(triples[:, 2])
        return self.interaction(h, r, t)

    def score_candidates(self, hr: HRBatch, tails: torch.Tensor) -> torch.Tensor:
        """Score each query against its own candidate tails (negative sampling).

        Args:
            hr: shape (B, 2); tails: shape (B, K).
        Returns:
            shape (B, K).
        """
        h = self.lookup_entities(hr[:, 0]).unsqueeze(1)
        r = self.lookup_relations(hr[:, 1]).unsqueeze(1)
        return self.interaction(h, r, self.lookup_entities(tails))

    def score_t(self, hr: HRBatch, chunk_size: int = 1024) -> AllScores:
        """Score every entity as the tail of each query.

        The default broadcasts :meth:`interaction` over entity chunks of ``chunk_size``; models
        whose scores factor as a matrix product override it with one matmul.

        Args:
            hr: shape (B, 2) of (head, relation) ids.
        Returns:
            shape (B, N).
        """
        h = self.lookup_entities(hr[:, 0]).unsqueeze(1)
        r = self.lookup_relations(hr[:, 1]).unsqueeze(1)
        return _over_chunks(lambda t: self.interaction(h, r, t), self.entity_table(), chunk_size)

    def tail_query(self, hr: HRBatch) -> torch.Tensor | None:
        """For models whose tail scores are one product with the entity table,
        ``score_t(hr) == tail_query(hr) @ E^T``: the query vectors, shape (B, D_e). None for
        the others (distance-based models)."""
        return None

    def score_r(self, ht: torch.Tensor, chunk_size: int = 64) -> torch.Tensor:
        """Score every relation (reciprocals included) between each head and tail.

        Used by the relation-prediction training objective. The default broadcasts
        :meth:`interaction` over relation chunks; bilinear models override it with one matmul.

        Args:
            ht: shape (B, 2) of (head, tail) ids.
        Returns:
            shape (B, R).
        """
        h = self.lookup_entities(ht[:, 0]).unsqueeze(1)
        t = self.lookup_entities(ht[:, 1]).unsqueeze(1)
        return _over_chunks(lambda r: self.interaction(h, r, t), self.relation_table(), chunk_size)

    def score_h(self, rt: HRBatch) -> AllScores:
        """Score every entity as the head of ``(?, r, t)`` through the reciprocal relation.

        Args:
            rt: shape (B, 2) of (relation, tail) ids, relations in ``0..R/2-1``.
        Returns:
            shape (B, N).
        """
        inverse = torch.stack((rt[:, 1], rt[:, 0] + self.num_relations // 2), dim=1)
        return self.score_t(inverse)

    @torch.no_grad()
    def predict_t(self, hr: HRBatch) -> AllScores:
        """Eval-mode, no-grad scores of all tails: shape (B, N). For ranking and serving."""
        was_training = self.training
        self.eval()
        try:
            return self.score_t(hr).float()
        finally:
            self.train(was_training)

    def entity_magnitudes(self, ids: torch.Tensor) -> torch.Tensor:
        """Per-coordinate magnitudes of the given entities: ids (K,) -> (K, d)."""
        return torch.abs(self.entity(ids))

    def relation_magnitudes(self, ids: torch.Tensor) -> torch.Tensor | None:
        """Per-coordinate magnitudes of the given relations: (K,) -> (K, d); None if unpenalised."""
        return torch.abs(self.relation(ids))

    def factors(self, triples: TripleBatch) -> list[torch.Tensor]:
        """Per-coordinate magnitudes of the batch's embeddings, for N3 / L2 regularisation.

        Returns:
            [heads (B, d), relations (B, d), tails (B, d)].
        """
        return [
            self.entity(triples[:, 0]).abs(),
            self.relation(triples[:, 1]).abs(),
            self.entity(triples[:, 2]).abs(),
        ]
