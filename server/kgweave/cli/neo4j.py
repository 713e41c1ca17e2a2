"""``kgweave neo4j start|stop|status``: a real Neo4j 5 Community DBMS in ``<data_dir>/neo4j``.

See :mod:`kgweave.graph.neo4j_server` and docs/graph.md ("Neo4j for real").
"""

from __future__ import annotations

from pathlib import Path

import click

from kgweave.cli.output import emit_json
from kgweave.graph.neo4j_server import Neo4jServer, default_plugins_dir
from kgweave.settings import get_settings


def _server(plugins: Path | None = None, heap: str = "1g") -> Neo4jServer:
    folder = get_settings().data_dir / "neo4j"
    return Neo4jServer(folder, plugins if plugins is not None else default_plugins_dir(), heap)


def _print(described: dict[str, object], as_json: bool) -> None:
    if as_json:
        emit_json(described)
    elif not described["running"]:
        click.echo(
            f"Neo4j is not running (start it with: kgweave neo4j start; data {described['folder']})"
        )
    else:
        click.echo(
            f"Neo4j running at {described['bolt_uri']} (pid {described['pid']}, data "
            f"{described['folder']})\nuser {described['user']}, password {described['password']} "
            f"(file {described['password_file']})"
        )


@click.group()
def neo4j() -> None:
    """A real Neo4j 5 Community DBMS with APOC Core (KGWEAVE_DATA_DIR/neo4j), for development.

    Needs Java 17 and Maven (the launcher is built on first use). Then: kgweave serve --graph
    bolt://127.0.0.1:7687 (the password is read from the data folder).
    """


@neo4j.command("start")
@click.option("--bolt-port", type=click.IntRange(1, 65535), default=7687, show_default=True)
@click.option(
    "--http-port",
    type=click.IntRange(1, 65535),
    default=None,
    help="Neo4j's HTTP port (default: off).",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address Bolt listens on.")
@click.option(
    "--plugins",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder of extra plugin jars [default: procedures/neo4j/plugin/target].",
)
@click.option("--heap", default="1g", show_default=True, help="JVM heap (-Xmx).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def neo4j_start(
    bolt_port: int, http_port: int | None, host: str, plugins: Path | None, heap: str, as_json: bool
) -> None:
    """Start Neo4j in the background (or reuse the running one); returns once Bolt logs in."""
    server = _server(plugins, heap)
    _print(server.describe(server.start(bolt_port, http_port, host)), as_json)


@neo4j.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def neo4j_status(as_json: bool) -> None:
    """Whether Neo4j runs, its Bolt URI, user and password."""
    server = _server()
    _print(server.describe(server.status()), as_json)


@neo4j.command("stop")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def neo4j_stop(as_json: bool) -> None:
    """Stop Neo4j cleanly (its data stays in the data folder)."""
    server = _server()
    stopped = server.stop()
    if as_json:
        emit_json({"stopped": stopped})
    else:
        click.echo("Neo4j stopped" if stopped else "Neo4j was not running")


def register(cli: click.Group) -> None:
    """Add ``kgweave neo4j`` to the CLI."""
    cli.add_command(neo4j)
