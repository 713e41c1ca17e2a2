"""Completion re-ranking with the real pretrained LM (SmolLM2-135M-Instruct, fetched the way
users fetch it): fast scoring, the fitted three-signal weights, and new names with evidence."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch

from kgweave.artifact import load_artifact, save_artifact
from kgweave.data import KGDataset, load_dataset
from kgweave.data.sources import demo_path
from kgweave.errors import InvalidArgumentError
from kgweave.language.components.lm import load_causal_lm, sequence_logprob
from kgweave.language.features.completion import LMCompleter
from kgweave.language.features.constrained import _cut
from kgweave.language.features.lm_scoring import LMScorer
from kgweave.language.features.rerank import RerankWeights
from kgweave.predict import LinkPredictor, Query
from kgweave.training import TrainConfig, train


@pytest.fixture(scope="module")
def smol(pretrained_lm: Path) -> tuple[Any, Any]:
    return load_causal_lm(pretrained_lm, device="cpu")


@pytest.fixture(scope="module")
def demo() -> KGDataset:
    return load_dataset(demo_path(), name="demo")


@pytest.fixture(scope="module")
def blind(demo: KGDataset, smol: tuple[Any, Any], tmp_path_factory: Any) -> LMCompleter:
    """A completer whose KGE model has learnt nothing (seeded random rows): whatever ranks
    true facts first here is the LM."""
    config = TrainConfig.model_validate({"dim": 8, "epochs": 1, "eval_every": 1})
    model = train(demo, config, device="cpu", progress=False).model
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        for table in (model.entity.weight, model.relation.weight):
            table.normal_(0.0, 1.0)
    folder = save_artifact(tmp_path_factory.mktemp("kge") / "m", model, demo, {}, {})
    lm, tokenizer = smol
    return LMCompleter(LinkPredictor(load_artifact(folder)), lm, tokenizer, top_n=4)


def test_scorer_matches_full_passes_and_prefers_true_facts(smol: tuple[Any, Any]) -> None:
    lm, tokenizer = smol
    scorer = LMScorer(lm, tokenizer)
    # SmolLM2's BOS is its chat token; plain text is scored after the document separator
    assert tokenizer.bos_token == "<|im_start|>"
    assert tokenizer.convert_ids_to_tokens(scorer.start) == "<|endoftext|>"
    text = " Kraków, São Paulo"  # byte-level BPE: any text round-trips
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == text
    conts = [" Warsaw.", " the city of Kraków, Poland.", " Paris."]
    full = sequence_logprob(lm, tokenizer, ["Marie Curie was born in"] * 3, conts).tolist()
    assert scorer.score("Marie Curie was born in", conts) == pytest.approx(full, abs=1e-3)
    assert scorer.sequences == 3 and scorer.sequences_per_second > 0
    scorer = LMScorer(lm, tokenizer)
    for prompt, true, corrupted in (
        ("The capital of France is", " Paris.", " Berlin."),
        ("Tokyo is the capital of", " Japan.", " Canada."),
    ):
        right, wrong = scorer.score(prompt, [true, corrupted])
        assert right > wrong + 1.0, (prompt, right, wrong)
    with pytest.raises(InvalidArgumentError, match="empty"):
        scorer.score("x", [""])


FACTS = [  # (head, relation, true tail, three corrupted tails of the same kind)
    ("paris", "capital_of", "france", ["canada", "hungary", "denmark"]),
    ("albert_einstein", "citizen_of", "germany", ["canada", "spain", "ireland"]),
    ("enrico_fermi", "citizen_of", "italy", ["denmark", "canada", "hungary"]),
    ("pablo_picasso", "citizen_of", "spain", ["denmark", "canada", "sweden"]),
    ("james_watson", "born_in", "chicago", ["budapest", "prague", "zurich"]),
    ("alan_turing", "born_in", "london", ["budapest", "ulm", "brno"]),
    ("enrico_fermi", "born_in", "rome", ["stockholm", "toronto", "edinburgh"]),
    ("marie_curie", "citizen_of", "poland", ["canada", "spain", "ireland"]),
]


def test_fitted_weights_are_finite_and_weigh_an_informative_lm(blind: LMCompleter) -> None:
    index, relations = blind.artifact.entities.index, blind.artifact.relations.index
    groups = []
    for i, (head, relation, tail, wrong) in enumerate(FACTS):
        candidates = [index[e] for e in wrong]
        candidates.insert(i % 4, index[tail])  # the true tail anywhere in the list
        scored = blind._score(index[head], relations[relation], "tail", candidates)
        groups.append((scored, i % 4))
    weights = blind.fit_groups(groups)
    report = weights.report
    assert report["valid_mrr_lm"] > report["valid_mrr_kge"]  # the case: the LM knows, KGE not
    values = [weights.w_kge, weights.w_lm, weights.bias, weights.w_text or 0.0]
    assert all(math.isfinite(v) for v in values)
    assert weights.w_text == 0.0  # no text fusion on this model
    assert weights.w_lm > 0.1 * abs(weights.w_kge) and weights.w_lm > 0
    assert report["valid_mrr_combined"] > report["no_lm_valid_mrr"]
    assert weights.lm_feature in ("logprob", "pmi")
    assert {"logprob_cv_mrr", "pmi_cv_mrr", "no_lm_cv_mrr", "pmi_w_lm"} <= set(report)
    grid = blind.fit_groups(groups, method="grid", lm_features=("pmi",))
    assert grid.lm_feature == "pmi" and grid.w_lm > 0
    # the weights survive the artifact's JSON, and two-signal weights of older artifacts still
    # weigh the graph score alone
    assert RerankWeights.from_dict(weights.to_dict()) == weights
    old = RerankWeights.from_dict({"w_kge": 2.0, "w_lm": 0.5, "bias": 1.0})
    assert old.w_text is None and old.combine(1.0, -4.0, 3.0) == pytest.approx(2 * 3 - 2 + 1)
    with pytest.raises(InvalidArgumentError, match="lm_features"):
        blind.fit_groups(groups, lm_features=("perplexity",))


def test_completion_returns_graph_and_new_candidates_with_evidence(blind: LMCompleter) -> None:
    blind.weights = RerankWeights(1.0, 1.0, 0.0, "test", {}, 0.0, "logprob")
    blind.new_candidates, blind.lm_candidates, blind.beam_size = 3, 0, 4
    try:
        answers = blind.complete(Query("born_in", head="Pablo Picasso"), k=10)
    finally:
        blind.new_candidates, blind.lm_candidates, blind.beam_size = 0, 5, 8
    assert [a.rank for a in answers] == list(range(1, len(answers) + 1))
    assert [a.combined for a in answers] == sorted((a.combined for a in answers), reverse=True)
    graph = [a for a in answers if not a.new]
    new = [a for a in answers if a.new]
    assert len(graph) == 4 and new, answers  # the KGE top-4 and what the LM wrote
    names = {n.casefold() for n in blind.names}
    for a in new:
        assert a.entity == "" and a.source == "new" and not a.known
        assert a.name.casefold() not in names
        assert a.evidence == f"Pablo Picasso was born in {a.name}."
        assert math.isnan(a.kge_score) and a.lm_logprob < 0
    for a in graph:
        assert a.entity in blind.artifact.entities.index and a.source == "kge"
        assert a.evidence == f"Pablo Picasso was born in {a.name}."


def test_free_text_is_cut_to_a_name() -> None:
    assert _cut("France and is the largest city in Europe.", ["."], True) == "France"
    assert _cut("University of Paris in 1903.", ["."], True) == "University of Paris"
    assert _cut("1881 in Seville.", ["."], True) == "1881"
    assert _cut("fruit tree, a tree.", ["."], False) == "fruit tree"
    assert _cut("a town that runs on and on", ["."], False) == ""  # no end: maybe cut short
