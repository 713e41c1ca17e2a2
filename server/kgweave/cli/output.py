"""Printing results: JSON for machines, short aligned text for people."""

from __future__ import annotations

import json
import sys
from typing import Any

import click


def emit_json(payload: Any) -> None:
    """One JSON document on stdout."""
    click.echo(json.dumps(payload, indent=2, ensure_ascii=False, default=str))


def emit_metrics(title: str, metrics: dict[str, Any]) -> None:
    """``title`` then the headline metrics, one per line."""
    click.echo(title)
    for key in ("mrr", "hits@1", "hits@3", "hits@10", "mean_rank"):
        if key in metrics:
            click.echo(f"  {key:<10} {metrics[key]:.4f}")


def err(message: str) -> None:
    """A line for people on stderr."""
    click.echo(message, file=sys.stderr)
