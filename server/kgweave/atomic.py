"""Durable file writes and checksums: the one way kgweave writes a file that must survive a crash.

Every writer of state that a later process reads (model artifacts, the registry's pointers,
training checkpoints, graph snapshots and id maps, caches) goes through this module
(:func:`atomic_path`, :func:`open_atomic` or the ``write_*`` shorthands): the data goes to a
temporary file beside the target, which is fsynced and renamed over the target (``os.replace``:
readers see the old file or the new one, never half of one); then the folder is fsynced so the
rename itself survives a power cut.

:func:`sha256_file` and :func:`verify_sha256` are the checksums the artifacts record and check.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from kgweave.errors import ArtifactError

TMP_SUFFIX = ".tmp"


def fsync_dir(folder: Path) -> None:
    """Make the entries of ``folder`` (a rename, a new file) durable.

    A no-op where directories cannot be opened (Windows).
    """
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    """Make a file's bytes durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _new_tmp(path: Path) -> Path:
    """A temporary path beside ``path`` (same folder: the rename stays atomic)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # unique per process and thread; created with the usual permissions (umask), unlike mkstemp
    return path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}{TMP_SUFFIX}")


def leftovers(path: Path) -> list[Path]:
    """Temporary files of ``path`` that writers killed mid-write left beside it (only safe to
    remove when no writer of ``path`` runs)."""
    return sorted(path.parent.glob(f".{path.name}.*{TMP_SUFFIX}"))


def _commit(tmp: Path, path: Path) -> None:
    """fsync ``tmp``, rename it over ``path``, fsync the folder."""
    fsync_file(tmp)
    os.replace(tmp, path)
    fsync_dir(path.parent)


@contextlib.contextmanager
def atomic_path(path: Path, file_mode: int | None = None) -> Iterator[Path]:
    """A temporary path to write in place of ``path`` (e.g. ``safetensors.save_file``); when
    the block ends without an error it is fsynced and renamed over ``path`` and the folder is
    fsynced. On any error the temporary file is removed and ``path`` is untouched.
    ``file_mode``: the permissions the file gets (0o600 for secrets), else the umask's."""
    tmp = _new_tmp(path)
    try:
        if file_mode is not None:  # created with the mode before anything is written
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, file_mode))
            os.chmod(tmp, file_mode)
        yield tmp
        _commit(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def open_atomic(
    path: Path, mode: str = "w", encoding: str | None = "utf-8", newline: str | None = None
) -> Iterator[IO[Any]]:
    """A handle (``mode`` "w" or "wb") to stream a file that replaces ``path`` atomically and
    durably when the block ends without an error; on an error ``path`` is untouched."""
    encoding = None if "b" in mode else encoding
    with atomic_path(path) as tmp, tmp.open(mode, encoding=encoding, newline=newline) as handle:
        yield handle


def write_bytes(path: Path, data: bytes, file_mode: int | None = None) -> None:
    """Replace ``path`` with ``data``, atomically and durably (``file_mode``: see
    :func:`atomic_path`)."""
    with atomic_path(path, file_mode) as tmp:
        tmp.write_bytes(data)


def write_text(path: Path, text: str, file_mode: int | None = None) -> None:
    """Replace ``path`` with UTF-8 ``text``, atomically and durably."""
    write_bytes(path, text.encode("utf-8"), file_mode)


def write_json(path: Path, value: Any, indent: int | None = None) -> None:
    """Replace ``path`` with a JSON document (UTF-8, non-ASCII kept), atomically and durably."""
    write_text(path, json.dumps(value, indent=indent, ensure_ascii=False))


def move_in(source: Path, target: Path) -> None:
    """Rename ``source`` (a file or a folder) to ``target`` on the same file system, durably
    (both folders fsynced)."""
    os.replace(source, target)
    fsync_dir(target.parent)
    if source.parent != target.parent:
        fsync_dir(source.parent)


def read_json(path: Path) -> Any:
    """A JSON document of an artifact.

    Raises:
        ArtifactError: the file cannot be read or is not JSON (the message names it).
    """
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{path}: unreadable ({exc})") from exc


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes (read in 1 MiB chunks)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_json(value: Any) -> str:
    """Hex sha256 of ``value``'s canonical JSON (sorted keys, no spaces, UTF-8): the same for
    any formatting of the same document."""
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def verify_sha256(path: Path, expected: object) -> None:
    """Check a file against its recorded sha256.

    Raises:
        ArtifactError: the file is missing, or its bytes do not match ``expected``.
    """
    if not path.is_file():
        raise ArtifactError(f"{path.parent}: missing {path.name}")
    if not isinstance(expected, str) or sha256_file(path) != expected:
        raise ArtifactError(f"{path}: checksum mismatch, the file is corrupt or was replaced")


def read_verified(path: Path, expected: object) -> bytes:
    """A file's bytes, checked against its recorded sha256: what is used is what was checked
    (no second read that a replaced file could change).

    Raises:
        ArtifactError: as :func:`verify_sha256`.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ArtifactError(f"{path.parent}: missing {path.name}") from None
    except OSError as exc:
        raise ArtifactError(f"{path}: unreadable ({exc.strerror or exc})") from exc
    if not isinstance(expected, str) or hashlib.sha256(data).hexdigest() != expected:
        raise ArtifactError(f"{path}: checksum mismatch, the file is corrupt or was replaced")
    return data
