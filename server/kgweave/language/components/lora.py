"""LoRA adapters (``peft``) on a pretrained causal LM, and the identity of the base model they
belong to.

Fine-tuning a pretrained LM on the graph's text trains small low-rank adapters on the
attention projections (optionally the MLP's too) and leaves the base weights frozen
(:func:`add_lora`). A model artifact then holds the adapters only
(``adapter_model.safetensors`` + ``adapter_config.json``, :func:`save_adapters`) and names its
base by identity (:func:`base_identity`): the packaged LM's name and GGUF SHA-256, a folder's
weights SHA-256, a ``.gguf`` file's SHA-256, or a Hugging Face id and revision. Loading finds the
base again and refuses one whose identity differs (:func:`locate_base`, :func:`load_adapters`).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from torch import nn

from kgweave.atomic import read_json, sha256_file
from kgweave.errors import ArtifactError, FailedPreconditionError, InvalidArgumentError, echo
from kgweave.language.components.pretrained import (
    MANIFEST,
    PACKAGED_LMS,
    packaged_folder,
    resolve_language_model,
)

ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"

#: words in a projection's parent module name that mark it as attention or MLP
_ATTENTION = ("attn", "attention")
_MLP = ("mlp", "feed_forward", "ffn")


def lora_targets(lm: nn.Module, mlp: bool = False) -> list[str]:
    """The ``parent.child`` names of the attention projections (and with ``mlp`` the MLP's)
    inside the LM's transformer blocks: ``self_attn.q_proj``... for Llama, ``attn.c_attn``...
    for GPT-2.

    Raises:
        InvalidArgumentError: the blocks hold no such projection.
    """
    from transformers.pytorch_utils import Conv1D

    from kgweave.language.joint.entity_lm import transformer_blocks

    names: set[str] = set()
    for name, module in transformer_blocks(lm)[0].named_modules():
        parts = name.split(".")
        if len(parts) < 2 or not isinstance(module, nn.Linear | Conv1D):
            continue
        parent = parts[-2].lower()
        if any(w in parent for w in _ATTENTION) or (mlp and any(w in parent for w in _MLP)):
            names.add(".".join(parts[-2:]))
    if not names:
        raise InvalidArgumentError(
            f"no attention projections found in {type(lm).__name__}'s blocks for LoRA"
        )
    return sorted(names)


def add_lora(
    lm: nn.Module, rank: int = 8, alpha: int = 16, dropout: float = 0.05, mlp: bool = False
) -> Any:
    """Wrap ``lm`` in LoRA adapters (``peft``): base weights frozen, adapters trainable.

    Returns:
        a ``peft.PeftModel`` (called like the LM; ``.logits`` as before).
    """
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=rank,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=lora_targets(lm, mlp),
        bias="none",
        task_type="CAUSAL_LM",
    )
    return get_peft_model(lm, config)


def save_adapters(peft_lm: Any, folder: Path, base_label: str) -> list[Path]:
    """Write the adapters (safetensors) and their config into ``folder``; ``base_label`` is
    recorded as the config's base model (kgweave checks the base by its identity, not this)."""
    folder.mkdir(parents=True, exist_ok=True)
    for config in peft_lm.peft_config.values():
        config.base_model_name_or_path = base_label
    # no embedding layers are adapted: peft need not look the base up to decide
    peft_lm.save_pretrained(str(folder), safe_serialization=True, save_embedding_layers=False)
    (folder / "README.md").unlink(missing_ok=True)  # peft's model card template
    written = [folder / ADAPTER_WEIGHTS, folder / ADAPTER_CONFIG]
    if not all(p.is_file() for p in written):
        raise ArtifactError(f"{folder}: peft wrote no {ADAPTER_WEIGHTS}")
    return written


def load_adapters(base: nn.Module, folder: Path) -> Any:
    """The base LM with the adapters of ``folder`` (frozen, eval mode).

    Raises:
        ArtifactError: the adapters do not fit this base (names or shapes).
    """
    from peft import PeftModel

    try:
        model = PeftModel.from_pretrained(base, str(folder), is_trainable=False)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ArtifactError(
            f"{folder / ADAPTER_WEIGHTS}: do not fit the base LM ({first})"
        ) from exc
    return model.eval()


def merged_for_inference(lm: Any) -> Any:
    """``lm`` ready to score: LoRA adapters (if any) merged into the base weights, eval mode.

    One matmul per projection instead of three: about twice as fast on a CPU, log-probabilities
    within ~1e-5 of the unmerged model's. The merge changes the base weights in place, so
    save the adapters first; a model without adapters is returned as it is (in eval mode).
    """
    if hasattr(lm, "merge_and_unload"):
        lm = lm.merge_and_unload()
    return lm.eval()


# ---- the base model's identity


def weights_digest(folder: Path) -> str:
    """SHA-256 of a model folder's safetensors weights (of the one file, or of the sorted
    ``name:sha256`` lines of several shards)."""
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise ArtifactError(f"{folder}: no .safetensors weights")
    if len(files) == 1:
        return sha256_file(files[0])
    lines = "".join(f"{p.name}:{sha256_file(p)}\n" for p in files)
    return hashlib.sha256(lines.encode()).hexdigest()


def base_identity(spec: str, resolved: str, lm: Any) -> dict[str, Any]:
    """What names the base LM an artifact's adapters were trained on.

    Args:
        spec: the ``language_model`` as configured (a packaged name, folder, file or hub id).
        resolved: what was loaded (:func:`resolve_language_model`'s answer).
        lm: the loaded model (its config gives the shape and a hub revision).
    Returns:
        ``kind`` (``packaged``, ``folder``, ``gguf`` or ``hub``), the fields that identify it,
        and ``model_type`` / ``hidden_size`` / ``vocab_size`` for messages.
    """
    path = Path(resolved).expanduser()
    config = getattr(lm, "config", None)
    shape = {
        "model_type": getattr(config, "model_type", None),
        "hidden_size": getattr(config, "hidden_size", None),
        "vocab_size": getattr(config, "vocab_size", None),
    }
    if path.is_dir() and (path / MANIFEST).is_file():
        info = read_json(path / MANIFEST)
        return {
            "kind": "packaged",
            "name": info["name"],
            "gguf_sha256": info["gguf_sha256"],
            "folder": str(path.resolve()),
            **shape,
        }
    if path.is_file() or (path.is_dir() and not (path / "config.json").is_file()):
        gguf = path if path.is_file() else sorted(path.glob("*.gguf"))[0]
        return {"kind": "gguf", "path": str(gguf.resolve()), "sha256": sha256_file(gguf), **shape}
    if path.is_dir():
        return {
            "kind": "folder",
            "path": str(path.resolve()),
            "sha256": weights_digest(path),
            **shape,
        }
    revision = getattr(config, "_commit_hash", None)
    return {"kind": "hub", "id": spec, "revision": revision, **shape}


def describe(identity: dict[str, Any]) -> str:
    """One line naming a base identity."""
    kind = identity.get("kind")
    if kind == "packaged":
        return f"{identity.get('name')} (GGUF sha256 {str(identity.get('gguf_sha256'))[:12]}...)"
    if kind in ("folder", "gguf"):
        return f"{identity.get('path')} (sha256 {str(identity.get('sha256'))[:12]}...)"
    if kind == "hub":
        return f"{identity.get('id')} (revision {identity.get('revision')})"
    return str(identity)


def locate_base(identity: dict[str, Any], data_dir: Path, fetch: bool = False) -> str:
    """Where to load the base LM named by ``identity`` from, checked against it.

    A packaged LM is looked for in ``data_dir`` (fetched there when ``fetch``), then in the
    folder it was trained from.

    Raises:
        ArtifactError: the base found is another model (checksum or revision differs), or the
            identity is unreadable.
        FailedPreconditionError: the base is not on this machine (the message says how to get
            it).
    """
    kind = identity.get("kind")
    if kind == "packaged":
        name = str(identity.get("name"))
        if name not in PACKAGED_LMS:
            raise ArtifactError(f"the adapters' base {name} is not a packaged LM kgweave knows")
        folder = packaged_folder(name, data_dir)
        recorded = Path(str(identity.get("folder", "")))
        if folder is None and (recorded / MANIFEST).is_file():
            folder = recorded
        if folder is None:
            folder = Path(resolve_language_model(name, data_dir, fetch=fetch))
        found = read_json(folder / MANIFEST).get("gguf_sha256")
        if found != identity.get("gguf_sha256"):
            raise ArtifactError(
                f"the adapters were trained on {describe(identity)}, but {folder} holds GGUF "
                f"sha256 {str(found)[:12]}...: another base model"
            )
        return str(folder)
    if kind in ("folder", "gguf"):
        path = Path(str(identity.get("path")))
        if not path.exists():
            raise FailedPreconditionError(
                f"the adapters' base LM {path} is not on this machine: put the same model there"
            )
        found = weights_digest(path) if kind == "folder" else sha256_file(path)
        if found != identity.get("sha256"):
            raise ArtifactError(
                f"the adapters were trained on {describe(identity)}, but {path} now holds "
                f"weights with sha256 {found[:12]}...: another base model"
            )
        return str(path)
    if kind == "hub":
        return str(identity.get("id"))
    raise ArtifactError(f"unknown base model identity {echo(str(identity))}")


def check_loaded_base(identity: dict[str, Any], lm: Any) -> None:
    """After loading: a hub model's revision, and every base's shape, must match ``identity``.

    Raises:
        ArtifactError: they differ.
    """
    config = getattr(lm, "config", None)
    revision = getattr(config, "_commit_hash", None)
    stored = identity.get("revision")
    if identity.get("kind") == "hub" and stored and revision and revision != stored:
        raise ArtifactError(
            f"the adapters were trained on {describe(identity)}, but the cached "
            f"{identity.get('id')} is revision {revision}: another base model"
        )
    for key in ("model_type", "hidden_size", "vocab_size"):
        want, have = identity.get(key), getattr(config, key, None)
        if want is not None and have is not None and want != have:
            raise ArtifactError(
                f"the adapters were trained on {describe(identity)} ({key} {want}), but the "
                f"base loaded has {key} {have}: another base model"
            )
