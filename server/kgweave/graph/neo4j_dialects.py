"""How kgweave speaks to Neo4j 5 and to FalkorDB's Bolt endpoint: the statements (module level,
so tests can check their exact text) and a dialect per database for indexes, vectors and
nearest-neighbour queries. :class:`~kgweave.graph.neo4j_store.Neo4jStore` runs them."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

from kgweave.errors import GraphUnavailableError, InvalidArgumentError, echo
from kgweave.graph.store import (
    GraphMapping,
    checked_identifier,
)

SIMILARITIES = ("cosine", "euclidean")
#: Neo4j's limit on ``vector.dimensions`` (Cypher Manual, "Vector indexes")
MAX_VECTOR_DIMENSIONS = 4096

Records = list[dict[str, Any]]
#: runs one statement in a managed transaction and returns its records
Runner = Callable[[str, dict[str, Any]], Records]


class Session(Protocol):
    """What a dialect uses of the store: its mapping and one statement per transaction."""

    mapping: GraphMapping

    def read(self, cypher: str, params: dict[str, Any] | None = None) -> Records: ...

    def write(self, cypher: str, params: dict[str, Any] | None = None) -> Records: ...


# ---- Neo4j 5 statements (module level so tests can check their exact text)
def constraint_name(mapping: GraphMapping) -> str:
    """Name of the uniqueness constraint on the entity key (also names its backing index)."""
    return f"kgweave_{mapping.entity_label}_{mapping.key_property}_unique"


def constraint_statement(mapping: GraphMapping) -> str:
    """``CREATE CONSTRAINT ... IF NOT EXISTS FOR (n:Label) REQUIRE n.key IS UNIQUE``."""
    name = checked_identifier(constraint_name(mapping), "constraint name")
    label = checked_identifier(mapping.entity_label, "entity label")
    key = checked_identifier(mapping.key_property, "key property")
    return f"CREATE CONSTRAINT {name} IF NOT EXISTS FOR (n:{label}) REQUIRE n.{key} IS UNIQUE"


def vector_index_name(mapping: GraphMapping) -> str:
    """Name of the vector index over the embedding property."""
    return f"kgweave_{mapping.entity_label}_{mapping.embedding_property}"


def checked_vector_config(dimension: int, similarity: str) -> None:
    if similarity not in SIMILARITIES:
        raise InvalidArgumentError(
            f"similarity {echo(similarity)}: choose one of {', '.join(SIMILARITIES)}"
        )
    if not 1 <= dimension <= MAX_VECTOR_DIMENSIONS:
        raise InvalidArgumentError(
            f"vector dimension {dimension}: Neo4j indexes 1 to {MAX_VECTOR_DIMENSIONS}"
        )


def vector_index_statement(
    mapping: GraphMapping, dimension: int, similarity: str, exact: bool = True
) -> str:
    """Neo4j 5's ``CREATE VECTOR INDEX ... IF NOT EXISTS ... OPTIONS {indexConfig: {...}}``.

    ``exact``: ``vector.quantization.enabled: false``. Neo4j 5.23+ quantizes the stored vectors
    by default (index provider ``vector-2.0``), and on a real Neo4j 5.26 that reorders the
    neighbours of a model's embeddings (a node's own score is 0.988, not 1); kgweave's vectors
    are small, so the index keeps them exact. Neo4j before 5.23 does not know the option
    (:meth:`Dialect.after_vectors` then creates the index without it).
    """
    checked_vector_config(dimension, similarity)
    name = checked_identifier(vector_index_name(mapping), "vector index name")
    label = checked_identifier(mapping.entity_label, "entity label")
    prop = checked_identifier(mapping.embedding_property, "embedding property")
    quantization = ", `vector.quantization.enabled`: false" if exact else ""
    return (
        f"CREATE VECTOR INDEX {name} IF NOT EXISTS FOR (n:{label}) ON (n.{prop}) "
        f"OPTIONS {{indexConfig: {{`vector.dimensions`: {int(dimension)}, "
        f"`vector.similarity_function`: '{similarity}'{quantization}}}}}"
    )


def drop_index_statement(name: str) -> str:
    """``DROP INDEX name IF EXISTS`` (Cypher Manual 5, "Drop indexes")."""
    return f"DROP INDEX {checked_identifier(name, 'index name')} IF EXISTS"


#: the options of one named index (``SHOW INDEXES``, Cypher Manual 5, "List indexes")
SHOW_INDEX = "SHOW INDEXES YIELD name, type, options WHERE name = $name RETURN type, options"
#: wait until the named index is online (Operations Manual, procedures: ``db.awaitIndex``)
AWAIT_INDEX = "CALL db.awaitIndex($name, $timeout)"
#: the ``k`` nearest nodes: ``db.index.vector.queryNodes(indexName, k, vector)``
QUERY_NODES = "CALL db.index.vector.queryNodes($index, $k, $vector) YIELD node, score"


def set_vectors_statement(mapping: GraphMapping) -> str:
    """One ``db.create.setNodeVectorProperty`` call per row of ``$rows`` (``{id, v}``)."""
    label = checked_identifier(mapping.entity_label, "entity label")
    key = checked_identifier(mapping.key_property, "key property")
    return (
        f"UNWIND $rows AS row MATCH (n:{label} {{{key}: row.id}}) "
        "CALL db.create.setNodeVectorProperty(n, $property, row.v)"
    )


# ---- dialects
class Dialect:
    """Neo4j 5: the statements above."""

    name = "neo4j"

    def ensure_schema(self, store: Session) -> None:
        """The uniqueness constraint on the entity key (it brings its own index)."""
        store.write(constraint_statement(store.mapping))
        store.write(AWAIT_INDEX, {"name": constraint_name(store.mapping), "timeout": 300})

    def before_vectors(
        self, store: Session, dimension: int, similarity: str, mapping: GraphMapping
    ) -> None:
        """Drop an existing vector index only when its dimension or similarity differ, or
        when it quantizes the vectors (see :func:`vector_index_statement`).

        Neo4j's Lucene HNSW index follows in-place updates, so a new model version of the
        same shape keeps its index; ``IF NOT EXISTS`` would otherwise keep a stale shape.
        """
        name = vector_index_name(mapping)
        for row in store.read(SHOW_INDEX, {"name": name}):
            config = (row.get("options") or {}).get("indexConfig") or {}
            same = (
                config.get("vector.dimensions") == dimension
                and str(config.get("vector.similarity_function", "")).lower() == similarity
                and config.get("vector.quantization.enabled") is not True
            )
            if row.get("type") != "VECTOR" or not same:
                store.write(drop_index_statement(name))

    def set_vectors(self, mapping: GraphMapping) -> str:
        return set_vectors_statement(mapping)

    def vector_params(self, mapping: GraphMapping) -> dict[str, Any]:
        return {"property": mapping.embedding_property}

    def after_vectors(
        self, store: Session, dimension: int, similarity: str, mapping: GraphMapping
    ) -> None:
        try:
            store.write(vector_index_statement(mapping, dimension, similarity))
        except InvalidArgumentError as exc:  # Neo4j before 5.23: no quantization option
            if "quantization" not in str(exc):
                raise
            store.write(vector_index_statement(mapping, dimension, similarity, exact=False))
        store.write(AWAIT_INDEX, {"name": vector_index_name(mapping), "timeout": 300})

    def nearest(self, mapping: GraphMapping, vector: list[float], k: int) -> tuple[str, Any]:
        key = checked_identifier(mapping.key_property, "key property")
        cypher = f"{QUERY_NODES} RETURN node.{key} AS id, score ORDER BY score DESC"
        return cypher, {"index": vector_index_name(mapping), "k": k, "vector": vector}


class FalkorDBBoltDialect(Dialect):
    """FalkorDB through its Bolt endpoint: no constraints, its own vector syntax.

    FalkorDB ignores the database name over Bolt (every managed transaction goes to the graph
    ``falkordb``), has no ``IF NOT EXISTS``, no ``SHOW INDEXES``, no ``elementId()``; see
    https://docs.falkordb.com/cypher/indexing/vector-index.html for its vector syntax.
    """

    name = "falkordb"

    def _indexes(self, store: Session) -> Records:
        return store.read(
            "CALL db.indexes() YIELD label, properties, types, status "
            "RETURN label, properties, types, status"
        )

    def _wait(self, store: Session, timeout: float = 300.0) -> None:
        deadline = time.monotonic() + timeout
        while any(
            r["label"] == store.mapping.entity_label and r["status"] != "OPERATIONAL"
            for r in self._indexes(store)
        ):
            if time.monotonic() > deadline:
                raise GraphUnavailableError(f"indexes still building after {timeout:.0f}s")
            time.sleep(0.05)

    def ensure_schema(self, store: Session) -> None:
        m = store.mapping
        for row in self._indexes(store):
            if row["label"] == m.entity_label and m.key_property in row["properties"]:
                return
        label = checked_identifier(m.entity_label, "entity label")
        key = checked_identifier(m.key_property, "key property")
        store.write(f"CREATE INDEX FOR (e:{label}) ON (e.{key})")
        self._wait(store)

    def before_vectors(
        self, store: Session, dimension: int, similarity: str, mapping: GraphMapping
    ) -> None:
        # FalkorDB's HNSW index loses neighbours when vectors are overwritten in place
        m = mapping
        for row in self._indexes(store):
            types = row["types"] if isinstance(row["types"], dict) else {}
            if row["label"] == m.entity_label and "VECTOR" in types.get(m.embedding_property, []):
                label = checked_identifier(m.entity_label, "entity label")
                prop = checked_identifier(m.embedding_property, "embedding property")
                store.write(f"DROP VECTOR INDEX FOR (e:{label}) ON (e.{prop})")

    def set_vectors(self, mapping: GraphMapping) -> str:
        label = checked_identifier(mapping.entity_label, "entity label")
        key = checked_identifier(mapping.key_property, "key property")
        prop = checked_identifier(mapping.embedding_property, "embedding property")
        return (
            f"UNWIND $rows AS row MATCH (e:{label} {{{key}: row.id}}) SET e.{prop} = vecf32(row.v)"
        )

    def vector_params(self, mapping: GraphMapping) -> dict[str, Any]:
        return {}

    def after_vectors(
        self, store: Session, dimension: int, similarity: str, mapping: GraphMapping
    ) -> None:
        label = checked_identifier(mapping.entity_label, "entity label")
        prop = checked_identifier(mapping.embedding_property, "embedding property")
        store.write(
            f"CREATE VECTOR INDEX FOR (e:{label}) ON (e.{prop}) "
            f"OPTIONS {{dimension: {int(dimension)}, similarityFunction: '{similarity}'}}"
        )
        self._wait(store)

    def nearest(self, mapping: GraphMapping, vector: list[float], k: int) -> tuple[str, Any]:
        key = checked_identifier(mapping.key_property, "key property")
        cypher = (
            "CALL db.idx.vector.queryNodes($label, $property, $k, vecf32($vector)) "
            f"YIELD node, score RETURN node.{key} AS id, score ORDER BY score"
        )
        params = {
            "label": mapping.entity_label,
            "property": mapping.embedding_property,
            "k": k,
            "vector": vector,
        }
        return cypher, params


NEO4J = Dialect()
FALKORDB_BOLT = FalkorDBBoltDialect()
