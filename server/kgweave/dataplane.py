"""The data plane: everything kgweave serves, callable in-process, under every face.

The gRPC servicers, the HTTP/JSON gateway, the Cypher plugin (through gRPC) and the CLI all
call one :class:`DataPlane`, which is made of

- :attr:`DataPlane.versions`: the registry, the served version, activation and hot swap
  (:mod:`kgweave.serving.versions`);
- :attr:`DataPlane.queries`: link prediction, scoring, entities, search, text and completion
  (:mod:`kgweave.serving.queries`);
- :attr:`DataPlane.jobs`: training jobs in worker processes (:mod:`kgweave.serving.jobs`);
- :attr:`DataPlane.changes`: the change pipeline, from graph changes to retraining
  (:mod:`kgweave.changes.pipeline`).

Layering (each imports only what is to its left): models, training, evaluation, artifact,
engine, serving, changes, dataplane, api / cli.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from kgweave import __version__
from kgweave.changes.pipeline import ChangePipeline, WriteResult
from kgweave.changes.retrain import ServingSide
from kgweave.serving import placement
from kgweave.serving.batcher import MicroBatcher
from kgweave.serving.graph_health import GraphHealth
from kgweave.serving.jobs import Job, JobManager
from kgweave.serving.metrics import ServiceMetrics
from kgweave.serving.queries import QueryPlane
from kgweave.serving.versions import ModelVersions, check_policy
from kgweave.serving.writeback import WriteBackOnActivate
from kgweave.settings import Settings

if TYPE_CHECKING:
    from kgweave.graph.store import GraphStore


class DataPlane:
    """Everything ``kgweave serve`` does, callable in-process."""

    def __init__(
        self,
        settings: Settings,
        graph_backend: str = "",
        graph_uri: str = "",
        owns_jobs: bool = True,
    ) -> None:
        self.settings = settings
        placement.configure(settings.background_cpu_set)  # where its background threads run
        self.metrics = ServiceMetrics()
        self.versions = ModelVersions(settings, self.metrics)
        self.batcher = MicroBatcher(
            max_batch=settings.batch_max_size,
            max_wait_s=settings.batch_max_wait_ms / 1000,
            max_queue=settings.queue_max,
            on_batch=self.metrics.batch_size.observe,
        )
        self.queries = QueryPlane(settings, self.versions, self.batcher, self.graph_store)
        self.jobs = JobManager(
            settings,
            lambda folder, _job, policy: self.versions.register(folder, policy),
            recover=owns_jobs,
        )
        self.jobs.on_change = self._job_changed
        self.changes = ChangePipeline(
            settings, ServingSide(self.versions, self.queries, self.jobs, self.start_training)
        )
        self.graph_backend = graph_backend
        self.graph_uri = graph_uri
        #: the graph database's state; watched (and the embedded one restarted) under serve
        self.graph_health = GraphHealth(settings)
        self.started_at = time.monotonic()
        #: the gRPC front end serving this plane ("native", "python"; "" when none)
        self.frontend = ""
        #: this process started the embedded graph server (and stops it on shutdown)
        self.owns_embedded_graph = False
        self._store: GraphStore | None = None
        self._store_lock = threading.Lock()
        self.writeback: WriteBackOnActivate | None = None
        if settings.writeback_on_activate:
            self.writeback = WriteBackOnActivate(self.graph_store, settings.writeback_links)
            self.versions.after_activate.append(self.writeback.activated)

    @classmethod
    def for_folder(cls, folder: Path, settings: Settings) -> DataPlane:
        """A plane serving one model folder (``kgweave train --out``'s) as it is, without a
        registry: what the CLI's local commands open."""
        plane = cls(settings, owns_jobs=False)  # a server may own the jobs folder
        plane.versions.serve_folder(folder)
        return plane

    @property
    def ready(self) -> bool:
        """A model is loaded and warmed up."""
        return self.versions.ready

    def graph_store(self) -> GraphStore:
        """The configured graph (opened on first use)."""
        with self._store_lock:
            if self._store is None:
                from kgweave.graph.connect import open_store

                self._store = open_store(self.settings.graph_uri, self.settings)
            return self._store

    # ---- training and registration
    def start_training(
        self,
        config: dict[str, Any],
        dataset: str = "",
        policy: str | None = None,
        background: bool = False,
    ) -> Job:
        """Start a training job; its model is registered and activated by ``policy``
        (``background``: its worker at a lowered OS priority)."""
        policy = check_policy(policy or self.settings.activation_policy)
        job = self.jobs.start(config, dataset, policy, background=background)
        self.metrics.jobs_running.set(self.jobs.active_count())
        return job

    def register_model(self, folder: Path, policy: str | None = None) -> dict[str, Any]:
        """Register a copy of the model folder ``folder`` (trained locally, say) as a new
        version and apply ``policy`` (default: the server's). Returns the version's summary
        with ``activated`` and ``message``."""
        from kgweave.serving.registry import stage_copy

        staged = stage_copy(folder, self.settings.jobs_dir)
        try:
            version, activated, why = self.versions.register(
                staged, policy or self.settings.activation_policy
            )
        finally:
            shutil.rmtree(staged.parent, ignore_errors=True)
        summary = self.versions.registry.get(version).summary(active=activated)
        return summary | {"activated": activated, "message": why}

    def write_facts(
        self,
        added: list[tuple[str, str, str]],
        removed: list[tuple[str, str, str]],
        entities: list[tuple[str, str | None, str | None]],
        deleted: list[str],
        wait_s: float = 0.0,
    ) -> WriteResult:
        """Write to the graph and the change log in one step, then wait until served (``wait_s``
        0: up to 10 s; negative: not at all). See :meth:`ChangePipeline.write`."""
        wait = 10.0 if wait_s == 0 else max(wait_s, 0.0)
        return self.changes.write(self.graph_store(), added, removed, entities, deleted, wait)

    def _job_changed(self, job: Job) -> None:
        if job.state.final:
            self.metrics.jobs.labels(state=job.state.value).inc()
        self.metrics.jobs_running.set(self.jobs.active_count())

    # ---- status and lifecycle
    def status(self) -> dict[str, Any]:
        """What ``kgweave status`` reports, as plain data."""
        device = self.versions.device
        device_bytes = 0
        if device.type == "cuda":
            device_bytes = int(torch.cuda.memory_allocated(device))
        return {
            "active_model": self.versions.active_summary(),
            "graph_backend": self.graph_backend,
            "graph_uri": self.graph_uri,
            "device": str(device),
            "process_memory_bytes": _rss_bytes(),
            "device_memory_bytes": device_bytes,
            "uptime_s": time.monotonic() - self.started_at,
            "ready": self.ready,
            "kgweave_version": __version__,
            "active_jobs": self.jobs.active_count(),
            "frontend": self.frontend,
            "changes": self.changes.status(),
        }

    def close(self) -> None:
        """Stop the change pipeline, the write-back, the jobs and the batcher."""
        self.changes.close()
        if self.writeback is not None:
            self.writeback.close()
        self.jobs.shutdown()
        self.batcher.close()
        self.graph_health.stop()


def _rss_bytes() -> int:
    """Resident set size of this process (Linux /proc; 0 where unknown)."""
    try:
        with open(f"/proc/{os.getpid()}/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0
