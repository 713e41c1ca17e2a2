"""Moving data between datasets and the graph: import, and snapshots for training.

A snapshot is the graph's triples in the engine's dataset form. Its id maps are stable across
snapshots: they are kept in a JSON file beside the graph, new entities and relations get new ids
at the end, and old ids never move, so a model trained on an earlier snapshot still lines up.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from kgweave import atomic
from kgweave.data.dataset import IdMap, KGDataset
from kgweave.errors import KGWeaveError
from kgweave.graph.store import EntityRow, GraphStore, Triple


def import_dataset(
    store: GraphStore,
    dataset: KGDataset,
    splits: tuple[str, ...] = ("train", "valid", "test"),
    progress: bool = True,
) -> dict[str, Any]:
    """Write a dataset's entities (with their text) and the triples of ``splits`` (MERGE).

    Not one transaction, but idempotent: an import that fails mid-way (the database went away)
    leaves the triples written so far, and running it again completes it without duplicates.
    What a database cannot store never gets this far: the dataset reader refuses it.
    """
    started = time.perf_counter()
    store.ensure_schema()
    labels = dataset.entities.labels
    rows = (
        EntityRow(e, dataset.entity_names.get(e), dataset.entity_descriptions.get(e))
        for e in labels
    )
    with tqdm(total=len(labels), unit="entities", desc="entities", disable=not progress) as bar:
        for start in range(0, len(labels), 10_000):
            entity_rows = [next(rows) for _ in range(min(10_000, len(labels) - start))]
            store.upsert_entities(entity_rows)
            bar.update(len(entity_rows))
    triples: list[Triple] = []
    for split in splits:
        ids = dataset.split(split).tolist()
        triples += [(labels[h], dataset.relations.labels[r], labels[t]) for h, r, t in ids]
    entity_seconds = time.perf_counter() - started
    with tqdm(total=len(triples), unit="triples", desc="triples", disable=not progress) as bar:
        for start in range(0, len(triples), 10_000):
            chunk = triples[start : start + 10_000]
            try:
                store.add_triples(chunk)
            except KGWeaveError as exc:  # every write is a MERGE: a rerun completes the import
                raise type(exc)(
                    f"{exc.message} (the import stopped with up to {start:,} of "
                    f"{len(triples):,} triples written; it is idempotent: run it again to "
                    "complete it)"
                ) from exc
            bar.update(len(chunk))
    seconds = time.perf_counter() - started
    triple_seconds = seconds - entity_seconds
    return {
        "dataset": dataset.name,
        "entities": len(labels),
        "triples": len(triples),
        "seconds": round(seconds, 3),
        "triples_per_second": round(len(triples) / max(triple_seconds, 1e-9)),
    }


@dataclass
class Snapshot:
    """The graph's triples as ids over stable id maps."""

    triples: torch.Tensor  # (M, 3), sorted
    entities: IdMap
    relations: IdMap
    new_entities: int
    new_relations: int
    #: (E,) bool over ``entities``: in the graph now (the id maps keep deleted ones)
    present: torch.Tensor
    #: (E,) int64: :func:`text_hash` of each present entity's name and description (0: none)
    text_hashes: torch.Tensor
    #: the entities' names and descriptions, where they have one (read with the snapshot)
    names: dict[str, str]
    descriptions: dict[str, str]


def text_hash(name: str | None, description: str | None) -> int:
    """A signed 64-bit hash of an entity's text (0 for none), to see a text change."""
    if not name and not description:
        return 0
    digest = hashlib.blake2b(f"{name or ''}\x00{description or ''}".encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "little", signed=True) or 1


class StableIds:
    """Id maps persisted in a JSON file: append-only across snapshots."""

    def __init__(self, path: Path) -> None:
        self.path = path
        if path.is_file():
            data = json.loads(path.read_text(encoding="utf-8"))
            self.entities: list[str] = list(data["entities"])
            self.relations: list[str] = list(data["relations"])
        else:
            self.entities, self.relations = [], []
        self._e = {e: i for i, e in enumerate(self.entities)}
        self._r = {r: i for i, r in enumerate(self.relations)}

    def extend(self, entities: set[str], relations: set[str]) -> tuple[int, int]:
        """Give ids to unseen labels (sorted, so the result is deterministic)."""
        new_e = sorted(entities - self._e.keys())
        new_r = sorted(relations - self._r.keys())
        for label in new_e:
            self._e[label] = len(self.entities)
            self.entities.append(label)
        for label in new_r:
            self._r[label] = len(self.relations)
            self.relations.append(label)
        return len(new_e), len(new_r)

    @property
    def entity_index(self) -> dict[str, int]:
        """Each entity's id."""
        return self._e

    def encode(self, triple: Triple) -> tuple[int, int, int]:
        """Ids of a labelled triple whose labels are known."""
        h, r, t = triple
        return self._e[h], self._r[r], self._e[t]

    def save(self) -> None:
        atomic.write_text(
            self.path, json.dumps({"entities": self.entities, "relations": self.relations})
        )


def export_snapshot(
    store: GraphStore,
    ids_path: Path,
    page_size: int = 50_000,
    relations: Collection[str] | None = None,
    entities: bool = True,
) -> Snapshot:
    """Read every triple (of ``relations`` only, when given) and every entity (none when not
    ``entities``: the snapshot then knows only the triples' ends, without text) page by page
    and express them over the stable id maps."""
    ids = StableIds(ids_path)
    chunks: list[torch.Tensor] = []
    new_e = new_r = 0
    for page in store.iter_triples(page_size=page_size, relations=relations):
        a, b = ids.extend(
            {h for h, _, _ in page} | {t for _, _, t in page}, {r for _, r, _ in page}
        )
        new_e, new_r = new_e + a, new_r + b
        chunks.append(torch.tensor([ids.encode(t) for t in page], dtype=torch.long).reshape(-1, 3))
    texts: dict[str, int] = {}
    names: dict[str, str] = {}
    descriptions: dict[str, str] = {}
    for rows in store.iter_entities(page_size=page_size) if entities else ():  # edgeless too
        a, _ = ids.extend({row.id for row in rows}, set())
        new_e += a
        for row in rows:
            texts[row.id] = text_hash(row.name, row.description)
            if row.name:
                names[row.id] = row.name
            if row.description:
                descriptions[row.id] = row.description
    triples = torch.cat(chunks) if chunks else torch.zeros(0, 3, dtype=torch.long)
    present = torch.zeros(len(ids.entities), dtype=torch.bool)
    if len(triples):
        present[triples[:, 0]] = True
        present[triples[:, 2]] = True
    with_rows = torch.tensor([ids.entity_index[e] for e in texts], dtype=torch.long)
    present[with_rows] = True
    hashes = torch.zeros(len(ids.entities), dtype=torch.long)
    hashes[with_rows] = torch.tensor(list(texts.values()), dtype=torch.long)
    if len(triples):
        key = (triples[:, 0] * len(ids.relations) + triples[:, 1]) * len(ids.entities) + triples[
            :, 2
        ]
        triples = triples[torch.argsort(key)]
    ids.save()
    return Snapshot(
        triples,
        IdMap(ids.entities),
        IdMap(ids.relations),
        new_e,
        new_r,
        present,
        hashes,
        names,
        descriptions,
    )
