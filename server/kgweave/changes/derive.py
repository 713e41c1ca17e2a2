"""An overlay of graph changes applied to a loaded version: pure functions, no state.

:func:`derive_artifact` makes the artifact that serves a version with an
:class:`~kgweave.changes.overlay.Overlay` on top (the change applier's,
:mod:`kgweave.changes.apply`, and the incremental update's starting point,
:mod:`kgweave.changes.incremental`); :class:`BaseFacts` looks facts up in a version's known
facts; :func:`prune` drops from an overlay what a version knows already.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from kgweave.artifact import ModelArtifact
from kgweave.changes.overlay import Overlay, Triple
from kgweave.data.dataset import IdMap, expand_ranges
from kgweave.models import KGEModel, copy_model


def _keys(triples: torch.Tensor, n_entities: int, n_relations: int) -> torch.Tensor:
    """One int64 per (head, relation, tail)."""
    return (triples[:, 0] * n_relations + triples[:, 1]) * n_entities + triples[:, 2]


def _ids(facts: set[Triple] | list[Triple], entities: IdMap, relations: IdMap) -> torch.Tensor:
    rows = [
        (entities.index[h], relations.index[r], entities.index[t])
        for h, r, t in facts
        if h in entities and r in relations and t in entities
    ]
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
        e, r = self.artifact.entities, self.artifact.relations
        found = [-1] * len(facts)
        at = [i for i, (h, p, t) in enumerate(facts) if h in e and p in r and t in e]
        if not at or not len(self.keys):
            return found
        ids = torch.tensor([(e.index[h], r.index[p], e.index[t]) for h, p, t in
                            (facts[i] for i in at)], dtype=torch.long)  # fmt: skip
        keys = _keys(ids, self.n_e, self.n_r)
        pos = torch.searchsorted(self.keys, keys).clamp(max=len(self.keys) - 1)
        hit = (self.keys[pos] == keys).tolist()
        rows = self.order[pos].tolist()
        for i, h, row in zip(at, hit, rows, strict=True):
            if h:
                found[i] = row
        return found


def prune(overlay: Overlay, base: BaseFacts) -> None:
    """Drop from ``overlay`` what the version knows already (added facts it has, removals of
    facts it does not have, text it has): a version trained on the changes is then served as
    it is, with no derived copy to build."""
    art = base.artifact
    for entity, (name, description) in list(overlay.texts.items()):
        i = art.entities.index.get(entity)
        if (
            i is not None
            and name in (None, art.entity_names[i])
            and description in (None, art.entity_descriptions[i])
        ):
            del overlay.texts[entity]
    added = sorted(overlay.added)
    overlay.added.difference_update(
        f for f, row in zip(added, base.rows(added), strict=True) if row >= 0
    )
    removed = sorted(overlay.removed)
    overlay.removed.difference_update(
        f for f, row in zip(removed, base.rows(removed), strict=True) if row < 0
    )


class Derived(NamedTuple):
    """An artifact with an overlay applied: the ids of its deleted entities, and its known
    facts, ``cat(art.known[keep], added)``."""

    artifact: ModelArtifact
    excluded: frozenset[int]
    keep: torch.Tensor
    added: torch.Tensor


def derive_artifact(
    art: ModelArtifact,
    overlay: Overlay,
    base: BaseFacts | None = None,
    model: KGEModel | None = None,
) -> Derived:
    """``art`` with ``overlay`` applied (``art`` is not modified; unchanged tensors are
    shared). ``base``: ``art``'s :class:`BaseFacts`; ``model``: ``art``'s model with the
    overlay's rows of new entities and relations, when the caller made it already (it then
    serves again: a change batch that brings no new rows makes no new model)."""
    from kgweave.language.features.coldstart import extend_model

    base = base if base is not None and base.artifact is art else BaseFacts(art)
    num_r = len(art.relations)
    # (id maps are not changed once made: without new labels the version's serve again)
    entities = (
        IdMap([*art.entities.labels, *overlay.new_entities])
        if overlay.new_entities
        else art.entities
    )
    relations = (
        IdMap([*art.relations.labels, *overlay.new_relations])
        if overlay.new_relations
        else art.relations
    )
    if model is None:
        model = art.model
        if overlay.new_entities:
            model = extend_model(model, overlay.entity_rows)
        if overlay.new_relations:
            model = _extend_relations(model, num_r, overlay.relation_rows)
    texts = [(entities.index[e], *text) for e, text in overlay.texts.items() if e in entities]
    names, descriptions = art.entity_names, art.entity_descriptions
    if texts or len(names) < len(entities) or len(descriptions) < len(entities):
        # (else the version's lists serve as they are: per-batch data keyed on them is reused)
        names = [*names, *([None] * (len(entities) - len(names)))]
        descriptions = [*descriptions, *([None] * (len(entities) - len(descriptions)))]
        for i, name, description in texts:
            if name is not None:
                names[i] = name
            if description is not None:
                descriptions[i] = description
    excluded = frozenset(entities.index[e] for e in overlay.deleted if e in entities)
    known = art.known.cpu()
    keep = torch.ones(len(known), dtype=torch.bool)
    keep[base.all_rows(sorted(overlay.removed))] = False  # every copy
    if excluded:
        deleted = torch.zeros(len(entities), dtype=torch.bool)
        deleted[torch.tensor(sorted(excluded), dtype=torch.long)] = True
        keep &= ~(deleted[known[:, 0]] | deleted[known[:, 2]])
    fresh = sorted(overlay.added)
    fresh = [f for f, row in zip(fresh, base.rows(fresh), strict=True) if row < 0]
    added = _ids(fresh, entities, relations)
    config = dict(art.config)
    config["model"] = model.config()
    config["cold_entities"] = list(overlay.new_entities)
    config["overlay"] = overlay.summary()
    artifact = ModelArtifact(
        path=art.path,
        model=model,
        entities=entities,
        relations=relations,
        entity_names=names,
        known=torch.cat((known if bool(keep.all()) else known[keep], added)).to(art.known.device),
        config=config,
        relation_texts=art.relation_texts,  # (not changed once made)
        entity_descriptions=descriptions,
        trained_on=art.training_facts,  # the weights' (the overlay trains nothing)
    )
    return Derived(artifact, excluded, keep, added)


def _extend_relations(model: KGEModel, num_r: int, rows: torch.Tensor) -> KGEModel:
    """A copy of ``model`` with forward rows ``rows[:, 0]`` appended after its ``num_r``
    relations and inverse rows ``rows[:, 1]`` after their reciprocals."""
    tables = {}
    for key, tensor in model.state_dict().items():
        if key.startswith("relation.") and tensor.dim() >= 1 and tensor.shape[0] == 2 * num_r:
            r = rows.to(tensor.device, tensor.dtype)
            tables[key] = torch.cat((tensor[:num_r], r[:, 0], tensor[num_r:], r[:, 1]))
    return copy_model(model, tables, num_relations=2 * (num_r + len(rows))).eval()
