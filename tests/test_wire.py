"""PredictLinks answers written as wire bytes parse to the messages built field by field."""

from __future__ import annotations

import asyncio
import random
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import grpc
import pytest

from kgweave.api.convert import links_to_pb
from kgweave.api.servicers import KnowledgeServicer
from kgweave.api.wire import LinkAnswers, varint
from kgweave.arguments import MAX_K
from kgweave.dataplane import DataPlane
from kgweave.errors import KGWeaveError
from kgweave.predict import TopK
from kgweave.settings import Settings
from kgweave.v1 import knowledge_pb2
from serving_support import registry_with, train_demo_model


def _message(
    labels: list[str], names: list[str | None], top: TopK, call: tuple[int, int, int], version: str
) -> Any:
    """The answer as the Python gRPC server builds it, field by field."""
    artifact = SimpleNamespace(entities=SimpleNamespace(labels=labels), entity_names=names)
    served: Any = SimpleNamespace(artifact=artifact)
    start, stop, k = call
    return links_to_pb(served, top.rows(start, stop, k), version)


@pytest.mark.parametrize("seed", range(4))
def test_wire_answers_parse_to_the_built_messages(seed: int) -> None:
    rng = random.Random(seed)
    n = 1200
    # ids and names of every size class: short, over 127 bytes (two-byte lengths), non-ASCII,
    # missing or empty names
    labels = [f"/m/{i:x}" + "x" * rng.choice([0, 0, 140]) for i in range(n)]
    names = [rng.choice([None, "", f"Zoë Ünïcode {i}", "long name " * 30]) for i in range(n)]
    answers = LinkAnswers(labels, names)
    for _ in range(40):
        rows, width = rng.randint(1, 30), rng.choice([1, 10, 200, MAX_K])
        top = TopK(
            [
                [rng.choice([rng.gauss(0, 5), 0.0, -1e30, float("-inf")]) for _ in range(width)]
                for _ in range(rows)
            ],
            [[rng.randrange(n) for _ in range(width)] for _ in range(rows)],
            [[rng.random() < 0.3 for _ in range(width)] for _ in range(rows)],
        )
        # rows are fp32 scores in the engine: round them as the message's float field does
        top = TopK([[float(_f32(s)) for s in row] for row in top.scores], top.ids, top.known)
        calls, start = [], 0
        while start < rows:
            stop = min(rows, start + rng.randint(1, 4))
            calls.append((start, stop, rng.randint(1, width)))
            start = stop
        version = rng.choice(["", "v0001", "v0012+3"])
        encoded = answers.encode(top, calls, version)
        assert len(encoded) == len(calls)
        for data, call in zip(encoded, calls, strict=True):
            parsed = knowledge_pb2.PredictLinksResponse.FromString(data)
            assert parsed == _message(labels, names, top, call, version)


def test_wire_answers_of_an_empty_row_and_ranks_past_127() -> None:
    answers = LinkAnswers(["a", "b"], ["A", None])
    filtered = TopK([[float("-inf")] * 2], [[0, 1]], [[False, False]])
    (data,) = answers.encode(filtered, [(0, 1, 2)], "v1")
    parsed = knowledge_pb2.PredictLinksResponse.FromString(data)
    assert len(parsed.results) == 1 and not parsed.results[0].candidates
    many = TopK([[float(-i) for i in range(300)]], [[i % 2 for i in range(300)]], [[True] * 300])
    (data,) = answers.encode(many, [(0, 1, 300)], "v1")
    (result,) = knowledge_pb2.PredictLinksResponse.FromString(data).results
    assert [c.rank for c in result.candidates] == list(range(1, 301))


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, datasets_dir: Path) -> Iterator[DataPlane]:
    root = tmp_path_factory.mktemp("wire")
    settings = Settings(data_dir=root / "data", datasets_dir=datasets_dir, device="cpu")
    registry_with(settings, [train_demo_model(settings, root / "m", epochs=10, dim=16)])
    service = DataPlane(settings)
    service.versions.activate("v0001")
    yield service
    service.close()


def test_a_burst_answers_alike_as_bytes_and_as_messages(service: DataPlane) -> None:
    """The native front end's burst path (bytes) and the Python server's (messages): the same
    answers, errors in place, each call with its own k, filter and deadline."""
    query, request = knowledge_pb2.LinkQuery, knowledge_pb2.PredictLinksRequest
    paris = query(head="paris", relation="located_in")
    requests = [
        request(queries=[query(head="Alan Turing", relation="born_in")], k=3),
        request(queries=[query(head="nobody at all", relation="born_in")]),  # NOT_FOUND
        request(queries=[query(relation="born_in", tail="london"), paris]),  # k 0: 10
        request(
            queries=[query(head="albert_einstein", relation="born_in")], k=1, filter_known=True
        ),
        request(queries=[paris], k=2),  # its deadline has passed
        request(queries=[paris], k=MAX_K + 1),  # INVALID_ARGUMENT
    ]
    deadlines = [None, None, None, None, time.monotonic() - 1.0, None]
    servicer = KnowledgeServicer(service)

    async def both() -> tuple[list[Any], list[Any]]:
        wire = await servicer.predict_links_calls(requests, deadlines)
        return wire, await servicer.predict_links(requests, deadlines)

    wire, messages = asyncio.run(both())
    codes = []
    for data, message in zip(wire, messages, strict=True):
        if isinstance(message, KGWeaveError):
            assert isinstance(data, tuple) and data[1] == message.message
            codes.append(data[0])
        else:
            assert knowledge_pb2.PredictLinksResponse.FromString(data) == message
            codes.append(grpc.StatusCode.OK)
    assert codes == [
        grpc.StatusCode.OK,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.OK,
        grpc.StatusCode.OK,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.INVALID_ARGUMENT,
    ]
    sizes = [
        [len(r.candidates) for r in m.results] for m in messages if not isinstance(m, Exception)
    ]
    assert sizes == [[3], [10, 10], [1]]


def test_varint() -> None:
    assert varint(0) == b"\x00" and varint(127) == b"\x7f"
    assert varint(300) == b"\xac\x02"  # the protobuf guide's example
    assert varint(2**21) == b"\x80\x80\x80\x01"


def _f32(value: float) -> float:
    return float(struct.unpack("<f", struct.pack("<f", value))[0])


def test_a_derived_versions_answers_extend_its_bases() -> None:
    """A change batch's version encodes its new entities only; a renamed entity (or any other
    difference in the base's entities) makes it encode them all again."""
    labels, names = ["a", "b", "c"], ["A", None, "Ç"]
    base = LinkAnswers(labels, names)
    grown = LinkAnswers([*labels, "d"], [*names, "D"], base)
    assert grown.fields[:3] == base.fields and all(
        x is y for x, y in zip(grown.fields, base.fields, strict=False)
    )
    assert grown.fields == LinkAnswers([*labels, "d"], [*names, "D"]).fields
    renamed = LinkAnswers([*labels, "d"], ["A", "Bee", "Ç", "D"], base)
    assert renamed.fields == LinkAnswers([*labels, "d"], ["A", "Bee", "Ç", "D"]).fields
    assert renamed.fields[1] != base.fields[1]
