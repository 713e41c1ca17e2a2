"""The model artifact: one folder, no pickles.

Layout of a model folder::

    config.json          format, versions, model + training config, dataset fingerprint,
                         metrics, creation time, sha256 of every other file
    model.safetensors    embeddings (``entity.weight``, ``relation.weight``) and
                         ``graph.train`` (the training triples, for --filter-known)
    id_maps.json         entity and relation labels in id order, entity names
    history.json         per-epoch loss / validation MRR
    training_curve.png   the same as a plot

``config.json`` is written last, so a folder without it is an unfinished write. Loading checks
that the hashes, the id maps and the weight shapes all agree before anything is used.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from kgweave import __version__
from kgweave.data.dataset import IdMap, KGDataset
from kgweave.errors import ArtifactError, NotFoundError
from kgweave.models import KGEModel, build_model

FORMAT = "kgweave-model"
FORMAT_VERSION = 1
CONFIG = "config.json"
WEIGHTS = "model.safetensors"
ID_MAPS = "id_maps.json"
HISTORY = "history.json"
CURVE = "training_curve.png"


@dataclass
class ModelArtifact:
    """A loaded model with everything needed to serve it."""

    path: Path
    model: KGEModel
    entities: IdMap
    relations: IdMap
    entity_names: list[str | None]
    known: torch.Tensor  # (M, 3) training triples, relations without reciprocals
    config: dict[str, Any]
    relation_texts: dict[str, str] = field(default_factory=dict)
    entity_descriptions: list[str | None] = field(default_factory=list)

    @property
    def metrics(self) -> dict[str, Any]:
        return dict(self.config.get("metrics", {}))

    @property
    def version(self) -> str:
        """A short content id of this model (from the weights hash)."""
        return str(self.config["files"][WEIGHTS])[:12]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def save_artifact(
    folder: Path,
    model: KGEModel,
    dataset: KGDataset,
    training: dict[str, Any],
    metrics: dict[str, Any],
    history: list[dict[str, Any]] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``model`` trained on ``dataset`` as an artifact folder; returns the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CONFIG).unlink(missing_ok=True)  # the folder is "unfinished" until config.json
    tensors = {k: v.detach().float().cpu().contiguous() for k, v in model.state_dict().items()}
    tensors["graph.train"] = dataset.train.to(torch.int64).contiguous()
    tmp = folder / (WEIGHTS + ".tmp")
    save_file(tensors, str(tmp), metadata={"format": FORMAT})
    os.replace(tmp, folder / WEIGHTS)
    id_maps = {
        "entities": dataset.entities.labels,
        "relations": dataset.relations.labels,
        "entity_names": [dataset.entity_names.get(e) for e in dataset.entities.labels],
        "entity_descriptions": [
            dataset.entity_descriptions.get(e) for e in dataset.entities.labels
        ],
        "relation_texts": {
            r: dataset.relation_texts[r]
            for r in dataset.relations.labels
            if r in dataset.relation_texts
        },
    }
    _write_atomic(folder / ID_MAPS, json.dumps(id_maps, ensure_ascii=False).encode())
    files = {WEIGHTS: _sha256(folder / WEIGHTS), ID_MAPS: _sha256(folder / ID_MAPS)}
    if history is not None:
        _write_atomic(folder / HISTORY, json.dumps(history, indent=1).encode())
        from kgweave.training.curves import plot_training_curve

        plot_training_curve(history, folder / CURVE, f"{model.name} on {dataset.name}")
    config = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kgweave_version": __version__,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "model": model.config(),
        "training": training,
        "dataset": {
            "name": dataset.name,
            "fingerprint": dataset.fingerprint,
            "num_entities": dataset.num_entities,
            "num_relations": dataset.num_relations,
            "train_triples": len(dataset.train),
        },
        "metrics": metrics,
        "relation_templates": dict(dataset.relation_templates),
        "files": files,
        **(extra or {}),
    }
    _write_atomic(folder / CONFIG, json.dumps(config, indent=2).encode())
    return folder


def load_artifact(folder: Path, device: str | torch.device = "cpu") -> ModelArtifact:
    """Load and verify a model folder.

    Raises:
        NotFoundError: no such folder, or it holds no model.
        ArtifactError: a part is missing, corrupt, or disagrees with the others.
    """
    if not folder.is_dir():
        raise NotFoundError(f"model folder {folder} does not exist")
    config_path = folder / CONFIG
    if not config_path.is_file():
        raise NotFoundError(f"{folder} holds no kgweave model (no {CONFIG})")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{config_path}: unreadable ({exc})") from exc
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise ArtifactError(f"{config_path}: not a kgweave model config")
    if config.get("format_version", 0) > FORMAT_VERSION:
        raise ArtifactError(
            f"{folder}: format version {config['format_version']} is newer than this kgweave "
            f"({__version__}) understands; upgrade kgweave"
        )
    for name in (WEIGHTS, ID_MAPS):
        path = folder / name
        if not path.is_file():
            raise ArtifactError(f"{folder}: missing {name}")
        expected = config.get("files", {}).get(name)
        if expected != _sha256(path):
            raise ArtifactError(f"{path}: checksum mismatch, the file is corrupt or was replaced")
    try:
        tensors = load_file(str(folder / WEIGHTS))
    except (SafetensorError, OSError) as exc:
        raise ArtifactError(f"{folder / WEIGHTS}: unreadable weights ({exc})") from exc
    try:
        id_maps = json.loads((folder / ID_MAPS).read_text(encoding="utf-8"))
        entities = IdMap(id_maps["entities"])
        relations = IdMap(id_maps["relations"])
        names = list(id_maps.get("entity_names") or [None] * len(entities))
        descriptions = list(id_maps.get("entity_descriptions") or [None] * len(entities))
    except (KeyError, TypeError, ValueError) as exc:
        raise ArtifactError(f"{folder / ID_MAPS}: malformed id maps ({exc})") from exc
    model_config = config["model"]
    if (
        model_config["num_entities"] != len(entities)
        or len(names) != len(entities)
        or len(descriptions) != len(entities)
    ):
        raise ArtifactError(
            f"{folder}: the model has {model_config['num_entities']} entities but the id map "
            f"has {len(entities)}"
        )
    if model_config["num_relations"] != 2 * len(relations):
        raise ArtifactError(
            f"{folder}: the model has {model_config['num_relations']} relations (with "
            f"reciprocals) but the id map has {len(relations)}"
        )
    try:
        model = build_model(model_config)
    except (TypeError, ValueError) as exc:
        raise ArtifactError(f"{config_path}: invalid model config ({exc})") from exc
    known = tensors.pop("graph.train", torch.zeros(0, 3, dtype=torch.long))
    expected_shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    actual_shapes = {k: tuple(v.shape) for k, v in tensors.items()}
    if expected_shapes != actual_shapes:
        raise ArtifactError(
            f"{folder / WEIGHTS}: weights {actual_shapes} do not match the config {expected_shapes}"
        )
    model.load_state_dict(tensors)
    model.to(device).eval()
    return ModelArtifact(
        path=folder,
        model=model,
        entities=entities,
        relations=relations,
        entity_names=names,
        known=known,
        config=config,
        relation_texts=dict(id_maps.get("relation_texts") or {}),
        entity_descriptions=descriptions,
    )
