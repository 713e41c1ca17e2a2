"""The graph changes applied on top of a served version: the overlay, and how events fold in.

An :class:`Overlay` is the net effect of every change event up to ``next_offset`` relative to
one registry version (``base_version``): facts added and removed, entity text set, entities
deleted, and the rows new entities and relations got. Each event is an *assignment* (fact
known / not known, text set, entity deleted), so folding the same events in again, or any
suffix of them, leaves the overlay as it was: at-least-once delivery, exactly-once effect.

Persisted as one file, ``data_dir/overlay/overlay.safetensors`` (rows as tensors, the rest as
JSON in the metadata), replaced atomically (written, fsynced, renamed): a crash leaves the old
overlay or the new one, never a mix.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from kgweave.changes.events import ChangeEvent, ChangeKind
from kgweave.errors import ArtifactError

FORMAT = "kgweave-overlay"
FORMAT_VERSION = 1
FILE = "overlay.safetensors"

Triple = tuple[str, str, str]


@dataclass
class Touched:
    """What folding a batch in touched: the facts whose state (added, removed) it may have
    changed, and the entities whose text or existence it may have changed. What follows a
    batch (pruning, rows, the derived version's facts) looks at these, not at the overlay."""

    facts: set[Triple] = field(default_factory=set)
    entities: set[str] = field(default_factory=set)


@dataclass
class Overlay:
    """The applied changes relative to ``base_version``, up to log offset ``next_offset``."""

    base_version: str = ""
    next_offset: int = 0
    #: facts known on top of the version's (a removed one is taken out of here)
    added: set[Triple] = field(default_factory=set)
    #: facts no longer known (only those of the version's matter)
    removed: set[Triple] = field(default_factory=set)
    #: entity text set by events: id -> (name, description); None keeps the version's
    texts: dict[str, tuple[str | None, str | None]] = field(default_factory=dict)
    deleted: set[str] = field(default_factory=set)
    #: entities the version does not know, in row order, and how each row was made
    #: ("text", "neighbours" or "mean")
    new_entities: list[str] = field(default_factory=list)
    origins: dict[str, str] = field(default_factory=dict)
    entity_rows: torch.Tensor = field(default_factory=lambda: torch.zeros(0, 0))
    #: relations the version does not know, in row order, and their rows (forward, inverse)
    new_relations: list[str] = field(default_factory=list)
    relation_rows: torch.Tensor = field(default_factory=lambda: torch.zeros(0, 2, 0))
    #: events folded in so far (all time, for status)
    events: int = 0

    @property
    def empty(self) -> bool:
        """Nothing to apply on top of the version."""
        return (
            not (self.added or self.removed or self.texts or self.deleted or self.new_relations)
            and not self.new_entities
        )

    def summary(self) -> dict[str, int | str]:
        return {
            "base_version": self.base_version,
            "next_offset": self.next_offset,
            "facts_added": len(self.added),
            "facts_removed": len(self.removed),
            "entities_added": len(self.new_entities),
            "entities_deleted": len(self.deleted),
            "relations_added": len(self.new_relations),
        }

    def copy(self) -> Overlay:
        """A copy to fold a batch into (the served overlay stays as it is until the batch is
        served): new containers and rows, the facts and texts themselves shared (immutable)."""
        return Overlay(
            base_version=self.base_version,
            next_offset=self.next_offset,
            added=set(self.added),
            removed=set(self.removed),
            texts=dict(self.texts),
            deleted=set(self.deleted),
            new_entities=list(self.new_entities),
            origins=dict(self.origins),
            entity_rows=self.entity_rows.clone(),
            new_relations=list(self.new_relations),
            relation_rows=self.relation_rows.clone(),
            events=self.events,
        )

    # ---- folding events in
    def fold(self, events: list[ChangeEvent], facts_of: Any) -> Touched:
        """Fold ``events`` in, in order, and say what they touched. ``facts_of(entity)`` gives
        the version's facts that touch ``entity`` (a deleted entity's facts stop being known,
        as DETACH DELETE does)."""
        touched = Touched()
        for event in events:
            kind = event.kind
            if kind in (ChangeKind.TRIPLE_ADDED, ChangeKind.TRIPLE_REMOVED):
                fact = (str(event.head), str(event.relation), str(event.tail))
                touched.facts.add(fact)
                if kind == ChangeKind.TRIPLE_ADDED:
                    self.removed.discard(fact)
                    self.added.add(fact)
                    # an edge needs both nodes: its ends exist (again)
                    self.deleted.discard(fact[0])
                    self.deleted.discard(fact[2])
                else:
                    self.added.discard(fact)
                    self.removed.add(fact)
                continue
            entity = str(event.entity)
            touched.entities.add(entity)
            if kind == ChangeKind.ENTITY_UPSERTED:
                self.deleted.discard(entity)
                name, description = (
                    event.properties.get("name"),
                    event.properties.get("description"),
                )
                if name is not None or description is not None:
                    old = self.texts.get(entity, (None, None))
                    self.texts[entity] = (
                        str(name) if name is not None else old[0],
                        str(description) if description is not None else old[1],
                    )
                elif entity not in self.texts:
                    self.texts[entity] = (None, None)
            else:  # deleted, with every fact that touches it
                self.deleted.add(entity)
                self.texts.pop(entity, None)
                gone = {f for f in self.added if entity in (f[0], f[2])}
                self.added -= gone
                gone |= set(facts_of(entity))
                self.removed |= gone
                touched.facts |= gone
        self.events += len(events)
        return touched

    def trained_changes(self, held: set[Triple]) -> tuple[frozenset[Triple], frozenset[Triple]]:
        """What an incremental update trains on: the added facts, and the removed ones (the
        version's, to unlearn), less ``held`` (the fixed validation set, never trained on)
        and the facts of deleted entities (masked out of every answer anyway)."""

        def live(fact: Triple) -> bool:
            return fact not in held and fact[0] not in self.deleted and fact[2] not in self.deleted

        return frozenset(filter(live, self.added)), frozenset(filter(live, self.removed))

    def mentioned(self, touched: Touched | None = None) -> set[str]:
        """Every entity the overlay names (as an end of an added fact or with text); with
        ``touched``, those of them the batch touched."""
        if touched is None:
            ends = {f[0] for f in self.added} | {f[2] for f in self.added}
            return ends | set(self.texts)
        facts = touched.facts & self.added
        ends = {f[0] for f in facts} | {f[2] for f in facts}
        return ends | {e for e in touched.entities if e in self.texts}

    # ---- persistence
    def save(self, folder: Path) -> Path:
        """Write the overlay atomically into ``folder``."""
        folder.mkdir(parents=True, exist_ok=True)
        meta = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "base_version": self.base_version,
            "next_offset": self.next_offset,
            "events": self.events,
            "added": sorted(self.added),
            "removed": sorted(self.removed),
            "texts": self.texts,
            "deleted": sorted(self.deleted),
            "new_entities": self.new_entities,
            "origins": self.origins,
            "new_relations": self.new_relations,
        }
        tensors = {
            "entity_rows": self.entity_rows.detach().float().cpu().contiguous(),
            "relation_rows": self.relation_rows.detach().float().cpu().contiguous(),
        }
        path, tmp = folder / FILE, folder / (FILE + ".tmp")
        save_file(tensors, str(tmp), metadata={"overlay": json.dumps(meta)})
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        directory = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
        return path

    @classmethod
    def load(cls, folder: Path) -> Overlay | None:
        """The overlay saved in ``folder``, or None when there is none."""
        path = folder / FILE
        if not path.is_file():
            return None
        try:
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as handle:
                meta = json.loads((handle.metadata() or {})["overlay"])
            tensors = load_file(str(path))
        except (OSError, KeyError, ValueError, SafetensorError) as exc:
            raise ArtifactError(f"{path}: unreadable overlay of graph changes ({exc})") from exc
        if meta.get("format") != FORMAT or meta.get("format_version", 0) > FORMAT_VERSION:
            raise ArtifactError(f"{path}: not an overlay this kgweave reads")

        def triples(rows: list[list[str]]) -> set[Triple]:
            return {(str(h), str(r), str(t)) for h, r, t in rows}

        return cls(
            base_version=str(meta["base_version"]),
            next_offset=int(meta["next_offset"]),
            added=triples(meta["added"]),
            removed=triples(meta["removed"]),
            texts={k: (v[0], v[1]) for k, v in meta["texts"].items()},
            deleted=set(meta["deleted"]),
            new_entities=list(meta["new_entities"]),
            origins=dict(meta["origins"]),
            entity_rows=tensors["entity_rows"],
            new_relations=list(meta["new_relations"]),
            relation_rows=tensors["relation_rows"],
            events=int(meta.get("events", 0)),
        )
