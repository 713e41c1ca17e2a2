"""The model registry: a folder of model versions and a pointer to the active one.

Layout::

    models/
      v0001/          a model artifact (kgweave.artifact), never changed once registered
      v0002/
      active.json     {"version": "v0002", "activated_at": ...}, replaced atomically
      journal.json    the activations (newest last) and each version's registration policy

A version is registered by moving a finished artifact folder in (one rename on the same file
system), so a reader never sees half a version. Every write is atomic and fsynced, file and
folder (:mod:`kgweave.atomic`).

Which version to serve at start (:meth:`ModelRegistry.choose_active`) is never a guess: the one
``active.json`` names; if that file is empty, corrupt or names a missing version, the last
version activated before it (known good, from the journal), logged as a warning; with no such
record, a clear error. Only a registry that was never activated at all (no ``active.json``, no
journal: made by hand or by an old kgweave) serves its newest version, and never one
registered with the policy ``never``.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kgweave import atomic
from kgweave.artifact import CONFIG, load_artifact
from kgweave.errors import ArtifactError, FailedPreconditionError, NotFoundError, did_you_mean, echo
from kgweave.serving.activation import NEVER

log = logging.getLogger(__name__)

ACTIVE = "active.json"
JOURNAL = "journal.json"
#: activations kept in the journal
HISTORY = 50
#: a deleted version's folder, renamed out of the versions until it is removed
DELETED = ".deleted-"
_VERSION = re.compile(r"^v(\d{4,})$")


@dataclass(frozen=True)
class ModelVersion:
    """A registered version as listed (config only, weights not loaded)."""

    version: str
    path: Path
    config: dict[str, Any]
    #: why it was or was not activated when registered (the policy's reason)
    decision: str = ""

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
            "decision": self.decision,
        }


def version_number(version: str) -> int:
    """A registry version's number (``v0012``: 12; -1 for a name that is no version's)."""
    match = _VERSION.match(version)
    return int(match.group(1)) if match else -1


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
        registered = self._journal()["registered"]
        out = [v for p in self.root.iterdir() if (v := self._read(p.name, registered))]
        return sorted(out, key=lambda v: int(v.version[1:]), reverse=True)

    def get(self, version: str) -> ModelVersion:
        """One version, reading its config only (NotFoundError when there is no such version,
        or it cannot be read: as :meth:`versions` skips it)."""
        found = self._read(version, self._journal()["registered"])
        if found is not None:
            return found
        known = [p.name for p in self.root.iterdir() if _VERSION.match(p.name)]
        raise NotFoundError(f"no model version {echo(version)}{did_you_mean(version, known)}")

    def _read(self, version: str, registered: dict[str, Any]) -> ModelVersion | None:
        """The version named ``version`` (its config read), or None when it is not one."""
        path = self.root / version
        if not (_VERSION.match(version) and (path / CONFIG).is_file()):
            return None
        try:
            config = json.loads((path / CONFIG).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        decision = str(registered.get(version, {}).get("decision", ""))
        return ModelVersion(version, path, config, decision)

    def register(
        self, artifact_dir: Path, policy: str = "", verified: bool = False
    ) -> ModelVersion:
        """Verify the artifact in ``artifact_dir`` (unless the caller has: ``verified``) and
        move it in as the next version (``policy``: the activation policy it was registered
        under, kept in the journal)."""
        if not verified:
            load_artifact(artifact_dir)  # refuses anything corrupt before it becomes a version
        with self._lock:
            numbers = [version_number(p.name) for p in self.root.iterdir()]
            version = f"v{max([0, *numbers]) + 1:04d}"
            target = self.root / version
            try:
                atomic.move_in(artifact_dir, target)
            except OSError as exc:
                raise ArtifactError(f"cannot register {artifact_dir}: {exc}") from exc
            journal = self._journal()
            journal["registered"][version] = {"policy": policy, "registered_at": time.time()}
            atomic.write_json(self.root / JOURNAL, journal, indent=1)
        return self.get(version)

    def delete(self, version: str) -> None:
        """Remove ``version`` from the registry (renamed out of the versions first, so a reader
        never sees half of one; then deleted) and from the journal's registrations. Never the
        active version (FailedPreconditionError)."""
        import shutil

        with self._lock:
            if version == self.active_version():
                raise FailedPreconditionError(f"{version} is the active version")
            path = self.root / version
            if not _VERSION.match(version) or not path.is_dir():
                raise NotFoundError(f"no model version {echo(version)}")
            path.rename(self.root / f"{DELETED}{version}")
            journal = self._journal()
            journal["registered"].pop(version, None)
            atomic.write_json(self.root / JOURNAL, journal, indent=1)
        for gone in self.root.glob(f"{DELETED}*"):  # (and any a crash left half-deleted)
            shutil.rmtree(gone, ignore_errors=True)

    def record_decision(self, version: str, why: str) -> None:
        """Keep the activation policy's reason for ``version`` in the journal (listed with
        the version: ``kgweave models list``)."""
        with self._lock:
            journal = self._journal()
            journal["registered"].setdefault(version, {})["decision"] = why
            atomic.write_json(self.root / JOURNAL, journal, indent=1)

    def active_version(self) -> str | None:
        """The version ``active.json`` names, if it is readable and that version exists."""
        version, _problem = self._read_active()
        return version

    def choose_active(self) -> str | None:
        """The version to serve at start: ``active.json``'s; else (the file is empty, corrupt
        or names a missing version) the last known good one, with a warning in the log; None
        when no version was ever registered or activated.

        Raises:
            FailedPreconditionError: ``active.json`` is unusable and no earlier activation
                is recorded (the message says how to choose one).
        """
        version, problem = self._read_active()
        if version is not None:
            return version
        existing = {v.version for v in self.versions()}
        journal = self._journal()
        for entry in reversed(journal["activations"]):
            earlier = entry.get("version")
            if earlier in existing:
                log.warning(
                    "%s %s: serving %s, the last version activated before (known good)",
                    self.root / ACTIVE,
                    problem,
                    earlier,
                )
                return str(earlier)
        if (self.root / ACTIVE).exists():
            raise FailedPreconditionError(
                f"{self.root / ACTIVE} {problem} and no earlier activation is recorded: write "
                '{"version": "vNNNN"} into it to choose the version to serve'
            )
        never = {v for v, e in journal["registered"].items() if e.get("policy") == NEVER}
        candidates = sorted(existing - never, key=lambda v: int(v[1:]), reverse=True)
        if not candidates:
            return None
        log.warning(
            "no version of %s was ever activated: serving the newest, %s", self.root, candidates[0]
        )
        return candidates[0]

    def set_active(self, version: str) -> None:
        """Point ``active.json`` at ``version`` and record the activation (atomic, durable)."""
        self.get(version)
        entry = {"version": version, "activated_at": time.time()}
        with self._lock:
            atomic.write_json(self.root / ACTIVE, entry)
            journal = self._journal()
            history = journal["activations"]
            if not history or history[-1].get("version") != version:
                history.append(entry)
            journal["activations"] = history[-HISTORY:]
            atomic.write_json(self.root / JOURNAL, journal, indent=1)

    def _read_active(self) -> tuple[str | None, str]:
        """(version, "") from ``active.json``, or (None, what is wrong with it)."""
        path = self.root / ACTIVE
        if not path.is_file():
            return None, "is missing"
        try:
            version, problem = _parse_active(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            return None, f"is unreadable ({exc})"
        if version is not None and not (self.root / version / CONFIG).is_file():
            return None, f"names {version}, which does not exist"
        return version, problem

    def _journal(self) -> dict[str, Any]:
        """The journal (a damaged one reads as empty: it only narrows the fallbacks)."""
        journal: dict[str, Any] = {"activations": [], "registered": {}}
        try:
            data = json.loads((self.root / JOURNAL).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError):
            return journal
        if isinstance(data, dict):
            if isinstance(data.get("activations"), list):
                journal["activations"] = [e for e in data["activations"] if isinstance(e, dict)]
            if isinstance(data.get("registered"), dict):
                journal["registered"] = {
                    k: e for k, e in data["registered"].items() if isinstance(e, dict)
                }
        return journal


def _parse_active(text: str) -> tuple[str | None, str]:
    """(version, "") from the text of ``active.json``, or (None, what is wrong with it)."""
    if not text.strip():
        return None, "is empty"
    try:
        data = json.loads(text)
    except ValueError:
        return None, "is not valid JSON"
    version = data.get("version") if isinstance(data, dict) else None
    if not isinstance(version, str) or not _VERSION.match(version):
        return None, "names no version"
    return version, ""


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
