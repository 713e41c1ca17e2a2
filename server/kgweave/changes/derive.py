"""An overlay of graph changes applied to a loaded version: pure functions, no state.

:func:`derive_artifact` makes the artifact that serves a version with an
:class:`~kgweave.changes.overlay.Overlay` on top (the change applier's,
:mod:`kgweave.changes.apply`, and the incremental update's starting point,
:mod:`kgweave.changes.incremental`); :class:`BaseFacts` looks facts up in a version's known
facts; :func:`prune` drops from an overlay what a version knows already.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch

from kgweave.artifact import ModelArtifact
from kgweave.changes.overlay import Overlay, Touched, Triple
from kgweave.data.dataset import IdMap, expand_ranges
from kgweave.models import KGEModel, copy_model
from kgweave.serving.known_delta import members


def _keys(triples: torch.Tensor, n_entities: int, n_relations: int) -> torch.Tensor:
    """One int64 per (head, relation, tail)."""
    return (triples[:, 0] * n_relations + triples[:, 1]) * n_entities + triples[:, 2]


def _ids(facts: Iterable[Triple], entities: IdMap, relations: IdMap) -> torch.Tensor:
    e, r = entities.index, relations.index
    rows = [(e[h], r[p], e[t]) for h, p, t in facts if h in e and p in r and t in e]
    return torch.tensor(rows, dtype=torch.long).reshape(-1, 3)


class BaseFacts:
    """The known facts of one loaded version, sorted by key, for lookups in O(log n) (built
    once per version, not per batch)."""

    def __init__(self, artifact: ModelArtifact, facts: torch.Tensor | None = None) -> None:
        """``facts``: (M, 3) those to look up instead of ``artifact.known`` (rows are then
        rows of ``facts``)."""
        self.artifact = artifact
        self.n_e, self.n_r = max(len(artifact.entities), 1), max(len(artifact.relations), 1)
        known = artifact.known if facts is None else facts
        self.keys, self.order = torch.sort(_keys(known.cpu(), self.n_e, self.n_r))

    def all_rows(self, facts: list[Triple]) -> torch.Tensor:
        """Every row of each fact in the version's known facts (a fact may be there twice)."""
        e, r = self.artifact.entities, self.artifact.relations
        ids = _ids(facts, e, r)
        if not len(ids) or not len(self.keys):
            return torch.zeros(0, dtype=torch.long)
        keys = _keys(ids, self.n_e, self.n_r)
        first = torch.searchsorted(self.keys, keys)
        _, at = expand_ranges(first, torch.searchsorted(self.keys, keys, right=True) - first)
        return self.order[at]

    def rows(self, facts: list[Triple]) -> list[int]:
        """Each fact's row in the version's known facts, -1 where it has none."""
        e, r = self.artifact.entities.index, self.artifact.relations.index
        found = [-1] * len(facts)
        at = [i for i, (h, p, t) in enumerate(facts) if h in e and p in r and t in e]
        if not at or not len(self.keys):
            return found
        ids = torch.tensor([(e[h], r[p], e[t]) for h, p, t in (facts[i] for i in at)],
                           dtype=torch.long)  # fmt: skip
        keys = _keys(ids, self.n_e, self.n_r)
        pos = torch.searchsorted(self.keys, keys).clamp(max=len(self.keys) - 1)
        hit = (self.keys[pos] == keys).tolist()
        rows = self.order[pos].tolist()
        for i, h, row in zip(at, hit, rows, strict=True):
            if h:
                found[i] = row
        return found


def prune(overlay: Overlay, base: BaseFacts, touched: Touched | None = None) -> None:
    """Drop from ``overlay`` what the version knows already (added facts it has, removals of
    facts it does not have, text it has): a version trained on the changes is then served as
    it is, with no derived copy to build. ``touched``: what a batch folded into an overlay
    pruned on this version already touched; only that is looked up (a batch's cost follows
    the batch, not the overlay)."""
    art = base.artifact
    added, removed, texts = overlay.added, overlay.removed, overlay.texts
    if touched is not None:
        added, removed = touched.facts & added, touched.facts & removed
        texts = {e: texts[e] for e in touched.entities if e in texts}
    for entity, (name, description) in list(texts.items()):
        i = art.entities.index.get(entity)
        if (
            i is not None
            and name in (None, art.entity_names[i])
            and description in (None, art.entity_descriptions[i])
        ):
            del overlay.texts[entity]
    facts = sorted(added)
    overlay.added.difference_update(
        f for f, row in zip(facts, base.rows(facts), strict=True) if row >= 0
    )
    facts = sorted(removed)
    overlay.removed.difference_update(
        f for f, row in zip(facts, base.rows(facts), strict=True) if row < 0
    )


class DerivedArtifact(ModelArtifact):
    """An artifact with an overlay applied whose known facts, ``cat(art.known[keep], added)``,
    are made when first read: serving reads them through its base's indexes and the change
    (:mod:`kgweave.serving.known_delta`), so a change batch does not copy the version's facts
    (a copy of FB15k-237's 272k facts, gathered by a mask, per batch was most of a batch's cost
    in the serving process)."""

    def __init__(
        self,
        known_of: Callable[[], torch.Tensor] | None = None,
        count: int | None = None,
        **fields: Any,
    ) -> None:
        """``known_of``: makes the known facts, ``count`` of them; or ``known`` given among
        ``fields`` (as :func:`dataclasses.replace` gives it)."""
        self._known: torch.Tensor | None = None
        self._known_of = known_of
        fields.setdefault("known", None)
        super().__init__(**fields)  # (sets known: None)
        self._count = count

    def __repr__(self) -> str:
        return f"DerivedArtifact({self.path}, {len(self.entities)} entities)"

    @property
    def known(self) -> torch.Tensor:
        """(M, 3) every fact the derived version knows, made on the first read."""
        if self._known is None:
            assert self._known_of is not None
            self._known = self._known_of()
        return self._known

    @known.setter
    def known(self, value: torch.Tensor) -> None:
        self._known = value
        self._count = None if value is None else len(value)

    @property
    def known_count(self) -> int:
        """M, without making the known facts (the retrain watcher reads it per batch)."""
        return len(self.known) if self._count is None else self._count


@dataclass(frozen=True)
class FactDelta:
    """An overlay's facts in a derived version's numbering: the rows of the version's known
    facts its removals take out, and the facts it adds that the version does not know. Made
    for one overlay, then carried to the next batch's (:meth:`follow`), which looks at the
    facts that batch touched only: a batch's cost follows the batch, not the overlay. Carried
    on the same version only (new entities and relations are appended to its numbering)."""

    #: the overlay it was made for (never modified once made)
    overlay: Overlay = field(default_factory=Overlay)
    #: (G,) sorted rows of the version's known facts removed (every copy of each)
    gone: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))
    #: (A, 3) added facts the version does not know, sorted by (head, relation, tail) id
    added: torch.Tensor = field(default_factory=lambda: torch.zeros(0, 3, dtype=torch.long))

    #: the derived version's deleted entities, and the sorted rows of the version's known
    #: facts that touch them
    excluded: frozenset[int] = frozenset()
    of_excluded: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))

    def follow(
        self,
        overlay: Overlay,
        touched: Touched | None,
        base: BaseFacts,
        entities: IdMap,
        relations: IdMap,
        excluded: frozenset[int],
    ) -> FactDelta:
        """The delta of ``overlay``: ``self``'s overlay with a batch that ``touched`` these
        folded in (and rows appended), or else (``touched`` None, or a numbering that does not
        extend ``self``'s) made anew. ``entities`` and ``relations``: the derived numbering;
        ``excluded``: its deleted entities."""
        since, gone, added = self.overlay, self.gone, self.added
        if (
            touched is None
            or overlay.new_entities[: len(since.new_entities)] != since.new_entities
            or overlay.new_relations[: len(since.new_relations)] != since.new_relations
        ):
            empty = FactDelta()
            since, gone, added = empty.overlay, empty.gone, empty.added
            touched = Touched(overlay.added | overlay.removed)
        n_e, n_r = max(len(entities), 1), max(len(relations), 1)
        facts = sorted(touched.facts)
        if undone := [f for f in facts if f in since.removed and f not in overlay.removed]:
            gone = gone[~members(torch.unique(base.all_rows(undone)), gone)]
        if more := [f for f in facts if f in overlay.removed and f not in since.removed]:
            gone = torch.unique(torch.cat((gone, base.all_rows(more))))
        if undone := [f for f in facts if f in since.added and f not in overlay.added]:
            keys = torch.sort(_keys(_ids(undone, entities, relations), n_e, n_r)).values
            added = added[~members(keys, _keys(added, n_e, n_r))]
        if more := [f for f in facts if f in overlay.added and f not in since.added]:
            fresh = [f for f, row in zip(more, base.rows(more), strict=True) if row < 0]
            added = torch.cat((added, _ids(fresh, entities, relations)))
            added = added[torch.argsort(_keys(added, n_e, n_r))]
        of_excluded = self.of_excluded
        if excluded != self.excluded:  # (a pass over the version's facts: deletions only)
            known, deleted = base.artifact.known.cpu(), torch.zeros(len(entities), dtype=torch.bool)
            deleted[torch.tensor(sorted(excluded), dtype=torch.long)] = True
            of_excluded = (deleted[known[:, 0]] | deleted[known[:, 2]]).nonzero().squeeze(1)
        return FactDelta(overlay, gone, added, excluded, of_excluded)


class Derived(NamedTuple):
    """An artifact with an overlay applied: the ids of its deleted entities, and its known
    facts, ``art.known`` less the sorted rows ``gone`` (the overlay's removals and every fact
    of a deleted entity), then ``facts.added``; ``facts``: the overlay's :class:`FactDelta`,
    for the next batch's derivation."""

    artifact: ModelArtifact
    excluded: frozenset[int]
    gone: torch.Tensor
    facts: FactDelta


def derive_artifact(
    art: ModelArtifact,
    overlay: Overlay,
    base: BaseFacts | None = None,
    like: ModelArtifact | None = None,
    facts: FactDelta | None = None,
    touched: Touched | None = None,
) -> Derived:
    """``art`` with ``overlay`` applied (``art`` is not modified; unchanged tensors are
    shared). ``base``: ``art``'s :class:`BaseFacts`; ``like``: an artifact derived from ``art``
    with exactly ``overlay``'s new entities, relations, rows and texts (the previous batch's,
    when this one brings none of them): its model, id maps and names serve again (a change
    batch that brings no new rows makes no new model, and no copy of the version's labels);
    ``facts``: the :class:`FactDelta` of the overlay this one was folded from, on ``art``, and
    ``touched`` what the fold touched (None: the overlay's facts are all looked up)."""
    from kgweave.language.features.coldstart import extend_model

    base = base if base is not None and base.artifact is art else BaseFacts(art)
    num_r = len(art.relations)
    if like is not None:
        model, entities, relations = like.model, like.entities, like.relations
        names, descriptions = like.entity_names, like.entity_descriptions
    else:
        model, names, descriptions = art.model, art.entity_names, art.entity_descriptions
        # (id maps are not changed once made: without new labels the version's serve again)
        entities, relations = art.entities, art.relations
        if overlay.new_entities:
            entities = IdMap([*art.entities.labels, *overlay.new_entities])
            model = extend_model(model, overlay.entity_rows)
        if overlay.new_relations:
            relations = IdMap([*art.relations.labels, *overlay.new_relations])
            model = _extend_relations(model, num_r, overlay.relation_rows)
        texts = [(entities.index[e], *t) for e, t in overlay.texts.items() if e in entities]
        if texts or len(names) < len(entities) or len(descriptions) < len(entities):
            # (else the version's lists serve as they are: per-batch data keyed on them is
            # reused)
            names = [*names, *([None] * (len(entities) - len(names)))]
            descriptions = [*descriptions, *([None] * (len(entities) - len(descriptions)))]
            for i, name, description in texts:
                if name is not None:
                    names[i] = name
                if description is not None:
                    descriptions[i] = description
    excluded = frozenset(entities.index[e] for e in overlay.deleted if e in entities)
    delta = (facts or FactDelta()).follow(overlay, touched, base, entities, relations, excluded)
    known, added, gone = art.known.cpu(), delta.added, delta.gone
    if len(delta.of_excluded):  # and every fact of a deleted entity
        gone = torch.unique(torch.cat((gone, delta.of_excluded)))
    config = dict(art.config)
    config["model"] = model.config()
    config["cold_entities"] = list(overlay.new_entities)
    config["overlay"] = overlay.summary()

    def known_of() -> torch.Tensor:
        keep = torch.ones(len(known), dtype=torch.bool)  # (M,)
        keep[gone] = False  # every copy
        return torch.cat((known[keep], added)).to(art.known.device)

    artifact = DerivedArtifact(
        known_of,
        len(known) - len(gone) + len(added),  # (gone: distinct rows)
        path=art.path,
        model=model,
        entities=entities,
        relations=relations,
        entity_names=names,
        config=config,
        relation_texts=art.relation_texts,  # (not changed once made)
        entity_descriptions=descriptions,
        trained_on=art.training_facts,  # the weights' (the overlay trains nothing)
    )
    return Derived(artifact, excluded, gone, delta)


def _extend_relations(model: KGEModel, num_r: int, rows: torch.Tensor) -> KGEModel:
    """A copy of ``model`` with forward rows ``rows[:, 0]`` appended after its ``num_r``
    relations and inverse rows ``rows[:, 1]`` after their reciprocals."""
    tables = {}
    for key, tensor in model.state_dict().items():
        if key.startswith("relation.") and tensor.dim() >= 1 and tensor.shape[0] == 2 * num_r:
            r = rows.to(tensor.device, tensor.dtype)
            tables[key] = torch.cat((tensor[:num_r], r[:, 0], tensor[num_r:], r[:, 1]))
    return copy_model(model, tables, num_relations=2 * (num_r + len(rows))).eval()
