"""A joint model's language side carried into an incremental update of it.

An update (:mod:`kgweave.changes.incremental`) trains the KGE weights for seconds; the
language side of a joint model (its LM and adapters, the entity fusion, the text vectors and
projections, the fitted text-fusion and completion weights) took minutes to train and does not
go stale from a few new facts. :func:`carry_language` writes it into the update's folder, so a
joint model stays joint (``kgweave complete`` and the text fusion go on working) and its
changes are trained within seconds like any model's:

- every file the update does not change is hard-linked (copied where the file system cannot
  link): the LM, the adapters, the completion weights; their checksums are the base's;
- entities the update adds get rows: their text vectors (the entity text, looked up in the
  text-vector cache the change applier filled for their cold start, else encoded; the
  encoder stays loaded in the updater), a structural row that keeps the base's decomposition
  (``structural + P · text`` = the update's trained row) and a fusion-table row (the update's
  row, as joint training copies the KGE table);
- relations the update adds get text-fusion weights: the mean of the fitted ones (forward
  and reciprocal apart);
- ``joint.json`` is written last with the new checksums and a ``carried`` record (base
  version, rows added); without it the part never loads.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load, save_file

from kgweave import atomic
from kgweave.data.dataset import KGDataset
from kgweave.errors import ArtifactError, FailedPreconditionError, echo
from kgweave.language.joint.config import (
    FUSION_WEIGHTS,
    JOINT_CONFIG,
    JOINT_FORMAT,
    LANGUAGE_DIR,
    TEXT_FUSION,
    TEXT_WEIGHTS,
)
from kgweave.models import KGEModel
from kgweave.settings import Settings

#: the text encoder of this process (an updater lives on between updates), by spec
_ENCODERS: dict[str, Any] = {}


def carry_language(
    base: Path,
    version: str,
    base_entities: int,
    out: Path,
    model: KGEModel,
    dataset: KGDataset,
    settings: Settings,
) -> dict[str, Any]:
    """Write the language side of the joint artifact in ``base`` (registry ``version``, of
    ``base_entities`` entities) into ``out``, whose KGE part (``model``, trained on
    ``dataset``) is written already, with rows for the entities and relations it has beyond
    ``base``'s (an update's new ones come last). Returns what was carried.

    Raises:
        ArtifactError: ``base``'s language side is damaged (a checksum, a shape).
        FailedPreconditionError: new entities need text vectors of another width than the
            configured text encoder gives.
    """
    source, target = base / LANGUAGE_DIR, out / LANGUAGE_DIR
    joint = atomic.read_json(source / JOINT_CONFIG)
    if not isinstance(joint, dict) or joint.get("format") != JOINT_FORMAT:
        raise ArtifactError(f"{source / JOINT_CONFIG}: not a kgweave joint config")
    files: dict[str, str] = dict(joint.get("files") or {})
    for name in files:
        if Path(name).name != name:
            raise ArtifactError(f"{source / JOINT_CONFIG}: names {echo(name)}, not a file there")

    def read(name: str) -> bytes:
        """One of the base's files, checked against its checksum (read once)."""
        if name not in files:
            raise ArtifactError(f"{source / JOINT_CONFIG}: does not list {name}")
        return atomic.read_verified(source / name, files[name])

    if target.exists():  # an earlier try's part: never half of two
        shutil.rmtree(target)
    target.mkdir(parents=True)
    n_old, n_new = base_entities, len(dataset.entities) - base_entities
    fitted = None
    if TEXT_FUSION in files:
        fitted = _read_fusion(source / TEXT_FUSION, read(TEXT_FUSION))
    r_new = dataset.num_relations - len(fitted["weights"]) // 2 if fitted is not None else 0
    written: list[str] = []
    if n_new > 0:
        text = load(read(TEXT_WEIGHTS))
        if text["text_vectors"].shape[0] != n_old:
            raise ArtifactError(f"{source / TEXT_WEIGHTS}: not {n_old} entities' text vectors")
        rows = model.entity.weight.detach().float().cpu()[n_old:]  # (M, De): trained rows
        labels = dataset.entities.labels[n_old:]
        vectors = _text_vectors(dataset, labels, settings)  # (M, Dt)
        if vectors.shape[1] != text["text_vectors"].shape[1]:
            raise FailedPreconditionError(
                f"the joint model's text vectors have {text['text_vectors'].shape[1]} "
                f"dimensions but the text encoder {settings.text_encoder} gives "
                f"{vectors.shape[1]}: configure the encoder it was trained with"
            )
        projection = text["text_projection.weight"]  # (De, Dt)
        text["text_vectors"] = torch.cat((text["text_vectors"], vectors))
        text["structural"] = torch.cat((text["structural"], rows - vectors @ projection.T))
        fusion = load(read(FUSION_WEIGHTS))
        fusion["entities.weight"] = torch.cat((fusion["entities.weight"], rows))
        _save_tensors(target / TEXT_WEIGHTS, text)
        _save_tensors(target / FUSION_WEIGHTS, fusion)
        written += [TEXT_WEIGHTS, FUSION_WEIGHTS]
    if fitted is not None and r_new > 0:
        widened = _with_relations(fitted, r_new)
        atomic.write_text(target / TEXT_FUSION, json.dumps(widened, indent=1))
        written.append(TEXT_FUSION)
    for name in files:
        if name in written:
            files[name] = atomic.sha256_file(target / name)
        else:
            _link(source / name, target / name)
    atomic.fsync_dir(target)
    joint["files"] = files
    joint["carried"] = {
        "base_version": version,
        "new_entities": max(n_new, 0),
        "new_relations": max(r_new, 0),
    }
    atomic.write_json(target / JOINT_CONFIG, joint, indent=2)  # last: the part is whole
    return dict(joint["carried"])


def _text_vectors(dataset: KGDataset, labels: list[str], settings: Settings) -> torch.Tensor:
    """(M, Dt) the text vectors of entities ``labels`` of ``dataset`` (cached by text)."""
    from kgweave.language.components.encoder import TextEncoder, entity_texts
    from kgweave.language.features.text_vectors import cached_text_vectors

    encoder = _ENCODERS.get(settings.text_encoder)
    if encoder is None:
        encoder = _ENCODERS[settings.text_encoder] = TextEncoder.from_settings(settings)
    texts = entity_texts(
        [dataset.entity_names.get(e) for e in labels],
        [dataset.entity_descriptions.get(e) for e in labels],
        labels,
    )
    return cached_text_vectors(texts, encoder, settings.text_vectors_dir).float()


def _with_relations(fitted: dict[str, Any], added: int) -> dict[str, Any]:
    """The fitted text fusion ``fitted`` with weights for ``added`` new relations: rows by
    reciprocal id (forward ``0..R-1``, reciprocal ``R..2R-1``), each new row the mean of the
    fitted rows of its direction."""
    weights = torch.tensor(fitted["weights"], dtype=torch.float64)  # (2R, F)
    forward, backward = weights.chunk(2)
    rows = [forward, forward.mean(0).expand(added, -1), backward,
            backward.mean(0).expand(added, -1)]  # fmt: skip
    return {**fitted, "weights": [[round(float(x), 6) for x in row] for row in torch.cat(rows)]}


def _read_fusion(path: Path, data: bytes) -> dict[str, Any]:
    """The fitted text fusion of ``path`` from its bytes ``data``."""
    try:
        fitted = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{path}: unreadable ({exc})") from exc
    weights = fitted.get("weights") if isinstance(fitted, dict) else None
    if not isinstance(weights, list) or len(weights) % 2:
        raise ArtifactError(f"{path}: not a kgweave text fusion")
    return dict(fitted)


def _save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    with atomic.atomic_path(path) as tmp:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp),
                  metadata={"format": JOINT_FORMAT})  # fmt: skip


def _link(source: Path, target: Path) -> None:
    """``target`` the same bytes as ``source``: a hard link (a version's files are never
    written again once made), or a copy where the file system cannot link."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)
        atomic.fsync_file(target)
