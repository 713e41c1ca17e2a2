"""The HTTP side against a real running server: the JSON gateway answers what gRPC answers,
hostile bodies get a clear 4xx, slow or half-sent requests neither hold the server nor stop a
normal request, and APOC's own way of posting (java.net.HttpURLConnection) works."""

from __future__ import annotations

import http.client
import json
import logging
import random
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import json_format

from kgweave.api.http import HTTPLimits, HTTPServer, serve_http, start_http
from kgweave.dataplane import DataPlane
from kgweave.settings import Settings
from kgweave.v1 import admin_pb2, admin_pb2_grpc, knowledge_pb2, knowledge_pb2_grpc
from serving_support import ServerThread, registry_with, train_demo_model

#: a safety net against a hung test (a socket that never answers), never a measured time
HANG_S = 120.0
JSON = "application/json"
APOC_CLIENT = Path(__file__).resolve().parent / "java" / "ApocLoadJsonParams.java"


@dataclass
class Served:
    service: DataPlane
    grpc_server: ServerThread
    http: HTTPServer  # default limits
    tight: HTTPServer  # short timeouts, two requests at once
    knowledge: Any
    admin: Any


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, datasets_dir: Path) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("http")
    settings = Settings(
        data_dir=root / "data", datasets_dir=datasets_dir, device="cpu", offline=True
    )
    registry_with(settings, [train_demo_model(settings, root / "model", epochs=20, dim=32)])
    service = DataPlane(settings, graph_backend="falkordb (embedded)")
    service.versions.activate("v0001")
    grpc_server = ServerThread(service)
    receiver = service.changes.receive
    http = start_http(service, "127.0.0.1", 0, receiver)
    tight_limits = HTTPLimits(idle_timeout_s=0.5, body_timeout_s=3.0, max_requests=2, grace_s=1.0)
    tight = start_http(service, "127.0.0.1", 0, receiver, tight_limits)
    channel = grpc.insecure_channel(grpc_server.address)
    yield Served(
        service,
        grpc_server,
        http,
        tight,
        knowledge_pb2_grpc.KnowledgeServiceStub(channel),
        admin_pb2_grpc.AdminServiceStub(channel),
    )
    channel.close()
    http.stop()
    tight.stop()
    grpc_server.stop()


def call(
    port: int, method: str, path: str, body: Any = None, content_type: str = JSON
) -> tuple[int, Any]:
    """One request with the standard library's client; the answer's status and JSON."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=HANG_S)
    try:
        data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        headers = {"Content-Type": content_type} if data is not None else {}
        connection.request(method, path, body=data, headers=headers)
        reply = connection.getresponse()
        raw = reply.read()
        return reply.status, json.loads(raw) if raw else None
    finally:
        connection.close()


def read_answer(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """A whole HTTP/1.1 answer from ``sock``: status, headers (lower-case names), body."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"the server closed the connection without an answer after {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "the server closed the connection in the middle of an answer"
        body += chunk
    return int(status_line.split()[1]), headers, body[:length]


def raw_exchange(
    port: int, data: bytes, close_sending: bool = False
) -> tuple[int, dict[str, str], bytes]:
    """Send ``data`` as it is on a fresh connection (then half-close it with
    ``close_sending``) and read the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=HANG_S) as sock:
        sock.sendall(data)
        if close_sending:
            sock.shutdown(socket.SHUT_WR)
        return read_answer(sock)


def head(path: str, *lines: str) -> bytes:
    return "\r\n".join([f"POST {path} HTTP/1.1", "Host: 127.0.0.1", *lines, "", ""]).encode()


# ---- the gateway answers what gRPC answers


PREDICT = {
    "queries": [
        {"head": "Alan Turing", "relation": "born_in"},
        {"relation": "born_in", "tail": "london"},
        {"head": "paris", "relation": "located_in"},
    ],
    "k": 5,
    "filterKnown": True,
}


def _same(served: Served, path: str, body: dict[str, Any], rpc: str, message: Any) -> None:
    status, answer = call(served.http.port, "POST", path, body)
    assert status == 200, answer
    request = json_format.ParseDict(body, message())
    expected = getattr(served.knowledge, rpc)(request)
    assert json_format.ParseDict(answer, type(expected)()) == expected


def test_each_endpoint_answers_what_grpc_answers(served: Served) -> None:
    _same(served, "/v1/predict", PREDICT, "PredictLinks", knowledge_pb2.PredictLinksRequest)
    snake = {**{k: v for k, v in PREDICT.items() if k != "filterKnown"}, "filter_known": True}
    assert call(served.http.port, "POST", "/v1/predict", snake) == call(
        served.http.port, "POST", "/v1/predict", PREDICT
    )
    triples = [
        {"head": "alan_turing", "relation": "born_in", "tail": "london"},
        {"head": "paris", "relation": "located_in", "tail": "france"},
    ]
    _same(served, "/v1/score", {"triples": triples}, "ScoreTriples",
          knowledge_pb2.ScoreTriplesRequest)  # fmt: skip
    _same(served, "/v1/verbalize", {"triples": triples}, "Verbalize",
          knowledge_pb2.VerbalizeRequest)  # fmt: skip
    _same(served, "/v1/verbalize", {"entity": "alan_turing", "max_chars": 200}, "Verbalize",
          knowledge_pb2.VerbalizeRequest)  # fmt: skip
    _same(served, "/v1/search", {"prefix": "al", "limit": 3}, "SearchEntities",
          knowledge_pb2.SearchEntitiesRequest)  # fmt: skip
    _same(served, "/v1/search", {"text": "capital city of France", "limit": 2},
          "SearchEntities", knowledge_pb2.SearchEntitiesRequest)  # fmt: skip

    status, entity = call(served.http.port, "GET", "/v1/entities/Alan%20Turing?maxFacts=3")
    expected = served.knowledge.GetEntity(
        knowledge_pb2.GetEntityRequest(entity="Alan Turing", max_facts=3)
    )
    assert status == 200 and json_format.ParseDict(entity, knowledge_pb2.Entity()) == expected
    assert entity["id"] == "alan_turing" and len(entity["facts"]) == 3

    status, answer = call(served.http.port, "GET", "/v1/status")
    reference = served.admin.Status(admin_pb2.StatusRequest())
    got = json_format.ParseDict(answer, admin_pb2.StatusResponse())
    assert status == 200 and got.ready and got.active_model == reference.active_model
    assert got.graph_backend == reference.graph_backend == "falkordb (embedded)"


def test_servicer_errors_have_the_grpc_code_and_message(served: Served) -> None:
    cases = [
        ("/v1/predict", {"queries": [{"head": "Alan Turnig", "relation": "born_in"}]},
         "PredictLinks", knowledge_pb2.PredictLinksRequest, 404),
        ("/v1/predict", {"queries": [{"head": "paris", "relation": "born_in"}], "k": 100000},
         "PredictLinks", knowledge_pb2.PredictLinksRequest, 400),
        ("/v1/verbalize", {}, "Verbalize", knowledge_pb2.VerbalizeRequest, 400),
        ("/v1/search", {"prefix": "a", "text": "b"}, "SearchEntities",
         knowledge_pb2.SearchEntitiesRequest, 400),
        # this version has no language model
        ("/v1/complete", {"query": {"head": "Alan Turing", "relation": "born_in"}},
         "Complete", knowledge_pb2.CompleteRequest, 400),
    ]  # fmt: skip
    for path, body, rpc, message, http_status in cases:
        with pytest.raises(grpc.RpcError) as info:
            getattr(served.knowledge, rpc)(json_format.ParseDict(body, message()))
        status, answer = call(served.http.port, "POST", path, body)
        assert (status, answer) == (
            http_status,
            {"code": info.value.code().name, "message": info.value.details()},
        )
    status, answer = call(served.http.port, "GET", "/v1/entities/nobody_at_all")
    assert status == 404 and answer["code"] == "NOT_FOUND" and "nobody_at_all" in answer["message"]


# ---- bad input: a clear 4xx, never a 500, never a dropped connection


def _bad_json(served: Served, path: str, body: bytes, status: int, words: str) -> None:
    code, answer = call(served.http.port, "POST", path, body)
    assert code == status, answer
    assert answer["code"] in ("INVALID_ARGUMENT", "NOT_FOUND"), answer
    assert words in answer["message"], answer


def no_errors_logged(caplog: pytest.LogCaptureFixture) -> None:
    """Bad input is the client's fault: nothing on the server logs an error (a traceback)."""
    assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


def test_malformed_bodies_are_400(served: Served, caplog: pytest.LogCaptureFixture) -> None:
    deep_list = b"[" * 10_000 + b"]" * 10_000
    deep_object = b'{"a":' * 10_000 + b"1" + b"}" * 10_000
    shallow_but_deep = b'{"queries": ' + b"[" * 40 + b"]" * 40 + b"}"
    for path in ("/v1/predict", "/v1/changes"):
        _bad_json(served, path, b'{"queries": [', 400, "malformed JSON")
        _bad_json(served, path, b"\xff\xfe{}", 400, "not UTF-8")
        _bad_json(served, path, deep_list, 400, "nested deeper")
        _bad_json(served, path, deep_object, 400, "nested deeper")
        _bad_json(served, path, shallow_but_deep, 400, "nested deeper")
        _bad_json(served, path, b'{"entity": "\\ud800"}', 400, "lone surrogate")
        _bad_json(served, path, b'{"\\udfff": 1}', 400, "lone surrogate")
    _bad_json(served, "/v1/predict", b"[]", 400, "must be a JSON object")
    _bad_json(served, "/v1/predict", b'{"k": "many"}', 400, "PredictLinksRequest")
    _bad_json(served, "/v1/predict", b'{"queries": 5}', 400, "PredictLinksRequest")
    _bad_json(served, "/v1/score", b'{"triples": [{"head": 1}]}', 400, "ScoreTriplesRequest")
    _bad_json(served, "/v1/predict", b'{"nope": 1}', 400, "nope")
    _bad_json(served, "/v1/changes", b'{"source": "x", "events": [{}]}', 400, "events[0]")
    no_errors_logged(caplog)


def test_content_type_must_be_json(served: Served) -> None:
    before = served.service.changes.event_log.end_offset
    body = {"source": "page", "events": [{"kind": "entity_upserted", "entity": "evil"}]}
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data"):
        for path in ("/v1/changes", "/v1/predict"):
            status, answer = call(served.http.port, "POST", path, body, content_type)
            assert status == 415 and "application/json" in answer["message"], answer
    assert served.service.changes.event_log.end_offset == before  # nothing landed
    status, answer = call(served.http.port, "POST", "/v1/changes", body, f"{JSON}; charset=utf-8")
    assert (status, answer) == (202, {"accepted": 1})


def test_routes_and_methods(served: Served) -> None:
    status, answer = call(served.http.port, "GET", "/v1/nothing")
    assert status == 404 and answer["code"] == "NOT_FOUND"
    status, answer = call(served.http.port, "GET", "/v1/predict")
    assert status == 405 and "POST" in answer["message"]
    status, answer = call(served.http.port, "POST", "/healthz", b"{}")
    assert status == 405 and "GET" in answer["message"]
    status, answer = call(served.http.port, "GET", "/healthz")
    assert (status, answer) == (200, {"ready": True})
    connection = http.client.HTTPConnection("127.0.0.1", served.http.port, timeout=HANG_S)
    connection.request("GET", "/metrics")
    reply = connection.getresponse()
    text = reply.read().decode()
    connection.close()
    assert reply.status == 200 and reply.getheader("Content-Type", "").startswith("text/plain")
    assert 'kgweave_request_seconds_count{code="OK",method="PredictLinks"}' in text


def test_broken_framing_is_a_clear_answer(served: Served, caplog: pytest.LogCaptureFixture) -> None:
    port = served.http.port
    predict = head("/v1/predict", f"Content-Type: {JSON}")[:-2]
    for length in ("-1", "abc", "1e3", " "):
        status, headers, _ = raw_exchange(
            port, predict + f"Content-Length: {length}\r\n\r\n{{}}".encode()
        )
        assert status == 400 and headers.get("connection") == "close", (length, status)
    # a body cut short: the sender closes its side after 10 of 100 bytes
    status, _, _ = raw_exchange(port, predict + b"Content-Length: 100\r\n\r\n" + b"{" * 10, True)
    assert status == 400
    # over the cap by its Content-Length: refused before a byte of the body is read
    over = predict + f"Content-Length: {(64 << 20) + 1}\r\n\r\n".encode()
    status, _, body = raw_exchange(port, over)
    assert status == 413 and b"over 67108864 bytes" in body
    # over the cap by chunked framing (no Content-Length at all): counted as it arrives
    with socket.create_connection(("127.0.0.1", port), timeout=HANG_S) as sock:
        sock.sendall(predict + b"Transfer-Encoding: chunked\r\n\r\n")
        chunk = b"%x\r\n%s\r\n" % (1 << 20, b" " * (1 << 20))
        try:
            for _ in range(65):
                sock.sendall(chunk)
        except OSError:  # the server answered and closed before the last chunk: fine
            pass
        status, _, body = read_answer(sock)
    assert status == 413 and json.loads(body)["code"] == "INVALID_ARGUMENT"
    no_errors_logged(caplog)


# ---- slow and half-sent requests


def test_half_sent_requests_hold_nothing(served: Served) -> None:
    """1,000 connections that never finish their request head: a normal request is answered
    meanwhile, no thread is held for them, and the server closes each (its idle timeout)."""
    port = served.tight.port
    threads = threading.active_count()
    stuck = []
    try:
        for _ in range(1000):
            sock = socket.create_connection(("127.0.0.1", port), timeout=HANG_S)
            sock.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Ty")
            stuck.append(sock)
        assert call(port, "GET", "/healthz") == (200, {"ready": True})
        status, answer = call(port, "POST", "/v1/predict", PREDICT)
        assert status == 200 and answer["results"]
        # (each of them was accepted before the normal request)
        assert threading.active_count() <= threads + 2
        for sock in stuck:
            assert sock.recv(1024) == b""  # closed by the server, without an answer
    finally:
        for sock in stuck:
            sock.close()


def test_slow_bodies_are_408_and_requests_are_bounded(served: Served) -> None:
    """Two requests whose body never arrives fill the tight server's two places: a third is
    refused (429, Retry-After) while /healthz still answers; the slow ones end in 408."""
    port = served.tight.port
    app = served.tight.app
    slow = []
    try:
        for _ in range(2):
            sock = socket.create_connection(("127.0.0.1", port), timeout=HANG_S)
            sock.sendall(head("/v1/predict", f"Content-Type: {JSON}", "Content-Length: 10") + b"{")
            slow.append(sock)
        while app.in_flight < 2:  # until the server has read both requests' heads
            time.sleep(0.001)
        status, answer = call(port, "POST", "/v1/predict", PREDICT)
        assert status == 429 and answer["code"] == "RESOURCE_EXHAUSTED", answer
        assert call(port, "GET", "/healthz") == (200, {"ready": True})
        for sock in slow:
            status, _, body = read_answer(sock)
            assert status == 408 and json.loads(body)["code"] == "DEADLINE_EXCEEDED"
    finally:
        for sock in slow:
            sock.close()
    status, answer = call(port, "POST", "/v1/predict", PREDICT)
    assert status == 200 and answer["results"]


# ---- APOC


def _apoc(url: str, payload: str, *headers: str) -> tuple[int, Any]:
    java = shutil.which("java")
    if java is None:
        pytest.skip("no java: APOC's client (java.net.HttpURLConnection) cannot be run")
    done = subprocess.run(
        [java, str(APOC_CLIENT), url, payload, *headers],
        capture_output=True,
        text=True,
        timeout=HANG_S,
        check=True,
    )
    status, _, body = done.stdout.partition("\n")
    return int(status), json.loads(body) if body.strip() else None


def test_apoc_load_json_params_posts_as_apoc_does(served: Served) -> None:
    """``apoc.load.jsonParams(url, {method: "POST", `Content-Type`: "application/json"},
    payload)``: APOC's HttpURLConnection (chunked, a "method" header) gets the gRPC answer;
    without the Content-Type Java sends a form type, refused with 415."""
    url = f"http://127.0.0.1:{served.http.port}/v1/predict"
    status, answer = _apoc(url, json.dumps(PREDICT), "method=POST", f"Content-Type={JSON}")
    expected = served.knowledge.PredictLinks(
        json_format.ParseDict(PREDICT, knowledge_pb2.PredictLinksRequest())
    )
    assert status == 200
    assert json_format.ParseDict(answer, knowledge_pb2.PredictLinksResponse()) == expected
    status, answer = _apoc(url, json.dumps(PREDICT), "method=POST")
    assert status == 415 and "application/json" in answer["message"]
    before = served.service.changes.event_log.end_offset
    changes = {"source": "neo4j-apoc", "events": [{"kind": "entity_upserted", "entity": "x"}]}
    status, answer = _apoc(
        url.replace("/v1/predict", "/v1/changes"),
        json.dumps(changes),
        "method=POST",
        f"Content-Type={JSON}",
    )
    assert (status, answer) == (202, {"accepted": 1})
    assert served.service.changes.event_log.end_offset == before + 1


# ---- binding, stopping, fuzzing


def test_http_host_is_its_own_setting(served: Served) -> None:
    """KGWEAVE_HTTP_HOST binds the HTTP side apart from gRPC; unset, it follows the gRPC host."""
    settings = served.service.settings.model_copy(
        update={"grpc_host": "127.0.0.1", "http_host": "127.0.0.2", "http_port": 0}
    )
    own = serve_http(served.service, settings)
    follows = serve_http(served.service, settings.model_copy(update={"http_host": None}))
    try:
        assert own.host == "127.0.0.2" and follows.host == "127.0.0.1"
        with socket.create_connection(("127.0.0.2", own.port), timeout=HANG_S) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert read_answer(sock)[0] == 200
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", own.port), timeout=HANG_S).close()
    finally:
        own.stop()
        follows.stop()


def test_stop_lets_a_request_in_flight_finish(served: Served) -> None:
    server = start_http(served.service, "127.0.0.1", 0, limits=HTTPLimits(grace_s=HANG_S))
    with socket.create_connection(("127.0.0.1", server.port), timeout=HANG_S) as sock:
        body = json.dumps(PREDICT).encode()
        sock.sendall(head("/v1/predict", f"Content-Type: {JSON}", f"Content-Length: {len(body)}"))
        sock.sendall(body[:5])
        while server.app.in_flight < 1:  # until the server has the request
            time.sleep(0.001)
        stopping = threading.Thread(target=server.stop)
        stopping.start()
        while True:  # until it accepts no new connection
            try:
                socket.create_connection(("127.0.0.1", server.port), timeout=HANG_S).close()
            except (ConnectionRefusedError, ConnectionResetError):
                break  # refused, or reset from the closing listener's backlog: no new calls
        sock.sendall(body[5:])
        status, _, answer = read_answer(sock)
    stopping.join()
    assert status == 200 and json.loads(answer)["results"]


def test_fuzzed_bodies_never_get_a_500(served: Served, caplog: pytest.LogCaptureFixture) -> None:
    """Mutated requests (fixed seed) on every POST route: each gets a JSON answer below 500."""
    rng = random.Random(16)
    seeds = [
        json.dumps(PREDICT).encode(),
        b'{"triples": [{"head": "paris", "relation": "located_in", "tail": "france"}]}',
        b'{"entity": "alan_turing", "maxChars": 50}',
        b'{"query": {"head": "Alan Turing", "relation": "born_in"}, "k": 2}',
        b'{"prefix": "al", "limit": 2}',
        b'{"source": "fuzz", "events": [{"kind": "triple_added", "head": "a", '
        b'"relation": "r", "tail": "b"}]}',
    ]
    paths = [*(f"/v1/{p}" for p in ("predict", "score", "verbalize", "complete", "search")),
             "/v1/changes"]  # fmt: skip
    pieces = [b"{", b"}", b"[", b"]", b'"', b"\\u", b"\\ud800", b"null", b"-1", b"1e999",
              b"\x00", b"\xff", b",", b":", b"true", b'"k"', b"2147483648"]  # fmt: skip
    for i in range(300):
        body = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 4)):
            at = rng.randrange(len(body) + 1)
            if rng.random() < 0.5:
                body[at:at] = rng.choice(pieces)
            else:
                del body[at : at + rng.randint(1, 8)]
        status, answer = call(served.http.port, "POST", rng.choice(paths), bytes(body))
        assert status < 500, (i, bytes(body), answer)
        assert status in (200, 202) or set(answer) == {"code", "message"}, (i, answer)
    no_errors_logged(caplog)
