"""The JSON body of ``POST /v1/changes``: validated and turned into change events.

The APOC trigger in ``procedures/neo4j/`` (and any other producer) posts::

    {"source": "neo4j-apoc",
     "events": [{"kind": "triple_added", "head": "a", "relation": "knows", "tail": "b"},
                {"kind": "entity_upserted", "entity": "a", "properties": {"name": "A"}},
                ...]}

``kind`` is one of :class:`ChangeKind`'s values; triple events need ``head``, ``relation`` and
``tail``, entity events need ``entity``; ``properties`` (an object; null values are dropped) and
``time`` (seconds since the epoch; default: when the body was parsed) are optional. Every event
takes the body's ``source``. A body is accepted whole or refused whole, with an
:class:`InvalidArgumentError` naming the position of the first bad event.
"""

from __future__ import annotations

import json
import math
import re
import time
from typing import Any

from kgweave.changes.events import ChangeEvent, ChangeKind
from kgweave.errors import InvalidArgumentError, echo, echo_all

#: most events one body may carry (a trigger posts one transaction's changes)
MAX_EVENTS = 100_000
_SOURCE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
_TRIPLE = ("head", "relation", "tail")
_FIELDS = {"kind", "head", "relation", "tail", "entity", "properties", "time"}


def _text(event: dict[str, Any], name: str, where: str) -> str:
    value = event.get(name)
    if not isinstance(value, str) or not value:
        raise InvalidArgumentError(
            f"{where}: {echo(name)} must be a non-empty string, got {echo(value)}"
        )
    return value


def _event(raw: Any, index: int, source: str, now: float) -> ChangeEvent:
    where = f"events[{index}]"
    if not isinstance(raw, dict):
        raise InvalidArgumentError(f"{where}: an event must be a JSON object")
    unknown = sorted(set(raw) - _FIELDS)
    if unknown:
        raise InvalidArgumentError(f"{where}: unknown field(s) {echo_all(unknown)}")
    try:
        kind = ChangeKind(str(raw.get("kind")))
    except ValueError:
        choices = ", ".join(k.value for k in ChangeKind)
        raise InvalidArgumentError(
            f"{where}: kind {echo(raw.get('kind'))} is not one of {choices}"
        ) from None
    properties = raw.get("properties") or {}
    if not isinstance(properties, dict):
        raise InvalidArgumentError(f"{where}: 'properties' must be a JSON object")
    stamp = raw.get("time", now)
    if isinstance(stamp, bool) or not isinstance(stamp, int | float) or not math.isfinite(stamp):
        raise InvalidArgumentError(f"{where}: 'time' must be seconds since the epoch")
    kept = {k: v for k, v in properties.items() if v is not None}
    if kind in (ChangeKind.TRIPLE_ADDED, ChangeKind.TRIPLE_REMOVED):
        head, relation, tail = (_text(raw, name, where) for name in _TRIPLE)
        if raw.get("entity") is not None:
            raise InvalidArgumentError(f"{where}: a {kind} event has no 'entity'")
        return ChangeEvent(
            kind,
            head=head,
            relation=relation,
            tail=tail,
            properties=kept,
            source=source,
            time=float(stamp),
        )
    if any(raw.get(name) is not None for name in _TRIPLE):
        raise InvalidArgumentError(f"{where}: a {kind} event has no head, relation or tail")
    entity = _text(raw, "entity", where)
    return ChangeEvent(kind, entity=entity, properties=kept, source=source, time=float(stamp))


def parse_change_payload(body: bytes) -> list[ChangeEvent]:
    """The events of one ``POST /v1/changes`` body, or an error naming what is wrong."""
    try:
        data = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise InvalidArgumentError(f"change payload is not UTF-8 (byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise InvalidArgumentError(
            f"change payload is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    if not isinstance(data, dict):
        raise InvalidArgumentError(
            "change payload must be a JSON object with 'source' and 'events'"
        )
    unknown = sorted(set(data) - {"source", "events"})
    if unknown:
        raise InvalidArgumentError(f"change payload: unknown field(s) {echo_all(unknown)}")
    source = data.get("source")
    if not isinstance(source, str) or not _SOURCE.match(source):
        raise InvalidArgumentError(
            f"change payload: 'source' must be 1-64 letters, digits or _.:- , got {echo(source)}"
        )
    events = data.get("events")
    if not isinstance(events, list):
        raise InvalidArgumentError("change payload: 'events' must be a list")
    if len(events) > MAX_EVENTS:
        raise InvalidArgumentError(
            f"change payload: {len(events)} events, at most {MAX_EVENTS} per request"
        )
    now = time.time()
    return [_event(raw, i, source, now) for i, raw in enumerate(events)]
