from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ActivationPolicy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ACTIVATION_POLICY_UNSPECIFIED: _ClassVar[ActivationPolicy]
    ACTIVATION_POLICY_IF_BETTER: _ClassVar[ActivationPolicy]
    ACTIVATION_POLICY_ALWAYS: _ClassVar[ActivationPolicy]
    ACTIVATION_POLICY_NEVER: _ClassVar[ActivationPolicy]

class JobState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_STATE_UNSPECIFIED: _ClassVar[JobState]
    JOB_STATE_QUEUED: _ClassVar[JobState]
    JOB_STATE_RUNNING: _ClassVar[JobState]
    JOB_STATE_SUCCEEDED: _ClassVar[JobState]
    JOB_STATE_FAILED: _ClassVar[JobState]
    JOB_STATE_CANCELLED: _ClassVar[JobState]
ACTIVATION_POLICY_UNSPECIFIED: ActivationPolicy
ACTIVATION_POLICY_IF_BETTER: ActivationPolicy
ACTIVATION_POLICY_ALWAYS: ActivationPolicy
ACTIVATION_POLICY_NEVER: ActivationPolicy
JOB_STATE_UNSPECIFIED: JobState
JOB_STATE_QUEUED: JobState
JOB_STATE_RUNNING: JobState
JOB_STATE_SUCCEEDED: JobState
JOB_STATE_FAILED: JobState
JOB_STATE_CANCELLED: JobState

class TrainingSettings(_message.Message):
    __slots__ = ("model", "dim", "epochs", "batch_size", "lr", "optimizer", "regime", "regularizer", "reg_weight", "seed", "eval_every", "patience", "time_budget_s", "joint", "lr_schedule", "label_smoothing", "relation_prediction", "valid_sample", "precision", "plateau_factor", "plateau_patience", "warmup_epochs", "entity_reg_weight", "relation_reg_weight", "entity_dropout", "relation_dropout", "init", "init_scale", "num_negatives", "margin", "adversarial_temperature")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    DIM_FIELD_NUMBER: _ClassVar[int]
    EPOCHS_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    LR_FIELD_NUMBER: _ClassVar[int]
    OPTIMIZER_FIELD_NUMBER: _ClassVar[int]
    REGIME_FIELD_NUMBER: _ClassVar[int]
    REGULARIZER_FIELD_NUMBER: _ClassVar[int]
    REG_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    EVAL_EVERY_FIELD_NUMBER: _ClassVar[int]
    PATIENCE_FIELD_NUMBER: _ClassVar[int]
    TIME_BUDGET_S_FIELD_NUMBER: _ClassVar[int]
    JOINT_FIELD_NUMBER: _ClassVar[int]
    LR_SCHEDULE_FIELD_NUMBER: _ClassVar[int]
    LABEL_SMOOTHING_FIELD_NUMBER: _ClassVar[int]
    RELATION_PREDICTION_FIELD_NUMBER: _ClassVar[int]
    VALID_SAMPLE_FIELD_NUMBER: _ClassVar[int]
    PRECISION_FIELD_NUMBER: _ClassVar[int]
    PLATEAU_FACTOR_FIELD_NUMBER: _ClassVar[int]
    PLATEAU_PATIENCE_FIELD_NUMBER: _ClassVar[int]
    WARMUP_EPOCHS_FIELD_NUMBER: _ClassVar[int]
    ENTITY_REG_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    RELATION_REG_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    ENTITY_DROPOUT_FIELD_NUMBER: _ClassVar[int]
    RELATION_DROPOUT_FIELD_NUMBER: _ClassVar[int]
    INIT_FIELD_NUMBER: _ClassVar[int]
    INIT_SCALE_FIELD_NUMBER: _ClassVar[int]
    NUM_NEGATIVES_FIELD_NUMBER: _ClassVar[int]
    MARGIN_FIELD_NUMBER: _ClassVar[int]
    ADVERSARIAL_TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    model: str
    dim: int
    epochs: int
    batch_size: int
    lr: float
    optimizer: str
    regime: str
    regularizer: str
    reg_weight: float
    seed: int
    eval_every: int
    patience: int
    time_budget_s: float
    joint: bool
    lr_schedule: str
    label_smoothing: float
    relation_prediction: float
    valid_sample: int
    precision: str
    plateau_factor: float
    plateau_patience: int
    warmup_epochs: int
    entity_reg_weight: float
    relation_reg_weight: float
    entity_dropout: float
    relation_dropout: float
    init: str
    init_scale: float
    num_negatives: int
    margin: float
    adversarial_temperature: float
    def __init__(self, model: _Optional[str] = ..., dim: _Optional[int] = ..., epochs: _Optional[int] = ..., batch_size: _Optional[int] = ..., lr: _Optional[float] = ..., optimizer: _Optional[str] = ..., regime: _Optional[str] = ..., regularizer: _Optional[str] = ..., reg_weight: _Optional[float] = ..., seed: _Optional[int] = ..., eval_every: _Optional[int] = ..., patience: _Optional[int] = ..., time_budget_s: _Optional[float] = ..., joint: _Optional[bool] = ..., lr_schedule: _Optional[str] = ..., label_smoothing: _Optional[float] = ..., relation_prediction: _Optional[float] = ..., valid_sample: _Optional[int] = ..., precision: _Optional[str] = ..., plateau_factor: _Optional[float] = ..., plateau_patience: _Optional[int] = ..., warmup_epochs: _Optional[int] = ..., entity_reg_weight: _Optional[float] = ..., relation_reg_weight: _Optional[float] = ..., entity_dropout: _Optional[float] = ..., relation_dropout: _Optional[float] = ..., init: _Optional[str] = ..., init_scale: _Optional[float] = ..., num_negatives: _Optional[int] = ..., margin: _Optional[float] = ..., adversarial_temperature: _Optional[float] = ...) -> None: ...

class StartTrainingRequest(_message.Message):
    __slots__ = ("settings", "dataset", "activation", "tuning")
    SETTINGS_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    ACTIVATION_FIELD_NUMBER: _ClassVar[int]
    TUNING_FIELD_NUMBER: _ClassVar[int]
    settings: TrainingSettings
    dataset: str
    activation: ActivationPolicy
    tuning: TuningSettings
    def __init__(self, settings: _Optional[_Union[TrainingSettings, _Mapping]] = ..., dataset: _Optional[str] = ..., activation: _Optional[_Union[ActivationPolicy, str]] = ..., tuning: _Optional[_Union[TuningSettings, _Mapping]] = ...) -> None: ...

class TuningSettings(_message.Message):
    __slots__ = ("budget_s", "trials", "trial_budget_s", "search_models", "pruner", "study")
    BUDGET_S_FIELD_NUMBER: _ClassVar[int]
    TRIALS_FIELD_NUMBER: _ClassVar[int]
    TRIAL_BUDGET_S_FIELD_NUMBER: _ClassVar[int]
    SEARCH_MODELS_FIELD_NUMBER: _ClassVar[int]
    PRUNER_FIELD_NUMBER: _ClassVar[int]
    STUDY_FIELD_NUMBER: _ClassVar[int]
    budget_s: float
    trials: int
    trial_budget_s: float
    search_models: bool
    pruner: str
    study: str
    def __init__(self, budget_s: _Optional[float] = ..., trials: _Optional[int] = ..., trial_budget_s: _Optional[float] = ..., search_models: _Optional[bool] = ..., pruner: _Optional[str] = ..., study: _Optional[str] = ...) -> None: ...

class GetJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class Job(_message.Message):
    __slots__ = ("job_id", "state", "phase", "epoch", "epochs", "loss", "valid_mrr", "eta_s", "model_version", "activated", "message", "created_at", "updated_at", "rate", "rate_unit")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    EPOCHS_FIELD_NUMBER: _ClassVar[int]
    LOSS_FIELD_NUMBER: _ClassVar[int]
    VALID_MRR_FIELD_NUMBER: _ClassVar[int]
    ETA_S_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    ACTIVATED_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    RATE_FIELD_NUMBER: _ClassVar[int]
    RATE_UNIT_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    state: JobState
    phase: str
    epoch: int
    epochs: int
    loss: float
    valid_mrr: float
    eta_s: float
    model_version: str
    activated: bool
    message: str
    created_at: float
    updated_at: float
    rate: float
    rate_unit: str
    def __init__(self, job_id: _Optional[str] = ..., state: _Optional[_Union[JobState, str]] = ..., phase: _Optional[str] = ..., epoch: _Optional[int] = ..., epochs: _Optional[int] = ..., loss: _Optional[float] = ..., valid_mrr: _Optional[float] = ..., eta_s: _Optional[float] = ..., model_version: _Optional[str] = ..., activated: _Optional[bool] = ..., message: _Optional[str] = ..., created_at: _Optional[float] = ..., updated_at: _Optional[float] = ..., rate: _Optional[float] = ..., rate_unit: _Optional[str] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("version", "model", "dim", "num_entities", "num_relations", "valid_metrics", "test_metrics", "created_at", "active", "source", "fused_valid_metrics", "fused_test_metrics", "decision")
    class ValidMetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class TestMetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class FusedValidMetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class FusedTestMetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    VERSION_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    DIM_FIELD_NUMBER: _ClassVar[int]
    NUM_ENTITIES_FIELD_NUMBER: _ClassVar[int]
    NUM_RELATIONS_FIELD_NUMBER: _ClassVar[int]
    VALID_METRICS_FIELD_NUMBER: _ClassVar[int]
    TEST_METRICS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    FUSED_VALID_METRICS_FIELD_NUMBER: _ClassVar[int]
    FUSED_TEST_METRICS_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    version: str
    model: str
    dim: int
    num_entities: int
    num_relations: int
    valid_metrics: _containers.ScalarMap[str, float]
    test_metrics: _containers.ScalarMap[str, float]
    created_at: str
    active: bool
    source: str
    fused_valid_metrics: _containers.ScalarMap[str, float]
    fused_test_metrics: _containers.ScalarMap[str, float]
    decision: str
    def __init__(self, version: _Optional[str] = ..., model: _Optional[str] = ..., dim: _Optional[int] = ..., num_entities: _Optional[int] = ..., num_relations: _Optional[int] = ..., valid_metrics: _Optional[_Mapping[str, float]] = ..., test_metrics: _Optional[_Mapping[str, float]] = ..., created_at: _Optional[str] = ..., active: _Optional[bool] = ..., source: _Optional[str] = ..., fused_valid_metrics: _Optional[_Mapping[str, float]] = ..., fused_test_metrics: _Optional[_Mapping[str, float]] = ..., decision: _Optional[str] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models", "active_version")
    MODELS_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_VERSION_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelInfo]
    active_version: str
    def __init__(self, models: _Optional[_Iterable[_Union[ModelInfo, _Mapping]]] = ..., active_version: _Optional[str] = ...) -> None: ...

class ActivateModelRequest(_message.Message):
    __slots__ = ("version",)
    VERSION_FIELD_NUMBER: _ClassVar[int]
    version: str
    def __init__(self, version: _Optional[str] = ...) -> None: ...

class StatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StatusResponse(_message.Message):
    __slots__ = ("active_model", "graph_backend", "graph_uri", "device", "process_memory_bytes", "device_memory_bytes", "uptime_s", "ready", "kgweave_version", "active_jobs", "frontend", "changes")
    ACTIVE_MODEL_FIELD_NUMBER: _ClassVar[int]
    GRAPH_BACKEND_FIELD_NUMBER: _ClassVar[int]
    GRAPH_URI_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    PROCESS_MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    DEVICE_MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    UPTIME_S_FIELD_NUMBER: _ClassVar[int]
    READY_FIELD_NUMBER: _ClassVar[int]
    KGWEAVE_VERSION_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_JOBS_FIELD_NUMBER: _ClassVar[int]
    FRONTEND_FIELD_NUMBER: _ClassVar[int]
    CHANGES_FIELD_NUMBER: _ClassVar[int]
    active_model: ModelInfo
    graph_backend: str
    graph_uri: str
    device: str
    process_memory_bytes: int
    device_memory_bytes: int
    uptime_s: float
    ready: bool
    kgweave_version: str
    active_jobs: int
    frontend: str
    changes: ChangesStatus
    def __init__(self, active_model: _Optional[_Union[ModelInfo, _Mapping]] = ..., graph_backend: _Optional[str] = ..., graph_uri: _Optional[str] = ..., device: _Optional[str] = ..., process_memory_bytes: _Optional[int] = ..., device_memory_bytes: _Optional[int] = ..., uptime_s: _Optional[float] = ..., ready: _Optional[bool] = ..., kgweave_version: _Optional[str] = ..., active_jobs: _Optional[int] = ..., frontend: _Optional[str] = ..., changes: _Optional[_Union[ChangesStatus, _Mapping]] = ...) -> None: ...

class ChangesStatus(_message.Message):
    __slots__ = ("applied_offset", "end_offset", "batches", "events", "facts_added", "facts_removed", "entities_added", "entities_deleted", "relations_added", "last_error", "trained_offset", "updates_started", "updates_registered", "full_retrains_started", "updates_skipped", "retrain_error", "refinements_started", "refinements_activated", "snapshot_diffs", "snapshot_diff_reads", "snapshot_diff_partial_reads", "changes_behind_the_log")
    APPLIED_OFFSET_FIELD_NUMBER: _ClassVar[int]
    END_OFFSET_FIELD_NUMBER: _ClassVar[int]
    BATCHES_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    FACTS_ADDED_FIELD_NUMBER: _ClassVar[int]
    FACTS_REMOVED_FIELD_NUMBER: _ClassVar[int]
    ENTITIES_ADDED_FIELD_NUMBER: _ClassVar[int]
    ENTITIES_DELETED_FIELD_NUMBER: _ClassVar[int]
    RELATIONS_ADDED_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    TRAINED_OFFSET_FIELD_NUMBER: _ClassVar[int]
    UPDATES_STARTED_FIELD_NUMBER: _ClassVar[int]
    UPDATES_REGISTERED_FIELD_NUMBER: _ClassVar[int]
    FULL_RETRAINS_STARTED_FIELD_NUMBER: _ClassVar[int]
    UPDATES_SKIPPED_FIELD_NUMBER: _ClassVar[int]
    RETRAIN_ERROR_FIELD_NUMBER: _ClassVar[int]
    REFINEMENTS_STARTED_FIELD_NUMBER: _ClassVar[int]
    REFINEMENTS_ACTIVATED_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_DIFFS_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_DIFF_READS_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_DIFF_PARTIAL_READS_FIELD_NUMBER: _ClassVar[int]
    CHANGES_BEHIND_THE_LOG_FIELD_NUMBER: _ClassVar[int]
    applied_offset: int
    end_offset: int
    batches: int
    events: int
    facts_added: int
    facts_removed: int
    entities_added: int
    entities_deleted: int
    relations_added: int
    last_error: str
    trained_offset: int
    updates_started: int
    updates_registered: int
    full_retrains_started: int
    updates_skipped: str
    retrain_error: str
    refinements_started: int
    refinements_activated: int
    snapshot_diffs: int
    snapshot_diff_reads: int
    snapshot_diff_partial_reads: int
    changes_behind_the_log: int
    def __init__(self, applied_offset: _Optional[int] = ..., end_offset: _Optional[int] = ..., batches: _Optional[int] = ..., events: _Optional[int] = ..., facts_added: _Optional[int] = ..., facts_removed: _Optional[int] = ..., entities_added: _Optional[int] = ..., entities_deleted: _Optional[int] = ..., relations_added: _Optional[int] = ..., last_error: _Optional[str] = ..., trained_offset: _Optional[int] = ..., updates_started: _Optional[int] = ..., updates_registered: _Optional[int] = ..., full_retrains_started: _Optional[int] = ..., updates_skipped: _Optional[str] = ..., retrain_error: _Optional[str] = ..., refinements_started: _Optional[int] = ..., refinements_activated: _Optional[int] = ..., snapshot_diffs: _Optional[int] = ..., snapshot_diff_reads: _Optional[int] = ..., snapshot_diff_partial_reads: _Optional[int] = ..., changes_behind_the_log: _Optional[int] = ...) -> None: ...

class Fact(_message.Message):
    __slots__ = ("head", "relation", "tail")
    HEAD_FIELD_NUMBER: _ClassVar[int]
    RELATION_FIELD_NUMBER: _ClassVar[int]
    TAIL_FIELD_NUMBER: _ClassVar[int]
    head: str
    relation: str
    tail: str
    def __init__(self, head: _Optional[str] = ..., relation: _Optional[str] = ..., tail: _Optional[str] = ...) -> None: ...

class EntityWrite(_message.Message):
    __slots__ = ("id", "name", "description")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    description: str
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., description: _Optional[str] = ...) -> None: ...

class WriteFactsRequest(_message.Message):
    __slots__ = ("added", "removed", "entities", "deleted_entities", "wait_s")
    ADDED_FIELD_NUMBER: _ClassVar[int]
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    ENTITIES_FIELD_NUMBER: _ClassVar[int]
    DELETED_ENTITIES_FIELD_NUMBER: _ClassVar[int]
    WAIT_S_FIELD_NUMBER: _ClassVar[int]
    added: _containers.RepeatedCompositeFieldContainer[Fact]
    removed: _containers.RepeatedCompositeFieldContainer[Fact]
    entities: _containers.RepeatedCompositeFieldContainer[EntityWrite]
    deleted_entities: _containers.RepeatedScalarFieldContainer[str]
    wait_s: float
    def __init__(self, added: _Optional[_Iterable[_Union[Fact, _Mapping]]] = ..., removed: _Optional[_Iterable[_Union[Fact, _Mapping]]] = ..., entities: _Optional[_Iterable[_Union[EntityWrite, _Mapping]]] = ..., deleted_entities: _Optional[_Iterable[str]] = ..., wait_s: _Optional[float] = ...) -> None: ...

class WriteFactsResponse(_message.Message):
    __slots__ = ("events", "next_offset", "applied", "version")
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_OFFSET_FIELD_NUMBER: _ClassVar[int]
    APPLIED_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    events: int
    next_offset: int
    applied: bool
    version: str
    def __init__(self, events: _Optional[int] = ..., next_offset: _Optional[int] = ..., applied: _Optional[bool] = ..., version: _Optional[str] = ...) -> None: ...

class ModelChunk(_message.Message):
    __slots__ = ("path", "data", "activation")
    PATH_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    ACTIVATION_FIELD_NUMBER: _ClassVar[int]
    path: str
    data: bytes
    activation: ActivationPolicy
    def __init__(self, path: _Optional[str] = ..., data: _Optional[bytes] = ..., activation: _Optional[_Union[ActivationPolicy, str]] = ...) -> None: ...

class RegisterModelResponse(_message.Message):
    __slots__ = ("model", "activated", "message")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    ACTIVATED_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    model: ModelInfo
    activated: bool
    message: str
    def __init__(self, model: _Optional[_Union[ModelInfo, _Mapping]] = ..., activated: _Optional[bool] = ..., message: _Optional[str] = ...) -> None: ...
