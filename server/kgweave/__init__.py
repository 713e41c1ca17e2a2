"""kgweave: knowledge-graph embeddings and language models served beside your graph database."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("kgweave")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+local"

__all__ = ["__version__"]
