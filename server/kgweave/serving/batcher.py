"""Micro-batching of link-prediction queries: many callers, one scoring pass, one top-k.

Callers submit already-resolved queries (ids) together with the model version they captured;
one job may carry the queries of many calls (the native front end's bridge submits a whole
burst of calls as one job).
One worker thread takes the first waiting request and every other waiting one and, under
load, lets more join for at most ``max_wait_s`` or until ``max_batch`` queries are gathered.
It answers the requests of the batch that share a version with one ``(B, N)`` scoring pass
and one top-k. Requests whose
deadline has passed are answered with :class:`DeadlineExceededError` without being scored.

A request carries either a :class:`concurrent.futures.Future` (blocking callers) or an
:class:`asyncio.Future` of an event loop (the gRPC servicers). Answers for asyncio futures are
handed to their loop with one ``call_soon_threadsafe`` per batch, not one wake-up per request.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import torch

from kgweave.errors import DeadlineExceededError, ResourceExhaustedError
from kgweave.predict import TopK
from kgweave.serving.served import ServedModel

log = logging.getLogger(__name__)

Answer = TopK
AnyFuture = Future[Answer] | asyncio.Future[Answer]


@dataclass
class PredictJob:
    """Queries scored together. ``hr``: shape (B, 2) on the CPU; ``filter_known``: for all
    rows, or per row (bool tensor of shape (B,)). The answer is a :class:`TopK` of B rows."""

    model: ServedModel
    hr: torch.Tensor
    k: int
    filter_known: bool | torch.Tensor
    deadline: float | None = None  # time.monotonic() value
    future: AnyFuture = field(default_factory=Future)


class MicroBatcher:
    """A queue in front of one scoring thread, bounded in queries (``max_queue``, the
    ``KGWEAVE_QUEUE_MAX`` setting): a job of many queries counts as many, whichever front end
    or caller queued it."""

    def __init__(
        self,
        max_batch: int = 256,
        max_wait_s: float = 0.001,
        max_queue: int = 4096,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.max_queue = max_queue
        self._queue: queue.Queue[PredictJob | None] = queue.Queue()
        self._waiting = 0  # queries queued, not yet taken by the worker
        self._count_lock = threading.Lock()
        self._on_batch = on_batch
        self._thread = threading.Thread(target=self._run, name="kgweave-batcher", daemon=True)
        self._closed = False
        self._last_batch = 0
        self._thread.start()

    @property
    def depth(self) -> int:
        """Queries waiting."""
        return self._waiting

    def submit(self, job: PredictJob) -> AnyFuture:
        """Queue ``job``; raises :class:`ResourceExhaustedError` when its queries would take
        the queries waiting past ``max_queue``."""
        if self._closed:
            raise ResourceExhaustedError("the server is shutting down")
        rows = len(job.hr)
        with self._count_lock:
            if self._waiting + rows > self.max_queue:
                raise self.full(self._waiting)
            self._waiting += rows
        self._queue.put_nowait(job)
        return job.future

    def full(self, waiting: int) -> ResourceExhaustedError:
        """The refusal of queries that would take ``waiting`` queries past ``max_queue``."""
        return ResourceExhaustedError(
            f"the scoring queue is full ({waiting} of {self.max_queue} queries waiting); "
            "retry later"
        )

    def _taken(self, job: PredictJob) -> PredictJob:
        """``job`` left the queue: its queries no longer wait."""
        with self._count_lock:
            self._waiting -= len(job.hr)
        return job

    def run_now(self, job: PredictJob) -> None:
        """Score ``job`` in the calling thread, as one batch of its own, and complete its
        future: for a caller that already holds a batch (the native front end's bridge
        gathers concurrent calls itself) and would only lose time handing it to the worker."""
        if self._closed:
            raise ResourceExhaustedError("the server is shutting down")
        settled: list[tuple[PredictJob, Answer | BaseException]] = []
        try:
            self._answer([job], settled)
        except Exception as exc:
            log.exception("scoring batch failed")
            settled = [(job, exc)]
        for item, outcome in settled:
            _settle(item.future, outcome)

    def close(self, timeout: float = 5.0) -> None:
        """Answer what is queued, then stop the worker."""
        self._closed = True
        self._queue.put(None)
        self._thread.join(timeout)

    # ---- the worker
    def _gather(self, first: PredictJob) -> tuple[list[PredictJob], bool]:
        batch, rows = [first], len(first.hr)
        # wait for company only under load (the last batch had several callers): a lone
        # caller is answered at once
        wait = self.max_wait_s if self._last_batch > 1 else 0.0
        until = time.monotonic() + wait
        while rows < self.max_batch:
            remaining = until - time.monotonic()
            try:
                item = (
                    self._queue.get(timeout=remaining)
                    if remaining > 0
                    else self._queue.get_nowait()
                )
            except queue.Empty:
                break
            if item is None:
                return batch, True
            batch.append(self._taken(item))
            rows += len(item.hr)
        return batch, False

    def _run(self) -> None:
        stop = False
        while not stop:
            first = self._queue.get()
            if first is None:
                break
            batch, stop = self._gather(self._taken(first))
            self._last_batch = len(batch)
            groups: dict[int, list[PredictJob]] = {}
            for job in batch:
                groups.setdefault(id(job.model), []).append(job)
            for jobs in groups.values():
                settled: list[tuple[PredictJob, Answer | BaseException]] = []
                try:
                    self._answer(jobs, settled)
                except Exception as exc:  # a bug must not kill the worker: fail these requests
                    log.exception("scoring batch failed")
                    answered = {id(job) for job, _ in settled}
                    settled += [(job, exc) for job in jobs if id(job) not in answered]
                _deliver(settled)
        # anything left after close(): refuse
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                _deliver(
                    [(self._taken(item), ResourceExhaustedError("the server is shutting down"))]
                )

    def _answer(
        self, jobs: list[PredictJob], settled: list[tuple[PredictJob, Answer | BaseException]]
    ) -> None:
        """Score the live jobs of one version; their outcomes are appended to ``settled``."""
        now = time.monotonic()
        live = []
        for job in jobs:
            if job.future.cancelled():
                continue
            if job.deadline is not None and now >= job.deadline:
                settled.append(
                    (job, DeadlineExceededError("the deadline passed before the query was scored"))
                )
                continue
            live.append(job)
        if not live:
            return
        model = live[0].model
        hr = torch.cat([job.hr for job in live]).to(model.device)  # (B, 2)
        filter_rows = torch.cat(
            [
                job.filter_known
                if isinstance(job.filter_known, torch.Tensor)
                else torch.full((len(job.hr),), job.filter_known, dtype=torch.bool)
                for job in live
            ]
        )
        k = max(job.k for job in live)
        answers = model.predictor.top_ids(hr, k, filter_rows)
        if self._on_batch is not None:
            self._on_batch(len(hr))
        start = 0
        for job in live:
            settled.append((job, answers.rows(start, start + len(job.hr), job.k)))
            start += len(job.hr)


def _settle(future: AnyFuture, outcome: Answer | BaseException) -> None:
    if future.done():  # cancelled by its caller meanwhile
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


def _settle_all(items: list[tuple[AnyFuture, Answer | BaseException]]) -> None:
    for future, outcome in items:
        _settle(future, outcome)


def _deliver(settled: list[tuple[PredictJob, Answer | BaseException]]) -> None:
    """Complete the futures of ``settled``: thread futures at once, asyncio futures in their
    own loop, one wake-up per loop."""
    by_loop: dict[int, tuple[asyncio.AbstractEventLoop, list[tuple[AnyFuture, Any]]]] = {}
    for job, outcome in settled:
        if isinstance(job.future, asyncio.Future):
            loop = job.future.get_loop()
            by_loop.setdefault(id(loop), (loop, []))[1].append((job.future, outcome))
        else:
            _settle(job.future, outcome)
    for loop, items in by_loop.values():
        try:
            loop.call_soon_threadsafe(_settle_all, items)
        except RuntimeError:  # the loop is closed: nobody is waiting any more
            log.debug("dropped %d answers for a closed event loop", len(items))
