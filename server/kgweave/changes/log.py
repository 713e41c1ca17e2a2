"""A durable, append-only change-event log with per-consumer offsets.

File format (``events.log``): a sequence of records, each::

    4 bytes  payload length, big-endian
    4 bytes  CRC-32 of the payload, big-endian
    n bytes  payload: one ChangeEvent as UTF-8 JSON

A record's offset is its position in the sequence (0, 1, 2, ...): monotonic and never reused.
Appends are flushed and fsynced before they return. On open the file is scanned; a torn last
record (short, or failing its CRC — a crash mid-write) is detected and cut off, so the log
always ends at the last complete record. Corruption *before* the last record is refused, not
repaired: that is not a torn write.

Consumers keep their own offsets (``consumers/NAME.json``, replaced atomically): the offset
of the next event to read. Delivery is at-least-once: a consumer that crashes after handling
events but before committing sees them again.
"""

from __future__ import annotations

import json
import os
import re
import struct
import threading
import zlib
from collections.abc import Iterable
from pathlib import Path

from kgweave.changes.events import ChangeEvent
from kgweave.errors import ArtifactError, InvalidArgumentError, echo

_HEADER = struct.Struct(">II")
_CONSUMER = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class EventLog:
    """The log in ``folder``; safe for concurrent use by threads of one process."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.path = folder / "events.log"
        (folder / "consumers").mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._positions: list[int] = []  # byte position of each record
        self.recovered_bytes = self._recover()
        self._handle = self.path.open("ab")

    def _recover(self) -> int:
        """Index the records; cut a torn tail. Returns the number of bytes cut."""
        if not self.path.exists():
            self.path.touch()
            return 0
        data = self.path.read_bytes()
        position = 0
        while position < len(data):
            if position + _HEADER.size > len(data):
                break
            length, crc = _HEADER.unpack_from(data, position)
            end = position + _HEADER.size + length
            if end > len(data) or zlib.crc32(data[position + _HEADER.size : end]) != crc:
                if end < len(data):
                    raise ArtifactError(
                        f"{self.path}: record {len(self._positions)} at byte {position} is "
                        "corrupt and is not the last one; refusing to guess"
                    )
                break
            self._positions.append(position)
            position = end
        cut = len(data) - position
        if cut:
            with self.path.open("r+b") as handle:
                handle.truncate(position)
                handle.flush()
                os.fsync(handle.fileno())
        return cut

    def close(self) -> None:
        """Close the file; the log can be opened again later."""
        with self._lock:
            self._handle.close()

    def __enter__(self) -> EventLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def end_offset(self) -> int:
        """Offset the next appended event will get (= number of events)."""
        return len(self._positions)

    def append(self, events: Iterable[ChangeEvent]) -> list[int]:
        """Append events durably; returns their offsets."""
        payloads = [json.dumps(e.to_dict(), ensure_ascii=False).encode() for e in events]
        with self._lock:
            position = self._handle.tell()
            offsets = []
            chunks = []
            for payload in payloads:
                offsets.append(len(self._positions))
                self._positions.append(position)
                chunks.append(_HEADER.pack(len(payload), zlib.crc32(payload)) + payload)
                position += _HEADER.size + len(payload)
            self._handle.write(b"".join(chunks))
            self._handle.flush()
            os.fsync(self._handle.fileno())
        return offsets

    def read(self, start: int, limit: int = 1000) -> list[tuple[int, ChangeEvent]]:
        """Up to ``limit`` events from offset ``start`` on, with their offsets."""
        if start < 0:
            raise InvalidArgumentError(f"offset must be >= 0, got {start}")
        with self._lock:
            positions = self._positions[start : start + limit]
            end_byte = (
                self._positions[start + limit] if start + limit < len(self._positions) else None
            )
        if not positions:
            return []
        with self.path.open("rb") as handle:
            handle.seek(positions[0])
            blob = handle.read() if end_byte is None else handle.read(end_byte - positions[0])
        out = []
        for i, position in enumerate(positions):
            local = position - positions[0]
            length, _ = _HEADER.unpack_from(blob, local)
            payload = blob[local + _HEADER.size : local + _HEADER.size + length]
            out.append((start + i, ChangeEvent.from_dict(json.loads(payload))))
        return out

    # ---- consumer offsets
    def _consumer_path(self, consumer: str) -> Path:
        if not _CONSUMER.match(consumer):
            raise InvalidArgumentError(
                f"consumer name {echo(consumer)}: use 1-64 letters, digits, '_', '-' or '.'"
            )
        return self.folder / "consumers" / f"{consumer}.json"

    def position(self, consumer: str) -> int:
        """Offset of the next event ``consumer`` has not committed (0 for a new consumer)."""
        path = self._consumer_path(consumer)
        if not path.exists():
            return 0
        return int(json.loads(path.read_text())["next_offset"])

    def commit(self, consumer: str, next_offset: int) -> None:
        """Record that ``consumer`` has handled every event before ``next_offset``."""
        if not 0 <= next_offset <= self.end_offset:
            raise InvalidArgumentError(
                f"offset {next_offset} is outside the log (0..{self.end_offset})"
            )
        path = self._consumer_path(consumer)
        tmp = path.with_suffix(".tmp")
        with tmp.open("w") as handle:
            json.dump({"next_offset": next_offset}, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
