"""Transport-free operations on datasets and model folders: open a dataset, train, evaluate.

The CLI's local commands call them, and the server's training jobs and bootstrap
(``serving/training_run.py``, ``bootstrap.py``) reuse them. Each function takes plain
arguments (where a trained model goes: an :class:`ArtifactOutput`), returns plain data and
raises :mod:`kgweave.errors`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from kgweave.artifact import ModelArtifact, load_artifact, save_artifact
from kgweave.data import KGDataset, load_dataset, resolve_dataset
from kgweave.device import resolve_device
from kgweave.errors import DatasetError, echo
from kgweave.evaluation.ranking import EvaluationResult, build_filter, evaluate
from kgweave.models import KGEModel
from kgweave.settings import Settings
from kgweave.training import TrainConfig, TrainResult, train
from kgweave.training.loop import EpochCallback


def open_dataset(spec: str, settings: Settings) -> KGDataset:
    """Resolve ``spec`` (name or path) and read the dataset."""
    path = resolve_dataset(spec, settings)
    return load_dataset(path, name="demo" if spec == "demo" else None)


class TrainingCancelledError(Exception):
    """``should_stop`` ended a :func:`train_model` run: nothing was written."""


@dataclass(frozen=True)
class ArtifactOutput:
    """Where and how a finished training run is written: the artifact ``folder``, evaluated on
    test first when ``evaluate_test``, with ``extra`` config entries (e.g. its recipe)."""

    folder: Path
    evaluate_test: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def write(
        self, result: TrainResult, dataset: KGDataset, settings: Settings, progress: bool = False
    ) -> dict[str, Any]:
        """Evaluate ``result`` on test (when ``evaluate_test``) and write its artifact: the
        second half of :func:`train_model` (a search keeps its best trial's model with it).
        Returns the metrics written."""
        metrics: dict[str, Any] = {}
        if result.best_valid is not None:
            metrics["valid"] = result.best_valid.metrics
        if self.evaluate_test:
            metrics["test"] = evaluate_on(
                result.model, dataset, "test", progress=progress, prepack=settings.score_prepack
            ).to_dict()
        save_artifact(
            self.folder,
            result.model,
            dataset,
            training=result.config.model_dump(),  # with the validation sample it ended with
            metrics=metrics,
            history=result.history,
            extra={
                **self.extra,
                "run": {
                    "epochs_completed": result.epochs_completed,
                    "train_seconds": round(result.train_seconds, 3),
                    "stopped_because": result.stopped_because,
                    "device": result.device,
                },
            },
        )
        return metrics


def train_model(
    dataset: KGDataset,
    config: TrainConfig,
    output: ArtifactOutput,
    settings: Settings,
    resume: bool = False,
    progress: bool = True,
    on_epoch: EpochCallback | None = None,
    should_stop: Callable[[], bool] | None = None,
    checkpoint: bool = True,
    on_phase: Callable[[str], None] | None = None,
) -> tuple[TrainResult, dict[str, Any], Path]:
    """Train, evaluate on valid and test, and write the artifact as ``output`` says: what
    ``kgweave train`` and the server's training jobs both run.

    ``on_epoch``/``should_stop``: progress and cancellation (:func:`kgweave.training.train`);
    ``checkpoint``: a resumable checkpoint in the output folder's ``checkpoint``; ``on_phase``:
    told "evaluating" when training is done. Returns the training result, the metrics written
    to the artifact, and the artifact's folder.

    Raises:
        TrainingCancelledError: ``should_stop`` ended the run (no artifact is written).
    """
    device = resolve_device(settings.device)
    result = train(
        dataset,
        config,
        device=device,
        checkpoint_dir=output.folder / "checkpoint" if checkpoint else None,
        resume=resume,
        progress=progress,
        on_epoch=on_epoch,
        should_stop=should_stop,
    )
    if result.stopped_because == "cancelled":
        raise TrainingCancelledError
    if on_phase is not None:
        on_phase("evaluating")
    metrics = output.write(result, dataset, settings, progress=progress)
    return result, metrics, output.folder


def evaluate_on(
    model: KGEModel,
    dataset: KGDataset,
    split: str,
    progress: bool = False,
    prepack: bool = True,
) -> EvaluationResult:
    """Filtered evaluation of a model trained on ``dataset`` (same id maps); ``prepack``:
    see :func:`kgweave.evaluation.ranking.filtered_ranks` (``settings.score_prepack``)."""
    device = model.entity.weight.device
    known = build_filter(dataset.all_triples(), dataset.num_entities, dataset.num_relations)
    return evaluate(
        model,
        dataset.split(split),
        known.to(device),
        relation_labels=dataset.relations.labels,
        progress=progress,
        prepack=prepack,
    )


def align_dataset(artifact: ModelArtifact, dataset: KGDataset) -> KGDataset:
    """Re-express ``dataset`` in the artifact's id maps (refusing labels the model lacks)."""
    if (
        artifact.entities.labels == dataset.entities.labels
        and artifact.relations.labels == dataset.relations.labels
    ):
        return dataset
    missing_e = [e for e in dataset.entities.labels if e not in artifact.entities]
    missing_r = [r for r in dataset.relations.labels if r not in artifact.relations]
    if missing_e or missing_r:
        sample = (missing_e + missing_r)[:3]
        raise DatasetError(
            f"dataset {echo(dataset.name)} has {len(missing_e)} entities and {len(missing_r)} "
            f"relations the model does not know (e.g. {', '.join(map(repr, sample))})"
        )
    e_map = torch.tensor([artifact.entities.index[e] for e in dataset.entities.labels])
    r_map = torch.tensor([artifact.relations.index[r] for r in dataset.relations.labels])
    splits = {
        name: torch.stack((e_map[t[:, 0]], r_map[t[:, 1]], e_map[t[:, 2]]), dim=1)
        for name, t in dataset.splits.items()
    }
    return KGDataset(
        name=dataset.name,
        entities=artifact.entities,
        relations=artifact.relations,
        splits=splits,
        fingerprint=dataset.fingerprint,
        path=dataset.path,
    )


def evaluate_artifact(
    model_dir: Path, dataset_spec: str, split: str, settings: Settings, progress: bool = False
) -> tuple[ModelArtifact, EvaluationResult]:
    """Load a model folder and evaluate it on a dataset split."""
    artifact = load_artifact(model_dir, device=resolve_device(settings.device))
    dataset = align_dataset(artifact, open_dataset(dataset_spec, settings))
    return artifact, evaluate_on(
        artifact.model, dataset, split, progress=progress, prepack=settings.score_prepack
    )
