"""A derived version's known-fact indexes merged from its base's (serving/known_merge.py) equal
the indexes rebuilt from scratch, for every kind of change: facts added and removed, a new
entity, a new relation and a deleted entity, applied to a real trained demo model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from kgweave.artifact import load_artifact
from kgweave.changes.derive import derive_artifact
from kgweave.changes.events import ChangeEvent, ChangeKind
from kgweave.changes.overlay import Overlay
from kgweave.serving.known_merge import KnownChange
from kgweave.serving.served import ServedModel
from serving_support import demo_model_in


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory, datasets_dir: Path) -> ServedModel:
    model = demo_model_in(tmp_path_factory, datasets_dir, "merge", epochs=1, dim=8)
    return ServedModel("v0001", load_artifact(model), prepack=False)


def _events(base: ServedModel) -> list[ChangeEvent]:
    art = base.artifact
    ents, rels = art.entities.labels, art.relations.labels
    known = art.known.tolist()
    facts = [(ents[h], rels[r], ents[t]) for h, r, t in known]
    removed = facts[:5]
    added = [(ents[0], rels[0], ents[i]) for i in range(1, 40)]  # some already known
    doomed = facts[-1][0]  # an entity deleted with all its facts
    triple = ChangeKind.TRIPLE_ADDED
    return [
        *(ChangeEvent(ChangeKind.TRIPLE_REMOVED, *f) for f in removed),
        *(ChangeEvent(triple, *f) for f in added),
        ChangeEvent(triple, "newcomer", rels[1], ents[2]),  # a new entity
        ChangeEvent(triple, ents[3], "new_relation", ents[4]),  # a new relation
        ChangeEvent(triple, "newcomer", "new_relation", ents[5]),
        ChangeEvent(ChangeKind.ENTITY_DELETED, entity=doomed),
    ]


def test_merged_indexes_equal_a_rebuild(base: ServedModel) -> None:
    art = base.artifact
    ents, rels = art.entities.labels, art.relations.labels

    def facts_of(entity: str) -> list[tuple[str, str, str]]:
        i = art.entities.index[entity]
        return [(ents[h], rels[r], ents[t]) for h, r, t in art.known.tolist() if i in (h, t)]

    overlay = Overlay(base_version="v0001")
    overlay.fold(_events(base), facts_of)
    overlay.new_entities, overlay.new_relations = ["newcomer"], ["new_relation"]
    overlay.texts["newcomer"] = ("Alan Newcomer", None)
    overlay.entity_rows = torch.zeros(1, art.model.entity.weight.shape[1])
    overlay.relation_rows = torch.zeros(1, 2, art.model.relation.weight.shape[1])
    derived = derive_artifact(art, overlay)
    assert len(derived.excluded) == 1 and derived.added.numel() > 0 and not derived.keep.all()

    change = KnownChange(base.predictor, base.by_entity, derived.keep, derived.added)
    merged = ServedModel("v0001@1", derived.artifact, excluded=derived.excluded, change=change)
    rebuilt = ServedModel("v0001@1", derived.artifact, excluded=derived.excluded)

    for name in ("facts", "keys", "offsets", "tails"):
        assert torch.equal(
            getattr(merged.predictor.known, name), getattr(rebuilt.predictor.known, name)
        ), name
    assert torch.equal(merged.by_entity.entities, rebuilt.by_entity.entities)
    assert torch.equal(merged.by_entity.ends, rebuilt.by_entity.ends)
    # the change is in it: the new entity's facts are known, the removed ones are not
    index, ids = derived.artifact.entities.index, derived.artifact.relations.index
    r2, n = 2 * len(derived.artifact.relations), len(derived.artifact.entities)

    def key(h: str, r: str, t: str) -> int:
        return (index[h] * r2 + ids[r]) * n + index[t]

    facts = set(merged.predictor.known.facts.tolist())
    assert key("newcomer", "new_relation", ents[5]) in facts
    assert key(ents[3], "new_relation", ents[4]) in facts
    removed = [(ents[h], rels[r], ents[t]) for h, r, t in art.known[:5].tolist()]
    assert not any(key(*f) in facts for f in removed if f[0] in index and f[2] in index)
    # names resolve as a rebuild resolves them: the new entity by its name, the deleted one
    # not any more (while the base version, whose name lists were extended, still has it)
    assert merged.predictor._by_name == rebuilt.predictor._by_name
    assert merged.predictor._by_name_folded == rebuilt.predictor._by_name_folded
    assert merged.predictor.resolve_entity("alan newcomer") == index["newcomer"]
    (doomed,) = derived.excluded
    name = art.entity_names[doomed]
    assert name and base.predictor.resolve_entity(name) == doomed
    assert doomed not in merged.predictor._by_name.get(name, [])
    # facts by entity and prefix search, as rebuilt
    assert merged.entity(ents[0], 100) == rebuilt.entity(ents[0], 100)
    assert merged.search("newc") == rebuilt.search("newc") and merged.search("newc")
