"""The candidate set and local model of an incremental update (changes/candidates.py): every
model kind scores exactly as the full model does on the candidates, training moves only their
rows, and the candidates hold each fact's entities and each new query's top entities."""

from __future__ import annotations

import pytest
import torch

from kgweave.changes.candidates import LocalModel, candidate_entities
from kgweave.models import MODELS, build_model

N, R = 60, 6  # entities; relations with reciprocals


def model_of(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model({"name": name, "num_entities": N, "num_relations": R, "dim": 8})
    with torch.no_grad():  # spread the scores: far from the tiny initialisation
        model.entity.weight.normal_()
    return model


@pytest.mark.parametrize("name", sorted(MODELS))
def test_local_scores_are_the_full_models_on_the_candidates(name: str) -> None:
    model = model_of(name).eval()
    entities = torch.tensor([1, 4, 5, 17, 30, 59])
    local = LocalModel(model, entities)
    hr = torch.tensor([[4, 0], [30, 5]])
    local_hr = torch.stack((local.local_of[hr[:, 0]], hr[:, 1]), dim=1)
    torch.testing.assert_close(local.model.predict_t(local_hr), model.predict_t(hr)[:, entities])
    # facts with an entity outside the candidates are dropped, the others mapped
    triples = torch.tensor([[4, 1, 59], [4, 1, 2], [3, 0, 3], [1, 2, 1]])
    assert local.triples(triples).tolist() == [[1, 1, 5], [0, 2, 0]]


def test_training_the_local_model_moves_only_the_candidates_rows() -> None:
    model = model_of("complex")
    before = model.entity.weight.detach().clone()
    entities = torch.tensor([2, 3, 40])
    local = LocalModel(model, entities)
    optimizer = torch.optim.Adam(local.model.parameters(), lr=0.1)
    loss = -local.model.score_hrt(torch.tensor([[0, 1, 2]])).sum()
    loss.backward()
    optimizer.step()
    assert torch.equal(model.entity.weight, before)  # nothing moves before the write-back
    local.write_back()
    after = model.entity.weight.detach()
    moved = torch.nonzero((after != before).any(dim=1)).squeeze(1)
    assert moved.tolist() == [2, 40]  # the fact's head and tail; entity 3 had no gradient
    assert torch.equal(model.relation.weight, local.model.relation.weight)


def test_candidates_hold_the_facts_the_hard_negatives_and_a_sample() -> None:
    model = model_of("distmult").eval()
    facts = torch.tensor([[0, 1, 7], [9, 4, 11]])
    queries = torch.tensor([[0, 1], [7, 4]])
    generator = torch.Generator().manual_seed(0)
    chosen = candidate_entities(model, facts, queries, size=20, hard=3, generator=generator)
    assert len(chosen) == 20 and torch.equal(chosen, torch.sort(chosen).values)
    assert {0, 7, 9, 11} <= set(chosen.tolist())
    top = model.predict_t(queries).topk(3, dim=1).indices
    assert set(top.reshape(-1).tolist()) <= set(chosen.tolist())
    # no room left: the facts and hard negatives only, never fewer
    few = candidate_entities(model, facts, queries, size=2, hard=3, generator=generator)
    assert set(few.tolist()) == {0, 7, 9, 11} | set(top.reshape(-1).tolist())
    # the uniform sample is seeded
    again = candidate_entities(
        model, facts, queries, size=20, hard=3, generator=torch.Generator().manual_seed(0)
    )
    assert torch.equal(again, chosen)
