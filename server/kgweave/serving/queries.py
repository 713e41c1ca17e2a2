"""The query plane: every read of the served model (links, scores, entities, search, text,
completion) and cold-start entities, validated and defaulted once (:mod:`kgweave.arguments`).

Transport-free: the gRPC servicers, the HTTP gateway and the CLI call these methods and map
:mod:`kgweave.errors` to their own status codes.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from kgweave import arguments
from kgweave.errors import InvalidArgumentError, KGWeaveError
from kgweave.predict import Prediction, Query
from kgweave.serving.batcher import AnyFuture, MicroBatcher, PredictJob
from kgweave.serving.served import EntityInfo, ServedModel
from kgweave.serving.versions import ModelVersions
from kgweave.settings import Settings

if TYPE_CHECKING:
    from kgweave.graph.store import GraphStore
    from kgweave.language.components.encoder import TextEncoder
    from kgweave.language.features.rerank import RerankWeights

log = logging.getLogger(__name__)


@dataclass
class LinkRequest:
    """One link-prediction call: its queries and options (``k`` None: the default)."""

    queries: list[Query]
    k: int | None = None
    filter_known: bool = False
    deadline: float | None = None  # time.monotonic() value


@dataclass
class LinkBatch:
    """Link-prediction requests queued as one job (:meth:`QueryPlane.submit_links`)."""

    version: str
    served: ServedModel
    #: per request: its rows ``(start, stop)`` and its k in the job's answer, or its error
    spans: list[tuple[int, int, int] | KGWeaveError]
    #: the :class:`TopK` of all valid rows; None when no request was valid
    future: AnyFuture | None


@dataclass
class Completion:
    """The answer of :meth:`QueryPlane.complete`."""

    model_version: str
    candidates: list[Any]  # kgweave.language.features.completion.CompletionCandidate
    weights: RerankWeights  # the fitted combination the candidates were ranked by
    written: int


class QueryPlane:
    """Answers queries on the active version of ``versions``."""

    def __init__(
        self,
        settings: Settings,
        versions: ModelVersions,
        batcher: MicroBatcher,
        graph_store: Callable[[], GraphStore],
    ) -> None:
        self.settings = settings
        self.versions = versions
        self.batcher = batcher
        self.graph_store = graph_store
        self._encoder: TextEncoder | None = None
        self._encoder_lock = threading.Lock()

    # ---- link prediction
    def submit_links(
        self,
        requests: list[LinkRequest],
        loop: asyncio.AbstractEventLoop | None = None,
        inline: bool = False,
    ) -> LinkBatch:
        """Validate and resolve link-prediction requests against the active version and queue
        the valid ones as one job: one scoring pass for a burst of calls.

        Each request's outcome is its rows and k in the job's answer or its own error (a bad
        request fails alone). Requests are admitted in order by their queries, as the batcher
        admits jobs: one whose queries would take those waiting (queued, or ahead of it here)
        past ``KGWEAVE_QUEUE_MAX`` is refused alone (RESOURCE_EXHAUSTED), whether the job is
        then queued or scored inline, so a burst the native front end gathered is bounded as
        the Python front end's calls are. With ``loop`` the future is an asyncio future of
        that loop; otherwise a thread future. With ``inline`` a job of at most
        ``batch_max_size`` queries is scored in the calling thread before this returns (the
        native front end's bridge gathers concurrent calls itself; handing them to the
        batcher's thread would only add a thread switch and contention for the GIL). Raises
        for the whole batch when there is no model, or the queue filled meanwhile.
        """
        served = self.versions.active()
        spans: list[tuple[int, int, int] | KGWeaveError] = []
        rows: list[tuple[int, int]] = []
        filters: list[bool] = []
        ks: list[int] = []
        deadlines: list[float | None] = []
        waiting = self.batcher.depth
        for request in requests:
            try:
                k = arguments.top_k(request.k)
                ids = served.resolve_rows(request.queries)
            except KGWeaveError as exc:
                spans.append(exc)
                continue
            if waiting + len(rows) + len(ids) > self.batcher.max_queue:
                spans.append(self.batcher.full(waiting + len(rows)))
                continue
            spans.append((len(rows), len(rows) + len(ids), k))
            rows.extend(ids)
            filters.extend([request.filter_known] * len(ids))
            ks.append(k)
            deadlines.append(request.deadline)
        batch = LinkBatch(served.version, served, spans, None)
        if not rows:
            return batch
        job = PredictJob(
            served,
            torch.tensor(rows, dtype=torch.long),
            max(ks),
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
        self.versions.metrics.queue_depth.set(self.batcher.depth)
        return batch

    def predict(
        self,
        queries: list[Query],
        k: int | None = None,
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
        top = batch.future.result().rows(*span)
        return batch.version, batch.served.predictor.predictions(top)

    # ---- triples, entities, search
    def score(self, triples: list[tuple[str, str, str]]) -> tuple[str, list[float]]:
        """KGE scores of labelled (or named) triples; higher is more plausible."""
        arguments.count("triple", "triples", len(triples), arguments.MAX_TRIPLES)
        served = self.versions.active()
        return served.version, served.predictor.score(triples)

    def entity(self, text: str, max_facts: int | None = None) -> tuple[str, EntityInfo]:
        """An entity by id or name, with its text, degree and some of its facts."""
        served = self.versions.active()
        facts = arguments.bounded(
            "max_facts", max_facts, arguments.DEFAULT_MAX_FACTS, 0, arguments.MAX_FACTS
        )
        return served.version, served.entity(text, facts)

    def search(self, prefix: str, limit: int | None = None) -> tuple[str, list[EntityInfo]]:
        """Entities whose name or id starts with ``prefix`` (case-insensitive)."""
        served = self.versions.active()
        return served.version, served.search(prefix, arguments.limit(limit))

    def text_encoder(self) -> TextEncoder:
        """The sentence encoder of ``settings.text_encoder`` (loaded on first use)."""
        from kgweave.language.components.encoder import TextEncoder

        with self._encoder_lock:
            if self._encoder is None:
                self._encoder = TextEncoder.from_settings(self.settings)
            return self._encoder

    def semantic_search(
        self, text: str, limit: int | None = None
    ) -> tuple[str, list[tuple[EntityInfo, float]]]:
        """Entities by meaning: cosine between ``text`` and each entity's name + description."""
        served = self.versions.active()
        hits = served.semantic_search(
            text, arguments.limit(limit), self.text_encoder(), self.settings.text_vectors_dir
        )
        return served.version, hits

    # ---- text
    def verbalize(
        self,
        entity: str = "",
        triples: list[tuple[str, str, str]] | None = None,
        max_chars: int | None = None,
    ) -> tuple[str, str, list[str]]:
        """(version, text, sentences): graph to text on the active model's graph."""
        served = self.versions.active()
        chars = arguments.bounded(
            "max_chars", max_chars, arguments.DEFAULT_MAX_CHARS, 1, arguments.MAX_CHARS
        )
        if triples and len(triples) > arguments.MAX_TRIPLES:
            arguments.count("triple", "triples", len(triples), arguments.MAX_TRIPLES)
        text, sentences = served.verbalize(entity, triples, chars)
        return served.version, text, sentences

    def complete(
        self,
        query: Query,
        k: int | None = None,
        kge_candidates: int | None = None,
        generate: bool = True,
        write_to_graph: bool = False,
        min_score: float = 0.0,
    ) -> Completion:
        """LLM-driven completion on the active model (see :func:`complete_on`)."""
        return complete_on(
            self.versions.active(), query, self.settings.language_model, k, kge_candidates,
            generate, self.graph_store if write_to_graph else None, min_score,
        )  # fmt: skip


def complete_on(
    served: ServedModel,
    query: Query,
    language_model: str | None,
    k: int | None = None,
    kge_candidates: int | None = None,
    generate: bool = True,
    store_factory: Callable[[], GraphStore] | None = None,
    min_score: float = 0.0,
) -> Completion:
    """KGE top-N plus LM-generated names, re-ranked by the fitted combination.

    With ``store_factory``, the accepted candidates (combined >= ``min_score``, not already
    facts) are added to the graph as suggested links with provenance (model versions and the
    combination).
    """
    k = arguments.bounded("k", k, arguments.DEFAULT_K, 1, arguments.MAX_COMPLETE_K)
    kge_candidates = arguments.bounded(
        "kge_candidates", kge_candidates, arguments.DEFAULT_KGE_CANDIDATES, 1, arguments.MAX_K
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
        if fixed is None:
            raise InvalidArgumentError("give exactly one of head and tail")
        anchor = art.entities.labels[predictor.resolve_entity(fixed)]
        links = [
            PredictedLink(anchor, relation, c.entity, c.combined)
            if query.head is not None
            else PredictedLink(c.entity, relation, anchor, c.combined)
            for c in accepted
        ]
        provenance = (
            f"kgweave complete: kge {served.version} + lm {lm_label}; combined = {w.describe()}"
        )
        written = store_factory().add_suggested_links(links, served.version, provenance)
    return Completion(served.version, candidates, w, written)
