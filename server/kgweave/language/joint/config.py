"""Joint training's settings (``JointConfig``, stored in ``language/joint.json``) and the
names of the language side's files in a model folder."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from kgweave.training.config import TrainConfig

LANGUAGE_DIR = "language"
JOINT_CONFIG = "joint.json"
FUSION_WEIGHTS = "fusion.safetensors"
TEXT_WEIGHTS = "text.safetensors"
TEXT_FUSION = "text_fusion.json"
LM_LOSS_PLOT = "lm_loss.png"
JOINT_FORMAT = "kgweave-joint"
JOINT_FORMAT_VERSION = 1


def is_joint(folder: Path) -> bool:
    """Whether the model artifact in ``folder`` has a language side (its ``joint.json``,
    written last)."""
    return (folder / LANGUAGE_DIR / JOINT_CONFIG).is_file()


class JointConfig(BaseModel):
    """Everything that decides a joint run; stored verbatim in ``language/joint.json``."""

    model_config = ConfigDict(extra="forbid")

    kge: TrainConfig = Field(
        default_factory=lambda: TrainConfig.model_validate({"dim": 100, "epochs": 100}),
        description="The KGE side: model, dim, regime, epochs, optimiser... (as `kgweave "
        "train`). Validation every `eval_every` epochs keeps the best model.",
    )
    align_weight: float = Field(
        0.1, ge=0, description="Weight of the text/KGE alignment (InfoNCE) loss; 0 disables."
    )
    align_temperature: float = Field(0.1, gt=0, description="InfoNCE temperature.")
    align_batch: int = Field(256, ge=2, description="Entities per alignment step.")
    use_text: bool = Field(
        True,
        description="Add projected entity text vectors to the KGE representations (LM -> KG).",
    )
    language_model: str | None = Field(
        None,
        description="Causal LM to fine-tune: a packaged LM (`smollm2-135m-instruct`), a local "
        "folder, a .gguf file or a Hugging Face id, or `small` (a GPT-2-style model trained "
        "from scratch); unset: the `language_model` setting, and when that is unset too, the "
        "default packaged LM (SmolLM2-135M-Instruct).",
    )
    vocab_size: int = Field(2000, ge=300, description="Tokenizer size for the small LM.")
    lm_layers: int = Field(4, ge=1, description="Small LM: transformer blocks.")
    lm_width: int = Field(256, ge=8, description="Small LM: hidden width.")
    lm_heads: int = Field(4, ge=1, description="Small LM: attention heads.")
    lm_max_length: int = Field(128, ge=8, description="Longest training text in tokens.")
    lm_epochs: int = Field(20, ge=1, description="Passes over the KG-to-text corpus.")
    lm_time_budget_s: float | None = Field(
        None, gt=0, description="Stop LM training after this many seconds (checked every step)."
    )
    lm_cpu_budget_s: float | None = Field(
        300.0,
        gt=0,
        description="On a CPU, a pretrained LM with neither `lm_time_budget_s` nor "
        "`lm_max_steps` set stops after this many seconds (a GPU trains the full "
        "`lm_epochs`); None: no limit.",
    )
    lm_max_steps: int | None = Field(
        None, ge=1, description="Stop LM training after this many optimiser steps."
    )
    lm_batch_size: int = Field(32, ge=1, description="Sentences per LM step.")
    lm_lr: float | None = Field(
        None,
        gt=0,
        description="LM learning rate; unset: 2e-3 for the small LM, 5e-4 for LoRA adapters, "
        "5e-5 to fine-tune every weight of a pretrained LM.",
    )
    lm_lora: bool = Field(
        True,
        description="Fine-tune a pretrained LM through LoRA adapters (peft; base weights "
        "frozen, the artifact stores the adapters only); false: every weight, stored whole.",
    )
    lora_rank: int = Field(8, ge=1, description="LoRA rank.")
    lora_alpha: int = Field(16, ge=1, description="LoRA scaling numerator (alpha / rank).")
    lora_dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the LoRA input.")
    lora_mlp: bool = Field(
        False, description="LoRA on the MLP projections too (default: attention only)."
    )
    fusion_layer: int | None = Field(
        0,
        description="Where entity embeddings enter the LM: output of this block (0-based); "
        "None: the input embeddings.",
    )
    entity_fusion: bool = Field(
        True,
        description="Add the entities' KG embeddings to the LM's hidden states at their "
        "mentions, in LM training and in completion scoring (KG -> LM); false: the LM is "
        "fine-tuned on the verbalized facts' text alone (the ablation).",
    )
    fusion_train_entities: bool = Field(
        False, description="Fine-tune the KGE table inside the fused LM (default: frozen)."
    )
    fit_completion: bool = Field(
        True, description="Fit the completion re-ranking weights on validation."
    )
    completion_top_n: int = Field(20, ge=1, description="KGE candidates per completion query.")
    completion_fit_triples: int | None = Field(
        500,
        ge=1,
        description="Fit the completion weights on a seeded sample of this many validation "
        "facts (each a head and a tail query, top-N LM-scored candidates each); None: all of "
        "them (hours on a CPU for a graph of FB15k-237's size).",
    )
    text_fusion: bool = Field(
        True,
        description="Fit a text fusion (KGE scores plus entity-text features, per-relation "
        "weights) on validation; completion ranks by it.",
    )
    text_fusion_candidates: int = Field(
        300, ge=1, description="Text fusion fit: top entities by KGE and by text per query."
    )
    seed: int = Field(0, description="Seeds every part of the run.")
