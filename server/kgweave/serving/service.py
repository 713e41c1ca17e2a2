"""The serving engine: the active model, micro-batched queries, versions and training jobs.

Transport-free: the gRPC servicers, the HTTP side and the CLI call these methods and map
:mod:`kgweave.errors` to their own status codes.

Hot swap: the active model is one reference to an immutable :class:`ServedModel`. A request
reads it once, resolves its names and is scored against that object, so it finishes on the
version it started on even if another version is activated meanwhile; the old version is freed
when its last request is done.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from kgweave import __version__
from kgweave.device import resolve_device
from kgweave.errors import FailedPreconditionError, InvalidArgumentError, KGWeaveError
from kgweave.predict import MAX_K, Prediction, Query
from kgweave.serving.activation import POLICIES, decide
from kgweave.serving.batcher import AnyFuture, MicroBatcher, PredictJob
from kgweave.serving.jobs import Job, JobManager
from kgweave.serving.metrics import ServiceMetrics
from kgweave.serving.registry import ModelRegistry, ModelVersion
from kgweave.serving.served import MAX_TRIPLES, EntityInfo, ServedModel
from kgweave.settings import Settings

if TYPE_CHECKING:
    from kgweave.changes import EventLog
    from kgweave.graph.store import GraphStore
    from kgweave.language.encoder import TextEncoder
    from kgweave.serving.retrain import RetrainWatcher

log = logging.getLogger(__name__)


@dataclass
class LinkRequest:
    """One link-prediction call: its queries and options."""

    queries: list[Query]
    k: int = 10
    filter_known: bool = False
    deadline: float | None = None  # time.monotonic() value


@dataclass
class LinkBatch:
    """Link-prediction requests queued as one job (:meth:`KGService.submit_links`)."""

    version: str
    served: ServedModel
    #: per request: its rows ``(start, stop)`` in the job's answer, or its error
    spans: list[tuple[int, int] | KGWeaveError]
    #: the :class:`TopK` of all valid rows; None when no request was valid
    future: AnyFuture | None


class KGService:
    """Everything ``kgweave serve`` does, callable in-process."""

    def __init__(self, settings: Settings, graph_backend: str = "", graph_uri: str = "") -> None:
        self.settings = settings
        self.device = resolve_device(settings.device)
        self.registry = ModelRegistry(settings.models_dir)
        self.metrics = ServiceMetrics()
        self.batcher = MicroBatcher(
            max_batch=settings.batch_max_size,
            max_wait_s=settings.batch_max_wait_ms / 1000,
            max_queue=settings.queue_max,
            on_batch=self.metrics.batch_size.observe,
        )
        self.jobs = JobManager(settings, self._register_job_model)
        self.jobs.on_change = self._job_changed
        self.graph_backend = graph_backend
        self.graph_uri = graph_uri
        self.started_at = time.monotonic()
        self._active: ServedModel | None = None
        self._swap_lock = threading.Lock()
        #: called with the version after each activation (the gRPC health status follows it)
        self.on_activate: Callable[[str], None] | None = None
        #: the gRPC front end serving this engine ("native", "python"; "" when none)
        self.frontend = ""
        #: this process started the embedded graph server (and stops it on shutdown)
        self.owns_embedded_graph = False
        self._event_log: EventLog | None = None
        self._encoder: TextEncoder | None = None
        self._encoder_lock = threading.Lock()
        self._cold_lock = threading.Lock()
        self._cdc_stop: threading.Event | None = None
        self._store: GraphStore | None = None
        #: retraining from change events, when enabled (kgweave.serving.retrain)
        self.retrainer: RetrainWatcher | None = None

    # ---- lifecycle
    def load_active(self) -> ServedModel | None:
        """Serve the registry's active version (or its last known good one: see
        :meth:`ModelRegistry.choose_active`)."""
        version = self.registry.choose_active()
        if version is None:
            return None
        self.activate(version)
        return self._active

    @property
    def event_log(self) -> EventLog:
        """The durable change-event log (``data_dir/changes``), opened once per process."""
        from kgweave.changes import EventLog

        with self._swap_lock:
            if self._event_log is None:
                self._event_log = EventLog(self.settings.data_dir / "changes")
            return self._event_log

    def start_retraining(self, store_factory: Callable[[], GraphStore] | None) -> RetrainWatcher:
        """Watch graph changes and retrain in batches (settings ``retrain_*``)."""
        from kgweave.serving.retrain import RetrainWatcher

        self.retrainer = RetrainWatcher(
            self,
            self.event_log,
            self.settings.retrain_min_events,
            self.settings.retrain_interval_s,
            store_factory,
        )
        self.retrainer.start()
        return self.retrainer

    def start_cdc(self, store: GraphStore) -> None:
        """Poll Neo4j change data capture into the event log on a daemon thread."""
        from kgweave.graph.neo4j_cdc import Neo4jCdcPoller
        from kgweave.graph.neo4j_store import Neo4jStore

        if not isinstance(store, Neo4jStore):
            raise InvalidArgumentError("change data capture needs a Neo4j graph (bolt:// URI)")
        poller = Neo4jCdcPoller(
            lambda cypher, params: [dict(r) for r in store.read(cypher, params)],
            self.event_log,
            self.settings.data_dir / "neo4j-cdc.json",
            mapping=store.mapping,
        )
        self._cdc_stop = threading.Event()
        threading.Thread(
            target=poller.run, args=(self._cdc_stop,), name="kgweave-cdc", daemon=True
        ).start()

    @property
    def ready(self) -> bool:
        """A model is loaded and warmed up."""
        return self._active is not None

    def close(self) -> None:
        if self._cdc_stop is not None:
            self._cdc_stop.set()
        if self.retrainer is not None:
            self.retrainer.stop()
        self.jobs.shutdown()
        self.batcher.close()
        if self._event_log is not None:
            self._event_log.close()

    # ---- versions
    def activate(self, version: str) -> dict[str, Any]:
        """Load ``version``, warm it up, then swap it in atomically."""
        item = self.registry.get(version)
        with self._swap_lock:
            current = self._active
            if current is None or current.base_version != version or current.cold_count:
                served = ServedModel.load(
                    version,
                    item.path,
                    self.device,
                    self.settings.score_precision,
                    self.settings.text_fusion,
                    self.settings.score_prepack,
                )
                self._active = served  # the swap: one reference assignment
            self.registry.set_active(version)
        self.metrics.set_active(version)
        self.metrics.swaps.inc()
        log.info("model %s active", version)
        if self.on_activate is not None:
            self.on_activate(version)
        return item.summary(active=True)

    def active(self) -> ServedModel:
        served = self._active
        if served is None:
            raise FailedPreconditionError(
                "no model is active yet: train one (kgweave train --remote) or activate a "
                "registered version (kgweave models activate VERSION)"
            )
        return served

    def list_models(self) -> tuple[list[dict[str, Any]], str]:
        active = self._active.base_version if self._active else ""
        return [v.summary(active=v.version == active) for v in self.registry.versions()], active

    # ---- queries
    def submit_links(
        self,
        requests: list[LinkRequest],
        loop: asyncio.AbstractEventLoop | None = None,
        inline: bool = False,
    ) -> LinkBatch:
        """Validate and resolve link-prediction requests against the active version and queue
        the valid ones as one job: one scoring pass for a burst of calls.

        Each request's outcome is its rows in the job's answer or its own error (a bad
        request fails alone). With ``loop`` the future is an asyncio future of that loop;
        otherwise a thread future. With ``inline`` a job of at most ``batch_max_size`` queries
        is scored in the calling thread before this returns (the native front end's bridge
        gathers concurrent calls itself; handing them to the batcher's thread would only add
        a thread switch and contention for the GIL). Raises for the whole batch when there
        is no model or the queue is full.
        """
        served = self.active()
        spans: list[tuple[int, int] | KGWeaveError] = []
        rows: list[tuple[int, int]] = []
        filters: list[bool] = []
        for request in requests:
            try:
                if not 1 <= request.k <= MAX_K:
                    raise InvalidArgumentError(f"k must be between 1 and {MAX_K}, got {request.k}")
                ids = served.resolve_rows(request.queries)
            except KGWeaveError as exc:
                spans.append(exc)
                continue
            spans.append((len(rows), len(rows) + len(ids)))
            rows.extend(ids)
            filters.extend([request.filter_known] * len(ids))
        batch = LinkBatch(served.version, served, spans, None)
        if not rows:
            return batch
        valid = [r for r, span in zip(requests, spans, strict=True) if isinstance(span, tuple)]
        deadlines = [r.deadline for r in valid]
        job = PredictJob(
            served,
            torch.tensor(rows, dtype=torch.long),
            max(r.k for r in valid),
            filters[0] if len(set(filters)) == 1 else torch.tensor(filters),
            None if None in deadlines else max(d for d in deadlines if d is not None),
        )
        if loop is not None:
            job.future = loop.create_future()
        if inline and len(rows) <= self.batcher.max_batch:
            self.batcher.run_now(job)
            batch.future = job.future
            return batch
        batch.future = self.batcher.submit(job)
        self.metrics.queue_depth.set(self.batcher.depth)
        return batch

    def predict(
        self,
        queries: list[Query],
        k: int = 10,
        filter_known: bool = False,
        timeout: float | None = None,
    ) -> tuple[str, list[list[Prediction]]]:
        """Top-``k`` for ``queries`` through the micro-batcher (blocking)."""
        deadline = time.monotonic() + timeout if timeout is not None else None
        batch = self.submit_links([LinkRequest(queries, k, filter_known, deadline)])
        (span,) = batch.spans
        if isinstance(span, KGWeaveError):
            raise span
        assert isinstance(batch.future, Future)
        return batch.version, batch.served.predictor.predictions(batch.future.result())

    def score(self, triples: list[tuple[str, str, str]]) -> tuple[str, list[float]]:
        if not triples:
            raise InvalidArgumentError("give at least one triple")
        if len(triples) > MAX_TRIPLES:
            raise InvalidArgumentError(
                f"at most {MAX_TRIPLES} triples per call, got {len(triples)}"
            )
        served = self.active()
        return served.version, served.predictor.score(triples)

    def entity(self, text: str, max_facts: int = 20) -> tuple[str, EntityInfo]:
        served = self.active()
        return served.version, served.entity(text, max_facts)

    def search(self, prefix: str, limit: int = 10) -> tuple[str, list[EntityInfo]]:
        served = self.active()
        return served.version, served.search(prefix, limit)

    def text_encoder(self) -> TextEncoder:
        """The sentence encoder of ``settings.text_encoder`` (loaded on first use)."""
        from kgweave.language.encoder import TextEncoder

        with self._encoder_lock:
            if self._encoder is None:
                self._encoder = TextEncoder.from_settings(self.settings)
            return self._encoder

    def add_entities(self, rows: list[tuple[str, str | None, str | None]]) -> tuple[str, list[str]]:
        """Cold start: serve new entities (id, name, description) that have text but no edges
        yet, embedded from their text, until a retrained version knows them from facts.

        Returns the serving version and the ids actually added (known ones are skipped).
        """
        with self._cold_lock:
            served = self.active()
            seen: set[str] = set()
            new = []
            for row in rows:
                if row[0] not in served.artifact.entities and row[0] not in seen:
                    seen.add(row[0])
                    new.append(row)
            if not new:
                return served.version, []
            extended = served.with_cold_entities(
                new, self.text_encoder(), self.settings.data_dir / "cache" / "text-vectors"
            )
            with self._swap_lock:
                if self._active is not served:  # a new version arrived meanwhile: it wins
                    return self._active.version if self._active else "", []
                self._active = extended
        log.info("cold start: %d entities served by %s", len(new), extended.version)
        return extended.version, [r[0] for r in new]

    def semantic_search(
        self, text: str, limit: int = 10
    ) -> tuple[str, list[tuple[EntityInfo, float]]]:
        """Entities by meaning: cosine between ``text`` and each entity's name + description."""
        served = self.active()
        hits = served.semantic_search(
            text, limit, self.text_encoder(), self.settings.data_dir / "cache" / "text-vectors"
        )
        return served.version, hits

    def complete(
        self,
        query: Query,
        k: int = 10,
        kge_candidates: int = 50,
        generate: bool = True,
        write_to_graph: bool = False,
        min_score: float = 0.0,
    ) -> dict[str, Any]:
        """LLM-driven completion on the active model (see :func:`complete_on`)."""
        return complete_on(
            self.active(), query, self.settings.language_model, k, kge_candidates, generate,
            self.graph_store if write_to_graph else None, min_score,
        )  # fmt: skip

    def graph_store(self) -> GraphStore:
        """The configured graph (opened on first use)."""
        with self._encoder_lock:
            if self._store is None:
                from kgweave.graph.connect import open_store

                self._store = open_store(self.settings.graph_uri, self.settings)
            return self._store

    def verbalize(
        self,
        entity: str = "",
        triples: list[tuple[str, str, str]] | None = None,
        max_chars: int = 600,
    ) -> tuple[str, str, list[str]]:
        """(version, text, sentences): graph to text on the active model's graph."""
        served = self.active()
        text, sentences = served.verbalize(entity, triples, max_chars)
        return served.version, text, sentences

    # ---- training jobs
    def start_training(
        self, config: dict[str, Any], dataset: str = "", policy: str | None = None
    ) -> Job:
        policy = policy or self.settings.activation_policy
        if policy not in POLICIES:
            raise InvalidArgumentError(
                f"activation policy {policy!r}: use one of {', '.join(POLICIES)}"
            )
        job = self.jobs.start(config, dataset, policy)
        self.metrics.jobs_running.set(self.jobs.active_count())
        return job

    def _register_job_model(self, folder: Path, job: Job, policy: str) -> tuple[str, bool, str]:
        """Called when a job succeeded: register its model and apply the policy."""
        item = self.registry.register(folder, policy)
        activate, why = self._decide(item, policy)
        if activate:
            self.activate(item.version)
        return item.version, activate, why

    def _decide(self, item: ModelVersion, policy: str) -> tuple[bool, str]:
        current = self._active
        active = self.registry.get(current.base_version) if current is not None else None
        return decide(policy, item, active)

    def _job_changed(self, job: Job) -> None:
        if job.state.final:
            self.metrics.jobs.labels(state=job.state.value).inc()
        self.metrics.jobs_running.set(self.jobs.active_count())

    # ---- status
    def status(self) -> dict[str, Any]:
        served = self._active
        active = None
        if served is not None:
            active = self.registry.get(served.base_version).summary(active=True)
            active["version"] = served.version
        device_bytes = 0
        if self.device.type == "cuda":
            device_bytes = int(torch.cuda.memory_allocated(self.device))
        return {
            "active_model": active,
            "graph_backend": self.graph_backend,
            "graph_uri": self.graph_uri,
            "device": str(self.device),
            "process_memory_bytes": _rss_bytes(),
            "device_memory_bytes": device_bytes,
            "uptime_s": time.monotonic() - self.started_at,
            "ready": self.ready,
            "kgweave_version": __version__,
            "active_jobs": self.jobs.active_count(),
            "frontend": self.frontend,
        }


def _rss_bytes() -> int:
    """Resident set size of this process (Linux /proc; 0 where unknown)."""
    try:
        with open(f"/proc/{os.getpid()}/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def complete_on(
    served: ServedModel,
    query: Query,
    language_model: str | None,
    k: int = 10,
    kge_candidates: int = 50,
    generate: bool = True,
    store_factory: Callable[[], GraphStore] | None = None,
    min_score: float = 0.0,
) -> dict[str, Any]:
    """KGE top-N plus LM-generated names, re-ranked by the fitted combination.

    With ``store_factory``, the accepted candidates (combined >= ``min_score``, not already
    facts) are added to the graph as suggested links with provenance (model versions and the
    combination). Returns ``model_version``, ``candidates``, ``weights`` and ``written``.
    """
    if not 1 <= k <= 100:
        raise InvalidArgumentError(f"k must be between 1 and 100, got {k}")
    if not 1 <= kge_candidates <= MAX_K:
        raise InvalidArgumentError(
            f"kge_candidates must be between 1 and {MAX_K}, got {kge_candidates}"
        )
    completer, lm_label = served.completer(language_model)
    with served.completion_lock:  # one LM pass at a time per version
        completer.top_n = max(kge_candidates, k)
        completer.lm_candidates = 5 if generate else 0
        candidates = completer.complete(query, k=k)
    w = completer.weights
    written = 0
    accepted = [c for c in candidates if c.combined >= min_score and not c.known]
    if store_factory is not None and accepted:
        from kgweave.graph.store import PredictedLink

        predictor, art = served.predictor, served.artifact
        relation = art.relations.labels[predictor.resolve_relation(query.relation)]
        fixed = query.head if query.head is not None else query.tail
        assert fixed is not None
        anchor = art.entities.labels[predictor.resolve_entity(fixed)]
        links = [
            PredictedLink(anchor, relation, c.entity, c.combined)
            if query.head is not None
            else PredictedLink(c.entity, relation, anchor, c.combined)
            for c in accepted
        ]
        provenance = (
            f"kgweave complete: kge {served.version} + lm {lm_label}; "
            f"combined = {w.w_kge:.4g}*kge + {w.w_lm:.4g}*lm + {w.bias:.4g}"
        )
        written = store_factory().add_suggested_links(links, served.version, provenance)
    return {
        "model_version": served.version,
        "candidates": candidates,
        "weights": (w.w_kge, w.w_lm, w.bias),
        "written": written,
    }
