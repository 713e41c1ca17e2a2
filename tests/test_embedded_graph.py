"""The embedded FalkorDB server: start, readiness, reuse, persistence, clean stop."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from falkordb import FalkorDB

from kgweave.graph import EmbeddedFalkorDB
from kgweave.graph.embedded import ping
from process_support import HANG_GUARD_S
from serving_support import wait_until


@pytest.fixture
def server(tmp_path: Path) -> Iterator[EmbeddedFalkorDB]:
    embedded = EmbeddedFalkorDB(tmp_path / "graph")
    yield embedded
    embedded.stop()


def test_start_query_reuse_and_stop(server: EmbeddedFalkorDB) -> None:
    assert server.status() is None
    info = server.start()
    assert ping(info.host, info.port)
    graph = FalkorDB(host=info.host, port=info.port, password=info.password()).select_graph("kg")
    graph.query("CREATE (:Entity {id: $id, name: $name})", {"id": "e1", "name": "Ada"})
    result = graph.query("MATCH (e:Entity) RETURN e.name")
    assert result.result_set == [["Ada"]]
    # a second start reuses the running server
    again = EmbeddedFalkorDB(server.folder).start()
    assert (again.pid, again.port) == (info.pid, info.port)
    assert server.stop() is True
    assert not ping(info.host, info.port)
    assert server.status() is None
    assert server.stop() is False


def test_data_survives_a_restart(server: EmbeddedFalkorDB) -> None:
    info = server.start()
    FalkorDB(host=info.host, port=info.port, password=info.password()).select_graph("kg").query(
        "UNWIND range(1, 100) AS i CREATE (:Entity {id: toString(i)})"
    )
    server.stop()
    info = server.start()
    result = (
        FalkorDB(host=info.host, port=info.port, password=info.password())
        .select_graph("kg")
        .query("MATCH (e:Entity) RETURN count(e)")
    )
    assert result.result_set == [[100]]
    assert Path(info.log_file).is_file()


def test_stale_state_file_is_ignored(server: EmbeddedFalkorDB) -> None:
    server.folder.mkdir(parents=True)
    server.state_file.write_text(
        '{"pid": 999999, "host": "127.0.0.1", "port": 1, "data_dir": "x", "log_file": "y",'
        ' "started_at": 0}'
    )
    assert server.status() is None
    info = server.start()
    assert info.port != 1


def test_cli_graph_start_status_stop(capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from kgweave.cli.main import main

    assert main(["graph", "status", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"running": False}
    try:
        assert main(["graph", "start", "--json"]) == 0
        started = json.loads(capsys.readouterr().out)
        assert started["running"] and ping(started["host"], started["port"])
        assert main(["graph", "status", "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["pid"] == started["pid"]
    finally:
        assert main(["graph", "stop", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"stopped": True}
    assert not ping(started["host"], started["port"])


def test_cli_import_and_stats_on_the_embedded_graph(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    from kgweave.cli.main import main

    try:
        assert main(["import", "nations", "--no-progress", "--json"]) == 0
        report = json.loads(capsys.readouterr().out)
        assert report["triples"] == 1592 + 199 + 201
        assert main(["graph", "stats", "--json"]) == 0
        counts = json.loads(capsys.readouterr().out)
        assert counts["entities"] == 14 and counts["relations"] == 55
        # importing again is idempotent (MERGE); duplicates across splits collapse
        assert main(["import", "nations", "--splits", "train", "--no-progress", "--json"]) == 0
        capsys.readouterr()
        assert main(["graph", "stats", "--json"]) == 0
        assert json.loads(capsys.readouterr().out) == counts
        assert main(["import", "nations", "--splits", "training"]) == 3
        assert "no split 'training'" in capsys.readouterr().err
        # an unreachable Neo4j: retried briefly, then one readable line and exit code 7
        monkeypatch.setenv("KGWEAVE_GRAPH_RETRY_S", "0.5")
        with socket.socket() as sock:  # a port where nothing listens
            sock.bind(("127.0.0.1", 0))
            dead = sock.getsockname()[1]
        assert main(["graph", "stats", "--graph", f"bolt://127.0.0.1:{dead}"]) == 7
        err = capsys.readouterr().err
        assert err.startswith("error: Neo4j at bolt://127.0.0.1:") and "not reachable" in err
        assert err.count("\n") == 1
    finally:
        main(["graph", "stop"])


def test_a_password_is_required_and_the_files_are_private(server: EmbeddedFalkorDB) -> None:
    import stat

    from redis.exceptions import AuthenticationError

    info = server.start()
    password = info.password()
    assert password and password == server.password_file.read_text().strip()
    with pytest.raises(AuthenticationError):  # a client without the password is refused
        FalkorDB(host=info.host, port=info.port).select_graph("kg").query("RETURN 1")
    with pytest.raises(AuthenticationError):
        FalkorDB(host=info.host, port=info.port, password="wrong").select_graph("kg").query(
            "RETURN 1"
        )
    graph = FalkorDB(host=info.host, port=info.port, password=password).select_graph("kg")
    graph.query("CREATE (:Entity {id: 'e1'})")
    # the password is neither on the server's command line nor in server.json
    assert password.encode() not in Path(f"/proc/{info.pid}/cmdline").read_bytes()
    assert password not in server.state_file.read_text()
    server.stop()  # (SHUTDOWN SAVE: the RDB file is written)
    # every file is this user's only
    assert stat.S_IMODE(server.folder.stat().st_mode) == 0o700
    files = [p for p in server.folder.rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {"password", "redis.conf", "falkordb.log", "dump.rdb"}
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    for path in (p for p in server.folder.rglob("*") if p.is_dir()):
        assert stat.S_IMODE(path.stat().st_mode) == 0o700, path
    # the next start keeps the same password
    assert server.start().password() == password


def test_a_server_started_without_a_password_is_still_reused(server: EmbeddedFalkorDB) -> None:
    """An install from before passwords: its running server (no password, a server.json
    without password_file) is reused as it is; the password comes with its next start."""
    import json
    import stat
    import subprocess
    import time

    from kgweave.graph.embedded import _binaries, free_port

    redis_server, module = _binaries()
    (server.folder / "data").mkdir(parents=True, mode=0o755)
    server.folder.chmod(0o755)
    port = free_port()
    process = subprocess.Popen(
        [redis_server, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--dir", str(server.folder), "--loadmodule", module],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        while not ping("127.0.0.1", port):
            assert process.poll() is None, "redis-server exited"
            time.sleep(0.05)  # (a poll interval: the loop waits for the server to answer)
        old = {"pid": process.pid, "host": "127.0.0.1", "port": port,
               "data_dir": str(server.folder), "log_file": "", "started_at": 0}  # fmt: skip
        server.state_file.write_text(json.dumps(old))
        info = server.start()
        assert info.port == port and info.password() is None
        from kgweave.graph.connect import open_store
        from kgweave.settings import get_settings

        settings = get_settings().model_copy(update={"data_dir": server.folder.parent})
        assert settings.graph_dir == server.folder
        assert open_store(None, settings).counts()["entities"] == 0
    finally:
        process.terminate()
        process.wait()
    restarted = server.start()  # on its previous port when free: clients keep the address
    assert restarted.pid != process.pid and restarted.password()
    assert server.password_file.is_file()
    for folder in (server.folder, server.folder / "data"):  # made 0755 above: tightened
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700


def test_a_worker_never_starts_the_embedded_graph(tmp_path: Path) -> None:
    """Job and diff workers open the embedded graph only while its owner runs it: one that
    started it after the server stopped it would outlive the server."""
    from kgweave.errors import FailedPreconditionError
    from kgweave.graph.connect import open_store
    from kgweave.settings import Settings

    settings = Settings(data_dir=tmp_path / "data")
    with pytest.raises(FailedPreconditionError, match="embedded graph database is not running"):
        open_store(None, settings, start=False)
    assert EmbeddedFalkorDB(settings.graph_dir).status() is None


def _stand_in() -> subprocess.Popen[bytes]:
    """A process standing in for the server's (alive until killed)."""
    return subprocess.Popen([sys.executable, "-c", "import signal; signal.pause()"])


class _SlowLoader:
    """A listener that answers nothing (as a FalkorDB replaying a long command of its
    append-only file) until ``loaded`` is set, then answers AUTH and GRAPH.LIST as a ready
    one does."""

    def __init__(self) -> None:
        import threading

        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        self.loaded = threading.Event()
        self.probes = 0
        self.held: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.probes += 1
            if not self.loaded.is_set():
                self.held.append(conn)  # connected, never answered
                continue
            with conn:
                conn.recv(4096)
                conn.sendall(b"+OK\r\n")
                conn.recv(4096)
                conn.sendall(b"*0\r\n")

    def close(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


def test_a_server_still_loading_its_data_is_waited_for_not_killed(tmp_path: Path) -> None:
    """The start's timeout bounds only the wait for the port: a server that listens but does
    not answer yet (loading a big append-only file) is waited for, however long it takes."""
    import threading

    embedded = EmbeddedFalkorDB(tmp_path / "graph")
    embedded.folder.mkdir(parents=True)
    loader = _SlowLoader()
    process = _stand_in()
    result: list[object] = []
    waiter = threading.Thread(
        target=lambda: result.append(embedded._wait_ready(process, loader.port, timeout=0.2))
    )

    def still_waiting_after_probes(n: int) -> bool:
        assert waiter.is_alive(), f"the start gave up while the server was loading: {result}"
        return loader.probes >= n

    try:
        waiter.start()
        # each probe of a silent server waits a second for its answer: three are well past
        # the 0.2 s timeout, whatever the machine's speed
        wait_until(lambda: still_waiting_after_probes(3), "three probes of the loading server")
        loader.loaded.set()
        waiter.join()
        info = result[0]
        assert getattr(info, "port", None) == loader.port and info.pid == process.pid  # type: ignore[attr-defined]
        assert embedded.state_file.is_file()
    finally:
        loader.close()
        process.kill()
        process.wait()


def test_a_server_that_never_listens_is_given_up(tmp_path: Path) -> None:
    from kgweave.errors import GraphUnavailableError
    from kgweave.graph.embedded import free_port

    embedded = EmbeddedFalkorDB(tmp_path / "graph")
    process = _stand_in()
    try:
        with pytest.raises(GraphUnavailableError, match="did not open its port within"):
            embedded._wait_ready(process, free_port(), timeout=0.3)
        assert process.wait(timeout=HANG_GUARD_S) != 0  # killed
    finally:
        process.kill()


def test_writes_are_logged_as_effects_and_the_log_is_compacted(server: EmbeddedFalkorDB) -> None:
    """Writes reach the append-only file as effects (no query is replayed at a restart), a
    compaction rewrites it as a snapshot, and the graph survives both."""
    info = server.start()
    db = FalkorDB(host=info.host, port=info.port, password=info.password())
    graph = db.select_graph("kg")
    graph.query("CREATE INDEX FOR (e:Entity) ON (e.id)")
    graph.query("UNWIND range(1, 500) AS i CREATE (:Entity {id: toString(i)})")
    graph.query(
        "UNWIND range(1, 499) AS i MATCH (a:Entity {id: toString(i)}), "
        "(b:Entity {id: toString(i + 1)}) CREATE (a)-[:NEXT]->(b)"
    )
    aof = Path(info.data_dir) / "appendonlydir"
    logged = b"".join(f.read_bytes() for f in aof.glob("*.incr.aof"))
    assert b"GRAPH.EFFECT" in logged and b"UNWIND" not in logged
    server.compact(info)
    connection = db.connection

    def rewritten() -> bool:
        persistence = connection.info("persistence")
        if persistence["aof_rewrite_in_progress"] or persistence.get("aof_rewrite_scheduled"):
            return False
        return b"GRAPH.EFFECT" not in b"".join(f.read_bytes() for f in aof.glob("*.incr.aof"))

    wait_until(rewritten, "the append-only file's rewrite (a forked child)")
    server.stop()
    info = server.start()
    graph = FalkorDB(host=info.host, port=info.port, password=info.password()).select_graph("kg")
    assert graph.query("MATCH (:Entity)-[r:NEXT]->(:Entity) RETURN count(r)").result_set == [[499]]
