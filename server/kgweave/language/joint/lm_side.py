"""KG -> LM: which causal LM a joint run trains, how its trained part is stored in the
artifact's ``language/`` folder, and how it is loaded back.

- ``small``: a GPT-2-style model trained from scratch with a tokenizer trained on the graph's
  text; stored whole (``model.safetensors``, ``config.json``, tokenizer files).
- a pretrained LM (default: the packaged SmolLM2-135M-Instruct) with ``lm_lora``: LoRA adapters
  on its attention projections (:mod:`kgweave.language.components.lora`), base weights frozen;
  stored as ``adapter_model.safetensors`` + ``adapter_config.json``, the base named by identity in
  ``joint.json`` (``base_model``), never copied.
- a pretrained LM without ``lm_lora``: every weight fine-tuned, stored whole like the small one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from kgweave.data.dataset import KGDataset
from kgweave.errors import ArtifactError
from kgweave.language.components.lm import (
    build_small_lm,
    load_causal_lm,
    load_lm,
    save_lm,
)
from kgweave.language.components.lora import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    add_lora,
    base_identity,
    check_loaded_base,
    describe,
    load_adapters,
    locate_base,
    save_adapters,
)
from kgweave.language.components.pretrained import DEFAULT_LM, SMALL_LM, resolve_language_model
from kgweave.language.components.tokenizer import train_tokenizer
from kgweave.language.features.verbalize import Verbalizer
from kgweave.language.joint.config import JointConfig
from kgweave.settings import Settings

#: the learning rates used when ``lm_lr`` is unset
SMALL_LR, LORA_LR, FULL_LR = 2e-3, 5e-4, 5e-5


def lm_spec(config: JointConfig, settings: Settings) -> str:
    """The LM a joint run trains: the config's, else the setting's, else the default."""
    return config.language_model or settings.language_model or DEFAULT_LM


def prepare_lm(
    config: JointConfig,
    settings: Settings,
    dataset: KGDataset,
    verbalizer: Verbalizer,
    texts: list[str],
    device: torch.device,
    progress: bool = True,
) -> tuple[Any, Any, dict[str, Any], float]:
    """The LM to train, its tokenizer, its base identity and its learning rate.

    A packaged LM that is not in the data folder yet is fetched first (a progress line on
    stderr) unless ``settings.offline``; then the error says to run ``kgweave lm fetch``.
    """
    spec = lm_spec(config, settings)
    if spec == SMALL_LM:
        names = [verbalizer.name(e) for e in dataset.entities.labels]
        descriptions = [
            s for e in dataset.entities.labels if (s := dataset.entity_descriptions.get(e))
        ]
        tokenizer = train_tokenizer([*texts, *names, *descriptions], config.vocab_size)
        lm = build_small_lm(
            tokenizer,
            n_layer=config.lm_layers,
            n_embd=config.lm_width,
            n_head=config.lm_heads,
            n_positions=max(config.lm_max_length, 16),
            seed=config.seed,
        )
        return lm, tokenizer, {"kind": SMALL_LM}, config.lm_lr or SMALL_LR
    resolved = resolve_language_model(
        spec, settings.data_dir, fetch=not settings.offline, log=progress
    )
    lm, tokenizer = load_causal_lm(resolved, device, offline=settings.offline or None)
    identity = base_identity(spec, resolved, lm)
    if not config.lm_lora:
        return lm, tokenizer, identity, config.lm_lr or FULL_LR
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)  # LoRA's A matrices are initialised at random
        adapted = add_lora(
            lm, config.lora_rank, config.lora_alpha, config.lora_dropout, config.lora_mlp
        )
    return adapted, tokenizer, identity, config.lm_lr or LORA_LR


def uses_adapters(lm: Any) -> bool:
    """Whether ``lm`` is a base model wrapped in peft adapters."""
    return hasattr(lm, "peft_config")


def save_language_model(lm: Any, tokenizer: Any, language: Path, identity: dict[str, Any]) -> None:
    """Write the trained LM part into ``language/``: the adapters only for a LoRA-tuned
    pretrained LM (its base is ``identity``), else the whole model and tokenizer."""
    if uses_adapters(lm):
        save_adapters(lm, language, describe(identity))
    else:
        save_lm(lm, tokenizer, language)


def load_language_model(
    language: Path,
    files: dict[str, Any],
    identity: dict[str, Any] | None,
    device: torch.device,
    data_dir: Path,
    fetch: bool = False,
    offline: bool | None = None,
) -> tuple[Any, Any]:
    """The LM of a joint artifact, checksums verified by the caller.

    Raises:
        ArtifactError: the folder holds neither a whole LM nor adapters, or the adapters'
            base is another model.
        FailedPreconditionError: the adapters' base is not on this machine.
    """
    if ADAPTER_WEIGHTS in files:
        if ADAPTER_CONFIG not in files or not isinstance(identity, dict):
            raise ArtifactError(
                f"{language}: adapters without {ADAPTER_CONFIG} or a base model identity"
            )
        base, tokenizer = load_causal_lm(
            locate_base(identity, data_dir, fetch), device, offline=offline
        )
        check_loaded_base(identity, base)
        return load_adapters(base, language).to(device), tokenizer
    for required in ("model.safetensors", "config.json", "tokenizer.json"):
        if required not in files:
            raise ArtifactError(f"{language}: holds no language model (no {required} listed)")
    return load_lm(language, device)


def plot_lm_loss(step_losses: list[float], history: list[dict[str, float]], path: Path) -> Path:
    """The LM's training loss per step (and per epoch) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    few = len(step_losses) < 50  # a point per step where a line would hide them
    ax.plot(range(1, len(step_losses) + 1), step_losses, color="tab:blue", lw=0.8,
            marker="." if few else None, label="step")  # fmt: skip
    if history and step_losses:
        every = len(step_losses) / len(history)
        ax.plot(
            [every * (i + 1) for i in range(len(history))],
            [row["loss"] for row in history],
            color="tab:orange",
            marker="o",
            label="epoch mean",
        )
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("next-token cross-entropy")
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title("language model training loss")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
