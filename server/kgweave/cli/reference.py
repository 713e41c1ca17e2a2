"""Render ``kgweave --help`` and every command's help as Markdown (docs/cli.md).

``python -m kgweave.cli.reference > docs/cli.md`` regenerates the page; a test checks that the
committed page matches the current help texts, so they cannot drift.
"""

from __future__ import annotations

import click

from kgweave.cli.main import cli


def _help(command: click.Command, name: str) -> str:
    with click.Context(
        command,
        info_name=name,
        terminal_width=100,
        max_content_width=100,
        help_option_names=["-h", "--help"],
    ) as ctx:
        return command.get_help(ctx)


def render() -> str:
    """The whole CLI reference as Markdown."""
    parts = [
        "# CLI reference",
        "",
        "Generated from the help texts by `python -m kgweave.cli.reference > docs/cli.md`.",
        "",
        "```text",
        _help(cli, "kgweave"),
        "```",
    ]
    assert isinstance(cli, click.Group)

    def add(command: click.Command, path: str) -> None:
        parts.extend(["", f"## {path}", "", "```text", _help(command, path), "```"])
        if isinstance(command, click.Group):
            for sub in sorted(command.commands):
                add(command.commands[sub], f"{path} {sub}")

    for name in sorted(cli.commands):
        add(cli.commands[name], f"kgweave {name}")
    return "\n".join(parts) + "\n"


if __name__ == "__main__":
    print(render(), end="")
