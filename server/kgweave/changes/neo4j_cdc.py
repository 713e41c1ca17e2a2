"""Neo4j change data capture (Neo4j 5 Enterprise, Aura) into kgweave's durable event log.

The poller asks Neo4j for the changes after its cursor with ``db.cdc.query(from, selectors)``,
turns each change record into kgweave :class:`ChangeEvent` s (entity upserted or deleted,
triple added or removed; source ``neo4j-cdc``), appends them to the :class:`EventLog`, and only
then stores the last change id as its cursor (written atomically), so a crash in between
re-emits changes rather than losing them (at-least-once, like the rest of the log). A poller
started without a cursor begins at ``db.cdc.current()`` (changes from now on) or, when asked,
at ``db.cdc.earliest()``.

Everything here follows the Neo4j CDC manual:

- procedures (Operations Manual, "Procedures", Change Data Capture):
  ``db.cdc.current() :: (id)``, ``db.cdc.earliest() :: (id)``,
  ``db.cdc.query([from, selectors]) :: (id, txId, seq, metadata, event)``; ``from`` is
  exclusive (CDC manual, "Querying changes", https://neo4j.com/docs/cdc/current/procedures/);
  ``db.cdc.query`` needs an admin user;
- record shape (CDC manual, "Format of change events",
  https://neo4j.com/docs/cdc/current/procedures/output-schema/): ``event.eventType`` ``n`` or
  ``r``, ``event.operation`` ``c``/``u``/``d``, node ``labels`` (before the change, complete)
  and ``keys`` (``{Label: [{prop: value}, ...]}``), relationship ``type``, ``start`` and
  ``end`` (``elementId``, ``keys``, ``labels``), ``state.before`` / ``state.after`` with
  ``properties`` (and ``labels`` for nodes); ``metadata.txCommitTime``;
- keys appear in events only for properties under key constraints (CDC manual, "The role of
  elementIds and key properties"): a uniqueness constraint plus an existence constraint on
  the entity key count, so :func:`key_constraint_statements` adds the existence constraint
  next to :class:`Neo4jStore`'s uniqueness one. Without it, entity keys are taken from the
  full before/after state (CDC mode ``FULL``), then from a lookup of the elementIds.

``convert_record`` is a pure function; the poller gets its Cypher through a ``query``
function (``Neo4jStore.read`` in production), so it can be tested without Neo4j Enterprise.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from kgweave import atomic
from kgweave.changes.events import ChangeEvent, ChangeKind
from kgweave.changes.log import EventLog
from kgweave.errors import (
    FailedPreconditionError,
    GraphUnavailableError,
    InvalidArgumentError,
    KGWeaveError,
    echo,
)
from kgweave.graph.store import GraphMapping, checked_identifier

SOURCE = "neo4j-cdc"
CURRENT = "CALL db.cdc.current() YIELD id RETURN id"
EARLIEST = "CALL db.cdc.earliest() YIELD id RETURN id"
#: the next changes after ``$from`` (exclusive), at most ``$limit`` of them
QUERY = (
    "CALL db.cdc.query($from, $selectors) YIELD id, txId, seq, metadata, event "
    "RETURN id, txId, seq, metadata, event LIMIT $limit"
)
#: entity keys of nodes whose change events carried none (they still exist)
LOOKUP = "MATCH (n) WHERE elementId(n) IN $ids RETURN elementId(n) AS elementId, n[$key] AS key"

QueryFn = Callable[[str, dict[str, Any]], list[dict[str, Any]]]
log = logging.getLogger(__name__)


def key_constraint_statements(mapping: GraphMapping) -> list[str]:
    """The existence constraint that, with the uniqueness one, makes the key a CDC key.

    Cypher Manual 5, "Create constraints": ``REQUIRE n.property IS NOT NULL`` (Enterprise).
    """
    label = checked_identifier(mapping.entity_label, "entity label")
    key = checked_identifier(mapping.key_property, "key property")
    name = checked_identifier(
        f"kgweave_{mapping.entity_label}_{mapping.key_property}_exists", "constraint name"
    )
    return [f"CREATE CONSTRAINT {name} IF NOT EXISTS FOR (n:{label}) REQUIRE n.{key} IS NOT NULL"]


def default_selectors(mapping: GraphMapping) -> list[dict[str, Any]]:
    """Changes on entity nodes and on all relationships (CDC manual, "Event selectors")."""
    return [{"select": "n", "labels": [mapping.entity_label]}, {"select": "r"}]


def _epoch(value: Any) -> float | None:
    """``txCommitTime`` as seconds since the epoch (driver DateTime or ISO text)."""
    if value is None:
        return None
    if hasattr(value, "to_native"):
        value = value.to_native()
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if isinstance(value, datetime):
        return value.timestamp()
    return None


def _state(event: Mapping[str, Any], which: str) -> Mapping[str, Any]:
    state = event.get("state") or {}
    return state.get(which) or {}


def _key_from(
    entity: Mapping[str, Any],
    mapping: GraphMapping,
    known: Mapping[str, str],
    states: tuple[Mapping[str, Any], ...] = (),
) -> str | None:
    """The entity key of a node: its CDC keys, then its full state, then a looked-up value."""
    for entry in (entity.get("keys") or {}).get(mapping.entity_label, []):
        if mapping.key_property in entry and entry[mapping.key_property] is not None:
            return str(entry[mapping.key_property])
    for state in states:
        value = (state.get("properties") or {}).get(mapping.key_property)
        if value is not None:
            return str(value)
    found = known.get(str(entity.get("elementId")))
    return str(found) if found is not None else None


@dataclass
class Conversion:
    """What one batch of change records became."""

    events: list[ChangeEvent] = field(default_factory=list)
    #: change ids that concern kgweave but whose entity keys could not be found
    unresolved: list[str] = field(default_factory=list)


def _node_events(
    record: Mapping[str, Any], mapping: GraphMapping, known: Mapping[str, str], when: float
) -> tuple[list[ChangeEvent], bool]:
    event = record["event"]
    before, after = _state(event, "before"), _state(event, "after")
    labels = set(event.get("labels") or ()) | set(before.get("labels") or ())
    labels |= set(after.get("labels") or ())
    if mapping.entity_label not in labels:
        return [], True
    key = _key_from(event, mapping, known, (after, before))
    if key is None:
        return [], False
    operation = event.get("operation")
    if operation == "d":
        return [ChangeEvent(ChangeKind.ENTITY_DELETED, entity=key, source=SOURCE, time=when)], True
    properties = after.get("properties") or {}
    text = {
        name: properties[prop]
        for name, prop in (
            ("name", mapping.name_property),
            ("description", mapping.description_property),
        )
        if properties.get(prop) is not None
    }
    upserted = ChangeEvent(
        ChangeKind.ENTITY_UPSERTED, entity=key, properties=text, source=SOURCE, time=when
    )
    return [upserted], True


def _relation_of(
    event: Mapping[str, Any], state: Mapping[str, Any], mapping: GraphMapping
) -> str | None:
    rel_type = event.get("type")
    if rel_type != mapping.generic_type:
        return str(rel_type) if rel_type else None
    value = (state.get("properties") or {}).get(mapping.relation_property)
    return str(value) if value is not None else None


def _is_fact(event: Mapping[str, Any], mapping: GraphMapping) -> bool:
    """A relationship between two entities whose type counts as a relation."""
    rel_type = event.get("type")
    if rel_type in (mapping.predicted_type, mapping.suggested_type):
        return False  # kgweave's own predictions and suggestions are not facts
    if mapping.relation_types is not None and rel_type not in (
        *mapping.relation_types,
        mapping.generic_type,
    ):
        return False
    start, end = event.get("start") or {}, event.get("end") or {}
    label = mapping.entity_label
    return label in (start.get("labels") or ()) and label in (end.get("labels") or ())


def _relationship_events(
    record: Mapping[str, Any], mapping: GraphMapping, known: Mapping[str, str], when: float
) -> tuple[list[ChangeEvent], bool]:
    event = record["event"]
    if not _is_fact(event, mapping):
        return [], True
    rel_type = event.get("type")
    start, end = event.get("start") or {}, event.get("end") or {}
    head, tail = _key_from(start, mapping, known), _key_from(end, mapping, known)
    if head is None or tail is None:
        return [], False
    before, after = _state(event, "before"), _state(event, "after")
    old, new = _relation_of(event, before, mapping), _relation_of(event, after, mapping)

    def triple(kind: ChangeKind, relation: str) -> ChangeEvent:
        return ChangeEvent(kind, head=head, relation=relation, tail=tail, source=SOURCE, time=when)

    operation = event.get("operation")
    if operation == "c" and new:
        return [triple(ChangeKind.TRIPLE_ADDED, new)], True
    if operation == "d" and old:
        return [triple(ChangeKind.TRIPLE_REMOVED, old)], True
    if operation == "u" and rel_type == mapping.generic_type and old and new and old != new:
        # the relation name of a generic relationship changed: one fact replaced another
        return [triple(ChangeKind.TRIPLE_REMOVED, old), triple(ChangeKind.TRIPLE_ADDED, new)], True
    return [], True


def convert_record(
    record: Mapping[str, Any],
    mapping: GraphMapping | None = None,
    known_keys: Mapping[str, str] | None = None,
) -> tuple[list[ChangeEvent], bool]:
    """kgweave events for one ``db.cdc.query`` record, and whether its entities were resolved.

    ``known_keys`` maps node elementIds to entity keys for events that carry no keys.
    Changes that do not concern kgweave's entities and facts give ``([], True)``.
    """
    m = mapping or GraphMapping()
    event = record.get("event")
    if not isinstance(event, Mapping):
        raise InvalidArgumentError(f"CDC record {echo(record.get('id'))} has no event map")
    when = _epoch((record.get("metadata") or {}).get("txCommitTime"))
    when = when if when is not None else 0.0
    known = known_keys or {}
    if event.get("eventType") == "n":
        return _node_events(record, m, known, when)
    if event.get("eventType") == "r":
        return _relationship_events(record, m, known, when)
    raise InvalidArgumentError(
        f"CDC record {echo(record.get('id'))}: unknown eventType {echo(event.get('eventType'))}"
    )


def missing_element_ids(records: list[dict[str, Any]], mapping: GraphMapping) -> list[str]:
    """elementIds of relationship endpoints whose events carry no entity key."""
    ids: set[str] = set()
    for record in records:
        event = record.get("event") or {}
        if event.get("eventType") != "r":
            continue
        for end in (event.get("start") or {}, event.get("end") or {}):
            if _key_from(end, mapping, {}) is None and end.get("elementId"):
                ids.add(str(end["elementId"]))
    return sorted(ids)


class Neo4jCdcPoller:
    """Polls ``db.cdc.query`` and appends kgweave events to ``log``; resumable."""

    def __init__(
        self,
        query: QueryFn,
        log: EventLog,
        state_file: Path,
        mapping: GraphMapping | None = None,
        selectors: list[dict[str, Any]] | None = None,
        start: str = "current",
        batch: int = 1000,
    ) -> None:
        if start not in ("current", "earliest"):
            raise InvalidArgumentError(f"start {echo(start)}: choose current or earliest")
        if batch < 1:
            raise InvalidArgumentError("batch must be at least 1")
        self.query = query
        self.log = log
        self.state_file = state_file
        self.mapping = mapping or GraphMapping()
        self.selectors = default_selectors(self.mapping) if selectors is None else selectors
        self.start = start
        self.batch = batch
        self.unresolved = 0

    # ---- the durable cursor
    @property
    def cursor(self) -> str | None:
        """The last change id handled (None before the first poll)."""
        if not self.state_file.is_file():
            return None
        try:
            return str(json.loads(self.state_file.read_text())["cursor"])
        except (ValueError, KeyError, TypeError) as exc:
            raise FailedPreconditionError(
                f"{self.state_file} is not a CDC cursor file ({exc}); remove it to restart from "
                f"db.cdc.{self.start}()"
            ) from None

    def _save(self, cursor: str) -> None:
        atomic.write_json(self.state_file, {"cursor": cursor})

    # ---- polling
    def poll_once(self) -> int:
        """Fetch, convert and append one batch of changes; returns how many records it read."""
        cursor = self.cursor
        if cursor is None:
            rows = self.query(CURRENT if self.start == "current" else EARLIEST, {})
            if not rows:
                raise FailedPreconditionError("db.cdc.current() returned nothing: is CDC enabled?")
            cursor = str(rows[0]["id"])
            self._save(cursor)
        try:
            records = self.query(
                QUERY, {"from": cursor, "selectors": self.selectors, "limit": self.batch}
            )
        except KGWeaveError as exc:
            text = str(exc).lower()
            if "change data capture" in text:  # "... is not currently enabled for this database"
                raise FailedPreconditionError(
                    f"{exc}; enable it with ALTER DATABASE ... SET OPTION txLogEnrichment 'FULL'"
                ) from None
            if "cdc" in text or "change identifier" in text:
                raise FailedPreconditionError(
                    f"Neo4j refused the CDC cursor {echo(cursor)} ({exc}); if the changes it "
                    f"points at were pruned, remove {self.state_file} to restart from "
                    f"db.cdc.{self.start}()"
                ) from None
            raise
        if not records:
            return 0
        known: dict[str, str] = {}
        missing = missing_element_ids(records, self.mapping)
        if missing:
            for row in self.query(LOOKUP, {"ids": missing, "key": self.mapping.key_property}):
                if row.get("key") is not None:
                    known[str(row["elementId"])] = str(row["key"])
        events: list[ChangeEvent] = []
        for record in records:
            converted, resolved = convert_record(record, self.mapping, known)
            events.extend(converted)
            if not resolved:
                self.unresolved += 1
                log.warning("CDC change %s: entity key not found; skipped", record.get("id"))
        if events:
            self.log.append(events)
        self._save(str(records[-1]["id"]))  # after the append: at-least-once
        return len(records)

    def run(self, stop: threading.Event, interval_s: float = 1.0) -> None:
        """Poll until ``stop`` is set; waits ``interval_s`` when there is nothing new."""
        delay = interval_s
        while not stop.is_set():
            try:
                read = self.poll_once()
            except GraphUnavailableError as exc:  # Neo4j away: back off, keep the cursor
                log.warning("CDC poll failed, retrying in %.0fs: %s", delay, exc)
                stop.wait(delay)
                delay = min(max(delay, 0.1) * 2, 60.0)
                continue
            delay = interval_s
            if read < self.batch:
                stop.wait(interval_s)
