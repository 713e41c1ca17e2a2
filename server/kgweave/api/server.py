"""``kgweave serve``: the gRPC server (with health and reflection) and the HTTP side.

Start-up order: graph (embedded FalkorDB when no URI is set; the demo graph is imported if the
graph is empty), first model (trained from a graph snapshot if the registry is empty), model
loaded and warmed up, then the health service turns SERVING. On SIGTERM/SIGINT the health turns
NOT_SERVING, new calls are refused and calls in flight get ``shutdown_grace_s`` to finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable

import grpc
import torch

from kgweave.api.auth import AuthInterceptor, Security, load_security
from kgweave.api.endpoint import MAX_MESSAGE_BYTES, Health, RunningServer, add_services
from kgweave.api.frontend import find_frontend, serves_natively, start_native
from kgweave.api.http import serve_http
from kgweave.dataplane import DataPlane
from kgweave.errors import KGWeaveError
from kgweave.settings import Settings

log = logging.getLogger(__name__)

#: calls gRPC's core may hold before the event loop takes them (see start_grpc)
PENDING_CALLS_MAX = 1 << 16


class PythonServer(RunningServer):
    transport = "python"

    def __init__(
        self, server: grpc.aio.Server, port: int, health_state: Health, plane: DataPlane
    ) -> None:
        self.server = server
        super().__init__(port, health_state, plane)

    async def _stop(self, grace: float) -> None:
        await self.server.stop(grace)


async def start_grpc(
    plane: DataPlane, host: str, port: int, security: Security | None = None
) -> RunningServer:
    """Start the Python gRPC server (grpc.aio) on ``host:port`` (0: a free port), with TLS
    and tokens as ``security`` says (None: neither)."""
    security = security or Security()
    auth = security.authorizer
    server = grpc.aio.server(
        interceptors=[AuthInterceptor(auth)] if auth is not None else None,
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.so_reuseport", 0),
            # calls not yet taken by the event loop: gRPC's defaults (1,000 soft, 3,000 hard)
            # end the excess CANCELLED before any handler or metric sees them; admission is
            # the servicers' (RESOURCE_EXHAUSTED beyond KGWEAVE_QUEUE_MAX, counted)
            ("grpc.server.max_pending_requests", PENDING_CALLS_MAX),
            ("grpc.server.max_pending_requests_hard_limit", PENDING_CALLS_MAX),
        ],
    )
    health_state = Health()
    add_services(server, plane, health_state)
    try:
        if security.tls is not None:
            chain, key, client_ca = security.tls.read()
            credentials = grpc.ssl_server_credentials(
                [(key, chain)],
                root_certificates=client_ca,
                require_client_auth=client_ca is not None,
            )
            bound = server.add_secure_port(f"{host}:{port}", credentials)
        else:
            bound = server.add_insecure_port(f"{host}:{port}")
    except RuntimeError:  # grpcio >= 1.6x raises "Failed to bind" where it returned 0
        bound = 0
    if bound == 0:
        raise KGWeaveError(f"cannot listen on {host}:{port} (in use?)")
    await server.start()
    return PythonServer(server, bound, health_state, plane)


async def start_server(
    plane: DataPlane, settings: Settings, security: Security | None = None
) -> RunningServer:
    """The gRPC endpoint ``settings.frontend`` asks for: native (kgweave-frontend, C++),
    python (grpc.aio), or auto (native when its binary is found)."""
    if serves_natively(settings):
        binary = find_frontend(settings)
        if binary is None:
            raise KGWeaveError(
                "KGWEAVE_FRONTEND=native but no kgweave-frontend binary was found; build it "
                "(bash frontend/build.sh) or set KGWEAVE_FRONTEND_BINARY"
            )
        return await start_native(plane, settings, binary, security)
    return await start_grpc(plane, settings.grpc_host, settings.grpc_port, security)


# ---- the whole server


async def serve_forever(
    plane: DataPlane,
    settings: Settings,
    ready: Callable[[int, int], None] | None = None,
    stop_event: asyncio.Event | None = None,
    security: Security | None = None,
) -> None:
    """Run gRPC and HTTP until SIGTERM/SIGINT (or ``stop_event``), then drain and stop.
    ``security``: TLS and tokens (None: checked from ``settings`` now)."""
    if security is None:
        security = load_security(settings)
    running = await start_server(plane, settings, security)
    httpd = serve_http(plane, settings, security)
    http_port = httpd.port
    log.info(
        "serving gRPC on %s:%d (%s front end), HTTP on %s:%d (model %s, %d torch threads)",
        settings.grpc_host, running.port, running.transport, httpd.host, http_port,
        plane.versions.active().version if plane.ready else "none", torch.get_num_threads(),
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
    await asyncio.gather(running.stop(settings.shutdown_grace_s), asyncio.to_thread(httpd.stop))
    plane.close()
    log.info("stopped")
    if failures:
        raise KGWeaveError(failures[0])
