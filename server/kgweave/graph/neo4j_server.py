"""A real Neo4j 5 Community DBMS for development and tests: ``kgweave neo4j start|stop|status``.

The DBMS runs in a JVM started from ``procedures/neo4j/launcher`` (a Maven project around
Neo4j's own test harness, ``org.neo4j.test:neo4j-harness`` 5.26, with APOC Core), built with
``mvn -q -B package`` the first time it is needed. Its folder (``<data_dir>/neo4j``) holds:

- ``data/``: the databases, their transaction logs and the DBMS's users (kept between runs);
- ``plugins/``: APOC Core plus the jars of the plugins folder, copied afresh at every start;
- ``password``: the generated password of user ``neo4j`` (mode 0600), also what
  :func:`kgweave.graph.connect.neo4j_target` uses for a local Bolt URI given no password;
- ``neo4j.json``: pid, host and ports of the running DBMS; ``launcher.log``: its output.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from kgweave.errors import FailedPreconditionError, GraphUnavailableError, InvalidArgumentError
from kgweave.subpath import SubPath

MAIN_CLASS = "io.kgweave.neo4j.Launcher"
READY_LINE = "kgweave-neo4j ready"
USER = "neo4j"
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def source_root() -> Path:
    """The repository checkout this package runs from (``server/kgweave/..`` twice up)."""
    return Path(__file__).resolve().parents[3]


def launcher_dir() -> Path:
    """``procedures/neo4j/launcher`` of the checkout."""
    return source_root() / "procedures" / "neo4j" / "launcher"


def default_plugins_dir() -> Path:
    """Where the kgweave Neo4j plugin is built (``procedures/neo4j/plugin/target``)."""
    return source_root() / "procedures" / "neo4j" / "plugin" / "target"


def plugin_jars(folder: Path) -> list[Path]:
    """The plugin jars of a folder (a Maven ``target``): not the shade plugin's
    ``original-*.jar`` (the same procedures again, unshaded), sources, javadoc or tests; the
    launcher copies the same ones into Neo4j's plugins folder."""
    if not folder.is_dir():
        return []
    skipped = ("-sources.jar", "-javadoc.jar", "-tests.jar")
    return [
        jar
        for jar in sorted(folder.glob("*.jar"))
        if not jar.name.startswith("original-") and not jar.name.endswith(skipped)
    ]


def _tool(name: str, why: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise FailedPreconditionError(f"{name} not found on PATH: {why}")
    return found


def launcher_jar(build: bool = True) -> Path:
    """The launcher's runnable jar, built with Maven first when it is missing."""
    folder = launcher_dir()
    jar = folder / "target" / "kgweave-neo4j-launcher.jar"
    if jar.is_file() and (folder / "target" / "lib").is_dir():
        return jar
    if not (folder / "pom.xml").is_file():
        raise FailedPreconditionError(
            f"the Neo4j launcher sources are missing ({folder / 'pom.xml'}): "
            "`kgweave neo4j` needs a kgweave source checkout"
        )
    if not build:
        raise FailedPreconditionError(
            f"the Neo4j launcher is not built: cd {folder} && mvn package"
        )
    _tool("java", "kgweave neo4j needs Java 17 or later (e.g. apt-get install openjdk-17-jdk)")
    mvn = _tool("mvn", "kgweave neo4j builds its launcher with Maven (apt-get install maven)")
    done = subprocess.run(
        [mvn, "-q", "-B", "package"], cwd=folder, capture_output=True, text=True, check=False
    )
    if done.returncode != 0 or not jar.is_file():
        lines = [ln for ln in (done.stdout + done.stderr).splitlines() if "ERROR" in ln] or [
            "no output"
        ]
        raise FailedPreconditionError(
            f"building the Neo4j launcher failed (mvn package in {folder}): {lines[0].strip()}"
        )
    return jar


@dataclass(frozen=True)
class Neo4jInfo:
    """A running DBMS: where it answers and who may log in."""

    pid: int
    host: str
    bolt_port: int
    http_port: int | None
    folder: str

    @property
    def bolt_uri(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"bolt://{host}:{self.bolt_port}"


def _alive(pid: int) -> bool:
    """Whether ``pid`` is a running launcher JVM (not a reused pid, not a zombie)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return MAIN_CLASS.encode() in cmdline and stat.rsplit(")", 1)[-1].split()[0] != "Z"


class Neo4jServer:
    """The DBMS kept in ``folder`` (normally ``<data_dir>/neo4j``)."""

    def __init__(self, folder: Path, plugins: Path | None = None, heap: str = "1g") -> None:
        self.folder = folder
        self.plugins = plugins
        self.heap = heap

    state_file = SubPath("folder", "neo4j.json", "The running DBMS's pid, ports and folder.")
    password_file = SubPath("folder", "password", "User neo4j's password (0600).")
    log_file = SubPath("folder", "launcher.log", "The launcher JVM's output.")

    def password(self) -> str:
        """The password of user neo4j, generated (0600) on first use."""
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not self.password_file.exists():
            fd = os.open(self.password_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_urlsafe(24) + "\n")
        return self.password_file.read_text().strip()

    def status(self) -> Neo4jInfo | None:
        """The running DBMS, or None (a stale state file is removed)."""
        try:
            state = json.loads(self.state_file.read_text())
            info = Neo4jInfo(**state)
        except (OSError, ValueError, TypeError):
            return None
        if _alive(info.pid):
            return info
        self.state_file.unlink(missing_ok=True)
        return None

    def command(self, bolt_port: int, http_port: int | None, host: str) -> list[str]:
        """The java command line (plugin jars on the class path, as Neo4j's own script does)."""
        java = _tool(
            "java", "kgweave neo4j needs Java 17 or later (apt-get install openjdk-17-jdk)"
        )
        classpath = [str(launcher_jar())]
        args = ["--data", str(self.folder), "--host", host, "--bolt-port", str(bolt_port)]
        args += ["--password-file", str(self.password_file)]
        if http_port is not None:
            args += ["--http-port", str(http_port)]
        jars = plugin_jars(self.plugins) if self.plugins is not None else []
        if jars:
            classpath += [str(jar) for jar in jars]
            args += ["--plugins", str(self.plugins)]
        heap = [f"-Xmx{self.heap}", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1"]
        return [java, *heap, "-cp", os.pathsep.join(classpath), MAIN_CLASS, *args]

    def start(
        self,
        bolt_port: int = 7687,
        http_port: int | None = None,
        host: str = "127.0.0.1",
        timeout: float = 300.0,
    ) -> Neo4jInfo:
        """Start the DBMS in the background (or return the running one) once Bolt logs in."""
        running = self.status()
        if running is not None:
            return running
        password = self.password()
        command = self.command(bolt_port, http_port, host)
        with self.log_file.open("w") as log:
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # outlives `kgweave neo4j start`
            )
        info = Neo4jInfo(process.pid, host, bolt_port, http_port, str(self.folder))
        self.state_file.write_text(json.dumps(asdict(info)))
        try:
            self._wait_for_login(process, info, password, timeout)
        except BaseException:
            self._terminate(process.pid)
            process.wait()
            self.state_file.unlink(missing_ok=True)
            raise
        return info

    def _log_tail(self) -> str:
        lines = [ln for ln in self.log_file.read_text(errors="replace").splitlines() if ln.strip()]
        mine = [ln for ln in lines if ln.startswith("kgweave-neo4j")]
        return (mine or lines or ["no output"])[-1].strip()

    def _wait_for_login(
        self, process: subprocess.Popen[bytes], info: Neo4jInfo, password: str, timeout: float
    ) -> None:
        """Until a Bolt login succeeds; the launcher's last line if it exits first."""
        from neo4j import GraphDatabase
        from neo4j import exceptions as ne

        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise GraphUnavailableError(
                    f"Neo4j did not start (exit code {process.returncode}): {self._log_tail()} "
                    f"(log: {self.log_file})"
                )
            if READY_LINE in self.log_file.read_text(errors="replace"):
                with GraphDatabase.driver(info.bolt_uri, auth=(USER, password)) as driver:
                    try:
                        driver.verify_connectivity()
                        return
                    except ne.AuthError:
                        raise InvalidArgumentError(
                            f"Neo4j in {self.folder} refused the password in "
                            f"{self.password_file} (was it changed in Neo4j?)"
                        ) from None
                    except (ne.ServiceUnavailable, ne.SessionExpired):
                        pass
            if time.monotonic() > deadline:
                raise GraphUnavailableError(
                    f"Neo4j did not accept a Bolt login within {timeout:.0f}s "
                    f"(log: {self.log_file})"
                )
            time.sleep(0.2)

    @staticmethod
    def _terminate(pid: int, timeout: float = 120.0) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def stop(self) -> bool:
        """Stop the running DBMS cleanly (SIGTERM: Neo4j checkpoints and closes its stores)."""
        info = self.status()
        if info is None:
            return False
        self._terminate(info.pid)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(info.pid, os.WNOHANG)  # reap it when this process started it
        self.state_file.unlink(missing_ok=True)
        return True

    def describe(self, info: Neo4jInfo | None) -> dict[str, Any]:
        """What ``kgweave neo4j status`` prints."""
        if info is None:
            return {"running": False, "folder": str(self.folder)}
        return {
            "running": True,
            "bolt_uri": info.bolt_uri,
            "user": USER,
            "password": self.password() if self.password_file.exists() else None,
            "password_file": str(self.password_file),
            **asdict(info),
        }


def local_password(folder: Path, uri_host: str | None, uri_port: int | None) -> str | None:
    """The password of ``kgweave neo4j``'s DBMS in ``folder`` for a local URI on its port."""
    if uri_host not in LOCAL_HOSTS:
        return None
    server = Neo4jServer(folder)
    if not server.password_file.is_file():
        return None
    info = server.status()
    if info is not None and uri_port not in (None, info.bolt_port):
        return None
    return server.password_file.read_text().strip() or None
