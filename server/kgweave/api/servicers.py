"""gRPC servicers: messages to :class:`~kgweave.dataplane.DataPlane` calls and back
(:mod:`kgweave.api.convert`), nothing more.

Every method runs under :func:`_guard`, which times it for the metrics and turns a
:class:`KGWeaveError` into its status code (``kgweave.api.status``) with the error's one-line
message. Anything else is logged with its traceback on the server and answered INTERNAL with
a short line: a client never sees a stack trace. Overload is the micro-batcher's to refuse
(RESOURCE_EXHAUSTED beyond ``KGWEAVE_QUEUE_MAX`` queries waiting), answered and counted here
like any other error.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

import grpc

from kgweave.api import convert
from kgweave.api.status import to_grpc
from kgweave.api.upload import ModelUpload
from kgweave.api.wire import link_answers
from kgweave.dataplane import DataPlane
from kgweave.errors import (
    ArtifactError,
    DeadlineExceededError,
    InvalidArgumentError,
    KGWeaveError,
    echo,
)
from kgweave.predict import TopK
from kgweave.serving.jobs import public_message
from kgweave.serving.served import ServedModel
from kgweave.v1 import admin_pb2, admin_pb2_grpc, knowledge_pb2, knowledge_pb2_grpc

log = logging.getLogger(__name__)

T = TypeVar("T")
Handler = Callable[[Any, Any, grpc.aio.ServicerContext], Awaitable[T]]


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
            self.plane.metrics.request_seconds.labels(method=name, code=code).observe(
                time.perf_counter() - started
            )
        raise AssertionError("unreachable")  # abort() raises

    return wrapper


def _deadline(context: grpc.aio.ServicerContext) -> float | None:
    remaining = context.time_remaining()
    return time.monotonic() + remaining if remaining is not None else None


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
        return convert.links_to_pb(self.served, self.top.rows(start, stop, k), self.version)

    def wire(self) -> list[bytes | KGWeaveError]:
        """Each call's answer as a serialised PredictLinksResponse, or its error."""
        calls = [o for o in self.outcomes if not isinstance(o, KGWeaveError)]
        if not calls:
            return [o for o in self.outcomes if isinstance(o, KGWeaveError)]
        assert self.served is not None
        encoded = iter(link_answers(self.served).encode(self.top, calls, self.version))
        return [o if isinstance(o, KGWeaveError) else next(encoded) for o in self.outcomes]


class KnowledgeServicer(knowledge_pb2_grpc.KnowledgeServiceServicer):  # type: ignore[misc]
    def __init__(self, plane: DataPlane) -> None:
        self.plane = plane
        self.queries = plane.queries
        if plane.ready:  # a version loaded before kgweave.api.wire registered its warm-up
            link_answers(plane.versions.active())

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
        batch = self.queries.submit_links(
            [
                convert.link_request_from_pb(request, deadline)
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
        for span, deadline in zip(batch.spans, deadlines, strict=True):
            if isinstance(span, KGWeaveError):
                outcomes.append(span)
            elif deadline is not None and now > deadline:
                outcomes.append(DeadlineExceededError("the deadline passed while scoring"))
            else:
                outcomes.append(span)
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
            histogram = self.plane.metrics.request_seconds.labels("PredictLinks", code)
            for _ in range(count):
                histogram.observe(elapsed)
        return out

    @_guard
    async def ScoreTriples(  # noqa: N802
        self, request: Any, context: grpc.aio.ServicerContext
    ) -> knowledge_pb2.ScoreTriplesResponse:
        triples = convert.triples_from_pb(request.triples)
        version, scores = await asyncio.to_thread(self.queries.score, triples)
        if (remaining := context.time_remaining()) is not None and remaining <= 0:
            raise DeadlineExceededError("the deadline passed while scoring")
        return knowledge_pb2.ScoreTriplesResponse(scores=scores, model_version=version)

    @_guard
    async def GetEntity(  # noqa: N802
        self, request: Any, context: grpc.aio.ServicerContext
    ) -> knowledge_pb2.Entity:
        version, info = self.queries.entity(request.entity, request.max_facts or None)
        return convert.entity_to_pb(info, version)

    @_guard
    async def SearchEntities(  # noqa: N802
        self, request: Any, context: grpc.aio.ServicerContext
    ) -> knowledge_pb2.SearchEntitiesResponse:
        if request.prefix and request.text:
            raise InvalidArgumentError("give prefix or text, not both")
        if request.text:
            version, hits = await asyncio.to_thread(
                self.queries.semantic_search, request.text, request.limit or None
            )
            return knowledge_pb2.SearchEntitiesResponse(
                entities=[convert.entity_to_pb(info, version, sim) for info, sim in hits]
            )
        version, infos = self.queries.search(request.prefix, request.limit or None)
        return knowledge_pb2.SearchEntitiesResponse(
            entities=[convert.entity_to_pb(i, version) for i in infos]
        )

    @_guard
    async def Verbalize(  # noqa: N802
        self, request: Any, context: grpc.aio.ServicerContext
    ) -> knowledge_pb2.VerbalizeResponse:
        version, text, sentences = await asyncio.to_thread(
            self.queries.verbalize,
            request.entity,
            convert.triples_from_pb(request.triples),
            request.max_chars or None,
        )
        return knowledge_pb2.VerbalizeResponse(
            text=text, sentences=sentences, model_version=version
        )

    @_guard
    async def Complete(  # noqa: N802
        self, request: Any, context: grpc.aio.ServicerContext
    ) -> knowledge_pb2.CompleteResponse:
        arguments = convert.complete_from_pb(request)
        result = await asyncio.to_thread(functools.partial(self.queries.complete, **arguments))
        return convert.completion_to_pb(result)


class AdminServicer(admin_pb2_grpc.AdminServiceServicer):  # type: ignore[misc]
    def __init__(self, plane: DataPlane) -> None:
        self.plane = plane

    @_guard
    async def StartTraining(  # noqa: N802
        self, request: Any, context: grpc.aio.ServicerContext
    ) -> admin_pb2.Job:
        job = await asyncio.to_thread(
            self.plane.start_training,
            convert.job_from_pb(request),
            request.dataset,
            convert.policy_from_pb(request.activation),
        )
        return convert.job_to_pb(job)

    @_guard
    async def GetJob(self, request: Any, context: grpc.aio.ServicerContext) -> admin_pb2.Job:  # noqa: N802
        return convert.job_to_pb(self.plane.jobs.get(request.job_id))

    async def WatchJob(  # noqa: N802
        self, request: Any, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[admin_pb2.Job]:
        try:
            job = self.plane.jobs.get(request.job_id)
        except KGWeaveError as exc:
            await context.abort(to_grpc(exc), exc.message)
        yield convert.job_to_pb(job)
        while not job.state.final:  # waits in the event loop: a stream holds no thread
            job = await self.plane.jobs.next_change(job.job_id, job.revision)
            yield convert.job_to_pb(job)

    @_guard
    async def CancelJob(self, request: Any, context: grpc.aio.ServicerContext) -> admin_pb2.Job:  # noqa: N802
        return convert.job_to_pb(self.plane.jobs.cancel(request.job_id))

    @_guard
    async def WriteFacts(  # noqa: N802
        self, request: Any, context: grpc.aio.ServicerContext
    ) -> admin_pb2.WriteFactsResponse:
        done = await asyncio.to_thread(self.plane.write_facts, **convert.write_from_pb(request))
        return admin_pb2.WriteFactsResponse(**asdict(done))

    @_guard
    async def ListModels(  # noqa: N802
        self, request: Any, context: grpc.aio.ServicerContext
    ) -> admin_pb2.ListModelsResponse:
        models, active = await asyncio.to_thread(self.plane.versions.list_models)
        return admin_pb2.ListModelsResponse(
            models=[convert.model_to_pb(m) for m in models], active_version=active
        )

    @_guard
    async def ActivateModel(  # noqa: N802
        self, request: Any, context: grpc.aio.ServicerContext
    ) -> admin_pb2.ModelInfo:
        summary = await asyncio.to_thread(self.plane.versions.activate, request.version)
        return convert.model_to_pb(summary)

    @_guard
    async def RegisterModel(  # noqa: N802
        self, request_iterator: Any, context: grpc.aio.ServicerContext
    ) -> admin_pb2.RegisterModelResponse:
        with ModelUpload(self.plane.settings.jobs_dir) as upload:
            policy: str | None = None
            async for chunk in request_iterator:
                if upload.empty:
                    policy = convert.policy_from_pb(chunk.activation)
                try:
                    upload.write(chunk.path, chunk.data)
                except OSError as exc:  # "a" and "a/b" both sent, say: the client's folder
                    raise InvalidArgumentError(
                        f"RegisterModel: cannot store {echo(chunk.path)} in the model folder "
                        f"({exc.strerror or 'rejected'})"
                    ) from None
            try:
                result = await asyncio.to_thread(self.plane.register_model, upload.finish(), policy)
            except ArtifactError as exc:  # what the client sent is no model: its own error
                said = re.sub(r"\S*/model/", "", exc.message)  # (the server's staging path)
                raise InvalidArgumentError(
                    "RegisterModel: not a valid model folder: "
                    + public_message(said, self.plane.settings)
                ) from None
        activated, message = result.pop("activated"), result.pop("message")
        return admin_pb2.RegisterModelResponse(
            model=convert.model_to_pb(result), activated=activated, message=message
        )

    @_guard
    async def Status(  # noqa: N802
        self, request: Any, context: grpc.aio.ServicerContext
    ) -> admin_pb2.StatusResponse:
        return convert.status_to_pb(await asyncio.to_thread(self.plane.status))
