"""The training loop: read it top to bottom.

``train()`` builds the model and regime, then per epoch: the steps, then "once in a while"
blocks (validation, early stopping, checkpoint). The best model by validation MRR is kept.
The learning rate of each step comes from :mod:`kgweave.training.schedule`, the validation
triples from :mod:`kgweave.training.validation`, the precision and the memory check from
:mod:`kgweave.training.hardware`.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from kgweave.data.dataset import KGDataset, with_reciprocals
from kgweave.device import resolve_device
from kgweave.errors import ArtifactError, DivergedError
from kgweave.evaluation.ranking import EvaluationResult, build_filter, evaluate
from kgweave.models import KGEModel, model_class
from kgweave.training.checkpoint import CheckpointState, load_checkpoint, save_checkpoint
from kgweave.training.config import TrainConfig
from kgweave.training.hardware import bf16_autocast, check_memory, use_bf16_autocast
from kgweave.training.regimes import make_regime
from kgweave.training.schedule import LearningRate
from kgweave.training.validation import ValidationSet, validation_triples

__all__ = ["TrainResult", "TrainingHooks", "train", "validation_triples"]

log = logging.getLogger(__name__)

#: called after every epoch with that epoch's history row
EpochCallback = Callable[[dict[str, Any]], None]


class TrainingHooks:
    """What a caller adds to the one training loop (joint training's text side, a tuner's
    pruner): by default nothing. Subclasses override what they need:

    - :meth:`build`: change the fresh model, add trained modules;
    - :meth:`extra_loss`: a loss added to every step;
    - :meth:`on_evaluation`: ``on_evaluation(epoch: int, metrics: dict[str, float]) -> bool``,
      called after every validation; returning False stops the run (``stopped_because``
      ``"pruned"``; the best model so far is kept and returned).
    """

    #: the name of the extra loss in the history rows (``align_loss``, say)
    extra_loss_name = "extra_loss"

    def build(self, model: KGEModel) -> list[torch.nn.Module]:
        """Change the fresh model if needed (wrap its entity table, say) and return extra
        modules trained with it: their trainable parameters join the optimizer and their
        state is kept with the best model."""
        return []

    def extra_loss(self, model: KGEModel, generator: torch.Generator) -> torch.Tensor | None:
        """A loss added to every step's regime loss (already weighted), or None."""
        return None

    def on_evaluation(self, epoch: int, metrics: dict[str, float]) -> bool:
        """After each validation: ``epoch`` (1-based) and the validation metrics of the model
        of that epoch (``mrr``, ``hits@1``, ``hits@3``, ``hits@10``, ``mean_rank``,
        ``count``), measured on the run's validation triples (the whole split or a sample
        within ±0.005 MRR of it). Return False to stop training now (a pruner)."""
        return True


@dataclass
class TrainResult:
    """A trained model (best by validation MRR) and how it got there."""

    model: KGEModel
    config: TrainConfig
    history: list[dict[str, Any]]
    epochs_completed: int
    train_seconds: float
    best_valid: EvaluationResult | None
    stopped_because: str
    device: str
    extra: dict[str, Any] = field(default_factory=dict)


def _optimizer(config: TrainConfig, module: torch.nn.Module) -> torch.optim.Optimizer:
    params = [p for p in module.parameters() if p.requires_grad]
    if config.optimizer == "adagrad":
        return torch.optim.Adagrad(params, lr=config.lr)
    return torch.optim.Adam(params, lr=config.lr)


def _copy_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def stop_reason(stopped_because: str, config: TrainConfig) -> str:
    """Why a run ended before its last epoch, in words (for the progress bar)."""
    if stopped_because == "early_stopping":
        plural = "s" if config.patience != 1 else ""
        return f"no better validation MRR in {config.patience} evaluation{plural}"
    if stopped_because == "time_budget":
        return f"time budget of {config.time_budget_s:g}s spent"
    if stopped_because == "diverged":
        return "the loss diverged"
    if stopped_because == "pruned":
        return "a training hook stopped it (pruned)"
    return stopped_because


def train(
    dataset: KGDataset,
    config: TrainConfig,
    device: str | torch.device = "auto",
    checkpoint_dir: Path | None = None,
    resume: bool = False,
    progress: bool = True,
    on_epoch: EpochCallback | None = None,
    should_stop: Callable[[], bool] | None = None,
    hooks: TrainingHooks | None = None,
) -> TrainResult:
    """Train ``config.model`` on ``dataset``'s training split.

    Args:
        checkpoint_dir: where to write a resumable checkpoint after each validation.
        resume: continue from the checkpoint in ``checkpoint_dir``.
        on_epoch: called with each epoch's history row (progress streaming).
        should_stop: polled every step; ``True`` ends training early (cancellation).
        hooks: extra modules, losses and a per-validation callback
            (:class:`TrainingHooks`); the modules are in ``result.extra["modules"]``.

    ``result.config`` is ``config`` with the validation sample it ended with (a sample too
    small for ±0.005 MRR grows: :mod:`kgweave.training.validation`); ``result.extra``
    holds ``validation`` (what was validated on) and ``seed``.
    """
    hooks = hooks or TrainingHooks()
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)

    num_relations = 2 * dataset.num_relations
    check_memory(config, dataset.num_entities, num_relations, dev)
    model = model_class(config.model)(dataset.num_entities, num_relations, config.dim)
    model.initialize(config.init, config.init_scale)
    model.set_dropout(config.entity_dropout, config.relation_dropout)
    extras = hooks.build(model)
    model.to(dev)
    trained = torch.nn.ModuleList([model, *extras]).to(dev)  # one optimizer, train/eval mode
    optimizer = _optimizer(config, trained)

    train_triples = with_reciprocals(dataset.train, dataset.num_relations).to(dev)
    regime = make_regime(config, train_triples, dataset.num_entities, num_relations)
    steps_per_epoch = math.ceil(regime.epoch_size / config.batch_size)
    rate = LearningRate(config, optimizer, steps_per_epoch)
    known = build_filter(dataset.all_triples(), dataset.num_entities, dataset.num_relations).to(dev)
    validation = ValidationSet(dataset, config)
    use_bf16 = use_bf16_autocast(config, dev, dataset.num_entities)

    history: list[dict[str, Any]] = []
    best_mrr, bad_evals, start_epoch, elapsed_before = -1.0, 0, 0, 0.0
    best_state: dict[str, torch.Tensor] | None = None
    best_extras: list[dict[str, torch.Tensor]] = [_copy_state(m) for m in extras]
    best_valid: EvaluationResult | None = None
    if resume and checkpoint_dir is not None and (checkpoint_dir / "checkpoint.json").is_file():
        model_state, best_state, opt_state, rng, saved = load_checkpoint(checkpoint_dir)
        changed = [
            key
            for key in ("model", "dim", "optimizer")
            if saved.config.get(key) != getattr(config, key)
        ]
        if changed:
            raise ArtifactError(
                f"cannot resume from {checkpoint_dir}: it was trained with different "
                + ", ".join(f"{k} ({saved.config.get(k)} vs {getattr(config, k)})" for k in changed)
            )
        model.load_state_dict(model_state)
        optimizer.load_state_dict(opt_state)
        torch.set_rng_state(rng)
        generator.manual_seed(config.seed + saved.epoch)
        history, best_mrr, bad_evals = saved.history, saved.best_mrr, saved.bad_evals
        start_epoch, elapsed_before = saved.epoch, saved.elapsed_s
        rate.restore(saved.extra.get("schedule", {}), start_epoch, steps_per_epoch)
        validation.size = int(saved.extra.get("valid_size", validation.size))
    log.info("%s", validation.describe())

    bar = tqdm(
        total=config.epochs * regime.triples_per_epoch,
        initial=start_epoch * regime.triples_per_epoch,
        unit="triples",
        unit_scale=True,
        desc=f"train {config.model}",
        disable=not progress,
        dynamic_ncols=True,
    )
    started = time.perf_counter()
    eval_seconds = 0.0  # validation time, excluded from the training time and the budget
    stopped_because = "epochs"
    epoch = start_epoch
    for epoch in range(start_epoch + 1, config.epochs + 1):
        # ---- the steps of one epoch
        trained.train()
        loss_sum = torch.zeros(2, device=dev)  # the regime's loss, the hooks' extra loss
        steps = 0
        out_of_time = False
        for batch_ids in regime.batches(generator):
            optimizer.zero_grad(set_to_none=True)
            rate.step()
            with bf16_autocast(dev, use_bf16):
                loss, covered = regime.batch_loss(model, batch_ids)
                extra = hooks.extra_loss(model, generator)
            total = loss if extra is None else loss + extra
            total.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
            loss_sum += torch.stack(
                (loss.detach().float(), (extra if extra is not None else loss * 0).detach().float())
            )
            steps += 1
            bar.update(covered)
            elapsed = elapsed_before + time.perf_counter() - started - eval_seconds
            if config.time_budget_s is not None and elapsed >= config.time_budget_s:
                out_of_time = True
                break
            if should_stop is not None and should_stop():
                stopped_because = "cancelled"
                break
        mean_loss, mean_extra = (loss_sum / max(steps, 1)).tolist()  # sync point: CPU waits
        if not math.isfinite(mean_loss):
            bar.close()
            raise DivergedError(
                f"training diverged at epoch {epoch}: the loss is {mean_loss} (lower the "
                f"learning rate, now {config.lr:g}); the model is not saved"
            )
        rate.end_epoch(epoch)
        row: dict[str, Any] = {
            "epoch": epoch,
            "loss": mean_loss,
            "lr": rate.rate,  # of the next step: after the cosine decay, before the plateau's
            "seconds": elapsed_before + time.perf_counter() - started - eval_seconds,
        }
        if extras:
            row[hooks.extra_loss_name] = mean_extra

        # ---- once in a while: validation, early stopping, checkpoint
        last = epoch == config.epochs or out_of_time or stopped_because in ("cancelled", "diverged")
        if epoch % config.eval_every == 0 or last:
            eval_started = time.perf_counter()
            trained.eval()  # no dropout while validating
            result = evaluate(model, validation.triples, known, batch_size=config.eval_batch_size)
            while validation.grow_if_needed(_ranks(result)):  # a sample too small to trust
                log.info("%s", validation.describe())
                result = evaluate(
                    model, validation.triples, known, batch_size=config.eval_batch_size
                )
                if best_state is not None:  # the best so far, re-measured on the new sample
                    best_valid = _evaluate_state(model, best_state, validation, known, config)
                    best_mrr = best_valid.metrics["mrr"]
            eval_seconds += time.perf_counter() - eval_started
            mrr = result.metrics["mrr"]
            row["valid_mrr"] = mrr
            row["valid_hits@10"] = result.metrics["hits@10"]
            if mrr > best_mrr:
                best_mrr, bad_evals, best_valid = mrr, 0, result
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                best_extras = [_copy_state(m) for m in extras]
            else:
                bad_evals += 1
            rate.evaluated(mrr)
            bar.set_postfix(loss=f"{mean_loss:.4f}", valid_mrr=f"{mrr:.4f}", refresh=False)
            if config.patience and bad_evals >= config.patience:
                stopped_because = "early_stopping"
            if not hooks.on_evaluation(epoch, dict(result.metrics)):
                stopped_because = "pruned"
        else:
            bar.set_postfix(loss=f"{mean_loss:.4f}", refresh=False)
        history.append(row)
        if on_epoch is not None:
            on_epoch(row)
        if checkpoint_dir is not None and "valid_mrr" in row:
            save_checkpoint(
                checkpoint_dir,
                model,
                best_state,
                optimizer,
                CheckpointState(
                    epoch=epoch,
                    history=history,
                    best_mrr=best_mrr,
                    bad_evals=bad_evals,
                    config=config.model_dump(),
                    elapsed_s=elapsed_before + time.perf_counter() - started - eval_seconds,
                    extra={"schedule": rate.state(), "valid_size": validation.size},
                ),
            )
        if out_of_time:
            stopped_because = "time_budget"
        if stopped_because != "epochs":
            break
    if stopped_because != "epochs":  # say so on the bar, which would end short of 100%
        why = stop_reason(stopped_because, config)
        bar.set_postfix_str(f"{bar.postfix}, stopped early at epoch {epoch}: {why}", refresh=True)
    bar.close()

    if best_state is not None:
        model.load_state_dict(best_state)
        for module, state in zip(extras, best_extras, strict=True):
            module.load_state_dict(state)
    trained.eval()
    if best_valid is None and best_state is not None:  # resumed, and no better model since
        best_valid = evaluate(model, validation.triples, known, batch_size=config.eval_batch_size)
    if validation.requested is not None:  # the sample it ended with (grown, maybe whole)
        config = config.model_copy(
            update={"valid_sample": validation.size if validation.sampled else None}
        )
    return TrainResult(
        model=model,
        config=config,
        history=history,
        epochs_completed=epoch,
        train_seconds=elapsed_before + time.perf_counter() - started - eval_seconds,
        best_valid=best_valid,
        stopped_because=stopped_because,
        device=str(dev),
        extra={
            "valid_eval_seconds": eval_seconds,
            "bf16": use_bf16,
            "modules": extras,
            "validation": {**validation.summary(), "described": validation.describe()},
            "seed": config.seed,
        },
    )


def _ranks(result: EvaluationResult) -> torch.Tensor:
    assert result.ranks is not None
    return result.ranks


def _evaluate_state(
    model: KGEModel,
    state: dict[str, torch.Tensor],
    validation: ValidationSet,
    known: Any,
    config: TrainConfig,
) -> EvaluationResult:
    """Validate the model with weights ``state``, then give it its own weights back."""
    current = _copy_state(model)
    model.load_state_dict(state)
    try:
        return evaluate(model, validation.triples, known, batch_size=config.eval_batch_size)
    finally:
        model.load_state_dict(current)
