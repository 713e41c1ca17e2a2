"""What every gRPC endpoint of ``kgweave serve`` shares, whichever front end terminates it:
the services registered, the health status, and how a running endpoint is stopped."""

from __future__ import annotations

import abc
import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from kgweave.api.bridge import BatchHandler, HandlerTable
from kgweave.api.malformed import Guarded
from kgweave.api.reflection import add_reflection
from kgweave.api.servicers import AdminServicer, KnowledgeServicer
from kgweave.dataplane import DataPlane
from kgweave.v1 import admin_pb2, admin_pb2_grpc, knowledge_pb2, knowledge_pb2_grpc

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 64 << 20

#: the gRPC health service name that reports the graph database (kgweave.serving.graph_health)
GRAPH_SERVICE = "kgweave.graph"

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
        self._submit(lambda: self.update(serving))

    def set_graph(self, up: bool) -> None:
        """The graph database's state as service ``kgweave.graph``; the others stay SERVING
        (queries are answered from the model in memory)."""
        response = health_pb2.HealthCheckResponse
        status = response.SERVING if up else response.NOT_SERVING
        self._submit(lambda: self.servicer.set(GRAPH_SERVICE, status))

    def _submit(self, make: Callable[[], Coroutine[Any, Any, None]]) -> None:
        try:
            on_loop = asyncio.get_running_loop() is self.loop
        except RuntimeError:
            on_loop = False
        if on_loop:
            self.loop.create_task(make())
        elif not self.loop.is_closed():  # (an activation after the server stopped: no one asks)
            asyncio.run_coroutine_threadsafe(make(), self.loop)


def add_services(target: Any, plane: DataPlane, health_state: Health) -> None:
    """Register every service kgweave answers on ``target`` (a ``grpc.aio.Server`` or the
    native front end's :class:`~kgweave.api.bridge.HandlerTable`)."""
    if not isinstance(target, HandlerTable):  # (the bridge answers malformed bytes itself)
        target = Guarded(target)
    knowledge = KnowledgeServicer(plane)
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
    admin_pb2_grpc.add_AdminServiceServicer_to_server(AdminServicer(plane), target)
    health_pb2_grpc.add_HealthServicer_to_server(health_state.servicer, target)
    add_reflection(target, (*SERVICE_NAMES, health.SERVICE_NAME))


class RunningServer(abc.ABC):
    """A started gRPC endpoint and what is needed to stop it."""

    #: "python" (grpc.aio) or "native" (kgweave-frontend)
    transport = ""

    def __init__(self, port: int, health_state: Health, plane: DataPlane) -> None:
        self.port = port
        self.health = health_state
        self.plane = plane
        self.stopping = False
        #: called (in the event loop) when the endpoint fails on its own; serve_forever stops
        self.on_failure: Callable[[str], None] | None = None
        plane.frontend = self.transport
        health_state.set_serving(plane.ready)
        plane.versions.on_activate = lambda _version: health_state.set_serving(True)
        plane.graph_health.listeners.append(health_state.set_graph)
        if plane.graph_health.state != "unknown":
            health_state.set_graph(plane.graph_health.state == "up")

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
