"""Fast LM scoring of candidate facts: one forward pass for a query's shared prompt, then the
candidates' continuations batched on top of its cached keys and values.

Completion re-ranking scores many continuations after one prompt (``"Marie Curie was born
in"`` + ``" Warsaw."``, ``" Paris."``, ...). :func:`kgweave.language.components.lm.
sequence_logprob` runs every ``prompt + continuation`` in full; :class:`LMScorer` runs the
prompt once (``use_cache``), copies its cache across the batch and feeds only the
continuations, sorted by length so little padding is computed, under
``torch.inference_mode``. The result is the same ``log P(continuation | <start> prompt)``
(a test checks it against ``sequence_logprob``).

The start token: a Llama-style tokenizer that makes its chat token the BOS (SmolLM2:
``<|im_start|>``) is given its document separator (``<|endoftext|>``) instead when it has
one: scoring is on plain text, never through the chat template.

**Entity fusion.** Given a ``fusion`` (a joint model's
:class:`kgweave.language.joint.entity_lm.EntityAwareLM`, which trained the LM with KG
embeddings added at entity mentions), :meth:`LMScorer.score` takes the mentions of the prompt
and of each continuation (character spans with entity ids) and scores as the LM was trained:
the prompt's pass adds its mentions' embeddings, each batch of continuations its own.
"""

from __future__ import annotations

import inspect
import time
from collections import OrderedDict
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any, Protocol

import torch

from kgweave.errors import InvalidArgumentError
from kgweave.language.components.lm import (
    char_spans_to_token_spans,
    eval_mode,
    start_token_id,
)

#: a mention: (char start, char end, entity id)
Mention = tuple[int, int, int]


class EntityFusion(Protocol):
    """What adds KG embeddings at entity tokens to the LM's passes
    (:class:`kgweave.language.joint.entity_lm.EntityAwareLM`)."""

    def mentioning(
        self, spans: torch.Tensor | None, batch: int, length: int
    ) -> AbstractContextManager[None]: ...


class LMScorer:
    """``log P(continuation | <start> prompt)`` for many continuations of one prompt.

    Args:
        model, tokenizer: a causal LM and its tokenizer.
        batch_size: continuations per forward pass.
        cache_size: remembered ``(prompt, continuation)`` scores (0: none), so a benchmark
            that re-ranks the same candidates under several models scores each once.
        fusion: adds KG embeddings at the mentions :meth:`score` is given (None: mentions are
            ignored, the plain LM).
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        batch_size: int = 64,
        cache_size: int = 0,
        fusion: EntityFusion | None = None,
    ) -> None:
        if batch_size < 1:
            raise InvalidArgumentError("batch_size must be at least 1")
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.cache_size = cache_size
        self.fusion = fusion
        self.start = start_token_id(tokenizer)
        # transformers 5 names the cache argument ``cache``; 4.x ``past_key_values``
        params = inspect.signature(model.forward).parameters
        self._cache_argument = "cache" if "cache" in params else "past_key_values"
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.start
        self._memo: OrderedDict[tuple[Any, ...], float] = OrderedDict()
        #: sequences scored (not from the memo) and the seconds spent: throughput
        self.sequences = 0
        self.seconds = 0.0

    @property
    def sequences_per_second(self) -> float:
        return self.sequences / self.seconds if self.seconds > 0 else 0.0

    def score(
        self,
        prompt: str,
        continuations: Sequence[str],
        prompt_mentions: Sequence[Mention] = (),
        mentions: Sequence[Sequence[Mention]] | None = None,
    ) -> list[float]:
        """Log-probabilities (<= 0) of each continuation after ``prompt`` ("" = from start).

        Args:
            prompt_mentions: the entities ``prompt`` names, as character spans of it.
            mentions: per continuation, the entities it names, as character spans of it.
                Both are used only with a ``fusion``.
        """
        if any(not c for c in continuations):
            raise InvalidArgumentError("a continuation is empty: there is nothing to score")
        if mentions is not None and len(mentions) != len(continuations):
            raise InvalidArgumentError("give one list of mentions per continuation")
        fused = self.fusion is not None
        at_prompt = tuple(prompt_mentions) if fused else ()
        keys = [
            (prompt, at_prompt, c, tuple(mentions[i]) if fused and mentions is not None else ())
            for i, c in enumerate(continuations)
        ]
        out: list[float | None] = [self._memo.get(k) for k in keys]
        todo = sorted({k for k, v in zip(keys, out, strict=True) if v is None})
        if todo:
            started = time.perf_counter()
            values = self._score(prompt, [k[2] for k in todo], at_prompt, [k[3] for k in todo])
            found = dict(zip(todo, values, strict=True))
            self.seconds += time.perf_counter() - started
            self.sequences += len(todo)
            for k, v in found.items():
                self._remember(k, v)
            out = [v if v is not None else found[k] for k, v in zip(keys, out, strict=True)]
        return [float(v) for v in out if v is not None]

    def _remember(self, key: tuple[Any, ...], value: float) -> None:
        if self.cache_size <= 0:
            return
        self._memo[key] = value
        self._memo.move_to_end(key)
        while len(self._memo) > self.cache_size:
            self._memo.popitem(last=False)

    def _fused(self, spans: torch.Tensor | None, batch: int, length: int) -> Any:
        """The fusion's context for one pass (none without a fusion or mentions)."""
        if self.fusion is None or spans is None or not len(spans):
            return nullcontext()
        return self.fusion.mentioning(spans, batch, length)

    def _score(
        self,
        prompt: str,
        continuations: list[str],
        prompt_mentions: tuple[Mention, ...],
        mentions: list[tuple[Mention, ...]],
    ) -> list[float]:
        model = self.model
        fused = self.fusion is not None and (bool(prompt_mentions) or any(mentions))
        enc = self.tokenizer(
            [prompt, *continuations], add_special_tokens=False, return_offsets_mapping=fused
        )
        ids = enc["input_ids"]
        prompt_ids = [self.start, *(ids[0] if prompt else [])]
        conts = [list(c) for c in ids[1:]]
        spans: _Spans | None = None
        if fused:
            offsets = [[(int(a), int(b)) for a, b in o] for o in enc["offset_mapping"]]
            spans = _Spans(
                char_spans_to_token_spans(
                    [[(0, 0), *(offsets[0] if prompt else [])]], [list(prompt_mentions)]
                ),
                offsets[1:],
                [list(m) for m in mentions],
            )
        scores = [0.0] * len(conts)
        with eval_mode(model) as device, torch.inference_mode():
            at_prompt = spans.prompt if spans is not None else None
            with self._fused(at_prompt, 1, len(prompt_ids)):
                out = model(input_ids=torch.tensor([prompt_ids], device=device), use_cache=True)
            first = torch.log_softmax(out.logits[0, -1].float(), dim=-1)  # (V,)
            past = _cache_tensors(out.past_key_values)
            order = sorted(range(len(conts)), key=lambda i: len(conts[i]))
            for start in range(0, len(order), self.batch_size):
                chunk = order[start : start + self.batch_size]
                values = self._chunk(model, device, past, prompt_ids, first, conts, chunk, spans)
                for i, v in zip(chunk, values, strict=True):
                    scores[i] = v
        return scores

    def _chunk(
        self,
        model: Any,
        device: torch.device,
        past: list[tuple[torch.Tensor, torch.Tensor]] | None,
        prompt_ids: list[int],
        first: torch.Tensor,
        conts: list[list[int]],
        chunk: list[int],
        spans: _Spans | None = None,
    ) -> list[float]:
        """Scores of the continuations ``chunk`` (right-padded: causal attention never sees
        the padding of a row's own real tokens)."""
        rows = [conts[i] for i in chunk]
        width = max(len(r) for r in rows)
        input_ids = torch.full((len(rows), width), self.pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.bool)
        for j, r in enumerate(rows):
            input_ids[j, : len(r)] = torch.tensor(r, dtype=torch.long)
            mask[j, : len(r)] = True
        input_ids, mask = input_ids.to(device), mask.to(device)
        head = first[input_ids[:, 0]]  # the first token, from the prompt's last position
        if width == 1:
            return head.cpu().tolist()
        b, prompt_len = len(rows), len(prompt_ids)
        if past is not None:
            from transformers import DynamicCache

            cache = DynamicCache(
                ddp_cache_data=[
                    (k.expand(b, *k.shape[1:]).contiguous(), v.expand(b, *v.shape[1:]).contiguous())
                    for k, v in past
                ]
            )
            positions = torch.arange(prompt_len, prompt_len + width, device=device)
            with self._fused(spans.continuations(chunk) if spans else None, b, width):
                logits = model(
                    input_ids=input_ids,
                    **{self._cache_argument: cache},
                    position_ids=positions.unsqueeze(0).expand(b, -1),
                    use_cache=True,
                ).logits[:, :-1]
        else:  # no usable cache: the prompt is recomputed in every row
            prefix = torch.tensor([prompt_ids], device=device).expand(b, -1)
            full = torch.cat((prefix, input_ids), dim=1)
            with self._fused(
                spans.whole(chunk, prompt_len) if spans else None, b, prompt_len + width
            ):
                logits = model(input_ids=full).logits[:, prompt_len:-1]
        wanted = mask[:, 1:]
        picked = logits[wanted].float()  # (N, V): only the positions that predict real tokens
        token_logp = torch.log_softmax(picked, dim=-1).gather(
            1, input_ids[:, 1:][wanted].unsqueeze(1)
        )[:, 0]
        totals = torch.zeros(b, device=device)
        row_of = torch.arange(b, device=device).unsqueeze(1).expand(-1, width - 1)[wanted]
        totals.index_add_(0, row_of, token_logp)
        return (totals + head).cpu().tolist()


class _Spans:
    """One scoring call's mentions as token spans (rows of (batch row, first token, end
    token exclusive, entity id), :func:`char_spans_to_token_spans`).

    Args:
        prompt: shape (S, 4): the prompt's, positions counting the start token.
        offsets, mentions: per continuation, its tokens' character offsets and its mentions.
    """

    def __init__(
        self,
        prompt: torch.Tensor,
        offsets: list[list[tuple[int, int]]],
        mentions: list[list[Mention]],
    ) -> None:
        self.prompt = prompt
        self.offsets = offsets
        self.mentions = mentions

    def continuations(self, chunk: list[int]) -> torch.Tensor:
        """shape (S, 4): the mentions of the continuations ``chunk`` (batch row ``j`` for
        ``chunk[j]``), positions in the continuations' own tokens."""
        return char_spans_to_token_spans(
            [self.offsets[i] for i in chunk], [self.mentions[i] for i in chunk]
        )

    def whole(self, chunk: list[int], prompt_len: int) -> torch.Tensor:
        """shape (S, 4): the same, for rows holding the prompt then the continuation."""
        rows = self.continuations(chunk)
        rows[:, 1:3] += prompt_len
        each = self.prompt.repeat(len(chunk), 1)
        each[:, 0] = torch.arange(len(chunk)).repeat_interleave(len(self.prompt))
        return torch.cat((each, rows))


def _cache_tensors(cache: Any) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
    """(key, value) per layer of a transformers cache, or None when there is none."""
    if cache is None:
        return None
    layers = getattr(cache, "layers", None)
    if layers is not None:
        return [(layer.keys, layer.values) for layer in layers]
    return [(k, v) for k, v in cache]
