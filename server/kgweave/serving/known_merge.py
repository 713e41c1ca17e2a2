"""A derived version's known-fact indexes, updated from its base's instead of rebuilt.

A served model derived from a loaded version (graph changes applied on top,
:mod:`kgweave.changes.apply`) knows ``cat(base_known[keep], added)``: the base's facts less the
removed ones (every copy), then the added ones. Its two indexes of known facts, the
``filter_known`` index (:class:`~kgweave.data.dataset.TailIndex`: sorted keys of every fact and
its reciprocal) and the facts by entity (:func:`facts_by_entity`), are the base's with the
removed entries dropped and the added ones merged in: linear passes and a sort of the change
alone, where a rebuild sorts every fact (on FB15k-237, two sorts of 544k keys per batch of
changes).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from kgweave.data.dataset import TailIndex, with_reciprocals
from kgweave.predict import LinkPredictor


@dataclass(frozen=True)
class ByEntity:
    """The ends of known facts (shape (n, 3)) sorted by entity: ``entities[j]`` is the entity
    at position ``j`` and ``ends[j]`` which end it is: ``i < n`` the head of row ``i``,
    ``i >= n`` the tail of row ``i - n`` (an entity's facts in row order, heads first)."""

    entities: torch.Tensor
    ends: torch.Tensor

    @classmethod
    def of(cls, known: torch.Tensor) -> ByEntity:
        ends = torch.cat((known[:, 0], known[:, 2])).cpu()
        order = torch.argsort(ends, stable=True)
        return cls(ends[order], order)

    def rows(self, n: int) -> torch.Tensor:
        """The row of each end (``n`` rows of facts)."""
        return torch.where(self.ends >= n, self.ends - n, self.ends)


@dataclass(frozen=True)
class KnownChange:
    """How a derived version's known facts follow from its base's: ``cat(base_known[keep],
    added)`` (no fact of ``base_known[~keep]`` is left in ``base_known[keep]``), with the
    base's predictor (its ``filter_known`` index, its scorer) and facts by entity."""

    base: LinkPredictor
    base_by_entity: ByEntity
    keep: torch.Tensor
    added: torch.Tensor

    @property
    def base_known(self) -> torch.Tensor:
        return self.base.artifact.known.cpu()


def merge_positions(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Where the values of two sorted 1-D tensors with no value in common go in their sorted
    union: (positions of ``a``'s, positions of ``b``'s)."""
    at_a = torch.arange(len(a), device=a.device) + torch.searchsorted(b, a)
    at_b = torch.arange(len(b), device=b.device) + torch.searchsorted(a, b)
    return at_a, at_b


def merge(at: tuple[torch.Tensor, torch.Tensor], a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a`` and ``b`` placed at :func:`merge_positions` ``at``."""
    out = torch.empty(len(a) + len(b), dtype=a.dtype, device=a.device)
    out[at[0]] = a
    out[at[1]] = b
    return out


def _members(sorted_values: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Whether each of ``values`` is in ``sorted_values``."""
    if not len(sorted_values):
        return torch.zeros(len(values), dtype=torch.bool, device=values.device)
    at = torch.searchsorted(sorted_values, values).clamp_(max=len(sorted_values) - 1)
    return sorted_values[at] == values


def _keys(triples: torch.Tensor, num_entities: int, num_relations: int) -> torch.Tensor:
    """Sorted distinct TailIndex keys of ``triples`` and their reciprocals (``num_relations``
    without reciprocals)."""
    both = with_reciprocals(triples.cpu(), num_relations)
    keys: torch.Tensor = torch.unique(
        (both[:, 0] * 2 * num_relations + both[:, 1]) * num_entities + both[:, 2]
    )
    return keys


def known_index(change: KnownChange, num_entities: int, num_relations: int) -> TailIndex:
    """The ``filter_known`` index of the derived facts (``num_entities``, ``num_relations``
    without reciprocals: the derived version's), from the base's."""
    base = change.base.known
    r2 = 2 * num_relations
    facts, tails, queries = base.facts.cpu(), base.tails.cpu(), base.queries().cpu()
    if (base.num_entities, base.num_relations) != (num_entities, r2):
        # new entities or relations: the same facts in the new numbering, where the reciprocal
        # relations move up (monotone in (head, relation, tail): the keys stay sorted)
        old_r = base.num_relations // 2
        heads, relations = queries // base.num_relations, queries % base.num_relations
        relations = torch.where(relations >= old_r, relations + (num_relations - old_r), relations)
        queries = heads * r2 + relations
        facts = queries * num_entities + tails
    dropped = change.base_known[~change.keep]
    if len(dropped):
        alive = ~_members(_keys(dropped, num_entities, num_relations), facts)
        facts, tails, queries = facts[alive], tails[alive], queries[alive]
    added = _keys(change.added, num_entities, num_relations)
    added = added[~_members(facts, added)]
    at = merge_positions(facts, added)
    split = (merge(at, queries, added // num_entities), merge(at, tails, added % num_entities))
    index = TailIndex.from_facts(merge(at, facts, added), num_entities, r2, split)
    return index.to(base.facts.device)


def merged_by_entity(change: KnownChange) -> ByEntity:
    """:meth:`ByEntity.of` the derived facts, from the base's."""
    n = len(change.base_known)
    keep = change.keep.cpu()
    kept = int(keep.sum())
    added = change.added.cpu()
    total = kept + len(added)
    base = change.base_by_entity
    rows, tail = base.rows(n), base.ends >= n
    alive = keep[rows]
    renumbered = torch.cumsum(keep.long(), 0) - 1
    ends = renumbered[rows[alive]] + tail[alive].long() * total
    entities = base.entities[alive]
    fresh_rows = torch.arange(kept, total)
    fresh_entities = torch.cat((added[:, 0], added[:, 2]))
    fresh_ends = torch.cat((fresh_rows, fresh_rows + total))
    width = max(2 * total, 1)  # (entity, end) as one sortable key
    fresh_keys, order = torch.sort(fresh_entities * width + fresh_ends)
    at = merge_positions(entities * width + ends, fresh_keys)
    return ByEntity(merge(at, entities, fresh_entities[order]), merge(at, ends, fresh_ends[order]))
