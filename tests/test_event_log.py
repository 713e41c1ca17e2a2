"""The durable change-event log: order, restarts, torn writes, consumer offsets."""

from __future__ import annotations

import threading
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


@pytest.mark.parametrize("cut", [1, 5, 9, 20])
def test_torn_last_record_is_detected_and_dropped(tmp_path: Path, cut: int) -> None:
    with EventLog(tmp_path) as log:
        log.append([_added(i) for i in range(3)])
    data = (tmp_path / "events.log").read_bytes()
    with EventLog(tmp_path) as log:
        log.append([_added(3)])
    # a crash mid-write: the last record is only partly on disk
    full = (tmp_path / "events.log").read_bytes()
    (tmp_path / "events.log").write_bytes(full[: len(data) + cut])
    with EventLog(tmp_path) as log:
        assert log.recovered_bytes == cut
        assert log.end_offset == 3
        assert [e for _, e in log.read(0)] == [_added(i) for i in range(3)]
        assert log.append([_added(9)]) == [3]  # offsets stay monotonic
    with EventLog(tmp_path) as log:
        assert log.read(3)[0][1] == _added(9)


def test_flipped_byte_in_last_record_is_a_torn_write(tmp_path: Path) -> None:
    with EventLog(tmp_path) as log:
        log.append([_added(0), _added(1)])
    data = bytearray((tmp_path / "events.log").read_bytes())
    data[-2] ^= 0xFF
    (tmp_path / "events.log").write_bytes(bytes(data))
    with EventLog(tmp_path) as log:
        assert log.end_offset == 1


def test_corruption_before_the_end_is_refused(tmp_path: Path) -> None:
    with EventLog(tmp_path) as log:
        log.append([_added(0), _added(1)])
    data = bytearray((tmp_path / "events.log").read_bytes())
    data[10] ^= 0xFF
    (tmp_path / "events.log").write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=r"record 0 .* corrupt and is not the last one"):
        EventLog(tmp_path)


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
