"""gRPC servicers: translate messages to :class:`KGService` calls and back, nothing more.

Every method runs under :func:`_guard`, which times it for the metrics and turns a
:class:`KGWeaveError` into its status code (``kgweave.api.status``) with the error's one-line
message. Anything else is logged with its traceback on the server and answered INTERNAL with
a short line: a client never sees a stack trace.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc

from kgweave.api.status import to_grpc
from kgweave.api.wire import link_answers
from kgweave.errors import DeadlineExceededError, InvalidArgumentError, KGWeaveError
from kgweave.predict import Query, TopK
from kgweave.serving.jobs import Job, JobState
from kgweave.serving.served import EntityInfo, ServedModel
from kgweave.serving.service import KGService, LinkRequest
from kgweave.training.config import JOB_FIELDS
from kgweave.v1 import admin_pb2, admin_pb2_grpc, knowledge_pb2, knowledge_pb2_grpc

log = logging.getLogger(__name__)

T = TypeVar("T")
Handler = Callable[[Any, Any, grpc.aio.ServicerContext], Awaitable[T]]

_POLICY = {
    admin_pb2.ACTIVATION_POLICY_UNSPECIFIED: None,
    admin_pb2.ACTIVATION_POLICY_IF_BETTER: "if_better",
    admin_pb2.ACTIVATION_POLICY_ALWAYS: "always",
    admin_pb2.ACTIVATION_POLICY_NEVER: "never",
}
_JOB_STATE = {
    JobState.QUEUED: admin_pb2.JOB_STATE_QUEUED,
    JobState.RUNNING: admin_pb2.JOB_STATE_RUNNING,
    JobState.SUCCEEDED: admin_pb2.JOB_STATE_SUCCEEDED,
    JobState.FAILED: admin_pb2.JOB_STATE_FAILED,
    JobState.CANCELLED: admin_pb2.JOB_STATE_CANCELLED,
}
_SETTINGS_FIELDS = (*JOB_FIELDS, "joint")


def _failure(method: str, exc: Exception) -> tuple[grpc.StatusCode, str]:
    """The status code and one-line message a failed call answers with: a
    :class:`KGWeaveError`'s own (``kgweave.api.status``), else INTERNAL (the traceback goes to
    the server log, never to the client)."""
    if isinstance(exc, KGWeaveError):
        return to_grpc(exc), exc.message
    log.error("%s failed", method, exc_info=exc)
    return grpc.StatusCode.INTERNAL, f"internal error in {method}; see the server log"


def _guard(method: Handler[T]) -> Handler[T]:
    name = method.__name__

    @functools.wraps(method)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> T:
        started = time.perf_counter()
        code = "OK"
        try:
            return await method(self, request, context)
        except (asyncio.CancelledError, grpc.aio.AbortError):
            code = "CANCELLED"
            raise
        except Exception as exc:
            status, message = _failure(name, exc)
            code = status.name
            await context.abort(status, message)
        finally:
            self.service.metrics.request_seconds.labels(method=name, code=code).observe(
                time.perf_counter() - started
            )
        raise AssertionError("unreachable")  # abort() raises

    return wrapper


def _deadline(context: grpc.aio.ServicerContext) -> float | None:
    remaining = context.time_remaining()
    return time.monotonic() + remaining if remaining is not None else None


def _entity(info: EntityInfo, version: str) -> knowledge_pb2.Entity:
    return knowledge_pb2.Entity(
        id=info.id,
        name=info.name,
        description=info.description,
        degree=info.degree,
        facts=[knowledge_pb2.Triple(head=h, relation=r, tail=t) for h, r, t in info.facts],
        model_version=version,
    )


def links_message(
    served: ServedModel, top: TopK, version: str
) -> knowledge_pb2.PredictLinksResponse:
    """A PredictLinks answer from ranked entity ids."""
    response = knowledge_pb2.PredictLinksResponse(model_version=version)
    for row in top.labelled(served.artifact.entities.labels, served.artifact.entity_names):
        add = response.results.add().candidates.add
        for rank, entity, name, score, known in row:
            add(rank=rank, entity_id=entity, name=name or "", score=score, known=known)
    return response


@dataclass
class _LinkOutcomes:
    """The answers of a burst of PredictLinks calls before they are written: per call its
    rows ``(start, stop)`` in ``top`` and its k, or its error; ``version`` is "" when no call
    was scored."""

    outcomes: list[tuple[int, int, int] | KGWeaveError]
    top: TopK = field(default_factory=lambda: TopK([], [], []))
    version: str = ""
    served: ServedModel | None = None

    def message(self, start: int, stop: int, k: int) -> knowledge_pb2.PredictLinksResponse:
        """The answer of the call of rows ``start:stop`` as a message."""
        assert self.served is not None
        return links_message(self.served, self.top.rows(start, stop, k), self.version)

    def wire(self) -> list[bytes | KGWeaveError]:
        """Each call's answer as a serialised PredictLinksResponse, or its error."""
        calls = [o for o in self.outcomes if not isinstance(o, KGWeaveError)]
        if not calls:
            return [o for o in self.outcomes if isinstance(o, KGWeaveError)]
        assert self.served is not None
        encoded = iter(link_answers(self.served).encode(self.top, calls, self.version))
        return [o if isinstance(o, KGWeaveError) else next(encoded) for o in self.outcomes]


class KnowledgeServicer(knowledge_pb2_grpc.KnowledgeServiceServicer):  # type: ignore[misc]
    def __init__(self, service: KGService) -> None:
        self.service = service
        if service.ready:  # a version loaded before kgweave.api.wire registered its warm-up
            link_answers(service.active())

    @_guard
    async def PredictLinks(  # noqa: N802
        self, request: Any, context: grpc.aio.ServicerContext
    ) -> knowledge_pb2.PredictLinksResponse:
        (answer,) = await self.predict_links([request], [_deadline(context)])
        if isinstance(answer, KGWeaveError):
            raise answer
        return answer

    async def predict_links(
        self, requests: list[Any], deadlines: list[float | None], inline: bool = False
    ) -> list[knowledge_pb2.PredictLinksResponse | KGWeaveError]:
        """Answer many PredictLinks requests with one job; a bad request fails alone.

        ``deadlines``: ``time.monotonic()`` values or None. The job goes through the
        micro-batcher's queue, or with ``inline`` is scored at once in this thread when it
        fits one batch (the caller gathered the calls). Cancelling the await cancels the
        job's future: the batcher skips it.
        """
        answers = await self._predict_links(requests, deadlines, inline)
        return [
            outcome if isinstance(outcome, KGWeaveError) else answers.message(*outcome)
            for outcome in answers.outcomes
        ]

    async def _predict_links(
        self, requests: list[Any], deadlines: list[float | None], inline: bool
    ) -> _LinkOutcomes:
        batch = self.service.submit_links(
            [
                LinkRequest(
                    [
                        Query(relation=q.relation, head=q.head or None, tail=q.tail or None)
                        for q in request.queries
                    ],
                    request.k or 10,
                    request.filter_known,
                    deadline,
                )
                for request, deadline in zip(requests, deadlines, strict=True)
            ],
            asyncio.get_running_loop(),
            inline,
        )
        if batch.future is None:  # no valid request: every span is an error
            return _LinkOutcomes([s for s in batch.spans if isinstance(s, KGWeaveError)])
        assert isinstance(batch.future, asyncio.Future)
        try:
            top = await batch.future
        except KGWeaveError as exc:  # the whole job (its deadline passed, shutting down)
            return _LinkOutcomes([exc] * len(requests))
        now = time.monotonic()
        outcomes: list[tuple[int, int, int] | KGWeaveError] = []
        for request, span, deadline in zip(requests, batch.spans, deadlines, strict=True):
            if isinstance(span, KGWeaveError):
                outcomes.append(span)
            elif deadline is not None and now > deadline:
                outcomes.append(DeadlineExceededError("the deadline passed while scoring"))
            else:
                outcomes.append((*span, request.k or 10))
        return _LinkOutcomes(outcomes, top, batch.version, batch.served)

    async def predict_links_calls(
        self, requests: list[Any], deadlines: list[float | None]
    ) -> list[bytes | tuple[grpc.StatusCode, str]]:
        """PredictLinks for a burst of calls from the native front end's bridge: each answer
        is a serialised response (:mod:`kgweave.api.wire`) or a status code and one-line
        message, mapped as :func:`_guard` maps them, with the same metrics."""
        started = time.perf_counter()
        answers: list[bytes | Exception]
        try:
            answers = list((await self._predict_links(requests, deadlines, inline=True)).wire())
        except Exception as exc:  # no model, queue full, a bug: every call
            answers = [exc] * len(requests)
        elapsed = time.perf_counter() - started
        out: list[bytes | tuple[grpc.StatusCode, str]] = []
        codes: dict[str, int] = {}
        for answer in answers:
            if isinstance(answer, Exception):
                failure = _failure("PredictLinks", answer)
                out.append(failure)
                code = failure[0].name
            else:
                out.append(answer)
                code = "OK"
            codes[code] = codes.get(code, 0) + 1
        for code, count in codes.items():
            histogram = self.service.metrics.request_seconds.labels("PredictLinks", code)
            for _ in range(count):
                histogram.observe(elapsed)
        return out

    @_guard
    async def ScoreTriples(  # noqa: N802
        self, request: Any, context: grpc.aio.ServicerContext
    ) -> knowledge_pb2.ScoreTriplesResponse:
        triples = [(t.head, t.relation, t.tail) for t in request.triples]
        version, scores = await asyncio.to_thread(self.service.score, triples)
        if (remaining := context.time_remaining()) is not None and remaining <= 0:
            raise DeadlineExceededError("the deadline passed while scoring")
        return knowledge_pb2.ScoreTriplesResponse(scores=scores, model_version=version)

    @_guard
    async def GetEntity(  # noqa: N802
        self, request: Any, context: grpc.aio.ServicerContext
    ) -> knowledge_pb2.Entity:
        version, info = self.service.entity(request.entity, request.max_facts or 20)
        return _entity(info, version)

    @_guard
    async def SearchEntities(  # noqa: N802
        self, request: Any, context: grpc.aio.ServicerContext
    ) -> knowledge_pb2.SearchEntitiesResponse:
        if request.prefix and request.text:
            raise InvalidArgumentError("give prefix or text, not both")
        if request.text:
            version, hits = await asyncio.to_thread(
                self.service.semantic_search, request.text, request.limit or 10
            )
            entities = []
            for info, similarity in hits:
                entity = _entity(info, version)
                entity.similarity = similarity
                entities.append(entity)
            return knowledge_pb2.SearchEntitiesResponse(entities=entities)
        version, infos = self.service.search(request.prefix, request.limit or 10)
        return knowledge_pb2.SearchEntitiesResponse(entities=[_entity(i, version) for i in infos])

    @_guard
    async def Verbalize(  # noqa: N802
        self, request: Any, context: grpc.aio.ServicerContext
    ) -> knowledge_pb2.VerbalizeResponse:
        triples = [(t.head, t.relation, t.tail) for t in request.triples]
        version, text, sentences = await asyncio.to_thread(
            self.service.verbalize, request.entity, triples, request.max_chars or 600
        )
        return knowledge_pb2.VerbalizeResponse(
            text=text, sentences=sentences, model_version=version
        )

    @_guard
    async def Complete(  # noqa: N802
        self, request: Any, context: grpc.aio.ServicerContext
    ) -> knowledge_pb2.CompleteResponse:
        q = request.query
        query = Query(relation=q.relation, head=q.head or None, tail=q.tail or None)
        result = await asyncio.to_thread(
            self.service.complete,
            query,
            request.k or 10,
            request.kge_candidates or 50,
            request.generate,
            request.write_to_graph,
            request.min_score,
        )
        w_kge, w_lm, bias = result["weights"]
        return knowledge_pb2.CompleteResponse(
            candidates=[
                knowledge_pb2.CompletionCandidate(
                    rank=c.rank,
                    entity_id=c.entity,
                    name=c.name,
                    kge_score=c.kge_score,
                    lm_logprob=c.lm_logprob,
                    combined_score=c.combined,
                    source=c.source,
                    evidence=c.evidence,
                    known=c.known,
                    graph_score=c.graph_score,
                )
                for c in result["candidates"]
            ],
            model_version=result["model_version"],
            w_kge=w_kge,
            w_lm=w_lm,
            bias=bias,
            written=result["written"],
        )


def job_message(job: Job) -> admin_pb2.Job:
    return admin_pb2.Job(
        job_id=job.job_id,
        state=_JOB_STATE[job.state],
        phase=job.phase,
        epoch=job.epoch,
        epochs=job.epochs,
        loss=job.loss,
        valid_mrr=job.valid_mrr,
        eta_s=job.eta_s,
        model_version=job.model_version,
        activated=job.activated,
        message=job.message,
        created_at=job.created_at,
        updated_at=job.updated_at,
    )


def model_message(summary: dict[str, Any]) -> admin_pb2.ModelInfo:
    return admin_pb2.ModelInfo(**summary)


class AdminServicer(admin_pb2_grpc.AdminServiceServicer):  # type: ignore[misc]
    def __init__(self, service: KGService) -> None:
        self.service = service

    @_guard
    async def StartTraining(  # noqa: N802
        self, request: Any, context: grpc.aio.ServicerContext
    ) -> admin_pb2.Job:
        settings = request.settings
        config = {f: getattr(settings, f) for f in _SETTINGS_FIELDS if settings.HasField(f)}
        job = await asyncio.to_thread(
            self.service.start_training, config, request.dataset, _POLICY.get(request.activation)
        )
        return job_message(job)

    @_guard
    async def GetJob(self, request: Any, context: grpc.aio.ServicerContext) -> admin_pb2.Job:  # noqa: N802
        return job_message(self.service.jobs.get(request.job_id))

    async def WatchJob(  # noqa: N802
        self, request: Any, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[admin_pb2.Job]:
        try:
            job = self.service.jobs.get(request.job_id)
        except KGWeaveError as exc:
            await context.abort(to_grpc(exc), exc.message)
        yield job_message(job)
        while not job.state.final:
            revision = job.revision
            job = await asyncio.to_thread(
                self.service.jobs.wait_for_change, job.job_id, revision, 1.0
            )
            if job.revision != revision:
                yield job_message(job)

    @_guard
    async def CancelJob(self, request: Any, context: grpc.aio.ServicerContext) -> admin_pb2.Job:  # noqa: N802
        return job_message(self.service.jobs.cancel(request.job_id))

    @_guard
    async def ListModels(  # noqa: N802
        self, request: Any, context: grpc.aio.ServicerContext
    ) -> admin_pb2.ListModelsResponse:
        models, active = await asyncio.to_thread(self.service.list_models)
        return admin_pb2.ListModelsResponse(
            models=[model_message(m) for m in models], active_version=active
        )

    @_guard
    async def ActivateModel(  # noqa: N802
        self, request: Any, context: grpc.aio.ServicerContext
    ) -> admin_pb2.ModelInfo:
        return model_message(await asyncio.to_thread(self.service.activate, request.version))

    @_guard
    async def Status(  # noqa: N802
        self, request: Any, context: grpc.aio.ServicerContext
    ) -> admin_pb2.StatusResponse:
        status = await asyncio.to_thread(self.service.status)
        active = status.pop("active_model")
        response = admin_pb2.StatusResponse(**status)
        if active is not None:
            response.active_model.CopyFrom(model_message(active))
        return response
