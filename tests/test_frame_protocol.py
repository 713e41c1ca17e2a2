"""The frame protocol between kgweave-frontend and the engine has one definition
(frontend/frame_protocol.toml): the spec, the C++ header and the Python constants generated
from it are current and agree, and the real binary speaks the version the engine expects."""

from __future__ import annotations

import importlib.util
import re
import socket
import subprocess
import sys
from pathlib import Path
from types import ModuleType

from kgweave.api import frame_protocol as fp
from kgweave.api.bridge import hello, read_hello
from serving_support import frontend_binary

REPO = Path(__file__).resolve().parent.parent


def _generator() -> ModuleType:
    name = "gen_frame_protocol"
    spec = importlib.util.spec_from_file_location(name, REPO / "frontend" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # (dataclasses look their module up)
    spec.loader.exec_module(module)
    return module


def test_generated_files_are_current() -> None:
    for path, text in _generator().outputs().items():
        assert path.read_text() == text, (
            f"{path.relative_to(REPO)} is stale: run python frontend/gen_frame_protocol.py"
        )


def test_both_sides_define_the_same_constants() -> None:
    """Every constant of frame_protocol.h has its Python twin with the same value."""
    header = (REPO / "frontend" / "frame_protocol.h").read_text()
    cpp = {name: int(value) for name, value in re.findall(r"\b(k[A-Za-z]+) = (\d+)[;,]", header)}
    python = {
        "kVersion": fp.VERSION,
        "kHeaderSize": fp.HEADER_SIZE,
        "kLengthSize": fp.LENGTH_SIZE,
        "kAfterLengthSize": fp.AFTER_LENGTH_SIZE,
        "kOpen": fp.OPEN,
        "kMessage": fp.MESSAGE,
        "kHalfClose": fp.HALF_CLOSE,
        "kCancel": fp.CANCEL,
        "kStatus": fp.STATUS,
        "kLast": fp.LAST,
        "kUnary": fp.UNARY,
        "kHello": fp.HELLO,
        "kRefused": fp.REFUSED,
        "kOpenPrefixSize": fp.OPEN_PREFIX_SIZE,
        "kStatusPrefixSize": fp.STATUS_PREFIX_SIZE,
        "kUnaryPrefixSize": fp.UNARY_PREFIX_SIZE,
        "kHelloPrefixSize": fp.HELLO_PREFIX_SIZE,
        "kRefusedPrefixSize": fp.REFUSED_PREFIX_SIZE,
    }
    assert cpp == python
    # the sizes are those of the structs the engine packs with (explicit little-endian)
    for struct_, size in [
        (fp.HEADER, fp.HEADER_SIZE),
        (fp.LENGTH, fp.LENGTH_SIZE),
        (fp.OPEN_PREFIX, fp.OPEN_PREFIX_SIZE),
        (fp.STATUS_PREFIX, fp.STATUS_PREFIX_SIZE),
        (fp.UNARY_PREFIX, fp.UNARY_PREFIX_SIZE),
        (fp.HELLO_PREFIX, fp.HELLO_PREFIX_SIZE),
        (fp.REFUSED_PREFIX, fp.REFUSED_PREFIX_SIZE),
    ]:
        assert struct_.size == size and struct_.format.startswith("<")
    assert fp.LENGTH_SIZE + fp.AFTER_LENGTH_SIZE == fp.HEADER_SIZE


def test_the_built_binary_speaks_this_version() -> None:
    binary = frontend_binary()
    out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip().endswith(f"(frame protocol {fp.VERSION})")


def test_hello_round_trip_and_what_is_not_a_hello() -> None:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        assert read_hello(ours) is None  # nothing yet: no waiting
        theirs.sendall(hello("kgweave-frontend 9.9") + b"next frame")
        found = read_hello(ours)
        assert found is not None and (found.protocol, found.software) == (
            fp.VERSION,
            "kgweave-frontend 9.9",
        )
        assert ours.recv(100) == b"next frame"  # what follows HELLO stays for the bridge
        # a first frame of another kind (a front end older than the handshake) is left alone
        other = fp.HEADER.pack(fp.AFTER_LENGTH_SIZE + 3, fp.MESSAGE, 1) + b"abc" + b"\0" * 8
        theirs.sendall(other)
        assert read_hello(ours) is None
        assert ours.recv(100) == other
