"""kgweave errors <-> gRPC status codes: the one place where they are mapped."""

from __future__ import annotations

import grpc

from kgweave.errors import (
    DeadlineExceededError,
    ErrorCode,
    FailedPreconditionError,
    InvalidArgumentError,
    KGWeaveError,
    NotFoundError,
    PermissionDeniedError,
    ResourceExhaustedError,
    ServiceUnavailableError,
    UnauthenticatedError,
)

#: every category's gRPC code is its own name (its HTTP status: kgweave.errors.HTTP_STATUS)
TO_GRPC: dict[ErrorCode, grpc.StatusCode] = {
    code: grpc.StatusCode[code.value] for code in ErrorCode
}

_FROM_GRPC: dict[grpc.StatusCode, type[KGWeaveError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgumentError,
    grpc.StatusCode.OUT_OF_RANGE: InvalidArgumentError,
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPreconditionError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhaustedError,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceededError,
    grpc.StatusCode.UNAVAILABLE: ServiceUnavailableError,
    grpc.StatusCode.UNAUTHENTICATED: UnauthenticatedError,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDeniedError,
}


def to_grpc(error: KGWeaveError) -> grpc.StatusCode:
    """The status code a servicer answers ``error`` with."""
    return TO_GRPC.get(error.code, grpc.StatusCode.INTERNAL)


def from_rpc_error(error: grpc.RpcError, address: str) -> KGWeaveError:
    """A client-side kgweave error for a failed call (one readable line)."""
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    details = (error.details() if hasattr(error, "details") else None) or str(code)
    if code == grpc.StatusCode.UNAVAILABLE:
        return ServiceUnavailableError(
            f"no kgweave server answers at {address}: start one with `kgweave serve`, set "
            "KGWEAVE_SERVER, or, if it serves TLS, KGWEAVE_TLS_CA (docs/security.md)"
        )
    return from_status(code, details)


def from_status(code: grpc.StatusCode, details: str) -> KGWeaveError:
    """The kgweave error a status code and its message stand for."""
    known = _FROM_GRPC.get(code)
    if known is not None:
        return known(details)
    error = KGWeaveError(details)
    error.code = ErrorCode.__members__.get(code.name, ErrorCode.INTERNAL)
    return error
