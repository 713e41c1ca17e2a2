"""Prometheus metrics of one service instance (its own registry, so tests can run several)."""

from __future__ import annotations

from functools import partial

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.002,
    0.003,
    0.005,
    0.0075,
    0.01,
    0.02,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    10.0,
)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
_APPLY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_LAG_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0)


class ServiceMetrics:
    """Request latency, batch sizes, queue depth, the active version and job states."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        # every metric of this instance goes to its own registry
        counter = partial(Counter, registry=self.registry)
        gauge = partial(Gauge, registry=self.registry)
        histogram = partial(Histogram, registry=self.registry)
        self.request_seconds = histogram(
            "kgweave_request_seconds",
            "Time to answer a request, by method and status code.",
            ("method", "code"),
            buckets=_LATENCY_BUCKETS,
        )
        self.batch_size = histogram(
            "kgweave_batch_queries",
            "Link-prediction queries scored together in one pass.",
            buckets=_BATCH_BUCKETS,
        )
        self.queue_depth = gauge("kgweave_queue_depth", "Queries waiting to be scored.")
        self.active_model = gauge(
            "kgweave_active_model", "1 for the model version being served.", ("version",)
        )
        self.jobs = counter(
            "kgweave_jobs_total", "Training jobs by the state they reached.", ("state",)
        )
        self.jobs_running = gauge("kgweave_jobs_running", "Training jobs queued or running.")
        self.swaps = counter("kgweave_model_activations_total", "Model activations.")

        self.changes_applied = counter(
            "kgweave_changes_applied_total", "Graph change events applied to the served model."
        )
        self.change_batches = counter(
            "kgweave_change_batches_total",
            "Change batches applied (one derived model swapped in per batch).",
        )
        self.change_apply_seconds = histogram(
            "kgweave_change_apply_seconds",
            "Time to apply one change batch (fold, derive, persist, swap).",
            buckets=_APPLY_BUCKETS,
        )
        self.change_lag_seconds = histogram(
            "kgweave_change_lag_seconds",
            "From a change event's time to the moment it is served, per event.",
            buckets=_LAG_BUCKETS,
        )

        self.retrain_jobs = counter(
            "kgweave_retrain_jobs_total",
            "Incremental updates and full retrains from graph changes, by kind (incremental, "
            "full) and outcome (activated, refused, failed, cancelled).",
            ("kind", "outcome"),
        )
        self.retrain_job_seconds = histogram(
            "kgweave_retrain_job_seconds",
            "From the start of an incremental update or a full retrain to its version "
            "registered (or its failure).",
            ("kind",),
            buckets=_LAG_BUCKETS,
        )
        self.trained_lag_seconds = histogram(
            "kgweave_trained_lag_seconds",
            "From a change event's time to a version trained on it being served (the oldest "
            "event each activated update or retrain covered).",
            ("kind",),
            buckets=_LAG_BUCKETS,
        )

    def set_active(self, version: str) -> None:
        self.active_model.clear()
        self.active_model.labels(version=version).set(1)

    def render(self) -> bytes:
        """The text exposition format."""
        return bytes(generate_latest(self.registry))
