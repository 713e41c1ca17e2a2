"""Relation phrases: a sentence template per relation (``{head} was born in {tail}.``), from
the graph's own templates or derived from the relation's name (Freebase paths, WordNet's
relations, ``snake_case`` names, verb forms).
:class:`~kgweave.language.features.verbalize.Verbalizer` turns facts into sentences with them;
deterministic.

Size (over 400 lines): mostly word lists (prepositions, participles, verbs) that the template
rules read.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from kgweave.errors import InvalidArgumentError, echo

HEAD = "{head}"
TAIL = "{tail}"

Triple = tuple[str, str, str]

#: Hand-written templates for WN18RR's 11 relations (directions checked against the data:
#: ``(primulaceae, _member_meronym, glaux)``, ``(germany, _member_of_domain_region,
#: schadenfreude)``, ``(valency, _synset_domain_topic_of, biology)``).
WORDNET_TEMPLATES: dict[str, str] = {
    "_hypernym": "{head} is a kind of {tail}.",
    "_instance_hypernym": "{head} is an instance of {tail}.",
    "_member_meronym": "{head} has {tail} as a member.",
    "_has_part": "{head} has {tail} as a part.",
    "_synset_domain_topic_of": "{head} belongs to the topic of {tail}.",
    "_member_of_domain_usage": "{head} is the usage category of {tail}.",
    "_member_of_domain_region": "{head} is the region where {tail} is used.",
    "_also_see": "{head} is also related to {tail}.",
    "_verb_group": "{head} is in the same verb group as {tail}.",
    "_derivationally_related_form": "{head} is derivationally related to {tail}.",
    "_similar_to": "{head} is similar to {tail}.",
}

_AWARD = "/award/award_nominee/award_nominations./award/award_nomination/"
#: Hand-written templates for the most frequent FB15k-237 relations, where the mediator
#: ("compound value") paths are too indirect for the rules of :func:`default_template`.
FREEBASE_TEMPLATES: dict[str, str] = {
    _AWARD + "award_nominee": "{head} was nominated for an award together with {tail}.",
    _AWARD + "award": "{head} was nominated for the {tail}.",
    _AWARD + "nominated_for": "{head} was nominated for an award for {tail}.",
    "/film/film/release_date_s./film/film_regional_release_date/film_release_region": (
        "{head} was released in {tail}."
    ),
    "/film/actor/film./film/performance/film": "{head} acted in the film {tail}.",
    "/award/award_category/nominees./award/award_nomination/nominated_for": (
        "{tail} was nominated for the {head}."
    ),
    "/award/award_winner/awards_won./award/award_honor/award_winner": (
        "{head} won an award together with {tail}."
    ),
    "/award/award_category/winners./award/award_honor/award_winner": "{tail} won the {head}.",
    "/music/genre/artists": "{tail} is an artist of the {head} genre.",
    "/people/person/places_lived./people/place_lived/location": "{head} lived in {tail}.",
    "/people/person/spouse_s./people/marriage/type_of_union": (
        "{head} has a marriage of type {tail}."
    ),
    "/award/award_winning_work/awards_won./award/award_honor/award": "{head} won the {tail}.",
    "/sports/sports_position/players./sports/sports_team_roster/team": (
        "{tail} has players in the position {head}."
    ),
    "/education/educational_institution/students_graduates./education/education/student": (
        "{tail} studied at {head}."
    ),
    "/people/person/place_of_birth": "{head} was born in {tail}.",
    "/people/deceased_person/place_of_death": "{head} died in {tail}.",
    "/people/person/nationality": "{head} has the nationality of {tail}.",
    "/people/person/gender": "The gender of {head} is {tail}.",
    "/location/location/contains": "{head} contains {tail}.",
}

_PREPOSITIONS = frozenset(
    [
        "of",
        "by",
        "in",
        "to",
        "for",
        "from",
        "with",
        "on",
        "at",
        "as",
        "into",
        "onto",
        "about",
        "than",
        "under",
        "over",
        "after",
        "before",
    ]
)
#: participles that describe a past event ("was born in"); other participles take "is"
_EVENT_PARTICIPLES = frozenset(
    [
        "born",
        "died",
        "founded",
        "established",
        "educated",
        "married",
        "buried",
        "created",
        "written",
        "directed",
        "produced",
        "composed",
        "released",
        "published",
        "elected",
        "awarded",
        "invented",
        "discovered",
        "designed",
        "built",
        "painted",
        "killed",
        "formed",
        "raised",
        "trained",
        "named",
        "nominated",
        "influenced",
        "won",
        "signed",
        "drafted",
        "recorded",
        "performed",
        "adopted",
        "acquired",
        "launched",
        "introduced",
        "developed",
    ]
)
_IRREGULAR_PARTICIPLES = frozenset(
    [
        "born",
        "written",
        "known",
        "made",
        "held",
        "won",
        "given",
        "taken",
        "shown",
        "drawn",
        "grown",
        "driven",
        "spoken",
        "sung",
        "begun",
        "built",
        "sold",
        "taught",
        "bought",
        "thought",
        "fought",
        "brought",
        "caught",
        "left",
        "lost",
        "led",
        "read",
        "run",
        "set",
    ]
)
#: third-person verbs that read well as "{head} <verb> {tail}"
_VERBS = frozenset(
    [
        "contains",
        "adjoins",
        "includes",
        "has",
        "uses",
        "produces",
        "owns",
        "employs",
        "sponsors",
        "hosts",
        "borders",
        "follows",
        "precedes",
        "splits",
        "replaces",
        "represents",
        "plays",
        "speaks",
        "teaches",
        "studies",
        "supports",
        "participates",
        # verb-form relation names of biomedical and other graphs (UMLS: ``causes``, ``treats``)
        "affects",
        "analyzes",
        "assesses",
        "carries",
        "causes",
        "complicates",
        "diagnoses",
        "disrupts",
        "exhibits",
        "indicates",
        "interconnects",
        "manages",
        "measures",
        "performs",
        "practices",
        "prevents",
        "surrounds",
        "treats",
        "regulates",
        "inhibits",
        "activates",
        "encodes",
        "targets",
        "influences",
        "requires",
        "involves",
        "reduces",
        "increases",
        "decreases",
        "controls",
        "governs",
        "funds",
        "attends",
        "visits",
        "knows",
        "likes",
        "loves",
    ]
)
#: adjectives that take a preposition: ``adjacent_to`` -> ``{head} is adjacent to {tail}.``
_ADJECTIVES = frozenset(
    ["adjacent", "similar", "close", "equal", "equivalent", "opposite", "near", "next", "prone"]
)
_ADVERBS = frozenset(["partially", "also", "often"])
_INDEFINITE = frozenset(
    ["member", "kind", "type", "instance", "subclass", "symptom", "specialization", "form"]
)


def _is_participle(word: str) -> bool:
    if word in _IRREGULAR_PARTICIPLES:
        return True
    return word.endswith("ed") and not word.endswith("eed") and len(word) > 4


def _is_plural(word: str) -> bool:
    return word.endswith("s") and not word.endswith(("ss", "us", "is", "ics", "ies_"))


def _words(segment: str) -> list[str]:
    """``place_of_birth`` -> ``["place", "of", "birth"]``; drops Freebase's ``_s`` suffix."""
    words = [w for w in re.split(r"[_\s]+", segment.strip().lower()) if w]
    if len(words) > 1 and words[-1] == "s":  # release_date_s -> release date
        words = words[:-1]
    return words


def phrase_template(words: Sequence[str], subject_type: Sequence[str] = ()) -> str:  # noqa: PLR0911
    """A template from a property phrase, e.g. ``["place", "of", "birth"]``.

    Rules, first match wins: a verb (``contains``, UMLS's ``causes``) -> ``{head} contains
    {tail}.`` (with ``the`` before a noun and preposition: ``assesses_effect_of`` -> ``{head}
    assesses the effect of {tail}.``); an adjective and a preposition (``adjacent_to``) ->
    ``{head} is adjacent to {tail}.``; a phrase
    ending in a preposition (``born in``, ``capital of``) -> ``{head} was born in {tail}.`` /
    ``{head} is the capital of {tail}.``, ``countries spoken in`` -> ``{head} is spoken in
    {tail}.``); a phrase ending in a participle (``film sets designed``) -> ``The film sets
    designed by {head} include {tail}.``; otherwise a noun phrase -> ``The place of birth of
    {head} is {tail}.`` (``include`` for a plural noun: ``The languages of {head} include
    {tail}.``). Leading words repeating the subject's type are dropped (a film's ``film release
    region`` is its ``release region``).
    """
    words = list(words)
    while len(words) > 1 and words[0] in subject_type and words[1] not in _PREPOSITIONS:
        words = words[1:]
    if not words:
        return "{head} is related to {tail}."
    text = " ".join(words)
    first, last = words[0], words[-1]
    if text in ("is a", "isa", "type", "instance of"):
        return "{head} is a {tail}."
    if (
        first in _VERBS
        and len(words) > 2
        and last in _PREPOSITIONS
        and words[1] not in _PREPOSITIONS
    ):
        # assesses_effect_of -> {head} assesses the effect of {tail}.
        return f"{{head}} {first} the {' '.join(words[1:])} {{tail}}."
    if first in _VERBS or (len(words) > 1 and words[1] in _VERBS and first in _ADVERBS):
        return f"{{head}} {text} {{tail}}."
    if last in _PREPOSITIONS and len(words) > 1:
        participles = [i for i, w in enumerate(words[:-1]) if _is_participle(w)]
        if participles or first in ("part", "located", "based"):
            # "countries spoken in" -> "is spoken in": the nouns before name the tail's type
            p = participles[0] if participles else 0
            start = p if p > 0 and _is_plural(words[p - 1]) else 0
            rest = " ".join(words[start:])
            verb = "was" if words[p] in _EVENT_PARTICIPLES else "is"
            return f"{{head}} {verb} {rest} {{tail}}."
        if first in ("is", "was", "has", "had"):
            return f"{{head}} {text} {{tail}}."
        if first in _ADJECTIVES:
            return f"{{head}} is {text} {{tail}}."
        if len(words) == 2 and first.endswith("s") and not first.endswith("ss"):
            return f"{{head}} {text} {{tail}}."  # works for
        if last == "by":  # costume design by -> The costume design of X is by Y.
            return f"The {' '.join(words[:-1])} of {{head}} is by {{tail}}."
        article = "a" if first in _INDEFINITE else "the"
        return f"{{head}} is {article} {text} {{tail}}."
    if _is_participle(last) and len(words) > 1:
        noun = " ".join(words[:-1])
        verb = "include" if _is_plural(words[-2]) else "is"
        return f"The {noun} {last} by {{head}} {verb} {{tail}}."
    verb = "include" if _is_plural(last) else "is"
    return f"The {text} of {{head}} {verb} {{tail}}."


def default_template(relation: str, text: str | None = None) -> str:  # noqa: PLR0911
    """A readable template derived from a relation's name (or its readable ``text``).

    Handles WordNet relations (hand-written), Freebase paths ``/domain/type/property`` (the last
    segment is the property, the type is the subject's), compound Freebase paths
    ``/d/t/p1./d2/t2/p2`` (``p2`` through the mediator ``p1``: the more specific of the two, or
    ``p2 of p1``), and ``snake_case`` / ``camelCase`` / spaced names.
    """
    if relation in WORDNET_TEMPLATES:
        return WORDNET_TEMPLATES[relation]
    if relation in FREEBASE_TEMPLATES:
        return FREEBASE_TEMPLATES[relation]
    if relation.startswith("/"):
        parts = [p for p in relation.split("./") if p]
        segments = [[s for s in p.split("/") if s] for p in parts]
        first = segments[0]
        subject_type = _words(first[-2]) if len(first) >= 2 else []
        p1 = _words(first[-1])
        if len(segments) == 1:
            return phrase_template(p1, subject_type)
        p2 = _words(segments[-1][-1])
        if (p2 and p2[0] in _VERBS) or (p2 and p2[-1] in _PREPOSITIONS):
            return phrase_template(p2, subject_type)
        p2_core = list(p2)
        while len(p2_core) > 1 and p2_core[0] in subject_type:
            p2_core = p2_core[1:]
        stems = {w.rstrip("s") for w in p1}
        if not p1 or any(w.rstrip("s") in stems for w in p2_core):
            return phrase_template(p2_core, subject_type)
        verb = "include" if _is_plural(p2_core[-1]) else "is"
        return f"The {' '.join(p2_core)} of {{head}}'s {' '.join(p1)} {verb} {{tail}}."
    base = text if text else relation
    base = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", base)  # camelCase -> camel_Case
    words = _words(base.lstrip("_"))
    return phrase_template(words)


def check_template(relation: str, template: str) -> str:
    """Validate a template: exactly one ``{head}`` and one ``{tail}``.

    Raises:
        InvalidArgumentError: naming the relation and what is wrong.
    """
    if template.count(HEAD) != 1 or template.count(TAIL) != 1:
        raise InvalidArgumentError(
            f"template for relation {echo(relation)} must contain {HEAD} and {TAIL} exactly once: "
            f"{echo(template)}"
        )
    return template.strip()


def as_sentence(text: str) -> str:
    """Capitalise the first letter and make sure the sentence ends with punctuation."""
    text = " ".join(text.split())
    if not text:
        return text
    if text[-1] not in ".!?":
        text += "."
    return text[0].upper() + text[1:]


@dataclass(frozen=True)
class RelationPhrase:
    """A relation's template split around its slots, for language-model prompts.

    ``template`` has one ``{head}`` and one ``{tail}``. :meth:`split_tail` gives the text before
    and after the tail with the head filled in (``("Alan Turing was born in", ".")`` for
    ``(alan_turing, born_in, ?)``); :meth:`split_head` the same around the head with the tail
    filled in (``("", " was born in London.")`` for ``(?, born_in, london)``).
    """

    relation: str
    template: str

    def split_tail(self, head_name: str) -> tuple[str, str]:
        """(prefix, suffix) around the tail slot, head filled in; prefix capitalised."""
        return self._split(TAIL, HEAD, head_name)

    def split_head(self, tail_name: str) -> tuple[str, str]:
        """(prefix, suffix) around the head slot, tail filled in; prefix capitalised."""
        return self._split(HEAD, TAIL, tail_name)

    def _split(self, slot: str, filled: str, name: str) -> tuple[str, str]:
        before, _, after = self.template.partition(slot)
        prefix = before.replace(filled, name).rstrip()
        suffix = after.replace(filled, name)
        if prefix:
            prefix = prefix[0].upper() + prefix[1:]
        return prefix, suffix
