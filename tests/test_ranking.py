"""Ranking on hand-computed cases: filtering and ties."""

from __future__ import annotations

import pytest
import torch

from kgweave.data.dataset import TailIndex
from kgweave.evaluation.ranking import (
    build_filter,
    evaluate,
    filtered_ranks,
    metrics_from_ranks,
    ranking_batch_size,
    realistic_rank,
)
from kgweave.models import DistMult


def test_realistic_rank_without_ties() -> None:
    scores = torch.tensor([[0.1, 0.9, 0.5, 0.3]])
    assert realistic_rank(scores, torch.tensor([2])).tolist() == [2.0]
    assert realistic_rank(scores, torch.tensor([1])).tolist() == [1.0]
    assert realistic_rank(scores, torch.tensor([0])).tolist() == [4.0]


def test_realistic_rank_is_mean_of_optimistic_and_pessimistic() -> None:
    # target ties with two others, one entity is better: optimistic 2, pessimistic 4
    scores = torch.tensor([[0.5, 0.5, 0.9, 0.5, 0.1]])
    assert realistic_rank(scores, torch.tensor([0])).tolist() == [3.0]
    # all equal: ranks 1..5, mean 3
    assert realistic_rank(torch.zeros(1, 5), torch.tensor([4])).tolist() == [3.0]


def _line_model() -> DistMult:
    """DistMult with dim 1: score(h, r, t) = e_h * w_r * e_t, hand-computable.

    Entities 0..4 have values 1..5; relation 0 has weight 1, its reciprocal 1 too.
    """
    model = DistMult(5, 2, 1)
    with torch.no_grad():
        model.entity.weight.copy_(torch.arange(1.0, 6.0).unsqueeze(1))
        model.relation.weight.fill_(1.0)
    return model


def test_filtered_rank_removes_other_known_tails() -> None:
    model = _line_model()
    # query (0, r0, ?) scores tails 1..5: entity 4 best, then 3, 2, 1, 0
    test = torch.tensor([[0, 0, 2]])
    # unfiltered: entities 3 and 4 beat 2 -> rank 3
    empty = TailIndex(torch.zeros(0, 3, dtype=torch.long), 5, 2)
    assert filtered_ranks(model, test, empty).tolist() == [3.0]
    # (0, r0, 4) is a known fact: filtered away -> rank 2
    known = TailIndex(torch.tensor([[0, 0, 4], [0, 0, 2]]), 5, 2)
    assert filtered_ranks(model, test, known).tolist() == [2.0]


def test_target_itself_is_never_filtered_and_ties_count() -> None:
    model = _line_model()
    with torch.no_grad():
        model.entity.weight[3] = 3.0  # entity 3 ties with entity 2
    known = TailIndex(torch.tensor([[0, 0, 2], [0, 0, 4]]), 5, 2)
    # remaining better: none; tied: entity 3 -> realistic rank 1.5
    assert filtered_ranks(model, torch.tensor([[0, 0, 2]]), known).tolist() == [1.5]


def test_ranks_do_not_depend_on_the_pass_size() -> None:
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = DistMult(40, 6, 8)
    triples = torch.stack(
        (
            torch.randint(0, 40, (100,), generator=generator),
            torch.randint(0, 6, (100,), generator=generator),
            torch.randint(0, 40, (100,), generator=generator),
        ),
        dim=1,
    )
    known = TailIndex(triples, 40, 6)
    with torch.no_grad():
        whole = filtered_ranks(model, triples, known)
        for batch_size in (1, 7, 33):
            assert torch.equal(filtered_ranks(model, triples, known, batch_size), whole)


def test_evaluation_passes_fit_in_cache_on_the_cpu() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert ranking_batch_size(14_541, cpu) == (1 << 21) // 14_541  # FB15k-237: 144 queries
    assert ranking_batch_size(135, cpu) == 4096  # UMLS: capped
    assert ranking_batch_size(10_000_000, cpu) == 16  # at least 16
    assert ranking_batch_size(14_541, cuda) == 4096  # an accelerator: large passes
    assert ranking_batch_size(100_000_000, cuda) == 1  # ... as large as its memory allows


def test_evaluate_both_sides_and_per_relation() -> None:
    model = _line_model()
    triples = torch.tensor([[0, 0, 2]])
    known = build_filter(triples, 5, 1)
    result = evaluate(model, triples, known, relation_labels=["r"])
    # tail side: (0, r, ?) -> 3, 4 beat 2 -> rank 3
    # head side: (2, r^-1, ?) scores heads 3*e: 4, 3, 2 (itself), 1 beat 0 -> rank 5
    assert result.tail["mrr"] == pytest.approx(1 / 3)
    assert result.head["mrr"] == pytest.approx(1 / 5)
    assert result.metrics["mrr"] == pytest.approx((1 / 3 + 1 / 5) / 2)
    assert result.per_relation["r"]["count"] == 2
    assert result.metrics["hits@3"] == pytest.approx(0.5)


def test_metrics_from_ranks() -> None:
    m = metrics_from_ranks(torch.tensor([1.0, 2.0, 4.0, 20.0]))
    assert m["mrr"] == pytest.approx((1 + 0.5 + 0.25 + 0.05) / 4)
    assert m["hits@1"] == 0.25
    assert m["hits@3"] == 0.5
    assert m["hits@10"] == 0.75
    assert m["mean_rank"] == pytest.approx(6.75)


def test_tail_index_lookup_unknown_and_duplicates() -> None:
    index = TailIndex(torch.tensor([[1, 0, 3], [1, 0, 3], [1, 0, 2], [0, 1, 4]]), 5, 2)
    assert index.num_queries == 2
    rows, tails = index.lookup(torch.tensor([[1, 0], [2, 0], [0, 1]]))
    assert sorted(zip(rows.tolist(), tails.tolist(), strict=True)) == [(0, 2), (0, 3), (2, 4)]
    mask = index.mask(torch.tensor([[1, 0]]))
    assert mask.tolist() == [[False, False, True, True, False]]


def test_tail_index_contains_agrees_with_the_dense_mask() -> None:
    """Membership by binary search over the sorted facts equals the dense mask, on random
    queries: known and unknown pairs, keys beyond the last fact, an empty index."""
    generator = torch.Generator().manual_seed(0)
    triples = torch.randint(0, 30, (400, 3), generator=generator)
    triples[:, 1] %= 4
    index = TailIndex(triples, 30, 4)
    hr = torch.cat((triples[:50, :2], torch.randint(0, 4, (20, 2), generator=generator)))
    tails = torch.randint(0, 30, (len(hr), 12), generator=generator)
    tails[:50, 0] = triples[:50, 2]  # known for sure
    expected = index.mask(hr).gather(1, tails)
    assert expected[:50, 0].all()
    assert torch.equal(index.contains(hr, tails), expected)
    empty = TailIndex(torch.zeros(0, 3, dtype=torch.long), 30, 4)
    assert not empty.contains(hr, tails).any()
