"""The Neo4j backend of :class:`GraphStore`, through the official ``neo4j`` driver.

URIs: ``bolt://``, ``bolt+s://``, ``bolt+ssc://``, ``neo4j://``, ``neo4j+s://`` and
``neo4j+ssc://`` (``+s``: TLS verified against the system's CAs, ``+ssc``: TLS accepting a
self-signed certificate; ``tls_ca`` trusts one CA file instead). Every statement runs in a
managed transaction (``Session.execute_write`` / ``execute_read``), which the driver retries
with exponential backoff on transient errors (``TransientError``, ``ServiceUnavailable``,
``SessionExpired``) for up to ``retry_s`` seconds; opening the store checks the connection
with the same bounded patience, so an unreachable database gives one
:class:`GraphUnavailableError`, never a driver traceback.

The mapping and the semantics are those of :class:`FalkorDBStore`: batched ``UNWIND`` writes
of ``batch_size`` rows, ``MERGE`` everywhere, values only as parameters, names in query text
only after :func:`checked_identifier`. Reads page by the entity key (keyset pagination on the
unique key: ``WHERE key > $after ORDER BY key LIMIT n``, then the page's edges by index
seeks), so memory stays bounded and no page is read twice.

What differs between servers lives in a :class:`Dialect`. :data:`NEO4J` is Neo4j 5's Cypher,
checked against the manuals:

- uniqueness constraint: Cypher Manual 5, "Create constraints"
  (https://neo4j.com/docs/cypher-manual/5/constraints/create-constraints/):
  ``CREATE CONSTRAINT name IF NOT EXISTS FOR (n:Label) REQUIRE n.property IS UNIQUE``;
- vector index: Cypher Manual, "Vector indexes"
  (https://neo4j.com/docs/cypher-manual/current/indexes/semantic-indexes/vector-indexes/):
  ``CREATE VECTOR INDEX name IF NOT EXISTS FOR (n:Label) ON (n.property) OPTIONS {indexConfig:
  {`vector.dimensions`: D, `vector.similarity_function`: 'cosine'}}``, dimensions 1..4096,
  ``cosine`` or ``euclidean``; queried with ``db.index.vector.queryNodes(indexName,
  numberOfNearestNeighbours, query) :: (node, score)``, scores in [0, 1], 1 most similar;
- vectors are written with ``db.create.setNodeVectorProperty(node, key, vector)``, which the
  Operations Manual's procedure reference
  (https://neo4j.com/docs/operations-manual/current/procedures/#procedure_db_create_setNodeVectorProperty)
  describes as "a more space efficient representation than Cypher's SET";
- ``db.awaitIndex(indexName, timeOutSeconds)`` waits for the index to come online (same page).

:data:`FALKORDB_BOLT` is FalkorDB's dialect for its experimental Bolt endpoint: kgweave's tests
run the portable core of this class against a real FalkorDB through the ``neo4j`` driver
(there is no Neo4j server on the build machines); the Neo4j-only statements are tested by
their exact text.

Size (over 400 lines): the store's operations only; the statements and dialects are in
neo4j_dialects.py, the shared Cypher writes in cypher_store.py.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from kgweave.errors import GraphUnavailableError, InvalidArgumentError, KGWeaveError, echo
from kgweave.graph.cypher_store import CypherStore
from kgweave.graph.neo4j_dialects import NEO4J, Dialect, Records, checked_vector_config
from kgweave.graph.store import (
    EntityRow,
    EntityVectors,
    GraphMapping,
    Triple,
)

if TYPE_CHECKING:
    from neo4j import Driver, ManagedTransaction

SCHEMES = ("bolt", "bolt+s", "bolt+ssc", "neo4j", "neo4j+s", "neo4j+ssc")


# ---- connecting
@dataclass(frozen=True)
class Neo4jTarget:
    """Where and how to connect (credentials kept out of ``repr``)."""

    uri: str
    user: str | None = None
    password: str | None = None
    database: str | None = None
    tls_ca: Path | None = None

    def __repr__(self) -> str:
        return f"Neo4jTarget(uri={self.uri!r}, user={self.user!r}, database={self.database!r})"

    def driver_uri_and_tls(self) -> tuple[str, dict[str, Any]]:
        """The URI for the driver and its TLS keyword arguments.

        The driver refuses ``trusted_certificates`` together with a ``+s`` scheme, so with a
        CA file ``bolt+s://`` becomes ``bolt://`` with ``encrypted=True`` and that CA.
        """
        parts = urlsplit(self.uri)
        scheme = parts.scheme.lower()
        if scheme not in SCHEMES:
            raise InvalidArgumentError(
                f"Neo4j URI {echo(self.uri)}: the scheme must be one of {', '.join(SCHEMES)}"
            )
        if not parts.hostname:
            raise InvalidArgumentError(f"Neo4j URI {echo(self.uri)} has no host")
        netloc = parts.hostname if parts.port is None else f"{parts.hostname}:{parts.port}"
        if ":" in parts.hostname:  # IPv6 literal
            netloc = f"[{parts.hostname}]" + (f":{parts.port}" if parts.port else "")
        if self.tls_ca is None:
            return urlunsplit((scheme, netloc, "", parts.query, "")), {}
        if scheme.endswith("+ssc"):
            raise InvalidArgumentError(
                f"{scheme}:// accepts any self-signed certificate, a CA file contradicts it: "
                "use bolt+s:// (or neo4j+s://) with the CA file"
            )
        if not self.tls_ca.is_file():
            raise InvalidArgumentError(f"TLS CA file {self.tls_ca} does not exist")
        from neo4j import TrustCustomCAs

        plain = scheme.removesuffix("+s")
        tls = {"encrypted": True, "trusted_certificates": TrustCustomCAs(str(self.tls_ca))}
        return urlunsplit((plain, netloc, "", parts.query, "")), tls


def _describe(exc: BaseException) -> str:
    message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return " ".join(str(message).split())


def translate_error(exc: Exception, target: str, timeout_s: float | None = None) -> KGWeaveError:
    """One typed kgweave error for a driver error (no driver traceback reaches users);
    ``timeout_s``: the transaction timeout the query ran under, for the message when the DBMS
    ended it."""
    from neo4j import exceptions as ne

    if isinstance(exc, KGWeaveError):
        return exc
    if "TransactionTimedOut" in (getattr(exc, "code", None) or ""):
        limit = f" of {timeout_s:g}s" if timeout_s is not None else ""
        return GraphUnavailableError(
            f"Neo4j at {target} ended a query that ran over its timeout{limit} "
            "(KGWEAVE_GRAPH_QUERY_TIMEOUT_S)"
        )
    detail = _describe(exc)
    table: list[tuple[type[Exception] | tuple[type[Exception], ...], KGWeaveError]] = [
        (
            ne.AuthError,
            InvalidArgumentError(
                f"Neo4j at {target} refused the credentials ({detail}): check the user and "
                "password in the URI or KGWEAVE_GRAPH_USER / KGWEAVE_GRAPH_PASSWORD"
            ),
        ),
        (
            ne.ConfigurationError,
            InvalidArgumentError(f"Neo4j connection settings for {target}: {detail}"),
        ),
        (
            ne.ClientError,
            InvalidArgumentError(
                f"Neo4j at {target} refused a query "
                f"({getattr(exc, 'code', None) or 'client error'}): {detail}"
            ),
        ),
        (
            (ne.ServiceUnavailable, ne.SessionExpired, ne.TransientError),
            GraphUnavailableError(f"Neo4j at {target} is not reachable: {detail}"),
        ),
        (ne.Neo4jError, GraphUnavailableError(f"Neo4j at {target} failed a query: {detail}")),
    ]
    for kinds, error in table:
        if isinstance(exc, kinds):
            return error
    return GraphUnavailableError(f"Neo4j at {target}: {detail}")


class Neo4jStore(CypherStore):
    """A graph in Neo4j 5 (or another Bolt server speaking a known :class:`Dialect`)."""

    def __init__(
        self,
        target: Neo4jTarget,
        mapping: GraphMapping | None = None,
        batch_size: int = 1_000,
        retry_s: float = 30.0,
        dialect: Dialect = NEO4J,
        timeout_s: float = 600.0,
    ) -> None:
        """``timeout_s``: the transaction timeout of every query (the DBMS ends a longer one,
        which then fails with :class:`GraphUnavailableError`)."""
        if retry_s < 0:
            raise InvalidArgumentError("retry time must be >= 0 seconds")
        if timeout_s <= 0:
            raise InvalidArgumentError("the graph query timeout must be > 0 seconds")
        super().__init__(mapping, batch_size)
        self.target = target
        self.retry_s = retry_s
        self.timeout_s = timeout_s
        self.dialect = dialect
        self._where = target.uri
        self._driver = self._connect()

    # ---- plumbing
    def _connect(self) -> Driver:
        """A driver whose connection was verified, retrying with backoff for ``retry_s``."""
        from neo4j import GraphDatabase
        from neo4j import exceptions as ne

        uri, tls = self.target.driver_uri_and_tls()
        auth = (self.target.user, self.target.password or "") if self.target.user else None
        try:
            driver = GraphDatabase.driver(
                uri,
                auth=auth,
                max_transaction_retry_time=self.retry_s,
                connection_timeout=min(10.0, max(self.retry_s, 1.0)),
                user_agent="kgweave",
                # no server notifications ("label does not exist" on an empty graph) as
                # multi-line warnings on the user's terminal
                notifications_min_severity="OFF",
                **tls,
            )
        except (ne.DriverError, ne.Neo4jError, ValueError) as exc:
            raise translate_error(exc, self._where) from None
        deadline = time.monotonic() + self.retry_s
        delay, attempts = 0.25, 0
        while True:
            attempts += 1
            try:
                driver.verify_connectivity()
                return driver
            except (ne.ServiceUnavailable, ne.SessionExpired, ne.TransientError) as exc:
                if time.monotonic() + delay > deadline:
                    driver.close()
                    raise GraphUnavailableError(
                        f"Neo4j at {self._where} is not reachable ({attempts} attempts over "
                        f"{self.retry_s:.0f}s): {_describe(exc)}"
                    ) from None
            except (ne.DriverError, ne.Neo4jError) as exc:
                driver.close()
                raise translate_error(exc, self._where) from None
            time.sleep(delay)
            delay = min(delay * 2, 5.0)

    def close(self) -> None:
        """Close the driver's connections."""
        self._driver.close()

    def __enter__(self) -> Neo4jStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self, cypher: str, params: dict[str, Any] | None, write: bool) -> Records:
        from neo4j import exceptions as ne
        from neo4j import unit_of_work

        @unit_of_work(timeout=self.timeout_s)
        def work(tx: ManagedTransaction) -> Records:
            return [record.data() for record in tx.run(cypher, params or {})]

        try:
            with self._driver.session(database=self.target.database) as session:
                if write:
                    return session.execute_write(work)
                return session.execute_read(work)
        except (ne.DriverError, ne.Neo4jError) as exc:
            raise translate_error(exc, self._where, self.timeout_s) from None

    def rows(self, cypher: str, params: dict[str, Any] | None = None) -> list[list[Any]]:
        return [list(record.values()) for record in self.write(cypher, params)]

    def write(self, cypher: str, params: dict[str, Any] | None = None) -> Records:
        """Run one statement in a managed write transaction (retried on transient errors)."""
        return self._run(cypher, params, write=True)

    def read(self, cypher: str, params: dict[str, Any] | None = None) -> Records:
        """Run one statement in a managed read transaction (retried on transient errors)."""
        return self._run(cypher, params, write=False)

    # ---- schema
    def ensure_schema(self) -> None:
        self.dialect.ensure_schema(self)

    # ---- writes
    # ---- reads (keyset pagination on the unique entity key)
    def _key_pages(self, page_size: int) -> Iterator[list[Any]]:
        """The entity keys in key order, ``page_size`` at a time (keyset pagination)."""
        after: Any = None
        while True:
            where = f"e.{self._key} > $after" if after is not None else f"e.{self._key} IS NOT NULL"
            rows = self.read(
                f"MATCH (e:{self._label}) WHERE {where} "
                f"RETURN e.{self._key} AS k ORDER BY e.{self._key} LIMIT $n",
                {"after": after, "n": page_size},
            )
            if not rows:
                return
            yield [r["k"] for r in rows]
            if len(rows) < page_size:
                return
            after = rows[-1]["k"]

    def iter_triples(
        self, page_size: int = 10_000, relations: Collection[str] | None = None
    ) -> Iterator[list[Triple]]:
        # the edges of one page of heads, found by equality seeks on the key: FalkorDB's index
        # answers a two-sided string range (``> $after AND <= $last``) with keys outside it
        if page_size < 1:
            raise InvalidArgumentError("page size must be at least 1")
        condition, params = self._type_filter(relations)
        for keys in self._key_pages(page_size):
            rows = self.read(
                f"UNWIND $keys AS k MATCH (h:{self._label} {{{self._key}: k}})-[x]->"
                f"(t:{self._label}) WHERE {condition} "
                f"RETURN h.{self._key} AS h, coalesce(x.{self._relation}, type(x)) AS r, "
                f"t.{self._key} AS t",
                {**params, "keys": keys},
            )
            for i in range(0, len(rows), page_size):
                yield [(str(r["h"]), str(r["r"]), str(r["t"])) for r in rows[i : i + page_size]]

    def iter_entities(self, page_size: int = 10_000) -> Iterator[list[EntityRow]]:
        if page_size < 1:
            raise InvalidArgumentError("page size must be at least 1")
        after: str | None = None
        while True:
            where = f"e.{self._key} > $after" if after is not None else f"e.{self._key} IS NOT NULL"
            rows = self.read(
                f"MATCH (e:{self._label}) WHERE {where} "
                f"RETURN e.{self._key} AS id, e.{self._name} AS name, "
                f"e.{self._description} AS description ORDER BY e.{self._key} LIMIT $n",
                {"after": after, "n": page_size},
            )
            if not rows:
                return
            yield [EntityRow(str(r["id"]), r["name"], r["description"]) for r in rows]
            if len(rows) < page_size:
                return
            after = rows[-1]["id"]

    def entities(self, ids: Iterable[str]) -> list[EntityRow]:
        """The rows of the given entity ids that exist, by index seeks in batches."""
        found: list[EntityRow] = []
        for batch in self._batches(dict.fromkeys(ids)):
            rows = self.read(
                f"UNWIND $ids AS id MATCH (e:{self._label} {{{self._key}: id}}) "
                f"RETURN e.{self._key} AS id, e.{self._name} AS name, "
                f"e.{self._description} AS description",
                {"ids": batch},
            )
            found.extend(EntityRow(str(r["id"]), r["name"], r["description"]) for r in rows)
        return found

    # ---- write-back
    def _write_vectors(self, checked: EntityVectors) -> None:
        mapping = self._vector_mapping(checked.prop)
        dimension, similarity = checked.dimension, checked.similarity
        checked_vector_config(dimension, similarity)
        self.dialect.before_vectors(self, dimension, similarity, mapping)
        cypher = self.dialect.set_vectors(mapping)
        extra = self.dialect.vector_params(mapping)
        for rows in checked.rows(self.batch_size):
            self.write(cypher, {"rows": rows, **extra})
        self.dialect.after_vectors(self, dimension, similarity, mapping)

    def _vector_mapping(self, prop: str | None) -> GraphMapping:
        """The mapping with ``prop`` as its vector property (the dialects index that one)."""
        if prop is None or prop == self.mapping.embedding_property:
            return self.mapping
        return dataclasses.replace(self.mapping, embedding_property=prop)

    def nearest(
        self, vector: list[float], k: int, prop: str | None = None
    ) -> list[tuple[str, float]]:
        """Nearest first; scores as the database gives them (Neo4j: similarity in [0, 1])."""
        if k < 1:
            raise InvalidArgumentError("k must be at least 1")
        mapping = self._vector_mapping(prop)
        cypher, params = self.dialect.nearest(mapping, [float(x) for x in vector], k)
        return [(str(r["id"]), float(r["score"])) for r in self.read(cypher, params)]

    def _delete_predicted(self) -> None:
        # in bounded transactions
        while True:
            rows = self.write(
                f"MATCH ()-[x:{self._predicted}]->() WITH x LIMIT $n DELETE x "
                "RETURN count(*) AS deleted",
                {"n": self.batch_size},
            )
            if not rows or int(rows[0]["deleted"]) < self.batch_size:
                break

    def read_rows(self, cypher: str, params: dict[str, Any] | None = None) -> list[list[Any]]:
        return [list(record.values()) for record in self.read(cypher, params)]
