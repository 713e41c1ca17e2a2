"""Are the server's ports free? Checked before ``kgweave serve`` does anything slow.

The bootstrap (graph import, a first training run) takes seconds; a port already taken by
another server should be reported at once, as one line, not after it.
"""

from __future__ import annotations

import errno
import socket

from kgweave.errors import InvalidArgumentError
from kgweave.settings import Settings


def port_in_use(host: str, port: int) -> bool:
    """True when something already listens on ``host:port`` (port 0 is never in use).

    Binds a throw-away socket the way servers do (``SO_REUSEADDR``, so a port left in
    TIME_WAIT by a stopped server counts as free) and closes it at once.
    """
    if port == 0:
        return False
    bind_host = host.strip("[]") or None  # "[::]" -> "::"; "" -> every address
    try:
        addresses = socket.getaddrinfo(
            bind_host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror:
        return False  # an unknown host is the bind's own error to report
    for family, kind, proto, _name, address in addresses:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    return True
    return False


def check_ports_free(settings: Settings) -> None:
    """Raise a one-line error when the gRPC or HTTP port of ``settings`` is taken.

    Raises:
        InvalidArgumentError: "port 50051 is in use: set KGWEAVE_GRPC_PORT or stop the other
            server" (a configuration error: the CLI exits with its usage code, 2).
    """
    wanted = (
        ("port", settings.grpc_port, "KGWEAVE_GRPC_PORT (or --port)"),
        ("HTTP port", settings.http_port, "KGWEAVE_HTTP_PORT (or --http-port)"),
    )
    for what, port, setting in wanted:
        if port_in_use(settings.grpc_host, port):
            raise InvalidArgumentError(
                f"{what} {port} is in use: set {setting} or stop the other server"
            )
    if settings.grpc_port and settings.grpc_port == settings.http_port:
        raise InvalidArgumentError(
            f"the gRPC and HTTP ports are both {settings.grpc_port}: set KGWEAVE_HTTP_PORT "
            "(or --http-port) to another port"
        )
