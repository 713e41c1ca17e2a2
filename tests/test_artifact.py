"""Model artifacts: round trip, and refusal of corrupt or mismatched ones."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

from kgweave.artifact import (
    CONFIG_SHA256,
    config_checksums,
    load_artifact,
    save_artifact,
    triples_fingerprint,
)
from kgweave.atomic import sha256_file
from kgweave.cli.main import main
from kgweave.data import load_dataset
from kgweave.errors import ArtifactError, DivergedError, NotFoundError
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


def test_a_graph_snapshots_held_out_facts_are_known_not_trained_on(
    datasets_dir: Path, tmp_path: Path
) -> None:
    ds = load_dataset(datasets_dir / "nations")
    held = torch.cat((ds.split("valid"), ds.split("test")))
    ds.known_held_out = held  # as a snapshot of the served graph has them
    model = model_class("complex")(ds.num_entities, 2 * ds.num_relations, 8)
    save_artifact(tmp_path / "m", model, ds, {}, {})
    art = load_artifact(tmp_path / "m")
    assert art.training_facts.tolist() == ds.train.tolist()
    assert art.known.tolist() == torch.cat((ds.train, held)).tolist()
    assert art.config["dataset"]["held_out_known"] == len(held) > 0
    # a dataset of files: its held-out splits are no graph's facts, nor known
    ds.known_held_out = None
    save_artifact(tmp_path / "files", model, ds, {}, {})
    plain = load_artifact(tmp_path / "files")
    assert plain.known.tolist() == plain.training_facts.tolist() == ds.train.tolist()
    assert plain.config["dataset"]["held_out_known"] == 0 and plain.trained_on is None


def test_held_out_facts_of_the_wrong_shape_are_refused(saved: Path, tmp_path: Path) -> None:
    folder = _copy(saved, tmp_path)
    tensors = load_file(str(folder / "model.safetensors"))
    tensors["graph.held_out"] = torch.zeros(4, 2, dtype=torch.int64)
    _forge_weights(folder, tensors)
    with pytest.raises(ArtifactError, match=r"graph\.held_out has shape \(4, 2\)"):
        load_artifact(folder)


def _copy(saved: Path, tmp_path: Path) -> Path:
    target = tmp_path / "copy"
    shutil.copytree(saved, target)
    return target


def _config(folder: Path) -> dict[str, Any]:
    config: dict[str, Any] = json.loads((folder / "config.json").read_text())
    return config


def _forge_weights(folder: Path, tensors: dict[str, torch.Tensor]) -> None:
    """Write ``tensors`` as the weights file with every checksum recomputed, as a forger would."""
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "kgweave-model"})
    config = _config(folder)
    config["files"]["model.safetensors"] = sha256_file(folder / "model.safetensors")
    _forge(folder, config)


def _forge(folder: Path, config: dict[str, Any]) -> None:
    """Write ``config`` with checksums recomputed, as a deliberate forger would: the checks
    after the checksums must still refuse what does not fit."""
    config[CONFIG_SHA256] = config_checksums(config)
    (folder / "config.json").write_text(json.dumps(config))


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
    config = _config(folder)
    config["files"]["model.safetensors"] = hashlib.sha256(weights.read_bytes()).hexdigest()
    _forge(folder, config)
    with pytest.raises(ArtifactError, match="unreadable weights"):
        load_artifact(folder)


def test_id_map_that_disagrees_with_weights_is_refused(saved: Path, tmp_path: Path) -> None:
    import hashlib

    folder = _copy(saved, tmp_path)
    maps = json.loads((folder / "id_maps.json").read_text())
    maps["entities"].append("extra")
    maps["entity_names"].append(None)
    (folder / "id_maps.json").write_text(json.dumps(maps))
    config = _config(folder)
    config["files"]["id_maps.json"] = hashlib.sha256(
        (folder / "id_maps.json").read_bytes()
    ).hexdigest()
    _forge(folder, config)
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


def test_edited_config_model_is_refused_naming_the_field(saved: Path, tmp_path: Path) -> None:
    """Regression (issue 16): editing config.json's complex/16 to distmult/32 loaded and served
    other scores; config.json is now covered by its own checksums."""
    folder = _copy(saved, tmp_path)
    config = _config(folder)
    config["model"].update(name="distmult", dim=32)
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    with pytest.raises(ArtifactError, match=r"config\.json: field model does not match"):
        load_artifact(folder)
    del config["metrics"]
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ArtifactError, match=r"config\.json: field metrics is missing"):
        load_artifact(folder)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda c: c.pop("dataset"), r"field dataset: Field required"),
        (lambda c: c["model"].update(dim="16"), r"field model\.dim: Input should be a valid int"),
        (lambda c: c["model"].pop("num_entities"), r"field model\.num_entities: Field required"),
        (lambda c: c.update(files=[]), r"field files: Input should be a valid dict"),
    ],
)
def test_config_missing_key_or_wrong_type_is_an_artifact_error(
    saved: Path, tmp_path: Path, change: Any, message: str
) -> None:
    """Regression (issue 16): a missing key or a wrong type was an internal error (exit 70)."""
    folder = _copy(saved, tmp_path)
    config = _config(folder)
    change(config)
    _forge(folder, config)
    with pytest.raises(ArtifactError, match=message):
        load_artifact(folder)


def test_bad_config_exits_5_with_one_line_naming_the_file(
    saved: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = _copy(saved, tmp_path)
    config = _config(folder)
    config["model"]["dim"] = "16"
    _forge(folder, config)
    code = main(["score", str(folder), "-t", "usa", "embassy", "uk"])
    err = capsys.readouterr().err.strip()
    assert code == 5
    assert "config.json: field model.dim" in err and len(err.splitlines()) == 1
    assert "Traceback" not in err


@pytest.mark.parametrize("name", ["history.json", "training_curve.png"])
def test_every_file_is_checksummed(saved: Path, tmp_path: Path, name: str) -> None:
    folder = _copy(saved, tmp_path)
    assert _config(folder)["files"][name] == sha256_file(folder / name)
    with (folder / name).open("ab") as handle:
        handle.write(b" ")
    with pytest.raises(ArtifactError, match=f"{name}: checksum mismatch"):
        load_artifact(folder)


def test_format_1_artifacts_still_load(saved: Path, tmp_path: Path) -> None:
    """A model written before format 2 (no config checksums, no validation fingerprint,
    history and curve not listed) loads as before."""
    folder = _copy(saved, tmp_path)
    config = _config(folder)
    del config[CONFIG_SHA256]
    config["format_version"] = 1
    for key in ("valid_fingerprint", "valid_triples"):
        del config["dataset"][key]
    for name in ("history.json", "training_curve.png"):
        del config["files"][name]
    (folder / "config.json").write_text(json.dumps(config))
    assert load_artifact(folder).config["format_version"] == 1
    config["model"]["dim"] = 1.5  # schema checked for format 1 too
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ArtifactError, match=r"field model\.dim"):
        load_artifact(folder)


def test_validation_fingerprint_is_recorded(saved: Path, datasets_dir: Path) -> None:
    ds = load_dataset(datasets_dir / "nations")
    recorded = _config(saved)["dataset"]
    valid = ds.split("valid")
    assert recorded["valid_fingerprint"] == triples_fingerprint(valid, ds)
    assert recorded["valid_triples"] == len(valid)
    # the same triples in another order: the same fingerprint; one triple fewer: another
    assert triples_fingerprint(valid.flip(0), ds) == recorded["valid_fingerprint"]
    assert triples_fingerprint(valid[1:], ds) != recorded["valid_fingerprint"]


def test_diverged_weights_are_never_written(datasets_dir: Path, tmp_path: Path) -> None:
    ds = load_dataset(datasets_dir / "nations")
    model = model_class("complex")(ds.num_entities, 2 * ds.num_relations, 16)
    with torch.no_grad():
        model.entity.weight[3, 5] = float("nan")
    with pytest.raises(DivergedError, match=r"entity\.weight holds NaN or infinite"):
        save_artifact(tmp_path / "m", model, ds, {}, {})
    assert not (tmp_path / "m" / "config.json").exists()


def test_non_finite_weights_in_an_artifact_are_refused(saved: Path, tmp_path: Path) -> None:
    folder = _copy(saved, tmp_path)
    tensors = load_file(str(folder / "model.safetensors"))
    tensors["relation.weight"][0, 0] = float("inf")
    _forge_weights(folder, tensors)
    with pytest.raises(ArtifactError, match=r"relation\.weight holds NaN or infinite"):
        load_artifact(folder)
