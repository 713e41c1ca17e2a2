"""Training settings: one typed object, stored verbatim in the model artifact."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.config import JsonDict

#: marks a TrainConfig field that only local training takes (threads, evaluation batch,
#: negative-sampling knobs): every other field is a field of the proto's TrainingSettings
LOCAL_ONLY: JsonDict = {"local_only": True}


class TrainConfig(BaseModel):
    """Everything that decides a training run. Defaults are our best general settings."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field("complex", description="Scoring model: transe, distmult, complex, rotate.")
    dim: int = Field(
        200, ge=1, description="Embedding size (complex components for complex and rotate)."
    )
    regime: Literal["kvsall", "1vsall", "negative-sampling"] = Field(
        "kvsall",
        description="kvsall: every (h, r) query against all entities with all its known tails "
        "(1-N); 1vsall: one query per triple; negative-sampling: sampled corrupt tails, for "
        "graphs too large for 1-N. All use reciprocal relations.",
    )
    epochs: int = Field(100, ge=1, description="Maximum number of passes over the training data.")
    batch_size: int = Field(256, ge=1, description="Queries per step.")
    optimizer: Literal["adagrad", "adam"] = Field("adagrad", description="Optimiser.")
    lr: float = Field(0.1, gt=0, description="Learning rate.")
    lr_schedule: Literal["constant", "cosine", "plateau"] = Field(
        "constant",
        description="constant; cosine decay to 1% over the epochs; plateau: halve the rate "
        "when validation MRR stops improving.",
    )
    regularizer: Literal["n3", "l2", "none"] = Field(
        "n3", description="N3 (sum of cubed moduli, Lacroix et al. 2018), L2 or none."
    )
    reg_weight: float = Field(0.01, ge=0, description="Weight of the regulariser.")
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="Label smoothing (1-N regimes).")
    relation_prediction: float = Field(
        0.0,
        ge=0,
        description="Weight of the auxiliary relation-prediction loss (Chen et al., 2021): "
        "each positive (h, r, t) also predicts r among all relations from (h, t). "
        "0 turns it off.",
    )
    num_negatives: int = Field(
        256,
        ge=1,
        json_schema_extra=LOCAL_ONLY,
        description="Corrupt tails per positive (negative-sampling).",
    )
    margin: float = Field(
        9.0,
        json_schema_extra=LOCAL_ONLY,
        description="Margin of the self-adversarial loss (negative-sampling).",
    )
    adversarial_temperature: float = Field(
        1.0,
        ge=0,
        json_schema_extra=LOCAL_ONLY,
        description="Self-adversarial sampling temperature, 0 to disable.",
    )
    seed: int = Field(
        0, description="Seeds initialisation, shuffling and samples: same seed, same run."
    )
    eval_every: int = Field(5, ge=1, description="Epochs between validation evaluations.")
    patience: int = Field(
        5,
        ge=0,
        description="Stop after this many evaluations without a better validation MRR "
        "(0 never stops early). The best model is kept.",
    )
    eval_batch_size: int | None = Field(
        None, ge=1, json_schema_extra=LOCAL_ONLY, description="Queries per evaluation pass."
    )
    valid_sample: int | None = Field(
        None,
        ge=1,
        description="Evaluate validation on a fixed seeded sample of this many "
        "triples (fast early stopping on large graphs).",
    )
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto",
        description="Matmul precision of training steps (weights and evaluation stay fp32). "
        "auto: bf16 mixed precision on CUDA, and on CPUs with native bf16 (AVX512-BF16/AMX) "
        "when the graph has at least 2,000 entities; fp32 otherwise.",
    )
    time_budget_s: float | None = Field(
        None, gt=0, description="Stop training after this many seconds (checked every step)."
    )
    num_threads: int | None = Field(
        None, ge=1, json_schema_extra=LOCAL_ONLY, description="CPU threads for torch."
    )

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        from kgweave.errors import InvalidArgumentError
        from kgweave.models import model_class

        try:
            model_class(self.model)
        except InvalidArgumentError as exc:
            raise ValueError(exc.message) from None
        return self


#: the TrainConfig fields a server training job accepts (the proto's TrainingSettings adds
#: ``joint``; tests/test_proto.py checks that it carries each of them)
JOB_FIELDS = tuple(
    name
    for name, field in TrainConfig.model_fields.items()
    if field.json_schema_extra != LOCAL_ONLY
)
