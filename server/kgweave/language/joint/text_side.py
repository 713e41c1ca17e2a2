"""LM -> KG: entity tables that add projected text vectors to the embeddings, trained by the
one training loop with an alignment loss (:class:`TextSideHooks`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from kgweave.data.dataset import KGDataset
from kgweave.errors import InvalidArgumentError
from kgweave.language.joint.config import (
    JointConfig,
)
from kgweave.models import KGEModel, model_class
from kgweave.training.loop import TrainingHooks, train


class TextEnhancedEntities(nn.Module):
    """Entity representations ``structural + P · text`` with the interface of ``nn.Embedding``
    that :class:`kgweave.models.KGEModel` uses (``module(ids)`` and ``module.weight``).

    Args:
        structural: the model's own entity table, (N, De).
        text: shape (N, Dt) text vectors (a buffer, not trained).
    """

    text: torch.Tensor

    def __init__(self, structural: nn.Embedding, text: torch.Tensor) -> None:
        super().__init__()
        if text.shape[0] != structural.num_embeddings:
            raise InvalidArgumentError(
                f"{text.shape[0]} text vectors for {structural.num_embeddings} entities"
            )
        self.structural = structural
        self.register_buffer("text", text.detach().float().clone())
        self.project = nn.Linear(text.shape[1], structural.embedding_dim, bias=False)
        nn.init.zeros_(self.project.weight)

    @property
    def weight(self) -> torch.Tensor:
        """The whole enhanced table: shape (N, De)."""
        table: torch.Tensor = self.structural.weight + self.project(self.text)
        return table

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """ids: any shape (...) -> (..., De)."""
        rows: torch.Tensor = self.structural(ids) + self.project(self.text[ids])
        return rows


def alignment_loss(
    structural: torch.Tensor, projected_text: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Symmetric InfoNCE: each entity's structural vector should be closest to its own text.

    Args:
        structural, projected_text: shape (B, De), row i of both is the same entity.
    Returns:
        shape () loss.
    """
    a = F.normalize(structural, dim=1)
    b = F.normalize(projected_text, dim=1)
    logits = a @ b.t() / temperature  # (B, B)
    target = torch.arange(len(a), device=a.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))


# ---- LM -> KG with alignment


class TextSideHooks(TrainingHooks):
    """Joint training's additions to the one training loop: the entity table becomes
    ``structural + P · text`` (:class:`TextEnhancedEntities`), and every step adds the
    weighted alignment loss of a random batch of entities (``align_weight``)."""

    extra_loss_name = "align_loss"

    def __init__(self, config: JointConfig, text: torch.Tensor) -> None:
        self.config = config
        self.text = text
        self.enhanced: TextEnhancedEntities | None = None
        self.align: nn.Linear | None = None

    def build(self, model: KGEModel) -> list[nn.Module]:
        enhanced = TextEnhancedEntities(model.entity, self.text)
        if not self.config.use_text:
            enhanced.project.weight.requires_grad_(False)
        # KGEModel only calls entity(ids) and entity.weight, which TextEnhancedEntities provides
        model.entity = enhanced  # type: ignore[assignment]
        self.enhanced = enhanced
        self.align = nn.Linear(self.text.shape[1], enhanced.structural.embedding_dim, bias=False)
        return [self.align]

    def extra_loss(self, model: KGEModel, generator: torch.Generator) -> torch.Tensor | None:
        c = self.config
        if c.align_weight <= 0:
            return None
        assert self.enhanced is not None and self.align is not None
        pick = torch.randperm(self.enhanced.text.shape[0], generator=generator)
        ids = pick[: c.align_batch].to(self.enhanced.text.device)
        loss = alignment_loss(
            self.enhanced.structural(ids), self.align(self.enhanced.text[ids]), c.align_temperature
        )
        return c.align_weight * loss


def train_text_enhanced_kge(
    dataset: KGDataset,
    config: JointConfig,
    text: torch.Tensor,
    device: torch.device,
    progress: bool,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> tuple[KGEModel, TextEnhancedEntities, nn.Linear, list[dict[str, Any]], dict[str, float]]:
    """Train the text-enhanced KGE model with its regime's loss plus the alignment loss: the
    one training loop (:func:`kgweave.training.train`, the KGE config's every setting) with
    :class:`TextSideHooks`. Returns the model, its enhanced entity table, the alignment
    projection, the history and the best validation metrics. ``on_epoch``: each epoch's
    history row (a job's progress); ``should_stop``: polled every step, ``True`` ends the
    training early (a cancelled job)."""
    hooks = TextSideHooks(config, text)
    kge = config.kge.model_copy(update={"seed": config.seed})
    result = train(
        dataset,
        kge,
        device=device,
        progress=progress,
        hooks=hooks,
        on_epoch=on_epoch,
        should_stop=should_stop,
    )
    assert hooks.enhanced is not None and hooks.align is not None
    valid = dict(result.best_valid.metrics) if result.best_valid is not None else {}
    return result.model, hooks.enhanced, hooks.align, result.history, valid


def bake(model: KGEModel, enhanced: TextEnhancedEntities) -> KGEModel:
    """A plain model of the same class whose entity table is the enhanced one."""
    plain = model_class(model.name)(model.num_entities, model.num_relations, model.dim)
    with torch.no_grad():
        plain.entity.weight.copy_(enhanced.weight.detach().cpu())
        plain.relation.weight.copy_(model.relation.weight.detach().cpu())
    return plain.eval()
