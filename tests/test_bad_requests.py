"""What both gRPC front ends answer to bad requests: a huge unknown name is NOT_FOUND with a
short message (never RESOURCE_EXHAUSTED for an oversized status), and request bytes that do
not decode are INVALID_ARGUMENT "malformed request message", on every kind of method."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_reflection.v1alpha import reflection_pb2

from kgweave.api.client import Client
from kgweave.errors import ECHO_MAX_CHARS, NotFoundError, echo, echo_all
from kgweave.predict import Query
from kgweave.v1 import admin_pb2, admin_pb2_grpc, knowledge_pb2, knowledge_pb2_grpc
from serving_support import TRANSPORTS, ServerThread, demo_model_in, serve_model

HUGE = "x" * 20_000  # 20 KB: beyond gRPC's 8 KB limit for status details


@pytest.fixture(scope="module")
def demo_model(tmp_path_factory: pytest.TempPathFactory, datasets_dir: Path) -> Path:
    return demo_model_in(
        tmp_path_factory, datasets_dir, "bad-requests-model", epochs=5, dim=16, seed=1
    )


@pytest.fixture(params=TRANSPORTS)
def server(request: pytest.FixtureRequest, demo_model: Path) -> Iterator[ServerThread]:
    yield from serve_model(demo_model, request.param)


def _error(call: object, *args: object) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call(*args, timeout=30)  # type: ignore[operator]
    return info.value


def test_echo_cuts_long_values() -> None:
    assert echo("paris") == "'paris'"
    assert echo(HUGE) == repr("x" * ECHO_MAX_CHARS) + "…"
    assert echo("a\nb") == "'a\\nb'"  # one line
    assert echo(list(range(1000))).endswith("…") and len(echo(list(range(1000)))) == 81
    assert echo_all(["a", "b"]) == "'a', 'b'"
    assert echo_all([str(i) for i in range(9)]) == "'0', '1', '2', '3', '4', … (9 in all)"


def test_a_huge_unknown_name_is_not_found_with_a_short_message(server: ServerThread) -> None:
    with grpc.insecure_channel(server.address) as channel:
        stub = knowledge_pb2_grpc.KnowledgeServiceStub(channel)
        for query in (
            knowledge_pb2.LinkQuery(head=HUGE, relation="born_in"),
            knowledge_pb2.LinkQuery(head="alan_turing", relation=HUGE),
        ):
            error = _error(stub.PredictLinks, knowledge_pb2.PredictLinksRequest(queries=[query]))
            assert error.code() == grpc.StatusCode.NOT_FOUND, error.details()
            details = error.details() or ""
            assert f"{echo(HUGE)}" in details and len(details) < 300
        error = _error(stub.GetEntity, knowledge_pb2.GetEntityRequest(entity=HUGE))
        assert error.code() == grpc.StatusCode.NOT_FOUND
        assert len(error.details() or "") < 300
        admin = admin_pb2_grpc.AdminServiceStub(channel)
        error = _error(admin.GetJob, admin_pb2.GetJobRequest(job_id=HUGE))
        assert error.code() == grpc.StatusCode.NOT_FOUND
        assert len(error.details() or "") < 300
    # the CLI's client (kgweave predict --server) says the same short line
    with Client(server.address) as client, pytest.raises(NotFoundError) as info:
        client.predict(Query("born_in", head=HUGE))
    assert info.value.message.startswith(f"unknown entity {echo(HUGE)}")


def test_malformed_bytes_are_invalid_argument_on_every_kind_of_method(
    server: ServerThread,
) -> None:
    garbage = b"\xff\xff\xff"
    with grpc.insecure_channel(server.address) as channel:
        calls = {
            # unary (batched behind the native front end), unary, server streaming
            "PredictLinks": channel.unary_unary("/kgweave.v1.KnowledgeService/PredictLinks"),
            "GetEntity": channel.unary_unary("/kgweave.v1.KnowledgeService/GetEntity"),
            "WatchJob": lambda request, timeout: list(
                channel.unary_stream("/kgweave.v1.AdminService/WatchJob")(request, timeout=timeout)
            ),
        }
        for name, call in calls.items():
            error = _error(call, garbage)
            assert (error.code(), error.details()) == (
                grpc.StatusCode.INVALID_ARGUMENT,
                "malformed request message",
            ), name
        # a client stream (reflection): the bad message ends the call, after a good answer
        reflect = channel.stream_stream(
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
        )
        good = reflection_pb2.ServerReflectionRequest(list_services="").SerializeToString()
        replies = reflect(iter([good, garbage]), timeout=30)
        first = reflection_pb2.ServerReflectionResponse.FromString(next(replies))
        assert first.list_services_response.service
        with pytest.raises(grpc.RpcError) as info:
            next(replies)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert info.value.details() == "malformed request message"
        # the server is fine afterwards
        stub = knowledge_pb2_grpc.KnowledgeServiceStub(channel)
        assert stub.GetEntity(knowledge_pb2.GetEntityRequest(entity="paris"), timeout=30).id


def test_error_messages_quote_values_through_echo() -> None:
    """No raise in server/kgweave formats a value with ``!r``: errors.echo (or did_you_mean,
    echo_all) quotes it, cut to a short length."""
    import ast

    offenders = []
    for path in sorted(
        (Path(__file__).resolve().parent.parent / "server" / "kgweave").rglob("*.py")
    ):
        if "v1" in path.parts:
            continue  # generated
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Raise) and node.exc is not None:
                offenders += [
                    f"{path.name}:{node.lineno}"
                    for value in ast.walk(node.exc)
                    if isinstance(value, ast.FormattedValue) and value.conversion == ord("r")
                ]
    assert offenders == []
