"""KG to LM: a causal language model that sees knowledge-graph embeddings at entity mentions.

:class:`EntityAwareLM` wraps any causal LM. Where the text mentions an entity (a token span
given as ``(batch, start, end, entity_id)``), it adds a learned projection of that entity's
KGE embedding to the LM's hidden states:

- ``layer=None``: to the **input embeddings** (a forward hook on ``get_input_embeddings()``);
- ``layer=L``: to the **output of transformer block L** (a forward hook on the L-th block,
  0-based), so the first L blocks read the text alone and the rest read text plus graph.

The default is ``layer=0``, the output of the first block. The projection is
``Linear(LayerNorm(e))`` (the LayerNorm makes it independent of the KGE table's scale, which
differs between models); it is trained with the ordinary LM loss. The KGE table is a copy of the
given embeddings, frozen unless ``train_entities=True``.

Shapes: ``B`` batch, ``T`` tokens, ``H`` the LM's hidden width, ``D`` the KGE width, ``S`` spans.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from kgweave.errors import InvalidArgumentError
from kgweave.language.components.lm import (
    IGNORE_INDEX,
    causal_lm_loss,
    char_spans_to_token_spans,
    encode_texts,
    eval_mode,
)

__all__ = ["EntityAwareLM", "char_spans_to_token_spans", "hidden_size", "transformer_blocks"]


def transformer_blocks(lm: nn.Module) -> nn.ModuleList:
    """The list of transformer blocks of a causal LM (GPT-2's ``transformer.h``, Llama's
    ``model.layers``, ...): the ModuleList whose length is the config's number of layers."""
    depth = getattr(getattr(lm, "config", None), "num_hidden_layers", None)
    for _, module in lm.named_modules():
        if isinstance(module, nn.ModuleList) and (depth is None or len(module) == depth):
            return module
    raise InvalidArgumentError(f"cannot find the transformer blocks of {type(lm).__name__}")


def hidden_size(lm: nn.Module) -> int:
    """Width of the LM's hidden states (its input embedding width)."""
    embeddings = lm.get_input_embeddings()  # type: ignore[operator]
    return int(embeddings.weight.shape[1])


class EntityAwareLM(nn.Module):
    """A causal LM plus KGE embeddings added at entity mentions (see the module docstring).

    Args:
        lm: any causal LM module (``lm(input_ids=..., attention_mask=...).logits``).
        entity_embeddings: shape (N, D), the KGE entity table (copied).
        layer: None: add to the input embeddings; L: add to the output of block L.
        train_entities: fine-tune the KGE table too (default: frozen).
    """

    def __init__(
        self,
        lm: nn.Module,
        entity_embeddings: torch.Tensor,
        layer: int | None = 0,
        train_entities: bool = False,
    ) -> None:
        super().__init__()
        if entity_embeddings.dim() != 2:
            raise InvalidArgumentError("entity_embeddings must have shape (N, D)")
        self.lm = lm
        self.layer = layer
        width = hidden_size(lm)
        self.entities = nn.Embedding(*entity_embeddings.shape)
        with torch.no_grad():
            self.entities.weight.copy_(entity_embeddings.detach().float())
        self.entities.weight.requires_grad_(train_entities)
        self.norm = nn.LayerNorm(entity_embeddings.shape[1])
        self.project = nn.Linear(entity_embeddings.shape[1], width)
        nn.init.normal_(self.project.weight, std=0.02)
        nn.init.zeros_(self.project.bias)
        if layer is None:
            target: nn.Module = lm.get_input_embeddings()  # type: ignore[operator]
        else:
            blocks = transformer_blocks(lm)
            if not -len(blocks) <= layer < len(blocks):
                raise InvalidArgumentError(
                    f"fusion layer {layer} is out of range: the LM has {len(blocks)} blocks"
                )
            target = blocks[layer]
        #: what the hook adds, per thread: the LM may be shared by versions that serve
        #: concurrently (one thread's entities never reach another's pass)
        self._pending: dict[int, torch.Tensor] = {}
        self._handle = target.register_forward_hook(self._add_entities)

    @property
    def num_entities(self) -> int:
        return int(self.entities.num_embeddings)

    def config(self) -> dict[str, Any]:
        """What rebuilds this wrapper around the same LM (stored next to its weights)."""
        return {
            "layer": self.layer,
            "num_entities": self.num_entities,
            "entity_dim": int(self.entities.embedding_dim),
            "hidden_size": int(self.project.out_features),
            "train_entities": bool(self.entities.weight.requires_grad),
        }

    def fusion_state(self) -> dict[str, torch.Tensor]:
        """The fusion's own weights (projection, norm, and the KGE table), without the LM's."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("lm.")}

    @contextmanager
    def mentioning(self, spans: torch.Tensor | None, batch: int, length: int) -> Iterator[None]:
        """Within the block, every forward pass of the LM (``self.lm``, or the same model
        merged for inference: the hook is on its own modules) of a (``batch``, ``length``) input
        adds the entities at ``spans`` (shape (S, 4), see :meth:`entity_states`; None or
        empty: the plain LM). What scoring with a KV cache uses: the prompt's pass and each
        batch of continuations get their own spans."""
        thread = threading.get_ident()
        if spans is not None and len(spans):
            self._pending[thread] = self.entity_states(spans, batch, length)
        try:
            yield
        finally:
            self._pending.pop(thread, None)

    def _add_entities(self, module: nn.Module, inputs: Any, output: Any) -> Any:
        pending = self._pending.get(threading.get_ident())
        if pending is None:
            return None
        if isinstance(output, tuple):
            return (output[0] + pending.to(output[0].dtype), *output[1:])
        return output + pending.to(output.dtype)

    def entity_states(self, spans: torch.Tensor, batch: int, length: int) -> torch.Tensor:
        """What is added to the hidden states.

        Args:
            spans: shape (S, 4) of (batch row, start, end exclusive, entity id).
        Returns:
            shape (B, T, H): the projected embedding on every token of every mention, zero
            elsewhere (overlapping mentions add up).
        """
        device = self.project.weight.device
        out = torch.zeros(batch, length, self.project.out_features, device=device)
        if len(spans) == 0:
            return out
        spans = spans.to(device)
        if bool(((spans[:, 3] < 0) | (spans[:, 3] >= self.num_entities)).any()):
            raise InvalidArgumentError(f"entity id out of range 0..{self.num_entities - 1}")
        vectors = self.project(self.norm(self.entities(spans[:, 3])))  # (S, H)
        lengths = (spans[:, 2] - spans[:, 1]).clamp(min=0)
        which = torch.repeat_interleave(torch.arange(len(spans), device=device), lengths)
        first = torch.repeat_interleave(spans[:, 1] - torch.cumsum(lengths, 0) + lengths, lengths)
        positions = (first + torch.arange(len(which), device=device)).clamp(max=length - 1)
        return out.index_put((spans[which, 0], positions), vectors[which], accumulate=True)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        spans: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Run the LM with entity embeddings added at ``spans``.

        Args:
            input_ids, attention_mask: shape (B, T).
            spans: shape (S, 4) of (batch row, start, end exclusive, entity id); None or empty:
                the plain LM.
            labels: shape (B, T) with -100 where ignored; gives the LM loss.
        Returns:
            (logits (B, T, V), loss () or None).
        """
        batch, length = input_ids.shape
        with self.mentioning(spans, batch, length):
            logits = self.lm(input_ids=input_ids, attention_mask=attention_mask).logits
        loss = causal_lm_loss(logits, labels) if labels is not None else None
        return logits, loss

    def text_loss(
        self,
        tokenizer: Any,
        texts: Sequence[str],
        mentions: Sequence[Sequence[tuple[int, int, int]]] | None,
        max_length: int = 128,
        batch_size: int = 32,
    ) -> float:
        """Mean next-token cross-entropy per token over ``texts`` (encoded as in training),
        e.g. held-out facts: with the entities at ``mentions`` (per text, (char start, char
        end, entity id)), or the LM on text alone when ``mentions`` is None."""
        if not texts:
            raise InvalidArgumentError("no texts to score")
        total, tokens = 0.0, 0
        with eval_mode(self) as device, torch.inference_mode():
            for at in range(0, len(texts), batch_size):
                batch = encode_texts(tokenizer, texts[at : at + batch_size], max_length).to(device)
                spans = (
                    char_spans_to_token_spans(batch.offsets, mentions[at : at + batch_size])
                    if mentions is not None
                    else None
                )
                _, loss = self(batch.input_ids, batch.attention_mask, spans, batch.labels)
                assert loss is not None
                count = int((batch.labels[:, 1:] != IGNORE_INDEX).sum())
                total += float(loss) * count
                tokens += count
        return total / max(tokens, 1)

    def remove_hook(self) -> None:
        """Detach from the LM (the LM then runs as it was)."""
        self._handle.remove()
