"""Server logging: readable text or one JSON object per line."""

from __future__ import annotations

import json
import logging
import os
import sys
import time

#: gRPC's C core (under grpcio and under the native front end) logs to stderr in its own
#: format (``E1205 08:10:59.443765 11145 add_port.cc:83] ...``), which would break the
#: server's log lines (a JSON log most of all); kgweave reports what fails itself
GRPC_CORE_VERBOSITY = "NONE"


class JSONFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "msg", ...extra}`` per line; exceptions as a string."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def quiet_grpc_core() -> None:
    """Silence gRPC's C-core log lines, unless the user set ``GRPC_VERBOSITY``.

    The C core reads the variable once, when grpc is first imported (and the native front end
    inherits it), so the CLI calls this at the start of the process.
    """
    os.environ.setdefault("GRPC_VERBOSITY", GRPC_CORE_VERBOSITY)


def configure_logging(fmt: str = "text", level: str = "INFO") -> None:
    """Log to stderr in ``fmt`` (text or json) at ``level``; Python grpc's own loggers only
    from WARNING up, in the same format."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JSONFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("grpc").setLevel(max(logging.WARNING, root.level))
