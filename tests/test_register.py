"""`kgweave models register DIR`: a model trained here becomes a version of a real server
(AdminService.RegisterModel, streamed), verified, with the activation policy applied."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from kgweave.api.client import Client, model_chunks
from kgweave.api.upload import ModelUpload
from kgweave.cli.main import main
from kgweave.errors import InvalidArgumentError, KGWeaveError
from kgweave.settings import Settings, get_settings
from kgweave.v1 import admin_pb2, admin_pb2_grpc
from serving_support import ServerThread, serving_plane, train_demo_model


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory, datasets_dir: Path) -> tuple[Path, Path]:
    """A weak (1 epoch) and a better (30 epochs) model of the demo graph, trained here."""
    root = tmp_path_factory.mktemp("register")
    settings = Settings(data_dir=root / "data", datasets_dir=datasets_dir, device="cpu")
    weak = train_demo_model(settings, root / "weak", epochs=1, dim=16, eval_every=1)
    better = train_demo_model(settings, root / "better", epochs=30, dim=32, eval_every=10)
    return weak, better


@pytest.fixture
def server(models: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> Iterator[ServerThread]:
    running = ServerThread(serving_plane(models[0]), "python")
    monkeypatch.setenv("KGWEAVE_SERVER", running.address)
    yield running
    running.stop()


def test_cli_registers_a_local_folder_and_the_policy_activates_it(
    server: ServerThread, models: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    better = models[1]
    before = sorted(p.name for p in better.rglob("*"))
    code = main(["models", "register", str(better), "--activation", "if_better", "--json"])
    reply = json.loads(capsys.readouterr().out)
    assert code == 0, reply
    assert reply["model"]["version"] == "v0002" and reply["activated"] is True
    assert "beats" in reply["message"]
    assert server.service.versions.active().version == "v0002"
    # the user's folder is left as it was; the registry holds a verified copy
    assert sorted(p.name for p in better.rglob("*")) == before
    registered = server.service.versions.registry.get("v0002").path
    assert (registered / "model.safetensors").read_bytes() == (
        better / "model.safetensors"
    ).read_bytes()
    # the staging folders are gone
    assert not list(get_settings().jobs_dir.glob("upload-*"))
    assert not list(get_settings().jobs_dir.glob("register-*"))


def test_policy_never_registers_without_activating(
    server: ServerThread, models: tuple[Path, Path]
) -> None:
    with Client(server.address) as client:
        reply = client.register(models[1], "never")
    assert reply["activated"] is False and reply["model"]["version"] == "v0002"
    assert server.service.versions.active().version == "v0001"


def test_a_corrupt_folder_is_refused_and_nothing_registered(
    server: ServerThread, models: tuple[Path, Path], tmp_path: Path
) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(models[1], broken)
    weights = broken / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with Client(server.address) as client, pytest.raises(KGWeaveError) as caught:
        client.register(broken, "always")
    assert "checksum" in str(caught.value) or "sha256" in str(caught.value)
    assert [v.version for v in server.service.versions.registry.versions()] == ["v0001"]


@pytest.mark.parametrize("path", ["../escape", "/etc/passwd", ".hidden", "a/../../b", ""])
def test_upload_refuses_paths_outside_the_folder(tmp_path: Path, path: str) -> None:
    with ModelUpload(tmp_path) as upload, pytest.raises(InvalidArgumentError):
        upload.write(path, b"x")
    assert list(tmp_path.iterdir()) == []  # staging removed


def test_register_over_grpc_refuses_a_bad_path(server: ServerThread) -> None:
    channel = grpc.insecure_channel(server.address)
    admin = admin_pb2_grpc.AdminServiceStub(channel)
    chunks = iter([admin_pb2.ModelChunk(path="../../x", data=b"1")])
    with pytest.raises(grpc.RpcError) as caught:
        admin.RegisterModel(chunks, timeout=30)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "bad file path" in (caught.value.details() or "")
    channel.close()


def test_chunks_carry_every_file_once(models: tuple[Path, Path]) -> None:
    chunks = list(model_chunks(models[1], "always"))
    assert chunks[0].activation == admin_pb2.ACTIVATION_POLICY_ALWAYS
    assert all(c.activation == 0 for c in chunks[1:])
    sent = {c.path for c in chunks}
    on_disk = {
        p.relative_to(models[1]).as_posix()
        for p in models[1].rglob("*")
        if p.is_file() and "checkpoint" not in p.parts
    }
    assert sent == on_disk
