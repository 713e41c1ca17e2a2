#!/usr/bin/env python3
"""PyKEEN side of the kgweave side-by-side benchmark.

Trains one knowledge-graph-embedding model with PyKEEN (pinned: ``pykeen==1.11.1``), configured
as closely as PyKEEN allows to kgweave's 1-N trainer, evaluates it with filtered rank-based
metrics and writes one JSON record. It runs in its own virtual environment (PyKEEN is not a
kgweave dependency), e.g.::

    python3 -m venv /tmp/pykeen-venv
    /tmp/pykeen-venv/bin/pip install torch pykeen==1.11.1
    /tmp/pykeen-venv/bin/python benchmarks/pykeen_runner.py \\
        --dataset ../shared/datasets/umls --model complex --dim 100 --epochs 20 \\
        --batch-size 256 --optimizer adagrad --lr 0.1 --regularizer n3 --reg-weight 0.01 \\
        --seed 0 --json-out /tmp/umls.json

How each setting maps onto PyKEEN
---------------------------------
* **Data**: ``train.tsv`` / ``valid.tsv`` / ``test.tsv`` (``head<TAB>relation<TAB>tail``) are
  read as strings (``\\r`` stripped, leading zeros kept). The training factory is built with
  ``create_inverse_triples=True``; valid and test reuse its entity and relation maps. PyKEEN
  drops valid/test triples whose entity or relation never occurs in training (the counts are
  reported as ``valid_triples_dropped`` / ``test_triples_dropped``).
* **Training loop**: ``--training-loop lcwa`` (default) is PyKEEN's ``LCWATrainingLoop``: one
  training example is a (head, relation) pair of the training set *plus inverse triples*,
  scored against every entity, with a multi-hot target of all training tails (KvsAll, ConvE's
  "1-N scoring"). ``--batch-size`` therefore counts (h, r) pairs, not triples, and an epoch
  has ``ceil(#unique (h,r) pairs / batch)`` steps. ``--training-loop symmetric-lcwa`` is
  ``SymmetricLCWATrainingLoop``: one example is a training triple scored as (h, r, ?) *and*
  (?, r, t) (the latter through the inverse relation) with a one-hot target, which is
  Lacroix et al.'s 1vsAll objective; a batch of B triples yields 2B predictions and the loss
  is the sum of the two directional means.
* **Loss**: ``CrossEntropyLoss`` (softmax over all entities). With LCWA's multi-hot labels
  PyKEEN L1-normalises the label row into a target distribution (soft-target cross-entropy).
* **Model / dim**: ``--dim`` is PyKEEN's ``embedding_dim``. For the complex-valued models
  (ComplEx, RotatE) PyKEEN stores ``torch.cfloat`` embeddings, so ``embedding_dim`` is the
  number of *complex components*: ``dim`` complex numbers = ``2*dim`` real parameters per
  entity. kgweave passes the same number with the same meaning.
  PyKEEN's default entity constraints (unit L2 norm of entity vectors for TransE and
  DistMult) are switched off so the models are plain, unconstrained embeddings as in a 1-N
  trainer; pass ``--keep-constrainers`` to keep them. RotatE keeps its unit-modulus relation
  constraint (that is the model). Initialisers are PyKEEN's defaults (ComplEx: standard
  normal on every real and imaginary part, i.e. not the 1e-3 scale of Lacroix et al.)
  unless ``--init-std S`` is given: then every real parameter of the entity and relation
  embeddings is drawn from N(0, S^2) (RotatE: entities only; its relations keep PyKEEN's
  uniform-phase initialisation).
* **Regulariser**: ``n3`` is ``PowerSumRegularizer(p=3)`` = ``weight * mean_rows sum_i |x_i|^3``,
  with ``|x_i|`` the complex modulus for complex models (Lacroix et al.'s N3). It is *not*
  ``LpRegularizer(p=3)``, which is the (un-cubed) 3-norm. ``l2`` is ``PowerSumRegularizer(p=2)``
  (squared L2 norm). PyKEEN regularises *representation outputs*: it is attached to the
  entity and relation embeddings (``regularizer`` / ``regularizer_kwargs``, and additionally
  ``entity_representations_kwargs`` for DistMult, which by default only regularises
  relations; RotatE only regularises entities), and every lookup of a batch adds a term.
  Under 1-N scoring the tail lookup is *all* entities, so per step the penalty is
  ``w * (mean_batch |h|^3 + mean_batch |r|^3 + mean_all_entities |e|^3)`` rather than over the
  batch's tails.
* **Optimiser**: ``torch.optim.Adagrad`` / ``torch.optim.Adam`` with ``--lr`` and torch defaults.
* **Other**: CPU device, shuffled batches seeded through ``pykeen.utils.set_random_seed``,
  no early stopping, no LR schedule, no label smoothing, no gradient clipping, no
  checkpoints, no automatic memory optimisation (batch size is exactly ``--batch-size``).
* **Evaluation**: ``RankBasedEvaluator(filtered=True)`` on the test set, filtered on
  train + valid + test, head and tail prediction (head prediction uses the inverse
  relation), "realistic" ranks (expected rank under random tie breaking), metrics of the
  ``both`` side. ``--eval-sample N`` evaluates a seeded random sample of N test triples:
  ``torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:N]`` over the test
  triples kept (file order); the filter still uses the full splits.
* **Timing**: ``train_seconds`` is ``time.perf_counter`` around ``TrainingLoop.train`` only
  (this includes PyKEEN's one-off construction of the LCWA instances and data loader, but not
  data loading or model construction); ``eval_seconds`` is around
  ``RankBasedEvaluator.evaluate`` only. ``--time-budget`` is enforced by a training callback
  and checked at every epoch end: training stops at the first epoch end after the budget is
  spent, so it can overshoot by up to one epoch (minutes on FB15k-237 on CPU).
  ``--budget-check batch`` also checks before every batch and stops mid-epoch;
  ``epochs_completed`` then counts full epochs and ``partial_epoch_batches`` /
  ``epochs_fractional`` the rest. PyKEEN calls ``gc.collect()`` after every epoch (about
  0.2 s with PyKEEN loaded), which dominates the epoch time on tiny graphs (Nations, UMLS).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import logging
import math
import pathlib
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from pykeen.evaluation import RankBasedEvaluator
from pykeen.losses import CrossEntropyLoss
from pykeen.models import ComplEx, DistMult, ERModel, RotatE, TransE
from pykeen.training import LCWATrainingLoop, SymmetricLCWATrainingLoop, TrainingCallback
from pykeen.training.training_loop import TrainingLoop
from pykeen.triples import TriplesFactory
from pykeen.utils import set_random_seed
from pykeen.version import get_version

MODELS: tuple[str, ...] = ("transe", "distmult", "complex", "rotate")
OPTIMIZERS: dict[str, str] = {"adagrad": "Adagrad", "adam": "Adam"}
REGULARIZERS: tuple[str, ...] = ("none", "n3", "l2")
TRAINING_LOOPS: dict[str, type[TrainingLoop[Any]]] = {
    "lcwa": LCWATrainingLoop,
    "symmetric-lcwa": SymmetricLCWATrainingLoop,
}
#: The metrics reported, as PyKEEN metric keys (both sides, realistic ranks).
METRIC_KEYS: dict[str, str] = {
    "mrr": "both.realistic.inverse_harmonic_mean_rank",
    "hits@1": "both.realistic.hits_at_1",
    "hits@3": "both.realistic.hits_at_3",
    "hits@10": "both.realistic.hits_at_10",
}


@dataclass(frozen=True)
class RunSpec:
    """One run, as the command line gives it (each field is the option of the same name)."""

    #: folder with ``train.tsv``, ``valid.tsv`` and ``test.tsv``
    dataset: pathlib.Path
    #: one of :data:`MODELS`
    model: str
    #: PyKEEN ``embedding_dim`` (complex components for complex/rotate)
    dim: int
    #: maximum number of epochs
    epochs: int
    #: training batch size
    batch_size: int
    #: one of :data:`OPTIMIZERS`
    optimizer: str
    lr: float
    #: one of :data:`REGULARIZERS`, and its weight
    regularizer: str
    reg_weight: float
    #: model initialisation, shuffling and the evaluation sample
    seed: int
    #: training time budget in seconds (None: none)
    time_budget: float | None
    #: ``"epoch"`` or ``"batch"``, cf. :class:`TimeBudgetCallback`
    budget_check: str
    #: test triples evaluated (None: all)
    eval_sample: int | None
    eval_batch_size: int
    #: one of :data:`TRAINING_LOOPS`
    training_loop: str
    #: optional slice size for 1-N scoring
    slice_size: int | None
    #: keep PyKEEN's default entity constraints for transe/distmult
    keep_constrainers: bool
    #: N(0, init_std^2) initialisation instead of the model's default (None: the default)
    init_std: float | None
    #: where the JSON record is written
    json_out: pathlib.Path


def parse_args(argv: Sequence[str] | None = None) -> RunSpec:
    """Parse the command line.

    :param argv: the arguments (without the program name); ``None`` reads ``sys.argv``.
    :returns: the run it asks for.
    """
    parser = argparse.ArgumentParser(
        description="Train and evaluate a KGE model with PyKEEN (1-N/LCWA, cross-entropy) "
        "and write a JSON record for the kgweave side-by-side benchmark.",
    )
    parser.add_argument(
        "--dataset",
        type=pathlib.Path,
        required=True,
        help="folder with train.tsv, valid.tsv, test.tsv (head<TAB>relation<TAB>tail)",
    )
    parser.add_argument("--model", choices=MODELS, default="complex", help="model name")
    parser.add_argument(
        "--dim",
        type=int,
        default=200,
        help="embedding_dim; for complex-valued models (complex, rotate) the number of complex "
        "components (2*dim real parameters per vector)",
    )
    parser.add_argument("--epochs", type=int, default=50, help="maximum number of epochs")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=512,
        help="training batch size ((h, r) pairs for lcwa, triples for symmetric-lcwa)",
    )
    parser.add_argument(
        "--optimizer", choices=sorted(OPTIMIZERS), default="adagrad", help="optimiser"
    )
    parser.add_argument("--lr", type=float, default=0.1, help="learning rate")
    parser.add_argument(
        "--regularizer",
        choices=REGULARIZERS,
        default="n3",
        help="n3: weight*sum|x|^3 (PowerSumRegularizer p=3); l2: weight*sum x^2; none",
    )
    parser.add_argument("--reg-weight", type=float, default=0.01, help="regularisation weight")
    parser.add_argument(
        "--seed", type=int, default=0, help="random seed (model init, shuffling, eval sample)"
    )
    parser.add_argument(
        "--time-budget",
        type=float,
        default=None,
        metavar="SECONDS",
        help="stop training at the first epoch end after this many seconds of training",
    )
    parser.add_argument(
        "--budget-check",
        choices=("epoch", "batch"),
        default="epoch",
        help="when --time-budget is checked: at epoch ends (default; may overshoot by up to one "
        "epoch) or also before every batch (stops mid-epoch; see partial_epoch_batches)",
    )
    parser.add_argument(
        "--eval-sample",
        type=int,
        default=None,
        metavar="N",
        help="evaluate on a seeded random sample of N test triples instead of all of them",
    )
    parser.add_argument(
        "--eval-batch-size",
        type=int,
        default=256,
        help="evaluation batch size (test triples per scoring call); does not change results",
    )
    parser.add_argument(
        "--training-loop",
        choices=sorted(TRAINING_LOOPS),
        default="lcwa",
        help="lcwa: KvsAll over (h, r) pairs incl. inverse triples (default); "
        "symmetric-lcwa: 1vsAll over triples, both directions",
    )
    parser.add_argument(
        "--slice-size",
        type=int,
        default=None,
        help="optional PyKEEN slice size for 1-N scoring "
        "(saves memory for transe/rotate on big graphs)",
    )
    parser.add_argument(
        "--keep-constrainers",
        action="store_true",
        help="keep PyKEEN's default unit-norm entity constraint for transe/distmult",
    )
    parser.add_argument(
        "--init-std",
        type=float,
        default=None,
        help="initialise embeddings from N(0, std^2) per real parameter instead of PyKEEN's "
        "model defaults (rotate: entities only)",
    )
    parser.add_argument(
        "--json-out", type=pathlib.Path, required=True, help="where to write the JSON record"
    )
    args = parser.parse_args(argv)
    for name in ("dim", "epochs", "batch_size", "eval_batch_size"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive")
    if args.eval_sample is not None and args.eval_sample <= 0:
        parser.error("--eval-sample must be positive")
    if args.init_std is not None and args.init_std <= 0:
        parser.error("--init-std must be positive")
    if args.time_budget is not None and args.time_budget <= 0:
        parser.error("--time-budget must be positive")
    return RunSpec(**vars(args))


def read_labeled_triples(path: pathlib.Path) -> np.ndarray:
    """Read a ``head<TAB>relation<TAB>tail`` file as strings.

    Handles CRLF line endings and keeps ids verbatim (e.g. WN18RR's leading zeros).

    :param path: the TSV file.
    :returns: shape ``(n, 3)``, dtype ``str``.
    :raises ValueError: if a non-empty line does not have exactly three fields.
    """
    rows: list[tuple[str, str, str]] = []
    with path.open(encoding="utf-8", newline="") as handle:
        for line_number, raw_line in enumerate(handle, start=1):
            line = raw_line.rstrip("\r\n")
            if not line:
                continue
            fields = line.split("\t")
            if len(fields) != 3:
                raise ValueError(
                    f"{path}:{line_number}: expected 3 tab-separated fields, got {len(fields)}"
                )
            rows.append((fields[0], fields[1], fields[2]))
    return np.asarray(rows, dtype=str).reshape(-1, 3)


@dataclass
class Splits:
    """Training, validation and test triples sharing one entity/relation vocabulary."""

    training: TriplesFactory
    validation: TriplesFactory
    testing: TriplesFactory
    #: valid/test triples dropped because they mention an entity/relation unseen in training
    valid_dropped: int
    test_dropped: int


def load_splits(dataset: pathlib.Path) -> Splits:
    """Load a dataset folder into PyKEEN triples factories.

    :param dataset: folder with ``train.tsv``, ``valid.tsv`` and ``test.tsv``.
    :returns: the three factories; the training one has ``create_inverse_triples=True``.
    """
    train_labeled = read_labeled_triples(dataset / "train.tsv")
    training = TriplesFactory.from_labeled_triples(train_labeled, create_inverse_triples=True)
    factories: list[TriplesFactory] = []
    dropped: list[int] = []
    for name in ("valid.tsv", "test.tsv"):
        labeled = read_labeled_triples(dataset / name)
        factory = TriplesFactory.from_labeled_triples(
            labeled,
            entity_to_id=training.entity_to_id,
            relation_to_id=training.relation_to_id,
            create_inverse_triples=False,
        )
        factories.append(factory)
        dropped.append(len(labeled) - factory.num_triples)
    return Splits(training, factories[0], factories[1], dropped[0], dropped[1])


def regularizer_config(name: str, weight: float) -> tuple[str | None, dict[str, Any] | None]:
    """Map a regulariser name to a PyKEEN regulariser hint and its keyword arguments.

    :param name: one of :data:`REGULARIZERS`.
    :param weight: the regularisation weight.
    :returns: ``(hint, kwargs)``; ``(None, None)`` for no regulariser.
    """
    if name == "none" or weight == 0.0:
        return None, None
    p = {"n3": 3.0, "l2": 2.0}[name]
    # PowerSumRegularizer: weight * mean over looked-up rows of sum_i |x_i|^p
    # (|.| is the complex modulus for complex embeddings)
    return "powersum", dict(weight=weight, p=p, dim=-1, normalize=False)


def build_model(spec: RunSpec, training: TriplesFactory) -> ERModel[Any, Any, Any]:
    """Build the PyKEEN model on CPU with a cross-entropy loss and the requested regulariser.

    :param spec: the run (its model, dim, regulariser, seed, constrainers and initialisation).
    :param training: the training factory (fixes the numbers of entities and relations).
    :returns: the model.
    """
    name = spec.model
    reg, reg_kwargs = regularizer_config(spec.regularizer, spec.reg_weight)
    common: dict[str, Any] = dict(
        triples_factory=training,
        embedding_dim=spec.dim,
        loss=CrossEntropyLoss(),
        random_seed=spec.seed,
    )
    if spec.init_std is not None:
        initializer = functools.partial(torch.nn.init.normal_, mean=0.0, std=spec.init_std)
        common["entity_initializer"] = initializer
        if name != "rotate":
            common["relation_initializer"] = initializer
    if name == "complex":
        # regularizer=None must be explicit: ComplEx otherwise defaults to an L2 LpRegularizer.
        return ComplEx(**common, regularizer=reg, regularizer_kwargs=reg_kwargs)
    if name == "rotate":
        # RotatE regularises entities only; relations are constrained to unit modulus.
        return RotatE(**common, regularizer=reg, regularizer_kwargs=reg_kwargs)
    constrainer: dict[str, Any] = {} if spec.keep_constrainers else dict(entity_constrainer=None)
    if name == "distmult":
        # DistMult's `regularizer` only covers relations; add the same for entities.
        return DistMult(
            **common,
            **constrainer,
            regularizer=reg,
            regularizer_kwargs=reg_kwargs,
            entity_representations_kwargs=dict(regularizer=reg, regularizer_kwargs=reg_kwargs),
        )
    if name == "transe":
        return TransE(**common, **constrainer, regularizer=reg, regularizer_kwargs=reg_kwargs)
    raise ValueError(f"unknown model {name!r}; choose from {MODELS}")


class TimeBudgetExhaustedError(Exception):
    """Raised by :class:`TimeBudgetCallback` to leave an epoch early (``--budget-check batch``).

    Deliberately not a ``RuntimeError``/``MemoryError``: PyKEEN's training loop catches those to
    write failure checkpoints, whereas this one passes straight through ``TrainingLoop.train``.
    """


class TimeBudgetCallback(TrainingCallback):  # type: ignore[misc,unused-ignore]
    """Stop training once a wall-time budget is spent.

    With ``granularity="epoch"`` the budget is checked after every epoch and, when spent,
    ``TrainingLoop._should_stop`` is set: PyKEEN 1.11.1 checks that flag after each epoch's
    ``post_epoch`` callbacks (the mechanism its early stopper uses), so training ends cleanly
    after the finished epoch. With ``granularity="batch"`` it is also checked before every
    batch, and :class:`TimeBudgetExhaustedError` is raised there, so every batch that was started
    has been applied in full (PyKEEN has no hook to leave an epoch gracefully).
    """

    def __init__(self, budget_seconds: float, start: float, granularity: str = "epoch") -> None:
        """Initialise.

        :param budget_seconds: the training time budget.
        :param start: the ``time.perf_counter()`` value training time is measured from.
        :param granularity: ``"epoch"`` or ``"batch"``.
        """
        super().__init__()  # type: ignore[no-untyped-call,unused-ignore]
        self.budget_seconds = budget_seconds
        self.start = start
        self.granularity = granularity
        self.stopped_by_budget = False
        #: batches started in the current (unfinished) epoch
        self.batches_in_epoch = 0

    def _spent(self) -> bool:
        return time.perf_counter() - self.start >= self.budget_seconds

    def pre_batch(self, **kwargs: Any) -> None:
        if self.granularity == "batch" and self._spent():
            self.stopped_by_budget = True
            raise TimeBudgetExhaustedError
        self.batches_in_epoch += 1

    def post_epoch(self, epoch: int, epoch_loss: float, **kwargs: Any) -> None:
        self.batches_in_epoch = 0
        if self._spent():
            self.stopped_by_budget = True
            self.training_loop._should_stop = True


@dataclass
class TrainingOutcome:
    """What :func:`train` measured."""

    seconds: float
    #: full epochs completed
    epochs_completed: int
    #: batches of the epoch that was cut short by the budget (0 unless ``--budget-check batch``)
    partial_epoch_batches: int
    batches_per_epoch: int
    stopped_by_budget: bool
    final_loss: float | None


def batches_per_epoch(training: TriplesFactory, loop_name: str, batch_size: int) -> int:
    """Number of optimiser steps per epoch (PyKEEN keeps the last, smaller batch).

    :param training: the training factory.
    :param loop_name: one of :data:`TRAINING_LOOPS`.
    :param batch_size: training batch size.
    :returns: the number of batches.
    """
    if loop_name == "lcwa":
        triples = training._add_inverse_triples_if_necessary(mapped_triples=training.mapped_triples)
        instances = int(torch.unique(triples[:, :2], dim=0).shape[0])
    else:
        instances = training.num_triples
    return math.ceil(instances / batch_size)


def train(
    model: ERModel[Any, Any, Any], training: TriplesFactory, spec: RunSpec
) -> TrainingOutcome:
    """Train ``model`` with a PyKEEN training loop and time it.

    :param model: the model.
    :param training: the training triples factory.
    :param spec: the run (its training loop, optimiser, learning rate, epochs, batch size,
        time budget and slice size).
    :returns: the wall time of training and the number of completed epochs.
    """
    loop = TRAINING_LOOPS[spec.training_loop](
        model=model,
        triples_factory=training,
        optimizer=OPTIMIZERS[spec.optimizer],
        optimizer_kwargs=dict(lr=spec.lr),
        automatic_memory_optimization=False,
    )
    callbacks: list[TrainingCallback] = []
    budget: TimeBudgetCallback | None = None
    # PyKEEN always creates a checkpoint folder; keep it out of the user's home directory.
    with tempfile.TemporaryDirectory(prefix="pykeen-ckpt-") as checkpoint_directory:
        start = time.perf_counter()
        if spec.time_budget is not None:
            budget = TimeBudgetCallback(spec.time_budget, start, granularity=spec.budget_check)
            callbacks.append(budget)
        with contextlib.suppress(TimeBudgetExhaustedError):
            loop.train(
                triples_factory=training,
                num_epochs=spec.epochs,
                batch_size=spec.batch_size,
                slice_size=spec.slice_size,
                use_tqdm=False,
                use_tqdm_batch=False,
                callbacks=callbacks or None,
                pin_memory=False,
                checkpoint_directory=checkpoint_directory,
            )
        seconds = time.perf_counter() - start
    losses = loop.losses_per_epochs
    stopped = budget is not None and budget.stopped_by_budget
    partial = budget.batches_in_epoch if budget is not None and stopped else 0
    return TrainingOutcome(
        seconds=seconds,
        epochs_completed=loop._epoch,
        partial_epoch_batches=partial,
        batches_per_epoch=batches_per_epoch(training, spec.training_loop, spec.batch_size),
        stopped_by_budget=stopped,
        final_loss=float(losses[-1]) if losses else None,
    )


def sample_triples(mapped_triples: torch.Tensor, n: int | None, seed: int) -> torch.Tensor:
    """Return a seeded random sample of ``n`` rows (all rows if ``n`` is None or too large).

    :param mapped_triples: shape ``(m, 3)``.
    :param n: sample size.
    :param seed: random seed (independent of the global RNG state).
    :returns: shape ``(min(n, m), 3)``, rows in sampled order.
    """
    if n is None or n >= mapped_triples.shape[0]:
        return mapped_triples
    generator = torch.Generator().manual_seed(seed)
    index = torch.randperm(mapped_triples.shape[0], generator=generator)[:n]
    return mapped_triples[index]


def evaluate(
    model: ERModel[Any, Any, Any],
    splits: Splits,
    eval_triples: torch.Tensor,
    batch_size: int,
    slice_size: int | None = None,
) -> tuple[dict[str, float], float]:
    """Filtered rank-based evaluation on both sides with realistic ranks.

    :param model: the trained model.
    :param splits: the dataset (its three splits form the filter).
    :param eval_triples: the test triples to rank, shape ``(n, 3)``.
    :param batch_size: evaluation batch size.
    :param slice_size: optional slice size.
    :returns: the metrics of :data:`METRIC_KEYS` and the wall time of evaluation.
    """
    evaluator = RankBasedEvaluator(filtered=True, batch_size=batch_size, slice_size=slice_size)
    filter_triples = [
        splits.training.mapped_triples,
        splits.validation.mapped_triples,
        splits.testing.mapped_triples,
    ]
    start = time.perf_counter()
    results = evaluator.evaluate(
        model=model,
        mapped_triples=eval_triples,
        batch_size=batch_size,
        slice_size=slice_size,
        use_tqdm=False,
        additional_filter_triples=filter_triples,
    )
    seconds = time.perf_counter() - start
    return {name: float(results.get_metric(key)) for name, key in METRIC_KEYS.items()}, seconds


def quiet_pykeen() -> None:
    """Silence PyKEEN's informational logging and known harmless warnings (call at run time)."""
    for name in ("pykeen", "torch_max_mem", "class_resolver"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=UserWarning, module=r"pykeen\..*")
    warnings.filterwarnings("ignore", message=r".*pin_memory.*")


def run(args: RunSpec) -> dict[str, Any]:
    """Load, train, evaluate and build the JSON record.

    :param args: the run the command line asks for.
    :returns: the record.
    """
    set_random_seed(args.seed)
    splits = load_splits(args.dataset)
    model = build_model(args, splits.training)
    outcome = train(model, splits.training, args)
    eval_triples = sample_triples(splits.testing.mapped_triples, args.eval_sample, args.seed)
    metrics, eval_seconds = evaluate(
        model, splits, eval_triples, batch_size=args.eval_batch_size, slice_size=args.slice_size
    )
    epochs_done = outcome.epochs_completed
    epochs_fractional = epochs_done + outcome.partial_epoch_batches / outcome.batches_per_epoch
    return {
        "tool": "pykeen",
        "version": get_version(),
        "dataset": args.dataset.resolve().name,
        "model": args.model,
        "dim": args.dim,
        "epochs_completed": epochs_done,
        "batch_size": args.batch_size,
        "optimizer": args.optimizer,
        "lr": args.lr,
        "train_seconds": round(outcome.seconds, 3),
        "eval_seconds": round(eval_seconds, 3),
        **{name: round(value, 6) for name, value in metrics.items()},
        "test_triples_evaluated": int(eval_triples.shape[0]),
        # extra context, not part of the shared schema
        "seconds_per_epoch": (
            round(outcome.seconds / epochs_fractional, 3) if epochs_fractional else None
        ),
        "epochs_requested": args.epochs,
        "epochs_fractional": round(epochs_fractional, 4),
        "partial_epoch_batches": outcome.partial_epoch_batches,
        "batches_per_epoch": outcome.batches_per_epoch,
        "time_budget": args.time_budget,
        "budget_check": args.budget_check,
        "stopped_by_time_budget": outcome.stopped_by_budget,
        "final_epoch_loss": outcome.final_loss,
        "regularizer": args.regularizer,
        "reg_weight": args.reg_weight,
        "seed": args.seed,
        "init_std": args.init_std,
        "keep_constrainers": args.keep_constrainers,
        "training_loop": args.training_loop,
        "loss": "cross_entropy",
        "rank_type": "realistic",
        "side": "both",
        "filtered": True,
        "valid_triples_dropped": splits.valid_dropped,
        "test_triples_dropped": splits.test_dropped,
        "num_entities": splits.training.num_entities,
        "num_relations": splits.training.num_relations,
        "torch_version": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "device": "cpu",
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point.

    :param argv: the arguments (without the program name); ``None`` reads ``sys.argv``.
    :returns: the process exit status.
    """
    args = parse_args(argv)
    quiet_pykeen()
    record = run(args)
    text = json.dumps(record, indent=2)
    print(text)
    args.json_out.parent.mkdir(parents=True, exist_ok=True)
    args.json_out.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
