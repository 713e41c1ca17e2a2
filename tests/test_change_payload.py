"""The POST /v1/changes body parser, and the APOC trigger that produces such bodies."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from kgweave.changes import ChangeKind
from kgweave.changes.http_payload import MAX_EVENTS, parse_change_payload
from kgweave.errors import InvalidArgumentError

TRIGGER = Path(__file__).resolve().parent.parent / "procedures" / "neo4j" / "kgweave-trigger.cypher"


def _body(events: list[object], source: str = "neo4j-apoc") -> bytes:
    return json.dumps({"source": source, "events": events}).encode()


def test_a_good_payload() -> None:
    events = parse_change_payload(
        _body(
            [
                {"kind": "entity_upserted", "entity": "a", "properties": {"name": "A", "x": None}},
                {"kind": "triple_added", "head": "a", "relation": "knows", "tail": "b"},
                {"kind": "triple_removed", "head": "a", "relation": "/x/y", "tail": "c"},
                {"kind": "entity_deleted", "entity": "c", "time": 1700000000},
            ]
        )
    )
    assert [e.kind for e in events] == [
        ChangeKind.ENTITY_UPSERTED,
        ChangeKind.TRIPLE_ADDED,
        ChangeKind.TRIPLE_REMOVED,
        ChangeKind.ENTITY_DELETED,
    ]
    assert events[0].properties == {"name": "A"}
    assert (events[2].head, events[2].relation, events[2].tail) == ("a", "/x/y", "c")
    assert events[3].time == 1700000000.0
    assert {e.source for e in events} == {"neo4j-apoc"}
    assert parse_change_payload(_body([])) == []


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"\xff", "not UTF-8"),
        (b'{"source": "x", "events": [', "not JSON: .* line 1"),
        (b"[]", "must be a JSON object"),
        (b'{"source": "x", "events": [], "extra": 1}', "unknown field\\(s\\) 'extra'"),
        (_body([], source="has space"), "'source' must be"),
        (b'{"source": "x", "events": {}}', "'events' must be a list"),
        (_body([{"kind": "triple_added", "head": "a", "tail": "b"}]), "events\\[0\\]: 'relation'"),
        (_body([{"kind": "entity_upserted", "entity": "a"}, 3]), "events\\[1\\]: an event must"),
        (
            _body([{"kind": "entity_upserted", "entity": "a"}] * 2 + [{"kind": "moved"}]),
            "events\\[2\\]: kind 'moved' is not one of entity_upserted",
        ),
        (_body([{"kind": "entity_deleted", "entity": ""}]), "events\\[0\\]: 'entity' must be"),
        (
            _body([{"kind": "entity_deleted", "entity": "a", "head": "b"}]),
            "has no head, relation or tail",
        ),
        (
            _body(
                [{"kind": "triple_added", "head": "a", "relation": "r", "tail": "b", "entity": 1}]
            ),
            "has no 'entity'",
        ),
        (
            _body([{"kind": "entity_deleted", "entity": "a", "who": 1}]),
            "unknown field\\(s\\) 'who'",
        ),
        (_body([{"kind": "entity_deleted", "entity": "a", "time": "now"}]), "'time' must be"),
        (_body([{"kind": "entity_deleted", "entity": "a", "properties": [1]}]), "'properties'"),
    ],
)
def test_bad_payloads_are_refused_with_the_position(body: bytes, message: str) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        parse_change_payload(body)


def test_too_many_events() -> None:
    many = [{"kind": "entity_deleted", "entity": "a"}] * (MAX_EVENTS + 1)
    with pytest.raises(InvalidArgumentError, match=f"at most {MAX_EVENTS}"):
        parse_change_payload(_body(many))


# ---- the APOC trigger template (procedures/neo4j/kgweave-trigger.cypher)
def _statement() -> str:
    text = TRIGGER.read_text()
    match = re.search(
        r"CALL apoc\.trigger\.install\(\s*'neo4j',\s*'kgweave',\s*'(.*?)',\s*"
        r"\{phase: 'afterAsync'\},\s*\{\}\s*\);",
        text,
        re.S,
    )
    assert match, "the file must call apoc.trigger.install('neo4j', 'kgweave', '...', ...)"
    return match.group(1)


def test_trigger_installs_with_apoc5_signature_after_commit() -> None:
    text = TRIGGER.read_text()
    assert "system database" in text.lower()  # apoc.trigger.install runs there
    statement = _statement()
    assert "'" not in statement  # the statement is one single-quoted Cypher string
    for parameter in ("$createdNodes", "$deletedNodes", "$createdRelationships",
                      "$deletedRelationships"):  # fmt: skip
        assert parameter in statement
    assert 'apoc.load.jsonParams(\n     "KGWEAVE_URL/v1/changes"' in statement
    assert (
        '{method: "POST", `Content-Type`: "application/json", '
        'Authorization: "Bearer KGWEAVE_TOKEN"}' in statement
    )
    assert 'apoc.convert.toJson({source: "neo4j-apoc", events: events})' in statement
    assert 'NOT type(r) IN ["KGWEAVE_PREDICTED", "KGWEAVE_SUGGESTED"]' in statement


def test_trigger_events_are_what_the_parser_accepts() -> None:
    statement = _statement()
    kinds = set(re.findall(r'kind: "(\w+)"', statement))
    assert kinds == {k.value for k in ChangeKind}
    # every map the trigger builds, with its field names, parses
    maps = re.findall(r"\{kind: \"(\w+)\",(.*?)\}\] AS", statement, re.S)
    assert len(maps) == 4
    events = []
    for kind, fields in maps:
        names = re.findall(r"(\w+):", fields)
        event: dict[str, object] = {"kind": kind}
        for name in names:
            if name in ("head", "relation", "tail", "entity"):
                event[name] = f"sample-{name}"
            elif name == "properties":
                event[name] = {"name": "N", "description": None}
        events.append(event)
    parsed = parse_change_payload(_body(events))
    assert [e.kind.value for e in parsed] == [kind for kind, _ in maps]
