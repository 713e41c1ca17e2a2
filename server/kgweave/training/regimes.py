"""Training regimes: how an epoch is cut into batches and how a batch becomes a loss.

All regimes train on the training triples plus their reciprocals, so one tail-scoring path
serves head and tail prediction. Each adds the regulariser and, when enabled, the
relation-prediction loss (Chen et al., 2021) over the batch's positive triples.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator

import torch
import torch.nn.functional as F

from kgweave.data.dataset import TailIndex
from kgweave.models.base import KGEModel
from kgweave.training.config import TrainConfig
from kgweave.training.regularizers import Penalty


class Regime(ABC):
    """One way to train: yields per-batch losses over an epoch."""

    def __init__(self, train: torch.Tensor, num_entities: int, config: TrainConfig) -> None:
        """Args: train: shape (M, 3) training triples *with* reciprocals, on the device."""
        self.train = train
        self.num_entities = num_entities
        self.config = config

    @property
    @abstractmethod
    def epoch_size(self) -> int:
        """Number of batch items (queries or triples) in one epoch."""

    @property
    def triples_per_epoch(self) -> int:
        """Training triples (with reciprocals) seen per epoch, for the progress rate."""
        return len(self.train)

    @abstractmethod
    def batch_loss(self, model: KGEModel, batch_ids: torch.Tensor) -> tuple[torch.Tensor, int]:
        """Loss of one batch and the number of triples it covered.

        Args:
            batch_ids: shape (B,) indices into this regime's epoch items.
        """

    def batches(self, generator: torch.Generator) -> Iterator[torch.Tensor]:
        """Shuffled batches of item indices for one epoch."""
        device = self.train.device
        order = torch.randperm(self.epoch_size, generator=generator).to(device)
        yield from torch.split(order, self.config.batch_size)

    def forget_loss(self, model: KGEModel, triples: torch.Tensor) -> torch.Tensor:
        """A loss that unlearns facts no longer true, ``triples`` shape (T, 3):
        ``-log(1 - p(t | h, r))`` under the softmax over all entities that the 1-N regimes
        train, mean over the triples (it vanishes as the fact's probability does)."""
        scores = model.score_t(triples[:, :2]).float()  # (T, N)
        p = F.log_softmax(scores, dim=1).gather(1, triples[:, 2:3]).squeeze(1).exp()
        return -torch.log1p(-p.clamp(max=1 - 1e-6)).mean()

    #: 1-N batches repeat rows many times: regularise each distinct row once, weighted
    dense_regularization = True

    def _auxiliary(self, model: KGEModel, triples: torch.Tensor) -> torch.Tensor:
        """Regulariser plus weighted relation-prediction loss of the batch's positives (T, 3)."""
        penalty = self._regularize(model, triples)
        weight = self.config.relation_prediction
        if weight == 0:
            return penalty
        relation_scores = model.score_r(triples[:, [0, 2]]).float()  # (T, R)
        return penalty + weight * F.cross_entropy(relation_scores, triples[:, 1])

    def _regularize(self, model: KGEModel, triples: torch.Tensor) -> torch.Tensor:
        kind = self.config.regularizer
        entity_weight, relation_weight = self.config.reg_weights()
        if kind == "none" or entity_weight == relation_weight == 0:
            return torch.zeros((), device=triples.device)
        penalty = Penalty(kind, entity_weight, relation_weight)
        if self.dense_regularization:
            return penalty.weighted(model, triples)
        return penalty.per_triple(model, triples)


class KvsAll(Regime):
    """1-N: each distinct (h, r) query scores all entities; targets are all its known tails.

    Loss: cross-entropy against the normalised multi-hot target (with optional smoothing).
    """

    def __init__(
        self, train: torch.Tensor, num_entities: int, config: TrainConfig, num_relations: int
    ) -> None:
        super().__init__(train, num_entities, config)
        self.index = TailIndex(train.cpu(), num_entities, num_relations).to(train.device)
        self.pairs = self.index.query_pairs()

    @property
    def epoch_size(self) -> int:
        return self.index.num_queries

    def batch_loss(self, model: KGEModel, batch_ids: torch.Tensor) -> tuple[torch.Tensor, int]:
        hr = self.pairs[batch_ids]
        rows, tails = self.index.positions_of(batch_ids)
        scores = model.score_t(hr).float()  # (B, N)
        targets = torch.zeros_like(scores)
        targets[rows, tails] = 1.0
        targets = targets / targets.sum(dim=1, keepdim=True)
        eps = self.config.label_smoothing
        if eps:
            targets = (1 - eps) * targets + eps / self.num_entities
        loss = -(targets * F.log_softmax(scores, dim=1)).sum(dim=1).mean()
        positives = torch.stack((hr[rows, 0], hr[rows, 1], tails), dim=1)
        return loss + self._auxiliary(model, positives), len(positives)


class OneVsAll(Regime):
    """1vsAll (Lacroix et al., 2018): one query per triple, softmax cross-entropy on its tail."""

    @property
    def epoch_size(self) -> int:
        return len(self.train)

    def batch_loss(self, model: KGEModel, batch_ids: torch.Tensor) -> tuple[torch.Tensor, int]:
        triples = self.train[batch_ids]
        scores = model.score_t(triples[:, :2]).float()
        loss = F.cross_entropy(scores, triples[:, 2], label_smoothing=self.config.label_smoothing)
        return loss + self._auxiliary(model, triples), len(triples)


class NegativeSampling(Regime):
    """Uniform corrupt tails with the self-adversarial loss of RotatE (Sun et al., 2019).

    ``loss = -log σ(γ + s⁺) - Σ_i p_i log σ(-γ - s⁻_i)``, ``p = softmax(α s⁻)`` (no gradient).
    Memory per step is ``B × K`` scores, never ``B × N``: for graphs too large for 1-N.
    """

    dense_regularization = False

    @property
    def epoch_size(self) -> int:
        return len(self.train)

    def forget_loss(self, model: KGEModel, triples: torch.Tensor) -> torch.Tensor:
        """The negative term of this regime's loss on facts no longer true (T, 3):
        ``-log σ(-γ - s)``, mean over the triples."""
        return F.softplus(self.config.margin + model.score_hrt(triples).float()).mean()

    def batch_loss(self, model: KGEModel, batch_ids: torch.Tensor) -> tuple[torch.Tensor, int]:
        triples = self.train[batch_ids]
        k = self.config.num_negatives
        negatives = torch.randint(self.num_entities, (len(triples), k), device=triples.device)
        positive = model.score_hrt(triples).float()
        negative = model.score_candidates(triples[:, :2], negatives).float()
        gamma = self.config.margin
        temperature = self.config.adversarial_temperature
        if temperature > 0:
            weights = F.softmax(negative.detach() * temperature, dim=1)
        else:
            weights = torch.full_like(negative, 1.0 / k)
        loss = (
            -F.logsigmoid(gamma + positive).mean()
            - (weights * F.logsigmoid(-gamma - negative)).sum(dim=1).mean()
        )
        return loss + self._auxiliary(model, triples), len(triples)


def make_regime(
    config: TrainConfig, train: torch.Tensor, num_entities: int, num_relations: int
) -> Regime:
    """The regime named in ``config`` (train: (M, 3) with reciprocals, on the device)."""
    if config.regime == "kvsall":
        return KvsAll(train, num_entities, config, num_relations)
    if config.regime == "1vsall":
        return OneVsAll(train, num_entities, config)
    return NegativeSampling(train, num_entities, config)
