"""Render ``kgweave --help`` and every command's help (docs/cli.md), and every setting
(docs/settings.md), as Markdown.

``python -m kgweave.cli.reference > docs/cli.md`` and
``python -m kgweave.cli.reference --settings > docs/settings.md`` regenerate the pages; tests
check that the committed pages match the code, so they cannot drift.
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


def render_settings() -> str:
    """Every ``KGWEAVE_*`` setting with its type, default and description."""
    from kgweave.settings import Settings

    lines = [
        "# Settings",
        "",
        "Generated from `kgweave.settings.Settings` by "
        "`python -m kgweave.cli.reference --settings > docs/settings.md`.",
        "",
        "Every setting is an environment variable; `kgweave serve` also takes the most used ones "
        "as flags (`--port`, `--host`, `--http-port`, `--graph`, `--device`).",
        "",
        "| variable | type | default | meaning |",
        "|---|---|---|---|",
    ]
    for name, field in Settings.model_fields.items():
        kind = getattr(field.annotation, "__name__", None) or str(field.annotation)
        kind = kind.replace("pathlib.", "").replace("typing.", "").replace(" | ", " or ")
        default = field.default
        if name == "data_dir":
            default = "~/.kgweave"
        shown = "unset" if default is None else f"`{default}`"
        meaning = " ".join((field.description or "").split())  # a docstring's lines, unwrapped
        lines.append(f"| `KGWEAVE_{name.upper()}` | {kind} | {shown} | {meaning} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    import sys

    print(render_settings() if "--settings" in sys.argv else render(), end="")
