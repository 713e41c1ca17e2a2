"""Calling the servicers in-process: what the CLI's local commands
(:class:`~kgweave.api.client.LocalClient`) and the HTTP/JSON gateway (:mod:`kgweave.api.http`)
hand them in place of a gRPC call's context."""

from __future__ import annotations

import time
from typing import NoReturn

import grpc

from kgweave.api.status import from_status


class InProcessContext:
    """What the servicers use of ``grpc.aio.ServicerContext``: an optional deadline, and
    ``abort`` (where the servicers' guard sends every error) raising the kgweave error of the
    status code, which the caller maps as it maps any other (exit code, HTTP status)."""

    def __init__(self, timeout: float | None = None) -> None:
        self._deadline = time.monotonic() + timeout if timeout else None

    def time_remaining(self) -> float | None:
        return None if self._deadline is None else self._deadline - time.monotonic()

    async def abort(self, code: grpc.StatusCode, details: str = "") -> NoReturn:
        raise from_status(code, details)
