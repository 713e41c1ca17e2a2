"""The graph-store interface the rest of kgweave uses, free of any transport.

A store maps kgweave's view (entities with an id, a name and a description; triples
``(head, relation, tail)`` of entity ids and relation names) onto a property graph:

- entities are nodes with ``mapping.entity_label`` keyed by ``mapping.key_property``;
- a relation whose name is a valid relationship type becomes that type; any other name
  (FB15k-237's ``/people/person/place_of_birth``) is stored on a relationship of the generic
  type ``mapping.generic_type`` in the property ``mapping.relation_property``.

No Cypher is built by pasting data into query text: values travel as parameters, and the only
names put into query text (labels, relationship types, property keys) are validated first.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from kgweave.errors import InvalidArgumentError, echo

Triple = tuple[str, str, str]

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
#: words that must not be used as bare identifiers even when quoted would allow them
_RESERVED = {"KGWEAVE_PREDICTED", "KGWEAVE_SUGGESTED"}


def is_identifier(name: str) -> bool:
    """Whether ``name`` can be a label, relationship type or property key as it is."""
    return bool(_IDENTIFIER.match(name))


def checked_identifier(name: str, what: str) -> str:
    """``name`` quoted for Cypher, after refusing anything but a plain identifier."""
    if not is_identifier(name):
        raise InvalidArgumentError(
            f"{what} {echo(name)} is not a valid identifier (letters, digits and '_', not starting "
            "with a digit)"
        )
    return f"`{name}`"


@dataclass(frozen=True)
class GraphMapping:
    """How entities and relations are found in the graph; defaults for graphs kgweave creates."""

    entity_label: str = "Entity"
    key_property: str = "id"
    name_property: str = "name"
    description_property: str = "description"
    generic_type: str = "RELATED"
    relation_property: str = "relation"
    #: relationship types that count as relations; None: all but kgweave's own
    relation_types: tuple[str, ...] | None = None
    predicted_type: str = "KGWEAVE_PREDICTED"
    #: links accepted by LLM-driven completion (added to, never replaced wholesale)
    suggested_type: str = "KGWEAVE_SUGGESTED"
    embedding_property: str = "embedding"
    #: the vectors of the relation-aware nearest-neighbour search (see kgweave.serving.writeback)
    search_property: str = "kgweave_search"
    #: nodes holding each relation's vectors and the model's kind, for Cypher functions
    relation_label: str = "KGWEAVE_Relation"

    def __post_init__(self) -> None:
        for what, name in (
            ("entity label", self.entity_label),
            ("key property", self.key_property),
            ("name property", self.name_property),
            ("description property", self.description_property),
            ("generic relationship type", self.generic_type),
            ("relation property", self.relation_property),
            ("predicted-link type", self.predicted_type),
            ("suggested-link type", self.suggested_type),
            ("embedding property", self.embedding_property),
            ("search property", self.search_property),
            ("relation label", self.relation_label),
            *(("relationship type", t) for t in self.relation_types or ()),
        ):
            checked_identifier(name, what)

    def storage_type(self, relation: str) -> str | None:
        """The relationship type that stores ``relation`` itself, or None for the generic one."""
        own = _RESERVED | {self.generic_type, self.predicted_type, self.suggested_type}
        if is_identifier(relation) and relation not in own:
            return relation
        return None


@dataclass(frozen=True)
class PredictedLink:
    """A link a model proposes, written apart from real facts."""

    head: str
    relation: str
    tail: str
    score: float


@dataclass(frozen=True)
class RelationVectors:
    """One relation's vectors as kgweave writes them back: its own and its reciprocal's (which
    ranks heads), with the model that reads them (``model``: its name and options)."""

    id: str
    name: str
    embedding: list[float]
    inverse_embedding: list[float]


@dataclass(frozen=True)
class EntityVectors:
    """What :meth:`GraphStore.write_embeddings` writes, checked: one vector per id, at least
    one, all of ``dimension``; ``prop`` is a valid identifier."""

    ids: list[str]
    vectors: list[list[float]]
    dimension: int
    similarity: str
    prop: str

    def rows(self, size: int) -> Iterator[list[dict[str, Any]]]:
        """``{"id", "v"}`` parameter rows, ``size`` at a time."""
        for start in range(0, len(self.ids), size):
            end = start + size
            yield [
                {"id": i, "v": [float(x) for x in v]}
                for i, v in zip(self.ids[start:end], self.vectors[start:end], strict=True)
            ]


@dataclass(frozen=True)
class EntityRow:
    """An entity with its text."""

    id: str
    name: str | None = None
    description: str | None = None


@dataclass(frozen=True)
class Census:
    """How many entities the graph holds and how many facts of each relation (by kgweave's
    relation name): what the snapshot diff compares to see which relations changed."""

    entities: int
    facts: dict[str, int]

    def counts(self) -> dict[str, int]:
        """``entities``, ``relations`` (with at least one fact) and ``triples``."""
        return {
            "entities": self.entities,
            "relations": sum(1 for n in self.facts.values() if n),
            "triples": sum(self.facts.values()),
        }


class GraphStore(ABC):
    """Operations kgweave needs from a graph database."""

    mapping: GraphMapping

    @abstractmethod
    def ensure_schema(self) -> None:
        """Create the indexes and constraints kgweave relies on (idempotent)."""

    @abstractmethod
    def upsert_entities(self, rows: Iterable[EntityRow]) -> int:
        """Create or update entities; returns how many rows were written."""

    @abstractmethod
    def add_triples(self, triples: Iterable[Triple]) -> int:
        """Add triples (MERGE: adding one twice keeps one); missing entities are created."""

    @abstractmethod
    def remove_triples(self, triples: Iterable[Triple]) -> int:
        """Remove triples; returns how many relationships were deleted."""

    @abstractmethod
    def existing_triples(self, triples: Iterable[Triple]) -> set[Triple]:
        """Those of ``triples`` the graph holds."""

    def delete_entities(self, ids: Iterable[str]) -> None:
        """Delete entities with every edge that touches them (DETACH DELETE)."""
        label = checked_identifier(self.mapping.entity_label, "entity label")
        key = checked_identifier(self.mapping.key_property, "key property")
        wanted = sorted(set(ids))
        if wanted:
            self.execute(
                f"UNWIND $ids AS id MATCH (e:{label} {{{key}: id}}) DETACH DELETE e",
                {"ids": wanted},
            )

    @abstractmethod
    def iter_triples(
        self, page_size: int = 10_000, relations: Collection[str] | None = None
    ) -> Iterator[list[Triple]]:
        """Every triple (of ``relations`` only, when given), in pages of at most ``page_size``
        (bounded memory)."""

    @abstractmethod
    def iter_entities(self, page_size: int = 10_000) -> Iterator[list[EntityRow]]:
        """Every entity with its text, in pages."""

    def entities(self, ids: Iterable[str]) -> list[EntityRow]:
        """The rows of the given entity ids that exist (any order). Backends may override this
        page-by-page scan with a keyed lookup."""
        wanted = set(ids)
        found: list[EntityRow] = []
        for page in self.iter_entities():
            found.extend(row for row in page if row.id in wanted)
            if len(found) == len(wanted):
                break
        return found

    def write_embeddings(
        self,
        ids: list[str],
        vectors: list[list[float]],
        similarity: str = "cosine",
        prop: str | None = None,
    ) -> int:
        """Store one vector per entity in ``prop`` (default ``mapping.embedding_property``)
        and make sure a vector index covers them; returns how many were written."""
        name = prop or self.mapping.embedding_property
        checked_identifier(name, "vector property")
        if len(ids) != len(vectors):
            raise InvalidArgumentError(f"{len(ids)} ids but {len(vectors)} vectors")
        if not vectors:
            return 0
        dimension = len(vectors[0])
        if any(len(v) != dimension for v in vectors):
            raise InvalidArgumentError("all vectors must have the same dimension")
        self._write_vectors(EntityVectors(ids, vectors, dimension, similarity, name))
        return len(ids)

    @abstractmethod
    def _write_vectors(self, checked: EntityVectors) -> None:
        """:meth:`write_embeddings` once its input is checked."""

    @abstractmethod
    def nearest(
        self, vector: list[float], k: int, prop: str | None = None
    ) -> list[tuple[str, float]]:
        """The ``k`` entities nearest to ``vector`` in ``prop``, through the database's own
        vector index (FalkorDB answers distances, lower first; Neo4j similarities, higher
        first)."""

    @abstractmethod
    def execute(self, cypher: str, params: dict[str, Any] | None = None) -> None:
        """Run one write statement (values as parameters), in its own transaction."""

    #: rows per statement when writing vectors
    vector_batch: int = 200

    def write_relations(
        self, rows: list[RelationVectors], model: dict[str, object], model_version: str
    ) -> int:
        """Replace every ``mapping.relation_label`` node with one per relation of ``rows``,
        carrying its vectors, the model (``name``, ``p``, ``search_norm``: the radius of the
        search vectors) and the version."""
        label = checked_identifier(self.mapping.relation_label, "relation label")
        self.execute(f"MATCH (r:{label}) DETACH DELETE r")
        for start in range(0, len(rows), self.vector_batch):
            batch = [
                {"id": r.id, "name": r.name, "v": r.embedding, "inverse": r.inverse_embedding}
                for r in rows[start : start + self.vector_batch]
            ]
            self.execute(
                f"UNWIND $rows AS row CREATE (:{label} {{id: row.id, name: row.name, "
                "embedding: row.v, inverse_embedding: row.inverse, model: $model, p: $p, "
                "search_norm: $norm, model_version: $version})",
                {
                    "rows": batch,
                    "model": str(model.get("name", "")),
                    "p": int(str(model.get("p", 2))),
                    "norm": float(str(model.get("search_norm", 0.0))),
                    "version": model_version,
                },
            )
        return len(rows)

    def install_functions(self) -> bool:
        """Install kgweave's Cypher functions where the database takes user code (FalkorDB's
        UDFs); False where it does not (Neo4j: the kgweave plugin has them)."""
        return False

    @abstractmethod
    def write_predicted_links(
        self, links: list[PredictedLink], model_version: str, provenance: str
    ) -> int:
        """Replace every predicted link with ``links`` (of type ``mapping.predicted_type``)."""

    @abstractmethod
    def add_suggested_links(
        self, links: list[PredictedLink], model_version: str, provenance: str
    ) -> int:
        """Add (or refresh) suggested links of type ``mapping.suggested_type``, keyed by
        (head, relation, tail), with score, model version and provenance; apart from facts."""

    @property
    def own_types(self) -> list[str]:
        """Relationship types kgweave writes, never counted as facts."""
        return [self.mapping.predicted_type, self.mapping.suggested_type]

    @abstractmethod
    def census(self) -> Census:
        """The number of entities and of facts per relation, counted in the database."""

    def counts(self) -> dict[str, int]:
        """``entities``, ``relations`` (distinct names) and ``triples``."""
        return self.census().counts()
