"""The model artifact: one folder, no pickles.

Layout of a model folder::

    config.json          format, versions, model + training config, dataset and validation
                         fingerprints, metrics, creation time, sha256 of every other file,
                         and a sha256 of each of its own fields (``config_sha256``)
    model.safetensors    embeddings (``entity.weight``, ``relation.weight``),
                         ``graph.train`` (the training triples) and, for a model of a graph
                         snapshot, ``graph.held_out`` (the graph's facts it held out to
                         validate and test on): together the facts it knows (--filter-known)
    id_maps.json         entity and relation labels in id order, entity names
    history.json         per-epoch loss / validation MRR
    training_curve.png   the same as a plot

``config.json`` is written last, so a folder without it is an unfinished write; every file is
written atomically and fsynced (:mod:`kgweave.atomic`). Loading validates ``config.json``
against :class:`ArtifactConfig` and its own checksums, then checks that the other files' hashes,
the id maps and the weight shapes all agree, and that no weight is NaN or infinite, before
anything is used. docs/artifact.md
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from safetensors import SafetensorError
from safetensors.torch import load, save_file

from kgweave import __version__, atomic, killpoints
from kgweave.data.dataset import IdMap, KGDataset
from kgweave.errors import ArtifactError, DivergedError, NotFoundError, echo
from kgweave.models import KGEModel, build_model, model_from_state

log = logging.getLogger(__name__)

FORMAT = "kgweave-model"
#: 2: ``config_sha256`` (config.json's own fields checksummed), every file in ``files``
#: (history and curve too), ``dataset.valid_fingerprint``. Version 1 still loads (its config is
#: validated but not covered by a checksum; a warning says so).
FORMAT_VERSION = 2
CONFIG = "config.json"
WEIGHTS = "model.safetensors"
ID_MAPS = "id_maps.json"
TRAIN = "graph.train"  # (T, 3) int64 in the weights file: the facts trained on
HELD_OUT = "graph.held_out"  # (H, 3) int64: a graph snapshot's facts held out, known
HISTORY = "history.json"
#: config.json's field of a version warm-started from another (an incremental update or a
#: refinement): its ``base_version``, the events it covers, its timings
UPDATE = "incremental"
CURVE = "training_curve.png"
#: config.json's field holding the sha256 of each of its other top-level fields
CONFIG_SHA256 = "config_sha256"


class _Section(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")


class ModelSection(_Section):
    """``config.json`` ``model``: enough to rebuild the model (extra options allowed)."""

    name: str
    num_entities: int = Field(ge=1)
    num_relations: int = Field(ge=2)
    dim: int = Field(ge=1)


class DatasetSection(_Section):
    """``config.json`` ``dataset``: what the model was trained and validated on."""

    name: str
    #: sha256 of the dataset (split files) or of the graph snapshot
    fingerprint: str
    num_entities: int = Field(ge=0)
    num_relations: int = Field(ge=0)
    train_triples: int = Field(ge=0)
    #: facts of the graph the model holds out (a graph snapshot's validation and test facts)
    #: and knows all the same (``graph.held_out``; absent before kgweave wrote them)
    held_out_known: int = Field(default=0, ge=0)
    #: sha256 of the validation triples (by label) that the validation metrics were measured
    #: on (format 2; None in format 1)
    valid_fingerprint: str | None = None
    valid_triples: int | None = Field(default=None, ge=0)


class ArtifactConfig(_Section):
    """The schema of ``config.json`` (checked on every load)."""

    format: Literal["kgweave-model"]
    format_version: int = Field(ge=1)
    kgweave_version: str
    created_at: str
    model: ModelSection
    training: dict[str, Any]
    dataset: DatasetSection
    metrics: dict[str, Any]
    relation_templates: dict[str, str] = Field(default_factory=dict)
    files: dict[str, str]
    config_sha256: dict[str, str] | None = None


@dataclass
class ModelArtifact:
    """A loaded model with everything needed to serve it."""

    path: Path
    model: KGEModel
    entities: IdMap
    relations: IdMap
    entity_names: list[str | None]
    #: (M, 3) every fact the version knows, relations without reciprocals: those it was
    #: trained on and, for a model of a graph snapshot, the graph's facts it held out
    known: torch.Tensor
    config: dict[str, Any]
    relation_texts: dict[str, str] = field(default_factory=dict)
    entity_descriptions: list[str | None] = field(default_factory=list)
    #: (T, 3) the facts its weights were trained on, when not all of ``known``
    trained_on: torch.Tensor | None = None

    @property
    def known_count(self) -> int:
        """M, the number of facts the version knows (a derived version's without making its
        fact list)."""
        return len(self.known)

    @property
    def training_facts(self) -> torch.Tensor:
        """(T, 3) the facts the weights were trained on (what features built from the
        graph's structure saw in training)."""
        return self.known if self.trained_on is None else self.trained_on

    @property
    def metrics(self) -> dict[str, Any]:
        return dict(self.config.get("metrics", {}))

    @property
    def version(self) -> str:
        """A short content id of this model (from the weights hash)."""
        return str(self.config["files"][WEIGHTS])[:12]


def known_facts(
    train: torch.Tensor, held_out: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """An artifact's ``known`` and ``trained_on`` from its training triples ``train`` (T, 3)
    and the graph's facts it held out ``held_out`` (H, 3): ``cat(train, held_out)`` and a view
    of its first T rows (no copy, and no ``trained_on``, when it held none out)."""
    if held_out is None or not len(held_out):
        return train, None
    known = torch.cat((train, held_out.to(train.dtype)))
    return known, known[: len(train)]


def triples_fingerprint(triples: torch.Tensor, dataset: KGDataset) -> str:
    """sha256 of ``triples`` (shape (M, 3) ids of ``dataset``) as a sorted set of labelled
    triples: the same triples give the same fingerprint whatever the id order or file order."""
    entities, relations = dataset.entities.labels, dataset.relations.labels
    rows = sorted(f"{entities[h]}\t{relations[r]}\t{entities[t]}\n" for h, r, t in triples.tolist())
    digest = hashlib.sha256()
    for row in rows:
        digest.update(row.encode("utf-8"))
    return digest.hexdigest()


def validation_triples_of(dataset: KGDataset, training: dict[str, Any]) -> torch.Tensor:
    """The validation triples a run with settings ``training`` measured its metrics on (the
    whole valid split, or the seeded ``valid_sample`` of it)."""
    from pydantic import ValidationError as ConfigError

    from kgweave.training import TrainConfig
    from kgweave.training.loop import validation_triples

    try:
        config = TrainConfig.model_validate(training)
    except ConfigError:  # not a TrainConfig (a hand-made artifact): the whole split
        return dataset.split("valid")
    return validation_triples(dataset, config)


def config_checksums(config: dict[str, Any]) -> dict[str, str]:
    """sha256 of each top-level field of an artifact's config (``config_sha256`` aside)."""
    return {k: atomic.sha256_json(v) for k, v in config.items() if k != CONFIG_SHA256}


def _check_finite(tensors: dict[str, torch.Tensor]) -> str | None:
    """The name of the first floating-point tensor holding NaN or inf, or None."""
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            return name
    return None


def save_artifact(
    folder: Path,
    model: KGEModel,
    dataset: KGDataset,
    training: dict[str, Any],
    metrics: dict[str, Any],
    history: list[dict[str, Any]] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``model`` trained on ``dataset`` as an artifact folder; returns the folder.

    Raises:
        DivergedError: a weight is NaN or infinite (nothing is written).
    """
    tensors = {k: v.detach().float().cpu().contiguous() for k, v in model.state_dict().items()}
    bad = _check_finite(tensors)
    if bad is not None:
        raise DivergedError(
            f"the model's {bad} holds NaN or infinite values: training diverged (lower the "
            "learning rate); no artifact was written"
        )
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CONFIG).unlink(missing_ok=True)  # the folder is "unfinished" until config.json
    atomic.fsync_dir(folder)
    tensors[TRAIN] = dataset.train.to(torch.int64).contiguous()
    held_out = dataset.known_held_out
    if held_out is not None and len(held_out):
        tensors[HELD_OUT] = held_out.to(torch.int64).contiguous()
    with atomic.atomic_path(folder / WEIGHTS) as tmp:
        save_file(tensors, str(tmp), metadata={"format": FORMAT})
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
    atomic.write_json(folder / ID_MAPS, id_maps)
    killpoints.reached("saving")  # (tests: a crash with the artifact half written)
    written = [WEIGHTS, ID_MAPS]
    if history is not None:
        atomic.write_text(folder / HISTORY, json.dumps(history, indent=1))
        from kgweave.training.curves import plot_training_curve

        # matplotlib picks the format from the name: plotted in place (covered by config.json,
        # which is written after it), then made durable
        plot_training_curve(history, folder / CURVE, f"{model.name} on {dataset.name}")
        atomic.fsync_file(folder / CURVE)
        written += [HISTORY, CURVE]
    files = {name: atomic.sha256_file(folder / name) for name in written}
    valid = validation_triples_of(dataset, training)
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
            "held_out_known": len(held_out) if held_out is not None else 0,
            "valid_fingerprint": triples_fingerprint(valid, dataset),
            "valid_triples": len(valid),
        },
        "metrics": metrics,
        "relation_templates": dict(dataset.relation_templates),
        "files": files,
        **(extra or {}),
    }
    config[CONFIG_SHA256] = config_checksums(config)
    atomic.write_text(folder / CONFIG, json.dumps(config, indent=2))
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
    config = read_config(folder)
    for name in (WEIGHTS, ID_MAPS):
        if name not in config["files"]:
            raise ArtifactError(f"{config_path}: field files lists no {name}")
    for name, expected in config["files"].items():
        if Path(name).name != name:
            raise ArtifactError(f"{config_path}: field files names {echo(name)}, not a file here")
        if name != WEIGHTS:
            atomic.verify_sha256(folder / name, expected)
    # the weights: read once, checked, and held in the process's own memory (not mapped from
    # the file, which a copy over it would truncate under the server)
    weights = atomic.read_verified(folder / WEIGHTS, config["files"][WEIGHTS])
    try:
        tensors = load(weights)
    except (SafetensorError, OSError) as exc:
        raise ArtifactError(f"{folder / WEIGHTS}: unreadable weights ({exc})") from exc
    del weights
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
        with torch.device("meta"):  # shapes only: the weights are the file's
            skeleton = build_model(model_config)
    except (TypeError, ValueError) as exc:
        raise ArtifactError(f"{config_path}: invalid model config ({exc})") from exc
    train = tensors.pop(TRAIN, torch.zeros(0, 3, dtype=torch.long))
    held_out = tensors.pop(HELD_OUT, None)
    for name, facts in ((TRAIN, train), (HELD_OUT, held_out)):
        if facts is not None and (facts.dim() != 2 or facts.shape[1] != 3):
            raise ArtifactError(f"{folder / WEIGHTS}: {name} has shape {tuple(facts.shape)}")
    known, trained_on = known_facts(train, held_out)
    expected_shapes = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
    actual_shapes = {k: tuple(v.shape) for k, v in tensors.items()}
    if expected_shapes != actual_shapes:
        raise ArtifactError(
            f"{folder / WEIGHTS}: weights {actual_shapes} do not match the config {expected_shapes}"
        )
    bad = _check_finite(tensors)
    if bad is not None:
        raise ArtifactError(f"{folder / WEIGHTS}: {bad} holds NaN or infinite values")
    model = model_from_state(model_config, tensors).to(device).eval()
    return ModelArtifact(
        path=folder,
        model=model,
        entities=entities,
        relations=relations,
        entity_names=names,
        known=known,
        trained_on=trained_on,
        config=config,
        relation_texts=dict(id_maps.get("relation_texts") or {}),
        entity_descriptions=descriptions,
    )


def read_config(folder: Path) -> dict[str, Any]:
    """``folder``'s ``config.json``, checked against its own checksums (format 2) and the
    :class:`ArtifactConfig` schema.

    Raises:
        ArtifactError: unreadable, edited after it was written, or not of the schema; the
            message names the file and the field.
    """
    path = folder / CONFIG
    config = atomic.read_json(path)
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise ArtifactError(f"{path}: not a kgweave model config")
    version = config.get("format_version")
    if isinstance(version, int) and version > FORMAT_VERSION:
        raise ArtifactError(
            f"{folder}: format version {version} is newer than this kgweave "
            f"({__version__}) understands; upgrade kgweave"
        )
    if isinstance(version, int) and version >= 2:
        _verify_config_checksums(path, config)
    try:
        ArtifactConfig.model_validate(config)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"])
        raise ArtifactError(
            f"{path}: field {where}: {error['msg']} (got {_short(error.get('input'))})"
        ) from None
    if version == 1:
        log.warning(
            "%s: format version 1, whose config.json is not covered by a checksum; retrain or "
            "re-save it to get format %d",
            folder,
            FORMAT_VERSION,
        )
    return config


def _verify_config_checksums(path: Path, config: dict[str, Any]) -> None:
    recorded = config.get(CONFIG_SHA256)
    if not isinstance(recorded, dict):
        raise ArtifactError(f"{path}: field {CONFIG_SHA256} is missing or not an object")
    actual = config_checksums(config)
    for name in sorted(set(recorded) | set(actual)):
        if name not in actual:
            raise ArtifactError(f"{path}: field {name} is missing (it was written, then removed)")
        if recorded.get(name) != actual[name]:
            raise ArtifactError(
                f"{path}: field {name} does not match its checksum ({CONFIG_SHA256}): the file "
                "was edited or is corrupt"
            )


def _short(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
