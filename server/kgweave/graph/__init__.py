"""The graph-database layer: the embedded FalkorDB server (more backends to come)."""

from kgweave.graph.embedded import EmbeddedFalkorDB, ServerInfo

__all__ = ["EmbeddedFalkorDB", "ServerInfo"]
