"""Scoring every entity at once with a frozen model: one product with a prepacked table.

Bilinear models (DistMult, ComplEx) score all tails of a query as one matrix product,
``tail_query(hr) @ E^T``. Done with ``torch.matmul`` on the CPU, each call first reorders the
whole entity table into the layout the kernel wants (a pass over ``N x D`` values, ~0.2-0.3 ms
for FB15k-237 at dim 200, whatever the batch), and fp32 goes to the BLAS ``sgemm``, which on
some CPUs (MKL on AMD) runs at a third of oneDNN's speed. For a model that no longer changes
(serving, one evaluation pass) :class:`EntityProducts` reorders the table once into oneDNN's
blocked layout, as a frozen ``Linear`` layer is prepacked for inference, and every call then
runs oneDNN's kernel on it. Same products (fp32: equal to rounding; checked on a probe when
built), one more copy of the table in memory.

Elsewhere (CUDA, a torch without oneDNN, a probe that disagrees, ``prepack=False``) the
product is the plain ``query @ E^T``.
"""

from __future__ import annotations

import copy
import logging
from typing import Protocol

import torch

from kgweave.models.base import KGEModel
from kgweave.typing import AllScores, HRBatch

log = logging.getLogger(__name__)

_PACKABLE = (torch.float32, torch.bfloat16)


def _pack(table: torch.Tensor, batch_hint: int) -> torch.Tensor:
    return torch.ops.mkldnn._reorder_linear_weight(table, batch_hint)  # type: ignore[no-any-return]


def _apply(query: torch.Tensor, packed: torch.Tensor) -> torch.Tensor:
    return torch.ops.mkldnn._linear_pointwise(query, packed, None, "none", [], "")  # type: ignore[no-any-return]


class EntityProducts:
    """Products of query vectors with every row of a frozen table: ``query @ table^T``.

    Args:
        table: shape (N, D), e.g. the entity embeddings (detached; the prepacked layout is a
            copy, so later changes to the model do not reach it).
        prepack: use oneDNN's prepacked layout where available (the CPU).
        batch_hint: the batch size the layout is tuned for (any batch works).
        keep_table: keep ``table`` beside the prepacked copy, for queries that need
            gradients; False when ``table`` is itself a converted copy that would only cost
            memory (then queries must not need gradients).
    """

    def __init__(
        self,
        table: torch.Tensor,
        prepack: bool = True,
        batch_hint: int = 64,
        keep_table: bool = True,
    ) -> None:
        self.dtype = table.dtype
        self.table: torch.Tensor | None = table.detach()
        self.packed: torch.Tensor | None = None
        if prepack and self._can_pack(self.table):
            self.packed = self._try_pack(self.table, batch_hint)
        if self.packed is not None and not keep_table:
            self.table = None

    @staticmethod
    def _can_pack(table: torch.Tensor) -> bool:
        return (
            table.device.type == "cpu"
            and table.dtype in _PACKABLE
            and table.dim() == 2
            and len(table) > 0
            and torch.backends.mkldnn.is_available()  # type: ignore[no-untyped-call]
        )

    @staticmethod
    def _try_pack(table: torch.Tensor, batch_hint: int) -> torch.Tensor | None:
        try:
            packed = _pack(table.contiguous(), batch_hint)
            probe = table[: min(8, len(table))].contiguous()  # (P, D)
            got = _apply(probe, packed).float()
        # a torch without these ops (AttributeError), without a kernel for this table
        # (NotImplementedError), or refusing it, e.g. bf16 on a CPU without AVX-512
        # (RuntimeError): the plain matmul serves instead
        except (RuntimeError, AttributeError, NotImplementedError) as exc:
            log.debug("no prepacked entity table (%s); plain matmul", exc)
            return None
        want = (probe @ table.t()).float()
        tolerance = 1e-4 if table.dtype == torch.float32 else 2e-2
        scale = float(want.abs().max()) or 1.0
        if got.shape != want.shape or float((got - want).abs().max()) > tolerance * scale:
            log.warning("the prepacked entity table disagrees with matmul; using matmul")
            return None
        return packed

    @property
    def prepacked(self) -> bool:
        """Whether calls run on the prepacked table."""
        return self.packed is not None

    def __call__(self, query: torch.Tensor) -> torch.Tensor:
        """Args: query: shape (B, D). Returns: shape (B, N), in the table's dtype."""
        query = query.to(self.dtype)
        if self.packed is not None and (self.table is None or not query.requires_grad):
            return _apply(query.contiguous(), self.packed)
        assert self.table is not None
        return query @ self.table.t()


class EntityScorer(Protocol):
    """What ranks every entity for link prediction: a model's own pass
    (:class:`TailScorer`) or one that adds more than the embeddings (the text fusion,
    :class:`kgweave.language.features.text_fusion.FusedScorer`).
    :class:`~kgweave.predict.LinkPredictor`
    takes either and treats them alike."""

    #: the scores are final; False: a candidate search whose best are rescored in fp32
    exact: bool

    def __call__(self, hr: HRBatch) -> AllScores:
        """Args: hr: shape (B, 2) of (entity, relation) ids (reciprocal relations for head
        queries). Returns: shape (B, N) scores of every entity as the missing one."""
        ...


class TailScorer:
    """Scores of every tail for queries of a model whose weights no longer change.

    Bilinear models (those with a :meth:`KGEModel.tail_query`) score through
    :class:`EntityProducts`; the others through ``score_t`` of the model (or of a copy in
    ``dtype``). For a model whose weights no longer change: on the CPU the prepacked table is
    a copy taken here, elsewhere the products read the live table, and the queries always
    come from the live model, so after a change to the weights build a new scorer.

    Args:
        model: the model, in any mode (scores are computed as in eval mode, without grad).
        dtype: the precision of the pass: float32 (exact) or bfloat16 (a candidate search).
        prepack: see :class:`EntityProducts`.
    """

    def __init__(
        self, model: KGEModel, dtype: torch.dtype = torch.float32, prepack: bool = True
    ) -> None:
        self.model = model
        self.dtype = dtype
        self.exact = dtype == torch.float32
        probe = torch.zeros((0, 2), dtype=torch.long, device=model.entity.weight.device)
        with torch.no_grad():
            bilinear = model.tail_query(probe) is not None
        with torch.no_grad():  # a table converted for scoring needs no autograd graph
            weight = model.entity.weight.detach()
        self.products = (
            # a table converted to another dtype is a copy: once prepacked, not kept
            EntityProducts(weight.to(dtype), prepack, keep_table=dtype == weight.dtype)
            if bilinear
            else None
        )
        self._fallback: KGEModel | None = None
        if self.products is None:
            same = dtype == model.entity.weight.dtype
            self._fallback = model if same else copy.deepcopy(model).to(dtype)

    def __call__(self, hr: HRBatch) -> AllScores:
        """Args: hr: shape (B, 2) of (entity, relation) ids. Returns: shape (B, N) in
        ``dtype``."""
        model = self._fallback if self.products is None else self.model
        assert model is not None
        was_training = model.training
        model.eval()  # no dropout (KGEModel.set_dropout) in a ranking pass
        try:
            with torch.no_grad():
                if self.products is not None:
                    query = model.tail_query(hr)
                    assert query is not None
                    return self.products(query)
                return model.score_t(hr).to(self.dtype)
        finally:
            model.train(was_training)
