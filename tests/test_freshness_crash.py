"""kill -9 of a real `kgweave serve` while writes arrive, then a restart: every acknowledged
write is served, none twice, and no half-applied write is ever seen (each write's two facts
are served together or not at all)."""

from __future__ import annotations

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
    grpc_port, http_port = free_port(), free_port()
    env = {
        **os.environ,
        "KGWEAVE_GRPC_PORT": str(grpc_port),
        "KGWEAVE_HTTP_PORT": str(http_port),
        "KGWEAVE_BOOTSTRAP_EPOCHS": "20",
        "KGWEAVE_FRONTEND": "python",
        "KGWEAVE_INCREMENTAL_UPDATES": "false",  # the overlay alone (test_incremental trains)
        # and no full retrain, so no snapshot diff either: the log holds what was written
        "KGWEAVE_FULL_RETRAIN_DRIFT": "0",
    }
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
        server.channel.close()
        if server.process.poll() is None:
            server.process.send_signal(signal.SIGTERM)
            server.process.wait(timeout=HANG_GUARD_S)
        EmbeddedFalkorDB(get_settings().graph_dir).stop()
