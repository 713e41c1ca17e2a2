"""The graph-database layer: stores for FalkorDB (embedded, started for you, or remote) and
Neo4j over Bolt (``connect.open_store`` picks one from the graph URI), import, snapshots,
diffs, write-back of embeddings and predicted links, and Neo4j's change data capture."""

from kgweave.graph.embedded import EmbeddedFalkorDB, ServerInfo

__all__ = ["EmbeddedFalkorDB", "ServerInfo"]
