"""Typed errors of kgweave's core.

Every error a user can cause is one of these. Transports map them in one place: the CLI turns
them into one readable line and an exit code (``kgweave.cli.main``); an error's ``code`` is
its gRPC status code by name (``kgweave.api.status``) and its HTTP status by
:data:`HTTP_STATUS` (``kgweave.api.http``). Nothing here imports a transport.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum
from typing import Any


class ErrorCode(StrEnum):
    """Transport-neutral error categories (they mirror gRPC's canonical codes)."""

    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    NOT_FOUND = "NOT_FOUND"
    FAILED_PRECONDITION = "FAILED_PRECONDITION"
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
    UNAVAILABLE = "UNAVAILABLE"
    DATA_LOSS = "DATA_LOSS"
    INTERNAL = "INTERNAL"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    PERMISSION_DENIED = "PERMISSION_DENIED"


#: The HTTP status of each category, beside its gRPC code (the member's name): google.rpc's
#: own mapping of its canonical codes to HTTP, which gRPC-JSON gateways use too.
HTTP_STATUS: dict[ErrorCode, int] = {
    ErrorCode.INVALID_ARGUMENT: 400,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.FAILED_PRECONDITION: 400,
    ErrorCode.RESOURCE_EXHAUSTED: 429,
    ErrorCode.DEADLINE_EXCEEDED: 504,
    ErrorCode.UNAVAILABLE: 503,
    ErrorCode.DATA_LOSS: 500,
    ErrorCode.INTERNAL: 500,
    ErrorCode.UNAUTHENTICATED: 401,
    ErrorCode.PERMISSION_DENIED: 403,
}


class KGWeaveError(Exception):
    """Base class: a one-line, user-facing message plus a category.

    A subclass names its category and CLI exit code as class keywords:
    ``class NotFoundError(KGWeaveError, code=ErrorCode.NOT_FOUND, exit_code=3)``.
    """

    code: ErrorCode = ErrorCode.INTERNAL
    exit_code: int = 1

    def __init_subclass__(
        cls, *, code: ErrorCode | None = None, exit_code: int | None = None, **kwargs: Any
    ) -> None:
        super().__init_subclass__(**kwargs)
        if code is not None:
            cls.code = code
        if exit_code is not None:
            cls.exit_code = exit_code

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class InvalidArgumentError(KGWeaveError, code=ErrorCode.INVALID_ARGUMENT, exit_code=2):
    """A request or setting that can never be valid (k out of range, unknown model name)."""


class NotFoundError(KGWeaveError, code=ErrorCode.NOT_FOUND, exit_code=3):
    """Something named by the user does not exist (entity, relation, dataset, model folder)."""


class DatasetError(KGWeaveError, code=ErrorCode.INVALID_ARGUMENT, exit_code=4):
    """A dataset file is malformed; the message names the file and line."""


class ArtifactError(KGWeaveError, code=ErrorCode.DATA_LOSS, exit_code=5):
    """A model artifact is missing parts, corrupt, or its parts disagree."""


class DivergedError(KGWeaveError, code=ErrorCode.FAILED_PRECONDITION, exit_code=10):
    """Training diverged: the loss, the weights or the scores are NaN or infinite, so the
    model is refused (never evaluated as good, written as an artifact, or served)."""


class GraphUnavailableError(KGWeaveError, code=ErrorCode.UNAVAILABLE, exit_code=7):
    """The graph database could not be started or reached."""


class ServiceUnavailableError(KGWeaveError, code=ErrorCode.UNAVAILABLE, exit_code=7):
    """The kgweave server cannot be reached."""


class FailedPreconditionError(KGWeaveError, code=ErrorCode.FAILED_PRECONDITION, exit_code=6):
    """The system is not in a state to do this yet (no model trained, offline download)."""


class ResourceExhaustedError(KGWeaveError, code=ErrorCode.RESOURCE_EXHAUSTED, exit_code=8):
    """The server is saturated (scoring queue full); retrying later can succeed."""


class DeadlineExceededError(KGWeaveError, code=ErrorCode.DEADLINE_EXCEEDED, exit_code=9):
    """The caller's deadline passed before the answer was ready."""


class UnauthenticatedError(KGWeaveError, code=ErrorCode.UNAUTHENTICATED, exit_code=10):
    """A call without a valid bearer token where the server requires one."""


class PermissionDeniedError(KGWeaveError, code=ErrorCode.PERMISSION_DENIED, exit_code=11):
    """A valid token that may not do this (a read-only token on an admin operation)."""


#: the most candidates a "did you mean" suggestion compares ``name`` with: beyond it, those
#: nearest ``name`` in sorted order (a typo after the first characters is still found), so an
#: unknown name costs milliseconds, not a scan of a large graph's every entity
SUGGEST_SCAN = 2000


def closest_names(name: str, candidates: list[str], n: int = 3) -> list[str]:
    """Up to ``n`` candidates that look like ``name``, for "did you mean" suggestions."""
    import bisect
    import difflib

    if len(candidates) > SUGGEST_SCAN:
        pool = sorted(candidates)
        at = bisect.bisect_left(pool, name)
        candidates = pool[max(0, at - SUGGEST_SCAN // 2) : at + SUGGEST_SCAN // 2]
    return difflib.get_close_matches(name, candidates, n=n, cutoff=0.6)


def did_you_mean(name: str, candidates: list[str]) -> str:
    """`` (did you mean 'a', 'b'?)`` naming the candidates closest to ``name`` (each cut like
    :func:`echo`), or "" when none is close: the end of a "not found" message."""
    hint = closest_names(name, candidates)
    return f" (did you mean {', '.join(map(echo, hint))}?)" if hint else ""


#: the most characters of a value (a name, a URI, a field) that an error message repeats: a
#: 20 KB unknown name must not make a 20 KB message (gRPC refuses status details beyond its
#: metadata limit and the call would fail RESOURCE_EXHAUSTED instead of NOT_FOUND)
ECHO_MAX_CHARS = 80


def echo(value: object, limit: int = ECHO_MAX_CHARS) -> str:
    """``value`` quoted for an error message (``repr``: one line, quotes, escapes), cut after
    ``limit`` characters with "…". Every message that repeats what a user gave uses it."""
    if isinstance(value, str | bytes):
        cut = len(value) > limit
        return repr(value[:limit]) + ("…" if cut else "")
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "…"


def echo_all(values: Sequence[object], most: int = 5) -> str:
    """Up to ``most`` of ``values`` quoted by :func:`echo`, comma-separated, then how many
    there were when some were left out."""
    shown = ", ".join(echo(v) for v in values[:most])
    return shown if len(values) <= most else f"{shown}, … ({len(values)} in all)"
