"""Load during hot swaps (issue 16): clients query without pause while versions are activated
back and forth; no call fails, and every answer comes whole from one version (its candidates
are that version's, for the version it names).

Real servers on both front ends, two real models of the demo graph that answer differently.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import grpc
import pytest

from kgweave.dataplane import DataPlane
from kgweave.settings import get_settings
from kgweave.v1 import knowledge_pb2, knowledge_pb2_grpc
from process_support import HANG_GUARD_S
from serving_support import ServerThread, registry_with, two_demo_models

pytest_plugins = ["serving_support"]  # fixture: transport

SWAPS = 12
CLIENTS = 4
QUERIES = [
    knowledge_pb2.LinkQuery(head="alan_turing", relation="born_in"),
    knowledge_pb2.LinkQuery(tail="london", relation="born_in"),
    knowledge_pb2.LinkQuery(head="paris", relation="located_in"),
]


@pytest.fixture(scope="module")
def two_models(tmp_path_factory: pytest.TempPathFactory, datasets_dir: Path) -> list[Path]:
    return two_demo_models(tmp_path_factory, datasets_dir, "swap", 5, [16, 24])


Answer = tuple[tuple[str, ...], ...]


def _answer(reply: knowledge_pb2.PredictLinksResponse) -> Answer:
    """Each query's candidate ids, as a set (near-equal scores may swap places)."""
    return tuple(tuple(sorted(c.entity_id for c in r.candidates)) for r in reply.results)


def test_answers_during_hot_swaps_come_whole_from_one_version(
    two_models: list[Path], transport: str
) -> None:
    settings = get_settings()
    registry_with(settings, two_models)
    plane = DataPlane(settings)
    server = ServerThread(plane, transport)
    channel = grpc.insecure_channel(server.address)
    stub = knowledge_pb2_grpc.KnowledgeServiceStub(channel)
    request = knowledge_pb2.PredictLinksRequest(queries=QUERIES, k=5)
    expected: dict[str, Answer] = {}
    for version in ("v0001", "v0002"):
        plane.versions.activate(version)
        reply = stub.PredictLinks(request, timeout=HANG_GUARD_S)
        assert reply.model_version == version
        expected[version] = _answer(reply)
    assert expected["v0001"] != expected["v0002"]  # the two versions are told apart

    stop = threading.Event()
    lock = threading.Lock()
    seen: dict[str, int] = {"v0001": 0, "v0002": 0}
    failures: list[str] = []

    def client() -> None:
        own = grpc.insecure_channel(server.address)
        calls = knowledge_pb2_grpc.KnowledgeServiceStub(own)
        try:
            while not stop.is_set():
                try:
                    reply = calls.PredictLinks(request, timeout=HANG_GUARD_S)
                except grpc.RpcError as exc:
                    failures.append(f"{exc.code().name}: {exc.details()}")
                    continue
                version = reply.model_version
                if expected.get(version) != _answer(reply):
                    failures.append(f"a mixed answer labelled {version!r}")
                with lock:
                    seen[version] = seen.get(version, 0) + 1
        finally:
            own.close()

    def answered() -> int:
        with lock:
            return sum(seen.values())

    threads = [threading.Thread(target=client, daemon=True) for _ in range(CLIENTS)]
    for thread in threads:
        thread.start()
    try:
        for swap in range(SWAPS):
            before = answered()
            plane.versions.activate("v0001" if swap % 2 else "v0002")
            deadline = time.monotonic() + HANG_GUARD_S
            while answered() < before + CLIENTS:  # calls overlap each swap and follow it
                assert time.monotonic() < deadline, "hang guard: no answers after a swap"
                time.sleep(0.005)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=HANG_GUARD_S)
        channel.close()
        server.stop()
    assert not failures, failures[:5]
    assert seen["v0001"] > 0 and seen["v0002"] > 0
