"""Defaults that adapt to the graph: statistics of its training facts, and rules that map them
to a recipe (TrainConfig settings) for ``kgweave train`` with no flags.

Statistics (:func:`graph_statistics`): size and density, and per relation its patterns
(:func:`relation_patterns`): the share of its facts that hold reversed in itself (symmetric) or
in one other relation (inverse pair), its cardinality (1-1, 1-N, N-1, N-N: tails per head and
heads per tail, threshold 1.5 as in Bordes et al. 2013) and whether it is hierarchical. The
graph's shares count each relation once. All of it is a few sorts and binary searches over the
training facts; on graphs of more than :data:`PATTERN_SAMPLE` facts the reversed-fact look-ups
are made for a seeded sample of that many facts (against all of them), so the cost stays
bounded (FB15k-237's 272k facts: well under a second on one CPU core).

The rules (:data:`RULES`) come from what was measured on the shared datasets, each naming the
run it comes from (docs/training.md, "Recipes"; docs/benchmarks.md): the hand recipes of
FB15k-237 and WN18RR, and the defaults on UMLS, Kinships and Nations, which short ``kgweave
tune`` searches did not beat. The first rule that matches wins. No measurement so far ties a
relation pattern to a setting (on the five shared datasets size and density already separate
the measured recipes), so no rule reads the pattern shares yet: they are printed and stored with
the recipe, for the searches on graphs of other shapes that will ground such rules.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal, get_args

import numpy as np

if TYPE_CHECKING:
    import torch

#: a relation is symmetric when this share of its facts also hold reversed; another relation is
#: its inverse when this share of its facts hold reversed in that one
PATTERN_SHARE = 0.8
#: hierarchical: one side has at least this many facts per entity on average, the other at
#: most HIERARCHY_ONE, and at most ANTISYMMETRIC of its facts hold reversed
HIERARCHY_MANY, HIERARCHY_ONE, ANTISYMMETRIC = 2.0, 1.2, 0.05
#: a side is "many" from this mean number of entities per entity of the other side on (1-N,
#: N-1, N-N; Bordes et al. 2013)
MANY = 1.5
#: reversed-fact look-ups are made for at most this many facts (a seeded sample beyond it)
PATTERN_SAMPLE = 1_000_000

Cardinality = Literal["1-1", "1-N", "N-1", "N-N"]
CARDINALITIES: tuple[Cardinality, ...] = get_args(Cardinality)


@dataclass(frozen=True)
class RelationPattern:
    """One relation's patterns in the training facts.

    ``symmetric``: share of its facts whose reverse ``(t, r, h)`` is a fact too; ``inverse``:
    the largest share of its facts whose reverse holds in one other relation, ``inverse_of``
    that relation (-1: none); ``tails_per_head``/``heads_per_tail``: facts per distinct head /
    tail. Shares are measured on the sampled facts when the graph is sampled.
    """

    relation: int
    facts: int
    symmetric: float
    inverse: float
    inverse_of: int
    tails_per_head: float
    heads_per_tail: float

    @property
    def cardinality(self) -> Cardinality:
        many_tails, many_heads = self.tails_per_head >= MANY, self.heads_per_tail >= MANY
        if many_tails and many_heads:
            return "N-N"
        if many_tails:
            return "1-N"
        return "N-1" if many_heads else "1-1"

    @property
    def hierarchical(self) -> bool:
        many = max(self.tails_per_head, self.heads_per_tail)
        one = min(self.tails_per_head, self.heads_per_tail)
        return many >= HIERARCHY_MANY and one <= HIERARCHY_ONE and self.symmetric <= ANTISYMMETRIC


@dataclass(frozen=True)
class GraphStatistics:
    """The shape of a graph's training facts. Shares are of relations (each counts once, those
    with training facts)."""

    entities: int
    relations: int
    facts: int
    #: mean facts touching an entity (each fact touches two)
    facts_per_entity: float
    #: mean facts per relation
    facts_per_relation: float
    symmetric_share: float = 0.0
    inverse_share: float = 0.0
    hierarchical_share: float = 0.0
    #: the share of each cardinality, in :data:`CARDINALITIES`' order (they sum to 1)
    cardinality: dict[Cardinality, float] = field(
        default_factory=lambda: dict.fromkeys(CARDINALITIES, 0.0)
    )
    #: facts the reversed-fact shares were measured on when sampled (0: all of them)
    pattern_sample: int = 0

    def to_dict(self) -> dict[str, Any]:
        """The statistics as JSON values, shares rounded to 4 digits."""
        record = asdict(self)
        record["cardinality"] = {c: round(v, 4) for c, v in self.cardinality.items()}
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in record.items()}

    def describe(self) -> str:
        """One line: size, density and the pattern shares."""
        sampled = f" (a sample of {self.pattern_sample} facts)" if self.pattern_sample else ""
        cardinality = ", ".join(f"{c} {share:.0%}" for c, share in self.cardinality.items())
        return (
            f"graph: {self.entities} entities, {self.relations} relations, {self.facts} facts "
            f"({self.facts_per_entity:.1f} per entity); relations symmetric "
            f"{self.symmetric_share:.0%}, with an inverse {self.inverse_share:.0%}, hierarchical "
            f"{self.hierarchical_share:.0%}; {cardinality}{sampled}"
        )


def _distinct(values: np.ndarray) -> np.ndarray:
    """``values`` sorted, each once (a sort: NumPy's hash-based ``unique`` was 5× slower on
    millions of int64 keys)."""
    values = np.sort(values)
    keep = np.ones(len(values), dtype=bool)
    keep[1:] = values[1:] != values[:-1]
    return values[keep]


def _sorted_facts(
    train: torch.Tensor, num_entities: int, num_relations: int
) -> tuple[np.ndarray, np.ndarray]:
    """Distinct facts sorted by entity pair, then relation: their pair keys ``head · E + tail``
    and relations, shapes (F,) and (F,). One int64 key per fact, ``pair · R + relation``,
    where it fits (one sort), else a two-key sort."""
    heads, relations, tails = train.long().cpu().numpy().T
    pairs = heads * num_entities + tails
    if num_entities**2 * num_relations < 2**63:
        keys = _distinct(pairs * num_relations + relations)
        return keys // num_relations, keys % num_relations
    order = np.lexsort((relations, pairs))
    pairs, relations = pairs[order], relations[order]
    keep = np.ones(len(pairs), dtype=bool)
    keep[1:] = (pairs[1:] != pairs[:-1]) | (relations[1:] != relations[:-1])
    return pairs[keep], relations[keep]


def relation_patterns(
    train: torch.Tensor,
    num_entities: int,
    num_relations: int,
    sample: int = PATTERN_SAMPLE,
    seed: int = 0,
) -> tuple[list[RelationPattern], int]:
    """Each relation's patterns in ``train`` (shape (facts, 3), rows (head, relation, tail)
    ids), for the relations that have facts; and how many facts the reversed-fact shares were
    measured on when sampled (a seeded sample of ``sample`` distinct facts, each looked up in
    all of them; 0: all of them).

    The distinct facts are sorted by entity pair ``h · E + t``, then relation; the facts of
    the reversed pair ``(t, h)`` are one contiguous range, found by binary search. NumPy, not
    torch: single-threaded and as fast (torch's threads, on a loaded 2-core machine, took 5×
    longer). Ids must stay below 3·10⁹ (``E²`` fits in int64).
    """
    num_entities, num_relations = max(num_entities, 1), max(num_relations, 1)
    pairs, rel = _sorted_facts(train, num_entities, num_relations)
    heads, tails = pairs // num_entities, pairs % num_entities
    # cardinality on every fact: facts per distinct head (tail) of each relation
    facts = np.bincount(rel, minlength=num_relations)
    distinct_heads = np.bincount(
        _distinct(rel * num_entities + heads) // num_entities, minlength=num_relations
    )
    distinct_tails = np.bincount(
        _distinct(rel * num_entities + tails) // num_entities, minlength=num_relations
    )
    # reversed facts, for every fact or a seeded sample of them
    queries, sampled = np.arange(len(pairs)), 0
    if len(pairs) > sample:
        queries = np.sort(np.random.default_rng(seed).choice(len(pairs), sample, replace=False))
        sampled = sample
    q_rel = rel[queries]
    reversed_pair = tails[queries] * num_entities + heads[queries]
    start = np.searchsorted(pairs, reversed_pair, side="left")
    found = np.searchsorted(pairs, reversed_pair, side="right") - start
    # one row per (query fact, relation holding it reversed)
    which = np.repeat(np.arange(len(queries)), found)
    first = np.cumsum(found) - found
    at = start[which] + np.arange(len(which)) - first[which]
    from_rel, to_rel = q_rel[which], rel[at]
    asked = np.maximum(np.bincount(q_rel, minlength=num_relations), 1)
    own = np.bincount(from_rel[from_rel == to_rel], minlength=num_relations) / asked
    other = from_rel != to_rel
    relation_pairs, counts = np.unique(  # (relation, partner) pairs: a few thousand at most
        from_rel[other] * num_relations + to_rel[other], return_counts=True
    )
    of, to = relation_pairs // num_relations, relation_pairs % num_relations
    best = np.zeros(num_relations, dtype=np.int64)
    np.maximum.at(best, of, counts)
    # the partner: the other relation holding most of them reversed (the lowest id on a tie)
    partner = np.full(num_relations, num_relations, dtype=np.int64)
    is_best = counts == best[of]
    np.minimum.at(partner, of[is_best], to[is_best])
    partner[partner == num_relations] = -1
    patterns = [
        RelationPattern(
            relation=r,
            facts=int(facts[r]),
            symmetric=float(own[r]),
            inverse=float(best[r] / asked[r]),
            inverse_of=int(partner[r]),
            tails_per_head=float(facts[r] / distinct_heads[r]),
            heads_per_tail=float(facts[r] / distinct_tails[r]),
        )
        for r in np.flatnonzero(facts).tolist()
    ]
    return patterns, sampled


def graph_statistics(
    train: torch.Tensor, num_entities: int, num_relations: int, sample: int = PATTERN_SAMPLE
) -> GraphStatistics:
    """Statistics of ``train``: shape (facts, 3), rows (head, relation, tail) ids.

    Symmetric: ≥ 80 % of the relation's facts hold reversed in it. Inverse: ≥ 80 % of its facts
    hold reversed in one other relation. Hierarchical: many-to-one or one-to-many (≥ 2 facts per
    entity on one side, ≤ 1.2 on the other) and antisymmetric (≤ 5 % hold reversed).
    Cardinality: 1-N when a head has ≥ 1.5 tails on average and a tail < 1.5 heads, and so on.
    """
    patterns, sampled = relation_patterns(train, num_entities, num_relations, sample)
    used = max(len(patterns), 1)

    def share(test: Callable[[RelationPattern], bool]) -> float:
        return sum(1 for p in patterns if test(p)) / used

    cardinalities = Counter(p.cardinality for p in patterns)
    facts = len(train)
    return GraphStatistics(
        entities=num_entities,
        relations=num_relations,
        facts=facts,
        facts_per_entity=2 * facts / max(num_entities, 1),
        facts_per_relation=facts / max(num_relations, 1),
        symmetric_share=share(lambda p: p.symmetric >= PATTERN_SHARE),
        inverse_share=share(lambda p: p.inverse >= PATTERN_SHARE),
        hierarchical_share=share(lambda p: p.hierarchical),
        cardinality={c: cardinalities[c] / used for c in CARDINALITIES},
        pattern_sample=sampled,
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


#: the rules, first match wins; the last always matches. Each names the run its settings come
#: from. The pattern shares of the shared datasets, for the rules that will read them (graph
#: statistics as printed by ``kgweave train``; symmetric / with an inverse / hierarchical /
#: N-N, shares of relations):
#:
#: ========== ======== ========= ====== ====== ====== ======
#: dataset    entities facts/ent  sym    inv    hier   N-N
#: ========== ======== ========= ====== ====== ====== ======
#: Nations          14     227.4   18 %   42 %    4 %   65 %
#: Kinships        104     164.3    0 %    4 %    8 %   84 %
#: UMLS            135      77.3    2 %    7 %    9 %   67 %
#: WN18RR       40,943       4.2   27 %    0 %   55 %   18 %
#: FB15k-237    14,541      37.4   10 %    5 %   32 %   46 %
#: ========== ======== ========= ====== ====== ====== ======
#:
#: The measured recipes split by size and density alone (Nations, with the most symmetric and
#: inverse relations, takes the same defaults as Kinships with none), so no rule reads the
#: shares: a rule on them waits for searches on graphs where they change the best settings.
RULES: tuple[Rule, ...] = (
    Rule(
        "huge",
        lambda s: s.entities >= 1_000_000,
        {"regime": "negative-sampling", "dim": 128, "margin": 0.0, "valid_sample": 3000},
        "a million entities or more: one batch's 1-N scores would not fit in memory",
        # no run: 1-N scores of a 1,000-query batch over a million entities are 4 GB (fp32)
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
        # `kgweave train -d wn18rr ... --time-budget 4000`, 2026-12-01: 47 epochs, test 0.477
        "WN18RR's hand recipe (test MRR 0.477 in 67 minutes, 2026-12-01; docs/benchmarks.md, "
        "'Quality with the best default settings')",
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
        # benchmarks/results/fb15k-237_1vsall_d500.json (2026-12-01): 29 epochs, test 0.358
        "FB15k-237's hand recipe (test MRR 0.358 in 83 minutes, 2026-12-01; "
        "benchmarks/results/fb15k-237_1vsall_d500.json)",
    ),
    Rule(
        "small-dense",
        lambda s: s.facts_per_entity >= 20,
        {
            "regime": "1vsall",
            "dim": 500,
            "batch_size": 256,
            "lr": 0.08,
            "reg_weight": 0.0005,
            "label_smoothing": 0.1,
            "relation_dropout": 0.05,
        },
        "a small dense graph (under 5,000 entities, 20 or more facts per entity): 1vsAll, "
        "dim 500, Adagrad 0.08, a small N3 weight, label smoothing and a little relation "
        "dropout",
        # benchmarks/results/tune_eval_{umls,kinships}_1h.json, tune_eval_nations_2m_target.json
        # (the searches, 2026-12-05/06); benchmarks/results/recipe_small.json (this recipe,
        # seeds 0 and 1)
        "what the best trials of the 1-hour searches on UMLS and Kinships and the Nations "
        "search share; test MRR UMLS 0.966, Kinships 0.885, Nations 0.826 (mean of 2 seeds, "
        "benchmarks/results/recipe_small.json) against the defaults' 0.948, 0.866, 0.777",
    ),
    Rule(
        "small",
        lambda s: True,
        {},
        "a small sparse graph (under 5,000 entities, fewer than 20 facts per entity): "
        "kgweave's defaults (ComplEx, KvsAll, Adagrad 0.1, N3 0.01)",
        # no shared dataset has this shape; the demo graph (3.9 facts per entity) does
        "not measured against a search: no shared dataset is small and sparse; the defaults "
        "(benchmarks/results/pykeen-small.json for the small dense graphs they served before)",
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
