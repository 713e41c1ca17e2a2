"""``kgweave serve``: the gRPC server (with health and reflection) and the HTTP side.

Start-up order: graph (embedded FalkorDB when no URI is set; the demo graph is imported if the
graph is empty), first model (trained from a graph snapshot if the registry is empty), model
loaded and warmed up, then the health service turns SERVING. On SIGTERM/SIGINT the health turns
NOT_SERVING, new calls are refused and calls in flight get ``shutdown_grace_s`` to finish.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import json
import logging
import signal
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
import torch
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from kgweave.api.bridge import BatchHandler, HandlerTable
from kgweave.api.reflection import add_reflection
from kgweave.api.servicers import AdminServicer, KnowledgeServicer
from kgweave.errors import KGWeaveError
from kgweave.serving.service import KGService
from kgweave.settings import Settings
from kgweave.v1 import admin_pb2, admin_pb2_grpc, knowledge_pb2, knowledge_pb2_grpc

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 64 << 20

SERVICE_NAMES = (
    knowledge_pb2.DESCRIPTOR.services_by_name["KnowledgeService"].full_name,
    admin_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name,
)


class Health:
    """The standard health service's status; settable from any thread."""

    def __init__(self) -> None:
        self.servicer = health.aio.HealthServicer()
        self.loop = asyncio.get_running_loop()

    async def update(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", *SERVICE_NAMES):
            await self.servicer.set(name, status)

    def set_serving(self, serving: bool) -> None:
        try:
            on_loop = asyncio.get_running_loop() is self.loop
        except RuntimeError:
            on_loop = False
        if on_loop:
            self.loop.create_task(self.update(serving))
        elif not self.loop.is_closed():  # (an activation after the server stopped: no one asks)
            asyncio.run_coroutine_threadsafe(self.update(serving), self.loop)


def add_services(target: Any, service: KGService, health_state: Health) -> None:
    """Register every service kgweave answers on ``target`` (a ``grpc.aio.Server`` or the
    native front end's :class:`~kgweave.api.bridge.HandlerTable`)."""
    knowledge = KnowledgeServicer(service)
    knowledge_pb2_grpc.add_KnowledgeServiceServicer_to_server(knowledge, target)
    if isinstance(target, HandlerTable):
        target.add_batch_handler(
            "/kgweave.v1.KnowledgeService/PredictLinks",
            BatchHandler(
                knowledge.predict_links_calls,
                knowledge_pb2.PredictLinksRequest.FromString,
                bytes,  # answers come serialised (kgweave.api.wire)
            ),
        )
    admin_pb2_grpc.add_AdminServiceServicer_to_server(AdminServicer(service), target)
    health_pb2_grpc.add_HealthServicer_to_server(health_state.servicer, target)
    add_reflection(target, (*SERVICE_NAMES, health.SERVICE_NAME))


class RunningServer(abc.ABC):
    """A started gRPC endpoint and what is needed to stop it."""

    #: "python" (grpc.aio) or "native" (kgweave-frontend)
    transport = ""

    def __init__(self, port: int, health_state: Health, service: KGService) -> None:
        self.port = port
        self.health = health_state
        self.service = service
        self.stopping = False
        #: called (in the event loop) when the endpoint fails on its own; serve_forever stops
        self.on_failure: Callable[[str], None] | None = None
        service.frontend = self.transport
        health_state.set_serving(service.ready)
        service.on_activate = lambda _version: health_state.set_serving(True)

    def fail(self, why: str) -> None:
        """The endpoint stopped answering by itself (the native front end died)."""
        log.error("%s", why)
        self.health.set_serving(False)
        if self.on_failure is not None:
            self.on_failure(why)

    async def stop(self, grace: float) -> None:
        """Turn NOT_SERVING, refuse new calls, let calls in flight finish within ``grace``."""
        self.stopping = True
        await self.health.update(False)
        await self._stop(grace)

    @abc.abstractmethod
    async def _stop(self, grace: float) -> None:
        """Stop the transport: no new calls, those in flight get ``grace`` seconds."""


class PythonServer(RunningServer):
    transport = "python"

    def __init__(
        self, server: grpc.aio.Server, port: int, health_state: Health, service: KGService
    ) -> None:
        self.server = server
        super().__init__(port, health_state, service)

    async def _stop(self, grace: float) -> None:
        await self.server.stop(grace)


async def start_grpc(service: KGService, host: str, port: int) -> RunningServer:
    """Start the Python gRPC server (grpc.aio) on ``host:port`` (0: a free port)."""
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.so_reuseport", 0),
        ]
    )
    health_state = Health()
    add_services(server, service, health_state)
    try:
        bound = server.add_insecure_port(f"{host}:{port}")
    except RuntimeError:  # grpcio >= 1.6x raises "Failed to bind" where it returned 0
        bound = 0
    if bound == 0:
        raise KGWeaveError(f"cannot listen on {host}:{port} (in use?)")
    await server.start()
    return PythonServer(server, bound, health_state, service)


async def start_server(service: KGService, settings: Settings) -> RunningServer:
    """The gRPC endpoint ``settings.frontend`` asks for: native (kgweave-frontend, C++),
    python (grpc.aio), or auto (native when its binary is found)."""
    from kgweave.api.frontend import find_frontend, serves_natively, start_native

    if serves_natively(settings):
        binary = find_frontend(settings)
        if binary is None:
            raise KGWeaveError(
                "KGWEAVE_FRONTEND=native but no kgweave-frontend binary was found; build it "
                "(bash frontend/build.sh) or set KGWEAVE_FRONTEND_BINARY"
            )
        return await start_native(service, settings, binary)
    return await start_grpc(service, settings.grpc_host, settings.grpc_port)


# ---- the HTTP side: metrics, health, change events


class _HTTPHandler(BaseHTTPRequestHandler):
    service: KGService
    on_changes: Callable[[bytes], int] | None = None

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http: " + format, *args)

    def _send(self, code: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path == "/metrics":
            self.service.metrics.queue_depth.set(self.service.batcher.depth)
            self._send(200, self.service.metrics.render(), "text/plain; version=0.0.4")
        elif self.path == "/healthz":
            ready = self.service.ready
            self._send(200 if ready else 503, json.dumps({"ready": ready}).encode())
        else:
            self._send(404, b'{"error": "not found"}')

    def do_POST(self) -> None:
        if self.path != "/v1/changes" or self.on_changes is None:
            self._send(404, b'{"error": "not found"}')
            return
        length = int(self.headers.get("Content-Length") or 0)
        if length > 64 << 20:
            self._send(413, b'{"error": "payload over 64 MiB"}')
            return
        try:
            accepted = self.on_changes(self.rfile.read(length))
        except KGWeaveError as exc:
            self._send(400, json.dumps({"error": exc.message}).encode())
            return
        except Exception:
            log.exception("change payload failed")
            self._send(500, b'{"error": "internal error; see the server log"}')
            return
        self._send(202, json.dumps({"accepted": accepted}).encode())


def start_http(
    service: KGService, host: str, port: int, on_changes: Callable[[bytes], int] | None = None
) -> ThreadingHTTPServer:
    """Serve /metrics, /healthz and POST /v1/changes on a daemon thread."""
    receive = staticmethod(on_changes) if on_changes is not None else None
    handler = type("Handler", (_HTTPHandler,), {"service": service, "on_changes": receive})
    httpd = ThreadingHTTPServer((host, port), handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, name="kgweave-http", daemon=True).start()
    return httpd


def change_receiver(service: KGService) -> Callable[[bytes], int]:
    """Append posted change events to the service's durable event log; returns how many."""

    def receive(body: bytes) -> int:
        from kgweave.changes.http_payload import parse_change_payload

        events = parse_change_payload(body)
        service.event_log.append(events)
        if service.retrainer is not None:
            service.retrainer.check_now()
        return len(events)

    return receive


# ---- the whole server


async def serve_forever(
    service: KGService,
    settings: Settings,
    ready: Callable[[int, int], None] | None = None,
    stop_event: asyncio.Event | None = None,
) -> None:
    """Run gRPC and HTTP until SIGTERM/SIGINT (or ``stop_event``), then drain and stop."""
    running = await start_server(service, settings)
    httpd = start_http(service, settings.grpc_host, settings.http_port, change_receiver(service))
    http_port = httpd.server_address[1]
    log.info(
        "serving gRPC on %s:%d (%s front end), HTTP on %s:%d (model %s, %d torch threads)",
        settings.grpc_host, running.port, running.transport, settings.grpc_host, http_port,
        service.active().version if service.ready else "none", torch.get_num_threads(),
    )  # fmt: skip
    if ready is not None:
        ready(running.port, int(http_port))
    stop = stop_event or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
    failures: list[str] = []

    def failed(why: str) -> None:
        failures.append(why)
        stop.set()

    running.on_failure = failed
    await stop.wait()
    log.info("shutting down: draining requests for up to %.1fs", settings.shutdown_grace_s)
    await running.stop(settings.shutdown_grace_s)
    httpd.shutdown()
    service.close()
    log.info("stopped")
    if failures:
        raise KGWeaveError(failures[0])
