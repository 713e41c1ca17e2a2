"""The native gRPC front end (kgweave-frontend, C++) and its bridge to the engine.

Every served-API test in test_service.py, test_jobs.py and test_proto.py runs on both front
ends; these tests cover what only the native one does: a burst of calls answered as one
batch, its own limits (and their refusals counted by the engine), cancellation, draining on
stop, and the two processes watching each other; and admission by queries, alike on both.
They use the real binary (built by ``.ci/run``) on a free port.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from kgweave import __version__
from kgweave.api import frame_protocol as fp
from kgweave.api import frontend
from kgweave.api.bridge import Bridge, HandlerTable, Hello, hello, read_hello
from kgweave.api.endpoint import Health, add_services
from kgweave.api.frame_protocol import VERSION
from kgweave.api.frontend import find_frontend, start_native
from kgweave.api.server import serve_forever, start_server
from kgweave.artifact import load_artifact
from kgweave.dataplane import DataPlane
from kgweave.errors import KGWeaveError
from kgweave.predict import LinkPredictor, Query
from kgweave.settings import Settings, get_settings
from kgweave.v1 import knowledge_pb2, knowledge_pb2_grpc
from serving_support import ServerThread, frontend_binary, registry_with, train_demo_model

PREDICT = "/kgweave.v1.KnowledgeService/PredictLinks"
QUERIES = [
    Query(relation="born_in", head="alan_turing"),
    Query(relation="located_in", head="paris"),
    Query(relation="born_in", tail="london"),
    Query(relation="citizen_of", tail="united_kingdom"),
]


@pytest.fixture(scope="module")
def demo_model(tmp_path_factory: pytest.TempPathFactory, datasets_dir: Path) -> Path:
    root = tmp_path_factory.mktemp("frontend-model")
    settings = Settings(data_dir=root / "data", datasets_dir=datasets_dir, device="cpu")
    return train_demo_model(settings, root / "m", epochs=20, dim=32, seed=3)


def _service(model: Path) -> DataPlane:
    settings = get_settings()
    registry_with(settings, [model])
    service = DataPlane(settings)
    service.versions.activate("v0001")
    return service


@pytest.fixture
def native(demo_model: Path) -> Iterator[ServerThread]:
    frontend_binary()  # skip when not built
    server = ServerThread(_service(demo_model), "native")
    yield server
    server.stop()


def _request(query: Query, k: int = 5) -> knowledge_pb2.PredictLinksRequest:
    return knowledge_pb2.PredictLinksRequest(
        queries=[
            knowledge_pb2.LinkQuery(
                head=query.head or "", relation=query.relation, tail=query.tail or ""
            )
        ],
        k=k,
    )


def _until(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    """Wait for ``condition`` (checked every 20 ms); fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


def _code(call: Callable[[], object]) -> grpc.StatusCode:
    """The status code ``call`` ends with (OK when it answers)."""
    try:
        call()
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


def _spawn(binary: Path, *options: str) -> tuple[subprocess.Popen[bytes], socket.socket, int]:
    """The front end alone on a free port, after the handshake: (process, the engine's end of
    the socket, port)."""
    ours, theirs = socket.socketpair()
    ours.sendall(hello("kgweave tests"))
    process = subprocess.Popen(
        [str(binary), "--listen", "127.0.0.1:0", "--bridge-fd", str(theirs.fileno()), *options],
        pass_fds=(theirs.fileno(),),
        stdout=subprocess.PIPE,
    )
    theirs.close()
    assert process.stdout is not None
    port = int(process.stdout.readline().split()[1])
    assert read_hello(ours) == Hello(VERSION, f"kgweave-frontend {__version__}")
    return process, ours, port


def _batches(service: DataPlane) -> tuple[float, float]:
    """(scoring passes, queries scored) so far, from the service's own metrics."""
    count = service.metrics.registry.get_sample_value("kgweave_batch_queries_count") or 0.0
    total = service.metrics.registry.get_sample_value("kgweave_batch_queries_sum") or 0.0
    return count, total


def test_burst_of_calls_is_scored_in_few_passes_with_exact_answers(
    native: ServerThread, demo_model: Path
) -> None:
    """256 concurrent one-query calls, a quarter of them bad: every good call gets the offline
    engine's answer, every bad one its own NOT_FOUND, and the calls share scoring passes."""
    predictor = LinkPredictor(load_artifact(demo_model))
    expected = [[p.entity for p in row] for row in predictor.predict(QUERIES, k=5)]
    channel = grpc.insecure_channel(native.address)
    stub = knowledge_pb2_grpc.KnowledgeServiceStub(channel)
    stub.PredictLinks(_request(QUERIES[0]))  # connected
    passes_before, scored_before = _batches(native.service)
    calls = 256
    bad = Query(relation="born_in", head="nobody_at_all")
    futures = [
        stub.PredictLinks.future(_request(bad if i % 4 == 3 else QUERIES[i % 4]), timeout=30)
        for i in range(calls)
    ]
    for i, future in enumerate(futures):
        if i % 4 == 3:
            with pytest.raises(grpc.RpcError) as info:
                future.result()
            assert info.value.code() == grpc.StatusCode.NOT_FOUND
            assert "nobody_at_all" in (info.value.details() or "")
        else:
            reply = future.result()
            assert reply.model_version == "v0001"
            assert [c.entity_id for c in reply.results[0].candidates] == expected[i % 4]
    passes, scored = _batches(native.service)
    assert scored - scored_before == calls * 3 // 4  # every good query scored once
    assert passes - passes_before < calls * 3 // 4 / 2  # ... in shared passes
    channel.close()


def test_malformed_and_unknown_methods(native: ServerThread) -> None:
    channel = grpc.insecure_channel(native.address)
    raw = channel.unary_unary(PREDICT)  # bytes in, bytes out
    with pytest.raises(grpc.RpcError) as info:
        raw(b"\xff\xff\xff", timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details() == "malformed request message"
    for method in ("/kgweave.v1.KnowledgeService/Nope", b"/kgweave.v1.X/\xff"):  # not UTF-8
        with pytest.raises(grpc.RpcError) as info:
            channel.unary_unary(method)(b"", timeout=10)  # type: ignore[arg-type]
        assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
    # the server is fine afterwards
    reply = knowledge_pb2_grpc.KnowledgeServiceStub(channel).PredictLinks(_request(QUERIES[1]))
    assert len(reply.results[0].candidates) == 5
    channel.close()


class _HeldScoring:
    """Scoring passes wait at a gate (the scoring itself is real)."""

    def __init__(self, service: DataPlane, monkeypatch: pytest.MonkeyPatch) -> None:
        self.gate = threading.Event()
        self.scoring = threading.Event()
        predictor = service.versions.active().predictor
        original = predictor.top_ids

        def held(*args: object, **kwargs: object) -> object:
            self.scoring.set()
            self.gate.wait(timeout=30)
            return original(*args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(predictor, "top_ids", held)


def test_calls_in_flight_limit_deadline_and_cancel(
    demo_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Beyond its bound of calls in flight (CALLS_MAX, here 3) the front end answers
    RESOURCE_EXHAUSTED itself, and the engine counts every such refusal in its metrics; a
    deadline passes as DEADLINE_EXCEEDED; a cancelled call leaves the others unharmed."""
    frontend_binary()
    monkeypatch.setattr(frontend, "CALLS_MAX", 3)
    service = _service(demo_model)
    refusals = [0]  # seen by the client
    held = _HeldScoring(service, monkeypatch)
    server = ServerThread(service, "native")
    channel = grpc.insecure_channel(server.address)
    stub = knowledge_pb2_grpc.KnowledgeServiceStub(channel)
    try:
        first = stub.PredictLinks.future(_request(QUERIES[0]), timeout=30)
        assert held.scoring.wait(timeout=10)  # the engine is inside the (held) scoring pass
        accepted: list[grpc.Future] = []

        def accept(query: Query) -> bool:
            """Start a call that the front end takes and holds (the engine is held), and
            wait until it is taken: a refusal comes at once, so a call still open after a
            second was taken. Calls started on one channel can reach the server in another
            order (a future started before a blocking probe was seen arriving after it, and
            refused because of the probe), so each held call is confirmed taken before the
            next call starts."""
            call = stub.PredictLinks.future(_request(query), timeout=30)
            try:
                call.result(timeout=1.0)
            except grpc.FutureTimeoutError:
                accepted.append(call)
                return True
            except grpc.RpcError as exc:
                assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                refusals[0] += 1
            return False

        _until(lambda: accept(QUERIES[1]))
        _until(lambda: accept(QUERIES[2]))
        cancelled, waiting = accepted

        def probe(timeout: float) -> grpc.StatusCode:
            code = _code(lambda: stub.PredictLinks(_request(QUERIES[3]), timeout=timeout))
            refusals[0] += code == grpc.StatusCode.RESOURCE_EXHAUSTED
            return code

        # once both reached the front end, a fourth call is refused (an accepted probe just
        # times out and frees its slot)
        _until(lambda: probe(0.2) == grpc.StatusCode.RESOURCE_EXHAUSTED)
        with pytest.raises(grpc.RpcError) as info:
            stub.PredictLinks(_request(QUERIES[3]), timeout=10)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "3 calls in flight" in (info.value.details() or "")
        refusals[0] += 1
        assert cancelled.cancel()
        # the cancel frees its slot: a call is taken again, and with the engine held its
        # deadline passes
        codes: list[grpc.StatusCode] = []

        def taken_again() -> bool:
            codes.append(probe(0.3))
            return codes[-1] != grpc.StatusCode.RESOURCE_EXHAUSTED

        _until(taken_again)
        assert codes[-1] == grpc.StatusCode.DEADLINE_EXCEEDED
        held.gate.set()
        assert len(first.result().results[0].candidates) == 5
        assert len(waiting.result().results[0].candidates) == 5
        reply = stub.PredictLinks(_request(QUERIES[3]), timeout=10)
        assert reply.results[0].candidates
        # every refusal the front end made reaches the engine's metrics (REFUSED frames),
        # as the engine's own refusals do on both front ends
        _until(lambda: _refused(service, "PredictLinks") == refusals[0])
        assert refusals[0] >= 2  # the probe that found the bound full, and the call after it
    finally:
        held.gate.set()
        channel.close()
        server.stop()


def _refused(service: DataPlane, method: str) -> float:
    """Calls of ``method`` answered RESOURCE_EXHAUSTED, from the service's metrics."""
    labels = {"method": method, "code": "RESOURCE_EXHAUSTED"}
    value = service.metrics.registry.get_sample_value("kgweave_request_seconds_count", labels)
    return value or 0.0


def test_stop_drains_calls_in_flight_then_refuses(
    demo_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stopping (SIGTERM in `kgweave serve`): the front end refuses new calls at once, a call
    in flight (here a Verbalize held in its worker thread) still finishes within the grace
    period, then the front end process exits cleanly."""
    frontend_binary()
    service = _service(demo_model)
    gate, entered = threading.Event(), threading.Event()
    verbalize = service.queries.verbalize

    def held(*args: Any, **kwargs: Any) -> Any:
        entered.set()
        gate.wait(timeout=30)
        return verbalize(*args, **kwargs)

    monkeypatch.setattr(service.queries, "verbalize", held)
    server = ServerThread(service, "native")
    channel = grpc.insecure_channel(server.address)
    stub = knowledge_pb2_grpc.KnowledgeServiceStub(channel)
    pending = stub.Verbalize.future(
        knowledge_pb2.VerbalizeRequest(entity="alan_turing"), timeout=30
    )
    assert entered.wait(timeout=10)
    process = server.running.process  # type: ignore[attr-defined]
    stopping = threading.Thread(target=server.stop, kwargs={"grace": 20.0})
    stopping.start()
    entity = knowledge_pb2.GetEntityRequest(entity="paris")
    _until(lambda: _code(lambda: stub.GetEntity(entity, timeout=2)) == grpc.StatusCode.UNAVAILABLE)
    gate.set()  # the held call completes within the grace period
    assert "Alan Turing" in pending.result(timeout=20).text
    stopping.join(timeout=60)
    assert not stopping.is_alive() and process.returncode == 0
    channel.close()


def test_front_end_exits_when_the_engine_goes(native: ServerThread) -> None:
    """Calls in flight end UNAVAILABLE at once (not after the grace period), then the front end
    exits cleanly."""
    process = native.running.process  # type: ignore[attr-defined]
    channel = grpc.insecure_channel(native.address)
    # a stream in flight, whose own deadline (5 s) comes before the grace period (10 s) ends
    watch = health_pb2_grpc.HealthStub(channel).Watch(
        health_pb2.HealthCheckRequest(service=""), timeout=5
    )
    assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
    native.loop.call_soon_threadsafe(native.running.bridge.close)  # type: ignore[attr-defined]
    with pytest.raises(grpc.RpcError) as info:
        next(watch)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE  # not DEADLINE_EXCEEDED
    exited = asyncio.run_coroutine_threadsafe(process.wait(), native.loop)
    assert exited.result(timeout=15) == 0
    channel.close()


def test_a_handler_that_breaks_still_answers_and_refusals_under_deadlines_are_safe(
    demo_model: Path,
) -> None:
    """Generic paths of the bridge with a handler table of its own: a response that cannot be
    encoded ends its call INTERNAL (never unanswered); calls refused at the in-flight limit
    whose deadlines pass at the same moment do not bring the front end down."""
    binary = frontend_binary()

    async def broken(_request: bytes, _context: object) -> None:
        return None  # not a message

    table = HandlerTable()
    table.add_registered_method_handlers(
        "t.T",
        {
            "Broken": grpc.unary_unary_rpc_method_handler(
                broken,
                request_deserializer=lambda b: b,
                response_serializer=lambda m: m.SerializeToString(),
            )
        },
    )

    async def run() -> tuple[grpc.StatusCode, str, int | None]:
        loop = asyncio.get_running_loop()
        process, ours, port = _spawn(binary, "--unary", "/t.T/Broken")
        await loop.connect_accepted_socket(lambda: Bridge(table), ours)

        def client() -> tuple[grpc.StatusCode, str]:
            channel = grpc.insecure_channel(f"127.0.0.1:{port}")
            try:
                channel.unary_unary("/t.T/Broken")(b"x", timeout=10)
            except grpc.RpcError as exc:
                return exc.code(), exc.details() or ""
            finally:
                channel.close()
            raise AssertionError("the broken handler answered")

        code, details = await loop.run_in_executor(None, client)
        process.terminate()
        return code, details, process.wait(timeout=15)

    code, details, returncode = asyncio.run(run())
    assert code == grpc.StatusCode.INTERNAL and "server log" in details
    assert returncode == 0

    # refusals: no call may be in flight, and deadlines of a fraction of a millisecond; the
    # engine's end hears of every refusal in REFUSED frames (call id 0, counts by method)
    process, ours, port = _spawn(binary, "--max-in-flight", "0")
    frames: list[tuple[int, int, bytes]] = []
    reader = threading.Thread(target=_read_frames, args=(ours, frames))
    reader.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    call = channel.unary_unary("/t.T/Any")
    codes: list[grpc.StatusCode] = []
    for i in range(100):
        futures = [call.future(b"", timeout=0.0005 + (i % 7) * 0.0002) for _ in range(32)]
        for future in futures:
            with pytest.raises(grpc.RpcError) as info:
                future.result()
            codes.append(info.value.code())
    assert process.poll() is None  # alive
    assert set(codes) <= {grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.DEADLINE_EXCEEDED}
    channel.close()
    process.terminate()
    assert process.wait(timeout=15) == 0
    reader.join()  # the front end closed its end
    ours.close()
    assert frames and {(kind, call_id) for kind, call_id, _ in frames} == {(fp.REFUSED, 0)}
    refused = 0
    for _, _, payload in frames:
        (count,) = fp.REFUSED_PREFIX.unpack_from(payload)
        assert payload[fp.REFUSED_PREFIX_SIZE :] == b"/t.T/Any"
        refused += count
    # every refusal a client saw was reported (a call whose deadline passed first may have
    # been refused too, unseen)
    assert codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) <= refused <= len(codes)


def _split_frames(data: bytes, frames: list[tuple[int, int, bytes]]) -> bytes:
    """Append the whole frames at the start of ``data`` to ``frames`` as (kind, call id,
    payload); returns what is left (the start of a frame not all received yet)."""
    while len(data) >= fp.HEADER_SIZE:
        length, kind, call_id = fp.HEADER.unpack_from(data)
        if len(data) < fp.LENGTH_SIZE + length:
            break
        frames.append((kind, call_id, data[fp.HEADER_SIZE : fp.LENGTH_SIZE + length]))
        data = data[fp.LENGTH_SIZE + length :]
    return data


def _read_frames(sock: socket.socket, frames: list[tuple[int, int, bytes]]) -> None:
    """Every frame ``sock`` receives, until the peer closes."""
    data = b""
    while chunk := sock.recv(1 << 16):
        data = _split_frames(data + chunk, frames)


def test_serve_stops_with_an_error_when_the_front_end_dies(demo_model: Path) -> None:
    """`kgweave serve` does not live on answering /healthz with gRPC gone: a killed front end
    turns health NOT_SERVING and ends serve_forever with one readable error."""
    frontend_binary()
    service = _service(demo_model)
    settings = service.settings.model_copy(
        update={"grpc_port": 0, "http_port": 0, "frontend": "native"}
    )
    started: list[object] = []
    outcome: list[BaseException] = []
    ready = threading.Event()  # serving, or failed to start

    def serving(port: int, _http: int) -> None:
        started.append(port)
        ready.set()

    def main() -> None:
        try:
            asyncio.run(serve_forever(service, settings, serving))
        except BaseException as exc:
            outcome.append(exc)
            ready.set()

    thread = threading.Thread(target=main, daemon=True)
    thread.start()
    assert ready.wait(timeout=30) and started, outcome
    address = f"127.0.0.1:{started[0]}"
    channel = grpc.insecure_channel(address)
    stub = knowledge_pb2_grpc.KnowledgeServiceStub(channel)
    assert stub.PredictLinks(_request(QUERIES[0]), timeout=10).results
    channel.close()
    assert service.frontend == "native"
    children = [
        int(p.name)
        for p in Path("/proc").iterdir()
        if p.name.isdigit()
        and (p / "stat").read_text().rsplit(")", 1)[1].split()[1] == str(os.getpid())
        and "kgweave-frontend" in (p / "cmdline").read_text()
    ]
    assert len(children) == 1
    os.kill(children[0], signal.SIGKILL)
    thread.join(timeout=30)
    assert not thread.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], KGWeaveError)
    assert "native front end exited unexpectedly" in outcome[0].message


def test_start_errors_are_one_readable_line(demo_model: Path) -> None:
    binary = frontend_binary()
    service = _service(demo_model)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = service.settings.model_copy(update={"grpc_port": port})
        with pytest.raises(KGWeaveError) as info:
            asyncio.run(start_native(service, settings, binary))
    assert "did not start" in info.value.message and f"127.0.0.1:{port}" in info.value.message
    assert "\n" not in info.value.message
    missing = service.settings.model_copy(
        update={"frontend": "native", "frontend_binary": Path("/nonexistent/kgweave-frontend")}
    )
    assert find_frontend(missing) is None
    with pytest.raises(KGWeaveError) as info:
        asyncio.run(start_server(service, missing))
    assert "no kgweave-frontend binary" in info.value.message
    service.close()


def test_auto_picks_native_when_built_and_python_otherwise(demo_model: Path) -> None:
    binary = frontend_binary()
    service = _service(demo_model)

    async def transport(settings: Settings) -> str:
        running = await start_server(service, settings)
        try:
            return running.transport
        finally:
            await running.stop(0.5)

    base = service.settings.model_copy(update={"grpc_port": 0, "frontend": "auto"})
    assert asyncio.run(transport(base.model_copy(update={"frontend_binary": binary}))) == ("native")
    nowhere = base.model_copy(update={"frontend_binary": Path("/nonexistent/x")})
    assert asyncio.run(transport(nowhere)) == "python"
    service.close()


FAKE_FRONT_END = """#!{python}
import signal, socket, struct, sys
sock = socket.socket(fileno=int(sys.argv[sys.argv.index("--bridge-fd") + 1]))
if {protocol} > 0:  # protocol 0: a front end built before the handshake sends no HELLO
    sock.sendall(struct.pack("<IBQIH", 9 + 6 + 4, 8, 0, {protocol}, 4) + b"fake")
print("LISTENING 1", flush=True)
signal.pause()
"""


def test_a_front_end_of_another_protocol_version_stops_serve_with_one_line(
    demo_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both ends check the frame protocol version at start-up: the real binary refuses an
    engine of another version before it listens (exit 3, one line), and the engine turns a
    front end of another version, or one that sends no version, into one line at start."""
    binary = frontend_binary()
    service = _service(demo_model)
    settings = service.settings.model_copy(update={"grpc_port": 0})

    def start_error(front_end: Path) -> str:
        with pytest.raises(KGWeaveError) as info:
            asyncio.run(start_native(service, settings, front_end))
        return info.value.message

    # the real binary, raw: an engine that speaks the next version
    ours, theirs = socket.socketpair()
    header = fp.HEADER.pack(fp.AFTER_LENGTH_SIZE + fp.HELLO_PREFIX_SIZE + 4, fp.HELLO, 0)
    ours.sendall(header + fp.HELLO_PREFIX.pack(VERSION + 1, 4) + b"next")
    process = subprocess.run(
        [str(binary), "--listen", "127.0.0.1:0", "--bridge-fd", str(theirs.fileno())],
        pass_fds=(theirs.fileno(),),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    theirs.close()
    assert process.returncode == 3 and process.stdout == ""  # it never listened
    assert process.stderr == (
        f"kgweave-frontend: the engine (next) speaks frame protocol {VERSION + 1}, this "
        f"kgweave-frontend speaks {VERSION}: rebuild with bash frontend/build.sh\n"
    )
    assert read_hello(ours) == Hello(VERSION, f"kgweave-frontend {__version__}")
    ours.close()

    # front ends of other versions, as `kgweave serve` reports them
    for protocol in (VERSION + 1, 0):
        fake = tmp_path / f"frontend-{protocol}"
        fake.write_text(FAKE_FRONT_END.format(python=sys.executable, protocol=protocol))
        fake.chmod(0o755)
        assert start_error(fake) == (
            f"kgweave-frontend at {fake} speaks frame protocol {protocol}, this kgweave needs "
            f"{VERSION}: rebuild with bash frontend/build.sh"
        )

    # the real binary with an engine of the next version: the binary refuses, the engine
    # says why
    monkeypatch.setattr(fp, "VERSION", VERSION + 1)
    assert start_error(binary) == (
        f"kgweave-frontend at {binary} speaks frame protocol {VERSION}, this kgweave needs "
        f"{VERSION + 1}: rebuild with bash frontend/build.sh"
    )
    service.close()


def _links(n: int) -> knowledge_pb2.PredictLinksRequest:
    query = knowledge_pb2.LinkQuery(head="alan_turing", relation="born_in")
    return knowledge_pb2.PredictLinksRequest(queries=[query] * n, k=3)


@pytest.mark.parametrize("transport", ["python", "native"])
def test_a_call_of_many_queries_counts_as_many_on_both_front_ends(
    demo_model: Path, transport: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """KGWEAVE_QUEUE_MAX=50 bounds queries, not calls: one call of 60 queries is refused
    (the native front end scored it as one call), one of 50 is answered, and the refusal is
    counted in the metrics."""
    if transport == "native":
        frontend_binary()
    monkeypatch.setenv("KGWEAVE_QUEUE_MAX", "50")
    service = _service(demo_model)
    server = ServerThread(service, transport)
    channel = grpc.insecure_channel(server.address)
    stub = knowledge_pb2_grpc.KnowledgeServiceStub(channel)
    try:
        with pytest.raises(grpc.RpcError) as info:
            stub.PredictLinks(_links(60), timeout=30)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert info.value.details() == (
            "the scoring queue is full (0 of 50 queries waiting); retry later"
        )
        assert len(stub.PredictLinks(_links(50), timeout=30).results) == 50
        assert _refused(service, "PredictLinks") == 1
    finally:
        channel.close()
        server.stop()


def _unary_frame(call_id: int, method: str, request: bytes) -> bytes:
    """A UNARY frame as the front end writes it (no deadline, no authorization)."""
    path = method.encode()
    payload = fp.UNARY_PREFIX.pack(-1.0, len(path), 0) + path + request
    return fp.HEADER.pack(fp.AFTER_LENGTH_SIZE + len(payload), fp.UNARY, call_id) + payload


def _answers(sock: socket.socket, count: int) -> dict[int, tuple[int, bytes]]:
    """The engine's first ``count`` answers by call id: (frame kind, payload)."""
    data, frames = b"", list[tuple[int, int, bytes]]()
    while len(frames) < count:
        chunk = sock.recv(1 << 16)
        assert chunk, "the engine closed the socket"
        data = _split_frames(data + chunk, frames)
    return {call_id: (kind, payload) for kind, call_id, payload in frames}


def test_a_burst_is_admitted_call_by_call_by_its_queries(
    demo_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Calls that reach the engine together (scored inline as one pass) are admitted in order
    by their queries, as the Python front end's calls are one by one: with
    KGWEAVE_QUEUE_MAX=50, calls of 40, 20, 10 and 1 queries give OK, RESOURCE_EXHAUSTED
    (40 queries ahead of it), OK, RESOURCE_EXHAUSTED; each refusal counted. The burst is in
    the socket before the bridge reads, so it arrives as one read."""
    monkeypatch.setenv("KGWEAVE_QUEUE_MAX", "50")
    service = _service(demo_model)
    sizes = {1: 40, 2: 20, 3: 10, 4: 1}
    ours, theirs = socket.socketpair()

    async def run() -> None:
        table = HandlerTable()
        add_services(table, service, Health())
        theirs.sendall(
            b"".join(
                _unary_frame(i, PREDICT, _links(n).SerializeToString()) for i, n in sizes.items()
            )
        )
        loop = asyncio.get_running_loop()
        _, bridge = await loop.connect_accepted_socket(lambda: Bridge(table), ours)
        answers = await loop.run_in_executor(None, _answers, theirs, len(sizes))
        bridge.close()
        for call_id in (1, 3):
            kind, payload = answers[call_id]
            assert kind == fp.LAST
            reply = knowledge_pb2.PredictLinksResponse.FromString(payload)
            assert len(reply.results) == sizes[call_id]
        for call_id, waiting in ((2, 40), (4, 50)):
            kind, payload = answers[call_id]
            assert kind == fp.STATUS
            (code,) = fp.STATUS_PREFIX.unpack_from(payload)
            assert code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
            assert payload[fp.STATUS_PREFIX_SIZE :].decode() == (
                f"the scoring queue is full ({waiting} of 50 queries waiting); retry later"
            )

    try:
        asyncio.run(run())
        assert _refused(service, "PredictLinks") == 2
    finally:
        theirs.close()
        service.close()
