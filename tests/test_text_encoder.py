"""The text encoder (real all-MiniLM-L6-v2 from the offline package) and semantic search."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from kgweave.errors import FailedPreconditionError, InvalidArgumentError, NotFoundError
from kgweave.language.components.encoder import DEFAULT_ENCODER, TextEncoder, entity_texts
from kgweave.language.features.semantic import SemanticIndex
from kgweave.settings import Settings


@pytest.fixture(scope="module")
def encoder() -> TextEncoder:
    return TextEncoder(DEFAULT_ENCODER, device="cpu", offline=True)


def test_loads_offline_from_the_package(encoder: TextEncoder) -> None:
    assert encoder.dim == 384
    assert Path(encoder.location).is_dir()
    vectors = encoder.encode(["Paris is the capital of France.", "a recipe for pancakes"])
    assert vectors.shape == (2, 384) and vectors.dtype == torch.float32
    torch.testing.assert_close(vectors.norm(dim=1), torch.ones(2))
    assert encoder.encode([]).shape == (0, 384)
    with pytest.raises(InvalidArgumentError):
        encoder.encode("one string")


def test_from_settings_uses_the_text_encoder_setting(encoder: TextEncoder) -> None:
    other = TextEncoder.from_settings(Settings(text_encoder=encoder.location, device="cpu"))
    text = ["Marie Curie was a physicist."]
    torch.testing.assert_close(other.encode(text), encoder.encode(text))


def test_similar_texts_are_closer_than_unrelated_ones(encoder: TextEncoder) -> None:
    a, b, c = encoder.encode(
        [
            "Vienna: capital city of Austria",
            "Budapest: capital city of Hungary",
            "Das Kapital: critique of political economy by Karl Marx",
        ]
    )
    assert float(a @ b) > float(a @ c) + 0.1


def test_batches_give_the_same_vectors(encoder: TextEncoder) -> None:
    texts = [f"entity number {i}" for i in range(7)]
    torch.testing.assert_close(
        encoder.encode(texts, batch_size=2), encoder.encode(texts, batch_size=64), atol=1e-5,
        rtol=1e-4,
    )  # fmt: skip


def test_missing_folder_and_offline_hub_id_are_clear_errors(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-encoder"
    with pytest.raises(NotFoundError, match=str(missing)):
        TextEncoder(str(missing), device="cpu")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(NotFoundError, match="holds no model"):
        TextEncoder(str(empty), device="cpu")
    with pytest.raises(FailedPreconditionError, match="KGWEAVE_TEXT_ENCODER"):
        TextEncoder("sentence-transformers/not-a-cached-model-xyz", device="cpu", offline=True)


def test_entity_texts() -> None:
    assert entity_texts(["Warsaw", None, "Ulm"], ["capital city of Poland", None, None], [
        "warsaw", "new_city", "ulm"
    ]) == ["Warsaw: capital city of Poland", "new city", "Ulm"]  # fmt: skip
    with pytest.raises(InvalidArgumentError):
        entity_texts(["a", "b"], ["only one"])


def test_semantic_index_maps_free_text_to_entities(encoder: TextEncoder) -> None:
    labels = ["vienna", "budapest", "das_kapital", "marie_curie", "physics"]
    texts = entity_texts(
        ["Vienna", "Budapest", "Das Kapital", "Marie Curie", "physics"],
        [
            "capital city of Austria",
            "capital city of Hungary",
            "critique of political economy by Karl Marx",
            "Polish-French physicist and chemist, pioneer of radioactivity research",
            "natural science of matter, energy and their interactions",
        ],
    )
    index = SemanticIndex.from_texts(texts, labels, encoder)
    assert len(index) == 5 and index.dim == 384
    hits = index.search(["the Austrian capital", "radioactivity pioneer", "economics book"], k=2)
    assert [row[0][0] for row in hits] == ["vienna", "marie_curie", "das_kapital"]
    assert all(len(row) == 2 and row[0][1] >= row[1][1] for row in hits)
    # a vector query gives the same answer as its text; k larger than the index is clipped
    vector = encoder.encode(["the Austrian capital"])[0]
    assert index.search_one(vector, k=50)[0][0] == "vienna"
    assert len(index.search_one(vector, k=50)) == 5
    # chunked scoring agrees with one pass
    chunked = SemanticIndex(index.vectors, labels, encoder, chunk_size=2)
    (one,) = index.search("the Austrian capital", k=5)
    (many,) = chunked.search("the Austrian capital", k=5)
    assert [label for label, _ in many] == [label for label, _ in one]
    assert [s for _, s in many] == pytest.approx([s for _, s in one], abs=1e-5)
    with pytest.raises(InvalidArgumentError):
        index.search(vector, k=0)
    with pytest.raises(FailedPreconditionError):
        SemanticIndex(index.vectors, labels).search("text needs an encoder")


class Counting(TextEncoder):
    """The real encoder, counting the texts it encodes."""

    def __init__(self, real: TextEncoder) -> None:
        self.__dict__.update(real.__dict__)
        self.encoded: list[str] = []

    def encode(self, texts, batch_size=64, progress=False):  # type: ignore[no-untyped-def]
        self.encoded += list(texts)
        return super().encode(texts, batch_size=batch_size, progress=progress)


def test_text_vectors_are_encoded_once_per_text_whatever_the_version(
    encoder: TextEncoder, tmp_path: Path
) -> None:
    """The cache is keyed by text and encoder: a new version with the same entities encodes
    nothing, a new entity or a changed description only itself."""
    from kgweave.language.features.text_vectors import cached_text_vectors

    counting = Counting(encoder)
    cache = tmp_path / "text-vectors"
    cache.mkdir()
    legacy = cache / ("0" * 24 + ".safetensors")  # the first layout's per-version file
    legacy.write_bytes(b"old")
    texts = ["Paris: capital of France", "Ulm: a city in Germany", "Paris: capital of France"]
    first = cached_text_vectors(texts, counting, cache)
    torch.testing.assert_close(first, encoder.encode(texts))
    assert counting.encoded == texts[:2]  # each distinct text once
    assert not legacy.exists() and len(list(cache.iterdir())) == 1
    # the next version: the same texts, one new entity, one description changed
    again = ["Ulm: a city in Germany", "Paris: capital of France", "Ulm: a city on the Danube",
             "Emmy Noether: German mathematician"]  # fmt: skip
    second = cached_text_vectors(again, counting, cache)
    torch.testing.assert_close(second, encoder.encode(again))
    assert counting.encoded == texts[:2] + again[2:]
    assert torch.equal(cached_text_vectors(again[:2], counting, cache), first[[1, 0]])
    assert len(counting.encoded) == 4
    # the file, not this process's memory of it, is what counts: another writer's file is read
    (only,) = cache.iterdir()
    only.unlink()
    torch.testing.assert_close(cached_text_vectors(texts[:1], counting, cache), first[:1])
    assert counting.encoded[4:] == texts[:1] and only.is_file()


def test_encoding_stops_between_chunks_and_resumes_where_it_stopped(
    encoder: TextEncoder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stopping server ends the entity texts' encoding after the chunk under way (no wait
    for the whole graph); the chunks done are cached, and the next start encodes the rest."""
    from kgweave.language.features import text_vectors
    from kgweave.language.features.text_vectors import EncodingStoppedError, cached_text_vectors

    monkeypatch.setattr(text_vectors, "CHUNK", 2)
    counting = Counting(encoder)
    cache = tmp_path / "text-vectors"
    texts = [f"Entity {i}: a person of the demo graph" for i in range(5)]
    polls: list[int] = []

    def stop_after_first_chunk() -> bool:
        polls.append(1)
        return True

    with pytest.raises(EncodingStoppedError, match="after encoding 2 of 5 texts"):
        cached_text_vectors(texts, counting, cache, should_stop=stop_after_first_chunk)
    assert counting.encoded == texts[:2] and len(polls) == 1
    vectors = cached_text_vectors(texts, counting, cache)
    assert counting.encoded == texts  # the rest only
    torch.testing.assert_close(vectors, encoder.encode(texts))
