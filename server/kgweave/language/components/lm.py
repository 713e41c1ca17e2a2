"""Causal language models: load any, build a small one, train it, score text with it.

Two ways to get a model:

- :func:`load_causal_lm`: any ``AutoModelForCausalLM`` from a local folder or a Hugging Face id
  (the ``language_model`` setting);
- :func:`build_small_lm`: a GPT-2-style model built from a config, no weights downloaded, with
  the tokenizer trained on the graph (:mod:`kgweave.language.components.tokenizer`); train it with
  :func:`train_lm`.

:func:`sequence_logprob` is how the rest of kgweave uses a model: ``log P(continuation |
prompt)`` of a verbalized fact, batched. Models are stored with ``save_pretrained`` (safetensors
only, never pickles) by :func:`save_lm` and read back by :func:`load_lm`.

Size (over 400 lines): loading, building, training and scoring causal LMs share the tokenizer
preparation and batching helpers. The pretrained default LM (SmolLM2) is fetched by
:mod:`kgweave.language.components.pretrained` and fine-tuned through LoRA adapters
(:mod:`kgweave.language.components.lora`); the small scratch LM stays (``language_model:
small``) for fast runs and tests.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from kgweave.device import resolve_device
from kgweave.errors import (
    ArtifactError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    echo,
)

#: token positions the loss ignores (padding, and the BOS token which is never predicted)
IGNORE_INDEX = -100


def quiet_transformers() -> None:
    """No per-load progress bars or info logs from transformers: kgweave shows its own."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]
    # renames announced by transformers 5 for code written against 4.x and 5.x alike
    warnings.filterwarnings(
        "ignore",
        category=FutureWarning,
        message=r"`(past_key_values|is_gradient_checkpointing)` is deprecated",
    )


def _device(device: str | torch.device | None) -> torch.device:
    if isinstance(device, torch.device):
        return device
    return resolve_device(device or "auto")


def _looks_like_path(spec: str) -> bool:
    """A spec that can only be a folder: absolute, relative with ./ or ~, or two slashes."""
    return (
        spec.startswith(("/", ".", "~"))
        or spec.count("/") > 1
        or "\\" in spec
        or Path(spec).suffix != ""
    )


def _env_offline() -> bool:
    return any(
        os.environ.get(name, "").lower() in ("1", "true", "yes", "on")
        for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "KGWEAVE_OFFLINE")
    )


def _prepare_tokenizer(tokenizer: Any) -> Any:
    """Give a loaded tokenizer the pad/bos tokens kgweave needs (GPT-2 has only eos)."""
    if tokenizer.eos_token is None and tokenizer.bos_token is not None:
        tokenizer.eos_token = tokenizer.bos_token
    if tokenizer.bos_token is None and tokenizer.eos_token is not None:
        tokenizer.bos_token = tokenizer.eos_token
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    if tokenizer.bos_token_id is None:
        raise ArtifactError("the language model's tokenizer has no bos/eos token to start text")
    return tokenizer


_DOCUMENT_STARTS = ("<|endoftext|>", "<s>", "<|begin_of_text|>")


def start_token_id(tokenizer: Any) -> int:
    """The token plain text starts with: the tokenizer's BOS, unless that is a chat-template
    token (``<|im_start|>``) and a document separator exists (SmolLM2: ``<|endoftext|>``)."""
    bos = tokenizer.bos_token_id
    if bos is not None and tokenizer.bos_token not in ("<|im_start|>",):
        return int(bos)
    vocab = tokenizer.get_vocab()
    for token in _DOCUMENT_STARTS:
        if token in vocab:
            return int(vocab[token])
    if bos is None:
        raise InvalidArgumentError("the tokenizer has no start token to score text from")
    return int(bos)


def load_causal_lm(
    spec: str | Path, device: str | torch.device | None = None, offline: bool | None = None
) -> tuple[Any, Any]:
    """Load a causal LM and its tokenizer from a local folder or a Hugging Face id.

    Args:
        spec: a folder holding ``config.json`` + weights + tokenizer files, a ``.gguf`` file (or
            a folder holding one), or a hub id such as ``"gpt2"`` (read from the local Hugging
            Face cache, downloaded only when online).
        device: ``auto`` (CUDA when present), ``cpu``, ``cuda``...
        offline: never download; None reads ``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE`` /
            ``KGWEAVE_OFFLINE``.
    Returns:
        (model in eval mode on ``device``, tokenizer with bos/eos/pad tokens).
    Raises:
        NotFoundError: ``spec`` names a folder that does not exist.
        ArtifactError: the folder exists but holds no loadable model.
        FailedPreconditionError: ``spec`` is a hub id that is not cached and cannot be
            downloaded (offline): use a local folder.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dev = _device(device)
    text = str(spec)
    path = Path(text).expanduser()
    gguf = _gguf_file(path)
    if gguf is not None:
        return _load_gguf(gguf, dev)
    if path.is_dir():
        return _load_folder(path, dev)
    if isinstance(spec, Path) or _looks_like_path(text) or path.exists():
        raise NotFoundError(f"language model folder {path} does not exist")
    offline = _env_offline() if offline is None else offline
    attempts = [True] if offline else [True, False]
    last: Exception | None = None
    for local_only in attempts:
        try:
            quiet_transformers()
            tokenizer = AutoTokenizer.from_pretrained(text, local_files_only=local_only)
            model: Any = AutoModelForCausalLM.from_pretrained(text, local_files_only=local_only)
        except (OSError, ValueError) as exc:  # not cached / no network / not a causal LM
            last = exc
            continue
        return model.to(dev).eval(), _prepare_tokenizer(tokenizer)
    how = "this machine is offline" if offline else "it could not be downloaded"
    raise FailedPreconditionError(
        f"language model {echo(text)} is not a local folder and is not in the Hugging Face cache, "
        f"and {how}: download it elsewhere and set language_model to a local folder "
        f"({type(last).__name__}: {str(last).splitlines()[0] if last else ''})"
    )


def _gguf_file(path: Path) -> Path | None:
    """``path`` itself when it is a ``.gguf`` file, or the one ``.gguf`` file of a folder
    without ``config.json``; else None."""
    if path.is_file() and path.suffix == ".gguf":
        return path
    if path.is_dir() and not (path / "config.json").is_file():
        found = sorted(path.glob("*.gguf"))
        if len(found) > 1:
            raise ArtifactError(f"{path} holds {len(found)} .gguf files: name the one to load")
        return found[0] if found else None
    return None


def _load_gguf(gguf: Path, device: torch.device) -> tuple[Any, Any]:
    """A GGUF causal LM, de-quantized by transformers (needs the ``gguf`` package); slow to
    read (~20 s for 135M parameters on 2 cores): ``kgweave lm fetch`` converts once instead."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        quiet_transformers()
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model: Any = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    except (OSError, ValueError, KeyError, ImportError) as exc:
        raise ArtifactError(f"{gguf}: cannot load the GGUF language model ({exc})") from exc
    return model.to(device).eval(), _prepare_tokenizer(tokenizer)


def _load_folder(folder: Path, device: torch.device) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not (folder / "config.json").is_file():
        raise ArtifactError(f"{folder} holds no language model (no config.json)")
    weights = list(folder.glob("*.safetensors"))
    if not weights:
        raise ArtifactError(f"{folder}: no .safetensors weights (kgweave loads no pickled weights)")
    try:
        quiet_transformers()
        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        model: Any = AutoModelForCausalLM.from_pretrained(
            str(folder), local_files_only=True, use_safetensors=True
        )
    except (OSError, ValueError, KeyError) as exc:
        raise ArtifactError(f"{folder}: cannot load the language model ({exc})") from exc
    if model.get_input_embeddings().num_embeddings < len(tokenizer):
        raise ArtifactError(
            f"{folder}: the model has {model.get_input_embeddings().num_embeddings} token "
            f"embeddings but the tokenizer has {len(tokenizer)} tokens"
        )
    return model.to(device).eval(), _prepare_tokenizer(tokenizer)


def build_small_lm(
    tokenizer: Any,
    n_layer: int = 4,
    n_embd: int = 256,
    n_head: int = 4,
    n_positions: int = 256,
    dropout: float = 0.1,
    seed: int = 0,
) -> Any:
    """A GPT-2-style causal LM sized for the graph's text, randomly initialised (seeded).

    Args:
        tokenizer: sets the vocabulary size and the bos/eos/pad ids.
        n_layer, n_embd, n_head: depth, width and attention heads (``n_embd % n_head == 0``).
        n_positions: longest sequence, in tokens.
    Returns:
        a ``GPT2LMHeadModel`` on the CPU, in train mode.
    """
    from transformers import GPT2Config, GPT2LMHeadModel

    if n_embd % n_head:
        raise InvalidArgumentError(f"n_embd ({n_embd}) must be a multiple of n_head ({n_head})")
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=n_positions,
        n_embd=n_embd,
        n_layer=n_layer,
        n_head=n_head,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    config.resid_pdrop = config.embd_pdrop = config.attn_pdrop = dropout
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = GPT2LMHeadModel(config)
    return model


# ---- encoding text into batches


@dataclass
class EncodedBatch:
    """Token ids of a batch of texts, ``<bos> text <eos>``, right-padded.

    ``input_ids``, ``attention_mask``, ``labels``: shape (B, T); ``labels`` is ``input_ids``
    with padding and the first position set to :data:`IGNORE_INDEX`. ``offsets``: per text, the
    (char start, char end) of each token of ``input_ids`` (``(0, 0)`` for bos/eos/padding).
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor
    offsets: list[list[tuple[int, int]]]

    def to(self, device: torch.device) -> EncodedBatch:
        return EncodedBatch(
            self.input_ids.to(device),
            self.attention_mask.to(device),
            self.labels.to(device),
            self.offsets,
        )


def char_spans_to_token_spans(
    offsets: Sequence[Sequence[tuple[int, int]]],
    mentions: Sequence[Sequence[tuple[int, int, int]]],
) -> torch.Tensor:
    """Entity mentions given in characters to token spans.

    A token belongs to a mention when its character range overlaps the mention's (byte-level
    tokens carry their leading space, so ``" Warsaw"`` overlaps ``"Warsaw"``).

    Args:
        offsets: per text, the (char start, char end) of each token (``(0, 0)`` for special
            tokens and padding), as in :class:`kgweave.language.components.lm.EncodedBatch`.
        mentions: per text, (char start, char end, entity id) of each mention.
    Returns:
        shape (S, 4) long: (batch row, first token, end token exclusive, entity id); mentions
        that fall outside the (possibly truncated) text are dropped.
    """
    rows: list[tuple[int, int, int, int]] = []
    for b, (offs, spans) in enumerate(zip(offsets, mentions, strict=True)):
        for start, end, entity in spans:
            hits = [i for i, (a, z) in enumerate(offs) if z > a and a < end and z > start]
            if hits:
                rows.append((b, hits[0], hits[-1] + 1, entity))
    if not rows:
        return torch.zeros(0, 4, dtype=torch.long)
    return torch.tensor(rows, dtype=torch.long)


def encode_texts(
    tokenizer: Any, texts: Sequence[str], max_length: int = 256, add_eos: bool = True
) -> EncodedBatch:
    """Tokenize ``texts`` into one right-padded batch (truncated to ``max_length`` tokens)."""
    if not texts:
        raise InvalidArgumentError("no texts to encode")
    enc = tokenizer(list(texts), add_special_tokens=False, return_offsets_mapping=True)
    bos, eos, pad = start_token_id(tokenizer), tokenizer.eos_token_id, tokenizer.pad_token_id
    rows: list[list[int]] = []
    offsets: list[list[tuple[int, int]]] = []
    for ids, offs in zip(enc["input_ids"], enc["offset_mapping"], strict=True):
        row = [bos, *ids] + ([eos] if add_eos else [])
        off = [(0, 0), *[(int(a), int(b)) for a, b in offs]] + ([(0, 0)] if add_eos else [])
        rows.append(row[:max_length])
        offsets.append(off[:max_length])
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        input_ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        attention[i, : len(row)] = 1
    labels = input_ids.masked_fill(attention == 0, IGNORE_INDEX)
    labels[:, 0] = IGNORE_INDEX
    return EncodedBatch(input_ids, attention, labels, offsets)


def causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy.

    Args:
        logits: shape (B, T, V); labels: shape (B, T) with :data:`IGNORE_INDEX` where ignored.
    Returns:
        shape () mean over the predicted tokens.
    """
    shifted = logits[:, :-1].float()
    target = labels[:, 1:]
    return F.cross_entropy(
        shifted.reshape(-1, shifted.shape[-1]), target.reshape(-1), ignore_index=IGNORE_INDEX
    )


#: the loss of one encoded batch (on the device), given the indices of its texts
StepLoss = Callable[[EncodedBatch, Sequence[int]], torch.Tensor]


def train_lm(
    model: Any,
    tokenizer: Any,
    texts: Sequence[str],
    epochs: int = 10,
    batch_size: int = 32,
    lr: float = 1e-3,
    device: str | torch.device | None = None,
    progress: bool = True,
    seed: int = 0,
    max_length: int = 128,
    weight_decay: float = 0.01,
    step_loss: StepLoss | None = None,
    extra_parameters: Sequence[torch.nn.Parameter] = (),
    time_budget_s: float | None = None,
    max_steps: int | None = None,
    step_losses: list[float] | None = None,
    should_stop: Callable[[], bool] | None = None,
    on_progress: Callable[[dict[str, float]], None] | None = None,
) -> list[dict[str, float]]:
    """Train a causal LM on ``texts`` with next-token cross-entropy (AdamW, cosine decay).

    Args:
        model: a causal LM (``model(input_ids=..., attention_mask=...).logits``) or any module
            when ``step_loss`` is given.
        texts: training texts, each wrapped as ``<bos> text <eos>``.
        step_loss: computes the loss of one batch instead of the plain LM loss; it receives the
            batch and the indices of its texts in ``texts`` (the fused LM uses them to find
            entity mentions).
        extra_parameters: trained too (e.g. a projection outside ``model``).
        time_budget_s: stop after this many seconds (checked every step); the last row then
            covers the part of the epoch that ran.
        max_steps: stop after this many optimiser steps (the same way).
        step_losses: when given, each step's loss is appended (for a loss curve).
        should_stop: polled every step; ``True`` ends training early, as the budget does (a
            cancelled job).
        on_progress: called at most every :data:`PROGRESS_EVERY_S` seconds (and after the
            last step) with ``loss`` (the last step's), ``tokens_per_s`` (since the start) and
            ``eta_s`` (by tokens left, or the time budget's end when sooner): a job's progress.
    Returns:
        one row per epoch: ``epoch``, ``loss`` (mean over the epoch's tokens), ``tokens``,
        ``seconds``.
    """
    if not texts:
        raise InvalidArgumentError("no texts to train the language model on")
    if epochs < 1 or batch_size < 1 or lr <= 0 or (max_steps is not None and max_steps < 1):
        raise InvalidArgumentError("epochs, batch_size and max_steps must be >= 1 and lr > 0")
    dev = _device(device)
    model.to(dev).train()
    params = [p for p in model.parameters() if p.requires_grad] + [
        p for p in extra_parameters if p.requires_grad
    ]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    steps_per_epoch = math.ceil(len(texts) / batch_size)
    total_steps = epochs * steps_per_epoch
    if max_steps is not None:
        total_steps = min(total_steps, max_steps)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=total_steps, eta_min=lr * 0.05
    )
    generator = torch.Generator().manual_seed(seed)
    token_counts = [
        len(ids) + 1 for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    ]
    per_epoch = sum(min(c, max_length - 1) for c in token_counts)
    bar = tqdm(
        total=(
            epochs * per_epoch
            if max_steps is None
            else min(epochs * per_epoch, math.ceil(max_steps / steps_per_epoch * per_epoch))
        ),
        unit="tok",
        unit_scale=True,
        desc="train lm",
        disable=not progress,
        dynamic_ncols=True,
    )
    history: list[dict[str, float]] = []
    started = reported = time.perf_counter()
    budget = time_budget_s if time_budget_s is not None else math.inf
    out_of_time = False
    steps = trained_tokens = 0
    for epoch in range(1, epochs + 1):
        order = torch.randperm(len(texts), generator=generator).tolist()
        loss_sum = torch.zeros((), device=dev)
        tokens = 0
        for start in range(0, len(order), batch_size):
            ids = order[start : start + batch_size]
            batch = encode_texts(tokenizer, [texts[i] for i in ids], max_length).to(dev)
            predicted = int((batch.labels[:, 1:] != IGNORE_INDEX).sum())
            optimizer.zero_grad(set_to_none=True)
            if step_loss is not None:
                loss = step_loss(batch, ids)
            else:
                logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
                loss = causal_lm_loss(logits.logits, batch.labels)
            loss.backward()  # type: ignore[no-untyped-call]
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            scheduler.step()
            loss_sum += loss.detach() * predicted
            tokens += predicted
            bar.update(predicted)
            steps += 1
            if step_losses is not None:
                step_losses.append(float(loss.detach()))
                bar.set_postfix(loss=f"{step_losses[-1]:.3f}", refresh=False)
            trained_tokens += predicted
            now = time.perf_counter()
            if on_progress is not None and now - reported >= PROGRESS_EVERY_S:
                reported = now
                on_progress(_lm_progress(loss, trained_tokens, bar.total, now - started, budget))
            if (
                time.perf_counter() - started >= budget
                or steps == max_steps
                or (should_stop is not None and should_stop())
            ):
                out_of_time = True
                break
        mean = float(loss_sum) / max(tokens, 1)  # sync point: the CPU waits for the device
        bar.set_postfix(loss=f"{mean:.4f}", refresh=False)
        history.append(
            {
                "epoch": epoch,
                "loss": mean,
                "tokens": tokens,
                "seconds": time.perf_counter() - started,
            }
        )
        if out_of_time or not math.isfinite(mean):
            break
    bar.close()
    if on_progress is not None and history:
        elapsed = time.perf_counter() - started
        on_progress(
            {"loss": history[-1]["loss"], "tokens_per_s": trained_tokens / elapsed, "eta_s": 0.0}
        )
    model.eval()
    return history


#: how often train_lm calls its on_progress, at most
PROGRESS_EVERY_S = 2.0


def _lm_progress(
    loss: torch.Tensor, tokens: int, total: float | None, elapsed: float, budget: float
) -> dict[str, float]:
    """One progress row of :func:`train_lm` (see its ``on_progress``)."""
    rate = tokens / max(elapsed, 1e-9)
    eta = max((total or tokens) - tokens, 0) / rate if rate > 0 else -1.0
    if math.isfinite(budget):
        eta = min(eta, max(budget - elapsed, 0.0)) if eta >= 0 else max(budget - elapsed, 0.0)
    return {"loss": float(loss.detach()), "tokens_per_s": rate, "eta_s": eta}


# ---- scoring text


@contextmanager
def eval_mode(model: Any) -> Iterator[torch.device]:
    """``model`` in eval mode inside the block (its training flag restored after); yields the
    device its parameters are on."""
    was_training = model.training
    model.eval()
    try:
        yield next(model.parameters()).device
    finally:
        model.train(was_training)


@torch.no_grad()
def sequence_logprob(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    continuations: Sequence[str],
    batch_size: int = 64,
) -> torch.Tensor:
    """``log P(continuation | <bos> prompt)`` for each pair, summed over the continuation's
    tokens.

    Prompt and continuation are tokenized separately, so split a sentence at a word boundary
    with the space on the continuation's side (``"Marie Curie was born in"``, ``" Warsaw."``):
    that is how byte-level BPE tokenizes the whole sentence too.

    Args:
        prompts: B strings (may be empty: the continuation is then scored from bos).
        continuations: B non-empty strings.
    Returns:
        shape (B,) float32 log-probabilities on the CPU (<= 0).
    """
    if len(prompts) != len(continuations):
        raise InvalidArgumentError(f"{len(prompts)} prompts but {len(continuations)} continuations")
    if any(not c for c in continuations):
        raise InvalidArgumentError("a continuation is empty: there is nothing to score")
    if not prompts:
        return torch.zeros(0)
    bos, pad = start_token_id(tokenizer), tokenizer.pad_token_id
    prompt_ids = _tokenize(tokenizer, prompts)
    cont_ids = _tokenize(tokenizer, continuations)
    out = torch.zeros(len(prompts))
    with eval_mode(model) as dev:
        for start in range(0, len(prompts), batch_size):
            rows = [
                ([bos, *p], c)
                for p, c in zip(
                    prompt_ids[start : start + batch_size],
                    cont_ids[start : start + batch_size],
                    strict=True,
                )
            ]
            width = max(len(p) + len(c) for p, c in rows)
            input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
            attention = torch.zeros((len(rows), width), dtype=torch.long)
            target_mask = torch.zeros((len(rows), width), dtype=torch.bool)
            for i, (p, c) in enumerate(rows):
                input_ids[i, : len(p) + len(c)] = torch.tensor(p + c, dtype=torch.long)
                attention[i, : len(p) + len(c)] = 1
                target_mask[i, len(p) : len(p) + len(c)] = True
            input_ids, attention, target_mask = (
                input_ids.to(dev),
                attention.to(dev),
                target_mask.to(dev),
            )
            logits = model(input_ids=input_ids, attention_mask=attention).logits  # (b, T, V)
            logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
            token_logp = logp.gather(2, input_ids[:, 1:].unsqueeze(2)).squeeze(2)  # (b, T-1)
            summed = (token_logp * target_mask[:, 1:]).sum(dim=1)
            out[start : start + len(rows)] = summed.cpu()
    return out


def _tokenize(tokenizer: Any, texts: Sequence[str]) -> list[list[int]]:
    if not any(texts):
        return [[] for _ in texts]
    ids = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    return [list(x) if t else [] for x, t in zip(ids, texts, strict=True)]


# ---- storing a model


def save_lm(model: Any, tokenizer: Any, folder: Path) -> Path:
    """Write the model (``model.safetensors`` + ``config.json``) and tokenizer into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    quiet_transformers()
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    if not (folder / "model.safetensors").is_file() and not list(folder.glob("*.safetensors")):
        raise ArtifactError(f"{folder}: save_pretrained wrote no safetensors weights")
    return folder


def load_lm(folder: Path, device: str | torch.device | None = None) -> tuple[Any, Any]:
    """Load a model folder written by :func:`save_lm` (or any local causal LM folder).

    Raises:
        NotFoundError: the folder does not exist.
        ArtifactError: it holds no loadable model.
    """
    if not folder.is_dir():
        raise NotFoundError(f"language model folder {folder} does not exist")
    return _load_folder(folder, _device(device))
