"""Cold start: embeddings for entities that have text but no edges yet.

A :class:`TextProjection` maps text vectors (from
:class:`~kgweave.language.components.encoder.TextEncoder`)
into the KGE model's entity space. It is fitted by closed-form ridge regression on the entities
that have both a text vector and a trained embedding, and saved as ``projection.safetensors``
plus ``projection.json`` (no pickles).

:func:`add_cold_entities` then gives new entities (label, name, description) projected
embedding rows and returns a *new* :class:`~kgweave.artifact.ModelArtifact` with extended id maps
and an extended entity table, so a :class:`~kgweave.predict.LinkPredictor` built on it ranks
the new entities as heads and tails at once. The original artifact is left untouched; the new
one is in memory (``save_artifact`` can write it like any other, known triples unchanged).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from kgweave import atomic
from kgweave.artifact import ModelArtifact
from kgweave.data.dataset import IdMap
from kgweave.errors import (
    ArtifactError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
)
from kgweave.language.components.encoder import entity_texts
from kgweave.models import KGEModel, copy_model

if TYPE_CHECKING:
    from kgweave.language.components.encoder import TextEncoder

FORMAT = "kgweave-text-projection"
FORMAT_VERSION = 1
WEIGHTS = "projection.safetensors"
CONFIG = "projection.json"


@dataclass
class TextProjection:
    """An affine map from text space to KGE entity space: ``y = x @ weight + bias``.

    Attributes:
        weight: shape (Dt, Dk).
        bias: shape (Dk,).
        info: JSON-able facts about the fit (sizes, l2, fit error, encoder name).
    """

    weight: torch.Tensor
    bias: torch.Tensor
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def text_dim(self) -> int:
        return int(self.weight.shape[0])

    @property
    def kge_dim(self) -> int:
        return int(self.weight.shape[1])

    @classmethod
    def fit(
        cls, text_vecs: torch.Tensor, kge_vecs: torch.Tensor, l2: float = 1.0
    ) -> TextProjection:
        """Ridge regression (closed form, float64), bias unpenalised (data centred first).

        Solves in the smaller of the two spaces: the primal ``(X'X + l2 I)^-1 X'Y`` when there
        are more entities than text dimensions, the dual ``X'(XX' + l2 I)^-1 Y`` otherwise; both
        give the same weights.

        Args:
            text_vecs: shape (N, Dt).
            kge_vecs: shape (N, Dk), the trained embeddings of the same N entities.
            l2: ridge penalty (> 0); larger pulls projections towards the mean embedding.
        """
        if text_vecs.dim() != 2 or kge_vecs.dim() != 2 or len(text_vecs) != len(kge_vecs):
            raise InvalidArgumentError(
                f"text vectors {tuple(text_vecs.shape)} and KGE vectors "
                f"{tuple(kge_vecs.shape)} must be (N, Dt) and (N, Dk) for the same N"
            )
        if len(text_vecs) < 2:
            raise InvalidArgumentError("fitting a projection needs at least 2 entities")
        if l2 <= 0:
            raise InvalidArgumentError(f"l2 must be positive, got {l2}")
        x = text_vecs.detach().to(torch.float64).cpu()
        y = kge_vecs.detach().to(torch.float64).cpu()
        x_mean, y_mean = x.mean(0), y.mean(0)
        xc, yc = x - x_mean, y - y_mean
        n, dt = xc.shape
        if n >= dt:
            gram = xc.T @ xc + l2 * torch.eye(dt, dtype=torch.float64)  # (Dt, Dt)
            weight = torch.linalg.solve(gram, xc.T @ yc)  # (Dt, Dk)
        else:
            kernel = xc @ xc.T + l2 * torch.eye(n, dtype=torch.float64)  # (N, N)
            weight = xc.T @ torch.linalg.solve(kernel, yc)  # (Dt, Dk)
        bias = y_mean - x_mean @ weight  # (Dk,)
        residual = yc - xc @ weight
        fit_r2 = 1.0 - float(residual.pow(2).sum() / yc.pow(2).sum().clamp_min(1e-12))
        info = {"num_fitted": n, "text_dim": dt, "kge_dim": int(y.shape[1]), "l2": l2}
        info["train_r2"] = round(fit_r2, 6)
        return cls(weight.float(), bias.float(), info)

    def project(self, text_vecs: torch.Tensor) -> torch.Tensor:
        """Map text vectors into entity space.

        Args:
            text_vecs: shape (M, Dt).
        Returns:
            shape (M, Dk), float32 on the projection's device.
        """
        if text_vecs.dim() != 2 or text_vecs.shape[1] != self.text_dim:
            raise InvalidArgumentError(
                f"text vectors of shape {tuple(text_vecs.shape)}: expected (M, {self.text_dim}); "
                "was the projection fitted with another text encoder?"
            )
        x = text_vecs.detach().to(self.weight.device, torch.float32)
        return x @ self.weight + self.bias

    def save(self, folder: Path) -> Path:
        """Write ``projection.safetensors`` and ``projection.json`` (last) into ``folder``."""
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {
            "weight": self.weight.detach().float().cpu().contiguous(),
            "bias": self.bias.detach().float().cpu().contiguous(),
        }
        with atomic.atomic_path(folder / WEIGHTS) as tmp:
            save_file(tensors, str(tmp), metadata={"format": FORMAT})
        config = {"format": FORMAT, "format_version": FORMAT_VERSION, **self.info}
        atomic.write_text(folder / CONFIG, json.dumps(config, indent=2))
        return folder

    @classmethod
    def load(cls, folder: Path) -> TextProjection:
        """Read a projection written by :meth:`save`.

        Raises:
            NotFoundError: no projection in ``folder``.
            ArtifactError: unreadable or inconsistent files.
        """
        if not (folder / CONFIG).is_file():
            raise NotFoundError(f"{folder} holds no text projection (no {CONFIG})")
        try:
            config = json.loads((folder / CONFIG).read_text(encoding="utf-8"))
            tensors = load_file(str(folder / WEIGHTS))
        except (OSError, ValueError, SafetensorError) as exc:
            raise ArtifactError(f"{folder}: unreadable text projection ({exc})") from exc
        if not isinstance(config, dict) or config.get("format") != FORMAT:
            raise ArtifactError(f"{folder / CONFIG}: not a kgweave text projection")
        if config.get("format_version", 0) > FORMAT_VERSION:
            raise ArtifactError(f"{folder / CONFIG}: newer format than this kgweave reads")
        weight, bias = tensors.get("weight"), tensors.get("bias")
        if (
            weight is None
            or bias is None
            or weight.dim() != 2
            or tuple(bias.shape) != (weight.shape[1],)
        ):
            raise ArtifactError(f"{folder / WEIGHTS}: expected weight (Dt, Dk) and bias (Dk,)")
        info = {k: v for k, v in config.items() if k not in ("format", "format_version")}
        return cls(weight, bias, info)


def artifact_entity_texts(artifact: ModelArtifact) -> list[str]:
    """Each entity's text (name: description) in id order."""
    return entity_texts(
        artifact.entity_names,
        artifact.entity_descriptions or None,
        artifact.entities.labels,
    )


def fit_projection(
    artifact: ModelArtifact,
    encoder: TextEncoder,
    l2: float = 1.0,
    batch_size: int = 64,
    progress: bool = False,
) -> TextProjection:
    """Fit a projection on every entity of ``artifact`` that has a name or description.

    Returns the projection with ``info["encoder"]`` naming the encoder it expects.
    """
    texts = artifact_entity_texts(artifact)
    has_text = [
        i
        for i, (name, desc) in enumerate(
            zip(
                artifact.entity_names,
                _padded(artifact.entity_descriptions, len(texts)),
                strict=True,
            )
        )
        if name or desc
    ]
    if len(has_text) < 2:
        raise FailedPreconditionError(
            "the model has (almost) no entity names or descriptions to fit a text projection on"
        )
    vectors = encoder.encode([texts[i] for i in has_text], batch_size, progress)
    kge = artifact.model.entity.weight.detach()[torch.tensor(has_text)].cpu()
    projection = TextProjection.fit(vectors, kge, l2)
    projection.info["encoder"] = encoder.spec
    projection.info["model_version"] = artifact.version
    return projection


def _padded(values: Sequence[str | None], n: int) -> list[str | None]:
    return list(values) + [None] * (n - len(values))


def extend_model(model: KGEModel, rows: torch.Tensor) -> KGEModel:
    """A copy of ``model`` with ``rows`` appended to its entity table.

    Args:
        rows: shape (M, real_width * dim), the new entities' embeddings.
    Returns:
        a new model with ``num_entities + M`` entities, in eval mode on the same device.
    """
    width = model.entity.weight.shape[1]
    if rows.dim() != 2 or rows.shape[1] != width:
        raise InvalidArgumentError(
            f"new entity rows of shape {tuple(rows.shape)}: expected (M, {width})"
        )
    old = model.num_entities
    tables = {
        key: torch.cat((tensor, rows.to(tensor.device, tensor.dtype)), dim=0)
        for key, tensor in model.state_dict().items()
        if key.startswith("entity.") and tensor.dim() >= 1 and tensor.shape[0] == old
    }
    return copy_model(model, tables, num_entities=old + len(rows)).eval()


def add_cold_entities(
    artifact: ModelArtifact,
    labels: Sequence[str],
    names: Sequence[str | None],
    descriptions: Sequence[str | None] | None,
    encoder: TextEncoder,
    projection: TextProjection,
) -> ModelArtifact:
    """A new artifact that also knows ``labels``: text-only entities with projected embeddings.

    Args:
        labels: M new entity ids (not in the artifact yet, no duplicates).
        names: M readable names (None: the label).
        descriptions: M descriptions, or None.
        encoder: the text encoder the projection was fitted with.
        projection: maps the encoder's vectors into this model's entity space.
    Returns:
        a :class:`ModelArtifact` with ``N + M`` entities (the new ones last, ids ``N..N+M-1``),
        the same relations and known triples, and ``config["cold_entities"]`` listing the new
        labels. The input artifact is not modified.
    """
    if len(names) != len(labels) or (descriptions is not None and len(descriptions) != len(labels)):
        raise InvalidArgumentError("give one name (and description) per new entity label")
    if not labels:
        raise InvalidArgumentError("no new entities given")
    clash = [label for label in labels if label in artifact.entities]
    if clash:
        raise InvalidArgumentError(f"entities already in the model: {', '.join(clash[:5])}")
    if len(set(labels)) != len(labels):
        raise InvalidArgumentError("duplicate new entity labels")
    width = artifact.model.entity.weight.shape[1]
    if projection.kge_dim != width:
        raise FailedPreconditionError(
            f"the projection maps into {projection.kge_dim} dimensions but the model's entities "
            f"have {width}: fit a projection for this model"
        )
    vectors = encoder.encode(entity_texts(names, descriptions, labels))  # (M, Dt)
    rows = projection.project(vectors)  # (M, Dk)
    model = extend_model(artifact.model, rows)
    config = copy.deepcopy(artifact.config)
    config["model"] = model.config()
    config["cold_entities"] = list(config.get("cold_entities", [])) + list(labels)
    n = len(artifact.entities)
    return ModelArtifact(
        path=artifact.path,
        model=model,
        entities=IdMap([*artifact.entities.labels, *labels]),
        relations=artifact.relations,
        entity_names=[*artifact.entity_names, *names],
        known=artifact.known,
        trained_on=artifact.trained_on,
        config=config,
        relation_texts=dict(artifact.relation_texts),
        entity_descriptions=[
            *_padded(artifact.entity_descriptions, n),
            *(descriptions if descriptions is not None else [None] * len(labels)),
        ],
    )
