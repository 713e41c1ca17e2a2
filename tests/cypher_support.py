"""The whole Cypher path on this machine: a real Neo4j 5.26 (the launcher in
``procedures/neo4j/launcher``, APOC Core and the kgweave plugin jar in its plugins folder,
``conf/kgweave.conf`` naming the kgweave server) and a real ``kgweave serve`` subprocess whose
graph is that Neo4j (the demo imported by ``kgweave import demo --graph ...`` first; serve
trains its first model on it). Used by tests/test_cypher_real.py and
benchmarks/cypher_predict.py. Needs java and mvn; builds the launcher and plugin jars when
missing. Every wait is on an explicit condition (a Bolt login, serve's ``/healthz`` turning
ready), with a hang guard only.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kgweave.graph.embedded import free_port
from kgweave.graph.neo4j_server import (
    Neo4jServer,
    default_plugins_dir,
    plugin_jars,
    source_root,
)
from process_support import HANG_GUARD_S, until

#: only keeps a hung start from hanging a run; never reached by a slow but working one
PLUGIN_DIR = source_root() / "procedures" / "neo4j" / "plugin"
TRIGGER_INSTALL = source_root() / "procedures" / "neo4j" / "install.sh"


def missing_tools() -> str | None:
    """Why the stack cannot run here, or None."""
    lacking = [tool for tool in ("java", "mvn") if shutil.which(tool) is None]
    if lacking:
        return f"a real Neo4j with the kgweave plugin needs {' and '.join(lacking)} on PATH"
    return None


def plugin_folder() -> Path:
    """``procedures/neo4j/plugin/target`` with the plugin jar, built with Maven when missing."""
    target = default_plugins_dir()
    if not plugin_jars(target):
        done = subprocess.run(
            ["mvn", "-q", "-B", "package", "-DskipTests"],
            cwd=PLUGIN_DIR, capture_output=True, text=True, check=False,
        )  # fmt: skip
        if done.returncode != 0 or not plugin_jars(target):
            errors = [ln for ln in (done.stdout + done.stderr).splitlines() if "ERROR" in ln]
            raise RuntimeError(f"building the kgweave Neo4j plugin failed: {errors[:1]}")
    return target


class FullJitNeo4j(Neo4jServer):
    """The launcher's JVM with the full JIT (C2): ``kgweave neo4j`` stops at C1 and uses the
    serial GC to start fast; a production Neo4j runs C2. For steady-state measurements."""

    def command(self, bolt_port: int, http_port: int | None, host: str) -> list[str]:
        fast_start = ("-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC")
        return [a for a in super().command(bolt_port, http_port, host) if a not in fast_start]


@dataclass
class CypherStack:
    folder: Path
    neo4j: Neo4jServer
    bolt_uri: str
    grpc_address: str
    http_port: int
    serve: subprocess.Popen[bytes]

    @property
    def conf_file(self) -> Path:
        """The plugin's ``kgweave.conf`` (read at every call: an edit takes effect at once)."""
        return self.folder / "conf" / "kgweave.conf"

    @property
    def auth(self) -> tuple[str, str]:
        return ("neo4j", self.neo4j.password())

    def write_conf(self, address: str, deadline_ms: int = 120_000) -> None:
        self.conf_file.write_text(f"kgweave.address={address}\nkgweave.deadline_ms={deadline_ms}\n")


def serve_ready(port: int) -> bool:
    """kgweave serve's ``/healthz`` on ``port`` says ready."""
    try:
        with socket.create_connection(("127.0.0.1", port), 1) as sock:
            sock.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
            return b'"ready": true' in sock.recv(4096)
    except OSError:
        return False


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM (serve drains), then wait; kill only if it does not end."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=HANG_GUARD_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def cypher_stack(
    folder: Path, bootstrap_epochs: int = 5, full_jit: bool = False, frontend: str = "python"
) -> Iterator[CypherStack]:
    """Neo4j with the plugin, the demo imported, and ``kgweave serve`` on it, all on free
    ports under ``folder`` (``full_jit``: :class:`FullJitNeo4j`; ``frontend``: serve's
    ``KGWEAVE_FRONTEND``); everything stopped on exit."""
    plugins = plugin_folder()
    grpc_port, http_port = free_port(), free_port()
    conf = folder / "conf"
    conf.mkdir(parents=True, exist_ok=True)
    server = (FullJitNeo4j if full_jit else Neo4jServer)(folder / "neo4j", plugins=plugins)
    saved = os.environ.get("NEO4J_CONF")
    os.environ["NEO4J_CONF"] = str(conf)  # the plugin's conf folder, inherited by the JVM
    try:
        info = server.start(bolt_port=free_port())
    finally:
        if saved is None:
            del os.environ["NEO4J_CONF"]
        else:
            os.environ["NEO4J_CONF"] = saved
    serve: subprocess.Popen[bytes] | None = None
    try:
        env = {
            **os.environ,
            "KGWEAVE_DATA_DIR": str(folder),  # the Neo4j password comes from folder/neo4j
            "KGWEAVE_GRAPH_URI": info.bolt_uri,
            "KGWEAVE_GRPC_HOST": "127.0.0.1",
            "KGWEAVE_GRPC_PORT": str(grpc_port),
            "KGWEAVE_HTTP_PORT": str(http_port),
            "KGWEAVE_BOOTSTRAP_EPOCHS": str(bootstrap_epochs),
            "KGWEAVE_FRONTEND": frontend,
        }
        cli = [sys.executable, "-m", "kgweave.cli.main"]
        imported = subprocess.run(
            [*cli, "import", "demo", "--graph", info.bolt_uri, "--no-progress"],
            env=env, capture_output=True, text=True, check=False,
        )  # fmt: skip
        if imported.returncode != 0:
            raise RuntimeError(f"kgweave import demo failed: {imported.stderr.strip()[-500:]}")
        log = folder / "serve.log"
        with log.open("w") as out:
            serve = subprocess.Popen(
                [*cli, "serve", "--no-progress"], env=env, stdout=out, stderr=subprocess.STDOUT
            )
        guard = time.monotonic() + HANG_GUARD_S
        while not serve_ready(http_port):
            if serve.poll() is not None:
                raise RuntimeError(f"kgweave serve exited: {log.read_text()[-2000:]}")
            if time.monotonic() > guard:
                raise RuntimeError(f"kgweave serve hung starting: {log.read_text()[-2000:]}")
            time.sleep(0.2)
        stack = CypherStack(
            folder, server, info.bolt_uri, f"127.0.0.1:{grpc_port}", http_port, serve
        )
        stack.write_conf(stack.grpc_address)
        yield stack
    finally:
        if serve is not None:
            stop_process(serve)
        server.stop()


def _system(bolt_uri: str, auth: tuple[str, str], cypher: str) -> None:
    """Run one statement against the system database (where APOC installs triggers)."""
    from neo4j import GraphDatabase

    with GraphDatabase.driver(bolt_uri, auth=auth) as driver:
        driver.execute_query(cypher, database_="system")


def _triggers(bolt_uri: str, auth: tuple[str, str]) -> list[dict[str, Any]]:
    """The triggers APOC runs in the database ``neo4j`` now (name, query)."""
    from neo4j import GraphDatabase

    with GraphDatabase.driver(bolt_uri, auth=auth) as driver:
        records, _, _ = driver.execute_query(
            "CALL apoc.trigger.list() YIELD name, query RETURN name, query", database_="neo4j"
        )
        return [r.data() for r in records]


def install_trigger(
    bolt_uri: str, auth: tuple[str, str], address: str, phase: str = "afterAsync"
) -> None:
    """install.sh's statement for kgweave's HTTP ``address``, run against the system database;
    returns once the trigger is active in the database (``apoc.trigger.list`` there), not just
    stored."""
    statement = subprocess.run(
        ["sh", str(TRIGGER_INSTALL), "--print", "--phase", phase, address, "neo4j"],
        capture_output=True, text=True, check=True,
    ).stdout.strip().removesuffix(";")  # fmt: skip
    _system(bolt_uri, auth, statement)
    until(
        lambda: any(
            r["name"] == "kgweave" and address in r["query"] for r in _triggers(bolt_uri, auth)
        ),
        "APOC to activate the trigger",
    )


def drop_trigger(bolt_uri: str, auth: tuple[str, str]) -> None:
    """Drop the trigger and wait until the database no longer runs it: a phase ``after``
    trigger that cannot post fails the commits of later writes (the data is committed, but the
    client gets "Unable to complete transaction")."""
    _system(bolt_uri, auth, "CALL apoc.trigger.drop('neo4j', 'kgweave')")
    until(lambda: not _triggers(bolt_uri, auth), "APOC to drop the trigger")
