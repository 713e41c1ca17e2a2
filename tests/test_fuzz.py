"""The standing fuzzer (issue 16): hostile calls to every RPC on both gRPC front ends and
hostile requests to every HTTP route, with a fixed seed (``KGWEAVE_FUZZ_SEED`` overrides it,
``KGWEAVE_FUZZ_CALLS`` the number of calls; benchmarks/reliability.py runs longer). Every
answer is a proper status (no INTERNAL, no UNKNOWN, no dropped connection, no hang), and the
server is still healthy and answering at the end.

Real servers on free loopback ports, a real model, real training jobs (kept small).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from fuzz_support import Tally, fuzz_grpc, fuzz_http, methods
from kgweave.api.http import start_http
from kgweave.graph.embedded import EmbeddedFalkorDB
from kgweave.v1 import knowledge_pb2, knowledge_pb2_grpc
from process_support import until
from serving_support import TRANSPORTS, ServerThread, serving_plane

pytest_plugins = ["reliability_support"]  # fixtures: demo_model, transport


SEED = int(os.environ.get("KGWEAVE_FUZZ_SEED", "16"))
CALLS = int(os.environ.get("KGWEAVE_FUZZ_CALLS", "400"))


@pytest.fixture(params=TRANSPORTS)
def served(request: pytest.FixtureRequest, demo_model: Path) -> Iterator[ServerThread]:
    plane = serving_plane(demo_model)
    server = ServerThread(plane, str(request.param))
    yield server
    # a fuzzed job on the graph ("" dataset) or Complete writing to it starts the embedded
    # database: once every job has ended (its worker gone), stop it
    until(lambda: plane.jobs.active_count() == 0, "a fuzzed training job did not end")
    server.stop()
    EmbeddedFalkorDB(plane.settings.graph_dir).stop()


def _still_healthy(address: str) -> None:
    with grpc.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=60
        )
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        reply = knowledge_pb2_grpc.KnowledgeServiceStub(channel).PredictLinks(
            knowledge_pb2.PredictLinksRequest(
                queries=[knowledge_pb2.LinkQuery(head="alan_turing", relation="born_in")], k=3
            ),
            timeout=60,
        )
        assert len(reply.results[0].candidates) == 3


def test_every_method_is_fuzzed() -> None:
    paths = {m.path for m in methods()}
    assert "/kgweave.v1.KnowledgeService/PredictLinks" in paths
    assert "/kgweave.v1.AdminService/RegisterModel" in paths  # client streaming
    assert "/kgweave.v1.AdminService/WatchJob" in paths  # server streaming
    assert "/kgweave.v1.AdminService/WriteFacts" in paths  # graph changes through kgweave
    assert len(paths) == 16


def test_fuzzed_grpc_calls_get_proper_statuses(served: ServerThread) -> None:
    tally = fuzz_grpc(served.address, CALLS, SEED)
    assert not tally.bad, "\n".join(tally.bad)
    assert tally.calls == CALLS
    codes = tally.by_code()
    assert codes.get("OK", 0) > 0 and codes.get("INVALID_ARGUMENT", 0) > 0, codes
    _still_healthy(served.address)


def test_fuzzed_http_requests_get_proper_statuses(served: ServerThread) -> None:
    plane = served.service
    httpd = start_http(plane, "127.0.0.1", 0, plane.changes.receive)
    try:
        tally: Tally = fuzz_http(httpd.port, CALLS // 2, SEED)
        assert not tally.bad, "\n".join(tally.bad)
        codes = tally.by_code()
        assert codes.get("200", 0) > 0 and codes.get("400", 0) > 0, codes
        _still_healthy(served.address)
    finally:
        httpd.stop()


def test_register_model_found_by_the_fuzzer(served: ServerThread) -> None:
    """What the fuzzer found (a 20 KB file name, "./", a file and a folder of one name:
    INTERNAL; a broken config.json: DATA_LOSS with the server's staging path) is
    INVALID_ARGUMENT with a message in the client's terms."""
    from kgweave.v1 import admin_pb2, admin_pb2_grpc

    with grpc.insecure_channel(served.address) as channel:
        register = admin_pb2_grpc.AdminServiceStub(channel).RegisterModel
        for chunks in (
            [admin_pb2.ModelChunk(path="x" * 20_000, data=b"{}")],
            [admin_pb2.ModelChunk(path="config.json", data=b"not json")],
            [admin_pb2.ModelChunk(path="./", data=b"x")],  # the folder itself
            [
                admin_pb2.ModelChunk(path="a", data=b"x"),
                admin_pb2.ModelChunk(path="a/b", data=b"y"),
            ],
        ):
            with pytest.raises(grpc.RpcError) as info:
                register(iter(chunks), timeout=60)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            details = info.value.details() or ""
            assert str(served.service.settings.data_dir) not in details, details
            assert "upload-" not in details and "Errno" not in details, details
            assert len(details) < 400
