"""Text fusion: KGE scores plus entity-text features, fitted on validation, exact rankings."""

from __future__ import annotations

import pytest
import torch

from kgweave.data import KGDataset, load_dataset
from kgweave.data.sources import demo_path
from kgweave.errors import ArtifactError, InvalidArgumentError
from kgweave.evaluation.ranking import build_filter, evaluate
from kgweave.language.components.encoder import TextEncoder
from kgweave.language.features.lexical_links import LexicalLinks, words
from kgweave.language.features.text_fusion import FEATURES, TextFusion
from kgweave.language.features.verbalize import Verbalizer
from kgweave.models import KGEModel
from kgweave.training import TrainConfig, train


def test_lexical_links_find_names_in_descriptions_and_name_suffixes() -> None:
    names = ["fruit tree", "tree", "breadfruit_tree", "fruit", "a", "oak"]
    descriptions = [
        "a tree bearing edible fruit",
        "a tall woody plant",
        "native to Pacific islands; a Tree",
        None,
        "the first letter",
        "a tree of the genus Quercus",
    ]
    links = LexicalLinks(names, descriptions)
    mentions, mentioned_by, suffixes, extended_by = links.tables()
    # "a" is a stopword: the entity named "a" is never matched inside a description
    assert [sorted(mentions.of(i)) for i in range(6)] == [[1, 3], [], [1], [], [], [1]]
    assert sorted(mentioned_by.of(1)) == [0, 2, 5] and mentioned_by.of(4) == []
    assert [sorted(suffixes.of(i)) for i in range(6)] == [[1], [], [1], [], [], []]
    assert sorted(extended_by.of(1)) == [0, 2]
    rows, cols = mentions.rows(torch.tensor([5, 0]))
    assert rows.tolist() == [0, 1, 1] and cols.tolist() == [1, 1, 3]
    assert words("Breadfruit_tree's O'Neil") == ["breadfruit", "tree's", "o'neil"]
    with pytest.raises(InvalidArgumentError, match="one per entity"):
        LexicalLinks(names, descriptions[:2])


@pytest.fixture(scope="module")
def demo() -> KGDataset:
    return load_dataset(demo_path(), name="demo")


@pytest.fixture(scope="module")
def model(demo: KGDataset) -> KGEModel:
    config = TrainConfig.model_validate({"dim": 16, "epochs": 20, "eval_every": 20})
    return train(demo, config, device="cpu", progress=False).model.eval()


@pytest.fixture(scope="module")
def vectors(demo: KGDataset) -> torch.Tensor:
    """Real all-MiniLM-L6-v2 vectors of the demo entities' ``name: description``."""
    verbalizer = Verbalizer.from_dataset(demo)
    labels = demo.entities.labels
    return TextEncoder(device="cpu", offline=True).encode_entities(
        [verbalizer.name(e) for e in labels], [verbalizer.descriptions.get(e) for e in labels]
    )


def _fusion(demo: KGDataset, vectors: torch.Tensor) -> TextFusion:
    return TextFusion.from_verbalizer(
        vectors, Verbalizer.from_dataset(demo), demo.entities.labels, demo.train,
        demo.num_relations,
    )  # fmt: skip


def test_unfitted_fusion_ranks_exactly_as_the_embeddings(
    demo: KGDataset, model: KGEModel, vectors: torch.Tensor
) -> None:
    fusion = _fusion(demo, vectors)
    assert fusion.weights.shape == (2 * demo.num_relations, len(FEATURES))
    known = build_filter(demo.all_triples(), demo.num_entities, demo.num_relations)
    test = demo.split("test")
    plain = evaluate(model, test, known)
    fused = fusion.evaluate(model, test, known)
    assert plain.ranks is not None and fused.ranks is not None
    torch.testing.assert_close(fused.ranks, plain.ranks)
    assert fused.metrics == pytest.approx(plain.metrics)


def test_fused_scores_are_the_weighted_sum_of_the_features(
    demo: KGDataset, model: KGEModel, vectors: torch.Tensor
) -> None:
    fusion = _fusion(demo, vectors)
    fusion.weights = torch.randn(fusion.weights.shape, generator=torch.Generator().manual_seed(1))
    hr = torch.tensor([[0, 0], [5, 3], [7, demo.num_relations + 2]])
    features = fusion.dense_features(model, hr)  # (B, F, N)
    expected = (fusion.weights[hr[:, 1]][:, :, None] * features).sum(1)
    torch.testing.assert_close(fusion.scores(model, hr), expected, atol=1e-5, rtol=1e-5)
    # the parts: log-softmax KGE, text cosine, links, popularity from training facts
    torch.testing.assert_close(
        features[:, 0], torch.log_softmax(model.predict_t(hr).float(), dim=1)
    )
    assert features[:, 1].max() <= 1.0 + 1e-5
    h, r, t = demo.train[0].tolist()
    popularity = fusion.dense_features(model, torch.tensor([[h, r]]))[0, 6]
    answers = int(((demo.train[:, 1] == r) & (demo.train[:, 2] == t)).sum())
    assert float(popularity[t]) == pytest.approx(torch.log1p(torch.tensor(answers)).item())


def test_fit_on_validation_improves_the_fit_and_reports_exact_mrr(
    demo: KGDataset, model: KGEModel, vectors: torch.Tensor
) -> None:
    fusion = _fusion(demo, vectors)
    known = build_filter(demo.all_triples(), demo.num_entities, demo.num_relations)
    valid = demo.split("valid")
    report = fusion.fit(model, valid, known, candidates=20, relation_labels=demo.relations.labels)
    assert report.queries == 2 * len(valid)
    # real text helps on validation facts the fit did not see, so the fusion is kept
    assert report.accepted
    assert report.held_out["fused_mrr"] > report.held_out["kge_mrr"]
    assert report.held_out["kge_mrr"] == pytest.approx(report.kge_mrr)
    assert report.loss_after < report.loss_before
    assert not torch.equal(fusion.weights, fusion.initial_weights())
    # the reported MRRs are the exact filtered MRRs over all entities
    assert report.kge_mrr == pytest.approx(evaluate(model, valid, known).metrics["mrr"])
    assert report.fused_mrr == pytest.approx(fusion.evaluate(model, valid, known).metrics["mrr"])
    assert report.fused_mrr > report.kge_mrr
    assert sum(int(v["queries"]) for v in report.per_relation.values()) == report.queries

    # weights round-trip through JSON; foreign or broken weights are refused
    stored = fusion.to_dict()
    again = _fusion(demo, vectors)
    again.load_weights(stored)
    hr = valid[:5, :2]
    torch.testing.assert_close(again.scores(model, hr), fusion.scores(model, hr))
    with pytest.raises(ArtifactError, match="features"):
        again.load_weights({**stored, "features": ["kge"]})
    with pytest.raises(ArtifactError, match="shape"):
        again.load_weights({**stored, "weights": stored["weights"][:3]})
    with pytest.raises(ArtifactError, match="not a kgweave text fusion"):
        again.load_weights({"weights": stored["weights"]})
    with pytest.raises(InvalidArgumentError, match="no validation triples"):
        fusion.fit(model, valid[:0], known)


def test_fit_can_be_limited_to_some_features(
    demo: KGDataset, model: KGEModel, vectors: torch.Tensor
) -> None:
    fusion = _fusion(demo, vectors)
    known = build_filter(demo.all_triples(), demo.num_entities, demo.num_relations)
    fusion.fit(model, demo.split("valid"), known, candidates=20, features=["text_cosine"])
    initial = fusion.initial_weights()
    cosine = FEATURES.index("text_cosine")
    others = [i for i in range(len(FEATURES)) if i != cosine]
    torch.testing.assert_close(fusion.weights[:, others], initial[:, others])
    assert fusion.weights[:, cosine].abs().sum() > 0
    # many lexical links per query are capped at 8x the candidates, best by KGE score first:
    # here every description names the 30 entities after it (60+ links per query)
    names = [Verbalizer.from_dataset(demo).name(e) for e in demo.entities.labels]
    n = len(names)
    crowded = [" ".join(names[(i + j) % n] for j in range(1, 31)) for i in range(n)]
    links = LexicalLinks(names, crowded)
    assert min(len(links.mentions.of(i)) for i in range(n)) >= 20
    capped = TextFusion(vectors, links, demo.train, demo.num_relations)
    report = capped.fit(model, demo.split("valid"), known, candidates=1)
    assert report.candidates <= report.queries * (1 + 8)
    # such text says nothing about the facts: on held-out facts the fit loses to the
    # embeddings, so the fusion is refused and ranks as the embeddings do
    assert not report.accepted
    assert report.held_out["fused_mrr"] < report.held_out["kge_mrr"]
    torch.testing.assert_close(capped.weights, capped.initial_weights())
    assert report.fused_mrr == pytest.approx(report.kge_mrr)
    with pytest.raises(InvalidArgumentError, match="unknown text fusion feature"):
        fusion.fit(model, demo.split("valid"), known, features=["kge", "colour"])
