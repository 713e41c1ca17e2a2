"""Lexical links between entities: where an entity's name occurs in another entity's name or
description (WordNet's glosses name their hypernyms; "x of y" names end in other names). The
text fusion (:mod:`kgweave.language.features.text_fusion`) turns each table into a feature."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from kgweave.data.dataset import expand_ranges
from kgweave.errors import InvalidArgumentError

_WORD = re.compile(r"[^\W_]+(?:['-][^\W_]+)*")
#: Function words never matched as names on their own (WordNet has synsets named "a", "in").
STOPWORDS = frozenset(
    {
        "a", "an", "and", "any", "are", "as", "at", "be", "by", "for", "from", "in", "into",
        "is", "it", "its", "no", "not", "of", "on", "or", "that", "the", "this", "to", "which",
        "with",
    }
)  # fmt: skip


def words(text: str) -> list[str]:
    """Lower-cased word tokens of ``text`` (letters and digits; ``_`` separates words)."""
    return _WORD.findall(text.lower())


@dataclass
class Links:
    """Entity -> entity links in CSR form: the targets of ``i`` are
    ``indices[indptr[i]:indptr[i + 1]]``."""

    indptr: torch.Tensor  # (N + 1,) long
    indices: torch.Tensor  # (nnz,) long

    @classmethod
    def from_sets(cls, sets: Sequence[set[int]]) -> Links:
        lengths = torch.tensor([len(s) for s in sets], dtype=torch.long)
        indptr = torch.zeros(len(sets) + 1, dtype=torch.long)
        indptr[1:] = torch.cumsum(lengths, 0)
        flat = [j for s in sets for j in sorted(s)]
        return cls(indptr, torch.tensor(flat, dtype=torch.long))

    def transpose(self, num: int) -> Links:
        rows = torch.repeat_interleave(torch.arange(num), self.indptr[1:] - self.indptr[:-1])
        order = torch.argsort(self.indices * num + rows)
        counts = torch.bincount(self.indices, minlength=num)
        indptr = torch.zeros(num + 1, dtype=torch.long)
        indptr[1:] = torch.cumsum(counts, 0)
        return Links(indptr, rows[order])

    def of(self, entity: int) -> list[int]:
        """Targets of one entity."""
        return self.indices[self.indptr[entity] : self.indptr[entity + 1]].tolist()

    def rows(self, entities: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(batch row, target) of every link of ``entities`` (shape (B,)), on this table's
        device."""
        entities = entities.to(self.indptr.device)
        starts = self.indptr[entities]
        rows, positions = expand_ranges(starts, self.indptr[entities + 1] - starts)
        return rows, self.indices[positions]

    def to(self, device: torch.device) -> Links:
        return Links(self.indptr.to(device), self.indices.to(device))

    @property
    def nnz(self) -> int:
        return len(self.indices)


class LexicalLinks:
    """Where entity names occur in other entities' names and descriptions.

    Args:
        names: one readable name per entity (id order).
        descriptions: one description per entity, or None.
        max_ngram: longest name, in words, looked for inside descriptions.
    """

    def __init__(
        self,
        names: Sequence[str],
        descriptions: Sequence[str | None],
        max_ngram: int = 4,
    ) -> None:
        if len(descriptions) != len(names):
            raise InvalidArgumentError(
                f"{len(names)} names but {len(descriptions)} descriptions: give one per entity"
            )
        n = len(names)
        by_name: dict[str, list[int]] = {}
        name_words = [words(x or "") for x in names]
        for i, w in enumerate(name_words):
            if w:
                by_name.setdefault(" ".join(w), []).append(i)
        mentions: list[set[int]] = [set() for _ in range(n)]
        suffixes: list[set[int]] = [set() for _ in range(n)]
        for i in range(n):
            desc = words(descriptions[i] or "")
            for size in range(1, max_ngram + 1):
                for start in range(len(desc) - size + 1):
                    gram = " ".join(desc[start : start + size])
                    if size == 1 and gram in STOPWORDS:
                        continue
                    mentions[i].update(j for j in by_name.get(gram, ()) if j != i)
            w = name_words[i]
            for start in range(1, len(w)):
                suffixes[i].update(j for j in by_name.get(" ".join(w[start:]), ()) if j != i)
        self.num_entities = n
        self.mentions = Links.from_sets(mentions)  # i -> names in i's description
        self.mentioned_by = self.mentions.transpose(n)  # i -> descriptions naming i
        self.suffixes = Links.from_sets(suffixes)  # i -> names that end i's name
        self.extended_by = self.suffixes.transpose(n)  # i -> names ending with i's name

    def tables(self) -> tuple[Links, Links, Links, Links]:
        """The four link tables, in the order of the features they feed."""
        return self.mentions, self.mentioned_by, self.suffixes, self.extended_by

    def to(self, device: torch.device) -> LexicalLinks:
        """Move the tables to ``device`` (in place) and return self."""
        self.mentions, self.mentioned_by, self.suffixes, self.extended_by = (
            t.to(device) for t in self.tables()
        )
        return self
