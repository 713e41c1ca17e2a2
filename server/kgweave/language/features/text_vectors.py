"""Entity text vectors kept on disk by their text, so no version encodes the graph again.

Every served version needs its entities' text vectors (cold start, semantic entity search).
They depend on the entity's text (``name: description``) and the encoder only, not on the
model: one file per encoder in the cache folder holds every text vector encoded so far, with
a 64-bit digest of each text. A version looks its texts up by digest and encodes only the
texts not seen before (new entities, changed descriptions), then adds them to the file. So an
incremental update, a full retrain and a restart cost a lookup, and a new entity costs one
encoding, whatever the graph's size (FB15k-237: 14,541 texts encoded once, ~1-2 CPU-minutes).
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors.torch import load_file, save_file

from kgweave import atomic

if TYPE_CHECKING:
    from kgweave.language.components.encoder import TextEncoder

#: one lock per cache file: the serving threads that look texts up share the file
_LOCKS: dict[Path, threading.Lock] = {}
_LOCKS_LOCK = threading.Lock()
#: each cache file as last read or written by this process, with its modification time: a
#: version derived per change batch looks its texts up without reading the file again
_MEMORY: dict[Path, tuple[int, dict[str, torch.Tensor]]] = {}
#: files of the cache's first layout (one file per model version, named by a 24-hex key)
_LEGACY = re.compile(r"[0-9a-f]{24}\.safetensors")


def text_digests(texts: list[str]) -> torch.Tensor:
    """A 64-bit digest of each text: shape (N,) int64."""

    def digest(text: str) -> int:
        raw = hashlib.blake2b(text.encode(), digest_size=8).digest()
        return int.from_bytes(raw, "little", signed=True)

    return torch.tensor([digest(t) for t in texts], dtype=torch.int64)


def _lock(path: Path) -> threading.Lock:
    with _LOCKS_LOCK:
        return _LOCKS.setdefault(path, threading.Lock())


def _positions(known: torch.Tensor, digests: torch.Tensor) -> torch.Tensor:
    """Where each of ``digests`` (N,) is in ``known`` (M,), -1 where it is not: shape (N,)."""
    found = torch.full((len(digests),), -1, dtype=torch.long)
    if len(known):
        order = torch.argsort(known)
        at = torch.searchsorted(known[order], digests).clamp(max=len(known) - 1)
        hit = known[order][at] == digests
        found[hit] = order[at[hit]]
    return found


#: texts encoded between two checks of ``should_stop`` (about 10-20 s on 2 CPU cores)
CHUNK = 2048


class EncodingStoppedError(Exception):
    """``should_stop`` ended :func:`cached_text_vectors`: what it encoded is in the cache."""


def cached_text_vectors(
    texts: list[str],
    encoder: TextEncoder,
    cache_dir: Path,
    batch_size: int = 128,
    should_stop: Callable[[], bool] | None = None,
) -> torch.Tensor:
    """The vectors of ``texts`` under ``encoder``: those in the cache looked up, the others
    encoded (each distinct text once, :data:`CHUNK` at a time) and added to it.

    Returns:
        shape (N, D), in the order of ``texts``.
    Raises:
        EncodingStoppedError: ``should_stop`` (polled between chunks) said stop; the chunks
            encoded so far are saved, so the next call encodes only the rest.
    """
    key = hashlib.sha256(encoder.spec.encode()).hexdigest()[:24]
    path = cache_dir / f"text-{key}.safetensors"
    digests = text_digests(texts)
    with _lock(path):
        stored = _read(path)
        known = stored.get("digests", torch.zeros(0, dtype=torch.int64))
        vectors = stored.get("vectors")
        found = _positions(known, digests)
        if vectors is None or bool((found < 0).any()):
            distinct: dict[int, str] = {}
            for i in torch.nonzero(found < 0).squeeze(1).tolist():
                distinct.setdefault(int(digests[i]), texts[i])
            todo = list(distinct.items())
            parts: list[torch.Tensor] = [] if vectors is None else [vectors]
            done = 0
            for start in range(0, len(todo), CHUNK):
                if start and should_stop is not None and should_stop():
                    break
                chunk = [text for _, text in todo[start : start + CHUNK]]
                parts.append(encoder.encode(chunk, batch_size=batch_size))
                done = start + len(chunk)
            vectors = torch.cat(parts)
            known = torch.cat((known, torch.tensor([d for d, _ in todo[:done]], dtype=torch.int64)))
            cache_dir.mkdir(parents=True, exist_ok=True)
            stored = {"vectors": vectors.contiguous(), "digests": known}
            with atomic.atomic_path(path) as tmp:
                save_file(stored, str(tmp))
            _MEMORY[path] = (path.stat().st_mtime_ns, stored)
            _remove_legacy(cache_dir)
            if done < len(todo):
                raise EncodingStoppedError(f"stopped after encoding {done} of {len(todo)} texts")
            found = _positions(known, digests)
        return vectors[found]


def _read(path: Path) -> dict[str, torch.Tensor]:
    """The cache file's tensors: from memory while the file is the one this process last
    read or wrote, else read (and kept)."""
    if not path.is_file():
        return {}
    mtime = path.stat().st_mtime_ns
    kept = _MEMORY.get(path)
    if kept is not None and kept[0] == mtime:
        return kept[1]
    stored = load_file(str(path))
    _MEMORY[path] = (mtime, stored)
    return stored


def _remove_legacy(cache_dir: Path) -> None:
    """Delete the first layout's files (one per model version: ~22 MB each on FB15k-237)."""
    for old in cache_dir.iterdir():
        if _LEGACY.fullmatch(old.name):
            old.unlink(missing_ok=True)
