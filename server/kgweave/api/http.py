"""The HTTP side of ``kgweave serve``: metrics, health, change events and the JSON gateway.

Served by Hypercorn (an ASGI server on h11) in its own thread with its own event loop, so
neither slow clients nor HTTP calls ever run on the gRPC loop. What bounds it
(:class:`HTTPLimits`):

* a connection that has not sent a whole request head within ``idle_timeout_s`` is closed
  (Hypercorn's keep-alive timer runs from the connection's start until a request head is
  complete, and again between requests): half-sent requests cost a socket each, never a
  thread, and not for long;
* a body must arrive within ``body_timeout_s`` (else 408) and be at most ``max_body_bytes``
  (else 413), counted as it arrives, so neither ``Content-Length`` nor chunked framing can
  bypass the cap; malformed framing (``Content-Length: -1`` or ``abc``, a body cut short)
  is refused with 400 by h11 before the application sees the request;
* at most ``max_requests`` requests are read or answered at once (else 429 with
  ``Retry-After``); ``/healthz`` and ``/metrics`` are answered whatever the load;
* the listen backlog is ``backlog``;
* on stop, requests in flight may finish within ``grace_s``.

Routes: ``GET /metrics`` (Prometheus), ``GET /healthz``, ``POST /v1/changes`` (change events
into the durable log) and the JSON gateway, whose bodies and answers are the gRPC messages in
the protobuf JSON mapping (camelCase or snake_case accepted; answers in camelCase with every
field present), answered by the same servicers as gRPC:

=========================  ==============================
``POST /v1/predict``       KnowledgeService.PredictLinks
``POST /v1/score``         KnowledgeService.ScoreTriples
``POST /v1/verbalize``     KnowledgeService.Verbalize
``POST /v1/complete``      KnowledgeService.Complete
``POST /v1/search``        KnowledgeService.SearchEntities
``GET /v1/entities/{id}``  KnowledgeService.GetEntity (``?maxFacts=N``)
``GET /v1/status``         AdminService.Status
=========================  ==============================

Every error is ``{"code": "NOT_FOUND", "message": "..."}`` with the HTTP status of its code
(:data:`kgweave.errors.HTTP_STATUS`, the table the gRPC codes come from too). POST bodies must
be ``Content-Type: application/json`` (415 otherwise: a web page cannot post JSON across
origins without a CORS preflight, which this server never grants).

With tokens on (:mod:`kgweave.api.auth`), each route is checked by the rules of the servicer
method it calls (``POST /v1/changes`` needs the admin token; ``/healthz`` is open, and
``/metrics`` unless ``KGWEAVE_AUTH_METRICS``) from its ``Authorization: Bearer`` header,
before any body is read: 401 without a valid token, 403 for a read token on an admin route.
With TLS on, Hypercorn serves HTTPS only (and asks for client certificates with mTLS).

Size (over 400 lines): the ASGI app, its limits, JSON parsing and the gateway routes share one
request path; the server start and stop are at the end.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import ssl
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, NoReturn
from urllib.parse import parse_qs, unquote

from google.protobuf import json_format
from google.protobuf.message import Message

from kgweave.api.auth import CHANGES, METRICS, Authorizer, Security
from kgweave.api.inprocess import InProcessContext
from kgweave.api.servicers import AdminServicer, KnowledgeServicer
from kgweave.dataplane import DataPlane
from kgweave.errors import HTTP_STATUS, ErrorCode, InvalidArgumentError, KGWeaveError, echo
from kgweave.settings import Settings
from kgweave.v1 import admin_pb2, knowledge_pb2

log = logging.getLogger(__name__)
#: Hypercorn's own messages: its warnings and errors (its start-up line would only repeat
#: what ``kgweave serve`` logs)
_hypercorn_log = logging.getLogger(f"{__name__}.hypercorn")
_hypercorn_log.setLevel(logging.WARNING)

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ChangeReceiver = Callable[[bytes], int]


@dataclass(frozen=True)
class HTTPLimits:
    """What bounds the HTTP side (see the module's docstring)."""

    max_body_bytes: int = 64 << 20
    idle_timeout_s: float = 10.0
    body_timeout_s: float = 60.0
    max_requests: int = 64
    backlog: int = 1024
    max_json_depth: int = 32
    grace_s: float = 10.0


class HTTPError(Exception):
    """A request answered with an error: ``{"code": ..., "message": ...}`` and ``status``."""

    def __init__(
        self,
        status: int,
        code: ErrorCode,
        message: str,
        headers: tuple[tuple[bytes, bytes], ...] = (),
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers

    @classmethod
    def of(cls, error: KGWeaveError) -> HTTPError:
        return cls(HTTP_STATUS[error.code], error.code, error.message)


# ---- JSON bodies


def _refuse(message: str) -> NoReturn:
    raise HTTPError.of(InvalidArgumentError(message))


def parse_json(body: bytes, max_depth: int) -> Any:
    """The JSON value of ``body``: UTF-8, well-formed, nested at most ``max_depth`` deep,
    without lone surrogates; else a 400 naming what is wrong."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        _refuse(f"the body is not UTF-8 (byte {exc.start})")
    try:
        value = json.loads(text)
    except RecursionError:
        _refuse(f"JSON nested deeper than {max_depth} levels")
    except json.JSONDecodeError as exc:
        _refuse(f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}")
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            _utf8(item)
        elif isinstance(item, dict | list):
            if depth > max_depth:
                _refuse(f"JSON nested deeper than {max_depth} levels")
            items = item.items() if isinstance(item, dict) else enumerate(item)
            for key, child in items:
                if isinstance(key, str):
                    _utf8(key)
                stack.append((child, depth + 1))
    return value


def _utf8(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        _refuse("a JSON string holds a lone surrogate (\\ud800-\\udfff): not valid Unicode")


def to_message(value: Any, message: Message) -> Message:
    """``value`` (a parsed JSON object) as ``message`` in the protobuf JSON mapping."""
    if not isinstance(value, dict):
        _refuse(f"the body must be a JSON object ({message.DESCRIPTOR.name})")
    try:
        json_format.ParseDict(value, message)
    except (json_format.ParseError, TypeError, ValueError) as exc:
        _refuse(f"not a {message.DESCRIPTOR.name}: {str(exc).splitlines()[0]}")
    return message


def message_json(message: Message) -> bytes:
    """``message`` in the protobuf JSON mapping (camelCase, every field present)."""
    as_dict = json_format.MessageToDict(message, always_print_fields_with_no_presence=True)
    return json.dumps(as_dict, ensure_ascii=False, separators=(",", ":")).encode()


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


# ---- the application


@dataclass(frozen=True)
class _Gateway:
    """A JSON route answered by a servicer method."""

    servicer: str  # "knowledge" or "admin"
    method: str
    request: type[Message]

    @property
    def path(self) -> str:
        """The gRPC method path: what the access rules know it by."""
        service = "KnowledgeService" if self.servicer == "knowledge" else "AdminService"
        return f"/kgweave.v1.{service}/{self.method}"


_GATEWAY = {
    "/v1/predict": _Gateway("knowledge", "PredictLinks", knowledge_pb2.PredictLinksRequest),
    "/v1/score": _Gateway("knowledge", "ScoreTriples", knowledge_pb2.ScoreTriplesRequest),
    "/v1/verbalize": _Gateway("knowledge", "Verbalize", knowledge_pb2.VerbalizeRequest),
    "/v1/complete": _Gateway("knowledge", "Complete", knowledge_pb2.CompleteRequest),
    "/v1/search": _Gateway("knowledge", "SearchEntities", knowledge_pb2.SearchEntitiesRequest),
}
_STATUS = _Gateway("admin", "Status", admin_pb2.StatusRequest)
_GET_ENTITY = _Gateway("knowledge", "GetEntity", knowledge_pb2.GetEntityRequest)
_ENTITIES = "/v1/entities/"
_GET = ("/metrics", "/healthz", "/v1/status")
_UNLIMITED = ("/metrics", "/healthz")


@dataclass
class _Answer:
    status: int
    body: bytes
    content_type: bytes = b"application/json"
    headers: tuple[tuple[bytes, bytes], ...] = ()


def _failure_answer(failure: HTTPError) -> _Answer:
    body = json.dumps({"code": failure.code.value, "message": failure.message}).encode()
    return _Answer(failure.status, body, headers=failure.headers)


class HTTPApp:
    """The ASGI application: routes, limits, and the gateway onto the servicers."""

    def __init__(
        self,
        plane: DataPlane,
        on_changes: ChangeReceiver | None = None,
        limits: HTTPLimits | None = None,
        authorizer: Authorizer | None = None,
    ) -> None:
        self.plane = plane
        self.on_changes = on_changes
        self.limits = limits or HTTPLimits()
        self.authorizer = authorizer
        self.servicers: dict[str, Any] = {
            "knowledge": KnowledgeServicer(plane),
            "admin": AdminServicer(plane),
        }
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "websocket":
            await receive()
            await send({"type": "websocket.close", "code": 1003})
        elif scope["type"] == "http":
            answer = await self._answer(scope, receive)
            await send(
                {
                    "type": "http.response.start",
                    "status": answer.status,
                    "headers": [
                        (b"content-type", answer.content_type),
                        (b"content-length", str(len(answer.body)).encode()),
                        *answer.headers,
                    ],
                }
            )
            await send({"type": "http.response.body", "body": answer.body})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _answer(self, scope: Scope, receive: Receive) -> _Answer:
        path: str = scope["path"]
        limited = path not in _UNLIMITED
        if limited and self.in_flight >= self.limits.max_requests:
            return _failure_answer(
                HTTPError(
                    429,
                    ErrorCode.RESOURCE_EXHAUSTED,
                    f"over {self.limits.max_requests} HTTP requests at once; retry shortly",
                    ((b"retry-after", b"1"),),
                )
            )
        self.in_flight += limited
        try:
            return await self._route(scope, receive)
        except HTTPError as failure:
            return _failure_answer(failure)
        except Exception:
            log.exception("HTTP %s %s failed", scope["method"], path)
            return _failure_answer(
                HTTPError(500, ErrorCode.INTERNAL, "internal error; see the server log")
            )
        finally:
            self.in_flight -= limited

    async def _route(self, scope: Scope, receive: Receive) -> _Answer:
        path: str = scope["path"]
        method: str = scope["method"]
        posts = path in _GATEWAY or path == "/v1/changes"
        gets = path in _GET or (path.startswith(_ENTITIES) and len(path) > len(_ENTITIES))
        if not posts and not gets:
            raise HTTPError(404, ErrorCode.NOT_FOUND, f"no route {echo(path)}")
        allowed = "POST" if posts else "GET"
        if method != allowed:
            raise HTTPError(
                405,
                ErrorCode.INVALID_ARGUMENT,
                f"use {allowed} for {path}"[:200],
                ((b"allow", allowed.encode()),),
            )
        self._authorize(scope, path, gets)
        if path == "/metrics":
            self.plane.metrics.queue_depth.set(self.plane.batcher.depth)
            return _Answer(200, self.plane.metrics.render(), b"text/plain; version=0.0.4")
        if path == "/healthz":
            ready = self.plane.ready  # the graph down: still 200, "graph": "down" (degraded)
            health: dict[str, object] = {"ready": ready}
            if (graph := self.plane.graph_health.state) != "unknown":  # (watched under serve)
                health["graph"] = graph
            return _Answer(200 if ready else 503, json.dumps(health).encode())
        if path == "/v1/status":
            return await self._call(_STATUS, {})
        if gets:
            return await self._call(_GET_ENTITY, self._entity_request(scope))
        if path == "/v1/changes" and self.on_changes is None:
            raise HTTPError(404, ErrorCode.NOT_FOUND, "this server takes no change events")
        body = await self._body(scope, receive)
        value = parse_json(body, self.limits.max_json_depth)
        if path == "/v1/changes":
            return await self._changes(body)
        return await self._call(_GATEWAY[path], value)

    def _authorize(self, scope: Scope, path: str, gets: bool) -> None:
        """Raise 401/403 unless the request's bearer token may use the route ``path``."""
        if self.authorizer is None:
            return
        if path in _GATEWAY:
            method = _GATEWAY[path].path
        elif path == "/v1/status":
            method = _STATUS.path
        elif gets and path.startswith(_ENTITIES):
            method = _GET_ENTITY.path
        else:
            method = {"/v1/changes": CHANGES, "/metrics": METRICS}.get(path, f"GET {path}")
        header = dict(scope["headers"]).get(b"authorization")
        try:
            self.authorizer.check(method, header.decode("latin-1") if header else None)
        except KGWeaveError as exc:
            failure = HTTPError.of(exc)
            if exc.code == ErrorCode.UNAUTHENTICATED:
                failure.headers = ((b"www-authenticate", b'Bearer realm="kgweave"'),)
            raise failure from None

    def _entity_request(self, scope: Scope) -> dict[str, Any]:
        raw = scope.get("raw_path") or scope["path"].encode()
        entity = unquote(raw.split(b"?", 1)[0].decode("latin-1")[len(_ENTITIES) :])
        request: dict[str, Any] = {"entity": entity}
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        for name in ("maxFacts", "max_facts"):
            if name in query:
                try:
                    request["maxFacts"] = int(query[name][-1])
                except ValueError:
                    _refuse(f"{name} must be an integer")
        return request

    async def _body(self, scope: Scope, receive: Receive) -> bytes:
        headers = dict(scope["headers"])
        content_type = headers.get(b"content-type", b"").decode("latin-1")
        if not _is_json(content_type):
            raise HTTPError(
                415,
                ErrorCode.INVALID_ARGUMENT,
                f"send Content-Type: application/json (got {echo(content_type or 'none', 60)})",
            )
        cap = self.limits.max_body_bytes
        over = HTTPError(413, ErrorCode.INVALID_ARGUMENT, f"the body is over {cap} bytes")
        declared = headers.get(b"content-length", b"0")
        if not declared.isdigit():  # (h11 lets only digits through; HTTP/2 is checked here)
            _refuse("Content-Length must be a number of bytes")
        if int(declared) > cap:
            raise over
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(self.limits.body_timeout_s):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        raise HTTPError(400, ErrorCode.INVALID_ARGUMENT, "the body was cut short")
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > cap:
                        raise over
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        return b"".join(chunks)
        except TimeoutError:
            raise HTTPError(
                408,
                ErrorCode.DEADLINE_EXCEEDED,
                f"the body did not arrive within {self.limits.body_timeout_s:g}s",
            ) from None

    async def _changes(self, body: bytes) -> _Answer:
        assert self.on_changes is not None
        try:
            accepted = await asyncio.to_thread(self.on_changes, body)
        except KGWeaveError as exc:
            raise HTTPError.of(exc) from None
        return _Answer(202, json.dumps({"accepted": accepted}).encode())

    async def _call(self, route: _Gateway, value: Any) -> _Answer:
        request = to_message(value, route.request())
        handler = getattr(self.servicers[route.servicer], route.method)
        try:
            answer = await handler(request, InProcessContext())
        except KGWeaveError as exc:  # the servicers' abort, in-process
            raise HTTPError.of(exc) from None
        return _Answer(200, message_json(answer))


# ---- the server


class HTTPServer:
    """Hypercorn serving :class:`HTTPApp` on a bound socket, in its own thread and loop."""

    def __init__(self, app: HTTPApp, sock: socket.socket, security: Security | None = None) -> None:
        from hypercorn.config import Config

        self.app = app
        self.host, self.port = sock.getsockname()[:2]
        limits = app.limits
        config = Config()
        config.bind = [f"fd://{sock.detach()}"]  # Hypercorn owns (and closes) the socket now
        config.backlog = limits.backlog
        config.keep_alive_timeout = limits.idle_timeout_s
        config.graceful_timeout = limits.grace_s
        config.errorlog = _hypercorn_log
        config.accesslog = None
        config.include_server_header = False
        tls = security.tls if security is not None else None
        if tls is not None:  # HTTPS only (the bound socket is Hypercorn's secure bind)
            config.certfile, config.keyfile = str(tls.cert), str(tls.key)
            if tls.client_ca is not None:
                config.ca_certs = str(tls.client_ca)
                config.verify_mode = ssl.CERT_REQUIRED
        self.config = config
        self._stop = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kgweave-http", daemon=True)
        self._thread.start()
        self._started.wait()

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except Exception:
            log.exception("the HTTP server stopped with an error")

    async def _serve(self) -> None:
        from hypercorn.asyncio import serve

        self._loop = asyncio.get_running_loop()
        self._started.set()
        await serve(self.app, self.config, shutdown_trigger=self._stop.wait)  # type: ignore[arg-type]

    def stop(self) -> None:
        """Stop accepting, let requests in flight finish (within the grace), close."""
        if self._loop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join()


def start_http(
    plane: DataPlane,
    host: str,
    port: int,
    on_changes: ChangeReceiver | None = None,
    limits: HTTPLimits | None = None,
    security: Security | None = None,
) -> HTTPServer:
    """Serve the HTTP side on ``host:port`` (0: a free port) in a thread of its own, with TLS
    and tokens as ``security`` says (None: neither)."""
    limits = limits or HTTPLimits()
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            sock.bind((host, port))
            sock.listen(limits.backlog)
        except OSError:
            sock.close()
            raise
    except OSError as exc:
        raise KGWeaveError(f"cannot listen for HTTP on {host}:{port}: {exc.strerror}") from None
    authorizer = security.authorizer if security is not None else None
    return HTTPServer(HTTPApp(plane, on_changes, limits, authorizer), sock, security)


def serve_http(
    plane: DataPlane, settings: Settings, security: Security | None = None
) -> HTTPServer:
    """The HTTP side of ``kgweave serve``: bound to ``http_host`` (else the gRPC host),
    change events into the service's log, ``shutdown_grace_s`` for requests in flight."""
    host = settings.http_host or settings.grpc_host
    limits = HTTPLimits(grace_s=settings.shutdown_grace_s)
    return start_http(plane, host, settings.http_port, plane.changes.receive, limits, security)
