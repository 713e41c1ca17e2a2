"""Model versions: the registry, the one version being served, and hot swaps between them.

The active model is one reference to an immutable :class:`ServedModel`. A request reads it
once (:meth:`ModelVersions.active`), resolves its names and is scored against that object, so
it finishes on the version it started on even if another version is activated meanwhile; the
old version is freed when its last request is done.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from kgweave.artifact import ModelArtifact, load_artifact
from kgweave.device import resolve_device
from kgweave.errors import FailedPreconditionError, InvalidArgumentError, echo
from kgweave.serving.activation import POLICIES, decide
from kgweave.serving.metrics import ServiceMetrics
from kgweave.serving.registry import ModelRegistry, ModelVersion
from kgweave.serving.served import ServedModel
from kgweave.settings import Settings

log = logging.getLogger(__name__)


def check_policy(policy: str) -> str:
    """``policy`` if it is one of :data:`POLICIES`, else InvalidArgumentError."""
    if policy not in POLICIES:
        raise InvalidArgumentError(
            f"activation policy {echo(policy)}: use one of {', '.join(POLICIES)}"
        )
    return policy


class ModelVersions:
    """The registry's versions and the one being served: load, activate, swap, list."""

    def __init__(self, settings: Settings, metrics: ServiceMetrics) -> None:
        self.settings = settings
        self.device: torch.device = resolve_device(settings.device)
        self.metrics = metrics
        self._active: ServedModel | None = None
        self._lock = threading.Lock()
        #: called with the version after each activation (the gRPC health status follows it)
        self.on_activate: Callable[[str], None] | None = None
        #: called with each newly activated version and its artifact (write-back to the graph)
        self.after_activate: list[Callable[[str, ModelArtifact], None]] = []
        #: turns a freshly loaded version into what is served (the graph changes applied on
        #: top of it, :mod:`kgweave.changes.apply`); called under :attr:`swap_lock`
        self.derive: Callable[[ServedModel], ServedModel] | None = None
        #: held while an activation loads, derives and swaps, and while a change batch is
        #: applied, so neither swaps in a model the other has made stale
        self.swap_lock = threading.RLock()

    @functools.cached_property
    def registry(self) -> ModelRegistry:
        """The registry in ``settings.models_dir`` (created on first use)."""
        return ModelRegistry(self.settings.models_dir)

    # ---- the served version
    @property
    def ready(self) -> bool:
        """A model is loaded and warmed up."""
        return self._active is not None

    @property
    def current(self) -> ServedModel | None:
        """The served version, or None before the first activation."""
        return self._active

    def active(self) -> ServedModel:
        """The served version; FailedPreconditionError when none is."""
        served = self._active
        if served is None:
            raise FailedPreconditionError(
                "no model is active yet: train one (kgweave train --remote) or activate a "
                "registered version (kgweave models activate VERSION)"
            )
        return served

    def load_active(self) -> ServedModel | None:
        """Serve the registry's active version (or its last known good one: see
        :meth:`ModelRegistry.choose_active`)."""
        version = self.registry.choose_active()
        if version is None:
            return None
        self.activate(version)
        return self._active

    def activate(
        self, version: str, reload: bool = False, loaded: ModelArtifact | None = None
    ) -> dict[str, Any]:
        """Load ``version`` (unless it is served already and not ``reload``; ``loaded``: its
        artifact, loaded already), derive what is served from it (:attr:`derive`), warm it
        up, then swap it in atomically."""
        item = self.registry.get(version)
        with self.swap_lock:
            current = self._active
            if reload or current is None or current.base_version != version:
                served = ServedModel.load(
                    version,
                    item.path,
                    self.device,
                    self.settings.score_precision,
                    self.settings.text_fusion,
                    self.settings.score_prepack,
                    artifact=loaded,
                    like=current,
                )
                if self.derive is not None:
                    served = self.derive(served)
                with self._lock:
                    self._active = served  # the swap: one reference assignment
            self.registry.set_active(version)
        self.metrics.set_active(version)
        self.metrics.swaps.inc()
        log.info("model %s active", version)
        if self.on_activate is not None:
            self.on_activate(version)
        now = self._active
        if now is not None:
            for listener in self.after_activate:
                listener(now.version, now.artifact)
        return item.summary(active=True)

    def serve_folder(self, folder: Path) -> ServedModel:
        """Serve the model folder ``folder`` as it is, outside the registry (named after the
        folder): the CLI's local commands."""
        served = ServedModel.load(
            folder.name or str(folder),
            folder,
            self.device,
            self.settings.score_precision,
            self.settings.text_fusion,
            self.settings.score_prepack,
            language=False,  # a one-shot command: the LM loads if it asks for completion
        )
        with self._lock:
            self._active = served
        return served

    def replace(self, old: ServedModel, new: ServedModel) -> bool:
        """Swap in ``new`` (derived from ``old``: graph changes applied) unless another
        version was activated since ``old`` was read; returns whether it was swapped in."""
        with self._lock:
            if self._active is not old:
                return False
            self._active = new
            return True

    # ---- the registry
    def list_models(self) -> tuple[list[dict[str, Any]], str]:
        """Every registered version's summary, newest first, and the active version."""
        active = self._active.base_version if self._active else ""
        return [v.summary(active=v.version == active) for v in self.registry.versions()], active

    def register(self, folder: Path, policy: str) -> tuple[str, bool, str]:
        """Register the artifact in ``folder`` (moved into the registry) and apply
        ``policy``. Returns (version, activated, why)."""
        policy = check_policy(policy)
        loaded = load_artifact(folder, device=self.device)  # verified once, served as loaded
        item = self.registry.register(folder, policy, verified=True)
        activate, why = self.decide(item, policy)
        self.registry.record_decision(item.version, why)
        if activate:
            self.activate(item.version, loaded=dataclasses.replace(loaded, path=item.path))
        return item.version, activate, why

    def decide(self, item: ModelVersion, policy: str) -> tuple[bool, str]:
        """Whether a newly registered version is activated under ``policy``, and why
        (:func:`kgweave.serving.activation.decide`: versions of other data never compared)."""
        current = self._active
        active = self.registry.get(current.base_version) if current is not None else None
        settings = self.settings
        return decide(
            policy, item, active, settings.validation_tolerance, settings.validation_noise_z
        )

    def active_summary(self) -> dict[str, Any] | None:
        """The active version's registry summary (its served name, cold starts included)."""
        served = self._active
        if served is None:
            return None
        summary = self.registry.get(served.base_version).summary(active=True)
        summary["version"] = served.version
        return summary
