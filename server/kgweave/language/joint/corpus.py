"""A KG-to-text corpus: the graph's facts as sentences, for language-model training.

The file is UTF-8 text, one sentence per line: first each entity's description sentence (in
entity id order, when asked for), then one sentence per fact of the chosen splits, in the
splits' order and the files' order. The same dataset always gives the same bytes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from tqdm.auto import tqdm

from kgweave import atomic
from kgweave.data.dataset import KGDataset
from kgweave.errors import InvalidArgumentError
from kgweave.language.features.verbalize import Verbalizer


def write_corpus(
    dataset: KGDataset,
    path: Path,
    splits: Sequence[str] = ("train",),
    include_descriptions: bool = True,
    user_templates: Mapping[str, str] | None = None,
    progress: bool = True,
) -> dict[str, int]:
    """Write the corpus of ``dataset`` to ``path`` (atomically: a temporary file, then renamed).

    Args:
        splits: which splits' facts to verbalize (``train`` only keeps evaluation facts out of
            a language model's training text).
        include_descriptions: add ``"Name: description."`` for every entity that has one.
        user_templates: relation -> ``{head}``/``{tail}`` template overriding the graph's.
    Returns:
        counts: ``facts``, ``descriptions``, ``lines``, ``bytes``.
    Raises:
        NotFoundError: an unknown split.
    """
    if not splits:
        raise InvalidArgumentError("give at least one split")
    triples = [dataset.split(s) for s in splits]  # NotFoundError for unknown splits first
    verbalizer = Verbalizer.from_dataset(dataset, user_templates=user_templates, splits=())
    entities, relations = dataset.entities.labels, dataset.relations.labels
    counts = {"facts": 0, "descriptions": 0, "lines": 0, "bytes": 0}
    total = sum(len(t) for t in triples) + (len(entities) if include_descriptions else 0)
    with (
        atomic.open_atomic(path, "w", newline="\n") as out,
        tqdm(total=total, unit="lines", desc="corpus", disable=not progress) as bar,
    ):

        def emit(sentence: str) -> None:
            line = " ".join(sentence.split())  # no newlines or tabs inside a line
            out.write(line + "\n")
            counts["lines"] += 1
            counts["bytes"] += len(line.encode("utf-8")) + 1

        if include_descriptions:
            for entity in entities:
                sentence = verbalizer.description_sentence(entity)
                if sentence:
                    emit(sentence)
                    counts["descriptions"] += 1
                bar.update(1)
        for split in triples:
            for h, r, t in split.tolist():
                emit(verbalizer.triple(entities[h], relations[r], entities[t]))
                counts["facts"] += 1
                bar.update(1)
    return counts
