"""Known facts of a served version: read through indexes, and for a derived version through its
base's indexes plus the change, at query time.

A served model derived from a loaded version (graph changes applied on top,
:mod:`kgweave.changes.apply`) knows ``cat(base_known[keep], added)``: the base's facts less the
removed ones (every copy), then the added ones. Its two indexes of known facts are not built
for it: the ``filter_known`` index (:class:`DeltaTailIndex`) and the facts by entity
(:class:`DeltaEntityFacts`) answer from the base's indexes, less the removed facts, plus small
indexes of the added facts alone. A change batch then costs what sorting the change costs,
whatever the size of the graph. (Merging the base's indexes per batch instead, linear passes
over the 544k keys of FB15k-237, took about 25 ms of both cores per batch in the serving
process, and grows with the graph.)

Ids: a derived version numbers the base's entities and forward relations as the base does and
appends new ones; its reciprocal relations follow its forward ones, so they move up by the
number of new relations (``r + R`` in a version with ``R`` relations).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import torch

from kgweave.data.dataset import TailIndex, with_reciprocals

if TYPE_CHECKING:
    from kgweave.predict import LinkPredictor


def members(sorted_values: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Whether each of ``values`` is in ``sorted_values`` (same shape as ``values``)."""
    if not len(sorted_values):
        return torch.zeros_like(values, dtype=torch.bool)
    at = torch.searchsorted(sorted_values, values.reshape(-1)).clamp_(max=len(sorted_values) - 1)
    return (sorted_values[at] == values.reshape(-1)).view_as(values)


class DeltaTailIndex:
    """The ``filter_known`` index of a derived version: the base's
    :class:`~kgweave.data.dataset.TailIndex` less the removed facts, plus an index of the added
    ones (both directions), consulted together at query time."""

    def __init__(
        self,
        base: TailIndex,
        removed: torch.Tensor,
        added: torch.Tensor,
        num_entities: int,
        num_relations: int,
    ) -> None:
        """Args: base: the loaded version's index; removed: shape (M, 3), the base's facts no
        longer known; added: shape (A, 3), facts the base does not know (both in the derived
        numbering, forward relations); num_entities, num_relations: the derived version's
        (relations without reciprocals)."""
        device = base.facts.device
        self.base = base
        self.num_entities = num_entities
        self.num_relations = 2 * num_relations  # reciprocals included, as TailIndex counts
        self._base_relations = base.num_relations // 2
        #: the removed facts and their reciprocals, as sorted keys of the derived numbering
        both = with_reciprocals(removed.to(device), num_relations)
        self.removed = torch.unique(self._keys(both[:, :2], both[:, 2]))
        #: the added facts' own index
        self.added = TailIndex(
            with_reciprocals(added.to(device), num_relations), num_entities, self.num_relations
        )

    def _keys(self, hr: torch.Tensor, tails: torch.Tensor) -> torch.Tensor:
        """Keys ``(head * 2R + relation) * N + tail`` of the derived numbering: ``hr`` shape
        (B, 2), ``tails`` shape (B,) or (B, C) (the result has its shape)."""
        query = hr[:, 0] * self.num_relations + hr[:, 1]
        query = query.unsqueeze(1) if tails.dim() == 2 else query
        return query * self.num_entities + tails

    def _in_base(self, hr: torch.Tensor) -> torch.Tensor:
        """``hr`` in the base's numbering (shape (B, 2)); -1 as head where the base has no
        such query (a new entity or relation)."""
        old, new = self._base_relations, self.num_relations // 2
        heads, relations = hr[:, 0], hr[:, 1]
        inverse = relations >= new
        mapped = torch.where(inverse, relations - new + old, relations)
        there = (heads < self.base.num_entities) & torch.where(
            inverse, relations - new < old, relations < old
        )
        none = torch.full_like(heads, -1)  # a negative key: found nowhere
        return torch.stack((torch.where(there, heads, none), torch.where(there, mapped, 0)), 1)

    def lookup(self, hr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Known tails of arbitrary queries, as :meth:`TailIndex.lookup
        <kgweave.data.dataset.TailIndex.lookup>` (the base's first, then the added ones)."""
        rows, tails = self.base.lookup(self._in_base(hr))
        if len(self.removed) and len(rows):
            alive = ~members(self.removed, self._keys(hr[rows], tails))
            rows, tails = rows[alive], tails[alive]
        more_rows, more_tails = self.added.lookup(hr)
        return torch.cat((rows, more_rows)), torch.cat((tails, more_tails))

    def contains(self, hr: torch.Tensor, tails: torch.Tensor) -> torch.Tensor:
        """Whether each ``(head, relation, tails[i, j])`` is known: shape (B, C) bool, as
        :meth:`TailIndex.contains <kgweave.data.dataset.TailIndex.contains>`."""
        # (a new entity as the tail would alias another key of the base's numbering)
        found = self.base.contains(self._in_base(hr), tails) & (tails < self.base.num_entities)
        if len(self.removed):
            found &= ~members(self.removed, self._keys(hr, tails))
        return found | self.added.contains(hr, tails)

    def to(self, device: torch.device) -> DeltaTailIndex:
        """Move the index to ``device`` (in place) and return it."""
        self.base = self.base.copy_to(device) if self.base.facts.device != device else self.base
        self.removed = self.removed.to(device)
        self.added.to(device)
        return self


class EntityFacts:
    """A loaded version's known facts (shape (n, 3)) by entity: for each entity the rows where
    it is the head, in row order, then those where it is the tail."""

    def __init__(self, known: torch.Tensor, num_entities: int) -> None:
        self.known = known.cpu()
        n = len(self.known)
        ends = torch.cat((self.known[:, 0], self.known[:, 2]))
        order = torch.argsort(ends, stable=True)
        #: each end's row, and whether it is the head of it, sorted by entity
        self._rows = torch.where(order >= n, order - n, order)
        self._heads = order < n
        self._offsets = torch.searchsorted(ends[order], torch.arange(num_entities + 1))
        self.num_entities = num_entities

    def rows(self, e: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The rows of ``e``'s facts: (as head, as tail), each in row order."""
        if e >= self.num_entities:
            empty = torch.zeros(0, dtype=torch.long)
            return empty, empty
        start, end = int(self._offsets[e]), int(self._offsets[e + 1])
        heads = start + int(self._heads[start:end].sum())
        return self._rows[start:heads], self._rows[heads:end]

    def of(self, e: int, limit: int) -> tuple[torch.Tensor, int]:
        """At most ``limit`` of ``e``'s facts (shape (k, 3), heads first) and how many it has
        (a fact whose head and tail are both ``e`` counts twice)."""
        heads, tails = self.rows(e)
        rows = torch.cat((heads, tails))
        return self.known[rows[:limit]], len(rows)


@dataclass(frozen=True)
class DeltaEntityFacts:
    """A derived version's facts by entity, as its own :class:`EntityFacts` would give them:
    the base's less the removed rows ``gone`` (sorted; an entity's rows are looked up among
    them, no mask is made), then the added (``added``: shape (A, 3); indexed by entity when
    first asked, not per change batch)."""

    base: EntityFacts
    gone: torch.Tensor
    added: torch.Tensor
    num_entities: int

    @classmethod
    def of_change(
        cls, base: EntityFacts, gone: torch.Tensor, added: torch.Tensor, num_entities: int
    ) -> DeltaEntityFacts:
        return cls(base, gone.cpu(), added.cpu(), num_entities)

    @functools.cached_property
    def fresh(self) -> EntityFacts:
        """The added facts by entity."""
        return EntityFacts(self.added, self.num_entities)

    def of(self, e: int, limit: int) -> tuple[torch.Tensor, int]:
        """As :meth:`EntityFacts.of`."""
        heads, tails = self.base.rows(e)
        heads, tails = heads[~members(self.gone, heads)], tails[~members(self.gone, tails)]
        new_heads, new_tails = self.fresh.rows(e)
        count = len(heads) + len(tails) + len(new_heads) + len(new_tails)
        parts = []
        for rows, facts in ((heads, self.base.known), (new_heads, self.fresh.known),
                            (tails, self.base.known), (new_tails, self.fresh.known)):  # fmt: skip
            if limit <= 0:
                break
            parts.append(facts[rows[:limit]])
            limit -= len(parts[-1])
        return (torch.cat(parts) if parts else torch.zeros(0, 3, dtype=torch.long)), count


class Base(Protocol):
    """What a change reads of the version it applies to (a loaded
    :class:`~kgweave.serving.served.ServedModel`)."""

    predictor: LinkPredictor
    entity_facts: EntityFacts | DeltaEntityFacts


@dataclass(frozen=True)
class KnownChange:
    """How a derived version's known facts follow from those of its base (a loaded version):
    ``cat(base_known[keep], added)``, where ``keep`` is false at the sorted rows ``gone`` (no
    fact of the gone rows is left among the kept ones, none of ``added`` is in them; no mask
    is made: no pass over the base's facts per batch)."""

    base: Base
    added: torch.Tensor
    gone: torch.Tensor

    def index(self, num_entities: int, num_relations: int) -> DeltaTailIndex:
        """The derived version's ``filter_known`` index (its ``num_entities`` and
        ``num_relations`` without reciprocals)."""
        base, facts = self.base.predictor.known, self._base_facts()
        if not isinstance(base, TailIndex):
            raise TypeError("a version is derived from a loaded version, not a derived one")
        removed = facts.known[self.gone.cpu()]
        return DeltaTailIndex(base, removed, self.added, num_entities, num_relations)

    def facts(self, num_entities: int) -> DeltaEntityFacts:
        """The derived version's facts by entity."""
        return DeltaEntityFacts.of_change(self._base_facts(), self.gone, self.added, num_entities)

    def _base_facts(self) -> EntityFacts:
        facts = self.base.entity_facts
        if not isinstance(facts, EntityFacts):
            raise TypeError("a version is derived from a loaded version, not a derived one")
        return facts
