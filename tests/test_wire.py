"""PredictLinks answers written as wire bytes parse to the messages built field by field."""

from __future__ import annotations

import random
import struct
from types import SimpleNamespace
from typing import Any

import pytest

from kgweave.api.servicers import links_message
from kgweave.api.wire import LinkAnswers, varint
from kgweave.predict import MAX_K, TopK
from kgweave.v1 import knowledge_pb2


def _message(
    labels: list[str], names: list[str | None], top: TopK, call: tuple[int, int, int], version: str
) -> Any:
    """The answer as the Python gRPC server builds it, field by field."""
    artifact = SimpleNamespace(entities=SimpleNamespace(labels=labels), entity_names=names)
    served: Any = SimpleNamespace(artifact=artifact)
    start, stop, k = call
    return links_message(served, top.rows(start, stop, k), version)


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


def test_varint() -> None:
    assert varint(0) == b"\x00" and varint(127) == b"\x7f"
    assert varint(300) == b"\xac\x02"  # the protobuf guide's example
    assert varint(2**21) == b"\x80\x80\x80\x01"


def _f32(value: float) -> float:
    return float(struct.unpack("<f", struct.pack("<f", value))[0])
