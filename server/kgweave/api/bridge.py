"""The engine side of the native front end: gRPC calls arrive as frames on a stream socket.

``kgweave-frontend`` (``frontend/``, C++) terminates HTTP/2 and gRPC and forwards every call,
as raw message bytes, over one socket to this process. Here each call is run by the very
method handlers the Python gRPC server registers (:class:`HandlerTable` collects them the way
a ``grpc.aio.Server`` does), with a :class:`BridgeContext` in place of the gRPC servicer
context, so answers, status codes and messages are the same on both transports.

The frames, their byte order (little-endian), sizes and the start-up handshake are specified in
``frontend/frame_protocol.md``; the constants come from :mod:`kgweave.api.frame_protocol`,
generated with the C++ side's from one definition. :func:`hello` and :func:`read_hello` are
the engine's half of the handshake (:mod:`kgweave.api.frontend` runs it).

Frames written during one event-loop turn leave in one write, and the front end coalesces its
frames the same way, so a burst of calls costs a few system calls. Unary calls of a method
with a :class:`BatchHandler` (PredictLinks) that complete in one read are answered by one
handler call, which queues them as one job for the micro-batcher: while a batch is scored, the
next calls gather in the socket, so batches grow with the load and no timer is needed.

Size (over 400 lines): one endpoint of one protocol; framing, call state, cancellation and the
batched PredictLinks path share the connection's state, so they stay together.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import grpc

from kgweave.api import frame_protocol as fp
from kgweave.api.auth import Authorizer
from kgweave.api.frame_protocol import (
    CANCEL,
    HALF_CLOSE,
    LAST,
    MESSAGE,
    OPEN,
    REFUSED,
    STATUS,
    UNARY,
)
from kgweave.api.malformed import MALFORMED
from kgweave.api.status import to_grpc
from kgweave.errors import KGWeaveError, echo

log = logging.getLogger(__name__)

_END = object()  # the client half-closed


@dataclass(frozen=True)
class Hello:
    """What a HELLO frame says: the sender's frame protocol version and software."""

    protocol: int
    software: str


def hello(software: str) -> bytes:
    """The HELLO frame this side writes first (``software``: e.g. ``kgweave 0.1.0``)."""
    name = software.encode()[: 2**16 - 1]
    payload = fp.HELLO_PREFIX.pack(fp.VERSION, len(name)) + name
    return fp.HEADER.pack(fp.AFTER_LENGTH_SIZE + len(payload), fp.HELLO, 0) + payload


def read_hello(sock: socket.socket) -> Hello | None:
    """Take the peer's HELLO from the start of what ``sock`` received so far, without waiting
    (the front end writes it before it prints ``LISTENING`` or exits, so by then it is there);
    None when the first frame is not a whole HELLO (a front end older than the handshake).
    Frames after it stay in the socket."""
    size = fp.HEADER_SIZE + fp.HELLO_PREFIX_SIZE
    try:
        head = sock.recv(size, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        if len(head) < size:
            return None
        length, kind, _ = fp.HEADER.unpack_from(head)
        if kind != fp.HELLO or not size <= fp.LENGTH_SIZE + length <= size + 2**16 - 1:
            return None
        frame = sock.recv(fp.LENGTH_SIZE + length, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        if len(frame) < fp.LENGTH_SIZE + length:
            return None
        sock.recv(len(frame))  # taken: what follows is the bridge's
    except BlockingIOError:
        return None
    protocol, name_length = fp.HELLO_PREFIX.unpack_from(frame, fp.HEADER_SIZE)
    return Hello(protocol, frame[size : size + name_length].decode(errors="replace"))


@dataclass(frozen=True)
class _Details:
    """What a generic handler is asked about (``grpc.HandlerCallDetails``)."""

    method: str
    invocation_metadata: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class BatchHandler:
    """Answers many unary calls of one method at once: ``answer(requests, deadlines)`` returns
    per call a response or ``(status code, message)``; deadlines are ``time.monotonic()``
    values or None."""

    answer: Callable[[list[Any], list[float | None]], Awaitable[list[Any]]]
    deserialize: Callable[[bytes], Any]
    serialize: Callable[[Any], bytes]


class HandlerTable:
    """Method handlers by full method path, registered like on a ``grpc.aio.Server``, plus
    batch handlers for the unary methods that score many calls in one pass."""

    def __init__(self) -> None:
        self._generic: list[grpc.GenericRpcHandler] = []
        self._methods: dict[str, grpc.RpcMethodHandler | None] = {}
        self.batch: dict[str, BatchHandler] = {}

    def add_batch_handler(self, method: str, handler: BatchHandler) -> None:
        self.batch[method] = handler

    def add_generic_rpc_handlers(self, handlers: Iterable[grpc.GenericRpcHandler]) -> None:
        self._generic.extend(handlers)

    def add_registered_method_handlers(
        self, service: str, handlers: dict[str, grpc.RpcMethodHandler]
    ) -> None:
        for name, handler in handlers.items():
            self._methods[f"/{service}/{name}"] = handler

    def unary_methods(self) -> list[str]:
        """Registered methods whose client sends exactly one message."""
        return sorted(m for m, h in self._methods.items() if h and not h.request_streaming)

    def lookup(self, method: str) -> grpc.RpcMethodHandler | None:
        if method not in self._methods:
            found = None
            for generic in self._generic:
                found = generic.service(_Details(method))
                if found is not None:
                    break
            self._methods[method] = found
        return self._methods[method]


class _Abort(grpc.aio.AbortError):  # type: ignore[misc]
    """Raised by :meth:`BridgeContext.abort`: the call ends with ``code`` and ``details``."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


class BridgeContext:
    """The parts of ``grpc.aio.ServicerContext`` the servicers use, for a forwarded call."""

    def __init__(self, bridge: Bridge, call_id: int, deadline: float | None) -> None:
        self._bridge = bridge
        self._id = call_id
        #: loop-time deadline (None: none); the status set by set_code / set_details
        self.deadline = deadline
        self.code: grpc.StatusCode | None = None
        self.details = ""
        self.cancelled_by_client = False

    def time_remaining(self) -> float | None:
        if self.deadline is None:
            return None
        return max(0.0, self.deadline - asyncio.get_running_loop().time())

    async def abort(self, code: grpc.StatusCode, details: str = "", *_: Any) -> None:
        raise _Abort(code, details)

    async def write(self, message: Any) -> None:
        self._bridge.send(MESSAGE, self._id, message.SerializeToString())

    def set_code(self, code: grpc.StatusCode) -> None:
        self.code = code

    def set_details(self, details: str) -> None:
        self.details = details

    def cancelled(self) -> bool:
        return self.cancelled_by_client

    def done(self) -> bool:
        return self.cancelled_by_client

    def peer(self) -> str:
        return "kgweave-frontend"

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return ()

    async def send_initial_metadata(self, *_: Any) -> None:
        return None

    def set_trailing_metadata(self, *_: Any) -> None:
        return None


class _Call:
    __slots__ = ("batch", "context", "handler", "inbox", "requests", "task")

    def __init__(
        self, handler: grpc.RpcMethodHandler, context: BridgeContext, batch: BatchHandler | None
    ) -> None:
        self.handler = handler
        self.context = context
        self.batch = batch
        self.requests: list[bytes] = []  # unary requests wait here for the half-close
        self.inbox: asyncio.Queue[Any] | None = None  # streaming requests
        self.task: asyncio.Task[None] | None = None


class Bridge(asyncio.Protocol):
    """One front-end connection: parses frames, runs calls, writes their answers."""

    def __init__(
        self,
        table: HandlerTable,
        on_lost: Callable[[], None] | None = None,
        authorizer: Authorizer | None = None,
        on_refused: Callable[[str, int], None] | None = None,
    ) -> None:
        self.table = table
        self.on_lost = on_lost
        #: told (method path, count) of the calls the front end refused itself (REFUSED)
        self.on_refused = on_refused
        #: the access rules every call is checked against (None: no tokens required)
        self.authorizer = authorizer
        self.loop = asyncio.get_running_loop()
        self.calls: dict[int, _Call] = {}
        self._buffer = bytearray()
        self._out: list[bytes] = []
        #: unary calls of batch-handled methods, complete and waiting for the end of the read
        self._ready: dict[BatchHandler, list[tuple[int, bytes, float | None]]] = {}
        self._transport: asyncio.Transport | None = None
        self.closed = asyncio.Event()

    # ---- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        for call in self.calls.values():
            if call.task is not None:
                call.task.cancel()
        self.calls.clear()
        self._transport = None
        self.closed.set()
        if self.on_lost is not None:
            self.on_lost()

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        offset, size = 0, len(buffer)
        while size - offset >= fp.HEADER_SIZE:
            (length,) = fp.LENGTH.unpack_from(buffer, offset)
            if size - offset - fp.LENGTH_SIZE < length:
                break
            _, kind, call_id = fp.HEADER.unpack_from(buffer, offset)
            payload = bytes(buffer[offset + fp.HEADER_SIZE : offset + fp.LENGTH_SIZE + length])
            offset += fp.LENGTH_SIZE + length
            try:
                self._frame(kind, call_id, payload)
            except Exception:  # one bad frame fails its call, never the connection
                log.exception("bad frame %d for call %d", kind, call_id)
                self.calls.pop(call_id, None)  # (the front end ignores a status it cannot place)
                self.send_status(call_id, grpc.StatusCode.INTERNAL, "malformed call")
        del buffer[:offset]

    # ---- frames in
    def _open(
        self, call_id: int, payload: bytes, prefix: struct.Struct, start: int
    ) -> tuple[_Call | None, int]:
        """The call an OPEN or UNARY frame opens (None: refused, its status sent) and where the
        rest of the payload (a UNARY frame's request) starts. ``prefix``: the frame's fixed
        fields (timeout, method and authorization lengths), ``start``: their size."""
        timeout, length, auth_length = prefix.unpack_from(payload)
        method = payload[start : start + length].decode(errors="replace")
        end = start + length + auth_length
        authorization = payload[start + length : end].decode(errors="replace")
        handler = self.table.lookup(method)
        if self.authorizer is not None and handler is not None:
            try:
                self.authorizer.check(method, authorization)
            except KGWeaveError as error:
                self.send_status(call_id, to_grpc(error), error.message)
                return None, end
        if handler is None:
            self.send_status(call_id, grpc.StatusCode.UNIMPLEMENTED, "Method not found!")
            return None, end
        deadline = self.loop.time() + timeout if timeout >= 0 else None
        call = _Call(handler, BridgeContext(self, call_id, deadline), self.table.batch.get(method))
        self.calls[call_id] = call
        return call, end

    def _frame(self, kind: int, call_id: int, payload: bytes) -> None:
        if kind == REFUSED:
            (count,) = fp.REFUSED_PREFIX.unpack_from(payload)
            method = payload[fp.REFUSED_PREFIX_SIZE :].decode(errors="replace")
            if self.on_refused is not None:
                self.on_refused(method, count)
            return
        if kind == UNARY:
            opened, end = self._open(call_id, payload, fp.UNARY_PREFIX, fp.UNARY_PREFIX_SIZE)
            if opened is not None:
                opened.requests.append(payload[end:])
                self._frame(HALF_CLOSE, call_id, b"")
            return
        if kind == OPEN:
            opened, _ = self._open(call_id, payload, fp.OPEN_PREFIX, fp.OPEN_PREFIX_SIZE)
            if opened is not None and opened.handler.request_streaming:
                opened.inbox = asyncio.Queue()
                opened.task = self.loop.create_task(self._run(call_id, opened, None))
            return
        known = self.calls.get(call_id)
        if known is None:
            return  # already answered
        call = known
        if kind == MESSAGE:
            if call.inbox is not None:
                call.inbox.put_nowait(payload)
            else:
                call.requests.append(payload)
        elif kind == HALF_CLOSE:
            if call.inbox is not None:
                call.inbox.put_nowait(_END)
            elif len(call.requests) != 1:
                self._end(call_id, grpc.StatusCode.INTERNAL, "expected exactly one request")
            elif call.batch is not None:
                if not self._ready:
                    self.loop.call_soon(self._start_batches)
                self._ready.setdefault(call.batch, []).append(
                    (call_id, call.requests[0], call.context.deadline)
                )
            else:
                call.task = self.loop.create_task(self._run(call_id, call, call.requests[0]))
        elif kind == CANCEL:
            call.context.cancelled_by_client = True
            if call.task is not None and call.batch is None:  # a batch runs on for the others
                call.task.cancel()
            self.calls.pop(call_id, None)

    # ---- running calls
    def _start_batches(self) -> None:
        ready, self._ready = self._ready, {}
        for batch, calls in ready.items():
            task = self.loop.create_task(self._run_batch(batch, calls))
            for call_id, _, _ in calls:
                if (call := self.calls.get(call_id)) is not None:
                    call.task = task

    async def _run_batch(
        self, batch: BatchHandler, calls: list[tuple[int, bytes, float | None]]
    ) -> None:
        """One batch handler call for the unary calls that became complete together."""
        requests, ids, deadlines = [], [], []
        for call_id, payload, deadline in calls:
            if call_id not in self.calls:
                continue  # cancelled meanwhile: not scored
            try:
                requests.append(batch.deserialize(payload))
            except Exception:
                self._end(call_id, grpc.StatusCode.INVALID_ARGUMENT, MALFORMED)
                continue
            ids.append(call_id)
            deadlines.append(deadline)
        if not requests:
            return
        try:
            answers = await batch.answer(requests, deadlines)
            for call_id, answer in zip(ids, answers, strict=True):
                if isinstance(answer, tuple):
                    self._end(call_id, *answer)
                else:
                    data = batch.serialize(answer)
                    if self.calls.pop(call_id, None) is not None:
                        self.send(LAST, call_id, data)
        except Exception:
            log.exception("forwarded calls failed")
        finally:  # whatever is left unanswered (an error above, a cancelled task) ends here
            for call_id in ids:
                self._end(call_id, grpc.StatusCode.INTERNAL, "internal error; see the server log")

    async def _requests(self, call: _Call) -> AsyncIterator[Any]:
        assert call.inbox is not None
        deserialize = call.handler.request_deserializer
        while (item := await call.inbox.get()) is not _END:
            try:
                request = deserialize(item) if deserialize else item
            except Exception:
                raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, MALFORMED) from None
            yield request

    async def _run(self, call_id: int, call: _Call, payload: bytes | None) -> None:
        handler, context = call.handler, call.context
        serialize = handler.response_serializer or (lambda m: m)
        try:
            if payload is not None:
                deserialize = handler.request_deserializer
                try:
                    request: Any = deserialize(payload) if deserialize else payload
                except Exception:
                    self._end(call_id, grpc.StatusCode.INVALID_ARGUMENT, MALFORMED)
                    return
            else:
                request = self._requests(call)
            function = (
                handler.unary_unary
                or handler.unary_stream
                or handler.stream_unary
                or handler.stream_stream
            )
            if handler.response_streaming:
                result = function(request, context)
                if inspect.isasyncgen(result):
                    async for message in result:
                        self.send(MESSAGE, call_id, serialize(message))
                elif inspect.isawaitable(result):
                    await result  # writes with context.write
                else:
                    raise TypeError(f"{echo(function)} is not an async streaming handler")
            else:
                if inspect.iscoroutinefunction(function):
                    response = await function(request, context)
                else:  # a blocking handler
                    response = await asyncio.to_thread(function, request, context)
                if context.code not in (None, grpc.StatusCode.OK):
                    self._end(call_id, context.code, context.details)
                    return
                data = serialize(response)  # before the call is taken: a failure answers it
                if self.calls.pop(call_id, None) is not None:
                    self.send(LAST, call_id, data)
                return
            self._end(call_id, context.code or grpc.StatusCode.OK, context.details)
        except _Abort as exc:
            self._end(call_id, exc.code, exc.details)
        except asyncio.CancelledError:
            self.calls.pop(call_id, None)  # the client cancelled: nobody to answer
        except Exception:
            log.exception("forwarded call %s failed", call_id)
            self._end(call_id, grpc.StatusCode.INTERNAL, "internal error; see the server log")

    def _end(self, call_id: int, code: grpc.StatusCode, details: str) -> None:
        if self.calls.pop(call_id, None) is not None:
            self.send_status(call_id, code, details)

    # ---- frames out
    def send_status(self, call_id: int, code: grpc.StatusCode, details: str) -> None:
        self.send(STATUS, call_id, fp.STATUS_PREFIX.pack(code.value[0]) + details.encode())

    def send(self, kind: int, call_id: int, payload: bytes) -> None:
        """Queue a frame; everything queued in one loop turn leaves in one write."""
        if not self._out:
            self.loop.call_soon(self._flush)
        self._out.append(fp.HEADER.pack(fp.AFTER_LENGTH_SIZE + len(payload), kind, call_id))
        self._out.append(payload)

    def _flush(self) -> None:
        out, self._out = self._out, []
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(b"".join(out))

    def close(self) -> None:
        if self._transport is not None:
            with contextlib.suppress(Exception):
                self._transport.close()
