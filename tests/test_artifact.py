"""Model artifacts: round trip, and refusal of corrupt or mismatched ones."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from kgweave.artifact import load_artifact, save_artifact
from kgweave.data import load_dataset
from kgweave.errors import ArtifactError, NotFoundError
from kgweave.models import model_class


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory, datasets_dir: Path) -> Path:
    ds = load_dataset(datasets_dir / "nations")
    torch.manual_seed(0)
    model = model_class("complex")(ds.num_entities, 2 * ds.num_relations, 16)
    with torch.no_grad():
        model.entity.weight.normal_()
    folder = tmp_path_factory.mktemp("model")
    history = [{"epoch": 1, "loss": 2.0, "valid_mrr": 0.3}, {"epoch": 2, "loss": 1.5}]
    save_artifact(folder, model, ds, {"model": "complex"}, {"valid": {"mrr": 0.3}}, history)
    return folder


def test_round_trip_gives_identical_scores(saved: Path, datasets_dir: Path) -> None:
    art = load_artifact(saved)
    ds = load_dataset(datasets_dir / "nations")
    assert art.entities.labels == ds.entities.labels
    assert art.relations.labels == ds.relations.labels
    assert art.known.tolist() == ds.train.tolist()
    assert art.config["dataset"]["fingerprint"] == ds.fingerprint
    assert art.metrics["valid"]["mrr"] == 0.3
    reloaded = load_artifact(saved)
    hr = ds.split("test")[:, :2]
    torch.testing.assert_close(art.model.predict_t(hr), reloaded.model.predict_t(hr))
    assert (saved / "training_curve.png").stat().st_size > 1000
    assert not any(p.suffix in (".pkl", ".pt", ".pth") for p in saved.iterdir())


def _copy(saved: Path, tmp_path: Path) -> Path:
    target = tmp_path / "copy"
    shutil.copytree(saved, target)
    return target


def test_flipped_byte_in_weights_is_refused(saved: Path, tmp_path: Path) -> None:
    folder = _copy(saved, tmp_path)
    data = bytearray((folder / "model.safetensors").read_bytes())
    data[-5] ^= 0xFF
    (folder / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="checksum mismatch"):
        load_artifact(folder)


def test_truncated_weights_with_forged_hash_are_refused(saved: Path, tmp_path: Path) -> None:
    import hashlib

    folder = _copy(saved, tmp_path)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    config = json.loads((folder / "config.json").read_text())
    config["files"]["model.safetensors"] = hashlib.sha256(weights.read_bytes()).hexdigest()
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ArtifactError, match="unreadable weights"):
        load_artifact(folder)


def test_id_map_that_disagrees_with_weights_is_refused(saved: Path, tmp_path: Path) -> None:
    import hashlib

    folder = _copy(saved, tmp_path)
    maps = json.loads((folder / "id_maps.json").read_text())
    maps["entities"].append("extra")
    maps["entity_names"].append(None)
    (folder / "id_maps.json").write_text(json.dumps(maps))
    config = json.loads((folder / "config.json").read_text())
    config["files"]["id_maps.json"] = hashlib.sha256(
        (folder / "id_maps.json").read_bytes()
    ).hexdigest()
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ArtifactError, match="14 entities but the id map has 15"):
        load_artifact(folder)


def test_missing_parts(saved: Path, tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="does not exist"):
        load_artifact(tmp_path / "none")
    folder = _copy(saved, tmp_path)
    (folder / "id_maps.json").unlink()
    with pytest.raises(ArtifactError, match=r"missing id_maps\.json"):
        load_artifact(folder)
    (folder / "config.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="unreadable"):
        load_artifact(folder)
    (folder / "config.json").unlink()
    with pytest.raises(NotFoundError, match="holds no kgweave model"):
        load_artifact(folder)
