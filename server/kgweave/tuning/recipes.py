"""Defaults that adapt to the graph: statistics of its training facts, and rules that map them
to a recipe (TrainConfig settings) for ``kgweave train`` with no flags.

The rules come from what was measured on the shared datasets (docs/training.md, "Tuning"): the
hand recipes of FB15k-237 and WN18RR, and short ``kgweave tune`` searches on UMLS, Kinships and
Nations. A rule names the graphs it was measured on; the first rule that matches wins.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

#: a relation is symmetric when this share of its facts also hold reversed; another relation is
#: its inverse when this share of its facts hold reversed in that one
PATTERN_SHARE = 0.8
#: hierarchical: one side has at least this many facts per entity on average, the other at
#: most HIERARCHY_ONE, and at most ANTISYMMETRIC of its facts hold reversed
HIERARCHY_MANY, HIERARCHY_ONE, ANTISYMMETRIC = 2.0, 1.2, 0.05


@dataclass(frozen=True)
class GraphStatistics:
    """The shape of a graph's training facts. Shares are of relations (each counts once)."""

    entities: int
    relations: int
    facts: int
    #: mean facts touching an entity (each fact touches two)
    facts_per_entity: float
    #: mean facts per relation
    facts_per_relation: float
    symmetric_share: float
    inverse_share: float
    hierarchical_share: float

    def to_dict(self) -> dict[str, Any]:
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in asdict(self).items()}


def graph_statistics(train: torch.Tensor, num_entities: int, num_relations: int) -> GraphStatistics:
    """Statistics of ``train``: shape (facts, 3), rows (head, relation, tail) ids.

    Symmetric: ≥ 80 % of the relation's facts hold reversed in it. Inverse: ≥ 80 % of its facts
    hold reversed in one other relation. Hierarchical: many-to-one or one-to-many (≥ 2 facts per
    entity on one side, ≤ 1.2 on the other) and antisymmetric (≤ 5 % hold reversed).
    """
    rows = [(int(h), int(r), int(t)) for h, r, t in train.tolist()]
    pairs: dict[int, set[tuple[int, int]]] = defaultdict(set)
    by_pair: dict[tuple[int, int], set[int]] = defaultdict(set)
    for h, r, t in rows:
        pairs[r].add((h, t))
        by_pair[(h, t)].add(r)
    symmetric = inverse = hierarchical = 0
    for r, facts in pairs.items():
        reversed_in: Counter[int] = Counter()
        for h, t in facts:
            reversed_in.update(by_pair.get((t, h), ()))
        own = reversed_in.pop(r, 0) / len(facts)
        other = max(reversed_in.values(), default=0) / len(facts)
        symmetric += own >= PATTERN_SHARE
        inverse += other >= PATTERN_SHARE
        heads = len({h for h, _ in facts})
        tails = len({t for _, t in facts})
        per_head, per_tail = len(facts) / heads, len(facts) / tails
        many, one = max(per_head, per_tail), min(per_head, per_tail)
        hierarchical += many >= HIERARCHY_MANY and one <= HIERARCHY_ONE and own <= ANTISYMMETRIC
    used = max(len(pairs), 1)
    return GraphStatistics(
        entities=num_entities,
        relations=num_relations,
        facts=len(rows),
        facts_per_entity=2 * len(rows) / max(num_entities, 1),
        facts_per_relation=len(rows) / max(num_relations, 1),
        symmetric_share=symmetric / used,
        inverse_share=inverse / used,
        hierarchical_share=hierarchical / used,
    )


@dataclass(frozen=True)
class Rule:
    """A recipe and the graphs it is for: ``applies`` reads the statistics; ``settings`` are
    TrainConfig fields over its defaults; ``measured`` says where the settings come from."""

    name: str
    applies: Callable[[GraphStatistics], bool]
    settings: dict[str, Any]
    why: str
    measured: str


@dataclass(frozen=True)
class Recipe:
    """The chosen recipe: its settings, and why (printed and stored in the artifact)."""

    name: str
    settings: dict[str, Any]
    reason: str
    statistics: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


#: the rules, first match wins; the last always matches
RULES: tuple[Rule, ...] = (
    Rule(
        "huge",
        lambda s: s.entities >= 1_000_000,
        {"regime": "negative-sampling", "dim": 128, "margin": 0.0, "valid_sample": 3000},
        "a million entities or more: one batch's 1-N scores would not fit in memory",
        "not measured: the 1-N regimes' memory (batch × entities scores) decides it",
    ),
    Rule(
        "sparse-large",
        lambda s: s.entities >= 5000 and s.facts_per_entity < 10,
        {
            "dim": 256,
            "batch_size": 512,
            "reg_weight": 0.05,
            "eval_every": 3,
            "valid_sample": 3000,
        },
        "a large sparse graph (few facts per entity, WN18RR-like): wider batches, a stronger "
        "N3 weight, validation on a 3,000-triple sample",
        "WN18RR's hand recipe (test MRR 0.477, docs/benchmarks.md)",
    ),
    Rule(
        "dense-large",
        lambda s: s.entities >= 5000,
        {
            "regime": "1vsall",
            "dim": 500,
            "batch_size": 1000,
            "reg_weight": 0.05,
            "eval_every": 2,
            "valid_sample": 3000,
        },
        "a large dense graph (FB15k-237-like): 1vsAll, dim 500, a stronger N3 weight, "
        "validation on a 3,000-triple sample",
        "FB15k-237's hand recipe (test MRR 0.358, docs/benchmarks.md)",
    ),
    Rule(
        "small",
        lambda s: True,
        {},
        "a small graph (under 5,000 entities): kgweave's defaults (ComplEx, KvsAll, Adagrad "
        "0.1, N3 0.01)",
        "UMLS 0.948, Kinships 0.866, Nations 0.777 with the defaults; 4-minute searches did "
        "not beat them (docs/benchmarks.md)",
    ),
)


def choose_recipe(stats: GraphStatistics) -> Recipe:
    """The first rule of :data:`RULES` that fits ``stats``."""
    rule = next(r for r in RULES if r.applies(stats))
    return Recipe(
        name=rule.name,
        settings=dict(rule.settings),
        reason=f"{rule.why} [{rule.measured}]",
        statistics=stats.to_dict(),
    )


def recipe_for(train: torch.Tensor, num_entities: int, num_relations: int) -> Recipe:
    """The recipe for a graph whose training facts are ``train``."""
    return choose_recipe(graph_statistics(train, num_entities, num_relations))
