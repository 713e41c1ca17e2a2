"""What ``kgweave serve`` does before it listens: graph, first model, loaded and warm."""

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
    plane.graph_health.start()  # serve watches the graph (and owns the embedded one)
    if plane.versions.load_active() is None:
        log.info("no model yet: training the first one on a snapshot of the graph")
        out = settings.jobs_dir / "bootstrap" / "model"
        shutil.rmtree(out, ignore_errors=True)

        def report(event: dict[str, Any]) -> None:
            if "phase" in event and "epoch" not in event:
                log.info("first model: %s", event["phase"])

        run_training(
            {"config": {"epochs": settings.bootstrap_epochs}, "dataset": ""},
            out, settings, report, progress=progress,
        )  # fmt: skip
        version = plane.versions.registry.register(out).version
        plane.versions.activate(version)
    return plane
