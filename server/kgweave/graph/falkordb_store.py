"""The FalkorDB backend of :class:`GraphStore`, through the ``falkordb`` client."""

from __future__ import annotations

import time
from collections.abc import Collection, Iterable, Iterator
from typing import Any

from kgweave.errors import GraphUnavailableError, InvalidArgumentError, echo
from kgweave.graph.cypher_store import CypherStore
from kgweave.graph.store import (
    EntityRow,
    EntityVectors,
    GraphMapping,
    Triple,
    checked_identifier,
)

SIMILARITIES = {"cosine": "cosine", "euclidean": "euclidean"}
#: HNSW options of kgweave's vector indexes: neighbours per node and search breadths, above
#: FalkorDB's defaults (16, 200, 10) so the relation-aware top-10 keeps its recall on
#: FB15k-237-sized graphs (benchmarks/writeback_recall.py)
HNSW_M = 64
HNSW_EF_CONSTRUCTION = 400
HNSW_EF_RUNTIME = 1500
#: rows per write of vectors: the client sends parameters as query text
_VECTOR_BATCH = 200


class FalkorDBStore(CypherStore):
    """A graph in a FalkorDB server (the embedded one, or any other)."""

    def __init__(
        self,
        host: str,
        port: int,
        graph: str = "kgweave",
        mapping: GraphMapping | None = None,
        batch_size: int = 5_000,
        password: str | None = None,
        timeout_s: float = 600.0,
    ) -> None:
        """``timeout_s``: how long one query may wait for its answer (the client's socket
        timeout) before it fails with :class:`GraphUnavailableError`."""
        from falkordb import FalkorDB

        if timeout_s <= 0:
            raise InvalidArgumentError("the graph query timeout must be > 0 seconds")
        super().__init__(mapping, batch_size)
        self.timeout_s = timeout_s
        self._db = FalkorDB(
            host=host,
            port=port,
            password=password,
            socket_timeout=timeout_s,
            socket_connect_timeout=min(timeout_s, 10.0),
        )
        self.graph = self._db.select_graph(graph)

    # ---- plumbing
    def rows(self, cypher: str, params: dict[str, Any] | None = None) -> list[list[Any]]:
        return self._query(cypher, params)

    def _query(self, cypher: str, params: dict[str, Any] | None = None) -> list[list[Any]]:
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import ResponseError
        from redis.exceptions import TimeoutError as RedisTimeoutError

        try:
            return list(self.graph.query(cypher, params).result_set)
        except RedisTimeoutError:
            raise GraphUnavailableError(
                f"FalkorDB did not answer a query within {self.timeout_s:g}s "
                "(KGWEAVE_GRAPH_QUERY_TIMEOUT_S)"
            ) from None
        except RedisConnectionError as exc:
            raise GraphUnavailableError(f"FalkorDB is not reachable: {exc}") from exc
        except ResponseError as exc:
            raise InvalidArgumentError(f"FalkorDB refused a query: {exc}") from exc

    # ---- schema
    def ensure_schema(self) -> None:
        existing = self._query("CALL db.indexes() YIELD label, properties RETURN label, properties")
        for label, properties in existing:
            if label == self.mapping.entity_label and self.mapping.key_property in properties:
                return
        self._query(f"CREATE INDEX FOR (e:{self._label}) ON (e.{self._key})")
        self.wait_for_indexes()

    # ---- reads
    def _max_node_id(self) -> int:
        result = self._query(f"MATCH (e:{self._label}) RETURN max(id(e))")
        return int(result[0][0]) if result and result[0][0] is not None else -1

    def iter_triples(
        self, page_size: int = 10_000, relations: Collection[str] | None = None
    ) -> Iterator[list[Triple]]:
        """Triples by windows of head node ids, the window sized so that one query returns
        about ``page_size`` triples (it adapts to the graph's out-degree as it goes), so
        memory stays bounded by the page, not by the graph (one head's edges come whole)."""
        condition, params = self._type_filter(relations)
        top = self._max_node_id()
        window, low = max(1, page_size // 8), 0
        while low <= top:
            rows = self._query(
                f"MATCH (h:{self._label})-[x]->(t:{self._label}) "
                f"WHERE id(h) >= $low AND id(h) < $high AND {condition} "
                f"RETURN h.{self._key}, coalesce(x.{self._relation}, type(x)), t.{self._key}",
                {**params, "low": low, "high": low + window},
            )
            low += window
            if rows:
                yield from (
                    [(str(h), str(r), str(t)) for h, r, t in rows[i : i + page_size]]
                    for i in range(0, len(rows), page_size)
                )
                target = int(window * page_size / len(rows))
                window = max(1, min(target, 4 * window))
            else:
                window = min(4 * window, max(top + 1, 1))

    def iter_entities(self, page_size: int = 10_000) -> Iterator[list[EntityRow]]:
        top = self._max_node_id()
        for low in range(0, top + 1, page_size):
            rows = self._query(
                f"MATCH (e:{self._label}) WHERE id(e) >= $low AND id(e) < $high "
                f"RETURN e.{self._key}, e.{self._name}, e.{self._description}",
                {"low": low, "high": low + page_size},
            )
            if rows:
                yield [EntityRow(str(i), n, d) for i, n, d in rows]

    # ---- write-back
    def vector_index_ddl(self, dimension: int, similarity: str, prop: str | None = None) -> str:
        """FalkorDB's vector index statement (``CREATE VECTOR INDEX ... OPTIONS {...}``) on
        ``prop`` (default: the embedding property)."""
        if similarity not in SIMILARITIES:
            raise InvalidArgumentError(
                f"similarity {echo(similarity)}: choose one of {', '.join(SIMILARITIES)}"
            )
        quoted = checked_identifier(prop or self.mapping.embedding_property, "vector property")
        return (
            f"CREATE VECTOR INDEX FOR (e:{self._label}) ON (e.{quoted}) "
            f"OPTIONS {{dimension: {int(dimension)}, "
            f"similarityFunction: '{SIMILARITIES[similarity]}', "
            f"M: {HNSW_M}, efConstruction: {HNSW_EF_CONSTRUCTION}, efRuntime: {HNSW_EF_RUNTIME}}}"
        )

    def _has_vector_index(self, prop: str) -> bool:
        rows = self._query(
            "CALL db.indexes() YIELD label, properties, types RETURN label, properties, types"
        )
        for label, properties, types in rows:
            if label == self.mapping.entity_label and prop in properties:
                kinds = types.get(prop, []) if isinstance(types, dict) else []
                if "VECTOR" in kinds:
                    return True
        return False

    def _write_vectors(self, checked: EntityVectors) -> None:
        ddl = self.vector_index_ddl(checked.dimension, checked.similarity, checked.prop)
        quoted = checked_identifier(checked.prop, "vector property")
        # A new model version replaces every vector. FalkorDB's HNSW index loses neighbours when
        # vectors are overwritten in place, so drop the index, write, and build it afresh.
        if self._has_vector_index(checked.prop):
            self._query(f"DROP VECTOR INDEX FOR (e:{self._label}) ON (e.{quoted})")
            # dropping one field rebuilds the label's other indexes in the background; a
            # query through them meanwhile can crash FalkorDB 4.x (seen in TagIndex_OpenReader)
            self.wait_for_indexes()
        for rows in checked.rows(_VECTOR_BATCH):
            self._query(
                f"UNWIND $rows AS row MATCH (e:{self._label} {{{self._key}: row.id}}) "
                f"SET e.{quoted} = vecf32(row.v)",
                {"rows": rows},
            )
        self._query(ddl)
        self.wait_for_indexes()  # FalkorDB builds indexes in the background

    def wait_for_indexes(self, timeout: float = 300.0) -> None:
        """Block until every index of the entity label is operational."""
        deadline = time.monotonic() + timeout
        while True:
            rows = self._query("CALL db.indexes() YIELD label, status RETURN label, status")
            pending = [
                str(status)
                for label, status in rows
                if label == self.mapping.entity_label and status != "OPERATIONAL"
            ]
            if not pending:
                return
            if time.monotonic() > deadline:
                raise GraphUnavailableError(
                    f"indexes still building after {timeout:.0f}s: {', '.join(pending)}"
                )
            time.sleep(0.05)

    def entities(self, ids: Iterable[str]) -> list[EntityRow]:
        keys = list(dict.fromkeys(ids))
        if not keys:
            return []
        rows = self._query(
            f"UNWIND $ids AS id MATCH (e:{self._label} {{{self._key}: id}}) "
            f"RETURN e.{self._key}, e.{self._name}, e.{self._description}",
            {"ids": keys},
        )
        return [EntityRow(str(i), n, d) for i, n, d in rows]

    def nearest(
        self, vector: list[float], k: int, prop: str | None = None
    ) -> list[tuple[str, float]]:
        if k < 1:
            raise InvalidArgumentError("k must be at least 1")
        rows = self._query(
            "CALL db.idx.vector.queryNodes($label, $property, $k, vecf32($vector)) "
            f"YIELD node, score RETURN node.{self._key}, score ORDER BY score",
            {
                "label": self.mapping.entity_label,
                "property": prop or self.mapping.embedding_property,
                "k": k,
                "vector": [float(x) for x in vector],
            },
        )
        return [(str(i), float(s)) for i, s in rows]

    def install_functions(self) -> bool:
        """Load (or replace) the ``kgweave`` UDF library: ``kgweave.score``,
        ``kgweave.headScore``, ``kgweave.tailQuery``, ``kgweave.headQuery``
        (``kgweave/graph/udf/kgweave.js``, with this mapping's names)."""
        from redis.exceptions import ResponseError

        try:
            self._db.connection.execute_command(
                "GRAPH.UDF", "LOAD", "REPLACE", UDF_LIBRARY, udf_script(self.mapping)
            )
        except ResponseError as exc:
            raise GraphUnavailableError(f"FalkorDB refused kgweave's functions: {exc}") from None
        return True

    def _delete_predicted(self) -> None:
        self._query(f"MATCH ()-[x:{self._predicted}]->() DELETE x")

    def read_rows(self, cypher: str, params: dict[str, Any] | None = None) -> list[list[Any]]:
        return self._query(cypher, params)


#: the name Cypher calls kgweave's FalkorDB functions by (``kgweave.score(...)``)
UDF_LIBRARY = "kgweave"


def udf_script(mapping: GraphMapping) -> str:
    """The UDF library's JavaScript with ``mapping``'s property and label names."""
    from importlib.resources import files

    script = files("kgweave.graph").joinpath("udf/kgweave.js").read_text(encoding="utf-8")
    for placeholder, name in (
        ("__EMBEDDING__", mapping.embedding_property),
        ("__SEARCH__", mapping.search_property),
        ("__RELATION__", mapping.relation_label),
    ):
        script = script.replace(placeholder, name)
    return script
