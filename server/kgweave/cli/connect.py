"""Which API a CLI command talks to: the running server, or a model folder opened here."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kgweave.api.client import BaseClient


def open_client(model_dir: Path | None = None, graph_uri: str | None = None) -> BaseClient:
    """A :class:`~kgweave.api.client.LocalClient` over ``model_dir`` when given, else a
    :class:`~kgweave.api.client.Client` of the server at ``KGWEAVE_SERVER``: the same calls
    and answers either way. ``graph_uri``: the graph a local model writes to (completion)."""
    from kgweave.settings import get_settings

    settings = get_settings()
    if model_dir is not None:
        if graph_uri:
            settings = settings.model_copy(update={"graph_uri": graph_uri})
        from kgweave.api.client import LocalClient

        return LocalClient(model_dir, settings)
    from kgweave.api.client import Client

    return Client(settings.server)
