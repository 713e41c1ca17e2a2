"""Neo4j CDC records to kgweave change events, and the resumable poller.

CDC needs Neo4j 5 Enterprise (or Aura), which is not available where these tests run. The
conversion is a pure function, tested with records shaped exactly like the examples of the CDC
manual ("Format of change events", https://neo4j.com/docs/cdc/current/procedures/output-schema/).
The poller takes its Cypher through a query function; here that function is a small fake
Neo4j holding a list of change records and answering the three CDC procedures. This is the one
place kgweave's tests use a fake database, because no real one exists to run them against; the
fake checks the exact statements the poller sends.
"""

from __future__ import annotations

import copy
import threading
from pathlib import Path
from typing import Any

import pytest

from kgweave.changes import ChangeKind, EventLog
from kgweave.changes.neo4j_cdc import (
    CURRENT,
    EARLIEST,
    LOOKUP,
    QUERY,
    Neo4jCdcPoller,
    convert_record,
    default_selectors,
    key_constraint_statements,
)
from kgweave.errors import FailedPreconditionError, GraphUnavailableError, InvalidArgumentError
from kgweave.graph.store import GraphMapping

#: the manual's node example, verbatim
MANUAL_NODE = {
    "id": "A7fjWXMK_0L6hztd4xhoy0oAAAAAAAAADAAAAAAAAAAA",
    "txId": 12,
    "seq": 0,
    "metadata": {
        "executingUser": "neo4j",
        "authenticatedUser": "neo4j",
        "captureMode": "FULL",
        "connectionClient": "127.0.0.1:51320",
        "serverId": "e605bd8f",
        "databaseId": "edec6ba8-e82f-4aac-ae41-2725f2357fdd",
        "connectionType": "bolt",
        "connectionServer": "127.0.0.1:51316",
        "txStartTime": "2023-03-03T11:58:30.429Z",
        "txCommitTime": "2023-03-03T11:58:30.526Z",
        "txMetadata": {"correlationId": "123456789"},
    },
    "event": {
        "elementId": "4:b7e35973-0aff-42fa-873b-5de31868cb4a:1",
        "keys": {
            "Person": [{"firstName": "john", "lastName": "doe"}, {"ssn": "Y654321"}],
            "Employee": [{"id": 1001}],
        },
        "eventType": "n",
        "state": {
            "before": None,
            "after": {
                "properties": {
                    "tagline": "Houston, we have a problem.",
                    "title": "Apollo 13",
                    "released": "1995",
                },
                "labels": ["MOVIE"],
            },
        },
        "operation": "c",
        "labels": ["MOVIE"],
    },
}

#: the manual's relationship example, verbatim
MANUAL_RELATIONSHIP = {
    "id": "A2pK9P_aOknnrnEsCsPB_BoAAAAAAAAADwAAAAAAAAAA",
    "txId": 15,
    "seq": 0,
    "metadata": {
        "executingUser": "neo4j",
        "authenticatedUser": "neo4j",
        "captureMode": "FULL",
        "connectionClient": "127.0.0.1:51190",
        "serverId": "2230d17a",
        "databaseId": "edec6ba8-e82f-4aac-ae41-2725f2357fdd",
        "connectionType": "bolt",
        "connectionServer": "127.0.0.1:51186",
        "txStartTime": "2023-03-03T11:54:40.510Z",
        "txCommitTime": "2023-03-03T11:54:40.773Z",
        "txMetadata": {"correlationId": "987654321"},
    },
    "event": {
        "elementId": "5:6a4af4ff-da3a-49e7-ae71-2c0ac3c1fc1a:0",
        "start": {
            "elementId": "4:6a4af4ff-da3a-49e7-ae71-2c0ac3c1fc1a:0",
            "keys": {},
            "labels": ["PERSON"],
        },
        "end": {
            "elementId": "4:6a4af4ff-da3a-49e7-ae71-2c0ac3c1fc1a:1",
            "keys": {},
            "labels": ["MOVIE"],
        },
        "eventType": "r",
        "state": {"before": None, "after": {"properties": {"roles": "Jack Swigert"}}},
        "type": "ACTED_IN",
        "operation": "c",
        "keys": [{"registerId": 1125}, {"official": "Alice Roberts"}],
    },
}

COMMIT_2023_03_03 = 1677844470.773  # 2023-03-03T11:54:40.773Z


def _state(operation: str, state: dict[str, Any]) -> dict[str, Any]:
    """An event's before and after: a deletion ("d") had ``state``, else it has it now."""
    if operation == "d":
        return {"before": state, "after": None}
    return {"before": None, "after": state}


def _entity_node(element: str, key: str, operation: str = "c", **props: str) -> dict[str, Any]:
    """A node change on an Entity with key constraints, shaped like the manual's example."""
    record = copy.deepcopy(MANUAL_NODE)
    record["id"] = f"change-{element}-{operation}"
    event = record["event"]
    event["elementId"] = element
    event["keys"] = {"Entity": [{"id": key}]}
    event["labels"] = ["Entity"]
    event["operation"] = operation
    event["state"] = _state(operation, {"properties": {"id": key, **props}, "labels": ["Entity"]})
    return record


def _fact(
    head: str, rel_type: str, tail: str, operation: str = "c", keys: bool = True, **props: str
) -> dict[str, Any]:
    """A relationship change between Entity nodes, shaped like the manual's example."""
    record = copy.deepcopy(MANUAL_RELATIONSHIP)
    record["id"] = f"change-{head}-{rel_type}-{tail}-{operation}"
    event = record["event"]
    event["type"] = rel_type
    event["operation"] = operation
    for end, key in (("start", head), ("end", tail)):
        event[end] = {
            "elementId": f"4:db:{key}",
            "keys": {"Entity": [{"id": key}]} if keys else {},
            "labels": ["Entity"],
        }
    event["state"] = _state(operation, {"properties": dict(props)})
    return record


# ---- conversion
def test_the_manuals_node_example() -> None:
    mapping = GraphMapping(entity_label="MOVIE", key_property="title", name_property="tagline")
    events, resolved = convert_record(MANUAL_NODE, mapping)
    assert resolved and len(events) == 1
    (event,) = events
    assert (event.kind, event.entity, event.source) == (
        ChangeKind.ENTITY_UPSERTED,
        "Apollo 13",
        "neo4j-cdc",
    )
    assert event.properties == {"name": "Houston, we have a problem."}
    assert event.time == pytest.approx(1677844710.526)
    # with kgweave's default mapping the movie is not an entity: nothing to report
    assert convert_record(MANUAL_NODE) == ([], True)


def test_the_manuals_relationship_example() -> None:
    mapping = GraphMapping(entity_label="MOVIE")
    # a PERSON -> MOVIE relationship does not join two entities of the mapping
    assert convert_record(MANUAL_RELATIONSHIP, mapping) == ([], True)
    both = copy.deepcopy(MANUAL_RELATIONSHIP)
    both["event"]["start"]["labels"] = ["MOVIE"]
    # no keys in the event: unresolved until the elementIds are looked up
    assert convert_record(both, mapping) == ([], False)
    known = {
        "4:6a4af4ff-da3a-49e7-ae71-2c0ac3c1fc1a:0": "Apollo 13 (1995)",
        "4:6a4af4ff-da3a-49e7-ae71-2c0ac3c1fc1a:1": "Apollo 13",
    }
    events, resolved = convert_record(both, mapping, known)
    assert resolved
    assert [(e.kind, e.head, e.relation, e.tail) for e in events] == [
        (ChangeKind.TRIPLE_ADDED, "Apollo 13 (1995)", "ACTED_IN", "Apollo 13")
    ]
    assert events[0].time == pytest.approx(COMMIT_2023_03_03)


def test_entities_and_facts_of_kgweaves_mapping() -> None:
    created = convert_record(_entity_node("4:db:1", "marie_curie", name="Marie Curie"))[0]
    assert [(e.kind, e.entity, e.properties) for e in created] == [
        (ChangeKind.ENTITY_UPSERTED, "marie_curie", {"name": "Marie Curie"})
    ]
    deleted = convert_record(_entity_node("4:db:1", "marie_curie", "d"))[0]
    assert [(e.kind, e.entity) for e in deleted] == [(ChangeKind.ENTITY_DELETED, "marie_curie")]
    typed = convert_record(_fact("marie_curie", "born_in", "warsaw"))[0]
    assert [(e.kind, e.head, e.relation, e.tail) for e in typed] == [
        (ChangeKind.TRIPLE_ADDED, "marie_curie", "born_in", "warsaw")
    ]
    generic = convert_record(
        _fact("/m/01", "RELATED", "/m/02", "d", relation="/people/person/place_of_birth")
    )[0]
    assert [(e.kind, e.relation) for e in generic] == [
        (ChangeKind.TRIPLE_REMOVED, "/people/person/place_of_birth")
    ]
    renamed = _fact("a", "RELATED", "b", "u")
    renamed["event"]["state"] = {
        "before": {"properties": {"relation": "/x/old"}},
        "after": {"properties": {"relation": "/x/new"}},
    }
    assert [(e.kind, e.relation) for e in convert_record(renamed)[0]] == [
        (ChangeKind.TRIPLE_REMOVED, "/x/old"),
        (ChangeKind.TRIPLE_ADDED, "/x/new"),
    ]
    assert convert_record(_fact("a", "KGWEAVE_PREDICTED", "b")) == ([], True)
    only = GraphMapping(relation_types=("born_in",))
    assert convert_record(_fact("a", "likes", "b"), only) == ([], True)


def test_malformed_records_are_refused() -> None:
    with pytest.raises(InvalidArgumentError, match="has no event map"):
        convert_record({"id": "x"})
    odd = copy.deepcopy(MANUAL_NODE)
    odd["event"]["eventType"] = "q"
    with pytest.raises(InvalidArgumentError, match="unknown eventType 'q'"):
        convert_record(odd)


def test_statements() -> None:
    assert CURRENT == "CALL db.cdc.current() YIELD id RETURN id"
    assert EARLIEST == "CALL db.cdc.earliest() YIELD id RETURN id"
    assert QUERY.startswith(
        "CALL db.cdc.query($from, $selectors) YIELD id, txId, seq, metadata, event "
    )
    assert key_constraint_statements(GraphMapping()) == [
        "CREATE CONSTRAINT `kgweave_Entity_id_exists` IF NOT EXISTS "
        "FOR (n:`Entity`) REQUIRE n.`id` IS NOT NULL"
    ]
    assert default_selectors(GraphMapping()) == [
        {"select": "n", "labels": ["Entity"]},
        {"select": "r"},
    ]


# ---- the poller, against a fake Neo4j (see the module docstring)
class FakeCdc:
    """Change records in order; answers db.cdc.current/earliest/query and the key lookup."""

    def __init__(self, records: list[dict[str, Any]]) -> None:
        self.records = records
        self.keys: dict[str, str] = {}
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.down = False
        self.disabled = False

    def __call__(self, cypher: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        self.calls.append((cypher, params))
        if self.down:
            raise GraphUnavailableError("Neo4j at bolt://db:7687 is not reachable: refused")
        if cypher == CURRENT:
            return [{"id": self.records[-1]["id"] if self.records else "start"}]
        if cypher == EARLIEST:
            return [{"id": "start"}]
        if cypher == LOOKUP:
            return [{"elementId": i, "key": self.keys.get(i)} for i in params["ids"]]
        assert cypher == QUERY
        if self.disabled:  # Neo4j's words when CDC is off
            raise InvalidArgumentError(
                "Change Data Capture is not currently enabled for this database [neo4j]"
            )
        ids = ["start"] + [r["id"] for r in self.records]
        if params["from"] not in ids:
            raise InvalidArgumentError("Neo4j refused a query: invalid change identifier")
        after = ids.index(params["from"])  # `from` is exclusive
        return self.records[after : after + params["limit"]]


def test_poller_appends_events_and_resumes_from_its_cursor(tmp_path: Path) -> None:
    fake = FakeCdc(
        [
            _entity_node("4:db:1", "marie_curie"),
            _entity_node("4:db:2", "warsaw"),
            _fact("marie_curie", "born_in", "warsaw"),
            _fact("marie_curie", "knows", "pierre_curie", keys=False),
        ]
    )
    fake.keys = {"4:db:marie_curie": "marie_curie", "4:db:pierre_curie": "pierre_curie"}
    state = tmp_path / "cdc" / "cursor.json"
    with EventLog(tmp_path / "log") as log:
        poller = Neo4jCdcPoller(fake, log, state, start="earliest", batch=3)
        assert poller.poll_once() == 3
        assert poller.cursor == fake.records[2]["id"]
        assert [e.kind for _, e in log.read(0)] == [
            ChangeKind.ENTITY_UPSERTED,
            ChangeKind.ENTITY_UPSERTED,
            ChangeKind.TRIPLE_ADDED,
        ]
    # a new process: same cursor file, nothing is read twice
    with EventLog(tmp_path / "log") as log:
        again = Neo4jCdcPoller(fake, log, state, start="earliest", batch=3)
        assert again.poll_once() == 1  # the key-less fact, resolved by elementId lookup
        assert again.poll_once() == 0
        events = [e for _, e in log.read(0)]
        assert len(events) == 4
        assert (events[-1].head, events[-1].relation, events[-1].tail) == (
            "marie_curie",
            "knows",
            "pierre_curie",
        )
        assert all(e.source == "neo4j-cdc" for e in events)
    query_params = [p for c, p in fake.calls if c == QUERY]
    assert query_params[0]["from"] == "start"
    assert query_params[0]["selectors"] == default_selectors(GraphMapping())


def test_poller_starts_at_current_and_skips_unresolvable(tmp_path: Path) -> None:
    fake = FakeCdc([_entity_node("4:db:1", "old")])
    with EventLog(tmp_path / "log") as log:
        poller = Neo4jCdcPoller(fake, log, tmp_path / "cursor.json")
        assert poller.poll_once() == 0  # starts after the last existing change
        fake.records.append(_fact("gone", "knows", "also_gone", keys=False))
        assert poller.poll_once() == 1
        assert log.end_offset == 0 and poller.unresolved == 1


def test_poller_errors_are_clear(tmp_path: Path) -> None:
    fake = FakeCdc([])
    (tmp_path / "cursor.json").write_text('{"cursor": "pruned-long-ago"}')
    with EventLog(tmp_path / "log") as log:
        poller = Neo4jCdcPoller(fake, log, tmp_path / "cursor.json")
        with pytest.raises(FailedPreconditionError, match="refused the CDC cursor"):
            poller.poll_once()
        fake.disabled = True
        with pytest.raises(FailedPreconditionError, match="txLogEnrichment 'FULL'"):
            poller.poll_once()
        (tmp_path / "cursor.json").write_text("not json")
        with pytest.raises(FailedPreconditionError, match="not a CDC cursor file"):
            poller.poll_once()
        with pytest.raises(InvalidArgumentError, match="start 'latest'"):
            Neo4jCdcPoller(fake, log, tmp_path / "c.json", start="latest")


def test_poller_loop_backs_off_while_neo4j_is_away(tmp_path: Path) -> None:
    fake = FakeCdc([_entity_node("4:db:1", "a")])
    fake.down = True
    stop = threading.Event()
    with EventLog(tmp_path / "log") as log:
        poller = Neo4jCdcPoller(fake, log, tmp_path / "cursor.json", start="earliest")
        thread = threading.Thread(target=poller.run, args=(stop, 0.01))
        thread.start()
        while len(fake.calls) < 3:
            stop.wait(0.01)
        fake.down = False
        while log.end_offset < 1:
            stop.wait(0.01)
        stop.set()
        thread.join(timeout=10)
        assert not thread.is_alive()
        assert [e.entity for _, e in log.read(0)] == ["a"]
