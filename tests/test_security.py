"""TLS, client certificates and bearer tokens on both gRPC front ends and the HTTP side, and
the start-up checks of ``kgweave serve``: real servers on free ports, real certificates made
here with the ``openssl`` command, real clients (grpcio, the kgweave CLI, http.client)."""

from __future__ import annotations

import asyncio
import http.client
import json
import shutil
import socket
import ssl
import stat
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from kgweave.api.auth import (
    OPEN_METHODS,
    Authorizer,
    Role,
    Security,
    TLSFiles,
    load_security,
)
from kgweave.api.http import HTTPServer, start_http
from kgweave.dataplane import DataPlane
from kgweave.errors import KGWeaveError
from kgweave.settings import get_settings
from kgweave.v1 import admin_pb2, admin_pb2_grpc, knowledge_pb2, knowledge_pb2_grpc
from serving_support import (
    HANG_GUARD_S,
    TRANSPORTS,
    ServerThread,
    demo_model_in,
    registry_with,
    serving_plane,
)

#: a bound on every call, so that a broken server fails the test instead of hanging it
HANG_S = 60.0
ADMIN = "kgw_admin_test-admin-token"
READ = "kgw_read_test-read-token"
UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED
DENIED = grpc.StatusCode.PERMISSION_DENIED
OK = grpc.StatusCode.OK
NOT_FOUND = grpc.StatusCode.NOT_FOUND


# ---- certificates


@dataclass(frozen=True)
class Certs:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    stranger_cert: Path  # a client certificate signed by another CA
    stranger_key: Path


def _openssl(folder: Path, *args: str) -> None:
    subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)


def _ca(folder: Path, name: str) -> None:
    _openssl(
        folder, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2",
        "-subj", f"/CN={name}", "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip


def _leaf(folder: Path, name: str, ca: str, extensions: str) -> None:
    (folder / f"{name}.ext").write_text(extensions)
    _openssl(
        folder, "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}",
    )  # fmt: skip
    _openssl(
        folder, "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
        "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext",
    )  # fmt: skip


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed")
    folder = tmp_path_factory.mktemp("certs")
    _ca(folder, "ca")
    _ca(folder, "other-ca")
    _leaf(
        folder, "server", "ca",
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    )  # fmt: skip
    _leaf(folder, "client", "ca", "extendedKeyUsage=clientAuth\n")
    _leaf(folder, "stranger", "other-ca", "extendedKeyUsage=clientAuth\n")
    return Certs(
        folder / "ca.pem",
        folder / "server.pem",
        folder / "server.key",
        folder / "client.pem",
        folder / "client.key",
        folder / "stranger.pem",
        folder / "stranger.key",
    )


# ---- servers


@pytest.fixture(scope="module")
def demo_model(tmp_path_factory: pytest.TempPathFactory, datasets_dir: Path) -> Path:
    return demo_model_in(tmp_path_factory, datasets_dir, "security-model", epochs=5, dim=16, seed=3)


@dataclass
class Served:
    grpc: ServerThread
    http: HTTPServer

    @property
    def address(self) -> str:
        return self.grpc.address


@pytest.fixture
def serve(demo_model: Path) -> Iterator[Callable[[str, Security], Served]]:
    """Start gRPC (``transport``) and HTTP over one data plane with ``security``."""
    started: list[Served] = []

    def start(transport: str, security: Security) -> Served:
        plane = serving_plane(demo_model)
        grpc_server = ServerThread(plane, transport, security)
        httpd = start_http(plane, "127.0.0.1", 0, plane.changes.receive, security=security)
        started.append(Served(grpc_server, httpd))
        return started[-1]

    yield start
    for served in started:
        served.http.stop()
        served.grpc.stop()


def _authorizer(open_methods: frozenset[str] = OPEN_METHODS | {"GET /metrics"}) -> Authorizer:
    return Authorizer({ADMIN: Role.ADMIN, READ: Role.READ}, open_methods)


# ---- clients


def _channel(
    address: str, certs: Certs | None, client: tuple[Path, Path] | None = None
) -> grpc.Channel:
    if certs is None:
        return grpc.insecure_channel(address)
    chain = key = None
    if client is not None:
        chain, key = client[0].read_bytes(), client[1].read_bytes()
    credentials = grpc.ssl_channel_credentials(certs.ca.read_bytes(), key, chain)
    return grpc.secure_channel(address, credentials)


def _code(call: Callable[[], object]) -> grpc.StatusCode:
    try:
        result = call()
        if isinstance(result, Iterator):
            list(result)
    except grpc.RpcError as exc:
        return exc.code()
    return OK


def _grpc_codes(channel: grpc.Channel, authorization: str | None) -> dict[str, grpc.StatusCode]:
    """The status of a call of each kind: a query, read-only admin calls (unary, server
    streaming), admin operations (unary, client streaming), health."""
    metadata = (("authorization", authorization),) if authorization else None
    knowledge = knowledge_pb2_grpc.KnowledgeServiceStub(channel)
    admin = admin_pb2_grpc.AdminServiceStub(channel)
    health = health_pb2_grpc.HealthStub(channel)
    query = knowledge_pb2.PredictLinksRequest(
        queries=[knowledge_pb2.LinkQuery(head="alan_turing", relation="born_in")], k=3
    )
    nobody = admin_pb2.GetJobRequest(job_id="nope")
    options: dict[str, Any] = {"metadata": metadata, "timeout": HANG_S}
    calls: dict[str, Callable[[], object]] = {
        "query": lambda: knowledge.PredictLinks(query, **options),
        "status": lambda: admin.Status(admin_pb2.StatusRequest(), **options),
        "watch": lambda: admin.WatchJob(nobody, **options),
        "activate": lambda: admin.ActivateModel(
            admin_pb2.ActivateModelRequest(version="v9999"), **options
        ),
        "cancel": lambda: admin.CancelJob(nobody, **options),
        "register": lambda: admin.RegisterModel(iter(()), **options),
        "health": lambda: health.Check(health_pb2.HealthCheckRequest(), **options),
    }
    return {name: _code(call) for name, call in calls.items()}


def _https(certs: Certs | None, client: tuple[Path, Path] | None = None) -> ssl.SSLContext | None:
    if certs is None:
        return None
    context = ssl.create_default_context(cafile=str(certs.ca))
    if client is not None:
        context.load_cert_chain(str(client[0]), str(client[1]))
    return context


def _http(
    port: int,
    method: str,
    path: str,
    body: Any = None,
    authorization: str | None = None,
    tls: ssl.SSLContext | None = None,
) -> tuple[int, dict[str, str], Any]:
    """One request: status, headers (lower-case names), JSON answer (None for /metrics)."""
    if tls is not None:
        connection: http.client.HTTPConnection = http.client.HTTPSConnection(
            "127.0.0.1", port, timeout=HANG_S, context=tls
        )
    else:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=HANG_S)
    headers = {"Authorization": authorization} if authorization else {}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    try:
        connection.request(method, path, body=data, headers=headers)
        reply = connection.getresponse()
        raw = reply.read()
        answer = json.loads(raw) if raw and path != "/metrics" else None
        return reply.status, {k.lower(): v for k, v in reply.getheaders()}, answer
    finally:
        connection.close()


# ---- TLS


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_tls_refuses_plaintext_and_answers_tls(
    transport: str, certs: Certs, serve: Callable[[str, Security], Served]
) -> None:
    served = serve(transport, Security(TLSFiles(certs.server_cert, certs.server_key)))
    plain = _grpc_codes(_channel(served.address, None), None)
    assert set(plain.values()) == {grpc.StatusCode.UNAVAILABLE}, plain
    secure = _grpc_codes(_channel(served.address, certs), None)
    assert secure["query"] == secure["status"] == secure["health"] == OK, secure
    assert secure["activate"] == NOT_FOUND, secure  # (no tokens: admin calls are let in)
    # HTTP: a plaintext request gets no answer, HTTPS does
    with pytest.raises((http.client.HTTPException, OSError)):
        _http(served.http.port, "GET", "/healthz")
    status, _, answer = _http(served.http.port, "GET", "/healthz", tls=_https(certs))
    assert (status, answer) == (200, {"ready": True})
    status, _, answer = _http(
        served.http.port, "POST", "/v1/predict",
        {"queries": [{"head": "alan_turing", "relation": "born_in"}], "k": 2}, tls=_https(certs),
    )  # fmt: skip
    assert status == 200 and len(answer["results"][0]["candidates"]) == 2, answer


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_mtls_refuses_clients_without_a_certificate_of_the_ca(
    transport: str, certs: Certs, serve: Callable[[str, Security], Served]
) -> None:
    files = TLSFiles(certs.server_cert, certs.server_key, certs.ca)
    served = serve(transport, Security(files))
    mine = (certs.client_cert, certs.client_key)
    stranger = (certs.stranger_cert, certs.stranger_key)
    for client in (None, stranger):  # no certificate, one of another CA
        codes = _grpc_codes(_channel(served.address, certs, client), None)
        assert set(codes.values()) == {grpc.StatusCode.UNAVAILABLE}, (client, codes)
        with pytest.raises((http.client.HTTPException, OSError)):
            _http(served.http.port, "GET", "/v1/status", tls=_https(certs, client))
    codes = _grpc_codes(_channel(served.address, certs, mine), None)
    assert codes["query"] == codes["status"] == OK, codes
    status, _, answer = _http(served.http.port, "GET", "/v1/status", tls=_https(certs, mine))
    assert status == 200 and answer["ready"] is True


# ---- tokens

#: per kind of call: its status with no token, an invalid one, a read token, the admin token
EXPECTED = {
    "query": (UNAUTHENTICATED, UNAUTHENTICATED, OK, OK),
    "status": (UNAUTHENTICATED, UNAUTHENTICATED, OK, OK),
    "watch": (UNAUTHENTICATED, UNAUTHENTICATED, NOT_FOUND, NOT_FOUND),
    "activate": (UNAUTHENTICATED, UNAUTHENTICATED, DENIED, NOT_FOUND),
    "cancel": (UNAUTHENTICATED, UNAUTHENTICATED, DENIED, NOT_FOUND),
    "register": (UNAUTHENTICATED, UNAUTHENTICATED, DENIED, grpc.StatusCode.INVALID_ARGUMENT),
    "health": (OK, OK, OK, OK),
}
TOKENS = (None, "Bearer not-a-token", f"Bearer {READ}", f"Bearer {ADMIN}")


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_tokens_on_every_kind_of_grpc_call(
    transport: str, serve: Callable[[str, Security], Served]
) -> None:
    served = serve(transport, Security(None, _authorizer()))
    channel = _channel(served.address, None)
    for column, authorization in enumerate(TOKENS):
        codes = _grpc_codes(channel, authorization)
        expected = {name: row[column] for name, row in EXPECTED.items()}
        assert codes == expected, authorization
    for malformed in ("Basic abc", "Bearer", READ, "bearer   "):  # (no scheme, no token)
        assert _grpc_codes(channel, malformed)["query"] == UNAUTHENTICATED, malformed
    # the details say what to do
    try:
        knowledge_pb2_grpc.KnowledgeServiceStub(channel).Verbalize(
            knowledge_pb2.VerbalizeRequest(entity="paris"), timeout=HANG_S
        )
        raise AssertionError("answered without a token")
    except grpc.RpcError as exc:
        assert exc.code() == UNAUTHENTICATED and "Bearer" in (exc.details() or "")
    try:
        admin_pb2_grpc.AdminServiceStub(channel).CancelJob(
            admin_pb2.GetJobRequest(job_id="x"),
            metadata=(("authorization", f"bearer {READ}"),),  # (the scheme is case-blind)
            timeout=HANG_S,
        )
        raise AssertionError("a read token cancelled a job")
    except grpc.RpcError as exc:
        assert exc.code() == DENIED and "CancelJob needs the admin token" in (exc.details() or "")


def test_tokens_on_every_kind_of_http_route(serve: Callable[[str, Security], Served]) -> None:
    served = serve("python", Security(None, _authorizer()))
    port = served.http.port
    event = {"source": "test", "events": [{"kind": "entity_upserted", "entity": "x"}]}
    routes: dict[str, tuple[str, str, Any, tuple[int, int, int, int]]] = {
        "query": ("POST", "/v1/predict",
                  {"queries": [{"head": "alan_turing", "relation": "born_in"}]},
                  (401, 401, 200, 200)),
        "entity": ("GET", "/v1/entities/paris", None, (401, 401, 200, 200)),
        "status": ("GET", "/v1/status", None, (401, 401, 200, 200)),
        "changes": ("POST", "/v1/changes", event, (401, 401, 403, 202)),
        "health": ("GET", "/healthz", None, (200, 200, 200, 200)),
        "metrics": ("GET", "/metrics", None, (200, 200, 200, 200)),
    }  # fmt: skip
    before = served.grpc.service.changes.event_log.end_offset
    for name, (method, path, body, expected) in routes.items():
        for column, authorization in enumerate(TOKENS):
            status, headers, answer = _http(port, method, path, body, authorization)
            assert status == expected[column], (name, authorization, status, answer)
            if status == 401:
                assert answer["code"] == "UNAUTHENTICATED"
                assert headers["www-authenticate"].startswith("Bearer")
            if status == 403:
                assert answer["code"] == "PERMISSION_DENIED"
                assert "needs the admin token" in answer["message"]
    assert served.grpc.service.changes.event_log.end_offset > before  # the admin's landed once
    # a refused request's body is never read: a declared body never sent, over the 64 MiB
    # cap, gets 401 (not 413, and no wait for the body)
    with socket.create_connection(("127.0.0.1", port), timeout=HANG_S) as sock:
        sock.sendall(
            b"POST /v1/changes HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000000000\r\n\r\n"
        )
        reply = b""
        while b"\r\n\r\n" not in reply:
            chunk = sock.recv(65536)
            assert chunk, reply
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 401 "), reply


def test_metrics_can_require_a_token(serve: Callable[[str, Security], Served]) -> None:
    served = serve("python", Security(None, _authorizer(OPEN_METHODS)))
    assert _http(served.http.port, "GET", "/metrics")[0] == 401
    assert _http(served.http.port, "GET", "/metrics", None, f"Bearer {READ}")[0] == 200
    assert _http(served.http.port, "GET", "/healthz")[0] == 200


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_the_cli_connects_with_tls_and_a_token(
    transport: str,
    certs: Certs,
    serve: Callable[[str, Security], Served],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from kgweave.cli.main import main

    tls = TLSFiles(certs.server_cert, certs.server_key, certs.ca)
    served = serve(transport, Security(tls, _authorizer()))
    monkeypatch.setenv("KGWEAVE_SERVER", served.address)
    assert main(["status", "--json"]) == 7  # plaintext: no answer
    assert "no kgweave server answers" in capsys.readouterr().err
    monkeypatch.setenv("KGWEAVE_TLS_CA", str(certs.ca))
    monkeypatch.setenv("KGWEAVE_TLS_CLIENT_CERT", str(certs.client_cert))
    monkeypatch.setenv("KGWEAVE_TLS_CLIENT_KEY", str(certs.client_key))
    assert main(["status", "--json"]) == 10  # TLS, no token
    err = capsys.readouterr().err
    assert err.startswith("error: this server requires a bearer token") and err.count("\n") == 1
    monkeypatch.setenv("KGWEAVE_TOKEN", READ)
    assert main(["status", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ready"] is True
    assert main(["models", "activate", "v0001"]) == 11  # a read token on an admin operation
    err = capsys.readouterr().err
    assert "ActivateModel needs the admin token" in err and err.count("\n") == 1
    monkeypatch.setenv("KGWEAVE_TOKEN", ADMIN)
    assert main(["models", "activate", "v0001"]) == 0
    assert "v0001 is active" in capsys.readouterr().out


# ---- kgweave serve, end to end


def test_serve_with_tls_client_certificates_and_generated_tokens(
    certs: Certs,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A fresh data folder, `kgweave serve` with KGWEAVE_AUTH and mTLS: the tokens file is
    written and announced, the embedded FalkorDB gets its password, the CLI is answered over
    TLS with the generated token, health is open, and SIGTERM stops it all."""
    import os
    import signal
    import sys
    import time

    from kgweave.cli.main import main

    secure = {
        "KGWEAVE_AUTH": "true",
        "KGWEAVE_TLS_CERT": str(certs.server_cert),
        "KGWEAVE_TLS_KEY": str(certs.server_key),
        "KGWEAVE_TLS_CLIENT_CA": str(certs.ca),
    }
    env = {
        **os.environ, **secure, "KGWEAVE_GRPC_PORT": "0", "KGWEAVE_HTTP_PORT": "0",
        "KGWEAVE_BOOTSTRAP_EPOCHS": "5",
    }  # fmt: skip
    log_path = tmp_path / "serve.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "kgweave.cli.main", "serve", "--no-progress"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    settings = get_settings()
    try:
        deadline = time.monotonic() + 300  # (a bound on a hang, not a timing assert)
        while "Ctrl-C stops" not in log_path.read_text():
            assert process.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.1)
        text = log_path.read_text()
        assert f"wrote an admin and a read token to {settings.tokens_file} (0600)" in text
        assert "(TLS, client certificates), tokens required" in text
        ready = next(line for line in text.splitlines() if "Ctrl-C stops" in line)
        address = ready.split(" on ", 1)[1].split(" ", 1)[0]
        tokens = json.loads(settings.tokens_file.read_text())
        assert stat.S_IMODE(settings.data_dir.stat().st_mode) == 0o700
        assert stat.S_IMODE((settings.graph_dir / "password").stat().st_mode) == 0o600
        monkeypatch.setenv("KGWEAVE_SERVER", address)
        monkeypatch.setenv("KGWEAVE_TLS_CA", str(certs.ca))
        monkeypatch.setenv("KGWEAVE_TLS_CLIENT_CERT", str(certs.client_cert))
        monkeypatch.setenv("KGWEAVE_TLS_CLIENT_KEY", str(certs.client_key))
        assert main(["status", "--json"]) == 10
        monkeypatch.setenv("KGWEAVE_TOKEN", tokens["read"][0])
        assert main(["status", "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["ready"] is True
        channel = _channel(address, certs, (certs.client_cert, certs.client_key))
        assert _grpc_codes(channel, None)["health"] == OK
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=HANG_GUARD_S) == 0, log_path.read_text()


# ---- start-up checks of kgweave serve


def _one_line_error(argv: list[str], capsys: pytest.CaptureFixture[str], exit_code: int) -> str:
    from kgweave.cli.main import main

    assert main(argv) == exit_code
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert not get_settings().models_dir.exists()  # refused before any training
    return err


def test_serve_refuses_a_non_loopback_address_without_auth(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    err = _one_line_error(["serve", "--host", "0.0.0.0", "--no-progress"], capsys, 6)
    assert "refusing to serve 0.0.0.0 without authentication" in err
    assert "KGWEAVE_AUTH=true" in err and "KGWEAVE_ALLOW_INSECURE=true" in err
    monkeypatch.setenv("KGWEAVE_HTTP_HOST", "::")  # the HTTP side's own address counts too
    err = _one_line_error(["serve", "--no-progress"], capsys, 6)
    assert "refusing to serve :: without" in err
    # explicitly allowed, or with tokens, it may bind them
    settings = get_settings().model_copy(update={"grpc_host": "0.0.0.0"})
    with pytest.raises(KGWeaveError):
        load_security(settings)
    assert load_security(settings.model_copy(update={"allow_insecure": True})).authorizer is None
    said: list[str] = []
    secured = load_security(settings.model_copy(update={"auth": True}), said.append)
    assert secured.authorizer is not None
    assert any("without TLS" in line for line in said)  # tokens in clear text: a warning
    # loopback addresses need no tokens
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        loopback = settings.model_copy(update={"grpc_host": host, "http_host": None})
        assert load_security(loopback).authorizer is None, host


def test_auth_generates_a_private_tokens_file_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KGWEAVE_AUTH", "true")
    settings = get_settings()
    said: list[str] = []
    authorizer = load_security(settings, said.append).authorizer
    path = settings.tokens_file
    assert said == [
        f"auth is on and no token was set: wrote an admin and a read token to {path} (0600)"
    ]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(settings.data_dir.stat().st_mode) == 0o700
    tokens = json.loads(path.read_text())
    assert tokens["admin"].startswith("kgw_admin_") and tokens["read"][0].startswith("kgw_read_")
    assert authorizer is not None
    authorizer.check("/kgweave.v1.AdminService/StartTraining", f"Bearer {tokens['admin']}")
    with pytest.raises(KGWeaveError, match="needs the admin token"):
        authorizer.check("/kgweave.v1.AdminService/StartTraining", f"Bearer {tokens['read'][0]}")
    # the next start reads the same file and says nothing
    said.clear()
    load_security(settings, said.append)
    assert said == [] and json.loads(path.read_text()) == tokens
    # a tokens file others may read is refused
    path.chmod(0o644)
    with pytest.raises(KGWeaveError, match="chmod 600"):
        load_security(settings)
    # tokens from the settings turn auth on by themselves, and no file is written
    monkeypatch.delenv("KGWEAVE_AUTH")
    path.unlink()
    monkeypatch.setenv("KGWEAVE_ADMIN_TOKEN", "admin-from-settings")
    monkeypatch.setenv("KGWEAVE_READ_TOKENS", "r1, r2")
    set_here = load_security(get_settings()).authorizer
    assert set_here is not None and not path.exists()
    set_here.check("/kgweave.v1.AdminService/ActivateModel", "Bearer admin-from-settings")
    set_here.check("/kgweave.v1.KnowledgeService/PredictLinks", "Bearer r2")


def test_tls_files_are_checked_before_anything_starts(
    certs: Certs, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KGWEAVE_TLS_CERT", str(certs.server_cert.parent / "missing.pem"))
    monkeypatch.setenv("KGWEAVE_TLS_KEY", str(certs.server_key))
    err = _one_line_error(["serve", "--no-progress"], capsys, 2)
    assert "KGWEAVE_TLS_CERT: cannot read the certificate" in err and "missing.pem" in err
    monkeypatch.setenv("KGWEAVE_TLS_CERT", str(certs.server_cert))
    monkeypatch.setenv("KGWEAVE_TLS_KEY", str(certs.client_key))  # not the certificate's key
    err = _one_line_error(["serve", "--no-progress"], capsys, 2)
    assert "are not a PEM certificate and its key" in err
    monkeypatch.setenv("KGWEAVE_TLS_KEY", str(certs.server_key))
    monkeypatch.setenv("KGWEAVE_TLS_CLIENT_CA", str(certs.server_key))  # no certificate in it
    err = _one_line_error(["serve", "--no-progress"], capsys, 2)
    assert "KGWEAVE_TLS_CLIENT_CA" in err
    monkeypatch.delenv("KGWEAVE_TLS_CERT")
    err = _one_line_error(["serve", "--no-progress"], capsys, 2)
    assert "set both KGWEAVE_TLS_CERT and KGWEAVE_TLS_KEY" in err


def test_the_native_front_end_says_when_it_cannot_read_its_certificate(
    certs: Certs, demo_model: Path, tmp_path: Path
) -> None:
    """Past the engine's checks (a file removed meanwhile), the front end's own error is one
    line too."""
    from kgweave.api.frontend import start_native
    from serving_support import frontend_binary

    cert = tmp_path / "server.pem"
    shutil.copy(certs.server_cert, cert)
    files = TLSFiles(cert, certs.server_key)
    cert.unlink()
    settings = get_settings().model_copy(update={"grpc_host": "127.0.0.1", "grpc_port": 0})
    registry_with(settings, [demo_model])
    plane = DataPlane(settings)

    async def start() -> None:
        await start_native(plane, settings, frontend_binary(), Security(files))

    try:
        with pytest.raises(KGWeaveError) as caught:
            asyncio.run(start())
    finally:
        plane.close()
    message = str(caught.value)
    assert message.startswith("the native front end did not start: kgweave-frontend: cannot ")
    assert "server.pem" in message and "\n" not in message
