"""The gRPC service against a real server on a free port, with real models and real stubs."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from kgweave.api.http import start_http
from kgweave.artifact import load_artifact
from kgweave.dataplane import DataPlane
from kgweave.predict import LinkPredictor, Query
from kgweave.settings import get_settings
from kgweave.v1 import admin_pb2, admin_pb2_grpc, knowledge_pb2, knowledge_pb2_grpc
from serving_support import (
    HANG_GUARD_S,
    HeldServer,
    ServerThread,
    registry_with,
    two_demo_models,
    wait_until,
)

pytest_plugins = ["serving_support"]  # fixture: transport (every served test runs on both)

QUERIES = [
    Query(relation="born_in", head="Alan Turing"),
    Query(relation="born_in", head="albert_einstein"),
    Query(relation="located_in", head="paris"),
    Query(relation="born_in", tail="london"),
    Query(relation="citizen_of", tail="united_kingdom"),
]


@pytest.fixture(scope="session")
def demo_models(tmp_path_factory: pytest.TempPathFactory, datasets_dir: Path) -> list[Path]:
    """Two different real models of the demo graph (trained once for the whole session)."""
    return two_demo_models(tmp_path_factory, datasets_dir, "demo", 30, [32, 48])


@pytest.fixture
def served(demo_models: list[Path], transport: str) -> Iterator[ServerThread]:
    settings = get_settings()
    registry_with(settings, demo_models)
    service = DataPlane(settings, graph_backend="falkordb (embedded)")
    service.versions.activate("v0001")
    server = ServerThread(service, transport)
    yield server
    server.stop()


def stubs(address: str) -> tuple[object, object, grpc.Channel]:
    channel = grpc.insecure_channel(address)
    return (
        knowledge_pb2_grpc.KnowledgeServiceStub(channel),
        admin_pb2_grpc.AdminServiceStub(channel),
        channel,
    )


def request_of(queries: list[Query], k: int = 5, filter_known: bool = False) -> object:
    return knowledge_pb2.PredictLinksRequest(
        queries=[
            knowledge_pb2.LinkQuery(head=q.head or "", relation=q.relation, tail=q.tail or "")
            for q in queries
        ],
        k=k,
        filter_known=filter_known,
    )


def offline(path: Path, queries: list[Query], k: int, filter_known: bool) -> list[list[tuple]]:
    predictor = LinkPredictor(load_artifact(path))
    return [
        [(p.entity, p.known) for p in row]
        for row in predictor.predict(queries, k=k, filter_known=filter_known)
    ]


@pytest.mark.parametrize("filter_known", [False, True])
def test_served_predictions_equal_offline_engine(
    served: ServerThread, demo_models: list[Path], filter_known: bool
) -> None:
    knowledge, _, channel = stubs(served.address)
    response = knowledge.PredictLinks(request_of(QUERIES, k=7, filter_known=filter_known))
    assert response.model_version == "v0001"
    predictor = LinkPredictor(load_artifact(demo_models[0]))
    expected = predictor.predict(QUERIES, k=7, filter_known=filter_known)
    assert len(response.results) == len(QUERIES)
    for got, want in zip(response.results, expected, strict=True):
        assert [c.entity_id for c in got.candidates] == [p.entity for p in want]
        assert [c.known for c in got.candidates] == [p.known for p in want]
        assert [c.rank for c in got.candidates] == list(range(1, len(want) + 1))
        for c, p in zip(got.candidates, want, strict=True):
            assert c.score == pytest.approx(p.score, rel=1e-5, abs=1e-5)
    if filter_known:
        assert not any(c.known for r in response.results for c in r.candidates)
    channel.close()


def test_score_entity_and_search(served: ServerThread, demo_models: list[Path]) -> None:
    knowledge, _, channel = stubs(served.address)
    triples = [("alan_turing", "born_in", "london"), ("Albert Einstein", "born_in", "ulm")]
    response = knowledge.ScoreTriples(
        knowledge_pb2.ScoreTriplesRequest(
            triples=[knowledge_pb2.Triple(head=h, relation=r, tail=t) for h, r, t in triples]
        )
    )
    expected = LinkPredictor(load_artifact(demo_models[0])).score(triples)
    assert list(response.scores) == pytest.approx(expected, rel=1e-5)

    entity = knowledge.GetEntity(knowledge_pb2.GetEntityRequest(entity="Alan Turing"))
    assert entity.id == "alan_turing" and entity.name == "Alan Turing"
    assert "mathematician" in entity.description
    assert entity.degree == len(entity.facts) > 0
    assert all("alan_turing" in (f.head, f.tail) for f in entity.facts)

    found = knowledge.SearchEntities(knowledge_pb2.SearchEntitiesRequest(prefix="alan t"))
    assert [e.id for e in found.entities] == ["alan_turing"]
    many = knowledge.SearchEntities(knowledge_pb2.SearchEntitiesRequest(prefix="a", limit=3))
    assert len(many.entities) == 3
    assert all(e.name.lower().startswith("a") or e.id.startswith("a") for e in many.entities)
    channel.close()


def test_concurrent_clients_during_activation_are_answered_by_one_version(
    served: ServerThread, demo_models: list[Path]
) -> None:
    expected = {
        version: offline(path, QUERIES, k=5, filter_known=False)
        for version, path in (("v0001", demo_models[0]), ("v0002", demo_models[1]))
    }
    assert expected["v0001"] != expected["v0002"]  # otherwise the test proves nothing
    _, admin, admin_channel = stubs(served.address)
    errors: list[BaseException] = []
    seen: dict[str, int] = {"v0001": 0, "v0002": 0}
    stop = threading.Event()

    def client() -> None:
        knowledge, _, channel = stubs(served.address)
        try:
            while not stop.is_set():
                response = knowledge.PredictLinks(request_of(QUERIES, k=5), timeout=HANG_GUARD_S)
                got = [[(c.entity_id, c.known) for c in r.candidates] for r in response.results]
                assert got == expected[response.model_version], response.model_version
                seen[response.model_version] += 1
        except BaseException as exc:
            errors.append(exc)
        finally:
            channel.close()

    threads = [threading.Thread(target=client) for _ in range(12)]
    for t in threads:
        t.start()

    def answered_by(version: str, calls: int = 3) -> None:
        """Until the clients got ``calls`` more answers from ``version`` (or one failed)."""
        before = seen[version]
        wait_until(lambda: seen[version] >= before + calls or bool(errors), f"{version} answers")

    active = "v0001"
    for version in ["v0002", "v0001", "v0002", "v0001", "v0002"]:
        answered_by(active)
        info = admin.ActivateModel(admin_pb2.ActivateModelRequest(version=version))
        assert info.version == version and info.active
        active = version
    answered_by(active)
    stop.set()
    for t in threads:
        t.join(timeout=HANG_GUARD_S)
    admin_channel.close()
    assert not errors, errors[:3]
    assert seen["v0001"] > 0 and seen["v0002"] > 0


def _code(call: object) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        call()  # type: ignore[operator]
    return info.value.code(), info.value.details()


def test_error_codes(served: ServerThread) -> None:
    knowledge, admin, channel = stubs(served.address)
    q = knowledge_pb2.LinkQuery

    def predict(*queries: object, k: int = 5) -> object:
        return lambda: knowledge.PredictLinks(
            knowledge_pb2.PredictLinksRequest(queries=queries, k=k)
        )

    code, message = _code(predict(q(head="alan_turing", relation="born_in"), k=5000))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "k must be between 1 and 1000" in message
    code, message = _code(predict(q(head="alan_turing", relation="born_in", tail="london")))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "exactly one of head and tail" in message
    code, message = _code(predict(q(relation="born_in")))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    code, message = _code(predict())
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "at least one query" in message
    code, message = _code(predict(q(head="Alan Turin", relation="born_in")))
    assert code == grpc.StatusCode.NOT_FOUND and "'Alan Turing'" in message
    code, message = _code(predict(q(head="alan_turing", relation="bron_in")))
    assert code == grpc.StatusCode.NOT_FOUND and "born_in" in message
    code, message = _code(
        lambda: admin.ActivateModel(admin_pb2.ActivateModelRequest(version="v0009"))
    )
    assert code == grpc.StatusCode.NOT_FOUND and "v0009" in message
    code, message = _code(lambda: admin.GetJob(admin_pb2.GetJobRequest(job_id="nope")))
    assert code == grpc.StatusCode.NOT_FOUND
    code, message = _code(
        lambda: admin.StartTraining(
            admin_pb2.StartTrainingRequest(
                settings=admin_pb2.TrainingSettings(model="transX"), dataset="demo"
            )
        )
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "transX" in message
    assert "Traceback" not in message and "\n" not in message
    channel.close()


def test_queue_full_and_deadline(demo_models: list[Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """A scoring pass held up on purpose (the scoring itself is real) fills the queue."""
    monkeypatch.setenv("KGWEAVE_QUEUE_MAX", "2")
    served = HeldServer(demo_models[0], monkeypatch)
    service, gate, knowledge = served.plane, served.held.gate, served.knowledge
    request = request_of(QUERIES[:1])
    try:
        # one request held in the scoring pass, two waiting: the queue (2) is full
        pending = [knowledge.PredictLinks.future(request, timeout=HANG_GUARD_S)]
        assert served.held.scoring.wait(timeout=HANG_GUARD_S)  # the worker is in the held pass
        pending += [knowledge.PredictLinks.future(request, timeout=HANG_GUARD_S) for _ in range(2)]
        wait_until(lambda: service.batcher.depth >= 2, "two requests queued", poll_s=0.01)
        code, message = _code(lambda: knowledge.PredictLinks(request, timeout=HANG_GUARD_S))
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "queue is full" in message
        code, _ = _code(lambda: knowledge.PredictLinks(request, timeout=0.2))
        assert code in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED)
        gate.set()
        assert all(len(p.result().results) == 1 for p in pending)
        # with room again, a short deadline on a held scoring pass is DEADLINE_EXCEEDED
        gate.clear()
        code, _ = _code(lambda: knowledge.PredictLinks(request, timeout=0.3))
        assert code == grpc.StatusCode.DEADLINE_EXCEEDED
        gate.set()
    finally:
        served.close()


def test_no_model_is_failed_precondition_and_not_serving(transport: str) -> None:
    service = DataPlane(get_settings())
    server = ServerThread(service, transport)
    knowledge, admin, channel = stubs(server.address)
    try:
        code, message = _code(lambda: knowledge.PredictLinks(request_of(QUERIES[:1])))
        assert code == grpc.StatusCode.FAILED_PRECONDITION and "no model" in message
        health = health_pb2_grpc.HealthStub(channel)
        reply = health.Check(health_pb2.HealthCheckRequest(service=""))
        assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING
        status = admin.Status(admin_pb2.StatusRequest())
        assert not status.ready and not status.HasField("active_model")
    finally:
        channel.close()
        server.stop()


def test_health_reflection_status_and_metrics(served: ServerThread) -> None:
    knowledge, admin, channel = stubs(served.address)
    health = health_pb2_grpc.HealthStub(channel)
    for name in ("", "kgweave.v1.KnowledgeService", "kgweave.v1.AdminService"):
        reply = health.Check(health_pb2.HealthCheckRequest(service=name))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    answers = reflection.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")])
    )
    names = {s.name for a in answers for s in a.list_services_response.service}
    assert {"kgweave.v1.KnowledgeService", "kgweave.v1.AdminService"} <= names
    assert "grpc.health.v1.Health" in names
    assert {"grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"} <= (
        names
    )

    status = admin.Status(admin_pb2.StatusRequest())
    assert status.ready and status.active_model.version == "v0001"
    assert status.frontend == served.running.transport
    assert status.device == "cpu" and status.process_memory_bytes > 0
    assert status.graph_backend == "falkordb (embedded)"
    models = admin.ListModels(admin_pb2.ListModelsRequest())
    assert [m.version for m in models.models] == ["v0002", "v0001"]
    assert models.active_version == "v0001"
    assert models.models[1].valid_metrics["mrr"] > 0

    knowledge.PredictLinks(request_of(QUERIES))
    httpd = start_http(served.service, "127.0.0.1", 0)
    port = httpd.port
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
        assert 'kgweave_request_seconds_count{code="OK",method="PredictLinks"}' in text
        assert 'kgweave_active_model{version="v0001"} 1.0' in text
        assert "kgweave_batch_queries_bucket" in text
        health_body = urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz").read()
        assert json.loads(health_body) == {"ready": True}
    finally:
        httpd.stop()
    channel.close()


def test_verbalize(served: ServerThread) -> None:
    knowledge, _, channel = stubs(served.address)
    reply = knowledge.Verbalize(
        knowledge_pb2.VerbalizeRequest(
            triples=[
                knowledge_pb2.Triple(head="Alan Turing", relation="born_in", tail="london"),
                knowledge_pb2.Triple(head="paris", relation="located_in", tail="france"),
            ]
        )
    )
    assert list(reply.sentences) == [
        "Alan Turing was born in London.",
        "Paris is located in France.",
    ]
    assert reply.text == "Alan Turing was born in London. Paris is located in France."
    paragraph = knowledge.Verbalize(
        knowledge_pb2.VerbalizeRequest(entity="alan_turing", max_chars=200)
    )
    assert paragraph.text.startswith("Alan Turing: English mathematician")
    assert len(paragraph.text) <= 200 and paragraph.text.endswith(".")
    assert paragraph.model_version == "v0001"
    code, message = _code(lambda: knowledge.Verbalize(knowledge_pb2.VerbalizeRequest()))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "entity or triples" in message
    code, message = _code(
        lambda: knowledge.Verbalize(knowledge_pb2.VerbalizeRequest(entity="Alan Turnig"))
    )
    assert code == grpc.StatusCode.NOT_FOUND and "Alan Turing" in message
    channel.close()


def test_reflection_v1_lists_and_describes_services(served: ServerThread) -> None:
    """Modern tools (grpcurl >= 1.9) ask grpc.reflection.v1 first; its messages are v1alpha's."""
    channel = grpc.insecure_channel(served.address)
    call = channel.stream_stream(
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    asked = [
        reflection_pb2.ServerReflectionRequest(list_services=""),
        reflection_pb2.ServerReflectionRequest(
            file_containing_symbol="kgweave.v1.KnowledgeService"
        ),
        reflection_pb2.ServerReflectionRequest(
            file_containing_symbol="grpc.reflection.v1.ServerReflection"
        ),
    ]
    listed, knowledge, itself = list(call(iter(asked), timeout=HANG_GUARD_S))
    names = {s.name for s in listed.list_services_response.service}
    assert {"kgweave.v1.KnowledgeService", "grpc.reflection.v1.ServerReflection"} <= names
    for answer, package in ((knowledge, "kgweave.v1"), (itself, "grpc.reflection.v1")):
        files = answer.file_descriptor_response.file_descriptor_proto
        described = [descriptor_pb2.FileDescriptorProto.FromString(f) for f in files]
        assert any(f.package == package and f.service for f in described), answer
    channel.close()


def test_server_warm_up_loads_the_text_encoder(demo_models: list[Path]) -> None:
    """`kgweave serve` warms semantic search before it reports ready: the encoder is loaded
    and the active version's text vectors are encoded (and cached) before any request."""
    from kgweave.bootstrap import warm_semantic_search

    settings = get_settings()
    registry_with(settings, demo_models)
    service = DataPlane(settings)
    try:
        service.versions.activate("v0001")
        cache = settings.data_dir / "cache" / "text-vectors"
        assert service.queries._encoder is None and not cache.exists()
        assert warm_semantic_search(service)
        assert service.queries._encoder is not None and len(list(cache.glob("*.safetensors"))) == 1
    finally:
        service.close()


def test_semantic_search_by_free_text(served: ServerThread) -> None:
    """Free text finds entities by meaning, with the offline MiniLM encoder."""
    knowledge, _, channel = stubs(served.address)
    reply = knowledge.SearchEntities(
        knowledge_pb2.SearchEntitiesRequest(
            text="the mathematician who founded theoretical computer science", limit=3
        )
    )
    assert reply.entities[0].id == "alan_turing"
    sims = [e.similarity for e in reply.entities]
    assert sims == sorted(sims, reverse=True) and 0 < sims[0] <= 1.0001
    city = knowledge.SearchEntities(
        knowledge_pb2.SearchEntitiesRequest(text="capital city of France", limit=1)
    )
    assert city.entities[0].id == "paris"
    code, message = _code(
        lambda: knowledge.SearchEntities(
            knowledge_pb2.SearchEntitiesRequest(prefix="al", text="alan")
        )
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "not both" in message
    channel.close()


def test_change_events_posted_over_http(served: ServerThread) -> None:
    """POST /v1/changes (what the APOC trigger calls) lands in the durable event log."""
    service = served.service
    httpd = start_http(service, "127.0.0.1", 0, service.changes.receive)
    url = f"http://127.0.0.1:{httpd.port}/v1/changes"

    def post(body: bytes) -> tuple[int, dict[str, object]]:
        request = urllib.request.Request(url, data=body, method="POST")
        request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request) as reply:
                return reply.status, json.loads(reply.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    try:
        before = service.changes.event_log.end_offset
        body = {
            "source": "neo4j-apoc",
            "events": [
                {"kind": "triple_added", "head": "a", "relation": "knows", "tail": "b"},
                {"kind": "entity_upserted", "entity": "c", "properties": {"name": "C"}},
            ],
        }
        status, reply = post(json.dumps(body).encode())
        assert status == 202 and reply == {"accepted": 2}
        events = [e for _, e in service.changes.event_log.read(before)]
        assert [e.kind.value for e in events] == ["triple_added", "entity_upserted"]
        assert {e.source for e in events} == {"neo4j-apoc"}
        status, reply = post(b'{"source": "x", "events": [{"kind": "triple_added"}]}')
        assert status == 400 and "events[0]" in str(reply["message"])
        assert service.changes.event_log.end_offset == before + 2  # refused whole, nothing appended
    finally:
        httpd.stop()


def test_batcher_answers_asyncio_and_thread_callers_alike(demo_models: list[Path]) -> None:
    """Asyncio callers are answered in their loop (one wake-up per batch), thread callers
    directly; a caller that gave up is skipped; every answer equals the offline engine's."""
    import asyncio

    from kgweave.serving.batcher import MicroBatcher, PredictJob
    from kgweave.serving.served import ServedModel

    served = ServedModel.load("v0001", demo_models[0], "cpu")
    expected = offline(demo_models[0], QUERIES, 3, False)
    batcher = MicroBatcher(max_batch=64, max_wait_s=0.005)
    try:

        async def many() -> list[object]:
            loop = asyncio.get_running_loop()
            jobs = []
            for q in QUERIES * 4:
                job = PredictJob(served, served.resolve_queries([q]), 3, False)
                job.future = loop.create_future()
                jobs.append(job)
            thread_job = PredictJob(served, served.resolve_queries(QUERIES), 3, False)
            futures = [batcher.submit(job) for job in jobs]
            thread_future = batcher.submit(thread_job)
            futures[0].cancel()  # this caller gave up
            answers = await asyncio.gather(*futures[1:])
            return [*answers, await asyncio.wrap_future(thread_future)]  # type: ignore[arg-type]

        answers = asyncio.run(asyncio.wait_for(many(), timeout=HANG_GUARD_S))
    finally:
        batcher.close()
    rows = [served.predictor.predictions(answer) for answer in answers]  # type: ignore[arg-type]
    got = [[(p.entity, p.known) for p in row] for answer in rows[:-1] for row in answer]
    assert got == (expected * 4)[1:]
    assert [[(p.entity, p.known) for p in row] for row in rows[-1]] == expected
