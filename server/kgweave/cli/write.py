"""``kgweave write``: facts and entities written through the server (AdminService.WriteFacts):
to the graph database, then the change-event log, served within the next applied batch."""

from __future__ import annotations

import click

from kgweave.cli.options import triples_option
from kgweave.cli.output import emit_json


@click.command()
@triples_option("--add", "added", help="A fact to add (repeatable).")
@triples_option("--remove", "removed", help="A fact to remove (repeatable).")
@click.option("--entity", "entity", default=None, help="An entity id to create or update.")
@click.option("--name", default=None, help="With --entity: its name.")
@click.option("--description", default=None, help="With --entity: its description.")
@click.option(
    "--delete-entity",
    "deleted",
    multiple=True,
    metavar="ID",
    help="An entity to delete with all its facts (repeatable).",
)
@click.option(
    "--wait",
    "wait_s",
    type=float,
    default=0.0,
    show_default=True,
    help="Seconds to wait until served (0: up to 10 s; negative: do not wait).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def write(
    added: tuple[tuple[str, str, str], ...],
    removed: tuple[tuple[str, str, str], ...],
    entity: str | None,
    name: str | None,
    description: str | None,
    deleted: tuple[str, ...],
    wait_s: float,
    as_json: bool,
) -> None:
    """Write facts and entities to the graph through the server; they are served at once.

    \b
    kgweave write --add marie_curie born_in warsaw
    kgweave write --entity ada_lovelace --name "Ada Lovelace" --description "mathematician" \\
        --add ada_lovelace citizen_of united_kingdom
    kgweave write --remove albert_einstein born_in ulm --delete-entity pierre_curie
    """
    from kgweave.cli.connect import open_client
    from kgweave.errors import InvalidArgumentError
    from kgweave.v1 import admin_pb2

    if (name is not None or description is not None) and entity is None:
        raise InvalidArgumentError("--name and --description describe an --entity: give its id")
    request = admin_pb2.WriteFactsRequest(
        added=[admin_pb2.Fact(head=h, relation=r, tail=t) for h, r, t in added],
        removed=[admin_pb2.Fact(head=h, relation=r, tail=t) for h, r, t in removed],
        entities=[admin_pb2.EntityWrite(id=entity, name=name, description=description)]
        if entity is not None
        else [],
        deleted_entities=list(deleted),
        wait_s=wait_s,
    )
    with open_client(None) as client:
        reply = client.write_facts(request)
    if as_json:
        emit_json(reply)
        return
    served = (
        f"served by {reply['version']}"
        if reply["applied"]
        else "acknowledged; served within the next applied batch"
    )
    click.echo(
        f"wrote {reply['events']} change(s) up to log offset {reply['next_offset']}: {served}"
    )
