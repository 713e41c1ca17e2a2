"""The .proto files are the contract: generated code is current, and a client built from the
.proto files alone (none of kgweave's code) gets the same answers."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from kgweave.artifact import load_artifact
from kgweave.predict import LinkPredictor, Query
from serving_support import HANG_GUARD_S, TRANSPORTS, ServerThread, demo_model_in, serving_plane

REPO = Path(__file__).resolve().parent.parent
PROTOS = ["kgweave/v1/knowledge.proto", "kgweave/v1/admin.proto"]


def test_generated_code_is_current(tmp_path: Path) -> None:
    """server/kgweave/v1 is what `python -m grpc_tools.protoc` makes of proto/ (see docs/api.md)."""
    from grpc_tools import protoc

    args = ["protoc", f"-I{REPO / 'proto'}", f"--python_out={tmp_path}", f"--pyi_out={tmp_path}"]
    args += [f"--grpc_python_out={tmp_path}", *(str(REPO / "proto" / p) for p in PROTOS)]
    assert protoc.main(args) == 0
    generated = sorted(p.name for p in (tmp_path / "kgweave" / "v1").iterdir())
    committed = sorted(
        p.name
        for p in (REPO / "server" / "kgweave" / "v1").iterdir()
        if p.name != "__init__.py" and p.suffix in (".py", ".pyi")
    )
    assert generated == committed
    for name in generated:
        fresh = (tmp_path / "kgweave" / "v1" / name).read_text()
        assert fresh == (REPO / "server" / "kgweave" / "v1" / name).read_text(), (
            f"server/kgweave/v1/{name} is stale: regenerate it (docs/api.md)"
        )


CLIENT = r"""
import json, sys
import grpc
import admin_pb2, admin_pb2_grpc, knowledge_pb2, knowledge_pb2_grpc

channel = grpc.insecure_channel(sys.argv[1])
knowledge = knowledge_pb2_grpc.KnowledgeServiceStub(channel)
admin = admin_pb2_grpc.AdminServiceStub(channel)
reply = knowledge.PredictLinks(knowledge_pb2.PredictLinksRequest(
    queries=[knowledge_pb2.LinkQuery(head="Alan Turing", relation="born_in"),
             knowledge_pb2.LinkQuery(relation="born_in", tail="london")], k=5))
status = admin.Status(admin_pb2.StatusRequest())
try:
    knowledge.PredictLinks(knowledge_pb2.PredictLinksRequest(
        queries=[knowledge_pb2.LinkQuery(head="nobody", relation="born_in")]))
    error = None
except grpc.RpcError as exc:
    error = [exc.code().name, exc.details()]
print(json.dumps({
    "version": reply.model_version,
    "results": [[c.entity_id for c in r.candidates] for r in reply.results],
    "active": status.active_model.version,
    "error": error,
    "modules": sorted(m for m in sys.modules if m.startswith("kgweave")),
}))
"""


@pytest.fixture(params=TRANSPORTS)
def server(
    tmp_path_factory: pytest.TempPathFactory, datasets_dir: Path, request: pytest.FixtureRequest
) -> Iterator[Path]:
    model = demo_model_in(tmp_path_factory, datasets_dir, "proto-model", epochs=20, dim=32)
    running = ServerThread(serving_plane(model), request.param)
    yield running, model  # type: ignore[misc]
    running.stop()


def test_training_settings_carry_every_job_field() -> None:
    from kgweave.training.config import JOB_FIELDS, TrainConfig
    from kgweave.v1 import admin_pb2

    fields = set(admin_pb2.TrainingSettings.DESCRIPTOR.fields_by_name)
    assert fields == {*JOB_FIELDS, "joint"}
    assert set(JOB_FIELDS) <= set(TrainConfig.model_fields)


def test_client_from_proto_files_only(server: tuple[ServerThread, Path], tmp_path: Path) -> None:
    running, model = server
    # the client's world: copies of the .proto files, code generated from them, nothing else
    src = tmp_path / "protos"
    src.mkdir()
    for proto in PROTOS:
        shutil.copy(REPO / "proto" / proto, src / Path(proto).name)
    out = tmp_path / "client"
    out.mkdir()
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{src}", f"--python_out={out}",
         f"--grpc_python_out={out}", "knowledge.proto", "admin.proto"],
        cwd=src, check=True,
    )  # fmt: skip
    (out / "client.py").write_text(CLIENT)
    done = subprocess.run(
        [sys.executable, "client.py", running.address],
        cwd=out,
        capture_output=True,
        text=True,
        timeout=HANG_GUARD_S,
        check=True,
    )
    answer = json.loads(done.stdout)
    assert answer["modules"] == []  # kgweave's own code was never imported
    predictor = LinkPredictor(load_artifact(model))
    expected = predictor.predict(
        [Query("born_in", head="Alan Turing"), Query("born_in", tail="london")], k=5
    )
    assert answer["results"] == [[p.entity for p in row] for row in expected]
    assert answer["version"] == answer["active"] == "v0001"
    assert answer["error"][0] == "NOT_FOUND" and "nobody" in answer["error"][1]
