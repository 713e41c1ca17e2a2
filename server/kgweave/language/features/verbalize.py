"""Graph to text: fluent sentences for triples and short paragraphs for entities.

A :class:`Verbalizer` turns ``(head, relation, tail)`` labels into one sentence with entity
names (not ids), using a sentence template per relation. Templates use the demo graph's
``relation2template.tsv`` syntax: a sentence with one ``{head}`` and one ``{tail}`` slot, e.g.
``{head} was born in {tail}.``. Where a template comes from, first match wins:

1. user templates (a dict passed in, e.g. from the CLI or a request);
2. the graph's templates (``relation2template.tsv``, graph properties);
3. readable defaults derived from the relation's name (:func:`default_template`): hand-written
   ones for WordNet's 11 relations, rules for Freebase paths (``/people/person/place_of_birth``
   -> ``The place of birth of {head} is {tail}.``, compound ``a./b`` paths too) and for
   ``snake_case`` names (``born_in`` -> ``{head} was born in {tail}.``).

Everything here is deterministic: the same inputs always give the same text.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

from kgweave.errors import InvalidArgumentError
from kgweave.language.features.relation_phrases import (
    HEAD,
    TAIL,
    RelationPhrase,
    Triple,
    as_sentence,
    check_template,
    default_template,
)

if TYPE_CHECKING:
    from kgweave.artifact import ModelArtifact
    from kgweave.data.dataset import KGDataset

#: one sentence ends where .!? is followed by white space
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def split_lemma_definitions(names: Mapping[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """WN18RR's ``entity2text`` holds ``lemma, definition``: split it into names and
    descriptions (split at the first ``", "``)."""
    out_names: dict[str, str] = {}
    out_descriptions: dict[str, str] = {}
    for key, text in names.items():
        name, sep, definition = text.partition(", ")
        out_names[key] = name.strip() if sep else text
        if sep and definition.strip():
            out_descriptions[key] = definition.strip()
    return out_names, out_descriptions


def _looks_like_lemma_definitions(names: Mapping[str, str]) -> bool:
    """Most names are ``lemma, definition`` (WN18RR): at least 90% contain ``", "`` and the
    text after it is long."""
    if len(names) < 10:
        return False
    hits = sum(1 for t in names.values() if len(t.partition(", ")[2]) >= 15)
    return hits >= 0.9 * len(names)


class Verbalizer:
    """Turns triples and entities into sentences.

    Args:
        names: entity label -> readable name (labels without one are shown as themselves, with
            ``_`` turned into spaces).
        descriptions: entity label -> short description.
        relation_texts: relation label -> readable text (``place of birth``); used for default
            templates of relations whose label is not readable.
        templates: relation label -> template from the graph (``relation2template.tsv``).
        user_templates: relation label -> template given by the user; override everything.
        triples: labelled facts of the graph; give them for :meth:`facts_of` and to rank facts
            by importance in :meth:`entity`.
    """

    def __init__(
        self,
        names: Mapping[str, str] | None = None,
        descriptions: Mapping[str, str] | None = None,
        relation_texts: Mapping[str, str] | None = None,
        templates: Mapping[str, str] | None = None,
        user_templates: Mapping[str, str] | None = None,
        triples: Iterable[Triple] = (),
    ) -> None:
        self.names: dict[str, str] = dict(names or {})
        self.descriptions: dict[str, str] = dict(descriptions or {})
        self.relation_texts: dict[str, str] = dict(relation_texts or {})
        self.templates: dict[str, str] = {
            r: check_template(r, t) for r, t in (templates or {}).items()
        }
        for r, t in (user_templates or {}).items():
            self.templates[r] = check_template(r, t)
        self.triples: list[Triple] = list(triples)
        self.relation_counts: Counter[str] = Counter(r for _, r, _ in self.triples)
        self.degrees: Counter[str] = Counter()
        self._facts: dict[str, list[Triple]] = {}
        for triple in self.triples:
            h, _, t = triple
            self.degrees[h] += 1
            self.degrees[t] += 1
            self._facts.setdefault(h, []).append(triple)
            if t != h:
                self._facts.setdefault(t, []).append(triple)
        self._cache: dict[str, str] = {}

    # ---- construction
    @classmethod
    def from_dataset(
        cls,
        dataset: KGDataset,
        user_templates: Mapping[str, str] | None = None,
        splits: Sequence[str] = ("train",),
    ) -> Verbalizer:
        """From a dataset's text files; the facts of ``splits`` rank facts by importance."""
        names, descriptions = dict(dataset.entity_names), dict(dataset.entity_descriptions)
        if not descriptions and _looks_like_lemma_definitions(names):
            names, descriptions = split_lemma_definitions(names)
        ents, rels = dataset.entities.labels, dataset.relations.labels
        triples = [
            (ents[h], rels[r], ents[t])
            for split in splits
            for h, r, t in dataset.split(split).tolist()
        ]
        return cls(
            names=names,
            descriptions=descriptions,
            relation_texts=dataset.relation_texts,
            templates=dataset.relation_templates,
            user_templates=user_templates,
            triples=triples,
        )

    @classmethod
    def from_artifact(
        cls, artifact: ModelArtifact, user_templates: Mapping[str, str] | None = None
    ) -> Verbalizer:
        """From a model artifact: its names, descriptions, relation texts and training facts.

        Templates stored in the artifact's config (``config["relation_templates"]``) are used
        when present.
        """
        labels = artifact.entities.labels
        names = {e: n for e, n in zip(labels, artifact.entity_names, strict=True) if n}
        descriptions = {
            e: d for e, d in zip(labels, artifact.entity_descriptions, strict=False) if d
        }
        if not descriptions and _looks_like_lemma_definitions(names):
            names, descriptions = split_lemma_definitions(names)
        rels = artifact.relations.labels
        triples = [(labels[h], rels[r], labels[t]) for h, r, t in artifact.known.tolist()]
        stored = artifact.config.get("relation_templates")
        return cls(
            names=names,
            descriptions=descriptions,
            relation_texts=artifact.relation_texts,
            templates=dict(stored) if isinstance(stored, dict) else None,
            user_templates=user_templates,
            triples=triples,
        )

    # ---- pieces
    def name(self, entity: str) -> str:
        """A readable name: the known name, else the label with ``_`` as spaces."""
        known = self.names.get(entity)
        if known:
            return known
        return entity.replace("_", " ").strip() or entity

    def template(self, relation: str) -> str:
        """The template of ``relation``: user, graph, else a default from its name."""
        found = self.templates.get(relation)
        if found is None:
            found = self._cache.get(relation)
            if found is None:
                found = default_template(relation, self._readable_text(relation))
                self._cache[relation] = found
        return found

    def _readable_text(self, relation: str) -> str | None:
        """Relation text only for labels that are not readable themselves (e.g. ``P19``)."""
        text = self.relation_texts.get(relation)
        if text and not re.search(r"[a-z]{3}", relation):
            return text
        return None

    def relation_phrase(self, relation: str) -> RelationPhrase:
        """The relation's template as a :class:`RelationPhrase` (for LM prompts)."""
        return RelationPhrase(relation, self.template(relation))

    def tail_prompt(self, head: str, relation: str) -> str:
        """Text before the tail of ``(head, relation, ?)``: ``"Alan Turing was born in"``."""
        return self.relation_phrase(relation).split_tail(self.name(head))[0]

    def head_prompt(self, relation: str, tail: str) -> tuple[str, str]:
        """(prefix, suffix) around the head of ``(?, relation, tail)``."""
        return self.relation_phrase(relation).split_head(self.name(tail))

    # ---- sentences
    def triple(self, head: str, relation: str, tail: str) -> str:
        """One sentence for a fact, with entity names: ``"Marie Curie was born in Warsaw."``."""
        template = self.template(relation)
        text = template.replace(HEAD, "\x00h").replace(TAIL, "\x00t")
        text = text.replace("\x00h", self.name(head)).replace("\x00t", self.name(tail))
        return as_sentence(text)

    def mentions(
        self, sentence: str, relation: str, head: tuple[int, str], tail: tuple[int, str]
    ) -> list[tuple[int, int, int]]:
        """Where a fact's sentence (:meth:`triple`, or a piece of text that starts like it)
        names its head and tail.

        Args:
            head, tail: (entity id, entity label) of the fact's two ends.
        Returns:
            (char start, char end, entity id) of each name found, in the template's order,
            matched case-insensitively (a sentence capitalises its first letter); a name the
            text does not hold (cut off, or an empty name) is left out.
        """
        order = [head, tail]
        template = self.template(relation)
        if template.find(TAIL) < template.find(HEAD):
            order.reverse()
        folded = sentence.casefold()
        found: list[tuple[int, int, int]] = []
        cursor = 0
        for entity, label in order:
            name = self.name(label).casefold()
            at = folded.find(name, cursor) if name else -1
            if at >= 0:
                found.append((at, at + len(name), entity))
                cursor = at + len(name)
        return found

    def description_sentence(self, entity: str) -> str | None:
        """``"Warsaw: capital city of Poland."``, or None without a description."""
        description = self.descriptions.get(entity)
        if not description:
            return None
        return as_sentence(f"{self.name(entity)}: {description}")

    def facts_of(self, entity: str) -> list[Triple]:
        """The graph's facts (given at construction) with ``entity`` as head or tail."""
        return list(self._facts.get(entity, []))

    def importance_order(self, entity: str, facts: Iterable[Triple]) -> list[Triple]:
        """Facts about ``entity`` from most to least important (deterministic).

        Importance: facts where the entity is the head come first (they describe it); then
        facts of rarer relations (fewer facts in the graph: more specific, like a spouse,
        before a common one, like a field); then facts whose other entity has a higher degree
        (better known neighbours); ties broken by relation label, then the other entity's label.
        Duplicates are dropped.
        """

        def key(triple: Triple) -> tuple[int, int, int, str, str]:
            h, r, t = triple
            other = t if h == entity else h
            return (
                0 if h == entity else 1,
                self.relation_counts.get(r, 0),
                -self.degrees.get(other, 0),
                r,
                other,
            )

        return sorted(dict.fromkeys(facts), key=key)

    def entity(
        self, entity: str, facts: Iterable[Triple] | None = None, max_chars: int = 600
    ) -> str:
        """A paragraph about ``entity``: its name and description, then facts by importance.

        Args:
            facts: labelled triples about the entity; default: the graph's (:meth:`facts_of`).
            max_chars: length limit; the paragraph stops at the last whole sentence that fits
                (the first sentence is cut at a word boundary if it alone is too long).
        """
        if max_chars < 1:
            raise InvalidArgumentError(f"max_chars must be positive, got {max_chars}")
        chosen = self.facts_of(entity) if facts is None else list(facts)
        sentences: list[str] = []
        described = self.description_sentence(entity)
        sentences.append(described if described else as_sentence(self.name(entity)))
        sentences.extend(self.triple(*f) for f in self.importance_order(entity, chosen))
        out = ""
        for sentence in dict.fromkeys(sentences):
            candidate = f"{out} {sentence}" if out else sentence
            if len(candidate) > max_chars:
                break
            out = candidate
        if not out:
            cut = sentences[0][:max_chars].rsplit(" ", 1)[0] if " " in sentences[0] else ""
            out = cut or sentences[0][:max_chars]
        return out


def split_sentences(text: str) -> list[str]:
    """Split a paragraph into sentences (on ``.``, ``!``, ``?`` followed by space)."""
    return [s for s in _SENTENCE_END.split(text.strip()) if s]
