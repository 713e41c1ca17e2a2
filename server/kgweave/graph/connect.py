"""Open the graph store named by a URI, or the embedded default."""

from __future__ import annotations

from urllib.parse import unquote, urlparse, urlsplit, urlunsplit

from kgweave.errors import FailedPreconditionError, InvalidArgumentError, echo
from kgweave.graph.embedded import EmbeddedFalkorDB
from kgweave.graph.falkordb_store import FalkorDBStore
from kgweave.graph.neo4j_server import USER, local_password
from kgweave.graph.neo4j_store import SCHEMES, Neo4jStore, Neo4jTarget
from kgweave.graph.store import GraphStore
from kgweave.private import private_dir
from kgweave.settings import Settings


def open_store(
    uri: str | None, settings: Settings, graph: str = "kgweave", start: bool = True
) -> GraphStore:
    """A store for ``uri``; with no URI, the embedded FalkorDB (started if needed; with
    ``start`` false, only when running: worker processes of a server, which owns it, never
    start one that would outlive the server).

    ``falkor://host:port/graph`` (or ``redis://``) reaches a FalkorDB server;
    ``bolt://``, ``bolt+s://``, ``bolt+ssc://``, ``neo4j://``, ``neo4j+s://`` and
    ``neo4j+ssc://`` reach Neo4j (see :func:`neo4j_target`).
    """
    if not uri:
        private_dir(settings.data_dir)  # (0700 when kgweave creates it)
        embedded = EmbeddedFalkorDB(settings.graph_dir)
        running = embedded.status()
        if running is None and not start:
            raise FailedPreconditionError(
                "the embedded graph database is not running (kgweave serve, its owner, starts it)"
            )
        info = running or embedded.start()
        return FalkorDBStore(
            info.host,
            info.port,
            graph=graph,
            password=info.password(),
            timeout_s=settings.graph_query_timeout_s,
        )
    parsed = urlparse(uri)
    if parsed.scheme in ("falkor", "falkordb", "redis"):
        if not parsed.hostname:
            raise InvalidArgumentError(f"graph URI {echo(uri)} has no host")
        name = parsed.path.strip("/") or graph
        return FalkorDBStore(
            parsed.hostname,
            parsed.port or 6379,
            graph=name,
            password=parsed.password,
            timeout_s=settings.graph_query_timeout_s,
        )
    if parsed.scheme in SCHEMES:
        return open_neo4j(uri, settings)
    raise InvalidArgumentError(
        f"graph URI {echo(uri)}: use falkor://host:port[/graph], bolt://host:port[/database] or "
        "neo4j://host:port[/database] (or leave it out for the embedded database)"
    )


def neo4j_target(uri: str, settings: Settings) -> Neo4jTarget:
    """Where a ``bolt://`` / ``neo4j://`` URI points, with credentials and TLS settings.

    ``bolt://user:password@host:7687/database``: user, password (percent-encoded) and database
    come from the URI when present, otherwise from ``KGWEAVE_GRAPH_USER``,
    ``KGWEAVE_GRAPH_PASSWORD`` and ``KGWEAVE_GRAPH_DATABASE``; with no password at all, a local
    URI on the port of ``kgweave neo4j``'s DBMS logs in as ``neo4j`` with the password kept in
    ``<data_dir>/neo4j/password``.
    """
    parsed = urlsplit(uri)
    if not parsed.hostname:
        raise InvalidArgumentError(f"graph URI {echo(uri)} has no host")
    host = f"[{parsed.hostname}]" if ":" in parsed.hostname else parsed.hostname
    netloc = host if parsed.port is None else f"{host}:{parsed.port}"
    password = settings.graph_password.get_secret_value() if settings.graph_password else None
    database = unquote(parsed.path.strip("/")) or settings.graph_database
    if database and "/" in database:
        raise InvalidArgumentError(f"graph URI {echo(uri)}: the path must be one database name")
    user = unquote(parsed.username) if parsed.username else settings.graph_user
    if parsed.password is not None:
        password = unquote(parsed.password)
    elif password is None and user in (None, USER):
        password = local_password(settings.data_dir / "neo4j", parsed.hostname, parsed.port)
        user = USER if password is not None else user
    return Neo4jTarget(
        uri=urlunsplit((parsed.scheme, netloc, "", parsed.query, "")),
        user=user,
        password=password,
        database=database,
        tls_ca=settings.graph_tls_ca,
    )


def open_neo4j(uri: str, settings: Settings) -> Neo4jStore:
    """A :class:`Neo4jStore` for ``uri`` with the Neo4j settings (batch size, retries, TLS)."""
    return Neo4jStore(
        neo4j_target(uri, settings),
        batch_size=settings.graph_batch_size,
        retry_s=settings.graph_retry_s,
        timeout_s=settings.graph_query_timeout_s,
    )
