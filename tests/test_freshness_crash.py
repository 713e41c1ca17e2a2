"""kill -9 of a real `kgweave serve` while writes arrive, then a restart: every acknowledged
write is served, none twice, and no half-applied write is ever seen (each write's two facts
are served together or not at all)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from kgweave.cli.main import main
from kgweave.graph.embedded import EmbeddedFalkorDB
from kgweave.settings import get_settings
from kgweave.v1 import admin_pb2, admin_pb2_grpc, knowledge_pb2, knowledge_pb2_grpc
from serving_support import HANG_GUARD_S


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.1)


def pair(i: int) -> list[admin_pb2.Fact]:
    return [
        admin_pb2.Fact(head=f"probe_{i}", relation="born_in", tail="london"),
        admin_pb2.Fact(head=f"probe_{i}", relation="citizen_of", tail="united_kingdom"),
    ]


def serve_env(**settings: str) -> dict[str, str]:
    """The environment of a `kgweave serve` subprocess on free ports (the Python front end, a
    20-epoch first model), plus ``settings`` (names without their ``KGWEAVE_`` prefix)."""
    return {
        **os.environ,
        "KGWEAVE_GRPC_PORT": str(free_port()),
        "KGWEAVE_HTTP_PORT": str(free_port()),
        "KGWEAVE_BOOTSTRAP_EPOCHS": "20",
        "KGWEAVE_FRONTEND": "python",
        **{f"KGWEAVE_{name}": value for name, value in settings.items()},
    }


class Server:
    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.log = log
        self.process = subprocess.Popen(
            [sys.executable, "-m", "kgweave.cli.main", "serve", "--no-progress"],
            env=env,
            stdout=log.open("a"),
            stderr=subprocess.STDOUT,
        )
        self.channel = grpc.insecure_channel(f"127.0.0.1:{env['KGWEAVE_GRPC_PORT']}")
        self.admin = admin_pb2_grpc.AdminServiceStub(self.channel)
        self.knowledge = knowledge_pb2_grpc.KnowledgeServiceStub(self.channel)
        wait_for(self.ready, "the server is ready")

    def stop(self) -> None:
        """SIGTERM, unless it is gone already."""
        self.channel.close()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=HANG_GUARD_S)

    def ready(self) -> bool:
        assert self.process.poll() is None, self.log.read_text()[-3000:]
        try:
            return bool(self.admin.Status(admin_pb2.StatusRequest(), timeout=5).ready)
        except grpc.RpcError:
            return False

    def status(self) -> admin_pb2.StatusResponse:
        reply: admin_pb2.StatusResponse = self.admin.Status(
            admin_pb2.StatusRequest(), timeout=HANG_GUARD_S
        )
        return reply

    def facts(self, entity: str) -> list[tuple[str, str, str]] | None:
        """The entity's facts, None when it does not resolve (yet)."""
        try:
            reply = self.knowledge.GetEntity(
                knowledge_pb2.GetEntityRequest(entity=entity, max_facts=100), timeout=HANG_GUARD_S
            )
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise
        return [(f.head, f.relation, f.tail) for f in reply.facts]


def test_kill_9_while_writing_loses_no_acknowledged_write(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    env = serve_env(
        INCREMENTAL_UPDATES="false",  # the overlay alone (test_incremental trains)
        # and no full retrain, so no snapshot diff either: the log holds what was written
        FULL_RETRAIN_DRIFT="0",
    )
    grpc_port = int(env["KGWEAVE_GRPC_PORT"])
    log = tmp_path / "serve.log"
    server = Server(env, log)
    acked: list[int] = []
    torn: list[str] = []
    stop = threading.Event()

    def writer() -> None:
        i = 0
        while not stop.is_set():
            request = admin_pb2.WriteFactsRequest(added=pair(i), wait_s=-1)
            try:
                server.admin.WriteFacts(request, timeout=HANG_GUARD_S)
            except grpc.RpcError:
                return  # the server is gone: this write was never acknowledged
            acked.append(i)
            i += 1

    def reader() -> None:
        while not stop.is_set():
            if not acked:
                time.sleep(0.01)
                continue
            try:
                facts = server.facts(f"probe_{acked[-1]}")
            except grpc.RpcError:
                return
            if facts is not None and len(facts) != 2:
                torn.append(f"probe_{acked[-1]}: {facts}")

    threads = [threading.Thread(target=writer), threading.Thread(target=reader)]
    try:
        for thread in threads:
            thread.start()
        wait_for(lambda: len(acked) >= 40, "40 writes acknowledged")
        # some of them served already: the kill lands among applied and pending batches
        wait_for(lambda: server.status().changes.applied_offset > 0, "a batch applied")
        os.kill(server.process.pid, signal.SIGKILL)
        server.process.wait()
        for thread in threads:
            thread.join(timeout=HANG_GUARD_S)
        stop.set()
        assert not torn, torn
        written = len(acked)

        server = Server(env, log)
        status = server.status()
        # the log holds every acknowledged write (2 events each), and maybe the one in flight
        end = status.changes.end_offset
        assert end in (2 * written, 2 * written + 2), (end, written)
        wait_for(lambda: server.status().changes.applied_offset == end, "every logged event served")
        for i in acked:
            facts = server.facts(f"probe_{i}")
            assert facts is not None and sorted(facts) == sorted(
                [
                    (f"probe_{i}", "born_in", "london"),
                    (f"probe_{i}", "citizen_of", "united_kingdom"),
                ]
            ), (i, facts)
        status = server.status()
        assert status.changes.facts_added == end and status.changes.entities_added == end // 2
        assert not status.changes.last_error

        # the CLI writes through the same path
        monkeypatch.setenv("KGWEAVE_SERVER", f"127.0.0.1:{grpc_port}")
        code = main(["write", "--add", "probe_0", "influenced_by", "alan_turing"])
        out = capsys.readouterr()
        assert code == 0 and "served by v0001@" in out.out, out
        assert ("probe_0", "influenced_by", "alan_turing") in (server.facts("probe_0") or [])
        code = main(["write", "--name", "X"])
        out = capsys.readouterr()
        assert code == 2 and out.err.startswith("error: --name and --description")
    finally:
        stop.set()
        server.stop()
        EmbeddedFalkorDB(get_settings().graph_dir).stop()


def expect_killed(server: Server, call: Callable[[], object]) -> None:
    """``call`` meets the kill point: the server dies (SIGKILL) and the call is never
    acknowledged."""
    with pytest.raises(grpc.RpcError):
        call()
    assert server.process.wait(timeout=HANG_GUARD_S) == -signal.SIGKILL, server.log.read_text()
    server.channel.close()


#: the log's events for the killed write, by the point it was killed at (kgweave.killpoints):
#: its two facts, or (graph-written: only the graph had them) what the snapshot diff emits on
#: restart, the new entity and its two facts
WRITE_POINTS = {"graph-written": 3, "logged": 2, "served": 2, "overlay-saved": 2}


@pytest.mark.parametrize("point", sorted(WRITE_POINTS))
def test_kill_9_at_a_point_of_a_write_then_restart(point: str, tmp_path: Path) -> None:
    """kill -9 of `kgweave serve` at a named point of one write (the process stops itself
    there, nothing depends on timing), then a restart: the write is served whole and once,
    before the restart's first write is, and the pipeline goes on."""
    # the applier and the snapshot diff alone
    env = serve_env(INCREMENTAL_UPDATES="false", RETRAIN_INTERVAL_S="0.3")
    log = tmp_path / "serve.log"
    server = Server({**env, "KGWEAVE_TEST_KILL": f"server:{point}"}, log)
    first = pair(0)
    try:
        request = admin_pb2.WriteFactsRequest(added=first, wait_s=HANG_GUARD_S)
        if point == "overlay-saved":
            # the checkpoint comes after the batch is served: the write may be acknowledged
            # before the process stops there, or not; either way it stops there
            with contextlib.suppress(grpc.RpcError):
                server.admin.WriteFacts(request, timeout=HANG_GUARD_S)
            assert server.process.wait(timeout=HANG_GUARD_S) == -signal.SIGKILL
            server.channel.close()
        else:
            expect_killed(server, lambda: server.admin.WriteFacts(request, timeout=HANG_GUARD_S))

        server = Server(env, log)
        if point != "graph-written":  # (else the log is empty until the diff runs)
            assert server.status().changes.end_offset == WRITE_POINTS[point]
        # never half of the write: both facts or neither, then both (graph-written: once the
        # snapshot diff found them in the graph)
        seen = server.facts("probe_0")
        assert seen is None or len(seen) == 2, seen
        wait_for(lambda: server.facts("probe_0") is not None, "the killed write served")
        expected = sorted((f.head, f.relation, f.tail) for f in first)
        assert sorted(server.facts("probe_0") or []) == expected
        status = server.status()
        assert status.changes.end_offset == WRITE_POINTS[point], status.changes
        assert status.changes.facts_added == 2  # each once

        # the pipeline goes on: the next write is served on top, exactly once too
        second = admin_pb2.WriteFactsRequest(added=pair(1), wait_s=HANG_GUARD_S)
        reply = server.admin.WriteFacts(second, timeout=HANG_GUARD_S)
        assert reply.applied and reply.next_offset == server.status().changes.end_offset
        status = server.status()
        assert status.changes.applied_offset == status.changes.end_offset
        assert status.changes.facts_added == 4 and not status.changes.last_error
    finally:
        server.stop()
        EmbeddedFalkorDB(get_settings().graph_dir).stop()
