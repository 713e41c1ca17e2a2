"""Request bytes that do not decode end the call ``INVALID_ARGUMENT`` "malformed request
message" on the Python gRPC server, as on the native front end (:mod:`kgweave.api.bridge`).

``grpc.aio`` ends such a call ``UNKNOWN`` with the decoder's exception name. :class:`Guarded`
stands for the server while the servicers register: each handler gets a request decoder that
turns undecodable bytes into a marker, and a behaviour that aborts on the marker before the
servicer runs (for a client stream: when the stream reaches it).
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import grpc

#: the status details of a call whose request bytes do not decode (both front ends)
MALFORMED = "malformed request message"
_MARK = object()  # what a request that did not decode becomes


def _decoder(decode: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    def safe(data: bytes) -> Any:
        try:
            return decode(data)
        except Exception:
            return _MARK

    return safe


async def _check(request: Any, context: Any) -> None:
    if request is _MARK:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, MALFORMED)


async def _checked(requests: AsyncIterator[Any], context: Any) -> AsyncIterator[Any]:
    async for request in requests:
        await _check(request, context)
        yield request


def guard(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """``handler`` answering undecodable requests ``INVALID_ARGUMENT`` (async behaviours; any
    other handler is returned as it is)."""
    behaviour = (
        handler.unary_unary or handler.unary_stream or handler.stream_unary or handler.stream_stream
    )
    if handler.request_deserializer is None:
        return handler
    if inspect.iscoroutinefunction(behaviour):

        async def answer(request: Any, context: Any) -> Any:
            if handler.request_streaming:
                return await behaviour(_checked(request, context), context)
            await _check(request, context)
            return await behaviour(request, context)

        wrapped: Callable[..., Any] = answer
    elif inspect.isasyncgenfunction(behaviour):

        async def stream(request: Any, context: Any) -> AsyncIterator[Any]:
            if handler.request_streaming:
                request = _checked(request, context)
            else:
                await _check(request, context)
            async for response in behaviour(request, context):
                yield response

        wrapped = stream
    else:
        return handler
    make = {
        (False, False): grpc.unary_unary_rpc_method_handler,
        (False, True): grpc.unary_stream_rpc_method_handler,
        (True, False): grpc.stream_unary_rpc_method_handler,
        (True, True): grpc.stream_stream_rpc_method_handler,
    }[(handler.request_streaming, handler.response_streaming)]
    return make(
        wrapped,
        request_deserializer=_decoder(handler.request_deserializer),
        response_serializer=handler.response_serializer,
    )


class _GuardedGeneric(grpc.GenericRpcHandler):  # type: ignore[misc]
    def __init__(self, inner: grpc.GenericRpcHandler) -> None:
        self.inner = inner
        self.guarded: dict[str, grpc.RpcMethodHandler] = {}

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        known = self.guarded.get(details.method)
        if known is None and (found := self.inner.service(details)) is not None:
            known = self.guarded[details.method] = guard(found)  # (unknown names: not kept)
        return known


class Guarded:
    """A ``grpc.aio.Server`` as the ``add_*_to_server`` functions see it: what they register
    is :func:`guard` ed."""

    def __init__(self, server: Any) -> None:
        self.server = server

    def add_generic_rpc_handlers(self, handlers: Iterable[grpc.GenericRpcHandler]) -> None:
        self.server.add_generic_rpc_handlers([_GuardedGeneric(h) for h in handlers])

    def add_registered_method_handlers(
        self, service: str, handlers: dict[str, grpc.RpcMethodHandler]
    ) -> None:
        guarded = {name: guard(handler) for name, handler in handlers.items()}
        self.server.add_registered_method_handlers(service, guarded)
