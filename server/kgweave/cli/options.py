"""Options shared by commands: one flag per TrainConfig field (kgweave train, kgweave tune)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, get_args, get_origin

import click

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
