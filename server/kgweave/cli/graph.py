"""``kgweave graph ...`` (the embedded FalkorDB, statistics, write-back) and ``kgweave import``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from kgweave.cli.options import report_options
from kgweave.cli.output import emit_json
from kgweave.settings import get_settings


@click.group()
def graph() -> None:
    """Manage the embedded FalkorDB server (KGWEAVE_DATA_DIR/graph)."""


def _report_server(info: Any, as_json: bool) -> None:
    """Print a server's state: ``info`` is a ServerInfo, or None when nothing runs."""
    from dataclasses import asdict

    if as_json:
        emit_json(
            {"running": True, "url": info.url, **asdict(info)} if info else {"running": False}
        )
    elif info is None:
        click.echo("FalkorDB is not running (start it with: kgweave graph start)")
    else:
        click.echo(f"FalkorDB running at {info.url} (pid {info.pid}, data {info.data_dir})")
    from kgweave.graph.embedded import owner

    if not as_json and (pid := owner(get_settings().graph_dir)) is not None:
        click.echo(f"owned by kgweave serve (pid {pid}), which restarts it if it dies")


def _refuse_when_served(verb: str) -> None:
    """``kgweave serve`` owns the embedded database while it runs (it restarts it on its
    port when it dies): no second process starts or stops it meanwhile."""
    from kgweave.errors import FailedPreconditionError
    from kgweave.graph.embedded import owner

    pid = owner(get_settings().graph_dir)
    if pid is not None:
        raise FailedPreconditionError(
            f"kgweave serve (pid {pid}) owns the embedded graph database and restarts it "
            f"itself; stop serve before you {verb} it"
        )


@graph.command("start")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def graph_start(as_json: bool) -> None:
    """Start the embedded graph database, or reuse the one running."""
    from kgweave.graph import EmbeddedFalkorDB

    _refuse_when_served("start")
    _report_server(EmbeddedFalkorDB(get_settings().graph_dir).start(), as_json)


@graph.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def graph_status(as_json: bool) -> None:
    """Whether the embedded graph database runs, and where."""
    from kgweave.graph import EmbeddedFalkorDB

    _report_server(EmbeddedFalkorDB(get_settings().graph_dir).status(), as_json)


@graph.command("stop")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def graph_stop(as_json: bool) -> None:
    """Stop the embedded graph database cleanly (data is saved)."""
    from kgweave.graph import EmbeddedFalkorDB

    _refuse_when_served("stop")
    stopped = EmbeddedFalkorDB(get_settings().graph_dir).stop()
    if as_json:
        emit_json({"stopped": stopped})
    else:
        click.echo("FalkorDB stopped" if stopped else "FalkorDB was not running")


@graph.command("stats")
@click.option("--graph", "graph_uri", default=None, help="Graph URI (default: the embedded one).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def graph_stats(graph_uri: str | None, as_json: bool) -> None:
    """Entity, relation and triple counts of the graph."""
    from kgweave.graph.connect import open_store

    counts = open_store(graph_uri, get_settings()).counts()
    if as_json:
        emit_json(counts)
    else:
        for key, value in counts.items():
            click.echo(f"{key:<10} {value}")


@graph.command("write-back")
@click.argument("model_dir", type=click.Path(path_type=Path))
@click.option("--graph", "graph_uri", default=None, help="Graph URI (default: the embedded one).")
@click.option(
    "--links-per-query",
    type=int,
    default=1,
    show_default=True,
    help="New tails proposed per training (head, relation) pair.",
)
@click.option(
    "--max-links",
    type=int,
    default=10_000,
    show_default=True,
    help="Keep this many predicted links, the highest-scoring (0: none).",
)
@click.option("--no-embeddings", is_flag=True, help="Write predicted links only.")
@click.option("--version", "model_version", default=None, help="Version label [default: hash].")
@report_options
def graph_write_back(
    model_dir: Path,
    graph_uri: str | None,
    links_per_query: int,
    max_links: int,
    no_embeddings: bool,
    model_version: str | None,
    no_progress: bool,
    as_json: bool,
) -> None:
    """Write MODEL_DIR's embeddings (with a vector index) and predicted links into the graph.

    Predicted links replace those of any earlier version; real facts are never touched.
    """
    from kgweave.artifact import load_artifact
    from kgweave.graph.connect import open_store
    from kgweave.serving.writeback import write_back

    settings = get_settings()
    artifact = load_artifact(model_dir)
    store = open_store(graph_uri or settings.graph_uri, settings)
    report = write_back(
        store,
        artifact,
        model_version or artifact.version,
        embeddings=not no_embeddings,
        links_per_query=links_per_query,
        max_links=max_links,
        progress=not no_progress,
    )
    if as_json:
        emit_json(report)
    else:
        click.echo(
            f"wrote {report.get('embeddings', 0)} embeddings and {report['predicted_links']} "
            f"predicted links of model {report['model_version']} in {report['seconds']:.1f}s"
        )


@click.command("import")
@click.argument("dataset")
@click.option("--graph", "graph_uri", default=None, help="Graph URI (default: the embedded one).")
@click.option(
    "--splits",
    default="train,valid,test",
    show_default=True,
    help="Comma-separated splits to import.",
)
@report_options
def import_(
    dataset: str, graph_uri: str | None, splits: str, no_progress: bool, as_json: bool
) -> None:
    """Load a dataset (name or folder) with its entity text into the graph, idempotently."""
    from kgweave.engine import open_dataset
    from kgweave.graph.connect import open_store
    from kgweave.graph.sync import import_dataset

    settings = get_settings()
    data = open_dataset(dataset, settings)
    wanted = tuple(s.strip() for s in splits.split(",") if s.strip())
    for split in wanted:
        data.split(split)  # unknown split: a clear error before anything is written
    from kgweave.serving.training_run import remember_relation_text

    store = open_store(graph_uri or settings.graph_uri, settings)
    report = import_dataset(store, data, wanted, progress=not no_progress)
    remember_relation_text(settings, data)
    if as_json:
        emit_json(report)
    else:
        click.echo(
            f"imported {report['triples']} triples and {report['entities']} entities "
            f"of {report['dataset']} in {report['seconds']:.1f}s "
            f"({report['triples_per_second']} triples/s)"
        )


def register(group: click.Group) -> None:
    for command in (graph, import_):
        group.add_command(command)
