"""Which API a CLI command talks to: the running server, or a model folder opened here."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

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

    return Client.from_settings(settings)


def link_query_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """MODEL_DIR and the query of a link-prediction or completion command: --head or --tail,
    --relation, -k."""
    for option in reversed(
        (
            click.argument("model_dir", type=click.Path(path_type=Path), required=False),
            click.option("--head", default=None, help="Known head (id or name): find tails."),
            click.option("--relation", "-r", required=True, help="Relation (label or its text)."),
            click.option("--tail", default=None, help="Known tail (id or name): find heads."),
            click.option("-k", "k", type=int, default=None, help="How many answers [default: 10]."),
        )
    ):
        command = option(command)
    return command
