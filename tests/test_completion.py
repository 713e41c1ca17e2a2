"""LLM-driven completion: KGE top-N and trie-constrained LM generation, re-ranked."""

from __future__ import annotations

import pytest
import torch

from kgweave.artifact import load_artifact, save_artifact
from kgweave.data import KGDataset, load_dataset
from kgweave.data.sources import demo_path
from kgweave.errors import InvalidArgumentError, NotFoundError
from kgweave.language.components.lm import build_small_lm, train_lm
from kgweave.language.components.tokenizer import train_tokenizer
from kgweave.language.features.completion import LMCompleter
from kgweave.language.features.constrained import EntityNameTrie, NameSearch
from kgweave.language.features.verbalize import Verbalizer
from kgweave.predict import LinkPredictor, Query
from kgweave.training import TrainConfig, train


@pytest.fixture(scope="module")
def demo() -> KGDataset:
    return load_dataset(demo_path(), name="demo")


@pytest.fixture(scope="module")
def completer(demo: KGDataset, tmp_path_factory: pytest.TempPathFactory) -> LMCompleter:
    """A small KGE model and a tiny LM trained on the demo graph (seconds on 2 cores)."""
    config = TrainConfig.model_validate({"dim": 16, "epochs": 20, "eval_every": 20})
    result = train(demo, config, device="cpu", progress=False)
    folder = save_artifact(tmp_path_factory.mktemp("kge") / "m", result.model, demo, {}, {})
    artifact = load_artifact(folder)
    verbalizer = Verbalizer.from_dataset(demo)
    ents, rels = demo.entities.labels, demo.relations.labels
    corpus = [verbalizer.triple(ents[h], rels[r], ents[t]) for h, r, t in demo.train.tolist()]
    names = [verbalizer.name(e) for e in ents]
    tokenizer = train_tokenizer([*corpus, *names], vocab_size=800)
    torch.manual_seed(0)
    lm = build_small_lm(tokenizer, n_layer=2, n_embd=64, n_head=2, n_positions=48, dropout=0)
    train_lm(lm, tokenizer, corpus, epochs=4, batch_size=32, lr=5e-3, progress=False)
    return LMCompleter(LinkPredictor(artifact), lm, tokenizer, verbalizer, top_n=10)


def test_combined_scores_follow_from_parts_and_fitted_weights(
    completer: LMCompleter, demo: KGDataset
) -> None:
    weights = completer.fit_weights(demo.split("valid"), max_triples=12)
    assert weights.method == "logistic"
    assert weights.report["queries"] >= 1
    assert weights.w_text == 0.0  # no text fusion: two signals
    assert weights.lm_feature in ("logprob", "pmi")
    assert completer.weights is weights
    for query in (Query("born_in", head="Marie Curie"), Query("citizen_of", tail="France")):
        answers = completer.complete(query, k=8)
        assert 1 <= len(answers) <= 8
        assert [a.rank for a in answers] == list(range(1, len(answers) + 1))
        combined = [a.combined for a in answers]
        assert combined == sorted(combined, reverse=True)
        for a in answers:
            lm = a.lm_logprob - (a.lm_marginal if weights.lm_feature == "pmi" else 0.0)
            expected = weights.w_kge * a.kge_score + weights.w_lm * lm + weights.bias
            assert a.combined == pytest.approx(expected, abs=1e-9)
            assert a.source in ("kge", "lm", "kge+lm")
            assert a.graph_score == a.kge_score  # no text fusion here
            assert a.lm_logprob <= 0
            assert a.name in a.evidence
    # the parts are the KGE score and the LM log-likelihood of the evidence sentence
    first = completer.complete(Query("born_in", head="Marie Curie"), k=1)[0]
    kge = completer.predictor.score([("marie_curie", "born_in", first.entity)])[0]
    assert first.kge_score == pytest.approx(kge, abs=1e-5)
    assert first.evidence == completer.verbalizer.triple("marie_curie", "born_in", first.entity)


def test_grid_fit_and_unfitted_weights(completer: LMCompleter, demo: KGDataset) -> None:
    grid = completer.fit_weights(demo.split("valid"), method="grid", max_triples=8)
    assert grid.method == "grid"
    assert grid.w_kge >= 0 and grid.w_lm >= 0
    assert 0 <= grid.report["valid_mrr_combined"] <= 1


def test_constrained_generation_only_yields_entity_names(completer: LMCompleter) -> None:
    names = set(completer.names)
    for query in (
        Query("born_in", head="Albert Einstein"),
        Query("award_received", head="Marie Curie"),
        Query("spouse_of", tail="Pierre Curie"),
    ):
        entity, relation, side = completer._resolve(query)
        prefix, suffix, leading, capitalize = completer.slot(entity, relation, side)
        trie = completer.trie(leading, capitalize)
        search = NameSearch(completer.scorer, beam_size=4, num_return=4)
        generated = search.constrained(trie, prefix, suffix)
        assert generated
        for g in generated:
            assert g.text == trie.surface(completer.names[g.entity])
            assert trie.surface(completer.names[g.entity]) in {trie.surface(n) for n in names}
            assert g.logprob <= 0
        logprobs = [g.logprob for g in generated]
        assert logprobs == sorted(logprobs, reverse=True)
    # the trie itself only continues names
    trie = EntityNameTrie(completer.tokenizer, ["Paris", "Paris Observatory", "Poland"])
    tokens = completer.tokenizer(" Paris", add_special_tokens=False)["input_ids"]
    assert trie.complete(tokens) == [0]
    assert trie.allowed(tokens)  # " Observatory" can follow
    assert trie.complete([*tokens[:-1], 10**6]) == []


def test_unknown_and_empty_inputs_give_clear_errors(completer: LMCompleter) -> None:
    with pytest.raises(NotFoundError, match="unknown entity"):
        completer.complete(Query("born_in", head="Marie Cury"))
    with pytest.raises(NotFoundError, match="unknown relation"):
        completer.complete(Query("born_at", head="Marie Curie"))
    with pytest.raises(InvalidArgumentError, match="empty head"):
        completer.complete(Query("born_in", head="  "))
    with pytest.raises(InvalidArgumentError, match="exactly one"):
        completer.complete(Query("born_in"))
    trie = completer.trie(" ", False)
    with pytest.raises(InvalidArgumentError, match="empty prompt"):
        NameSearch(completer.scorer).constrained(trie, "", "")
    with pytest.raises(InvalidArgumentError, match="k must be"):
        completer.complete(Query("born_in", head="Marie Curie"), k=0)
