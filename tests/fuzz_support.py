"""A fuzzer over every kgweave RPC and HTTP endpoint (issue 16), shared by tests/test_fuzz.py
(a fixed seed, a few hundred calls) and benchmarks/reliability.py (longer runs).

gRPC: for each method of KnowledgeService and AdminService (and health Check), requests are
random messages built from the method's descriptor (hostile strings: NULs, 20 KB names,
escapes, Cypher; numbers at their limits, negative, NaN; unknown enum values; long repeated
fields), the bytes of such messages mutated, strings that are not UTF-8 (lone surrogates), and
raw random bytes; all are sent as raw bytes with a generic stub, so the server sees exactly
what a hostile client sends. HTTP: every route, with random and hostile JSON, bodies that are
not JSON, deep nesting, lone surrogate escapes, wrong content types and methods.

A proper answer is a status a client can act on: never INTERNAL, UNKNOWN, DATA_LOSS, never a
dropped connection (UNAVAILABLE), never a hang (DEADLINE_EXCEEDED under the hang guard); over
HTTP never a 5xx, a dropped connection, nor an error body that is not
``{"code": ..., "message": ...}``.

Training jobs are real: StartTraining requests are kept small (dim, epochs, no joint LM) so a
fuzz run cannot start a job that takes the machine, and every job started is cancelled.
"""

from __future__ import annotations

import collections
import http.client
import json
import math
import random
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import descriptor as _descriptor
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2

from kgweave.v1 import admin_pb2, knowledge_pb2

#: codes a well-behaved server may answer a hostile call with
PROPER_CODES = frozenset(
    {
        grpc.StatusCode.OK,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
    }
)
#: HTTP statuses a well-behaved server may answer a hostile request with
PROPER_HTTP = frozenset({200, 400, 401, 403, 404, 405, 408, 409, 412, 413, 415, 422, 429})

HOSTILE_STRINGS = (
    "",
    "alan_turing",
    "Alan Turing",
    "born_in",
    "london",
    "demo",
    "\x00",
    "a\x00b",
    "x" * 20_000,
    "é漢字🙂\u202e",
    "../../../../etc/passwd",
    "/etc",
    "~",
    "' OR 1=1 --",
    "MATCH (n) DETACH DELETE n",
    "}) RETURN 1 //",
    "%s%n%x",
    "\\",
    "\n\r\t",
    " ",
    "umls",
    "v0001",
    "v9999",
    "config.json",
    "model.safetensors",
)
_INT32 = (0, 1, -1, 2, 5, 1000, 1001, 2**31 - 1, -(2**31))
_INT64 = (*_INT32, 2**63 - 1, -(2**63))
_FLOATS = (0.0, -0.0, 1.0, -1.0, 0.5, 1e308, -1e308, 1e-320, math.inf, -math.inf, math.nan)

#: StartTraining numbers kept small: a fuzz run must not start a job that takes the machine
_TRAINING_BOUNDS = {"dim": (1, 8), "epochs": (1, 2), "batch_size": (1, 4096)}


@dataclass(frozen=True)
class Method:
    """One RPC: its full path, request type and shape."""

    path: str
    request: type[Message]
    client_streaming: bool = False
    server_streaming: bool = False


def methods() -> list[Method]:
    """Every RPC of the kgweave services, plus the standard health Check."""
    found = []
    for module in (knowledge_pb2, admin_pb2):
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                found.append(
                    Method(
                        f"/{service.full_name}/{method.name}",
                        _message_class(module, method.input_type),
                        method.client_streaming,
                        method.server_streaming,
                    )
                )
    found.append(Method("/grpc.health.v1.Health/Check", health_pb2.HealthCheckRequest))
    return found


def _message_class(module: Any, descriptor: _descriptor.Descriptor) -> type[Message]:
    cls: type[Message] = getattr(module, descriptor.name)
    return cls


class Fuzzer:
    """Random hostile requests from one seed (the same seed, the same requests)."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    # ---- values
    def string(self) -> str:
        rng = self.rng
        if rng.random() < 0.7:
            return rng.choice(HOSTILE_STRINGS)
        alphabet = "abcxyz_-./ \x00é漢🙂"
        return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))

    def _scalar(self, fd: _descriptor.FieldDescriptor) -> Any:
        rng, t = self.rng, fd.type
        if t == fd.TYPE_STRING:
            return self.string()
        if t == fd.TYPE_ENUM:
            return rng.choice((*[v.number for v in fd.enum_type.values], 7, 999, -1))
        if t in (fd.TYPE_DOUBLE, fd.TYPE_FLOAT):
            value = rng.choice(_FLOATS)
            return value if t == fd.TYPE_DOUBLE or not 3e38 < abs(value) < math.inf else 1.0
        draw: dict[int, Any] = {
            fd.TYPE_BYTES: lambda: rng.randbytes(rng.choice((0, 1, 16, 1000))),
            fd.TYPE_BOOL: lambda: rng.random() < 0.5,
            fd.TYPE_INT64: lambda: rng.choice(_INT64),
            fd.TYPE_SINT64: lambda: rng.choice(_INT64),
            fd.TYPE_SFIXED64: lambda: rng.choice(_INT64),
            fd.TYPE_UINT32: lambda: rng.choice((0, 1, 5, 2**32 - 1)),
            fd.TYPE_FIXED32: lambda: rng.choice((0, 1, 5, 2**32 - 1)),
            fd.TYPE_UINT64: lambda: rng.choice((0, 1, 5, 2**64 - 1)),
            fd.TYPE_FIXED64: lambda: rng.choice((0, 1, 5, 2**64 - 1)),
        }
        return draw.get(t, lambda: rng.choice(_INT32))()

    def fill(self, message: Message, depth: int = 0) -> Message:
        """Set a random selection of ``message``'s fields to hostile values."""
        rng = self.rng
        for fd in message.DESCRIPTOR.fields:
            if rng.random() < 0.35:
                continue
            if fd.type == fd.TYPE_MESSAGE:
                if depth > 3:
                    continue
                if fd.is_repeated:
                    for _ in range(rng.choice((0, 1, 2, 5, 50, 1001))):
                        self.fill(getattr(message, fd.name).add(), depth + 1)
                else:
                    self.fill(getattr(message, fd.name), depth + 1)
            elif fd.is_repeated:
                getattr(message, fd.name).extend(
                    self._scalar(fd) for _ in range(rng.choice((0, 1, 3, 1001)))
                )
            else:
                setattr(message, fd.name, self._scalar(fd))
        return message

    # ---- requests
    def message(self, method: Method) -> Message:
        message = self.fill(method.request())
        if method.request is admin_pb2.StartTrainingRequest:
            settings = message.settings  # type: ignore[attr-defined]
            for name, (low, high) in _TRAINING_BOUNDS.items():
                setattr(settings, name, self.rng.randint(low, high))
            settings.joint = False
            message.activation = admin_pb2.ACTIVATION_POLICY_NEVER  # type: ignore[attr-defined]
            if settings.HasField("time_budget_s"):
                settings.time_budget_s = 1.0
        return message

    def payload(self, method: Method) -> bytes:
        """The bytes of one request of ``method``: a hostile message, mutated bytes, a string
        that is not UTF-8, or random bytes."""
        rng = self.rng
        encoded = self.message(method).SerializeToString()
        draw = rng.random()
        if draw < 0.55 or method.request is admin_pb2.StartTrainingRequest:
            return encoded
        if draw < 0.75:
            return self._mutated(encoded)
        if draw < 0.9:  # field 1, length-delimited, a lone surrogate / bad UTF-8 inside
            bad = rng.choice((b"\xed\xa0\x80", b"\xff\xfe", b"a\xc3", b"\x80" * 3))
            return bytes([0x0A, len(bad)]) + bad + encoded
        return rng.randbytes(rng.choice((1, 2, 7, 64, 300)))

    def _mutated(self, data: bytes) -> bytes:
        rng = self.rng
        out = bytearray(data or b"\x00")
        for _ in range(rng.randint(1, 4)):
            choice = rng.random()
            where = rng.randrange(len(out)) if out else 0
            if choice < 0.4 and out:
                out[where] ^= 1 << rng.randrange(8)
            elif choice < 0.6:
                out[where:where] = rng.randbytes(rng.randint(1, 8))
            elif choice < 0.8 and out:
                del out[where : where + rng.randint(1, 8)]
            else:
                out += struct.pack("<B", rng.choice((0x08, 0x10, 0x1A, 0xFF))) + rng.randbytes(3)
        return bytes(out)

    def http_body(self, route: str) -> tuple[bytes, str]:
        """A hostile body for ``route`` and its content type."""
        rng = self.rng
        draw = rng.random()
        if draw < 0.5:
            value: Any = self._json_value(route)
            return json.dumps(value, allow_nan=True).encode(), "application/json"
        if draw < 0.6:
            depth = rng.choice((100, 1000, 100_000))
            return b"[" * depth + b"]" * depth, "application/json"
        if draw < 0.7:
            return b'{"queries": [{"head": "\\ud800", "relation": "\\udfff"}]}', "application/json"
        if draw < 0.8:
            return rng.randbytes(rng.choice((0, 1, 50, 1000))), "application/json"
        if draw < 0.9:
            return b'{"a": 1}', rng.choice(("text/plain", "", "application/x-www-form-urlencoded"))
        return b'{"k": 1e999, "limit": -1, "queries": null}', "application/json; charset=utf-8"

    def _json_value(self, route: str, depth: int = 0) -> Any:
        rng = self.rng
        names = (
            "queries", "head", "relation", "tail", "k", "filterKnown", "triples", "entity",
            "text", "prefix", "limit", "maxChars", "query", "events", "kind", "source",
            "properties", "time", "maxFacts", "kgeCandidates", "writeToGraph", "minScore",
        )  # fmt: skip
        if depth > 3 or rng.random() < 0.3:
            return rng.choice(
                (
                    self.string(),
                    rng.choice(_INT64),
                    rng.choice((0.5, -1.5, 1e300)),
                    None,
                    True,
                    [],
                    {},
                    "triple_added",
                    "entity_upserted",
                )
            )
        if rng.random() < 0.3:
            return [self._json_value(route, depth + 1) for _ in range(rng.choice((1, 3, 20)))]
        return {
            rng.choice(names): self._json_value(route, depth + 1) for _ in range(rng.randint(0, 6))
        }


HTTP_POSTS = ("/v1/predict", "/v1/score", "/v1/verbalize", "/v1/complete", "/v1/search")
HTTP_GETS = ("/healthz", "/metrics", "/v1/status")


@dataclass
class Tally:
    """What a fuzz run saw: answers by (method or route, code) and the bad ones."""

    codes: collections.Counter[tuple[str, str]] = field(default_factory=collections.Counter)
    bad: list[str] = field(default_factory=list)
    calls: int = 0

    def add(self, where: str, code: str, proper: bool, detail: str = "") -> None:
        self.calls += 1
        self.codes[(where, code)] += 1
        if not proper and len(self.bad) < 20:
            self.bad.append(f"{where}: {code} {detail[:300]}")

    def by_code(self) -> dict[str, int]:
        out: collections.Counter[str] = collections.Counter()
        for (_, code), n in self.codes.items():
            out[code] += n
        return dict(sorted(out.items()))


def _requests(fuzzer: Fuzzer, method: Method) -> Iterator[bytes]:
    """The request stream of one call (client-streaming methods get 1-3 messages)."""
    for _ in range(fuzzer.rng.randint(1, 3) if method.client_streaming else 1):
        yield fuzzer.payload(method)


def fuzz_grpc(
    address: str, calls: int, seed: int, timeout_s: float = 60.0, tally: Tally | None = None
) -> Tally:
    """Send ``calls`` hostile calls, spread over every method, to ``address``."""
    fuzzer = Fuzzer(seed)
    tally = tally or Tally()
    every = methods()
    with grpc.insecure_channel(address) as channel:
        cancel = channel.unary_unary("/kgweave.v1.AdminService/CancelJob")
        for n in range(calls):
            method = every[n % len(every)]
            try:
                if method.client_streaming:
                    answer = channel.stream_unary(method.path)(
                        _requests(fuzzer, method), timeout=timeout_s
                    )
                elif method.server_streaming:
                    stream = channel.unary_stream(method.path)(
                        fuzzer.payload(method), timeout=timeout_s
                    )
                    answer = next(iter(stream), b"")
                    stream.cancel()
                else:
                    answer = channel.unary_unary(method.path)(
                        fuzzer.payload(method), timeout=timeout_s
                    )
            except grpc.RpcError as exc:
                code = exc.code()
                tally.add(method.path, code.name, code in PROPER_CODES, exc.details() or "")
                continue
            tally.add(method.path, "OK", True)
            if method.request is admin_pb2.StartTrainingRequest:  # a job started: stop it
                job = admin_pb2.Job.FromString(answer)
                cancel(admin_pb2.GetJobRequest(job_id=job.job_id).SerializeToString(), timeout=60)
    return tally


def fuzz_http(port: int, calls: int, seed: int, tally: Tally | None = None) -> Tally:
    """Send ``calls`` hostile HTTP requests over every route to ``127.0.0.1:port``."""
    fuzzer = Fuzzer(seed)
    rng = fuzzer.rng
    tally = tally or Tally()
    for n in range(calls):
        kind = n % 4
        headers: dict[str, str] = {}
        body: bytes | None = None
        if kind <= 1:
            route = rng.choice((*HTTP_POSTS, "/v1/changes"))
            method = "POST"
            body, content_type = fuzzer.http_body(route)
            headers["Content-Type"] = content_type
        elif kind == 2:
            quoted = "".join(f"%{b:02X}" for b in fuzzer.string().encode()[:3000])
            route = rng.choice(
                (f"/v1/entities/{quoted}", f"/v1/entities/x?maxFacts={rng.choice(_INT64)}")
            )
            method = "GET"
        else:
            route = rng.choice((*HTTP_GETS, *HTTP_POSTS, "/nope", "/v1/entities/"))
            method = rng.choice(("GET", "POST", "PUT", "DELETE"))
            if method == "POST":
                body, headers["Content-Type"] = b"{}", "application/json"
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        try:
            connection.request(method, route, body=body, headers=headers)
            answer = connection.getresponse()
            status, data = answer.status, answer.read()
        except (OSError, http.client.HTTPException) as exc:
            tally.add(route.split("?")[0][:40], "dropped", False, repr(exc))
            continue
        finally:
            connection.close()
        proper = status in PROPER_HTTP
        if proper and status >= 400:
            try:
                error = json.loads(data)
                proper = isinstance(error, dict) and {"code", "message"} <= set(error)
            except ValueError:
                proper = False
        tally.add(route.split("?")[0][:40], str(status), proper, data[:200].decode("latin-1"))
    return tally
