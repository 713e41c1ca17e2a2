"""Open the graph store named by a URI, or the embedded default."""

from __future__ import annotations

from urllib.parse import urlparse

from kgweave.errors import FailedPreconditionError, InvalidArgumentError
from kgweave.graph.embedded import EmbeddedFalkorDB
from kgweave.graph.falkordb_store import FalkorDBStore
from kgweave.graph.store import GraphStore
from kgweave.settings import Settings


def open_store(uri: str | None, settings: Settings, graph: str = "kgweave") -> GraphStore:
    """A store for ``uri``; with no URI, the embedded FalkorDB (started if needed).

    ``falkor://host:port/graph`` (or ``redis://``) reaches a FalkorDB server.
    """
    if not uri:
        info = EmbeddedFalkorDB(settings.graph_dir).start()
        return FalkorDBStore(info.host, info.port, graph=graph)
    parsed = urlparse(uri)
    if parsed.scheme in ("falkor", "falkordb", "redis"):
        if not parsed.hostname:
            raise InvalidArgumentError(f"graph URI {uri!r} has no host")
        name = parsed.path.strip("/") or graph
        return FalkorDBStore(
            parsed.hostname, parsed.port or 6379, graph=name, password=parsed.password
        )
    if parsed.scheme in ("bolt", "bolt+s", "neo4j", "neo4j+s"):
        raise FailedPreconditionError(
            "the Neo4j backend is not part of this kgweave version yet: use the embedded "
            "FalkorDB (no --graph) or a falkor://host:port URI"
        )
    raise InvalidArgumentError(
        f"graph URI {uri!r}: use falkor://host:port[/graph] (or leave it out for the embedded "
        "database)"
    )
