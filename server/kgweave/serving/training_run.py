"""One training run of the service: snapshot (or dataset), train, evaluate, write an artifact.

:func:`run_training` is plain code with a progress callback; a job worker process
(:mod:`kgweave.serving.workers`) runs it through :func:`run_job` for :mod:`kgweave.serving.jobs`
(so training never blocks serving), and ``kgweave serve`` calls it in-process for the first
model.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kgweave.data.dataset import IdMap, KGDataset
from kgweave.data.split import split_triples
from kgweave.errors import FailedPreconditionError
from kgweave.settings import Settings
from kgweave.training import TrainConfig

log = logging.getLogger(__name__)

#: the artifact config's mark of a full training of the graph the server ran on its own (its
#: first model, the retrains it starts), which it may train on later (kgweave.changes.refine)
REFINABLE = "refinable"

Report = Callable[[dict[str, Any]], None]


RELATION_TEXT = "relation_text.json"


def remember_relation_text(settings: Settings, dataset: KGDataset) -> None:
    """Keep an imported dataset's relation texts and templates beside the graph, so models
    trained on graph snapshots verbalize its relations with them (merged across imports)."""
    import json

    from kgweave import atomic

    path = settings.data_dir / RELATION_TEXT
    known = json.loads(path.read_text()) if path.is_file() else {}
    texts = {**known.get("texts", {}), **dataset.relation_texts}
    templates = {**known.get("templates", {}), **dataset.relation_templates}
    atomic.write_json(path, {"texts": texts, "templates": templates})


def graph_dataset(settings: Settings, seed: int = 0) -> KGDataset:
    """A consistent snapshot of the configured graph as a dataset with a seeded split.

    Entity ids are stable across snapshots (``data_dir/graph-ids.json``).
    """
    from kgweave.graph.connect import open_store
    from kgweave.graph.sync import export_snapshot

    store = open_store(settings.graph_uri, settings, start=False)
    snapshot = export_snapshot(store, settings.data_dir / "graph-ids.json")
    if len(snapshot.triples) == 0:
        raise FailedPreconditionError(
            "the graph has no triples to train on: import some first (kgweave import demo)"
        )
    splits = _fixed_split(settings, snapshot.triples, snapshot.entities.labels,
                          snapshot.relations.labels)  # fmt: skip
    if splits is None:
        splits = split_triples(
            snapshot.triples, len(snapshot.entities), len(snapshot.relations), seed=seed
        )
        # the first version of this graph: its validation split becomes the fixed set
        from kgweave.serving.validation import make_fixed

        e, r = snapshot.entities.labels, snapshot.relations.labels
        valid = [(e[h], r[p], e[t]) for h, p, t in splits["valid"].tolist()]
        make_fixed(settings, valid, "the first graph snapshot trained on", seed=seed)
    digest = hashlib.sha256(snapshot.triples.numpy().tobytes())
    digest.update("\n".join(snapshot.entities.labels).encode())
    relation_text: dict[str, Any] = {}
    if (settings.data_dir / RELATION_TEXT).is_file():
        import json

        relation_text = json.loads((settings.data_dir / RELATION_TEXT).read_text())
    relations = set(snapshot.relations.labels)
    import torch

    return KGDataset(
        name="graph",
        entities=IdMap(snapshot.entities.labels),
        relations=IdMap(snapshot.relations.labels),
        splits=splits,
        fingerprint=digest.hexdigest(),
        entity_names=snapshot.names,
        entity_descriptions=snapshot.descriptions,
        relation_texts={r: t for r, t in relation_text.get("texts", {}).items() if r in relations},
        relation_templates={
            r: t for r, t in relation_text.get("templates", {}).items() if r in relations
        },
        # facts of the graph all the same: known to the version, though not trained on
        known_held_out=torch.cat((splits["valid"], splits["test"])),
    )


def _fixed_split(
    settings: Settings, triples: Any, entities: list[str], relations: list[str]
) -> dict[str, Any] | None:
    """Splits that hold out exactly the graph's fixed validation set
    (:mod:`kgweave.serving.validation`) and train on every other fact; None when the graph
    has no fixed set yet (the first version's seeded split then makes it)."""
    import torch

    from kgweave.serving.validation import load_fixed

    fixed = load_fixed(settings)
    if fixed is None:
        return None
    e = {label: i for i, label in enumerate(entities)}
    r = {label: i for i, label in enumerate(relations)}
    wanted = {(e[h], r[p], e[t]) for h, p, t in fixed.triples if h in e and p in r and t in e}
    held = torch.tensor([tuple(row) in wanted for row in triples.tolist()], dtype=torch.bool)
    if not bool(held.any()):
        return None
    return {
        "train": triples[~held],
        "valid": triples[held],
        "test": torch.zeros(0, 3, dtype=torch.long),
    }


def run_training(
    spec: dict[str, Any],
    out: Path,
    settings: Settings,
    report: Report,
    should_stop: Callable[[], bool] | None = None,
    progress: bool = False,
) -> dict[str, Any] | None:
    """Train as ``spec`` says and write the artifact to ``out``.

    ``spec``: ``{"config": TrainConfig fields, "dataset": name/path or "" for the graph}``;
    ``"bootstrap"`` or ``"background"`` true: the server's own training of the graph
    (:mod:`kgweave.changes.refine` goes on with it when its time budget cuts it short).
    Returns the metrics, or None when ``should_stop`` ended the run (nothing is written).
    """
    from kgweave.engine import ArtifactOutput, TrainingCancelledError, open_dataset, train_model

    raw = dict(spec.get("config", {}))
    joint = bool(raw.pop("joint", False))
    tuning = raw.pop("tuning", None)
    config = TrainConfig(**raw)
    report({"phase": "snapshot", "epochs": config.epochs})
    from kgweave.serving.validation import load_fixed

    before = None if spec.get("dataset") else load_fixed(settings)
    dataset = (
        open_dataset(spec["dataset"], settings)
        if spec.get("dataset")
        else (graph_dataset(settings, seed=config.seed))
    )
    # the set its validation split holds out: the graph's, or the one the first training on
    # the graph has just made of its split (so later versions are judged against it too)
    fixed = None if spec.get("dataset") else (before or load_fixed(settings))
    if tuning is not None:
        return run_search_job(tuning, raw, dataset, out, settings, report, should_stop)
    from kgweave.tuning.recipes import recipe_for

    # settings the job leaves unset come from the graph's recipe, as for kgweave train
    chosen = recipe_for(dataset.train, dataset.num_entities, dataset.num_relations)
    config = TrainConfig(**{**chosen.settings, **raw})
    extra: dict[str, Any] = {"source": spec.get("dataset") or "graph", "recipe": chosen.to_dict()}
    if not spec.get("dataset") and (spec.get("bootstrap") or spec.get("background")):
        extra[REFINABLE] = True  # the server's own: trained on when its budget cut it short
    if fixed is not None and load_fixed(settings) == fixed:
        # its validation split is the graph's fixed set: judged on it against the active one
        extra["fixed_valid"] = {
            "fingerprint": fixed.fingerprint,
            "triples": len(dataset.split("valid")),
        }
    report({"phase": "training", "epochs": config.epochs, "dataset": dataset.summary()})
    started = time.monotonic()

    def on_epoch(row: dict[str, Any]) -> None:
        per_epoch = (time.monotonic() - started) / row["epoch"]
        eta = per_epoch * (config.epochs - row["epoch"])
        if config.time_budget_s is not None:
            eta = min(eta, max(config.time_budget_s - row["seconds"], 0.0))
        report({"phase": "training", **row, "eta_s": eta})

    if joint:
        from kgweave.language.joint.config import JointConfig
        from kgweave.language.joint.pipeline import train_joint

        if should_stop is not None and should_stop():
            return None
        try:
            result_joint = train_joint(
                dataset,
                JointConfig.model_validate(
                    {"kge": config, "language_model": settings.language_model}
                ),
                out,
                settings,
                progress=progress,
                on_epoch=on_epoch,  # the KGE half's epochs (the LM's time is its own phase)
                on_phase=lambda phase: report({"phase": phase}),
                should_stop=should_stop,
                extra=extra,  # judged on the graph's fixed set as any training on the graph
                on_lm_progress=lambda row: report(
                    {
                        "loss": row["loss"],
                        "eta_s": row["eta_s"],
                        "rate": row["tokens_per_s"],
                        "rate_unit": "tokens/s",
                    }
                ),
            )
        except TrainingCancelledError:
            return None
        return dict(result_joint.metrics)
    try:
        _, metrics, _ = train_model(
            dataset,
            config,
            ArtifactOutput(out, evaluate_test=len(dataset.split("test")) > 0, extra=extra),
            settings,
            progress=progress,
            on_epoch=on_epoch,
            should_stop=should_stop,
            checkpoint=False,
            on_phase=lambda phase: report({"phase": phase}),
        )
    except TrainingCancelledError:
        return None
    return metrics


def run_search_job(
    tuning: dict[str, Any],
    fixed: dict[str, Any],
    dataset: KGDataset,
    out: Path,
    settings: Settings,
    report: Report,
    should_stop: Callable[[], bool] | None,
) -> dict[str, Any] | None:
    """A search job (``kgweave tune --remote``): trials reported as epochs, the best valid MRR
    as valid_mrr; the best trial's model is written to ``out``. None when cancelled."""
    import shutil

    from kgweave.tuning.study import default_study_name, run_tuning

    if not tuning.get("search_models"):
        fixed = {"model": "complex", **fixed}
    started, budget = time.monotonic(), tuning.get("budget_s") or None
    trials = tuning.get("trials") or None

    def on_trial(study: Any, trial: Any) -> None:
        done = len(study.trials)
        best = max((t.value for t in study.trials if t.value is not None), default=0.0)
        eta = max(budget - (time.monotonic() - started), 0.0) if budget else -1.0
        report({"phase": "tuning", "epoch": done, "epochs": trials or 0, "valid_mrr": best,
                "eta_s": eta})  # fmt: skip

    report({"phase": "tuning", "epochs": trials or 0})
    name = tuning.get("study") or default_study_name(dataset.name, fixed)
    search_out = out.parent / "search"
    summary = run_tuning(
        dataset,
        fixed,
        settings,
        name,
        search_out,
        budget_s=budget,
        trials=trials,
        trial_budget_s=tuning.get("trial_budget_s") or None,
        pruner=tuning.get("pruner") or "median",
        on_trial=on_trial,
        should_stop=should_stop,
    )
    if should_stop is not None and should_stop():
        return None
    shutil.rmtree(out, ignore_errors=True)
    (search_out / "model").rename(out)
    metrics: dict[str, Any] = {"valid": {"mrr": summary["best_valid_mrr"]}, "test": summary["test"]}
    return metrics


@dataclass(frozen=True)
class JobRun:
    """One job as its worker runs it: the worker's spec, the folder its artifact goes to, the
    server's settings, where progress goes, whether to stop (a cancellation: nothing is
    written) and whether to wrap up (end soon, keeping what was done: runners that can)."""

    spec: dict[str, Any]
    out: Path
    settings: Settings
    report: Report
    should_stop: Callable[[], bool] | None = None
    should_wrap_up: Callable[[], bool] | None = None


def run_job(run: JobRun) -> dict[str, Any] | None:
    """A job worker's run (:mod:`kgweave.serving.workers`): the spec's ``runner``
    (``"module:function"`` in kgweave, taking the :class:`JobRun`; a layer above names its
    own, e.g. the incremental update of :mod:`kgweave.changes.incremental`), else a training
    run."""
    runner = run.spec.get("runner")
    if runner:
        import importlib

        module, _, name = str(runner).partition(":")
        if not module.startswith("kgweave."):
            raise FailedPreconditionError(f"job runner {runner} is not kgweave's")
        function: Callable[[JobRun], dict[str, Any] | None]
        function = getattr(importlib.import_module(module), name)
        return function(run)
    return run_training(run.spec, run.out, run.settings, run.report, run.should_stop)
