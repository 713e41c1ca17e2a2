"""``kgweave train --seeds K``: the same settings trained with K seeds, reported as mean ± spread.

Seeds ``seed, seed + 1, ..., seed + K - 1`` each train and evaluate (validation and test) as
one ``kgweave train`` does. The artifact kept is the seed with the best validation MRR (never
chosen on test), written to ``out`` with every seed's figures in its ``config.json`` under
``seeds``; the others are discarded.
"""

from __future__ import annotations

import statistics
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from kgweave.artifact import read_config, save_artifact
from kgweave.data import KGDataset
from kgweave.engine import ArtifactOutput, train_model
from kgweave.errors import InvalidArgumentError
from kgweave.settings import Settings
from kgweave.training.config import MAX_SEED, TrainConfig
from kgweave.training.loop import TrainResult

#: the most seeds one command runs
MAX_SEEDS = 100
#: the metrics summarised over seeds
METRICS = ("mrr", "hits@1", "hits@3", "hits@10")
#: how the kept artifact is chosen
SELECTED_BY = "best validation MRR"


@dataclass
class SeedsReport:
    """Every seed's metrics, their mean ± spread, and the seed whose artifact was kept."""

    seeds: list[int]
    #: per seed: {"seed", "valid": {...}, "test": {...}, "epochs_completed", "train_seconds"}
    runs: list[dict[str, Any]]
    #: {"valid"|"test": {metric: {"mean", "sd", "min", "max"}}}
    summary: dict[str, dict[str, dict[str, float]]]
    kept_seed: int
    path: Path

    def to_dict(self) -> dict[str, Any]:
        """Every field but the folder (the caller's), and how the kept seed was chosen."""
        record = asdict(self)
        del record["path"]
        return {**record, "selected_by": SELECTED_BY}


def spread(values: list[float]) -> dict[str, float]:
    """Mean, sample standard deviation (0 for one value), min and max."""
    return {
        "mean": statistics.fmean(values),
        "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
        "min": min(values),
        "max": max(values),
    }


def summarize(runs: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    """Mean ± spread of :data:`METRICS` on each split the runs were evaluated on."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for split in ("valid", "test"):
        if all(run.get(split) for run in runs):
            out[split] = {m: spread([float(run[split][m]) for run in runs]) for m in METRICS}
    return out


def train_seeds(
    dataset: KGDataset,
    config: TrainConfig,
    seeds: int,
    out: Path,
    settings: Settings,
    progress: bool = True,
    on_seed: Callable[[dict[str, Any]], None] | None = None,
) -> SeedsReport:
    """Train ``config`` with ``seeds`` seeds from ``config.seed``; keep the best by
    validation MRR at ``out``. ``on_seed``: told each seed's figures as it ends.

    Raises:
        InvalidArgumentError: fewer than 1 or more than :data:`MAX_SEEDS` seeds, or seeds
            past the largest seed.
    """
    if not 1 <= seeds <= MAX_SEEDS:
        raise InvalidArgumentError(f"--seeds must be between 1 and {MAX_SEEDS}, not {seeds}")
    if config.seed + seeds - 1 > MAX_SEED:
        raise InvalidArgumentError(f"--seed plus --seeds must stay at most {MAX_SEED}")
    numbers = [config.seed + i for i in range(seeds)]
    runs: list[dict[str, Any]] = []
    best: tuple[float, TrainResult, dict[str, Any]] | None = None
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.seeds-", dir=out.parent) as scratch:
        for seed in numbers:
            folder = Path(scratch) / f"seed-{seed}"
            result, metrics, _ = train_model(
                dataset,
                config.model_copy(update={"seed": seed}),
                ArtifactOutput(folder),
                settings,
                progress=progress,
                checkpoint=False,
            )
            test = {k: v for k, v in metrics.get("test", {}).items() if k != "per_relation"}
            run = {
                "seed": seed,
                "valid": metrics.get("valid"),
                "test": test,
                "epochs_completed": result.epochs_completed,
                "train_seconds": round(result.train_seconds, 3),
            }
            runs.append(run)
            if on_seed is not None:
                on_seed(run)
            mrr = float((metrics.get("valid") or {}).get("mrr", -1.0))
            if best is None or mrr > best[0]:
                best = (mrr, result, read_config(folder))
        assert best is not None
        _, result, kept = best
        report = SeedsReport(numbers, runs, summarize(runs), int(result.config.seed), out)
        save_artifact(
            out,
            result.model,
            dataset,
            training=kept["training"],
            metrics=kept["metrics"],
            history=result.history,
            extra={"run": kept["run"], "seeds": report.to_dict()},
        )
    return report
