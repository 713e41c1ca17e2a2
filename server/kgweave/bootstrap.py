"""What ``kgweave serve`` does before it listens: graph, first model, loaded and warm
(semantic search included)."""

from __future__ import annotations

import logging
import shutil
from typing import Any

from kgweave.dataplane import DataPlane
from kgweave.serving.training_run import remember_relation_text, run_training
from kgweave.settings import Settings

log = logging.getLogger(__name__)


def describe_graph(settings: Settings) -> tuple[str, str]:
    """(backend, uri without credentials) for status reports."""
    from urllib.parse import urlparse

    if not settings.graph_uri:
        return "falkordb (embedded)", str(settings.graph_dir)
    parsed = urlparse(settings.graph_uri)
    backend = "neo4j" if parsed.scheme.startswith(("bolt", "neo4j")) else "falkordb"
    netloc = parsed.hostname or ""
    if parsed.port:
        netloc += f":{parsed.port}"
    return backend, f"{parsed.scheme}://{netloc}{parsed.path}"


def prepare_plane(settings: Settings, progress: bool = True) -> DataPlane:
    """Open the graph (importing the demo into an empty embedded one), make sure a model
    exists (training the first from a graph snapshot), and load it."""
    from kgweave.changes.diff import record_baseline
    from kgweave.engine import open_dataset
    from kgweave.graph.connect import open_store
    from kgweave.graph.embedded import EmbeddedFalkorDB
    from kgweave.graph.sync import import_dataset

    started_embedded = (
        not settings.graph_uri and EmbeddedFalkorDB(settings.graph_dir).status() is None
    )
    store = open_store(settings.graph_uri, settings)
    counts = store.counts()
    if counts["triples"] == 0 and not settings.graph_uri:
        log.info("the embedded graph is empty: importing the demo graph")
        demo = open_dataset("demo", settings)
        import_dataset(store, demo, progress=progress)
        remember_relation_text(settings, demo)
    backend, uri = describe_graph(settings)
    plane = DataPlane(settings, graph_backend=backend, graph_uri=uri)
    plane.owns_embedded_graph = started_embedded
    if settings.apply_changes:
        plane.changes.prepare_applying()  # before the first load: it serves the overlay
    plane.graph_health.start()  # serve watches the graph (and owns the embedded one)
    if plane.versions.load_active() is None:
        log.info("no model yet: training the first one on a snapshot of the graph")
        # what reaches the graph from now on without an event is the snapshot diff's to emit
        # (recorded even when no diff runs now: a watcher started later finds it)
        record_baseline(store, settings, plane.changes.event_log)
        out = settings.jobs_dir / "bootstrap" / "model"
        shutil.rmtree(out, ignore_errors=True)

        def report(event: dict[str, Any]) -> None:
            if "phase" in event and "epoch" not in event:
                log.info("first model: %s", event["phase"])

        config: dict[str, Any] = {"epochs": settings.bootstrap_epochs}
        if settings.bootstrap_budget_s > 0:
            config["time_budget_s"] = settings.bootstrap_budget_s
        spec = {"config": config, "dataset": "", "bootstrap": True}
        run_training(spec, out, settings, report, progress=progress)
        version = plane.versions.registry.register(out).version
        plane.versions.activate(version)
        trained = plane.versions.active().artifact.config
        recipe, run = trained.get("recipe", {}), trained.get("run", {})
        log.info(
            "first model %s: recipe %s (%s), %s, validation MRR %.4f",
            version,
            recipe.get("name", "?"),
            recipe.get("reason", ""),
            f"{run.get('train_seconds', 0):.0f} s of training",
            float(trained.get("metrics", {}).get("valid", {}).get("mrr", 0.0)),
        )
        if run.get("stopped_because") == "time_budget":
            then = (
                "training goes on in the background (KGWEAVE_CONTINUE_TRAINING), a version "
                "activated whenever it beats the served one"
                if settings.continue_training and settings.incremental_updates
                else "`kgweave train --remote` trains a better one beside serving"
            )
            log.warning(
                "the first model's training stopped in epoch %d of %d, at "
                "KGWEAVE_BOOTSTRAP_BUDGET_S=%gs, and is served as it is; %s",
                run.get("epochs_completed", 0),
                settings.bootstrap_epochs,
                settings.bootstrap_budget_s,
                then,
            )
    warm_semantic_search(plane)
    if settings.apply_changes:
        plane.changes.start_applying()
    return plane


def warm_semantic_search(plane: DataPlane) -> bool:
    """Load the text encoder and the active model's text index before the server reports
    ready, so the first semantic ``SearchEntities`` pays neither (where the model has entity
    text; a version activated later builds its index with the encoder already loaded).

    A failure (say, an encoder that cannot be loaded offline) is logged, not fatal: the
    server answers everything else, and semantic search reports the error itself.
    """
    from kgweave.errors import KGWeaveError

    served = plane.versions.active()
    names = [name for name in served.artifact.entity_names if name]
    if not names:
        return False
    try:
        plane.queries.semantic_search(names[0], 1)
    except (KGWeaveError, OSError) as exc:
        log.warning("semantic search not warmed up: %s", exc)
        return False
    log.info("semantic search warm: encoder %s", plane.settings.text_encoder)
    return True
