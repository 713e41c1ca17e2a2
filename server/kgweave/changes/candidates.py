"""The entities an incremental update trains and ranks against: its cost follows the batch.

A training run scores each query against every entity (1-N); an incremental update of a few
new facts on a large graph would spend nearly all its time on rows its facts never touch
(FB15k-237: 50 steps of 256 queries × 14,541 entities, 26-40 s on two busy cores). Instead an
update trains a *local* copy of the model over a candidate set ``S`` of entities:

- every entity of the facts it trains on (the new facts and the replay sample), so every
  query's positive is in ``S``;
- the ``hard`` entities each new fact's queries (both directions) rank highest now: the ones
  the new tail has to overtake;
- a uniform sample of the others, up to ``size`` entities in all (the sampled softmax's
  negatives, as for any query in a 1-N batch).

Each query's softmax then runs over ``S`` (its targets: its known tails in ``S``), only the
rows of ``S`` and the relations move, and they are written back into the full model.
``S`` is at most a few thousand rows whatever the graph's size.
"""

from __future__ import annotations

import torch

from kgweave.models import KGEModel, copy_model


def candidate_entities(
    model: KGEModel,
    facts: torch.Tensor,
    new_queries: torch.Tensor,
    size: int,
    hard: int,
    generator: torch.Generator,
) -> torch.Tensor:
    """The candidate set ``S`` (see the module doc), sorted.

    Args:
        facts: shape (F, 3), the facts the update trains on (every entity of them is in S).
        new_queries: shape (Q, 2), the new facts' (head, relation) queries with reciprocals.
        size: entities in S when the facts and hard negatives leave room (at most all).
        hard: top-scoring entities per new query put in S.
    Returns:
        shape (S,) entity ids.
    """
    n = model.num_entities
    chosen = torch.zeros(n, dtype=torch.bool)
    chosen[facts[:, 0]] = True
    chosen[facts[:, 2]] = True
    if hard and len(new_queries):
        k = min(hard, n)
        for part in torch.split(new_queries, 256):
            chosen[model.predict_t(part).topk(k, dim=1).indices.reshape(-1).cpu()] = True
    room = size - int(chosen.sum())
    if room > 0:
        others = torch.nonzero(~chosen).squeeze(1)
        chosen[others[torch.randperm(len(others), generator=generator)[:room]]] = True
    return torch.nonzero(chosen).squeeze(1)


class LocalModel:
    """A model of the same kind over the entities ``S`` only (its rows copied; every relation
    kept), the map from full to local ids, and the way back."""

    def __init__(self, model: KGEModel, entities: torch.Tensor) -> None:
        """Args: entities: shape (S,) sorted full ids."""
        self.full, self.entities = model, entities
        rows = {"entity.weight": model.entity.weight.detach()[entities]}
        self.model = copy_model(model, rows, num_entities=len(entities))
        self.local_of = torch.full((model.num_entities,), -1, dtype=torch.long)
        self.local_of[entities] = torch.arange(len(entities))

    def triples(self, triples: torch.Tensor) -> torch.Tensor:
        """Those of ``triples`` (shape (M, 3), full ids) whose head and tail are in S, in
        local ids: shape (M', 3)."""
        h, t = self.local_of[triples[:, 0]], self.local_of[triples[:, 2]]
        keep = (h >= 0) & (t >= 0)
        return torch.stack((h[keep], triples[keep, 1], t[keep]), dim=1)

    @torch.no_grad()
    def write_back(self) -> None:
        """Copy the trained rows of S and the relations into the full model."""
        self.full.entity.weight[self.entities] = self.model.entity.weight
        self.full.relation.weight.copy_(self.model.relation.weight)
