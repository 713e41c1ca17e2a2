"""Run ``kgweave-frontend``, the native gRPC front end, in front of this process's engine.

The front end (C++, ``frontend/``) listens on the gRPC port and forwards every call over a
socketpair to a :class:`~kgweave.api.bridge.Bridge` here, where the same servicers as the
Python gRPC server answer it. The child process inherits its end of the pair, so either side
sees the other go: the front end exits when the engine closes the socket, and the engine
logs it if the front end dies. Before the bridge starts, the two exchange HELLO frames
(``frontend/frame_protocol.md``): a front end speaking another frame protocol version stops
``kgweave serve`` with one line that says to rebuild it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import socket
from pathlib import Path

from kgweave import __version__
from kgweave.api import frame_protocol
from kgweave.api.auth import Security
from kgweave.api.bridge import Bridge, HandlerTable, hello, read_hello
from kgweave.api.endpoint import MAX_MESSAGE_BYTES, Health, RunningServer, add_services
from kgweave.dataplane import DataPlane
from kgweave.errors import KGWeaveError
from kgweave.settings import Settings

log = logging.getLogger(__name__)

BINARY = "kgweave-frontend"
#: calls the front end holds at once before it refuses new ones itself (RESOURCE_EXHAUSTED,
#: reported to the engine and counted); a safety bound on the transport, as the Python front
#: end's (:data:`kgweave.api.server.PENDING_CALLS_MAX`) is. Admission under load is the
#: engine's: PredictLinks queries beyond ``KGWEAVE_QUEUE_MAX`` waiting, on both front ends.
CALLS_MAX = 1 << 16
START_TIMEOUT_S = 15.0
#: the front end's exit status when the engine speaks another frame protocol version
EXIT_PROTOCOL = 3


def find_frontend(settings: Settings) -> Path | None:
    """The front end executable: the setting, then PATH, then a source checkout's build."""
    if settings.frontend_binary is not None:
        path = settings.frontend_binary.expanduser()
        return path if path.is_file() and os.access(path, os.X_OK) else None
    found = shutil.which(BINARY)
    if found:
        return Path(found)
    checkout = Path(__file__).resolve().parents[3] / "frontend" / "build" / BINARY
    return checkout if checkout.is_file() and os.access(checkout, os.X_OK) else None


def serves_natively(settings: Settings) -> bool:
    """Whether ``settings`` pick the native front end (``native``, or ``auto`` with the binary
    found)."""
    return settings.frontend == "native" or (
        settings.frontend == "auto" and find_frontend(settings) is not None
    )


class NativeServer(RunningServer):
    transport = "native"

    def __init__(
        self,
        process: asyncio.subprocess.Process,
        bridge: Bridge,
        port: int,
        health_state: Health,
        plane: DataPlane,
    ) -> None:
        self.process = process
        self.bridge = bridge
        self.relay: asyncio.Task[None] | None = None
        super().__init__(port, health_state, plane)

    async def _stop(self, grace: float) -> None:
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), grace + 5.0)
            except TimeoutError:
                log.warning("the front end did not stop within %.1fs; killing it", grace + 5.0)
                with contextlib.suppress(ProcessLookupError):
                    self.process.kill()
                await self.process.wait()
        self.bridge.close()


def tls_options(security: Security) -> list[str]:
    """The front end's TLS options (its certificate, key and client CAs: the files it reads)."""
    if security.tls is None:
        return []
    options = ["--tls-cert", str(security.tls.cert), "--tls-key", str(security.tls.key)]
    if security.tls.client_ca is not None:
        options += ["--tls-client-ca", str(security.tls.client_ca)]
    return options


async def start_native(
    plane: DataPlane, settings: Settings, binary: Path, security: Security | None = None
) -> NativeServer:
    """Start the engine side of the bridge and ``binary`` listening on the gRPC address, with
    TLS and tokens as ``security`` says (None: neither). Tokens are checked here, in the
    engine: the front end forwards each call's ``authorization`` metadata."""
    security = security or Security()
    loop = asyncio.get_running_loop()
    table = HandlerTable()
    health_state = Health()
    add_services(table, plane, health_state)
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    started: list[NativeServer] = []

    def lost() -> None:
        if started and not started[0].stopping:
            started[0].fail(
                "the native front end exited unexpectedly: gRPC calls are no longer answered; "
                "stopping"
            )

    ours.sendall(hello(f"kgweave {__version__}"))  # waits in the socket for the front end
    try:
        process = await asyncio.create_subprocess_exec(
            str(binary),
            "--listen", f"{settings.grpc_host}:{settings.grpc_port}",
            "--bridge-fd", str(theirs.fileno()),
            "--unary", ",".join(table.unary_methods()),
            "--max-in-flight", str(CALLS_MAX),
            "--max-message-bytes", str(MAX_MESSAGE_BYTES),
            "--grace-seconds", str(settings.shutdown_grace_s),
            *tls_options(security),
            pass_fds=(theirs.fileno(),),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
    except OSError as exc:
        ours.close()
        raise KGWeaveError(f"cannot run the native front end {binary}: {exc.strerror}") from None
    finally:
        theirs.close()
    assert process.stdout is not None and process.stderr is not None
    try:
        line = await asyncio.wait_for(process.stdout.readline(), START_TIMEOUT_S)
    except TimeoutError:
        line = b""
    # the front end wrote its HELLO before it printed LISTENING or exited: it is here now
    theirs_hello = read_hello(ours)
    mismatch = theirs_hello is None or theirs_hello.protocol != frame_protocol.VERSION
    if not line.startswith(b"LISTENING ") or mismatch:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
        error = (await process.stderr.read()).decode(errors="replace").strip().splitlines()
        ours.close()
        # (the version it sent decides; its exit status can be lost to asyncio's child watcher)
        said_version = theirs_hello is not None or line.startswith(b"LISTENING ")
        if mismatch and (said_version or process.returncode == EXIT_PROTOCOL):
            spoken = theirs_hello.protocol if theirs_hello is not None else 0
            raise KGWeaveError(
                f"{BINARY} at {binary} speaks frame protocol {spoken}, this kgweave needs "
                f"{frame_protocol.VERSION}: rebuild with bash frontend/build.sh"
            )
        raise KGWeaveError(
            f"the native front end did not start: {error[0] if error else 'no output'}"
        )

    def refused(method: str, count: int) -> None:
        """Calls the front end refused at its bound: counted as the servicers count their
        own refusals (an unknown method under "unknown": the front end refused it unread)."""
        name = method.rsplit("/", 1)[-1] if table.lookup(method) is not None else "unknown"
        histogram = plane.metrics.request_seconds.labels(method=name, code="RESOURCE_EXHAUSTED")
        for _ in range(count):
            histogram.observe(0.0)

    _, bridge = await loop.connect_accepted_socket(
        lambda: Bridge(table, lost, security.authorizer, refused), ours
    )
    port = int(line.split()[1])
    running = NativeServer(process, bridge, port, health_state, plane)
    running.relay = loop.create_task(_relay(process.stderr))
    started.append(running)
    return running


async def _relay(stream: asyncio.StreamReader) -> None:
    """The front end's stderr lines into this process's log."""
    while line := await stream.readline():
        log.warning("frontend: %s", line.decode(errors="replace").rstrip())
