"""Prefix search over entity ids and names, and a derived version's on top of its base's.

A loaded version sorts the case-folded ids and names of its entities once, on its first
search. A version derived from it per change batch (:mod:`kgweave.changes.apply`) does not
sort them again: it searches the base's entries, skipping the entities whose id or name it no
longer has as the base had it (deleted, renamed), plus a small sorted list of its own for the
entities that are new or renamed. On FB15k-237 the first search after each batch sorted 29k
keys; a graph of a million entities would sort two million.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass


def _entries(
    labels: Sequence[str],
    names: Sequence[str | None],
    ids: range | list[int],
    excluded: frozenset[int],
) -> list[tuple[str, int]]:
    """Sorted distinct (folded id or name, entity id) of the entities ``ids``."""
    keys = {(labels[i].casefold(), i) for i in ids if i not in excluded}
    keys |= {(name.casefold(), i) for i in ids if (name := names[i]) and i not in excluded}
    return sorted(keys)


@dataclass(frozen=True)
class PrefixIndex:
    """Sorted (key, entity id) entries of a loaded version (its ``labels``, ``names`` and
    deleted entities ``excluded``), or of a derived version: its base's less ``dropped``
    entities, plus ``extra``."""

    labels: Sequence[str]
    names: Sequence[str | None]
    excluded: frozenset[int]
    entries: list[tuple[str, int]]
    keys: list[str]
    extra: list[tuple[str, int]]
    extra_keys: list[str]
    dropped: frozenset[int]

    @classmethod
    def of(
        cls, labels: Sequence[str], names: Sequence[str | None], excluded: frozenset[int]
    ) -> PrefixIndex:
        """The index of a version's entities (``excluded``: deleted, never found)."""
        entries = _entries(labels, names, range(len(labels)), excluded)
        return cls(labels, names, excluded, entries, [k for k, _ in entries], [], [], frozenset())

    def extended(
        self, labels: Sequence[str], names: Sequence[str | None], excluded: frozenset[int]
    ) -> PrefixIndex:
        """The index of a version derived from this one (the same entities first, then new
        ones; ``excluded`` its deleted entities), from this one's entries."""
        if self.extra or self.dropped:  # itself derived: a derived version's is rebuilt
            return PrefixIndex.of(labels, names, excluded)
        ours = len(self.labels)
        changed = {i for i in range(ours)
                   if names[i] != self.names[i] or labels[i] != self.labels[i]}  # fmt: skip
        changed |= {i for i in excluded if i < ours and i not in self.excluded}
        changed |= {i for i in self.excluded if i not in excluded}  # (not deleted any more)
        extra = _entries(labels, names, [*sorted(changed), *range(ours, len(labels))], excluded)
        return PrefixIndex(
            labels,
            names,
            excluded,
            self.entries,
            self.keys,
            extra,
            [k for k, _ in extra],
            frozenset(changed),
        )

    def search(self, key: str) -> dict[int, str]:
        """Each entity with an id or name starting with ``key`` (case-folded), and the first
        such key of it in sorted order."""
        hits: dict[int, str] = {}
        for entries, keys, skip in (
            (self.entries, self.keys, self.dropped),
            (self.extra, self.extra_keys, frozenset()),
        ):
            for text, e in entries[bisect.bisect_left(keys, key) :]:
                if not text.startswith(key):
                    break
                if e not in skip:
                    hits.setdefault(e, text)
        return hits
