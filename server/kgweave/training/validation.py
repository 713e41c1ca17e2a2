"""The validation triples that early stopping, the plateau schedule and the choice of the best
model trust: the whole valid split, or a seeded sample large enough that its MRR is within
±``TOLERANCE`` of the whole split's (95 % confidence).

A sample's MRR is the mean of its triples' per-triple reciprocal ranks (the mean of the tail
and the head query's), a simple random sample of the ``N`` validation triples, so its 95 %
half-width is ``1.96 · sd / √n · √((N − n) / (N − 1))`` (``sd``: the per-triple spread measured
on the sample, which grows as the model learns). After every evaluation on a sample whose
half-width exceeds the tolerance, the sample grows (the next triples of the same seeded order:
the earlier ones stay) to the size that the measured spread asks for, plus 10 %, or to the
whole split; the run then measures again, and re-measures its best model so far on the new
sample.
"""

from __future__ import annotations

import math

import torch

from kgweave.data.dataset import KGDataset
from kgweave.training.config import TrainConfig

#: the most a sampled validation MRR may differ from the whole split's (95 % confidence)
TOLERANCE = 0.005
_Z95 = 1.96
#: a grown sample takes this much more than the measured spread asks for (the spread is
#: itself an estimate, and it grows as training goes on)
_MARGIN = 1.1


def validation_triples(dataset: KGDataset, config: TrainConfig) -> torch.Tensor:
    """The whole valid split, or its seeded sample of ``config.valid_sample`` triples: (M, 3)."""
    return ValidationSet(dataset, config).triples


def per_triple_reciprocal_ranks(ranks: torch.Tensor) -> torch.Tensor:
    """``ranks`` (2M,): M tail ranks then M head ranks (``EvaluationResult.ranks``) ->
    (M,) the mean of each triple's two reciprocal ranks (whose mean is the MRR)."""
    m = len(ranks) // 2
    return (1.0 / ranks[:m].double() + 1.0 / ranks[m:].double()) / 2


def mrr_half_width(ranks: torch.Tensor, population: int) -> float:
    """95 % half-width of the MRR of a random sample of ``population`` triples, from the
    sample's ranks (2M,); 0 for the whole population, inf below two triples."""
    per_triple = per_triple_reciprocal_ranks(ranks)
    n = len(per_triple)
    if n >= population:
        return 0.0
    if n < 2:
        return math.inf
    sd = float(per_triple.std())
    return _Z95 * sd / math.sqrt(n) * math.sqrt((population - n) / (population - 1))


def sample_size_for(sd: float, population: int, tolerance: float = TOLERANCE) -> int:
    """The smallest sample of ``population`` triples whose MRR half-width is ``tolerance``
    for a per-triple spread ``sd``: ``n0 N / (n0 + N - 1)``, ``n0 = (1.96 sd / tolerance)²``."""
    n0 = (_Z95 * sd / tolerance) ** 2
    return min(population, math.ceil(n0 * population / (n0 + population - 1)))


class ValidationSet:
    """The validation triples of one run; the sample grows when it is too small (see the
    module's docstring)."""

    def __init__(self, dataset: KGDataset, config: TrainConfig) -> None:
        self.all = dataset.split("valid")
        self.population = len(self.all)
        self.requested = config.valid_sample
        order = torch.randperm(
            self.population, generator=torch.Generator().manual_seed(config.seed)
        )
        self.order = order
        self.size = self.population
        if config.valid_sample is not None:
            self.size = min(config.valid_sample, self.population)
        #: the half-width measured at the last check (0: the whole split; None: not checked)
        self.half_width: float | None = None

    @property
    def sampled(self) -> bool:
        return self.size < self.population

    @property
    def triples(self) -> torch.Tensor:
        """(M, 3) the triples validated on now."""
        return self.all[self.order[: self.size]] if self.sampled else self.all

    def grow_if_needed(self, ranks: torch.Tensor) -> bool:
        """Check a validation's ranks (2M,) on :attr:`triples`: if their MRR's half-width
        exceeds :data:`TOLERANCE`, grow the sample and return True (validate again)."""
        self.half_width = mrr_half_width(ranks, self.population)
        if self.half_width <= TOLERANCE:
            return False
        per_triple = per_triple_reciprocal_ranks(ranks)
        sd = float(per_triple.std()) if len(per_triple) > 1 else 0.5  # 0.5: the largest spread
        wanted = math.ceil(sample_size_for(sd, self.population) * _MARGIN)
        self.size = min(self.population, max(wanted, self.size + 1))
        return True

    def describe(self) -> str:
        """What the run validates on, in words (for the log and the CLI)."""
        if not self.sampled:
            grown = ""
            if self.requested is not None and self.requested < self.population:
                grown = f" (a sample of {self.requested} was too small for ±{TOLERANCE})"
            return f"validation on all {self.population} validation triples{grown}"
        grown = f", grown from {self.requested}" if self.requested != self.size else ""
        sample = f"validation on a seeded sample of {self.size} of {self.population} triples"
        if self.half_width is None:  # (before the first evaluation)
            return (
                f"{sample}{grown}: checked at each evaluation to be within ±{TOLERANCE} of the "
                "full split's MRR (95% confidence), and grown when it is not"
            )
        return (
            f"{sample}{grown}: its MRR is within ±{self.half_width:.4f} of the full split's "
            f"(95% confidence; at most ±{TOLERANCE})"
        )

    def summary(self) -> dict[str, object]:
        """For the training result and the artifact."""
        return {
            "triples": self.size,
            "of": self.population,
            "requested_sample": self.requested,
            "mrr_half_width_95": None if self.half_width is None else round(self.half_width, 6),
        }
