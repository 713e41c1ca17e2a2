"""The change-event model: what happened to the graph, from which source, when."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from kgweave.errors import InvalidArgumentError, echo


class ChangeKind(StrEnum):
    """What changed."""

    ENTITY_UPSERTED = "entity_upserted"
    ENTITY_DELETED = "entity_deleted"
    TRIPLE_ADDED = "triple_added"
    TRIPLE_REMOVED = "triple_removed"


_TRIPLE_KINDS = (ChangeKind.TRIPLE_ADDED, ChangeKind.TRIPLE_REMOVED)

#: the properties of a triple event whose write changed no count in the graph: the fact was
#: there already (added) or was not (removed). It is served all the same; the snapshot diff's
#: count check leaves it out
UNCHANGED = {"graph": "unchanged"}


@dataclass(frozen=True)
class ChangeEvent:
    """One change. Triple events carry head, relation and tail; entity events carry entity.

    ``source`` names where the change was seen (``kgweave``, ``snapshot-diff``, ``neo4j-cdc``,
    ``apoc-trigger``); ``time`` is seconds since the epoch.
    """

    kind: ChangeKind
    head: str | None = None
    relation: str | None = None
    tail: str | None = None
    entity: str | None = None
    properties: dict[str, Any] = field(default_factory=dict)
    source: str = "kgweave"
    time: float = field(default_factory=time.time)

    def __post_init__(self) -> None:
        if self.kind in _TRIPLE_KINDS:
            if not (self.head and self.relation and self.tail):
                raise InvalidArgumentError(f"{self.kind} needs head, relation and tail")
        elif not self.entity:
            raise InvalidArgumentError(f"{self.kind} needs an entity")

    @property
    def graph_unchanged(self) -> bool:
        """Whether the write behind this event changed no count in the graph (``UNCHANGED``)."""
        return self.properties.get("graph") == UNCHANGED["graph"]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict, without empty fields."""
        return {k: v for k, v in asdict(self).items() if v not in (None, {})}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ChangeEvent:
        """Inverse of :meth:`to_dict`; unknown kinds are refused."""
        try:
            kind = ChangeKind(data["kind"])
        except (KeyError, ValueError):
            raise InvalidArgumentError(f"unknown change kind {echo(data.get('kind'))}") from None
        return cls(**{**data, "kind": kind})
