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
"""

from __future__ import annotations

import inspect
import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch

from kgweave.errors import InvalidArgumentError
from kgweave.language.components.lm import eval_mode, start_token_id


#: document-start tokens tried before the tokenizer's own BOS when that BOS is a chat token
class LMScorer:
    """``log P(continuation | <start> prompt)`` for many continuations of one prompt.

    Args:
        model, tokenizer: a causal LM and its tokenizer.
        batch_size: continuations per forward pass.
        cache_size: remembered ``(prompt, continuation)`` scores (0: none), so a benchmark
            that re-ranks the same candidates under several models scores each once.
    """

    def __init__(
        self, model: Any, tokenizer: Any, batch_size: int = 64, cache_size: int = 0
    ) -> None:
        if batch_size < 1:
            raise InvalidArgumentError("batch_size must be at least 1")
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.cache_size = cache_size
        self.start = start_token_id(tokenizer)
        # transformers 5 names the cache argument ``cache``; 4.x ``past_key_values``
        params = inspect.signature(model.forward).parameters
        self._cache_argument = "cache" if "cache" in params else "past_key_values"
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.start
        self._memo: OrderedDict[tuple[str, str], float] = OrderedDict()
        #: sequences scored (not from the memo) and the seconds spent: throughput
        self.sequences = 0
        self.seconds = 0.0

    @property
    def sequences_per_second(self) -> float:
        return self.sequences / self.seconds if self.seconds > 0 else 0.0

    def score(self, prompt: str, continuations: Sequence[str]) -> list[float]:
        """Log-probabilities (<= 0) of each continuation after ``prompt`` ("" = from start)."""
        if any(not c for c in continuations):
            raise InvalidArgumentError("a continuation is empty: there is nothing to score")
        out: list[float | None] = [self._memo.get((prompt, c)) for c in continuations]
        todo = sorted({c for c, v in zip(continuations, out, strict=True) if v is None})
        if todo:
            started = time.perf_counter()
            found = dict(zip(todo, self._score(prompt, todo), strict=True))
            self.seconds += time.perf_counter() - started
            self.sequences += len(todo)
            for c, v in found.items():
                self._remember((prompt, c), v)
            out = [
                v if v is not None else found[c] for c, v in zip(continuations, out, strict=True)
            ]
        return [float(v) for v in out if v is not None]

    def _remember(self, key: tuple[str, str], value: float) -> None:
        if self.cache_size <= 0:
            return
        self._memo[key] = value
        self._memo.move_to_end(key)
        while len(self._memo) > self.cache_size:
            self._memo.popitem(last=False)

    def _score(self, prompt: str, continuations: list[str]) -> list[float]:
        model = self.model
        ids = self.tokenizer([prompt, *continuations], add_special_tokens=False)["input_ids"]
        prompt_ids = [self.start, *(ids[0] if prompt else [])]
        conts = [list(c) for c in ids[1:]]
        scores = [0.0] * len(conts)
        with eval_mode(model) as device, torch.inference_mode():
            out = model(input_ids=torch.tensor([prompt_ids], device=device), use_cache=True)
            first = torch.log_softmax(out.logits[0, -1].float(), dim=-1)  # (V,)
            past = _cache_tensors(out.past_key_values)
            order = sorted(range(len(conts)), key=lambda i: len(conts[i]))
            for start in range(0, len(order), self.batch_size):
                chunk = order[start : start + self.batch_size]
                values = self._chunk(model, device, past, prompt_ids, first, conts, chunk)
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
            logits = model(
                input_ids=input_ids,
                **{self._cache_argument: cache},
                position_ids=positions.unsqueeze(0).expand(b, -1),
                use_cache=True,
            ).logits[:, :-1]
        else:  # no usable cache: the prompt is recomputed in every row
            prefix = torch.tensor([prompt_ids], device=device).expand(b, -1)
            full = torch.cat((prefix, input_ids), dim=1)
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


def _cache_tensors(cache: Any) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
    """(key, value) per layer of a transformers cache, or None when there is none."""
    if cache is None:
        return None
    layers = getattr(cache, "layers", None)
    if layers is not None:
        return [(layer.keys, layer.values) for layer in layers]
    return [(k, v) for k, v in cache]
