"""The event log's file format: records (length, CRC-32, offset, JSON payload), segments with
a sparse index, and the scans that find records again after damage
(:class:`kgweave.changes.log.EventLog` is the log built on them)."""

from __future__ import annotations

import bisect
import os
import re
import struct
import zlib
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

HEADER = struct.Struct(">IIQ")
OFFSET = struct.Struct(">Q")
LEGACY_HEADER = struct.Struct(">II")
SEGMENT = re.compile(r"^(\d{20})\.seg$")
#: no single event is larger (an HTTP body of events is capped at 64 MiB)
MAX_RECORD = 64 << 20
#: one index entry every this many records
INDEX_EVERY = 256
READ_BUFFER = 1 << 20


def record_crc(offset: int, payload: bytes) -> int:
    return zlib.crc32(payload, zlib.crc32(OFFSET.pack(offset)))


def encode_record(offset: int, payload: bytes) -> bytes:
    """One record's bytes (header and payload)."""
    return HEADER.pack(len(payload), record_crc(offset, payload), offset) + payload


@dataclass
class Segment:
    base: int  # first offset this segment may hold (its name)
    path: Path
    last: int = -1  # offset of its last record (base - 1 when empty)
    size: int = 0
    count: int = 0
    index_offsets: array[int] = field(default_factory=lambda: array("Q"))
    index_positions: array[int] = field(default_factory=lambda: array("Q"))

    def note(self, offset: int, position: int, length: int) -> None:
        if self.count % INDEX_EVERY == 0:
            self.index_offsets.append(offset)
            self.index_positions.append(position)
        self.count += 1
        self.last = offset
        self.size = position + HEADER.size + length

    def start_position(self, offset: int) -> int:
        """Byte position of an indexed record at or before ``offset``."""
        i = bisect.bisect_right(self.index_offsets, offset) - 1
        return self.index_positions[i] if i >= 0 else 0


@dataclass(frozen=True)
class Salvage:
    """Damaged bytes dropped by ``salvage=True``: where, and which offsets were lost."""

    path: Path
    position: int
    dropped_bytes: int
    lost_offsets: tuple[int, int]  # first and last offset missing (inclusive), by the gap

    def describe(self) -> str:
        lost = self.lost_offsets[1] - self.lost_offsets[0] + 1
        return (
            f"{self.path}: dropped {self.dropped_bytes} damaged bytes at byte {self.position}; "
            f"{lost} event(s) lost (offsets {self.lost_offsets[0]}..{self.lost_offsets[1]})"
        )


def read_record(handle: BinaryIO, position: int, size: int, last: int) -> tuple[int, int] | str:
    """The record at ``position`` as (offset, payload length), or why it is not one."""
    header = handle.read(HEADER.size)
    if len(header) < HEADER.size:
        return "short header"
    length, crc, offset = HEADER.unpack(header)
    if length > MAX_RECORD or position + HEADER.size + length > size:
        return f"length {length} runs past the end of the file"
    payload = handle.read(length)
    if record_crc(offset, payload) != crc:
        return "checksum mismatch"
    if offset <= last:
        return f"offset {offset} does not follow {last}"
    return offset, length


def read_legacy_record(handle: BinaryIO, position: int, size: int) -> bytes | str:
    """The first format's record at ``position``: its payload, or why it is not one."""
    header = handle.read(LEGACY_HEADER.size)
    if len(header) < LEGACY_HEADER.size:
        return "short header"
    length, crc = LEGACY_HEADER.unpack(header)
    if length > MAX_RECORD or position + LEGACY_HEADER.size + length > size:
        return f"length {length} runs past the end of the file"
    payload = handle.read(length)
    return payload if zlib.crc32(payload) == crc else "checksum mismatch"


def is_record(size: int, last: int) -> Callable[[BinaryIO, int], object]:
    return lambda handle, position: read_record(handle, position, size, last)


def is_legacy_record(size: int) -> Callable[[BinaryIO, int], object]:
    return lambda handle, position: read_legacy_record(handle, position, size)


def find_record(
    handle: BinaryIO,
    start: int,
    size: int,
    check: Callable[[BinaryIO, int], object],
    header_size: int = HEADER.size,
) -> int | None:
    """Position of the first valid record at or after byte ``start`` (resynchronising after
    damage), or None. Candidates are the bytes before each ``{`` that opens a JSON payload;
    ``check(handle, position)`` reads one (returning a string when it is not a record)."""
    chunk_start = start
    while chunk_start < size:
        handle.seek(chunk_start)
        chunk = handle.read(READ_BUFFER)
        i = chunk.find(b"{")
        while i >= 0:
            candidate = chunk_start + i - header_size
            if candidate >= start:
                handle.seek(candidate)
                if not isinstance(check(handle, candidate), str):
                    return candidate
            i = chunk.find(b"{", i + 1)
        chunk_start += len(chunk)
    return None


def iter_positions(handle: BinaryIO) -> Iterator[tuple[int, int]]:
    position = 0
    while header := handle.read(HEADER.size):
        length, _, offset = HEADER.unpack(header)
        yield position, offset
        handle.seek(length, os.SEEK_CUR)
        position += HEADER.size + length


def copy(source: BinaryIO, target: BinaryIO, count: int) -> None:
    while count > 0:
        chunk = source.read(min(count, READ_BUFFER))
        if not chunk:
            return
        target.write(chunk)
        count -= len(chunk)
