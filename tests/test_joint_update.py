"""Incremental updates of a joint model (language/joint/carry.py): the update carries the
language side over, so the served model stays joint (Complete, text fusion) and its changes
are trained in seconds. Real gRPC server, real embedded FalkorDB, real MiniLM text vectors,
the tiny scratch LM of the tests."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from joint_support import TINY_JOINT
from kgweave.bootstrap import prepare_plane
from kgweave.dataplane import DataPlane
from kgweave.graph.embedded import EmbeddedFalkorDB
from kgweave.language.components.encoder import TextEncoder, entity_texts
from kgweave.language.joint.artifact import load_joint
from kgweave.language.joint.config import JointConfig
from kgweave.language.joint.pipeline import train_joint
from kgweave.serving.language_models import language_identity
from kgweave.serving.training_run import graph_dataset
from kgweave.settings import get_settings
from kgweave.v1 import admin_pb2, knowledge_pb2
from serving_support import HANG_GUARD_S
from test_incremental import Api, base, serve_plane, wait_for


@pytest.fixture
def joint_served(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[tuple[DataPlane, Api]]:
    """The demo graph served by a joint model (v0002, trained on the graph's snapshot) with
    the retrain watcher; updates judged with a wide tolerance (a test of the path)."""
    for name, value in (("BOOTSTRAP_EPOCHS", "20"), ("RETRAIN_INTERVAL_S", "0.3"),
                        ("INCREMENTAL_STEPS", "30"), ("FULL_RETRAIN_DRIFT", "0"),
                        ("VALIDATION_TOLERANCE", "1"), ("OFFLINE", "true")):  # fmt: skip
        monkeypatch.setenv(f"KGWEAVE_{name}", value)
    settings = get_settings()
    plane = prepare_plane(settings, progress=False)  # embedded graph, demo, v0001 (plain)
    joint = tmp_path / "joint"
    try:
        train_joint(graph_dataset(settings), JointConfig.model_validate(TINY_JOINT), joint,
                    settings, progress=False)  # fmt: skip
        version, activated, why = plane.versions.register(joint, "always")
        assert (version, activated) == ("v0002", True), why
    except BaseException:
        EmbeddedFalkorDB(settings.graph_dir).stop()  # (serve_plane stops it from here on)
        raise
    yield from serve_plane(plane)


def complete(api: Api, head: str, relation: str) -> knowledge_pb2.CompleteResponse:
    reply: knowledge_pb2.CompleteResponse = api.knowledge.Complete(
        knowledge_pb2.CompleteRequest(
            query=knowledge_pb2.LinkQuery(head=head, relation=relation), k=3
        ),
        timeout=HANG_GUARD_S,
    )
    return reply


def test_an_update_of_a_joint_model_carries_its_language_side(
    joint_served: tuple[DataPlane, Api],
) -> None:
    plane, api = joint_served
    registry = plane.versions.registry
    joint = registry.get("v0002").path

    # a fact between known entities: trained by an update that keeps the very same language
    # side (its files linked, its LM shared with v0002's, not loaded again)
    fact = ("albert_einstein", "born_in", "paris")
    assert api.write([fact]).applied
    wait_for(lambda: base(plane) == "v0003")
    served = plane.versions.active()
    config = served.artifact.config
    assert config["source"] == "incremental" and "joint" in config
    carried = json.loads((served.artifact.path / "language" / "joint.json").read_text())
    assert carried["carried"] == {"base_version": "v0002", "new_entities": 0, "new_relations": 0}
    assert language_identity(served.artifact.path) == language_identity(joint)
    reply = complete(api, "Alan Turing", "born_in")
    assert reply.model_version.startswith("v0003") and len(reply.candidates) == 3
    assert all(c.evidence.startswith("Alan Turing was born in ") for c in reply.candidates)
    assert api.candidate(*fact).known

    # a new entity with text, and a new relation: the update gives both their rows
    noether = admin_pb2.EntityWrite(
        id="emmy_noether", name="Emmy Noether", description="German mathematician"
    )
    added = [("emmy_noether", "citizen_of", "germany"),
             ("emmy_noether", "corresponded_with", "albert_einstein")]  # fmt: skip
    assert api.write(added=added, entities=[noether]).applied
    wait_for(lambda: base(plane) == "v0004")
    served = plane.versions.active()
    path = served.artifact.path
    parts = load_joint(path, settings=plane.settings)  # every checksum and shape verified
    carried = parts.config["carried"]
    assert carried == {"base_version": "v0003", "new_entities": 1, "new_relations": 1}
    n = len(parts.artifact.entities)
    assert parts.text_vectors.shape[0] == parts.structural.shape[0] == n
    i = parts.artifact.entities.index["emmy_noether"]
    # its text vector is its text's, under the encoder the joint model was trained with
    encoder = TextEncoder.from_settings(plane.settings)
    expected = encoder.encode(entity_texts(["Emmy Noether"], ["German mathematician"]))[0]
    torch.testing.assert_close(parts.text_vectors[i], expected, atol=1e-5, rtol=1e-4)
    # the decomposition holds for its row: structural + P . text = the trained KGE row
    row = parts.artifact.model.entity.weight[i].detach()
    torch.testing.assert_close(
        parts.structural[i] + parts.text_projection(parts.text_vectors[i]).detach(), row,
        atol=1e-5, rtol=1e-4,
    )  # fmt: skip
    assert torch.equal(parts.fused.entities.weight[i].detach(), row)
    # the rows of the entities it had are the base's, untouched
    before = load_joint(joint, settings=plane.settings)
    assert torch.equal(parts.text_vectors[: len(before.text_vectors)], before.text_vectors)
    # the text fusion ranks the new relation too (weights for 2 x (R + 1) relations)
    assert served.text_fusion is not None
    assert served.text_fusion.num_relations == len(parts.artifact.relations)
    reply = complete(api, "Emmy Noether", "citizen_of")
    assert reply.model_version.startswith("v0004") and len(reply.candidates) == 3
    assert api.candidate("emmy_noether", "corresponded_with", "albert_einstein").known
    # linked, not copied: the LM's files are the base's own
    adapters = [p.name for p in (joint / "language").iterdir() if p.suffix != ".json"]
    same = [name for name in adapters if (path / "language" / name).exists()
            and os.path.samefile(joint / "language" / name, path / "language" / name)]  # fmt: skip
    assert same and "text.safetensors" not in same and "fusion.safetensors" not in same
