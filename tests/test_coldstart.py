"""Cold start: a real model trained on the demo graph without two entities, which then come back
with text only and must land in sensible places of the embedding space."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from kgweave.artifact import ModelArtifact, load_artifact, save_artifact
from kgweave.data.dataset import KGDataset, load_dataset
from kgweave.data.sources import demo_path
from kgweave.errors import FailedPreconditionError, InvalidArgumentError, NotFoundError
from kgweave.language.components.encoder import DEFAULT_ENCODER, TextEncoder
from kgweave.language.features.coldstart import (
    TextProjection,
    add_cold_entities,
    artifact_entity_texts,
    fit_projection,
)
from kgweave.predict import LinkPredictor, Query
from kgweave.training.config import TrainConfig
from kgweave.training.loop import train

HELD_OUT = ["vienna", "erwin_schrodinger"]


@pytest.fixture(scope="module")
def full() -> KGDataset:
    return load_dataset(demo_path(), "demo")


@pytest.fixture(scope="module")
def encoder() -> TextEncoder:
    return TextEncoder(DEFAULT_ENCODER, device="cpu", offline=True)


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory, full: KGDataset) -> ModelArtifact:
    """A ComplEx model trained on the demo graph with every fact of HELD_OUT removed."""
    folder = tmp_path_factory.mktemp("held-out")
    data = folder / "demo"
    data.mkdir()
    for path in demo_path().glob("*.tsv"):
        if path.stem in ("train", "valid", "test"):
            lines = path.read_text(encoding="utf-8").splitlines()
            kept = [x for x in lines if not set(x.split("\t")[::2]) & set(HELD_OUT)]
            (data / path.name).write_text("\n".join(kept) + "\n", encoding="utf-8")
        else:
            shutil.copy(path, data / path.name)
    dataset = load_dataset(data, "demo-held-out")
    assert not any(e in dataset.entities for e in HELD_OUT)
    result = train(dataset, TrainConfig(epochs=20, dim=64), device="cpu", progress=False)
    return load_artifact(save_artifact(folder / "model", result.model, dataset, {}, {}))


@pytest.fixture(scope="module")
def projection(artifact: ModelArtifact, encoder: TextEncoder) -> TextProjection:
    return fit_projection(artifact, encoder, l2=1.0)


@pytest.fixture(scope="module")
def extended(
    artifact: ModelArtifact, encoder: TextEncoder, projection: TextProjection, full: KGDataset
) -> ModelArtifact:
    return add_cold_entities(
        artifact,
        HELD_OUT,
        [full.entity_names[e] for e in HELD_OUT],
        [full.entity_descriptions[e] for e in HELD_OUT],
        encoder,
        projection,
    )


def _facts(full: KGDataset, relation: str) -> list[tuple[str, str]]:
    ents, rels = full.entities.labels, full.relations.labels
    return [(ents[h], ents[t]) for h, r, t in full.train.tolist() if rels[r] == relation]


def _neighbours(art: ModelArtifact, label: str, k: int) -> list[str]:
    """The k entities with the most similar embedding (cosine), excluding ``label``."""
    table = torch.nn.functional.normalize(art.model.entity.weight.detach(), dim=1)
    i = art.entities.index[label]
    sims = table @ table[i]
    sims[i] = -2.0
    return [art.entities.labels[j] for j in sims.topk(k).indices.tolist()]


def test_projection_fits_and_round_trips(
    tmp_path: Path, artifact: ModelArtifact, projection: TextProjection, encoder: TextEncoder
) -> None:
    width = artifact.model.entity.weight.shape[1]
    assert (projection.text_dim, projection.kge_dim) == (encoder.dim, width)
    assert projection.info["num_fitted"] == len(artifact.entities)
    assert 0.0 < projection.info["train_r2"] < 1.0
    # projecting the training entities' own text lands closer to their own embedding than to
    # a random other entity's, on average
    texts = artifact_entity_texts(artifact)[:50]
    guessed = projection.project(encoder.encode(texts))  # (50, Dk)
    truth = artifact.model.entity.weight.detach()[:50]
    cos = torch.nn.functional.cosine_similarity
    assert float(cos(guessed, truth).mean()) > float(cos(guessed, truth.roll(1, 0)).mean()) + 0.1
    projection.save(tmp_path / "proj")
    assert sorted(p.name for p in (tmp_path / "proj").iterdir()) == [
        "projection.json",
        "projection.safetensors",
    ]
    loaded = TextProjection.load(tmp_path / "proj")
    assert loaded.info == projection.info
    torch.testing.assert_close(loaded.project(encoder.encode(texts)), guessed)
    with pytest.raises(NotFoundError):
        TextProjection.load(tmp_path / "nothing")
    with pytest.raises(InvalidArgumentError, match="another text encoder"):
        projection.project(torch.zeros(2, 17))


def test_primal_and_dual_ridge_agree() -> None:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(30, 8, generator=generator)
    y = torch.randn(30, 5, generator=generator)
    primal = TextProjection.fit(x, y, l2=0.5)  # N >= Dt
    # the same problem in the dual: pad x with zero columns so that Dt > N
    dual = TextProjection.fit(torch.cat((x, torch.zeros(30, 40)), dim=1), y, l2=0.5)
    torch.testing.assert_close(dual.weight[:8], primal.weight, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(dual.bias, primal.bias, atol=1e-5, rtol=1e-4)
    with pytest.raises(InvalidArgumentError):
        TextProjection.fit(x, y[:10])


def test_cold_entities_extend_a_copy(artifact: ModelArtifact, extended: ModelArtifact) -> None:
    n = len(artifact.entities)
    assert len(extended.entities) == n + 2 and len(artifact.entities) == n
    assert artifact.model.entity.weight.shape[0] == n  # the original is untouched
    assert extended.entities.labels[n:] == HELD_OUT
    assert extended.entity_names[n:] == ["Vienna", "Erwin Schrödinger"]
    assert extended.entity_descriptions[n] == "capital city of Austria"
    assert extended.config["cold_entities"] == HELD_OUT
    assert extended.config["model"]["num_entities"] == n + 2
    torch.testing.assert_close(
        extended.model.entity.weight[:n].detach(), artifact.model.entity.weight.detach()
    )
    torch.testing.assert_close(
        extended.model.relation.weight.detach(), artifact.model.relation.weight.detach()
    )


def test_held_out_person_lands_among_physicists(extended: ModelArtifact, full: KGDataset) -> None:
    physicists = {h for h, t in _facts(full, "field_of_work") if t == "physics"}
    near = _neighbours(extended, "erwin_schrodinger", 5)
    assert len(set(near) & physicists) >= 4, near


def _places(full: KGDataset) -> set[str]:
    """Cities, countries and the like: what the demo graph says is born in or located in."""
    return (
        {t for _, t in _facts(full, "born_in")}
        | {h for h, _ in _facts(full, "capital_of")}
        | {h for h, _ in _facts(full, "located_in")}
        | {t for _, t in _facts(full, "located_in")}
    )


def test_held_out_city_lands_among_places(extended: ModelArtifact, full: KGDataset) -> None:
    places = _places(full)
    near = _neighbours(extended, "vienna", 5)
    assert len(set(near) & places) >= 2, near


def test_link_prediction_ranks_plausible_answers_for_cold_entities(
    extended: ModelArtifact, full: KGDataset
) -> None:
    predictor = LinkPredictor(extended)
    countries = {t for _, t in _facts(full, "citizen_of")}
    people = {
        h
        for relation in ("born_in", "citizen_of", "field_of_work", "award_received", "worked_at")
        for h, _ in _facts(full, relation)
    }
    field, citizen, born, born_here, located = predictor.predict(
        [
            Query("field_of_work", head="erwin_schrodinger"),
            Query("citizen_of", head="Erwin Schrödinger"),  # by name, too
            Query("born_in", head="erwin_schrodinger"),
            Query("born_in", tail="vienna"),  # the cold entity as tail
            Query("located_in", head="vienna"),
        ],
        k=5,
    )
    assert "physics" in [p.entity for p in field[:3]], field
    assert {p.entity for p in citizen[:3]} <= countries, citizen
    assert {p.entity for p in born[:3]} <= _places(full), born
    assert sum(p.entity in people for p in born_here) >= 4, born_here
    assert len(located) == 5
    # the cold entities can be candidates too: scores exist and rank in the full table
    scores = predictor.score(
        [("erwin_schrodinger", "field_of_work", "physics"), ("lise_meitner", "born_in", "vienna")]
    )
    assert all(isinstance(s, float) for s in scores)


def test_cold_entity_errors(
    artifact: ModelArtifact, encoder: TextEncoder, projection: TextProjection
) -> None:
    with pytest.raises(InvalidArgumentError, match="already in the model"):
        add_cold_entities(artifact, ["marie_curie"], ["Marie Curie"], None, encoder, projection)
    with pytest.raises(InvalidArgumentError, match="one name"):
        add_cold_entities(artifact, ["a", "b"], ["A"], None, encoder, projection)
    narrow = TextProjection(torch.zeros(encoder.dim, 3), torch.zeros(3))
    with pytest.raises(FailedPreconditionError, match="fit a projection"):
        add_cold_entities(artifact, ["new"], ["New"], None, encoder, narrow)


def test_new_entities_neighbours_are_found_in_one_pass() -> None:
    """The change applier places a new entity without text at the mean of its neighbours: the
    other end of every fact it is in, found for all of a batch's new entities in one pass over
    the overlay's facts (it was one pass per entity), the same as each entity's own scan."""
    from kgweave.changes.apply import neighbours_of

    generator = torch.Generator().manual_seed(0)
    labels = [f"e{i}" for i in range(40)]
    picks = torch.randint(0, 40, (300, 2), generator=generator).tolist()
    facts = {(labels[h], "r", labels[t]) for h, t in picks} | {("e3", "loop", "e3")}
    entities = ["e3", "e7", "e11", "nowhere"]
    found = neighbours_of(facts, entities)
    assert list(found) == entities
    for e in entities:  # the applier's former scan, per entity
        assert found[e] == [f[2] if f[0] == e else f[0] for f in facts if e in (f[0], f[2])]
    assert found["nowhere"] == []

    class Untouchable(list[tuple[str, str, str]]):
        def __iter__(self):  # type: ignore[no-untyped-def]
            raise AssertionError("a batch without new entities scanned the overlay's facts")

    assert neighbours_of(Untouchable(facts), []) == {}
    assert found["e3"].count("e3") == sum(1 for h, _, t in facts if h == t == "e3")  # once each
