"""The language model half: graph-trained tokenizer, small LM training, scoring, storage."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from kgweave.data import KGDataset, load_dataset
from kgweave.data.sources import demo_path
from kgweave.errors import ArtifactError, FailedPreconditionError, NotFoundError
from kgweave.language.components.lm import (
    build_small_lm,
    load_causal_lm,
    load_lm,
    save_lm,
    sequence_logprob,
    train_lm,
)
from kgweave.language.components.tokenizer import load_tokenizer, save_tokenizer, train_tokenizer
from kgweave.language.features.verbalize import Verbalizer


@pytest.fixture(scope="module")
def demo() -> KGDataset:
    return load_dataset(demo_path(), name="demo")


@pytest.fixture(scope="module")
def corpus(demo: KGDataset) -> list[str]:
    verbalizer = Verbalizer.from_dataset(demo)
    ents, rels = demo.entities.labels, demo.relations.labels
    return [verbalizer.triple(ents[h], rels[r], ents[t]) for h, r, t in demo.train.tolist()]


@pytest.fixture(scope="module")
def trained(demo: KGDataset, corpus: list[str]) -> tuple[object, object, list[dict[str, float]]]:
    """A 2-layer, 64-wide LM trained for a few epochs on the demo facts (seconds on 2 cores)."""
    torch.manual_seed(0)
    names = [demo.entity_name(e) for e in demo.entities.labels]
    tokenizer = train_tokenizer([*corpus, *names], vocab_size=800)
    model = build_small_lm(tokenizer, n_layer=2, n_embd=64, n_head=2, n_positions=48, dropout=0)
    history = train_lm(
        model, tokenizer, corpus, epochs=6, batch_size=32, lr=6e-3, device="cpu", progress=False
    )
    return model, tokenizer, history


def test_tokenizer_trains_on_the_demo_corpus_deterministically(
    demo: KGDataset, corpus: list[str], tmp_path: Path
) -> None:
    names = [demo.entity_name(e) for e in demo.entities.labels]
    first = train_tokenizer([*corpus, *names], vocab_size=800)
    second = train_tokenizer([*corpus, *names], vocab_size=800)
    assert first.backend_tokenizer.to_str() == second.backend_tokenizer.to_str()
    assert (first.pad_token_id, first.bos_token_id, first.eos_token_id) == (0, 1, 2)
    assert len(first) <= 800
    # the graph's words become single tokens; any text still encodes (byte level)
    assert first.tokenize(" Curie") == ["ĠCurie"]
    assert first.decode(first("Zürich ☃")["input_ids"]) == "Zürich ☃"
    path = save_tokenizer(first, tmp_path)
    assert path.name == "tokenizer.json"
    again = load_tokenizer(tmp_path)
    assert again("Marie Curie")["input_ids"] == first("Marie Curie")["input_ids"]
    assert again.bos_token == "<|bos|>"


def test_small_lm_loss_falls_and_it_prefers_true_facts(
    demo: KGDataset, trained: tuple[object, object, list[dict[str, float]]]
) -> None:
    model, tokenizer, history = trained
    losses = [row["loss"] for row in history]
    assert len(losses) == 6
    assert losses[-1] < 0.6 * losses[0]
    # log P(true tail | prompt) beats a corrupted tail on average over many training facts
    verbalizer = Verbalizer.from_dataset(demo)
    ents, rels = demo.entities.labels, demo.relations.labels
    facts = demo.train[::10].tolist()
    generator = torch.Generator().manual_seed(0)
    prompts, true, corrupt = [], [], []
    for h, r, t in facts:
        prefix, suffix = verbalizer.relation_phrase(rels[r]).split_tail(verbalizer.name(ents[h]))
        other = int(torch.randint(len(ents), (1,), generator=generator))
        while other == t:
            other = (other + 1) % len(ents)
        prompts.append(prefix)
        true.append(" " + verbalizer.name(ents[t]) + suffix)
        corrupt.append(" " + verbalizer.name(ents[other]) + suffix)
    good = sequence_logprob(model, tokenizer, prompts, true)
    bad = sequence_logprob(model, tokenizer, prompts, corrupt)
    assert good.shape == (len(facts),)
    assert bool((good <= 0).all())
    assert float(good.mean()) > float(bad.mean()) + 2.0
    assert float((good > bad).float().mean()) > 0.7


def test_sequence_logprob_is_batch_independent(
    trained: tuple[object, object, list[dict[str, float]]],
) -> None:
    model, tokenizer, _ = trained
    prompts = ["Marie Curie was born in", "", "Albert Einstein received the"]
    conts = [" Warsaw.", "Paris is the capital of France.", " Nobel Prize in Physics."]
    together = sequence_logprob(model, tokenizer, prompts, conts)
    alone = torch.cat(
        [sequence_logprob(model, tokenizer, [p], [c]) for p, c in zip(prompts, conts, strict=True)]
    )
    torch.testing.assert_close(together, alone, atol=1e-4, rtol=1e-4)


def test_save_load_round_trip(
    trained: tuple[object, object, list[dict[str, float]]], tmp_path: Path
) -> None:
    model, tokenizer, _ = trained
    folder = save_lm(model, tokenizer, tmp_path / "lm")
    assert (folder / "model.safetensors").is_file()
    assert (folder / "tokenizer.json").is_file()
    assert not list(folder.glob("*.bin")) and not list(folder.glob("*.pt"))
    loaded, loaded_tok = load_lm(folder, "cpu")
    prompts, conts = ["Pierre Curie was born in"] * 2, [" Paris.", " Ulm."]
    torch.testing.assert_close(
        sequence_logprob(loaded, loaded_tok, prompts, conts),
        sequence_logprob(model, tokenizer, prompts, conts),
    )
    # load_causal_lm reads the same folder
    again, _ = load_causal_lm(str(folder), "cpu")
    assert again.config.n_layer == 2


def test_missing_or_unreachable_models_give_clear_errors(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-lm"
    with pytest.raises(NotFoundError, match="no-such-lm"):
        load_lm(missing)
    with pytest.raises(NotFoundError, match="does not exist"):
        load_causal_lm(str(missing), "cpu")
    with pytest.raises(NotFoundError, match="does not exist"):
        load_causal_lm("./models/absent", "cpu")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ArtifactError, match=r"no config\.json"):
        load_causal_lm(str(tmp_path / "empty"), "cpu")
    with pytest.raises(FailedPreconditionError, match="local folder"):
        load_causal_lm("some-org/some-model-not-cached", "cpu", offline=True)


def test_training_stops_when_asked(demo: KGDataset, corpus: list[str]) -> None:
    """``should_stop`` (a cancelled job) ends the LM's training at the next step."""
    names = [demo.entity_name(e) for e in demo.entities.labels]
    tokenizer = train_tokenizer([*corpus, *names], vocab_size=800)
    model = build_small_lm(tokenizer, n_layer=1, n_embd=32, n_head=2, n_positions=48, dropout=0)
    polls: list[int] = []

    def should_stop() -> bool:
        polls.append(1)
        return len(polls) >= 3

    losses: list[float] = []
    rows: list[dict[str, float]] = []
    history = train_lm(
        model, tokenizer, corpus, epochs=50, batch_size=4, lr=1e-3, device="cpu",
        progress=False, step_losses=losses, should_stop=should_stop, on_progress=rows.append,
    )  # fmt: skip
    assert len(losses) == 3 and len(history) == 1
    # its progress ends with the run's: tokens/s over the run, the loss of its last epoch
    assert rows[-1]["eta_s"] == 0 and rows[-1]["tokens_per_s"] > 0
    assert rows[-1]["loss"] == history[-1]["loss"]
