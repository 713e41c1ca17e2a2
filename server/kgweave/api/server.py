"""``kgweave serve``: the gRPC server (with health and reflection) and the HTTP side.

Start-up order: graph (embedded FalkorDB when no URI is set; the demo graph is imported if the
graph is empty), first model (trained from a graph snapshot if the registry is empty), model
loaded and warmed up, then the health service turns SERVING. On SIGTERM/SIGINT the health turns
NOT_SERVING, new calls are refused and calls in flight get ``shutdown_grace_s`` to finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from kgweave.api.servicers import AdminServicer, KnowledgeServicer
from kgweave.errors import KGWeaveError
from kgweave.serving.service import KGService
from kgweave.settings import Settings
from kgweave.v1 import admin_pb2, admin_pb2_grpc, knowledge_pb2, knowledge_pb2_grpc

log = logging.getLogger(__name__)

SERVICE_NAMES = (
    knowledge_pb2.DESCRIPTOR.services_by_name["KnowledgeService"].full_name,
    admin_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name,
)


@dataclass
class RunningServer:
    """A started gRPC server and what is needed to stop it."""

    server: grpc.aio.Server
    port: int
    health: health.HealthServicer
    service: KGService

    def set_serving(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", *SERVICE_NAMES):
            self.health.set(name, status)

    async def stop(self, grace: float) -> None:
        self.set_serving(False)
        await self.server.stop(grace)


async def start_grpc(service: KGService, host: str, port: int) -> RunningServer:
    """Start the gRPC server on ``host:port`` (0: a free port); returns the bound port."""
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", 64 << 20),
            ("grpc.so_reuseport", 0),
        ]
    )
    knowledge_pb2_grpc.add_KnowledgeServiceServicer_to_server(KnowledgeServicer(service), server)
    admin_pb2_grpc.add_AdminServiceServicer_to_server(AdminServicer(service), server)
    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise KGWeaveError(f"cannot listen on {host}:{port} (in use?)")
    await server.start()
    running = RunningServer(server, bound, health_servicer, service)
    running.set_serving(service.ready)
    service.on_activate = lambda _version: running.set_serving(True)
    return running


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
    running = await start_grpc(service, settings.grpc_host, settings.grpc_port)
    httpd = start_http(service, settings.grpc_host, settings.http_port, change_receiver(service))
    http_port = httpd.server_address[1]
    log.info(
        "serving gRPC on %s:%d, HTTP on %s:%d (model %s)",
        settings.grpc_host, running.port, settings.grpc_host, http_port,
        service.active().version if service.ready else "none",
    )  # fmt: skip
    if ready is not None:
        ready(running.port, int(http_port))
    stop = stop_event or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down: draining requests for up to %.1fs", settings.shutdown_grace_s)
    await running.stop(settings.shutdown_grace_s)
    httpd.shutdown()
    service.close()
    log.info("stopped")
