"""Change capture that works on any backend: compare the graph with the last snapshot.

Each run exports the current triples (:func:`export_snapshot`, stable ids), compares them with
the snapshot saved by the previous run, appends one event per added or removed triple (and per
new entity, with its name and description) to the event log, and only then saves the new
snapshot. A crash between the two re-emits the same events next time: at-least-once, never
lost.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from kgweave import atomic
from kgweave.changes.events import ChangeEvent, ChangeKind
from kgweave.changes.log import EventLog
from kgweave.graph.store import EntityRow, GraphStore
from kgweave.graph.sync import export_snapshot

SOURCE = "snapshot-diff"


def _keys(triples: torch.Tensor, num_entities: int, num_relations: int) -> torch.Tensor:
    """One int64 per triple: ((h * R) + r) * E + t."""
    return (triples[:, 0] * num_relations + triples[:, 1]) * num_entities + triples[:, 2]


def _text_of(row: EntityRow | None) -> dict[str, Any]:
    """A new entity's name and description as event properties (the applier's cold start)."""
    if row is None:
        return {}
    return {k: v for k, v in (("name", row.name), ("description", row.description)) if v}


def snapshot_diff(
    store: GraphStore, state_dir: Path, log: EventLog, emit: bool = True
) -> dict[str, Any]:
    """Emit the graph's changes since the last run into ``log``; returns counts and offsets.

    ``emit=False`` records the graph as the baseline without emitting anything (the served
    model was trained on it: its facts are not changes)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    previous_path = state_dir / "snapshot.safetensors"
    saved = load_file(str(previous_path)) if previous_path.is_file() else {}
    previous = saved.get("triples", torch.zeros(0, 3, dtype=torch.long))
    known_entities = len(saved.get("entities_known", ()))
    snap = export_snapshot(store, state_dir / "ids.json")
    n_e, n_r = max(len(snap.entities), 1), max(len(snap.relations), 1)
    current_keys = _keys(snap.triples, n_e, n_r)
    previous_keys = _keys(previous, n_e, n_r)
    added = snap.triples[~torch.isin(current_keys, previous_keys)]
    removed = previous[~torch.isin(previous_keys, current_keys)]
    e, r = snap.entities.labels, snap.relations.labels
    fresh = e[known_entities:]
    rows = {row.id: row for row in store.entities(fresh)} if fresh else {}
    events = [
        ChangeEvent(
            ChangeKind.ENTITY_UPSERTED,
            entity=label,
            properties=_text_of(rows.get(label)),
            source=SOURCE,
        )
        for label in fresh
    ]
    events += [
        ChangeEvent(ChangeKind.TRIPLE_ADDED, head=e[h], relation=r[p], tail=e[t], source=SOURCE)
        for h, p, t in added.tolist()
    ]
    events += [
        ChangeEvent(ChangeKind.TRIPLE_REMOVED, head=e[h], relation=r[p], tail=e[t], source=SOURCE)
        for h, p, t in removed.tolist()
    ]
    offsets = log.append(events) if events and emit else []
    with atomic.atomic_path(previous_path) as tmp:
        save_file(
            {
                "triples": snap.triples.contiguous(),
                "entities_known": torch.zeros(len(e), dtype=torch.int8),
            },
            str(tmp),
        )
    return {
        "added": len(added),
        "removed": len(removed),
        "new_entities": len(e) - known_entities,
        "first_offset": offsets[0] if offsets else None,
        "next_offset": log.end_offset,
    }
