"""Training settings: one typed object, stored verbatim in the model artifact."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.config import JsonDict

#: marks a TrainConfig field that only local training takes (threads, evaluation batch,
#: negative-sampling knobs, the LibKGE-style options): every other field is a field of the
#: proto's TrainingSettings
LOCAL_ONLY: JsonDict = {"local_only": True}

# Upper (and lower) limits of the numeric settings: far beyond any useful run, low enough that a
# typo or a hostile request (dim=10**9 over gRPC) is a one-line error, not an out-of-memory
# crash. docs/training.md lists them.
MAX_DIM = 8192
MAX_EPOCHS = 100_000
MAX_BATCH = 1 << 20
MAX_WEIGHT = 10.0  # regulariser and auxiliary-loss weights
MAX_NEGATIVES = 1 << 16
MAX_MARGIN = 1000.0
MAX_TEMPERATURE = 100.0
MAX_SEED = 2**31 - 1  # the proto's int32
MAX_VALID_SAMPLE = 10_000_000
MAX_TIME_BUDGET_S = 30 * 24 * 3600.0  # 30 days
MAX_THREADS = 1024
MAX_INIT_SCALE = 100.0


class TrainConfig(BaseModel):
    """Everything that decides a training run. Defaults are our best general settings."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    model: str = "complex"
    """Scoring model: transe, distmult, complex, rotate."""
    dim: int = Field(default=200, ge=1, le=MAX_DIM)
    """Embedding size (complex components for complex and rotate)."""
    regime: Literal["kvsall", "1vsall", "negative-sampling"] = "kvsall"
    """kvsall: every (h, r) query against all entities with all its known tails (1-N); 1vsall: one
    query per triple; negative-sampling: sampled corrupt tails, for graphs too large for 1-N. All
    use reciprocal relations."""
    epochs: int = Field(default=100, ge=1, le=MAX_EPOCHS)
    """Maximum number of passes over the training data."""
    batch_size: int = Field(default=256, ge=1, le=MAX_BATCH)
    """Queries per step."""
    optimizer: Literal["adagrad", "adam"] = "adagrad"
    """Optimiser."""
    # no upper limit but a finite value: a rate cannot exhaust memory or time, and one too high
    # diverges cleanly (the run fails with "training diverged at epoch N"; tests at 1e30)
    lr: float = Field(default=0.1, gt=0, allow_inf_nan=False)
    """Learning rate."""
    lr_schedule: Literal["constant", "cosine", "plateau"] = "constant"
    """constant; cosine decay to 1% over the epochs; plateau: multiply the rate by plateau_factor
    when validation MRR has not improved for more than plateau_patience evaluations
    (ReduceLROnPlateau, max mode)."""
    plateau_factor: float = Field(default=0.5, gt=0, lt=1)
    """plateau schedule: the factor that lowers the learning rate."""
    plateau_patience: int = Field(default=1, ge=0, le=MAX_EPOCHS)
    """plateau schedule: evaluations without a better validation MRR tolerated before the rate is
    lowered."""
    warmup_epochs: int = Field(default=0, ge=0, le=MAX_EPOCHS)
    """Linear learning-rate warm-up over this many epochs (per step, from lr/steps up to lr), before
    the schedule; 0 = none."""
    regularizer: Literal["n3", "l2", "none"] = "n3"
    """N3 (sum of cubed moduli, Lacroix et al. 2018), L2 or none."""
    reg_weight: float = Field(default=0.01, ge=0, le=MAX_WEIGHT)
    """Weight of the regulariser (entities and relations unless set apart)."""
    entity_reg_weight: float | None = Field(default=None, ge=0, le=MAX_WEIGHT)
    """Regulariser weight of entity embeddings (default: reg_weight)."""
    relation_reg_weight: float | None = Field(default=None, ge=0, le=MAX_WEIGHT)
    """Regulariser weight of relation embeddings (default: reg_weight)."""
    entity_dropout: float = Field(default=0.0, ge=0, lt=1)
    """Dropout on looked-up entity embeddings while training (LibKGE); 0 = off."""
    relation_dropout: float = Field(default=0.0, ge=0, lt=1)
    """Dropout on looked-up relation embeddings while training; 0 = off."""
    init: Literal["default", "normal", "uniform", "xavier_uniform", "xavier_normal"] = "default"
    """Embedding initialisation: default (each model's own), normal (std init_scale), uniform (in
    ±init_scale), xavier_uniform or xavier_normal (gain init_scale)."""
    init_scale: float | None = Field(default=None, gt=0, le=MAX_INIT_SCALE)
    """Scale of init: normal std / uniform bound (default 0.001), xavier gain (default 1)."""
    label_smoothing: float = Field(default=0.0, ge=0, lt=1)
    """Label smoothing (1-N regimes)."""
    relation_prediction: float = Field(default=0.0, ge=0, le=MAX_WEIGHT)
    """Weight of the auxiliary relation-prediction loss (Chen et al., 2021): each positive (h, r, t)
    also predicts r among all relations from (h, t). 0 turns it off."""
    num_negatives: int = Field(default=256, ge=1, le=MAX_NEGATIVES)
    """Corrupt tails per positive (negative-sampling)."""
    margin: float = Field(default=9.0, ge=-MAX_MARGIN, le=MAX_MARGIN)
    """Margin of the self-adversarial loss (negative-sampling)."""
    adversarial_temperature: float = Field(default=1.0, ge=0, le=MAX_TEMPERATURE)
    """Self-adversarial sampling temperature, 0 to disable."""
    seed: int = Field(default=0, ge=0, le=MAX_SEED)
    """Seeds initialisation, shuffling and samples: same seed, same run."""
    eval_every: int = Field(default=5, ge=1, le=MAX_EPOCHS)
    """Epochs between validation evaluations."""
    patience: int = Field(default=5, ge=0, le=MAX_EPOCHS)
    """Stop after this many evaluations without a better validation MRR (0 never stops early). The
    best model is kept."""
    eval_batch_size: int | None = Field(
        default=None, ge=1, le=MAX_BATCH, json_schema_extra=LOCAL_ONLY
    )
    """Queries per evaluation pass."""
    valid_sample: int | None = Field(default=None, ge=1, le=MAX_VALID_SAMPLE)
    """Evaluate validation on a fixed seeded sample of this many triples (fast early stopping on
    large graphs); grown when needed so that its MRR stays within ±0.005 of the full split's (95%
    confidence)."""
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    """Matmul precision of training steps (weights and evaluation stay fp32). auto: bf16 mixed
    precision on CUDA, and on CPUs with native bf16 (AVX512-BF16/AMX) when the graph has at least
    2,000 entities; fp32 otherwise."""
    time_budget_s: float | None = Field(default=None, gt=0, le=MAX_TIME_BUDGET_S)
    """Stop training after this many seconds (checked every step)."""
    num_threads: int | None = Field(
        default=None, ge=1, le=MAX_THREADS, json_schema_extra=LOCAL_ONLY
    )
    """CPU threads for torch."""

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        from kgweave.errors import InvalidArgumentError
        from kgweave.models import model_class

        try:
            model_class(self.model)
        except InvalidArgumentError as exc:
            raise ValueError(exc.message) from None
        return self

    def reg_weights(self) -> tuple[float, float]:
        """The regulariser weights of (entities, relations): each side's own or ``reg_weight``."""
        entity = self.reg_weight if self.entity_reg_weight is None else self.entity_reg_weight
        relation = self.reg_weight if self.relation_reg_weight is None else self.relation_reg_weight
        return entity, relation


#: the TrainConfig fields a server training job accepts (the proto's TrainingSettings adds
#: ``joint``; tests/test_proto.py checks that it carries each of them)
JOB_FIELDS = tuple(
    name
    for name, field in TrainConfig.model_fields.items()
    if field.json_schema_extra != LOCAL_ONLY
)
