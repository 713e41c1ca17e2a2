"""Printing results: JSON for machines, short aligned text for people."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from kgweave.artifact import ModelArtifact


def emit_json(payload: Any) -> None:
    """One JSON document on stdout."""
    click.echo(json.dumps(payload, indent=2, ensure_ascii=False, default=str))


def show(reply: dict[str, Any], as_json: bool, text: Callable[[dict[str, Any]], None]) -> None:
    """A command's result: one JSON document with ``--json``, else ``text(reply)`` for people."""
    if as_json:
        emit_json(reply)
    else:
        text(reply)


def emit_metrics(title: str, metrics: dict[str, Any]) -> None:
    """``title`` then the headline metrics, one per line."""
    click.echo(title)
    for key in ("mrr", "hits@1", "hits@3", "hits@10", "mean_rank"):
        if key in metrics:
            click.echo(f"  {key:<10} {metrics[key]:.4f}")


def err(message: str) -> None:
    """A line for people on stderr."""
    click.echo(message, file=sys.stderr)


def evaluation_title(artifact: ModelArtifact, dataset: str, split: str) -> str:
    """What was evaluated, for a plot's title: ``ComplEx (dim 64) on umls test``, or
    ``ComplEx (dim 64, trained on demo) on umls test`` when the datasets differ.

    ``dataset`` is the name or folder given to ``kgweave eval``; the model's own name, size
    and training dataset come from the artifact (not from the folder it was written to).
    """
    model = artifact.model
    evaluated = Path(dataset).name or dataset
    trained = str(artifact.config.get("dataset", {}).get("name") or "")
    about = f"dim {model.dim}" + (
        f", trained on {trained}" if trained not in ("", evaluated) else ""
    )
    return f"{type(model).__name__} ({about}) on {evaluated} {split}"
