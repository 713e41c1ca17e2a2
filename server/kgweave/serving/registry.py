"""The model registry: a folder of model versions and a pointer to the active one.

Layout::

    models/
      v0001/          a model artifact (kgweave.artifact), never changed once registered
      v0002/
      active.json     {"version": "v0002", "activated_at": ...}, replaced atomically

A version is registered by moving a finished artifact folder in (one rename on the same file
system), so a reader never sees half a version.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kgweave.artifact import CONFIG, load_artifact
from kgweave.errors import ArtifactError, NotFoundError, did_you_mean, echo

ACTIVE = "active.json"
_VERSION = re.compile(r"^v(\d{4,})$")


@dataclass(frozen=True)
class ModelVersion:
    """A registered version as listed (config only, weights not loaded)."""

    version: str
    path: Path
    config: dict[str, Any]

    @property
    def valid_mrr(self) -> float | None:
        value = self.config.get("metrics", {}).get("valid", {}).get("mrr")
        return float(value) if value is not None else None

    def summary(self, active: bool) -> dict[str, Any]:
        """Plain data for the transports."""
        model = self.config.get("model", {})
        metrics = self.config.get("metrics", {})
        fusion = metrics.get("text_fusion") or {}
        return {
            "version": self.version,
            "model": model.get("name", ""),
            "dim": int(model.get("dim", 0)),
            "num_entities": int(model.get("num_entities", 0)),
            "num_relations": int(model.get("num_relations", 0)) // 2,
            "valid_metrics": _numbers(metrics.get("valid", {})),
            "test_metrics": _numbers(metrics.get("test", {})),
            "fused_valid_metrics": (
                {"mrr": float(fusion["valid_mrr"])} if "valid_mrr" in fusion else {}
            )
            | {
                f"held_out_{k}": float(v)
                for k, v in (fusion.get("held_out") or {}).items()
                if isinstance(v, int | float)
            },
            "fused_test_metrics": _numbers(fusion.get("test", {})),
            "created_at": str(self.config.get("created_at", "")),
            "active": active,
            "source": str(self.config.get("source", self.config.get("dataset", {}).get("name"))),
        }


def _numbers(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if isinstance(v, int | float)}


class ModelRegistry:
    """Versions in ``root``; safe for the threads of one server process."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def versions(self) -> list[ModelVersion]:
        """Every registered version, newest first (unreadable folders are skipped)."""
        out = []
        for path in self.root.iterdir():
            if not (_VERSION.match(path.name) and (path / CONFIG).is_file()):
                continue
            try:
                config = json.loads((path / CONFIG).read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            out.append(ModelVersion(path.name, path, config))
        return sorted(out, key=lambda v: int(v.version[1:]), reverse=True)

    def get(self, version: str) -> ModelVersion:
        for item in self.versions():
            if item.version == version:
                return item
        known = [v.version for v in self.versions()]
        raise NotFoundError(f"no model version {echo(version)}{did_you_mean(version, known)}")

    def register(self, artifact_dir: Path) -> ModelVersion:
        """Verify the artifact in ``artifact_dir`` and move it in as the next version."""
        load_artifact(artifact_dir)  # refuses anything corrupt before it becomes a version
        with self._lock:
            numbers = [
                int(m.group(1)) for p in self.root.iterdir() if (m := _VERSION.match(p.name))
            ]
            version = f"v{max(numbers, default=0) + 1:04d}"
            target = self.root / version
            try:
                os.replace(artifact_dir, target)
            except OSError as exc:
                raise ArtifactError(f"cannot register {artifact_dir}: {exc}") from exc
        return self.get(version)

    def active_version(self) -> str | None:
        path = self.root / ACTIVE
        if not path.is_file():
            return None
        try:
            version = json.loads(path.read_text(encoding="utf-8")).get("version")
        except (OSError, ValueError):
            return None
        return str(version) if version and (self.root / version / CONFIG).is_file() else None

    def set_active(self, version: str) -> None:
        """Point ``active.json`` at ``version`` (atomic replace)."""
        self.get(version)
        tmp = self.root / (ACTIVE + ".tmp")
        tmp.write_text(json.dumps({"version": version, "activated_at": time.time()}))
        os.replace(tmp, self.root / ACTIVE)


def stage_copy(folder: Path, staging_root: Path) -> Path:
    """A verified copy of the artifact in ``folder`` under ``staging_root``, ready for
    :meth:`ModelRegistry.register` (which moves it in): the user's folder is left alone."""
    import shutil
    import tempfile

    load_artifact(folder)  # refuses anything corrupt before copying
    staging_root.mkdir(parents=True, exist_ok=True)
    target = Path(tempfile.mkdtemp(prefix="register-", dir=staging_root)) / "model"
    try:
        shutil.copytree(folder, target)
    except OSError as exc:
        shutil.rmtree(target.parent, ignore_errors=True)
        raise ArtifactError(f"cannot copy {folder}: {exc}") from exc
    return target
