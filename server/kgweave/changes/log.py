"""A durable, append-only change-event log with per-consumer offsets, retention and recovery.

Files (in the log's folder)::

    segments/00000000000000000000.seg   records with offsets 0, 1, 2, ...
    segments/00000000000000052311.seg   the next segment: named by the first offset it holds
    consumers/NAME.json                 {"next_offset": N}, replaced atomically

Each record::

    4 bytes  payload length, big-endian
    4 bytes  CRC-32 of the offset and the payload, big-endian
    8 bytes  the record's offset, big-endian
    n bytes  payload: one ChangeEvent as UTF-8 JSON

Offsets are monotonic and never reused: each record carries its own, so dropping old segments
or salvaging past damaged bytes never renumbers anything. Appends are flushed and fsynced before
they return (an acknowledged event is on disk).

Opening streams every segment once (bounded memory: a sparse index, one position every
:data:`INDEX_EVERY` records, is all that is kept). A record that fails its checks is handled by
what follows it:

- nothing valid after it, at the end of the newest segment: a torn write (a crash mid-append;
  never acknowledged). It is cut off, logged, and counted in :attr:`EventLog.recovered_bytes`.
- any valid record after it, or damage in an older (closed) segment: committed records were
  damaged. Opening is refused with :class:`~kgweave.errors.ArtifactError` naming the file, the
  byte position and the last good offset; with ``salvage=True`` the damaged bytes are dropped
  (the segment is rewritten and swapped in) and the offsets lost are reported
  (:attr:`EventLog.salvaged`, and the server log).

Retention: when a segment fills up (``segment_bytes``) a new one starts; closed segments whose
every record is below every consumer's committed offset and that were last written more than
``retention_s`` ago are deleted. With no consumer at all, age alone decides. A consumer whose
offset is below the oldest retained record reads from the oldest retained one.

Size (over 400 lines): the log's recovery (torn tails, salvage, conversion of the first format)
is part of opening it; the record format is in segments.py.
"""

from __future__ import annotations

import bisect
import json
import logging
import os
import re
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from kgweave import atomic
from kgweave.changes.events import ChangeEvent
from kgweave.changes.segments import (
    HEADER,
    LEGACY_HEADER,
    MAX_RECORD,
    READ_BUFFER,
    SEGMENT,
    Salvage,
    Segment,
    copy,
    encode_record,
    find_record,
    is_legacy_record,
    is_record,
    iter_positions,
    read_legacy_record,
    read_record,
)
from kgweave.errors import ArtifactError, InvalidArgumentError, echo
from kgweave.settings import Settings

log = logging.getLogger(__name__)

_CONSUMER = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class EventLog:
    """The log in ``folder``; safe for concurrent use by threads of one process."""

    def __init__(
        self,
        folder: Path,
        *,
        retention_s: float = 7 * 24 * 3600.0,
        segment_bytes: int = 64 << 20,
        salvage: bool = False,
    ) -> None:
        self.folder = folder
        self.segments_dir = folder / "segments"
        self.retention_s = retention_s
        self.segment_bytes = max(segment_bytes, 1)
        (folder / "consumers").mkdir(parents=True, exist_ok=True)
        self.segments_dir.mkdir(exist_ok=True)
        self._lock = threading.Lock()
        #: bytes of a torn last record cut off on open (a crash mid-append)
        self.recovered_bytes = 0
        #: damaged stretches dropped on open (only with ``salvage=True``)
        self.salvaged: list[Salvage] = []
        self._salvage = salvage
        self._migrate_legacy(folder / "events.log")
        self._segments: list[Segment] = []
        #: where the last read stopped: (segment file, next offset, its byte position), so a
        #: reader that goes on from there (the change applier, batch after batch) seeks
        #: straight to it instead of from the segment's index point (up to INDEX_EVERY back)
        self._cursor: tuple[Path, int, int] | None = None
        self._open_segments()
        self._end = self._segments[-1].last + 1
        self._handle = self._segments[-1].path.open("ab")
        self.compact()

    @classmethod
    def from_settings(cls, folder: Path, settings: Settings) -> EventLog:
        """The log with the server's ``event_log_*`` settings."""
        return cls(
            folder,
            retention_s=settings.event_log_retention_s,
            segment_bytes=settings.event_log_segment_mb << 20,
            salvage=settings.event_log_salvage,
        )

    # ---- open: scan, recover, salvage
    def _open_segments(self) -> None:
        for stale in [*self.segments_dir.glob("*.salvage"), *self.segments_dir.glob("*.migrating")]:
            stale.unlink()  # a rewrite a crash interrupted: the original is still in place
        names = sorted(p.name for p in self.segments_dir.iterdir() if SEGMENT.match(p.name))
        for name in names:
            segment = Segment(base=int(name[:20]), path=self.segments_dir / name)
            segment.last = segment.base - 1
            self._segments.append(segment)
        if not self._segments:
            self._segments.append(self._new_segment(0))
            return
        previous = -1
        for i, segment in enumerate(self._segments):
            if segment.base <= previous:
                raise ArtifactError(
                    f"{segment.path}: segment starts at offset {segment.base}, but the one "
                    f"before it already holds offset {previous}; refusing to guess"
                )
            following = self._segments[i + 1].base if i + 1 < len(self._segments) else None
            self._scan(segment, after=previous, following=following)
            previous = max(segment.last, previous)

    def _scan(self, segment: Segment, after: int, following: int | None) -> None:
        """Index ``segment`` (``following``: the next segment's first offset, None for the
        newest); handle a damaged record as the module docstring says."""
        newest = following is None
        damaged: list[tuple[int, int]] = []  # byte ranges [start, end) to drop
        size = segment.path.stat().st_size
        last = after
        with segment.path.open("rb", buffering=READ_BUFFER) as handle:
            position = 0
            kept = 0  # bytes before ``position`` that stay (for index positions after a drop)
            while position < size:
                record = read_record(handle, position, size, last)
                if isinstance(record, str):
                    resume = find_record(handle, position + 1, size, is_record(size, last))
                    if resume is None and newest:
                        self._cut_torn_tail(segment.path, position, size, record)
                        break
                    end = size if resume is None else resume
                    if not self._salvage:
                        after_it = "valid records" if resume is not None else "a newer segment"
                        raise ArtifactError(
                            f"{segment.path}: damaged record at byte {position} ({record}) with "
                            f"{after_it} after it; the last good offset is {last}. Refusing to "
                            "open the change log: "
                            "restore it from a backup, or set KGWEAVE_EVENT_LOG_SALVAGE=true to "
                            "drop the damaged bytes and keep the rest"
                        )
                    damaged.append((position, end))
                    handle.seek(end)
                    position = end
                    continue
                offset, length = record
                segment.note(offset, kept, length)
                last = offset
                position += HEADER.size + length
                kept += HEADER.size + length
        segment.size = kept
        if segment.count == 0:
            segment.last = max(segment.base - 1, after)
        if damaged:
            self._rewrite_without(segment, damaged, after, following)

    def _cut_torn_tail(self, path: Path, position: int, size: int, why: str) -> None:
        with path.open("r+b") as handle:
            handle.truncate(position)
            handle.flush()
            os.fsync(handle.fileno())
        self.recovered_bytes += size - position
        log.warning(
            "%s: cut a torn last record at byte %d (%s, %d bytes): a write a crash interrupted, "
            "never acknowledged",
            path,
            position,
            why,
            size - position,
        )

    def _rewrite_without(
        self, segment: Segment, damaged: list[tuple[int, int]], after: int, next_base: int | None
    ) -> None:
        """Salvage: copy ``segment`` without the damaged ranges, then swap it in."""
        tmp = segment.path.with_suffix(".salvage")
        with segment.path.open("rb") as source, tmp.open("wb") as target:
            position = 0
            for start, end in [*damaged, (segment.path.stat().st_size, 0)]:
                source.seek(position)
                copy(source, target, start - position)
                position = end
            target.flush()
            os.fsync(target.fileno())
        os.replace(tmp, segment.path)
        atomic.fsync_dir(self.segments_dir)
        # which offsets went missing: the gaps around each dropped range
        offsets = self._offsets_around(segment, damaged, after, next_base)
        for (start, end), (before, following) in zip(damaged, offsets, strict=True):
            report = Salvage(segment.path, start, end - start, (before + 1, following - 1))
            self.salvaged.append(report)
            log.warning("change log salvaged: %s", report.describe())

    @staticmethod
    def _offsets_around(
        segment: Segment, damaged: list[tuple[int, int]], after: int, next_base: int | None
    ) -> list[tuple[int, int]]:
        """For each dropped range: the last offset before it and the first after it."""
        out = []
        with segment.path.open("rb", buffering=READ_BUFFER) as handle:
            records = list(iter_positions(handle))
        removed = 0
        for start, end in damaged:
            kept_start = start - removed
            before = after
            following = None
            for position, offset in records:
                if position < kept_start:
                    before = offset
                elif following is None:
                    following = offset
            if following is None:  # damage at the end of a closed segment
                following = next_base if next_base is not None else before + 2
            out.append((before, following))
            removed += end - start
        return out

    def _migrate_legacy(self, legacy: Path) -> None:
        """Convert the first format (``events.log``, offsets implied) to segments, once."""
        if not legacy.is_file():
            return
        target = self.segments_dir / f"{0:020d}.seg"
        tmp = target.with_suffix(".migrating")
        size = legacy.stat().st_size
        with legacy.open("rb", buffering=READ_BUFFER) as source, tmp.open("wb") as out:
            offset = position = 0
            while position < size:
                payload = read_legacy_record(source, position, size)
                if isinstance(payload, str):
                    resume = find_record(
                        source, position + 1, size, is_legacy_record(size), LEGACY_HEADER.size
                    )
                    if resume is not None:
                        raise ArtifactError(
                            f"{legacy}: record {offset} at byte {position} is damaged ({payload}) "
                            "and valid records follow it; refusing to convert the change log"
                        )
                    log.warning("%s: cut a torn last record at byte %d", legacy, position)
                    break
                out.write(encode_record(offset, payload))
                offset += 1
                position += LEGACY_HEADER.size + len(payload)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)
        atomic.fsync_dir(self.segments_dir)
        legacy.unlink()
        atomic.fsync_dir(self.folder)
        log.info("%s: converted to %s (%d events)", legacy, target, offset)

    # ---- lifecycle
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
        """Offset the next appended event will get (one past the newest ever appended). It
        moves once per append, after the append is durable: a reader up to it reads whole
        appends only."""
        return self._end

    @property
    def first_offset(self) -> int:
        """Offset of the oldest retained event (``end_offset`` when none is)."""
        with self._lock:
            for segment in self._segments:
                if segment.count:
                    return segment.index_offsets[0]
            return self.end_offset

    @property
    def segment_paths(self) -> list[Path]:
        """The segment files, oldest first."""
        with self._lock:
            return [s.path for s in self._segments]

    # ---- writes
    def append(self, events: Iterable[ChangeEvent]) -> list[int]:
        """Append events durably; returns their offsets."""
        payloads = [json.dumps(e.to_dict(), ensure_ascii=False).encode() for e in events]
        too_big = [len(p) for p in payloads if len(p) > MAX_RECORD]
        if too_big:
            raise InvalidArgumentError(
                f"a change event of {too_big[0]} bytes is over the {MAX_RECORD}-byte limit"
            )
        with self._lock:
            rolled = False
            if self._segments[-1].size >= self.segment_bytes and self._segments[-1].count:
                self._roll()
                rolled = True
            segment = self._segments[-1]
            offsets = []
            chunks = []
            for payload in payloads:
                offset = segment.last + 1
                offsets.append(offset)
                chunks.append(encode_record(offset, payload))
                segment.note(offset, segment.size, len(payload))
            self._handle.write(b"".join(chunks))
            self._handle.flush()
            os.fsync(self._handle.fileno())
            self._end = segment.last + 1
        if rolled:
            self.compact()
        return offsets

    def _new_segment(self, base: int) -> Segment:
        segment = Segment(base=base, path=self.segments_dir / f"{base:020d}.seg", last=base - 1)
        segment.path.touch()
        atomic.fsync_dir(self.segments_dir)
        return segment

    def _roll(self) -> None:
        self._handle.close()
        self._segments.append(self._new_segment(self.end_offset))
        self._handle = self._segments[-1].path.open("ab")

    def compact(self, now: float | None = None) -> int:
        """Delete closed segments every consumer is past and older than the retention.

        Returns the number of events dropped. Runs on open and whenever a segment fills up.
        """
        floor = min(
            (self.position(p.stem) for p in (self.folder / "consumers").glob("*.json")),
            default=None,
        )
        now = time.time() if now is None else now
        dropped = 0
        with self._lock:
            if floor is None:
                floor = self.end_offset
            while len(self._segments) > 1:
                oldest = self._segments[0]
                if oldest.last >= floor or now - oldest.path.stat().st_mtime < self.retention_s:
                    break
                oldest.path.unlink()
                self._segments.pop(0)
                dropped += oldest.count
                log.info(
                    "change log: dropped %s (%d events, offsets up to %d)",
                    oldest.path.name,
                    oldest.count,
                    oldest.last,
                )
            if dropped:
                atomic.fsync_dir(self.segments_dir)
        return dropped

    # ---- reads
    def read(self, start: int, limit: int = 1000) -> list[tuple[int, ChangeEvent]]:
        """Up to ``limit`` events from offset ``start`` on (the oldest retained one at the
        earliest), with their offsets."""
        if start < 0:
            raise InvalidArgumentError(f"offset must be >= 0, got {start}")
        out: list[tuple[int, ChangeEvent]] = []
        with self._lock:
            first = bisect.bisect_right([s.base for s in self._segments], start) - 1
            for segment in self._segments[max(first, 0) :]:
                if segment.last < start or not segment.count:
                    continue
                for offset, payload in self._records(segment, start):
                    out.append((offset, ChangeEvent.from_dict(json.loads(payload))))
                    if len(out) >= limit:
                        return out
        return out

    def _records(self, segment: Segment, start: int) -> Iterator[tuple[int, bytes]]:
        """The records of ``segment`` from offset ``start`` on (call under the lock)."""
        cursor = self._cursor
        position = segment.start_position(start)
        if cursor is not None and cursor[:2] == (segment.path, start):
            position = max(position, cursor[2])
        if position >= segment.size:
            return
        buffer = min(READ_BUFFER, max(segment.size - position, 1 << 13))  # (what is left)
        with segment.path.open("rb", buffering=buffer) as f:
            f.seek(position)
            while position < segment.size:
                length, _, offset = HEADER.unpack(f.read(HEADER.size))
                payload = f.read(length)
                position += HEADER.size + length
                if offset >= start:
                    self._cursor = (segment.path, offset + 1, position)
                    yield offset, payload

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
        atomic.write_json(self._consumer_path(consumer), {"next_offset": next_offset})
