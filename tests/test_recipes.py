"""The graph statistics `kgweave train` picks its recipe from: relation patterns checked on a
hand-built graph, against a plain reference implementation on real datasets, and under the
sample bound."""

from __future__ import annotations

from collections import Counter, defaultdict

import pytest
import torch

from kgweave.engine import open_dataset
from kgweave.settings import get_settings
from kgweave.tuning import recipes


def _ids(rows: list[tuple[str, str, str]]) -> tuple[torch.Tensor, int, int]:
    entities = sorted({x for h, _, t in rows for x in (h, t)})
    relations = sorted({r for _, r, _ in rows})
    e = {x: i for i, x in enumerate(entities)}
    r = {x: i for i, x in enumerate(relations)}
    return torch.tensor([(e[h], r[rel], e[t]) for h, rel, t in rows]), len(e), len(r)


#: relations of known patterns, ids by name order: child_of 0, is_a 1, likes 2, married 3,
#: parent_of 4, works_at 5
HAND_BUILT = [
    # symmetric: every fact also holds reversed
    ("a", "married", "b"), ("b", "married", "a"), ("c", "married", "d"), ("d", "married", "c"),
    # parent_of and child_of: each the other's inverse; parent_of 1-N (a has two children)
    ("a", "parent_of", "c"), ("a", "parent_of", "e"), ("b", "parent_of", "d"),
    ("c", "child_of", "a"), ("e", "child_of", "a"), ("d", "child_of", "b"),
    # hierarchical, N-1: many heads, one tail each, never reversed
    ("c", "is_a", "x"), ("d", "is_a", "x"), ("a", "is_a", "y"), ("b", "is_a", "y"),
    ("e", "is_a", "x"), ("f", "is_a", "y"),
    # 1-1: one fact per head and per tail, nothing reversed (and a duplicate, counted once)
    ("a", "likes", "e"), ("b", "likes", "f"), ("b", "likes", "f"),
    # N-N: two heads each with two tails
    ("a", "works_at", "x"), ("a", "works_at", "y"), ("b", "works_at", "x"), ("b", "works_at", "y"),
]  # fmt: skip


def test_relation_patterns_of_a_hand_built_graph() -> None:
    train, entities, relations = _ids(HAND_BUILT)
    patterns, sampled = recipes.relation_patterns(train, entities, relations)
    assert sampled == 0
    by_id = {p.relation: p for p in patterns}
    child_of, is_a, likes, married, parent_of, works_at = (by_id[i] for i in range(6))
    assert married.symmetric == 1.0 and married.inverse == 0.0 and married.inverse_of == -1
    assert parent_of.inverse == 1.0 and parent_of.inverse_of == 0
    assert child_of.inverse == 1.0 and child_of.inverse_of == 4
    assert parent_of.cardinality == "1-N" and child_of.cardinality == "N-1"
    assert is_a.cardinality == "N-1" and is_a.hierarchical and is_a.heads_per_tail == 3.0
    assert likes.facts == 2 and likes.cardinality == "1-1" and not likes.hierarchical
    assert works_at.cardinality == "N-N" and works_at.symmetric == 0.0
    assert not married.hierarchical  # one fact per head and per tail


def test_graph_statistics_of_a_hand_built_graph() -> None:
    train, entities, relations = _ids(HAND_BUILT)
    stats = recipes.graph_statistics(train, entities, relations)
    assert (stats.entities, stats.relations, stats.facts) == (8, 6, 23)
    assert stats.facts_per_entity == pytest.approx(2 * 23 / 8)
    assert stats.symmetric_share == pytest.approx(1 / 6)
    assert stats.inverse_share == pytest.approx(2 / 6)
    assert stats.hierarchical_share == pytest.approx(1 / 6)
    assert stats.cardinality == pytest.approx(
        {"1-1": 2 / 6, "1-N": 1 / 6, "N-1": 2 / 6, "N-N": 1 / 6}
    )
    assert stats.pattern_sample == 0
    line = stats.describe()
    assert "8 entities, 6 relations, 23 facts" in line and "symmetric 17%" in line
    assert line.endswith("; 1-1 33%, 1-N 17%, N-1 33%, N-N 17%")
    assert "sample" not in line


def _reference(train: torch.Tensor) -> dict[int, tuple[float, float, float, float]]:
    """Per relation (symmetric, inverse, facts per head, facts per tail), the plain way: sets
    and counters (what kgweave computed before the vectorised version)."""
    pairs: dict[int, set[tuple[int, int]]] = defaultdict(set)
    by_pair: dict[tuple[int, int], set[int]] = defaultdict(set)
    for h, r, t in train.tolist():
        pairs[r].add((h, t))
        by_pair[(h, t)].add(r)
    out = {}
    for r, facts in pairs.items():
        reversed_in: Counter[int] = Counter()
        for h, t in facts:
            reversed_in.update(by_pair.get((t, h), ()))
        own = reversed_in.pop(r, 0) / len(facts)
        other = max(reversed_in.values(), default=0) / len(facts)
        heads, tails = len({h for h, _ in facts}), len({t for _, t in facts})
        out[r] = (own, other, len(facts) / heads, len(facts) / tails)
    return out


@pytest.mark.parametrize("name", ["nations", "umls", "kinships"])
def test_the_patterns_agree_with_a_plain_count_on_real_graphs(name: str) -> None:
    data = open_dataset(name, get_settings())
    patterns, _ = recipes.relation_patterns(data.train, data.num_entities, data.num_relations)
    expected = _reference(data.train)
    assert {p.relation for p in patterns} == set(expected)
    for p in patterns:
        got = (p.symmetric, p.inverse, p.tails_per_head, p.heads_per_tail)
        assert got == pytest.approx(expected[p.relation]), p


def test_a_sample_bounds_the_look_ups_and_keeps_certain_patterns_exact() -> None:
    """Sampled facts are looked up among all facts: a relation whose every fact holds reversed
    stays exactly symmetric, whatever the sample; counts and cardinality use every fact."""
    data = open_dataset("nations", get_settings())
    full = recipes.graph_statistics(data.train, data.num_entities, data.num_relations)
    sampled = recipes.graph_statistics(
        data.train, data.num_entities, data.num_relations, sample=400
    )
    assert sampled.pattern_sample == 400 and "(a sample of 400 facts)" in sampled.describe()
    assert sampled.facts == full.facts and sampled.facts_per_entity == full.facts_per_entity
    assert sampled.cardinality == full.cardinality
    # every fact of a relation holds reversed: any sample of it says 1.0
    train, entities, relations = _ids(
        [(f"e{i}", "near", f"e{i + 1}") for i in range(50)]
        + [(f"e{i + 1}", "near", f"e{i}") for i in range(50)]
        + [(f"e{i}", "next", f"e{i + 1}") for i in range(50)]
    )
    patterns, looked_up = recipes.relation_patterns(train, entities, relations, sample=30)
    assert looked_up == 30
    near, nxt = patterns
    assert near.symmetric == 1.0 and near.facts == 100
    assert nxt.symmetric == 0.0 and nxt.inverse == 1.0 and nxt.inverse_of == near.relation


def _stats(entities: int, relations: int, facts: int) -> recipes.GraphStatistics:
    return recipes.GraphStatistics(
        entities, relations, facts, 2 * facts / entities, facts / relations
    )


@pytest.mark.parametrize(
    ("shape", "name"),
    [
        ((135, 46, 5216), "small-dense"),  # UMLS
        ((220, 14, 424), "small"),  # the demo graph
        ((40943, 11, 86835), "sparse-large"),  # WN18RR
        ((14541, 237, 272115), "dense-large"),  # FB15k-237
        ((2_000_000, 50, 10_000_000), "huge"),
    ],
)
def test_the_recipe_follows_the_graphs_shape(shape: tuple[int, int, int], name: str) -> None:
    from kgweave.training.config import TrainConfig

    chosen = recipes.choose_recipe(_stats(*shape))
    assert chosen.name == name
    TrainConfig(**chosen.settings)


def test_every_rule_names_the_run_it_comes_from() -> None:
    for rule in recipes.RULES:
        assert rule.measured, rule.name
        assert rule.measured.startswith("not measured") or any(
            source in rule.measured for source in ("benchmarks/results/", "docs/benchmarks.md")
        ), rule.name
