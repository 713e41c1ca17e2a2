"""Prometheus metrics of one service instance (its own registry, so tests can run several)."""

from __future__ import annotations

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


class ServiceMetrics:
    """Request latency, batch sizes, queue depth, the active version and job states."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.request_seconds = Histogram(
            "kgweave_request_seconds",
            "Time to answer a request, by method and status code.",
            ("method", "code"),
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "kgweave_batch_queries",
            "Link-prediction queries scored together in one pass.",
            buckets=_BATCH_BUCKETS,
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "kgweave_queue_depth", "Queries waiting to be scored.", registry=self.registry
        )
        self.active_model = Gauge(
            "kgweave_active_model",
            "1 for the model version being served.",
            ("version",),
            registry=self.registry,
        )
        self.jobs = Counter(
            "kgweave_jobs_total",
            "Training jobs by the state they reached.",
            ("state",),
            registry=self.registry,
        )
        self.jobs_running = Gauge(
            "kgweave_jobs_running", "Training jobs queued or running.", registry=self.registry
        )
        self.swaps = Counter(
            "kgweave_model_activations_total", "Model activations.", registry=self.registry
        )

    def set_active(self, version: str) -> None:
        self.active_model.clear()
        self.active_model.labels(version=version).set(1)

    def render(self) -> bytes:
        """The text exposition format."""
        return bytes(generate_latest(self.registry))
