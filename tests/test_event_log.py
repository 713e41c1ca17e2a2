"""The durable change-event log: order, restarts, torn writes, consumer offsets."""

from __future__ import annotations

import threading
import time
import tracemalloc
from pathlib import Path

import pytest

from kgweave.changes import ChangeEvent, ChangeKind, EventLog
from kgweave.errors import ArtifactError, InvalidArgumentError


def _added(i: int) -> ChangeEvent:
    return ChangeEvent(
        ChangeKind.TRIPLE_ADDED, head=f"e{i}", relation="r", tail=f"e{i + 1}", time=1000.0 + i
    )


def test_append_read_and_offsets(tmp_path: Path) -> None:
    with EventLog(tmp_path) as log:
        assert log.append([_added(0), _added(1)]) == [0, 1]
        assert log.append(
            [ChangeEvent(ChangeKind.ENTITY_UPSERTED, entity="x", properties={"name": "X ü"})]
        ) == [2]
        events = log.read(0)
        assert [o for o, _ in events] == [0, 1, 2]
        assert events[0][1] == _added(0)
        assert events[2][1].properties == {"name": "X ü"}
        assert [o for o, _ in log.read(1, limit=1)] == [1]
        assert log.read(3) == []


def test_a_reader_going_on_reads_what_was_appended_since(tmp_path: Path) -> None:
    """A reader that goes on from where its last read stopped (the change applier) is served
    from there, across index points and segments; a read from elsewhere is not misled."""
    with EventLog(tmp_path, segment_bytes=20_000) as log:
        at, n = 0, 0
        for size in [1, 3, 300, 1, 250, 7, 600, 2]:  # index points every 256, several segments
            log.append([_added(n + i) for i in range(size)])
            n += size
            got = log.read(at, limit=n)
            assert [o for o, _ in got] == list(range(at, n))
            assert [e for _, e in got] == [_added(i) for i in range(at, n)]
            assert log.read(n - 1) == [(n - 1, _added(n - 1))]  # the last one, again
            back = at // 2  # a read from elsewhere
            assert log.read(back, limit=3) == [
                (i, _added(i)) for i in range(back, min(back + 3, n))
            ]
            at = n
        assert len(list((tmp_path / "segments").glob("*.seg"))) > 1
        assert log.read(n - 5, limit=2) == [(n - 5, _added(n - 5)), (n - 4, _added(n - 4))]
        assert log.read(n - 3) == [(i, _added(i)) for i in range(n - 3, n)]  # cut short: on


def test_nothing_lost_across_restart(tmp_path: Path) -> None:
    with EventLog(tmp_path) as log:
        log.append([_added(i) for i in range(50)])
        log.commit("trainer", 20)
    with EventLog(tmp_path) as log:
        assert log.recovered_bytes == 0
        assert log.end_offset == 50
        assert log.position("trainer") == 20
        assert log.read(20, limit=100)[0][1] == _added(20)
        assert log.append([_added(50)]) == [50]


def _segment(tmp_path: Path) -> Path:
    (segment,) = (tmp_path / "segments").glob("*.seg")
    return segment


def _record_positions(path: Path) -> list[int]:
    data = path.read_bytes()
    positions, at = [], 0
    while at < len(data):
        positions.append(at)
        at += 16 + int.from_bytes(data[at : at + 4], "big")
    return positions


@pytest.mark.parametrize("cut", [1, 5, 9, 16, 20])
def test_torn_last_record_is_detected_and_dropped(tmp_path: Path, cut: int) -> None:
    with EventLog(tmp_path) as log:
        log.append([_added(i) for i in range(3)])
    data = _segment(tmp_path).read_bytes()
    with EventLog(tmp_path) as log:
        log.append([_added(3)])
    # a crash mid-write: the last record is only partly on disk
    full = _segment(tmp_path).read_bytes()
    _segment(tmp_path).write_bytes(full[: len(data) + cut])
    with EventLog(tmp_path) as log:
        assert log.recovered_bytes == cut
        assert log.end_offset == 3
        assert [e for _, e in log.read(0)] == [_added(i) for i in range(3)]
        assert log.append([_added(9)]) == [3]  # offsets stay monotonic
    with EventLog(tmp_path) as log:
        assert log.read(3)[0][1] == _added(9)


def test_torn_batch_of_several_records_is_cut(tmp_path: Path) -> None:
    with EventLog(tmp_path) as log:
        log.append([_added(0)])
    kept = _segment(tmp_path).stat().st_size
    with EventLog(tmp_path) as log:
        log.append([_added(i) for i in range(1, 4)])
    full = _segment(tmp_path).read_bytes()
    _segment(tmp_path).write_bytes(full[: len(full) - 7])  # two whole records and a torn one
    record = (len(full) - kept) // 3  # three records of the same size
    with EventLog(tmp_path) as log:
        assert log.end_offset == 3 and log.recovered_bytes == record - 7


def test_flipped_byte_in_last_record_is_a_torn_write(tmp_path: Path) -> None:
    with EventLog(tmp_path) as log:
        log.append([_added(0), _added(1)])
    data = bytearray(_segment(tmp_path).read_bytes())
    data[-2] ^= 0xFF
    _segment(tmp_path).write_bytes(bytes(data))
    with EventLog(tmp_path) as log:
        assert log.end_offset == 1 and log.recovered_bytes > 0


def _thousand(tmp_path: Path) -> list[int]:
    with EventLog(tmp_path) as log:
        log.append([_added(i) for i in range(1000)])
        log.commit("trainer", 5)
    return _record_positions(_segment(tmp_path))


@pytest.mark.parametrize("bit", [0, 7, 24, 31])
def test_flipped_bit_in_a_length_field_is_refused_not_cut(tmp_path: Path, bit: int) -> None:
    """The issue's case: one bit of record 10's length made the log cut 990 events."""
    positions = _thousand(tmp_path)
    before = _segment(tmp_path).read_bytes()
    data = bytearray(before)
    data[positions[10] + 3 - bit // 8] ^= 1 << (bit % 8)
    _segment(tmp_path).write_bytes(bytes(data))
    with pytest.raises(ArtifactError) as caught:
        EventLog(tmp_path)
    message = str(caught.value)
    assert str(_segment(tmp_path)) in message
    assert f"damaged record at byte {positions[10]}" in message
    assert "last good offset is 9" in message and "KGWEAVE_EVENT_LOG_SALVAGE" in message
    assert _segment(tmp_path).read_bytes() == bytes(data)  # nothing cut, nothing fsynced


def test_flipped_bit_in_a_payload_is_refused(tmp_path: Path) -> None:
    positions = _thousand(tmp_path)
    data = bytearray(_segment(tmp_path).read_bytes())
    data[positions[500] + 30] ^= 0x04
    _segment(tmp_path).write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=rf"byte {positions[500]} \(checksum mismatch\)"):
        EventLog(tmp_path)


def test_salvage_keeps_what_follows_and_reports_the_loss(tmp_path: Path) -> None:
    positions = _thousand(tmp_path)
    data = bytearray(_segment(tmp_path).read_bytes())
    data[positions[10] + 2] ^= 0x10  # record 10's length
    data[positions[500] + 30] ^= 0x04  # record 500's payload
    _segment(tmp_path).write_bytes(bytes(data))
    with EventLog(tmp_path, salvage=True) as log:
        assert [s.lost_offsets for s in log.salvaged] == [(10, 10), (500, 500)]
        offsets = [o for o, _ in log.read(0, limit=2000)]
        assert offsets == [o for o in range(1000) if o not in (10, 500)]
        assert log.read(11, limit=1)[0][1] == _added(11)
        assert log.end_offset == 1000 and log.append([_added(1000)]) == [1000]  # never reused
        assert log.position("trainer") == 5
    with EventLog(tmp_path) as log:  # the rewritten segment opens cleanly
        assert log.salvaged == [] and len(log.read(0, limit=2000)) == 999


def test_damage_in_a_closed_segment_is_refused_even_at_its_end(tmp_path: Path) -> None:
    with EventLog(tmp_path, segment_bytes=500) as log:
        for i in range(20):
            log.append([_added(i)])
        oldest = log.segment_paths[0]
    data = oldest.read_bytes()
    oldest.write_bytes(data[:-3])  # not the newest segment: a committed record lost bytes
    with pytest.raises(ArtifactError, match="a newer segment after it"):
        EventLog(tmp_path, segment_bytes=500)
    with EventLog(tmp_path, segment_bytes=500, salvage=True) as log:
        (report,) = log.salvaged
        last = report.lost_offsets[0]
        assert report.lost_offsets == (last, last)  # the one record that lost its end
        assert [o for o, _ in log.read(0)] == [o for o in range(20) if o != last]


def test_retention_drops_whole_segments_every_consumer_is_past(tmp_path: Path) -> None:
    with EventLog(tmp_path, segment_bytes=1000, retention_s=3600) as log:
        for i in range(60):
            log.append([_added(i)])
        segments = log.segment_paths
        assert len(segments) > 5
        log.commit("trainer", 30)
        log.commit("indexer", 45)
        now = time.time()
        assert log.compact(now=now) == 0  # every segment is younger than the retention
        dropped = log.compact(now=now + 7200)
        assert 0 < dropped <= 30
        assert log.first_offset == dropped and log.first_offset <= 30
        assert log.segment_paths == segments[len(segments) - len(log.segment_paths) :]
        assert [o for o, _ in log.read(0, limit=5)] == list(range(dropped, dropped + 5))
        assert log.end_offset == 60 and log.append([_added(60)]) == [60]
        log.commit("trainer", 61)
        log.commit("indexer", 61)
        log.compact(now=now + 7200)
        assert len(log.segment_paths) == 1  # only the newest (written to) segment stays
        assert log.end_offset == 61
    with EventLog(tmp_path, segment_bytes=1000, retention_s=3600) as log:
        assert log.end_offset == 61 and log.append([_added(61)]) == [61]


def test_without_consumers_age_alone_decides(tmp_path: Path) -> None:
    with EventLog(tmp_path, segment_bytes=1000, retention_s=60) as log:
        for i in range(30):
            log.append([_added(i)])
        assert log.compact(now=time.time() + 120) > 0
        assert log.end_offset == 30


def test_open_streams_in_bounded_memory(tmp_path: Path) -> None:
    with EventLog(tmp_path) as log:
        for start in range(0, 40_000, 2000):
            log.append([_added(i) for i in range(start, start + 2000)])
    size = _segment(tmp_path).stat().st_size
    assert size > 4 << 20
    tracemalloc.start()
    try:
        with EventLog(tmp_path) as log:
            _, peak = tracemalloc.get_traced_memory()
            assert log.end_offset == 40_000
            assert log.read(31_337, limit=1)[0][1] == _added(31_337)
    finally:
        tracemalloc.stop()
    # a 1 MiB read buffer and a sparse index; the whole file would be > 4 MiB
    assert peak < (1 << 20) + 256 * 1024, (peak, size)


def test_first_format_is_converted(tmp_path: Path) -> None:
    import json
    import struct
    import zlib

    payloads = [json.dumps(_added(i).to_dict()).encode() for i in range(5)]
    legacy = b"".join(struct.pack(">II", len(p), zlib.crc32(p)) + p for p in payloads)
    (tmp_path / "events.log").write_bytes(legacy + legacy[:7])  # and a torn tail
    with EventLog(tmp_path) as log:
        assert not (tmp_path / "events.log").exists()
        assert [e for _, e in log.read(0)] == [_added(i) for i in range(5)]
        assert log.append([_added(5)]) == [5]


def test_first_format_with_damage_before_the_end_is_refused(tmp_path: Path) -> None:
    import json
    import struct
    import zlib

    payloads = [json.dumps(_added(i).to_dict()).encode() for i in range(5)]
    data = bytearray(b"".join(struct.pack(">II", len(p), zlib.crc32(p)) + p for p in payloads))
    data[1] ^= 0x40  # record 0's length now runs past the end
    (tmp_path / "events.log").write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="record 0 at byte 0 is damaged"):
        EventLog(tmp_path)
    assert (tmp_path / "events.log").read_bytes() == bytes(data)


def test_concurrent_appends_keep_every_event(tmp_path: Path) -> None:
    with EventLog(tmp_path) as log:

        def writer(start: int) -> None:
            for i in range(start, start + 50):
                log.append([_added(i)])

        threads = [threading.Thread(target=writer, args=(k * 100,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        heads = sorted(e.head for _, e in log.read(0, limit=1000))
    assert len(heads) == 200 and len(set(heads)) == 200


def test_bad_input(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="needs head, relation and tail"):
        ChangeEvent(ChangeKind.TRIPLE_ADDED, head="a")
    with pytest.raises(InvalidArgumentError, match="needs an entity"):
        ChangeEvent(ChangeKind.ENTITY_DELETED)
    with pytest.raises(InvalidArgumentError, match="unknown change kind"):
        ChangeEvent.from_dict({"kind": "exploded"})
    with EventLog(tmp_path) as log:
        with pytest.raises(InvalidArgumentError, match="consumer name"):
            log.commit("../etc", 0)
        with pytest.raises(InvalidArgumentError, match="outside the log"):
            log.commit("c", 5)


def test_settings_reach_the_server_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from kgweave.settings import get_settings

    monkeypatch.setenv("KGWEAVE_EVENT_LOG_RETENTION_S", "5")
    monkeypatch.setenv("KGWEAVE_EVENT_LOG_SEGMENT_MB", "2")
    monkeypatch.setenv("KGWEAVE_EVENT_LOG_SALVAGE", "true")
    (tmp_path / "segments").mkdir()
    (tmp_path / "segments" / f"{0:020d}.salvage").write_bytes(b"half a rewrite")
    with EventLog.from_settings(tmp_path, get_settings()) as log:
        assert (log.retention_s, log.segment_bytes, log._salvage) == (5.0, 2 << 20, True)
        assert [p.name for p in (tmp_path / "segments").iterdir()] == [f"{0:020d}.seg"]
