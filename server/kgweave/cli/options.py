"""Options shared by commands: one flag per TrainConfig field (kgweave train, kgweave tune), the
server-job flags of both, the output flags of long commands and the repeatable triple flag."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, get_args, get_origin

import click

#: a command decorator (click's options are)
Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]

#: flags whose name is not the TrainConfig field's (short forms, units dropped)
_FLAG_NAMES = {"model": ("--model", "-m"), "time_budget_s": ("--time-budget",)}


def training_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """One flag per :class:`~kgweave.training.config.TrainConfig` field, its type, choices,
    help and default read from the field: the settings are declared once, there."""
    from kgweave.training.config import TrainConfig

    for name, field in reversed(TrainConfig.model_fields.items()):
        choices = get_args(field.annotation) if get_origin(field.annotation) is Literal else ()
        kind: Any = click.Choice(choices) if choices else _scalar(field.annotation)
        default = field.default if field.default is not None else "none"
        flags = _FLAG_NAMES.get(name, ("--" + name.replace("_", "-"),))
        command = click.option(
            *flags,
            name,
            type=kind,
            default=None,
            help=f"{' '.join((field.description or '').split())} [default: {default}]".strip(),
        )(command)
    return command


def _scalar(annotation: Any) -> type:
    """int, float or str of ``X`` or ``X | None``."""
    for candidate in (int, float, str):
        if annotation is candidate or candidate in get_args(annotation):
            return candidate
    raise TypeError(f"no command-line type for {annotation}")


def job_options(served: str) -> Decorator:
    """``--activation`` and ``--detach`` of a command that runs as a server job with ``--remote``;
    ``served`` names the model the activation policy may serve ("the new model")."""
    from kgweave.serving.activation import POLICIES

    activation = click.option(
        "--activation",
        type=click.Choice(POLICIES),
        default=None,
        help=f"With --remote: when {served} is served [default: the server's setting].",
    )
    detach = click.option(
        "--detach", is_flag=True, help="With --remote: print the job id and return at once."
    )
    return lambda command: activation(detach(command))


def triples_option(*names: str, help: str) -> Decorator:
    """A repeatable flag taking one triple per use: its value is a tuple of (head, relation,
    tail) tuples."""
    return click.option(*names, nargs=3, multiple=True, metavar="HEAD RELATION TAIL", help=help)


def report_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--no-progress`` and ``--json`` of a long command (training, import, write-back): its
    progress bar on stderr, and its result as JSON instead of text."""
    as_json = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
    no_progress = click.option("--no-progress", is_flag=True, help="No progress bar.")
    return no_progress(as_json(command))
