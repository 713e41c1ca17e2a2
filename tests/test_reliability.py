"""Reliability regressions (issue 16): overload is RESOURCE_EXHAUSTED and counted on both
front ends, ``KGWEAVE_QUEUE_MAX`` counts queries, WatchJob streams hold no thread, a job's
dataset is confined to the datasets folder and its messages name no server path.

Real servers on free loopback ports, real models, real training jobs. Nothing here waits a
fixed time: each step waits for a condition, under a generous hang guard.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from kgweave.api import frontend
from kgweave.data.sources import confine_dataset
from kgweave.dataplane import DataPlane
from kgweave.errors import InvalidArgumentError, NotFoundError
from kgweave.serving.jobs import public_message
from kgweave.settings import Settings, get_settings
from kgweave.v1 import admin_pb2, admin_pb2_grpc, knowledge_pb2, knowledge_pb2_grpc
from process_support import HANG_GUARD_S
from serving_support import HeldScoring, HeldServer, ServerThread, serving_plane

pytest_plugins = ["reliability_support"]  # fixtures: demo_model, transport

#: a unary call that takes milliseconds when served; a thread pool starved by streams made
#: Status take 14-25 s (issue 16) and 80 s with 500 streams here
UNARY_GUARD_S = 30.0


def _until(condition: Callable[[], bool], timeout: float = HANG_GUARD_S) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached (hang guard)"
        time.sleep(0.01)


def _links(n: int) -> knowledge_pb2.PredictLinksRequest:
    query = knowledge_pb2.LinkQuery(head="alan_turing", relation="born_in")
    return knowledge_pb2.PredictLinksRequest(queries=[query] * n, k=3)


def _metric(plane: DataPlane, method: str, code: str) -> float:
    value = plane.metrics.registry.get_sample_value(
        "kgweave_request_seconds_count", {"method": method, "code": code}
    )
    return value or 0.0


def test_overload_is_resource_exhausted_and_counted_never_cancelled(
    demo_model: Path, transport: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """3,000 concurrent calls (a fifth of them health checks) against a held scoring pass
    and KGWEAVE_QUEUE_MAX=50: every call ends OK or RESOURCE_EXHAUSTED, none CANCELLED, and
    every refusal is in the metrics, on both front ends. The Python front end refuses no
    health check; the native one (its scoring pass holds the engine's thread) holds at most
    CALLS_MAX calls, here 1,000, and refuses beyond them whatever the method."""
    monkeypatch.setenv("KGWEAVE_QUEUE_MAX", "50")
    monkeypatch.setattr(frontend, "CALLS_MAX", 1000)
    plane = serving_plane(demo_model)
    held = HeldScoring(plane, monkeypatch)
    server = ServerThread(plane, transport)
    total = 3000
    codes: collections.Counter[tuple[str, str]] = collections.Counter()
    done = [0]

    async def main() -> None:
        async with grpc.aio.insecure_channel(server.address) as channel:
            knowledge = knowledge_pb2_grpc.KnowledgeServiceStub(channel)
            health = health_pb2_grpc.HealthStub(channel)

            async def one(i: int) -> None:
                kind = "health" if i % 5 == 0 else "predict"
                try:
                    if kind == "health":
                        await health.Check(health_pb2.HealthCheckRequest(), timeout=HANG_GUARD_S)
                    else:
                        await knowledge.PredictLinks(_links(1), timeout=HANG_GUARD_S)
                    codes[(kind, "OK")] += 1
                except grpc.aio.AioRpcError as exc:
                    codes[(kind, exc.code().name)] += 1
                done[0] += 1

            tasks = [asyncio.create_task(one(i)) for i in range(total)]

            def all_arrived() -> bool:
                """Every call is answered or held inside the server (nothing still on its
                way in: only then may the held pass go)."""
                if transport == "native":  # the front end holds at most CALLS_MAX calls
                    return done[0] == total - 1000
                return done[0] == total - plane.batcher.depth - held.held_rows

            deadline = time.monotonic() + HANG_GUARD_S
            while not (held.scoring.is_set() and all_arrived()):
                assert time.monotonic() < deadline, f"hang guard: {done[0]} answered, {codes}"
                await asyncio.sleep(0.01)
            held.gate.set()
            await asyncio.gather(*tasks)
            # (the native front end's own refusals reach the engine in REFUSED frames)
            while not all(
                _metric(plane, method, "RESOURCE_EXHAUSTED") == codes[(kind, "RESOURCE_EXHAUSTED")]
                for method, kind in (("PredictLinks", "predict"), ("Check", "health"))
            ):
                assert time.monotonic() < deadline, f"hang guard: refusals not counted, {codes}"
                await asyncio.sleep(0.01)

    try:
        asyncio.run(main())
    finally:
        held.gate.set()
        server.stop()
    assert {code for _, code in codes} <= {"OK", "RESOURCE_EXHAUSTED"}, codes
    assert sum(codes.values()) == total
    assert codes[("predict", "RESOURCE_EXHAUSTED")] > 0
    assert _metric(plane, "PredictLinks", "OK") == codes[("predict", "OK")]
    if transport == "python":
        assert codes[("health", "RESOURCE_EXHAUSTED")] == 0


def test_queue_max_counts_queries_not_calls(
    demo_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """KGWEAVE_QUEUE_MAX=50: a 40-query call waits, a 20-query call is refused (60 > 50)
    although only one call waits, a 10-query call still fits."""
    monkeypatch.setenv("KGWEAVE_QUEUE_MAX", "50")
    served = HeldServer(demo_model, monkeypatch)
    plane, held, knowledge = served.plane, served.held, served.knowledge
    try:
        first = knowledge.PredictLinks.future(_links(1), timeout=HANG_GUARD_S)
        assert held.scoring.wait(timeout=HANG_GUARD_S)
        forty = knowledge.PredictLinks.future(_links(40), timeout=HANG_GUARD_S)
        _until(lambda: plane.batcher.depth == 40)
        with pytest.raises(grpc.RpcError) as info:
            knowledge.PredictLinks(_links(20), timeout=HANG_GUARD_S)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "40 of 50 queries waiting" in (info.value.details() or "")
        ten = knowledge.PredictLinks.future(_links(10), timeout=HANG_GUARD_S)
        _until(lambda: plane.batcher.depth == 50)
        held.gate.set()
        assert len(first.result().results) == 1
        assert len(forty.result().results) == 40
        assert len(ten.result().results) == 10
        assert plane.batcher.depth == 0
    finally:
        served.close()


def test_500_watch_streams_leave_unary_calls_answered(
    demo_model: Path, transport: str, datasets_dir: Path
) -> None:
    """500 open WatchJob streams on a running job hold no worker thread: Status, ScoreTriples
    (both run in the shared thread pool) and GetJob still answer."""
    plane = serving_plane(demo_model)
    server = ServerThread(plane, transport)
    channel = grpc.insecure_channel(server.address)
    admin = admin_pb2_grpc.AdminServiceStub(channel)
    knowledge = knowledge_pb2_grpc.KnowledgeServiceStub(channel)
    job = admin.StartTraining(
        admin_pb2.StartTrainingRequest(
            settings=admin_pb2.TrainingSettings(epochs=100_000, dim=8),
            dataset="fb15k-237",
            activation=admin_pb2.ACTIVATION_POLICY_NEVER,
        ),
        timeout=HANG_GUARD_S,
    )
    first_seen = threading.Semaphore(0)
    streams: list[Any] = []

    def watch(stream: Any) -> None:
        with contextlib.suppress(grpc.RpcError):  # the test cancels every stream at its end
            for n, _ in enumerate(stream):
                if n == 0:
                    first_seen.release()

    try:
        request = admin_pb2.GetJobRequest(job_id=job.job_id)
        readers = []
        for _ in range(500):
            stream = admin.WatchJob(request, timeout=HANG_GUARD_S * 3)
            streams.append(stream)
            reader = threading.Thread(target=watch, args=(stream,), daemon=True)
            reader.start()
            readers.append(reader)
        for _ in range(500):  # every stream is open and has had its first message
            assert first_seen.acquire(timeout=HANG_GUARD_S)
        status = admin.Status(admin_pb2.StatusRequest(), timeout=UNARY_GUARD_S)
        assert status.active_model.version == "v0001"
        triple = knowledge_pb2.Triple(head="alan_turing", relation="born_in", tail="london")
        scored = knowledge.ScoreTriples(
            knowledge_pb2.ScoreTriplesRequest(triples=[triple]), timeout=UNARY_GUARD_S
        )
        assert len(scored.scores) == 1
        assert admin.GetJob(request, timeout=UNARY_GUARD_S).state in (
            admin_pb2.JOB_STATE_QUEUED,
            admin_pb2.JOB_STATE_RUNNING,
        )
    finally:
        request = admin_pb2.GetJobRequest(job_id=job.job_id)
        admin.CancelJob(request, timeout=HANG_GUARD_S)
        for stream in streams:
            stream.cancel()
        _until(lambda: admin.GetJob(request).state == admin_pb2.JOB_STATE_CANCELLED)
        channel.close()
        server.stop()


# ---- a job's dataset and its messages


@pytest.fixture
def own_datasets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A datasets folder of this test's own: a good dataset and one the reader refuses."""
    root = tmp_path / "datasets"
    good = root / "tiny"
    good.mkdir(parents=True)
    rows = "\n".join(f"e{i}\tr{i % 2}\te{(i + 1) % 8}" for i in range(16)) + "\n"
    for split in ("train", "valid", "test"):
        (good / f"{split}.tsv").write_text(rows)
    broken = root / "broken"
    broken.mkdir()
    (broken / "train.tsv").write_text("only-two\tcolumns\n")
    for split in ("valid", "test"):
        (broken / f"{split}.tsv").write_text(rows)
    monkeypatch.setenv("KGWEAVE_DATASETS_DIR", str(root))
    return root


def test_dataset_is_confined_to_the_datasets_folder(own_datasets: Path) -> None:
    settings = get_settings()
    assert confine_dataset("", settings) == ""
    assert confine_dataset("demo", settings) == "demo"
    assert confine_dataset("tiny", settings) == str(own_datasets / "tiny")
    assert confine_dataset("TINY", settings) == str(own_datasets / "tiny")
    assert confine_dataset(str(own_datasets / "tiny"), settings) == str(own_datasets / "tiny")
    assert confine_dataset("./tiny/", settings) == str(own_datasets / "tiny")
    for outside in (
        "/etc",
        "/",
        "..",
        "~",
        "~/x",
        "../datasets/../../etc",
        "tiny/../../..",
        str(own_datasets / ".." / "x"),
        "/proc/self/environ",
    ):
        with pytest.raises(InvalidArgumentError) as info:
            confine_dataset(outside, settings)
        if str(own_datasets) not in outside:  # (only the client's own input is echoed)
            assert str(own_datasets) not in info.value.message
    with pytest.raises(NotFoundError):  # the datasets folder itself holds no dataset
        confine_dataset(".", settings)
    with pytest.raises(NotFoundError) as missing:
        confine_dataset("no-such-dataset", settings)
    assert "/" not in missing.value.message
    with pytest.raises(InvalidArgumentError):
        confine_dataset("tiny\x00", settings)
    with pytest.raises(NotFoundError):
        confine_dataset("x" * 20_000, settings)
    with pytest.raises(InvalidArgumentError):
        confine_dataset("/" + "x" * 20_000, settings)


def test_job_dataset_paths_are_refused_and_messages_name_no_server_path(
    demo_model: Path, own_datasets: Path, transport: str
) -> None:

    plane = serving_plane(demo_model)
    server = ServerThread(plane, transport)
    channel = grpc.insecure_channel(server.address)
    admin = admin_pb2_grpc.AdminServiceStub(channel)

    def start(dataset: str) -> Any:
        return admin.StartTraining(
            admin_pb2.StartTrainingRequest(
                settings=admin_pb2.TrainingSettings(epochs=1, dim=8),
                dataset=dataset,
                activation=admin_pb2.ACTIVATION_POLICY_NEVER,
            ),
            timeout=HANG_GUARD_S,
        )

    try:
        for outside in ("/etc", "../../..", "/proc/self/environ", "~"):
            with pytest.raises(grpc.RpcError) as info:
                start(outside)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "datasets folder" in (info.value.details() or "")
        job = start("broken")  # inside the folder, refused by the reader in the worker
        request = admin_pb2.GetJobRequest(job_id=job.job_id)
        final = list(admin.WatchJob(request, timeout=HANG_GUARD_S * 3))[-1]
        assert final.state == admin_pb2.JOB_STATE_FAILED
        assert final.message
        for secret in (str(own_datasets), str(plane.settings.data_dir), str(Path.home())):
            assert secret not in final.message, final.message
        assert "Traceback" not in final.message
    finally:
        channel.close()
        server.stop()


def test_public_message_hides_server_paths() -> None:
    settings = Settings(
        data_dir=Path("/srv/kg/data"), datasets_dir=Path("/srv/kg/sets"), device="cpu"
    )
    said = public_message(
        "train.tsv line 1 of /srv/kg/sets/broken/train.tsv: 2 columns; see /var/log/x.log "
        "(cache /srv/kg/data/datasets/umls)",
        settings,
    )
    assert "/srv" not in said and "/var" not in said
    assert "<datasets folder>/broken/train.tsv" in said and "<dataset cache>/umls" in said
    assert "train.tsv line 1" in said
    for kept in ("no dataset 'x' on the server", "unknown entity '/m/027rn' (did you mean ...)"):
        assert public_message(kept, settings) == kept


def test_unknown_job_watch_is_not_found(demo_model: Path) -> None:
    plane = serving_plane(demo_model)
    server = ServerThread(plane, "python")
    channel = grpc.insecure_channel(server.address)
    try:
        admin = admin_pb2_grpc.AdminServiceStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            list(admin.WatchJob(admin_pb2.GetJobRequest(job_id="nope"), timeout=HANG_GUARD_S))
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        channel.close()
        server.stop()
