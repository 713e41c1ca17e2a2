"""The graph database dies under a running server (issue 16): serving stays up and says it is
degraded (``/healthz`` 200 with ``"graph": "down"``, gRPC health ``kgweave.graph``
NOT_SERVING while the overall status stays SERVING), and the embedded FalkorDB has one owner
that restarts it, on its port: the serving process; ``kgweave graph start|stop`` refuse
meanwhile.

A real embedded FalkorDB, killed with SIGKILL; real gRPC and HTTP servers on free ports.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from kgweave.api.endpoint import GRAPH_SERVICE
from kgweave.api.http import start_http
from kgweave.cli.main import main
from kgweave.graph.embedded import EmbeddedFalkorDB, ServerInfo, owner
from kgweave.settings import get_settings
from kgweave.v1 import knowledge_pb2, knowledge_pb2_grpc
from process_support import HANG_GUARD_S
from serving_support import ServerThread, serving_plane

pytest_plugins = ["reliability_support"]  # fixtures: demo_model, transport


@pytest.fixture
def falkordb() -> Iterator[ServerInfo]:
    """A real embedded FalkorDB in this test's data folder, stopped at the end."""
    embedded = EmbeddedFalkorDB(get_settings().graph_dir)
    info = embedded.start()
    yield info
    embedded.stop()


def _until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + HANG_GUARD_S
    while not condition():
        assert time.monotonic() < deadline, "condition not reached (hang guard)"
        time.sleep(0.02)


def _kill(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):  # (our child: reap it)
        os.waitpid(pid, 0)


def _healthz(port: int) -> tuple[int, dict[str, object]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=30) as answer:
        return answer.status, json.loads(answer.read())


def _grpc_health(address: str, service: str) -> int:
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        request = health_pb2.HealthCheckRequest(service=service)
        return int(stub.Check(request, timeout=HANG_GUARD_S).status)


def test_graph_down_is_degraded_not_dead(demo_model: Path, falkordb: ServerInfo) -> None:
    """Watching a FalkorDB it does not own (given by URI): when it dies, serving answers on,
    /healthz stays 200 and says "graph": "down", gRPC health reports kgweave.graph
    NOT_SERVING and the overall status SERVING; when it is back, "up" again."""
    settings = get_settings().model_copy(update={"graph_uri": falkordb.url})
    plane = serving_plane(demo_model, settings)
    plane.graph_health.start()
    assert not plane.graph_health.owns_embedded
    server = ServerThread(plane, "python")
    httpd = start_http(plane, "127.0.0.1", 0)
    serving = health_pb2.HealthCheckResponse.SERVING
    try:
        _until(lambda: plane.graph_health.state == "up")
        assert _healthz(httpd.port) == (200, {"ready": True, "graph": "up"})
        _until(lambda: _grpc_health(server.address, GRAPH_SERVICE) == serving)
        _kill(falkordb.pid)
        _until(lambda: plane.graph_health.state == "down")
        assert _healthz(httpd.port) == (200, {"ready": True, "graph": "down"})
        _until(
            lambda: (
                _grpc_health(server.address, GRAPH_SERVICE)
                == health_pb2.HealthCheckResponse.NOT_SERVING
            )
        )
        assert _grpc_health(server.address, "") == serving
        with grpc.insecure_channel(server.address) as channel:  # queries are still answered
            reply = knowledge_pb2_grpc.KnowledgeServiceStub(channel).PredictLinks(
                knowledge_pb2.PredictLinksRequest(
                    queries=[knowledge_pb2.LinkQuery(head="alan_turing", relation="born_in")]
                ),
                timeout=HANG_GUARD_S,
            )
        assert reply.results[0].candidates
        again = EmbeddedFalkorDB(settings.graph_dir).start()  # its operator starts it again
        assert again.port == falkordb.port  # on its port: the URI holds
        _until(lambda: plane.graph_health.state == "up")
        assert _healthz(httpd.port) == (200, {"ready": True, "graph": "up"})
    finally:
        httpd.stop()
        server.stop()


def test_serving_owns_the_embedded_database_and_restarts_it(
    demo_model: Path, falkordb: ServerInfo, capsys: pytest.CaptureFixture[str]
) -> None:
    """The serving process claims the embedded FalkorDB it serves on; killed, it is
    restarted by that process on the same port; `kgweave graph start|stop` refuse meanwhile
    and `graph status` names the owner. Once serving stops, the CLI may stop it."""
    settings = get_settings()
    plane = serving_plane(demo_model, settings)
    plane.graph_health.start()

    def kgweave(*argv: str) -> tuple[int, str]:
        code = main(list(argv))
        said = capsys.readouterr()
        return code, said.out + said.err

    try:
        assert plane.graph_health.owns_embedded
        assert owner(settings.graph_dir) == os.getpid()
        for verb in ("start", "stop"):
            code, said = kgweave("graph", verb)
            assert code != 0
            assert "owns the embedded graph database" in said, said
            assert "Traceback" not in said and len(said.strip().splitlines()) == 1
        code, said = kgweave("graph", "status")
        assert code == 0 and f"owned by kgweave serve (pid {os.getpid()})" in said
        assert EmbeddedFalkorDB(settings.graph_dir).status() == falkordb  # untouched
        _kill(falkordb.pid)
        _until(lambda: plane.graph_health.restarts >= 1 and plane.graph_health.state == "up")
        restarted = EmbeddedFalkorDB(settings.graph_dir).status()
        assert restarted is not None
        assert restarted.pid != falkordb.pid and restarted.port == falkordb.port
    finally:
        plane.close()  # serving stops: the claim goes with it
    assert owner(settings.graph_dir) is None
    code, said = kgweave("graph", "stop")
    assert code == 0 and "FalkorDB stopped" in said
