"""`kgweave serve` end to end, as README's main job runs it on a fresh machine.

From an empty data folder: the embedded FalkorDB starts, the demo graph is imported, a first
model is trained from a graph snapshot, then the server answers the CLI's remote commands;
SIGTERM drains and stops it (and the graph server it started).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from kgweave.api.frontend import find_frontend
from kgweave.api.ports import port_in_use
from kgweave.api.server import start_grpc
from kgweave.cli.main import main
from kgweave.dataplane import DataPlane
from kgweave.errors import KGWeaveError
from kgweave.serving.logs import configure_logging
from kgweave.settings import Settings, get_settings
from serving_support import HANG_GUARD_S, wait_until


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def listening() -> Iterator[int]:
    """A port some other server listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def test_port_in_use_is_seen_and_a_free_one_is_not(listening: int) -> None:
    assert port_in_use("127.0.0.1", listening)
    assert not port_in_use("127.0.0.1", free_port())
    assert not port_in_use("127.0.0.1", 0)


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("KGWEAVE_GRPC_PORT", "error: port {port} is in use: set KGWEAVE_GRPC_PORT"),
        ("KGWEAVE_HTTP_PORT", "error: HTTP port {port} is in use: set KGWEAVE_HTTP_PORT"),
    ],
)
def test_serve_on_a_port_in_use_fails_at_once_in_one_line(
    tmp_path: Path, listening: int, setting: str, message: str
) -> None:
    """Before the bootstrap (no graph started, nothing trained): one line, exit code 2."""
    env = {**os.environ, "KGWEAVE_GRPC_PORT": str(free_port()),
           "KGWEAVE_HTTP_PORT": str(free_port()), setting: str(listening)}  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "kgweave.cli.main", "serve", "--no-progress"],
        env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(message.format(port=listening)), done.stderr
    assert done.stderr.count("\n") == 1 and "or stop the other server" in done.stderr
    data = Path(env["KGWEAVE_DATA_DIR"])
    assert not (data / "graph").exists() and not (data / "models").exists()


def test_python_front_end_on_a_port_in_use_is_a_kgweave_error(listening: int) -> None:
    """Even past the check (another server took the port since): a typed one-line error."""
    service = DataPlane(get_settings())
    try:
        with pytest.raises(KGWeaveError, match=f"cannot listen on 127.0.0.1:{listening}"):
            asyncio.run(start_grpc(service, "127.0.0.1", listening))
    finally:
        service.close()


GRPC_CORE_PROBE = """
import asyncio, sys
import kgweave.cli.main  # what `kgweave serve` runs first
from kgweave.api.server import start_grpc
from kgweave.errors import KGWeaveError
from kgweave.dataplane import DataPlane
from kgweave.settings import get_settings

service = DataPlane(get_settings())
try:
    asyncio.run(start_grpc(service, "127.0.0.1", int(sys.argv[1])))
except KGWeaveError as exc:
    print(f"error: {exc}", file=sys.stderr)
service.close()
"""


@pytest.mark.parametrize("user_setting", [None, "ERROR"])
def test_grpc_core_log_lines_stay_out_of_the_server_log(
    listening: int, user_setting: str | None
) -> None:
    """gRPC's C core writes its own lines (``E1205 ... add_port.cc:83] ...``) to stderr: the
    CLI silences them unless the user set GRPC_VERBOSITY (then they show, as asked)."""
    env = {k: v for k, v in os.environ.items() if k != "GRPC_VERBOSITY"}
    if user_setting:
        env["GRPC_VERBOSITY"] = user_setting
    done = subprocess.run(
        [sys.executable, "-c", GRPC_CORE_PROBE, str(listening)],
        env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert f"error: cannot listen on 127.0.0.1:{listening}" in done.stderr, done.stderr
    assert ("add_port.cc" in done.stderr) == (user_setting is not None), done.stderr


def test_python_grpc_loggers_log_only_warnings_in_our_format(
    capsys: pytest.CaptureFixture[str],
) -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level, logging.getLogger("grpc").level
    try:
        configure_logging("json", "DEBUG")
        logging.getLogger("grpc._cython.cygrpc").info("Using AsyncIOEngine.POLLER as I/O engine")
        logging.getLogger("grpc.aio").warning("a real problem")
        lines = capsys.readouterr().err.splitlines()
        assert [json.loads(line)["msg"] for line in lines] == ["a real problem"]
        configure_logging("text", "ERROR")  # never below the server's own level
        logging.getLogger("grpc.aio").warning("below the level")
        assert capsys.readouterr().err == ""
    finally:
        root.handlers[:], _, grpc_level = saved
        root.setLevel(saved[1])
        logging.getLogger("grpc").setLevel(grpc_level)


def test_serve_bootstraps_answers_cli_and_drains_on_sigterm(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    grpc_port, http_port = free_port(), free_port()
    address = f"127.0.0.1:{grpc_port}"
    env = {
        **os.environ,
        "KGWEAVE_GRPC_PORT": str(grpc_port),
        "KGWEAVE_HTTP_PORT": str(http_port),
        # more epochs than the first model's budget allows: served once the budget is spent
        "KGWEAVE_BOOTSTRAP_EPOCHS": "100000",
        "KGWEAVE_BOOTSTRAP_BUDGET_S": "2",
        # no refinement of it beside the job below (v0002 is the job's; test_refine.py)
        "KGWEAVE_CONTINUE_TRAINING": "false",
        "KGWEAVE_LOG_FORMAT": "json",
    }
    log = (tmp_path / "serve.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "kgweave.cli.main", "serve", "--no-progress"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    monkeypatch.setenv("KGWEAVE_SERVER", address)
    try:
        answers: list[str] = []

        def ready() -> bool:
            """The server answers ready (however long its bootstrap takes); it must not exit."""
            assert process.poll() is None, (tmp_path / "serve.log").read_text()
            code, out, _ = cli(capsys, "status", "--json")
            answers[:] = [out]
            return code == 0 and bool(json.loads(out)["ready"])

        wait_until(ready, "kgweave serve to bootstrap and report ready", poll_s=0.5)
        status = json.loads(answers[0])
        assert status["ready"], (tmp_path / "serve.log").read_text()
        assert status["active_model"]["version"] == "v0001"
        assert status["active_model"]["source"] == "graph"
        assert status["graph_backend"] == "falkordb (embedded)"
        # KGWEAVE_FRONTEND=auto: the native front end whenever it is built
        native = find_frontend(Settings()) is not None
        assert status["frontend"] == ("native" if native else "python")

        code, out, _ = cli(
            capsys, "predict", "--head", "Alan Turing", "--relation", "born_in", "-k", "3", "--json"
        )
        assert code == 0
        answers = json.loads(out)["results"][0]["candidates"]  # the proto's field names
        assert [a["rank"] for a in answers] == [1, 2, 3]

        code, out, _ = cli(capsys, "score", "-t", "alan_turing", "born_in", "london", "--json")
        assert code == 0 and json.loads(out)["model_version"] == "v0001"

        code, out, _ = cli(capsys, "models", "list")
        assert code == 0 and "* v0001" in out

        code, _, err = cli(capsys, "predict", "--head", "Nobody", "--relation", "born_in")
        assert code == 3 and err.startswith("error: unknown entity") and err.count("\n") == 1

        code, out, _ = cli(capsys, "train", "--remote", "--epochs", "5", "--activation", "never")
        assert code == 0 and "succeeded: model v0002" in out, out

        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=HANG_GUARD_S) == 0
        lines = [json.loads(line) for line in (tmp_path / "serve.log").read_text().splitlines()
                 if line.startswith("{")]  # fmt: skip
        messages = [entry["msg"] for entry in lines]
        assert any("demo graph" in m for m in messages)
        assert any(m.startswith("first model v0001: recipe ") for m in messages), messages
        assert any(
            m.startswith("the first model's training stopped in epoch ")
            and "of 100000, at KGWEAVE_BOOTSTRAP_BUDGET_S=2s" in m
            and "`kgweave train --remote` trains a better one" in m
            for m in messages
        ), messages
        assert any(m.startswith("semantic search warm") for m in messages), messages
        assert any(m.startswith("shutting down") for m in messages)
        assert messages[-1] == "stopped"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        log.close()
        main(["graph", "stop"])  # no-op when serve already stopped the server it started
    code, _, err = cli(capsys, "status")
    assert code == 7 and "no kgweave server answers" in err
