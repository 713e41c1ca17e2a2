"""Who may call what: bearer tokens, TLS files, and the start-up checks of ``kgweave serve``.

The rules are written once, here (:class:`Authorizer`), and every face asks them by gRPC
method path: the grpc.aio front end through :class:`AuthInterceptor`, the native front end
in the engine (:class:`kgweave.api.bridge.Bridge`, which receives each call's
``authorization`` metadata in its OPEN or UNARY frame), the HTTP side by the path of the
servicer method a route calls (``POST /v1/changes``: :data:`CHANGES`). docs/security.md
tells users what is open and what needs which token.
"""

from __future__ import annotations

import enum
import hashlib
import ipaddress
import json
import logging
import secrets
import ssl
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from kgweave.api.status import to_grpc
from kgweave.errors import (
    FailedPreconditionError,
    InvalidArgumentError,
    KGWeaveError,
    PermissionDeniedError,
    UnauthenticatedError,
    echo,
)
from kgweave.private import private_dir, write_private
from kgweave.settings import Settings

log = logging.getLogger(__name__)

_ADMIN = "/kgweave.v1.AdminService/"
#: the HTTP route for change events, named like a method for the rules below
CHANGES = "POST /v1/changes"
#: Prometheus metrics over HTTP (open unless ``KGWEAVE_AUTH_METRICS``)
METRICS = "GET /metrics"
#: what needs the admin token
ADMIN_METHODS = frozenset(
    {
        _ADMIN + "StartTraining",
        _ADMIN + "CancelJob",
        _ADMIN + "ActivateModel",
        _ADMIN + "RegisterModel",
        CHANGES,
    }
)
#: what needs no token at all (health probes); anything else needs a token
OPEN_METHODS = frozenset(
    {"/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch", "GET /healthz"}
)


class Role(enum.IntEnum):
    """What a token may do; a higher role may do all a lower one may."""

    READ = 1
    ADMIN = 2


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class Authorizer:
    """The access rules and the valid tokens (kept as SHA-256 digests)."""

    def __init__(self, tokens: Mapping[str, Role], open_methods: Iterable[str] = OPEN_METHODS):
        self._roles = {_digest(t): role for t, role in tokens.items()}
        self.open_methods = frozenset(open_methods)

    def required(self, method: str) -> Role | None:
        """The role ``method`` needs (None: open to anyone)."""
        if method in self.open_methods:
            return None
        return Role.ADMIN if method in ADMIN_METHODS else Role.READ

    def check(self, method: str, authorization: str | None) -> None:
        """Raise :class:`UnauthenticatedError` or :class:`PermissionDeniedError` unless
        ``authorization`` (the header's value, ``Bearer <token>``) may call ``method``."""
        needed = self.required(method)
        if needed is None:
            return
        scheme, _, token = (authorization or "").strip().partition(" ")
        if not authorization:
            raise UnauthenticatedError(
                "this server requires a bearer token: send the header `authorization: Bearer "
                "<token>` (KGWEAVE_TOKEN for the kgweave CLI and client)"
            )
        if scheme.lower() != "bearer" or not token.strip():
            raise UnauthenticatedError("the authorization header must be `Bearer <token>`")
        role = self._roles.get(_digest(token.strip()))
        if role is None:
            raise UnauthenticatedError("invalid token")
        if role < needed:
            name = method.rsplit("/", 1)[-1] if method.startswith("/") else method
            raise PermissionDeniedError(f"{name} needs the admin token (this one is read-only)")


# ---- settings -> what the server enforces


@dataclass(frozen=True)
class TLSFiles:
    """The server's certificate chain and key, and the CAs of client certificates (mTLS)."""

    cert: Path
    key: Path
    client_ca: Path | None = None

    def read(self) -> tuple[bytes, bytes, bytes | None]:
        """Certificate chain, key, client CAs (None: no client certificates asked)."""
        ca = self.client_ca.read_bytes() if self.client_ca is not None else None
        return self.cert.read_bytes(), self.key.read_bytes(), ca


@dataclass(frozen=True)
class Security:
    """What a started ``kgweave serve`` enforces: TLS (None: plain) and tokens (None: off)."""

    tls: TLSFiles | None = None
    authorizer: Authorizer | None = None


def _readable(path: Path, what: str, setting: str) -> Path:
    path = path.expanduser()
    try:
        with path.open("rb") as handle:
            handle.read(1)
    except OSError as exc:
        raise InvalidArgumentError(
            f"{setting}: cannot read the {what} {echo(str(path))}: {exc.strerror}"
        ) from None
    return path


def tls_files(settings: Settings) -> TLSFiles | None:
    """The server's TLS files from the settings, checked now: readable, PEM, the key matching
    the certificate. None when TLS is off."""
    if settings.tls_cert is None and settings.tls_key is None:
        if settings.tls_client_ca is not None:
            raise InvalidArgumentError(
                "KGWEAVE_TLS_CLIENT_CA needs TLS: set KGWEAVE_TLS_CERT and KGWEAVE_TLS_KEY too"
            )
        return None
    if settings.tls_cert is None or settings.tls_key is None:
        raise InvalidArgumentError("set both KGWEAVE_TLS_CERT and KGWEAVE_TLS_KEY (or neither)")
    cert = _readable(settings.tls_cert, "certificate", "KGWEAVE_TLS_CERT")
    key = _readable(settings.tls_key, "key", "KGWEAVE_TLS_KEY")
    ca = settings.tls_client_ca
    if ca is not None:
        ca = _readable(ca, "client CA", "KGWEAVE_TLS_CLIENT_CA")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cert, key)
    except ssl.SSLError as exc:
        raise InvalidArgumentError(
            f"KGWEAVE_TLS_CERT/KGWEAVE_TLS_KEY: {echo(str(cert))} and {echo(str(key))} are not "
            f"a PEM certificate and its key ({exc.reason or exc})"
        ) from None
    if ca is not None:
        try:
            context.load_verify_locations(ca)
        except ssl.SSLError as exc:
            raise InvalidArgumentError(
                f"KGWEAVE_TLS_CLIENT_CA: {echo(str(ca))} holds no PEM CA certificate "
                f"({exc.reason or exc})"
            ) from None
    return TLSFiles(cert, key, ca)


def _setting_tokens(settings: Settings) -> dict[str, Role]:
    tokens: dict[str, Role] = {}
    if settings.read_tokens is not None:
        for token in settings.read_tokens.get_secret_value().split(","):
            if token.strip():
                tokens[token.strip()] = Role.READ
    if settings.admin_token is not None and settings.admin_token.get_secret_value().strip():
        tokens[settings.admin_token.get_secret_value().strip()] = Role.ADMIN
    return tokens


def _file_tokens(path: Path) -> dict[str, Role]:
    """The tokens of a tokens file: ``{"admin": "...", "read": ["...", ...]}``, mode 0600."""
    mode = path.stat().st_mode
    if mode & 0o077:
        raise FailedPreconditionError(
            f"{path} is readable by others (mode {mode & 0o777:o}): chmod 600 {path}"
        )
    try:
        content = json.loads(path.read_text())
        admin = content.get("admin") or ""
        read = content.get("read") or []
        if not isinstance(admin, str) or not all(isinstance(t, str) for t in read):
            raise ValueError("admin is a string, read a list of strings")
    except (OSError, ValueError, AttributeError, TypeError) as exc:
        raise FailedPreconditionError(
            f'{path}: expected {{"admin": "TOKEN", "read": ["TOKEN", ...]}} ({exc})'
        ) from None
    tokens = {t: Role.READ for t in read if t}
    if admin:
        tokens[admin] = Role.ADMIN
    return tokens


def new_token(role: Role) -> str:
    """A fresh random token; its prefix says its role (``kgw_admin_...``, ``kgw_read_...``)."""
    return f"kgw_{role.name.lower()}_{secrets.token_urlsafe(32)}"


def load_tokens(settings: Settings, say: Callable[[str], None] = log.warning) -> dict[str, Role]:
    """The valid tokens (settings, then the tokens file); with none anywhere, a tokens file
    with a new admin and a new read token is written and ``say`` tells where."""
    tokens = _setting_tokens(settings)
    path = settings.tokens_file
    if path.is_file():
        tokens.update(_file_tokens(path))
    if not tokens:
        admin, read = new_token(Role.ADMIN), new_token(Role.READ)
        write_private(path, json.dumps({"admin": admin, "read": [read]}, indent=2) + "\n")
        say(f"auth is on and no token was set: wrote an admin and a read token to {path} (0600)")
        tokens = {admin: Role.ADMIN, read: Role.READ}
    return tokens


def auth_required(settings: Settings) -> bool:
    """Whether ``kgweave serve`` asks for tokens: KGWEAVE_AUTH, or tokens set."""
    return settings.auth or bool(_setting_tokens(settings))


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a bind address) is reachable from this machine only."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def bind_hosts(settings: Settings) -> list[str]:
    """Every address ``kgweave serve`` binds: gRPC's and HTTP's."""
    return [settings.grpc_host, settings.http_host or settings.grpc_host]


def load_security(settings: Settings, say: Callable[[str], None] = log.warning) -> Security:
    """Check the security settings of ``kgweave serve`` before anything starts: TLS files,
    tokens, and no open door (a non-loopback bind address with auth off is refused unless
    KGWEAVE_ALLOW_INSECURE). Every problem is one :class:`KGWeaveError` line. The data folder
    is created 0700 when missing."""
    tls = tls_files(settings)
    private_dir(settings.data_dir)
    exposed = [h for h in dict.fromkeys(bind_hosts(settings)) if not is_loopback(h)]
    if not auth_required(settings):
        if exposed and not settings.allow_insecure:
            raise FailedPreconditionError(
                f"refusing to serve {', '.join(exposed)} without authentication: set "
                "KGWEAVE_AUTH=true (tokens in the data folder's tokens.json) or "
                "KGWEAVE_ADMIN_TOKEN, or KGWEAVE_ALLOW_INSECURE=true to serve it open"
            )
        return Security(tls, None)
    if exposed and tls is None:
        say(
            f"serving {', '.join(exposed)} with tokens but without TLS: tokens cross the "
            "network in clear text (set KGWEAVE_TLS_CERT and KGWEAVE_TLS_KEY)"
        )
    open_methods = OPEN_METHODS if settings.auth_metrics else OPEN_METHODS | {METRICS}
    return Security(tls, Authorizer(load_tokens(settings, say), open_methods))


# ---- grpc.aio


def _denied(handler: grpc.RpcMethodHandler, error: KGWeaveError) -> grpc.RpcMethodHandler:
    """A handler of ``handler``'s kind that ends the call with ``error`` unread."""
    code = to_grpc(error)

    async def deny(_request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await context.abort(code, error.message)

    async def deny_stream(_request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await context.abort(code, error.message)
        yield  # (an async generator, like the handler it stands in for)

    kinds: dict[tuple[bool, bool], Callable[..., grpc.RpcMethodHandler]] = {
        (False, False): grpc.unary_unary_rpc_method_handler,
        (False, True): grpc.unary_stream_rpc_method_handler,
        (True, False): grpc.stream_unary_rpc_method_handler,
        (True, True): grpc.stream_stream_rpc_method_handler,
    }
    streaming = (handler.request_streaming, handler.response_streaming)
    return kinds[streaming](
        deny_stream if handler.response_streaming else deny,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


class AuthInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """The grpc.aio front end's check: every call by the :class:`Authorizer`'s rules."""

    def __init__(self, authorizer: Authorizer) -> None:
        self.authorizer = authorizer

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None:
            return handler
        metadata = dict(details.invocation_metadata or ())
        authorization = metadata.get("authorization")
        try:
            self.authorizer.check(
                details.method, authorization if isinstance(authorization, str) else None
            )
        except KGWeaveError as error:
            return _denied(handler, error)
        return handler


# ---- clients


def channel_credentials(settings: Settings) -> grpc.ChannelCredentials | None:
    """The TLS credentials a client uses for ``KGWEAVE_SERVER`` (None: plaintext)."""
    if not (settings.tls or settings.tls_ca or settings.tls_client_cert):
        return None
    root = None
    if settings.tls_ca is not None:
        root = _readable(settings.tls_ca, "CA", "KGWEAVE_TLS_CA").read_bytes()
    chain = key = None
    if (settings.tls_client_cert is None) != (settings.tls_client_key is None):
        raise InvalidArgumentError(
            "set both KGWEAVE_TLS_CLIENT_CERT and KGWEAVE_TLS_CLIENT_KEY (or neither)"
        )
    if settings.tls_client_cert is not None and settings.tls_client_key is not None:
        name = "KGWEAVE_TLS_CLIENT_CERT"
        chain = _readable(settings.tls_client_cert, "certificate", name).read_bytes()
        key = _readable(settings.tls_client_key, "key", "KGWEAVE_TLS_CLIENT_KEY").read_bytes()
    return grpc.ssl_channel_credentials(root, key, chain)
