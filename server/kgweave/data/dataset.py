"""An in-memory knowledge graph: id maps, integer triples per split, entity and relation text."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch

from kgweave.data.reader import (
    LabeledTriple,
    read_text_map,
    read_triples,
    read_wikidata_descriptions,
)
from kgweave.errors import DatasetError, NotFoundError, did_you_mean, echo

log = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")


class IdMap:
    """A bijection between string labels and contiguous integer ids ``0..len-1``."""

    def __init__(self, labels: Sequence[str]) -> None:
        self.labels: list[str] = list(labels)
        self.index: dict[str, int] = {label: i for i, label in enumerate(self.labels)}
        if len(self.index) != len(self.labels):
            raise DatasetError("id map has duplicate labels")

    @classmethod
    def from_values(cls, values: Iterable[str]) -> IdMap:
        """Sorted, de-duplicated labels: the same data always gives the same ids."""
        return cls(sorted(set(values)))

    def __len__(self) -> int:
        return len(self.labels)

    def __contains__(self, label: object) -> bool:
        return label in self.index

    def id_of(self, label: str, kind: str = "label") -> int:
        """The id of ``label``; :class:`NotFoundError` with close matches when unknown."""
        try:
            return self.index[label]
        except KeyError:
            suffix = did_you_mean(label, self.labels)
            raise NotFoundError(f"unknown {kind} {echo(label)}{suffix}") from None


def with_reciprocals(triples: torch.Tensor, num_relations: int) -> torch.Tensor:
    """Add the reciprocal of every triple: ``(h, r, t) -> (t, r + num_relations, h)``.

    Args:
        triples: shape (M, 3).
    Returns:
        shape (2M, 3): the originals first, then their reciprocals.
    """
    inverse = torch.stack((triples[:, 2], triples[:, 1] + num_relations, triples[:, 0]), dim=1)
    return torch.cat((triples, inverse), dim=0)


def expand_ranges(starts: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Every position of the ranges ``starts[i] .. starts[i] + lengths[i] - 1`` (a CSR gather).

    Args:
        starts, lengths: shape (B,) long, on one device.
    Returns:
        (rows, positions): two (T,) tensors, ``T = lengths.sum()``; ``rows[j]`` is the range
        that ``positions[j]`` belongs to.
    """
    rows = torch.repeat_interleave(torch.arange(len(starts), device=starts.device), lengths)
    first = torch.repeat_interleave(starts - torch.cumsum(lengths, 0) + lengths, lengths)
    return rows, first + torch.arange(len(rows), device=starts.device)


class KnownIndex(Protocol):
    """What link prediction asks of the known facts: :class:`TailIndex`, or a derived
    version's :class:`~kgweave.serving.known_delta.DeltaTailIndex`."""

    def lookup(self, hr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...

    def contains(self, hr: torch.Tensor, tails: torch.Tensor) -> torch.Tensor: ...

    def to(self, device: torch.device) -> KnownIndex: ...


class TailIndex:
    """Known tails of each (head, relation) query, in CSR form, searchable on any device.

    Built from triples that already include reciprocals, it answers head queries too: the heads of
    ``(?, r, t)`` are the tails of ``(t, r + R, ?)``.
    """

    def __init__(self, triples: torch.Tensor, num_entities: int, num_relations: int) -> None:
        """Args: triples: shape (M, 3); num_relations counts reciprocal relations too."""
        keys = triples[:, 0] * num_relations + triples[:, 1]
        full = torch.sort(keys * num_entities + triples[:, 2]).values
        # drop duplicate triples
        keep = torch.ones_like(full, dtype=torch.bool)
        keep[1:] = full[1:] != full[:-1]
        self._index(full[keep], num_entities, num_relations)

    @classmethod
    def from_facts(
        cls,
        facts: torch.Tensor,
        num_entities: int,
        num_relations: int,
        split: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> TailIndex:
        """The index of ``facts``: sorted, distinct keys ``query * num_entities + tail`` (as
        :attr:`facts` holds them), with no sort; ``split``: each key's query and tail, when
        the caller has them."""
        out = cls.__new__(cls)
        out._index(facts, num_entities, num_relations, split)
        return out

    def _index(
        self,
        facts: torch.Tensor,
        num_entities: int,
        num_relations: int,
        split: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> None:
        self.num_entities = num_entities
        self.num_relations = num_relations
        #: every known (query, tail) as one sorted key ``query * num_entities + tail``: (T,)
        self.facts = facts
        queries, self.tails = split or (facts // num_entities, facts % num_entities)
        self.keys, counts = torch.unique_consecutive(queries, return_counts=True)
        self.offsets = torch.zeros(len(self.keys) + 1, dtype=torch.long, device=facts.device)
        self.offsets[1:] = torch.cumsum(counts, 0)

    def queries(self) -> torch.Tensor:
        """Each key's query (``facts // num_entities``): shape (T,)."""
        return torch.repeat_interleave(self.keys, self.offsets[1:] - self.offsets[:-1])

    def copy_to(self, device: torch.device | str) -> TailIndex:
        """A copy of the index on ``device``; this one stays where it is."""
        out = TailIndex.__new__(TailIndex)
        out.num_entities, out.num_relations = self.num_entities, self.num_relations
        out.keys, out.offsets, out.tails = self.keys, self.offsets, self.tails
        out.facts = self.facts
        return out.to(torch.device(device))

    def to(self, device: torch.device) -> TailIndex:
        """Move the index to ``device`` (in place) and return it."""
        self.keys = self.keys.to(device)
        self.offsets = self.offsets.to(device)
        self.tails = self.tails.to(device)
        self.facts = self.facts.to(device)
        return self

    @property
    def num_queries(self) -> int:
        """Number of distinct (head, relation) queries."""
        return len(self.keys)

    def query_pairs(self) -> torch.Tensor:
        """All distinct queries: shape (K, 2) of (head, relation)."""
        return torch.stack((self.keys // self.num_relations, self.keys % self.num_relations), dim=1)

    def positions_of(self, query_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Known tails of the queries with the given row numbers in :meth:`query_pairs`.

        Args:
            query_ids: shape (B,), indices into ``keys``.
        Returns:
            (rows, tails): two (T,) tensors; ``rows[i]`` is the batch row of ``tails[i]``.
        """
        starts = self.offsets[query_ids]
        return self._expand(starts, self.offsets[query_ids + 1] - starts)

    def _expand(
        self, starts: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(batch row, tail) for every entry of the CSR ranges ``starts[i] .. +lengths[i]``."""
        rows, positions = expand_ranges(starts, lengths)
        return rows, self.tails[positions]

    def lookup(self, hr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Known tails of arbitrary queries (unknown queries have none).

        Args:
            hr: shape (B, 2) of (head, relation).
        Returns:
            (rows, tails) as in :meth:`positions_of`.
        """
        keys = hr[:, 0] * self.num_relations + hr[:, 1]
        if len(self.keys) == 0:
            empty = torch.zeros(0, dtype=torch.long, device=hr.device)
            return empty, empty
        slot = torch.searchsorted(self.keys, keys).clamp_(max=len(self.keys) - 1)
        found = self.keys[slot] == keys
        starts = self.offsets[slot]
        lengths = torch.where(found, self.offsets[slot + 1] - starts, torch.zeros_like(starts))
        return self._expand(starts, lengths)

    def contains(self, hr: torch.Tensor, tails: torch.Tensor) -> torch.Tensor:
        """Whether each ``(head, relation, tails[i, j])`` of query row ``i`` is known.

        Args:
            hr: shape (B, 2) of (head, relation).
            tails: shape (B, C) entity ids.
        Returns:
            shape (B, C) bool; one binary search per entry, no expansion of known tails.
        """
        if len(self.facts) == 0:
            return torch.zeros_like(tails, dtype=torch.bool)
        keys = (hr[:, 0] * self.num_relations + hr[:, 1]).unsqueeze(1) * self.num_entities + tails
        slot = torch.searchsorted(self.facts, keys.reshape(-1)).clamp_(max=len(self.facts) - 1)
        return (self.facts[slot] == keys.reshape(-1)).view_as(tails)

    def mask(self, hr: torch.Tensor) -> torch.Tensor:
        """Dense boolean mask of known tails: shape (B, N)."""
        rows, tails = self.lookup(hr)
        out = torch.zeros(len(hr), self.num_entities, dtype=torch.bool, device=hr.device)
        out[rows, tails] = True
        return out


@dataclass
class KGDataset:
    """A knowledge graph with standard splits, as integer triples over shared id maps."""

    name: str
    entities: IdMap
    relations: IdMap
    splits: dict[str, torch.Tensor]
    fingerprint: str
    path: Path | None = None
    entity_names: dict[str, str] = field(default_factory=dict)
    entity_descriptions: dict[str, str] = field(default_factory=dict)
    relation_texts: dict[str, str] = field(default_factory=dict)
    relation_templates: dict[str, str] = field(default_factory=dict)
    #: (H, 3) for a snapshot of the served graph: the graph's facts its splits hold out from
    #: training (validation, test), which the model trained on it knows all the same; None for
    #: a dataset of files, whose held-out splits are no served graph's facts
    known_held_out: torch.Tensor | None = None

    @property
    def num_entities(self) -> int:
        return len(self.entities)

    @property
    def num_relations(self) -> int:
        """Relations as in the data, without reciprocals."""
        return len(self.relations)

    @property
    def train(self) -> torch.Tensor:
        """Training triples: shape (M, 3)."""
        return self.splits["train"]

    def split(self, name: str) -> torch.Tensor:
        """Triples of one split: shape (M, 3)."""
        if name not in self.splits:
            raise NotFoundError(
                f"dataset {echo(self.name)} has no split {echo(name)} "
                f"(has {', '.join(self.splits)})"
            )
        return self.splits[name]

    def all_triples(self) -> torch.Tensor:
        """Every split together: shape (M, 3); used to filter evaluation."""
        return torch.cat(list(self.splits.values()), dim=0)

    def entity_name(self, label: str) -> str:
        """A readable name for an entity id, the id itself when there is no text."""
        return self.entity_names.get(label, label)

    def summary(self) -> dict[str, object]:
        """Counts for listings and reports."""
        return {
            "name": self.name,
            "entities": self.num_entities,
            "relations": self.num_relations,
            **{f"{name}_triples": len(t) for name, t in self.splits.items()},
            "fingerprint": self.fingerprint,
        }


def encode(triples: Sequence[LabeledTriple], entities: IdMap, relations: IdMap) -> torch.Tensor:
    """Labelled triples to ids: shape (M, 3). Labels must be in the maps."""
    e, r = entities.index, relations.index
    return torch.tensor([(e[h], r[p], e[t]) for h, p, t in triples], dtype=torch.long).reshape(
        -1, 3
    )


def fingerprint_files(paths: Sequence[Path]) -> str:
    """sha256 over the names and bytes of the given files, in order."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode())
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def load_dataset(path: Path, name: str | None = None) -> KGDataset:
    """Read a dataset folder: ``train.tsv``, ``valid.tsv``, ``test.tsv`` and optional text files.

    Optional files: ``entity2text.tsv`` (names), ``entity2description.tsv``,
    ``entity2wikidata.json`` (FB15k-237 labels and descriptions), ``relation2text.tsv``,
    ``relation2template.tsv`` (``{head}``/``{tail}`` sentence templates).
    Entity ids cover every split, so evaluation ranks against all entities.
    """
    if not path.is_dir():
        raise NotFoundError(f"dataset folder {path} does not exist")
    files = [path / f"{split}.tsv" for split in SPLITS]
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise DatasetError(
            f"{path}: missing {', '.join(missing)} (need train.tsv, valid.tsv, test.tsv)"
        )
    labeled = {split: read_triples(f) for split, f in zip(SPLITS, files, strict=True)}
    if not labeled["train"]:
        raise DatasetError(f"{path / 'train.tsv'}: no triples")
    if not labeled["valid"]:
        raise DatasetError(
            f"{path / 'valid.tsv'}: no triples; validation (early stopping, model selection, "
            "activation if_better) needs some: move a few percent of train.tsv there"
        )
    _warn_unseen(path, labeled)
    entities = IdMap.from_values(x for rows in labeled.values() for h, _, t in rows for x in (h, t))
    relations = IdMap.from_values(r for rows in labeled.values() for _, r, _ in rows)
    splits = {split: encode(rows, entities, relations) for split, rows in labeled.items()}
    dataset = KGDataset(
        name=name or path.name,
        entities=entities,
        relations=relations,
        splits=splits,
        fingerprint=fingerprint_files(files),
        path=path,
    )
    _attach_text(dataset, path)
    return dataset


def unseen_entities(labeled: dict[str, list[LabeledTriple]]) -> dict[str, list[str]]:
    """Entities of each evaluation split that no training triple mentions, sorted."""
    seen = {x for h, _, t in labeled["train"] for x in (h, t)}
    return {
        split: sorted({x for h, _, t in labeled[split] for x in (h, t)} - seen)
        for split in SPLITS[1:]
    }


def _warn_unseen(path: Path, labeled: dict[str, list[LabeledTriple]]) -> None:
    """Entities only in valid/test get embeddings no training step ever touches: say so."""
    for split, unseen in unseen_entities(labeled).items():
        if unseen:
            examples = ", ".join(repr(e) for e in unseen[:5])
            log.warning(
                "%s: %d %s only in %s, not in train.tsv (e.g. %s): their "
                "embeddings stay untrained and their triples rank near random",
                path / f"{split}.tsv",
                len(unseen),
                "entity appears" if len(unseen) == 1 else "entities appear",
                split,
                examples,
            )


def _attach_text(dataset: KGDataset, path: Path) -> None:
    wikidata = path / "entity2wikidata.json"
    if wikidata.is_file():
        labels, descriptions = read_wikidata_descriptions(wikidata)
        dataset.entity_names.update(labels)
        dataset.entity_descriptions.update(descriptions)
    if (path / "entity2text.tsv").is_file():
        dataset.entity_names.update(read_text_map(path / "entity2text.tsv"))
    if (path / "entity2description.tsv").is_file():
        dataset.entity_descriptions.update(read_text_map(path / "entity2description.tsv"))
    if (path / "relation2text.tsv").is_file():
        dataset.relation_texts.update(read_text_map(path / "relation2text.tsv"))
    if (path / "relation2template.tsv").is_file():
        dataset.relation_templates.update(read_text_map(path / "relation2template.tsv"))
