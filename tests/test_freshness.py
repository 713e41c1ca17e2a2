"""Graph changes served at once (changes/apply.py): every change kind through the real gRPC
WriteFacts, on the real embedded FalkorDB, checked through the real gRPC API; then a restart
keeps it all. No training between a write and its check: the applier makes it known."""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Callable, Iterator

import grpc
import pytest

from kgweave.bootstrap import prepare_plane
from kgweave.changes.apply import CONSUMER
from kgweave.dataplane import DataPlane
from kgweave.graph.embedded import EmbeddedFalkorDB
from kgweave.serving.placement import BACKGROUND_NICE
from kgweave.settings import get_settings
from kgweave.v1 import admin_pb2, admin_pb2_grpc, knowledge_pb2, knowledge_pb2_grpc
from serving_support import HANG_GUARD_S, ServerThread, wait_until


def wait_for(condition: Callable[[], bool]) -> None:
    """Poll an explicit condition (only a hang guard bounds a broken run)."""
    wait_until(condition, "a change to be served")


class Api:
    """The two gRPC services of one running server."""

    def __init__(self, address: str) -> None:
        self.channel = grpc.insecure_channel(address)
        self.knowledge = knowledge_pb2_grpc.KnowledgeServiceStub(self.channel)
        self.admin = admin_pb2_grpc.AdminServiceStub(self.channel)

    def write(
        self,
        added: list[tuple[str, str, str]] | None = None,
        removed: list[tuple[str, str, str]] | None = None,
        entities: list[admin_pb2.EntityWrite] | None = None,
        deleted: list[str] | None = None,
    ) -> admin_pb2.WriteFactsResponse:
        def facts(rows: list[tuple[str, str, str]] | None) -> list[admin_pb2.Fact]:
            return [admin_pb2.Fact(head=h, relation=r, tail=t) for h, r, t in rows or []]

        request = admin_pb2.WriteFactsRequest(
            added=facts(added),
            removed=facts(removed),
            entities=entities or [],
            deleted_entities=deleted or [],
        )
        reply: admin_pb2.WriteFactsResponse = self.admin.WriteFacts(request, timeout=HANG_GUARD_S)
        return reply

    def facts(self, entity: str) -> set[tuple[str, str, str]]:
        reply = self.knowledge.GetEntity(
            knowledge_pb2.GetEntityRequest(entity=entity, max_facts=1000), timeout=HANG_GUARD_S
        )
        return {(f.head, f.relation, f.tail) for f in reply.facts}

    def links(
        self, relation: str, head: str, filter_known: bool = False, k: int = 1000
    ) -> dict[str, bool]:
        """Candidate tail -> known, over (nearly) every entity."""
        reply = self.knowledge.PredictLinks(
            knowledge_pb2.PredictLinksRequest(
                queries=[knowledge_pb2.LinkQuery(head=head, relation=relation)],
                k=k,
                filter_known=filter_known,
            ),
            timeout=HANG_GUARD_S,
        )
        return {c.entity_id: c.known for c in reply.results[0].candidates}

    def code(self, call: Callable[[], object]) -> grpc.StatusCode:
        with pytest.raises(grpc.RpcError) as caught:
            call()
        return caught.value.code()


@pytest.fixture
def bootstrap_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("KGWEAVE_BOOTSTRAP_EPOCHS", "20")
    yield
    EmbeddedFalkorDB(get_settings().graph_dir).stop()


def serve() -> tuple[DataPlane, ServerThread, Api]:
    plane = prepare_plane(get_settings(), progress=False)
    server = ServerThread(plane)
    return plane, server, Api(server.address)


def test_every_change_kind_is_served_at_once_and_survives_a_restart(
    bootstrap_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    plane, server, api = serve()
    try:
        assert plane.changes.applier is not None
        assert plane.versions.active().version == "v0001"
        if sys.platform.startswith("linux"):  # the applier yields the cores to calls
            native = plane.changes.applier._thread.native_id or 0
            wait_for(lambda: os.getpriority(os.PRIO_PROCESS, native) == BACKGROUND_NICE)
            assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == 0
        # bad writes are refused whole, before the graph or the log is touched
        code = api.code(lambda: api.write(added=[("a", "", "b")]))
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        assert api.code(api.write) == grpc.StatusCode.INVALID_ARGUMENT
        assert plane.changes.event_log.end_offset == 0

        # an added fact: known at once (GetEntity facts, known flag, filter_known drops it)
        assert "paris" not in {t for _, r, t in api.facts("albert_einstein") if r == "born_in"}
        reply = api.write(added=[("albert_einstein", "born_in", "paris")])
        assert reply.applied and reply.events == 1 and reply.version.startswith("v0001@")
        assert ("albert_einstein", "born_in", "paris") in api.facts("albert_einstein")
        assert api.links("born_in", "albert_einstein")["paris"] is True
        assert "paris" not in api.links("born_in", "albert_einstein", filter_known=True)

        # a removed fact: no longer known
        assert api.links("born_in", "albert_einstein")["ulm"] is True
        assert api.write(removed=[("albert_einstein", "born_in", "ulm")]).applied
        assert ("albert_einstein", "born_in", "ulm") not in api.facts("albert_einstein")
        assert api.links("born_in", "albert_einstein")["ulm"] is False
        assert "ulm" in api.links("born_in", "albert_einstein", filter_known=True)

        # a new entity with text and two facts: resolves by id and name, answers queries
        reply = api.write(
            entities=[
                admin_pb2.EntityWrite(
                    id="emmy_noether",
                    name="Emmy Noether",
                    description="German mathematician who worked on abstract algebra",
                )
            ],
            added=[
                ("emmy_noether", "citizen_of", "germany"),
                ("emmy_noether", "field_of_work", "mathematics"),
            ],
        )
        assert reply.applied and reply.events == 3
        assert api.facts("Emmy Noether") == {
            ("emmy_noether", "citizen_of", "germany"),
            ("emmy_noether", "field_of_work", "mathematics"),
        }
        answers = api.links("born_in", "Emmy Noether", k=5)
        assert len(answers) == 5
        # placed by its neighbours at once, by its text once the projection is fitted
        applier = plane.changes.applier
        wait_for(lambda: applier.overlay.origins.get("emmy_noether") == "text")
        assert len(api.links("born_in", "Emmy Noether", k=5)) == 5
        # a batch that brings no new rows serves the same model again (its extended table
        # and its prepacked scorer are not made again), with the batch's fact known
        extended = plane.versions.active().predictor
        assert api.write(added=[("emmy_noether", "born_in", "paris")]).applied
        assert api.links("born_in", "emmy_noether")["paris"] is True
        again = plane.versions.active().predictor
        assert again is not extended and again.model is extended.model
        assert again._all is extended._all
        assert again.artifact.entities is extended.artifact.entities  # nor its labels
        # a new name (no new rows): served at once, and by the batches after it
        renamed = admin_pb2.EntityWrite(id="emmy_noether", name="Amalie Emmy Noether")
        assert api.write(entities=[renamed]).applied
        facts = api.facts("emmy_noether")
        assert api.facts("Amalie Emmy Noether") == facts
        assert api.write(removed=[("emmy_noether", "born_in", "paris")]).applied
        assert api.facts("Amalie Emmy Noether") == facts - {("emmy_noether", "born_in", "paris")}
        back = admin_pb2.EntityWrite(id="emmy_noether", name="Emmy Noether")
        assert api.write(entities=[back], added=[("emmy_noether", "born_in", "paris")]).applied
        assert api.facts("Emmy Noether") == facts

        # a new relation between known entities: queryable at once
        assert api.write(added=[("emmy_noether", "influenced", "albert_einstein")]).applied
        assert api.links("influenced", "emmy_noether")["albert_einstein"] is True

        # a deleted entity: NOT_FOUND, never a candidate, its facts gone from its neighbours
        assert ("marie_curie", "spouse_of", "pierre_curie") in api.facts("marie_curie")
        assert api.write(deleted=["pierre_curie"]).applied
        assert api.code(lambda: api.facts("pierre_curie")) == grpc.StatusCode.NOT_FOUND
        assert api.code(lambda: api.links("born_in", "pierre_curie")) == grpc.StatusCode.NOT_FOUND
        assert api.code(lambda: api.facts("Pierre Curie")) == grpc.StatusCode.NOT_FOUND
        for relation in ("spouse_of", "influenced_by", "born_in"):
            assert "pierre_curie" not in api.links(relation, "marie_curie")
        assert not any("pierre_curie" in (h, t) for h, _, t in api.facts("marie_curie"))
        # nor a semantic search hit, which still returns as many hits as asked for
        found = api.knowledge.SearchEntities(
            knowledge_pb2.SearchEntitiesRequest(text="Pierre Curie, physicist", limit=3),
            timeout=HANG_GUARD_S,
        )
        assert len(found.entities) == 3
        assert "pierre_curie" not in {e.id for e in found.entities}

        # events posted without a graph write (APOC trigger, any producer) take the same path
        body = {
            "source": "test",
            "events": [
                {"kind": "triple_added", "head": "emmy_noether", "relation": "born_in",
                 "tail": "paris"},
            ],
        }  # fmt: skip
        assert plane.changes.receive(json.dumps(body).encode()) == 1
        end = plane.changes.event_log.end_offset
        wait_for(lambda: plane.changes.applier.overlay.next_offset == end)  # type: ignore[union-attr]
        assert ("emmy_noether", "born_in", "paris") in api.facts("emmy_noether")

        # visible: status and metrics
        status = api.admin.Status(admin_pb2.StatusRequest(), timeout=HANG_GUARD_S)
        assert status.changes.applied_offset == status.changes.end_offset == end
        assert status.changes.entities_added == 1 and status.changes.entities_deleted == 1
        assert status.changes.relations_added == 1 and not status.changes.last_error
        assert status.active_model.version == f"v0001@{end}"
        metrics = plane.metrics.render().decode()
        assert f"kgweave_changes_applied_total {float(end)}" in metrics
        assert "kgweave_change_lag_seconds_count" in metrics
        # committed by the applier's next checkpoint (overlay_save_interval_s)
        wait_for(lambda: plane.changes.event_log.position(CONSUMER) == end)

        # at-least-once delivery, exactly-once effect: every event again changes nothing;
        # and one append is one batch however many reads of the log it takes (no request
        # sees half of a write)
        before = (plane.changes.applier.overlay.summary(), api.facts("emmy_noether"))
        # (the applier counts a batch just after serving it: its count once it says so)
        wait_for(lambda: plane.changes.applier.state.applied_offset == end)  # type: ignore[union-attr]
        batches = plane.changes.applier.state.batches
        monkeypatch.setattr("kgweave.changes.apply.MAX_BATCH", 2)
        again = [event for _, event in plane.changes.event_log.read(0, limit=end)]
        plane.changes.event_log.append(again)
        wait_for(lambda: plane.changes.applier.state.applied_offset == 2 * end)  # type: ignore[union-attr]
        assert end > 2 and plane.changes.applier.state.batches == batches + 1
        after = plane.changes.applier.overlay.summary()
        assert {k: v for k, v in after.items() if k != "next_offset"} == {
            k: v for k, v in before[0].items() if k != "next_offset"
        }
        assert api.facts("emmy_noether") == before[1]
        assert api.code(lambda: api.facts("pierre_curie")) == grpc.StatusCode.NOT_FOUND
    finally:
        api.channel.close()
        server.stop()

    # a restart serves everything applied, before any event is read again
    plane, server, api = serve()
    try:
        assert plane.versions.active().version == f"v0001@{2 * end}"
        assert ("albert_einstein", "born_in", "paris") in api.facts("albert_einstein")
        assert api.links("born_in", "albert_einstein")["ulm"] is False
        assert api.facts("emmy_noether") == before[1]
        assert len(api.links("born_in", "Emmy Noether", k=5)) == 5
        assert api.code(lambda: api.facts("pierre_curie")) == grpc.StatusCode.NOT_FOUND
        assert "pierre_curie" not in api.links("spouse_of", "marie_curie")
        assert plane.changes.applier is not None and plane.changes.applier.state.batches == 0
    finally:
        api.channel.close()
        server.stop()
