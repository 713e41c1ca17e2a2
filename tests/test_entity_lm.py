"""KG to LM: entity embeddings added to a causal LM at entity mentions."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from kgweave.errors import InvalidArgumentError
from kgweave.language.components.lm import build_small_lm, encode_texts
from kgweave.language.components.tokenizer import train_tokenizer
from kgweave.language.joint.entity_lm import (
    EntityAwareLM,
    char_spans_to_token_spans,
    transformer_blocks,
)
from process_support import HANG_GUARD_S

TEXTS = ["Marie Curie was born in Warsaw.", "Pierre Curie was born in Paris."]


def _fused(layer: int | None, train_entities: bool = False) -> tuple[EntityAwareLM, object]:
    tokenizer = train_tokenizer(TEXTS * 5, vocab_size=300)
    lm = build_small_lm(tokenizer, n_layer=2, n_embd=64, n_head=2, n_positions=32, dropout=0)
    table = torch.randn(4, 16, generator=torch.Generator().manual_seed(0))
    return EntityAwareLM(lm, table, layer=layer, train_entities=train_entities), tokenizer


def _spans(tokenizer: object) -> tuple[object, torch.Tensor]:
    batch = encode_texts(tokenizer, TEXTS)
    mentions = [[(0, 11, 0), (24, 30, 1)], [(0, 12, 2), (25, 30, 3)]]
    return batch, char_spans_to_token_spans(batch.offsets, mentions)


def test_char_mentions_become_token_spans() -> None:
    _, tokenizer = _fused(0)
    batch, spans = _spans(tokenizer)
    assert spans.shape == (4, 4)
    for b, start, end, _ in spans.tolist():
        text = tokenizer.decode(batch.input_ids[b, start:end])
        assert text.strip() in ("Marie Curie", "Warsaw", "Pierre Curie", "Paris")


@pytest.mark.parametrize("layer", [None, 0, 1])
def test_forward_backward_reaches_the_projection(layer: int | None) -> None:
    fused, tokenizer = _fused(layer)
    batch, spans = _spans(tokenizer)
    fused.eval()  # no dropout: plain and fused runs are comparable
    logits, loss = fused(batch.input_ids, batch.attention_mask, spans, batch.labels)
    plain, _ = fused(batch.input_ids, batch.attention_mask, None, batch.labels)
    assert logits.shape == (*batch.input_ids.shape, fused.lm.config.vocab_size)
    assert loss is not None and loss.dim() == 0
    # before the first mention nothing changes (causal); from it on the logits do
    first = int(spans[spans[:, 0] == 0, 1].min())
    torch.testing.assert_close(logits[0, :first], plain[0, :first])
    assert not torch.allclose(logits[0, first:], plain[0, first:])
    loss.backward()
    assert fused.project.weight.grad is not None
    assert float(fused.project.weight.grad.abs().sum()) > 0
    assert fused.entities.weight.grad is None  # frozen by default
    lm_grad = fused.lm.get_input_embeddings().weight.grad
    assert lm_grad is not None and float(lm_grad.abs().sum()) > 0


def test_entity_table_can_be_fine_tuned() -> None:
    fused, tokenizer = _fused(0, train_entities=True)
    batch, spans = _spans(tokenizer)
    _, loss = fused(batch.input_ids, batch.attention_mask, spans, batch.labels)
    assert loss is not None
    loss.backward()
    grad = fused.entities.weight.grad
    assert grad is not None
    assert float(grad[:4].abs().sum(dim=1).min()) > 0  # every mentioned entity


def test_bad_layer_and_entity_ids_are_refused() -> None:
    fused, tokenizer = _fused(0)
    with pytest.raises(InvalidArgumentError, match="out of range"):
        EntityAwareLM(fused.lm, torch.zeros(3, 8), layer=5)
    batch, _ = _spans(tokenizer)
    with pytest.raises(InvalidArgumentError, match="entity id"):
        fused(batch.input_ids, batch.attention_mask, torch.tensor([[0, 1, 2, 99]]))


def test_fusion_on_the_real_llama_changes_hidden_states_only_at_entity_tokens(
    pretrained_lm: Path,
) -> None:
    """SmolLM2 (Llama blocks, whose forward returns a tensor): the block the fusion hooks
    changes exactly the mention tokens; later blocks see them (logits move from there on)."""
    from kgweave.language.components.lm import load_causal_lm

    lm, tokenizer = load_causal_lm(pretrained_lm, device="cpu")
    table = torch.randn(4, 16, generator=torch.Generator().manual_seed(0))
    fused = EntityAwareLM(lm, table, layer=0)
    with torch.no_grad():
        fused.project.weight.normal_(std=0.5, generator=torch.Generator().manual_seed(1))
    seen: list[torch.Tensor] = []

    def record(module: object, inputs: object, output: object) -> None:
        seen.append(output[0] if isinstance(output, tuple) else output)  # type: ignore[arg-type]

    # registered after the fusion's hook on the same block: sees the fused output
    handle = transformer_blocks(lm)[0].register_forward_hook(record)
    batch, spans = _spans(tokenizer)
    assert len(spans) == 4
    try:
        with torch.no_grad():
            fused_logits, _ = fused(batch.input_ids, batch.attention_mask, spans)
            plain_logits, _ = fused(batch.input_ids, batch.attention_mask, None)
    finally:
        handle.remove()
        fused.remove_hook()
    with_entities, without = seen
    mask = torch.zeros(batch.input_ids.shape, dtype=torch.bool)
    for b, start, end, _ in spans.tolist():
        mask[b, start:end] = True
    changed = (with_entities - without).abs().amax(dim=-1) > 0
    assert torch.equal(changed, mask)
    first = int(spans[spans[:, 0] == 0, 1].min())
    torch.testing.assert_close(fused_logits[0, :first], plain_logits[0, :first])
    assert not torch.allclose(fused_logits[0, first:], plain_logits[0, first:])


@pytest.mark.parametrize("cached", [True, False])
def test_scoring_with_the_fusion_equals_one_fused_pass_over_the_whole_text(
    cached: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """LMScorer with a fusion (the prompt's pass, then the continuations on its KV cache, or
    the prompt repeated in every row where a model has no cache) gives the log-probabilities of
    one fused pass over prompt + continuation with the same mentions; without a fusion the
    mentions are ignored, and the fusion does move the scores."""
    from kgweave.language.features import lm_scoring
    from kgweave.language.features.lm_scoring import LMScorer

    fused, tokenizer = _fused(0)
    with torch.no_grad():
        fused.project.weight.normal_(std=0.5, generator=torch.Generator().manual_seed(1))
    if not cached:
        monkeypatch.setattr(lm_scoring, "_cache_tensors", lambda cache: None)
    prompt = "Marie Curie was born in"
    conts = [" Warsaw.", " Paris.", " Warsaw."]
    at_prompt = [(0, 11, 0)]
    mentions = [[(1, 7, 1)], [(1, 6, 3)], [(1, 7, 2)]]  # the last: same text, other entity
    scores = LMScorer(fused.lm, tokenizer, batch_size=2, fusion=fused).score(
        prompt, conts, at_prompt, mentions
    )
    plain = LMScorer(fused.lm, tokenizer).score(prompt, conts, at_prompt, mentions)
    assert plain == LMScorer(fused.lm, tokenizer).score(prompt, conts)
    assert plain[0] == plain[2] and scores[0] != scores[2]
    fused.eval()
    start = LMScorer(fused.lm, tokenizer).start
    for cont, found, marks in zip(conts, scores, mentions, strict=True):
        enc = tokenizer([prompt, cont], add_special_tokens=False, return_offsets_mapping=True)
        ids = [start, *enc["input_ids"][0], *enc["input_ids"][1]]
        offsets = [(0, 0), *enc["offset_mapping"][0]]
        offsets += [(a + len(prompt), b + len(prompt)) for a, b in enc["offset_mapping"][1]]
        whole = at_prompt + [(a + len(prompt), b + len(prompt), e) for a, b, e in marks]
        spans = char_spans_to_token_spans([offsets], [whole])
        assert len(spans) == 2
        with torch.no_grad():
            logits, _ = fused(torch.tensor([ids]), None, spans)
        logp = torch.log_softmax(logits[0, :-1].float(), dim=-1)
        first = 1 + len(enc["input_ids"][0])
        expected = sum(float(logp[i - 1, ids[i]]) for i in range(first, len(ids)))
        assert found == pytest.approx(expected, abs=1e-4)
        assert found != pytest.approx(plain[conts.index(cont)], abs=1e-3)


def test_held_out_text_loss_with_and_without_entities() -> None:
    fused, tokenizer = _fused(0)
    with torch.no_grad():
        fused.project.weight.normal_(std=0.5, generator=torch.Generator().manual_seed(1))
    mentions = [[(0, 11, 0), (24, 30, 1)], [(0, 12, 2), (25, 30, 3)]]
    with_entities = fused.text_loss(tokenizer, TEXTS, mentions, batch_size=1)
    alone = fused.text_loss(tokenizer, TEXTS, None)
    assert fused.training  # restored
    batch = encode_texts(tokenizer, TEXTS)
    fused.eval()
    with torch.no_grad():
        _, expected = fused(batch.input_ids, batch.attention_mask, None, batch.labels)
    assert alone == pytest.approx(float(expected), rel=1e-5)
    assert with_entities != pytest.approx(alone, rel=1e-3)
    with pytest.raises(InvalidArgumentError, match="no texts"):
        fused.text_loss(tokenizer, [], None)


def test_entities_of_one_thread_never_reach_another_threads_pass() -> None:
    """Served versions may share one LM: while a thread scores with mentions, a plain pass of
    the same LM in another thread gives the plain logits (and its own mentions its own)."""
    import threading

    fused, tokenizer = _fused(0)
    with torch.no_grad():
        fused.project.weight.normal_(std=0.5, generator=torch.Generator().manual_seed(1))
    fused.eval()
    batch, spans = _spans(tokenizer)
    ids, mask = batch.input_ids, batch.attention_mask
    with torch.no_grad():
        plain = fused.lm(input_ids=ids, attention_mask=mask).logits
        with_entities, _ = fused(ids, mask, spans)
    inside, done = threading.Event(), threading.Event()
    seen: dict[str, torch.Tensor] = {}

    def scoring() -> None:
        with torch.no_grad(), fused.mentioning(spans, *ids.shape):
            inside.set()
            done.wait()  # the other thread's pass runs while these mentions are pending
            seen["fused"] = fused.lm(input_ids=ids, attention_mask=mask).logits

    worker = threading.Thread(target=scoring)
    worker.start()
    assert inside.wait(timeout=HANG_GUARD_S)
    with torch.no_grad():
        seen["plain"] = fused.lm(input_ids=ids, attention_mask=mask).logits
    done.set()
    worker.join()
    torch.testing.assert_close(seen["plain"], plain)
    torch.testing.assert_close(seen["fused"], with_entities)
    assert not fused._pending  # nothing left behind
