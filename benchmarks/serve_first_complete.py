"""Time from `kgweave serve` start to the first `Complete` answer, with a joint model whose LM
is the default pretrained one (SmolLM2 + LoRA adapters) and the LM already fetched.

    python benchmarks/serve_first_complete.py DATA_DIR [--head "Alan Turing" --relation born_in]

DATA_DIR must hold the registry (``models/v0001``: a model from ``kgweave train --joint``) and
``lm/smollm2-135m-instruct`` (``kgweave lm fetch``). The server starts as a user would start it
(embedded FalkorDB included) on free ports; the script sends ``Complete`` as soon as the port
answers, retrying while the server is not ready, and prints the seconds from the start to the
first answer, with the server's own log line for the LM's load and warm-up.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--head", default="Alan Turing")
    parser.add_argument("--relation", default="born_in")
    parser.add_argument("--limit-s", type=float, default=600.0, help="give up after this long")
    args = parser.parse_args()
    from kgweave.v1 import knowledge_pb2, knowledge_pb2_grpc

    port, http_port = _free_port(), _free_port()
    env = dict(os.environ, KGWEAVE_DATA_DIR=str(args.data_dir), KGWEAVE_OFFLINE="1")
    log = args.data_dir / "serve-first-complete.log"
    started = time.perf_counter()
    with log.open("w") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "kgweave.cli.main", "serve", "--port", str(port),
             "--http-port", str(http_port), "--no-progress"],
            env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    stub = knowledge_pb2_grpc.KnowledgeServiceStub(channel)
    request = knowledge_pb2.CompleteRequest(
        query=knowledge_pb2.LinkQuery(relation=args.relation, head=args.head), k=3
    )
    answer = None
    try:
        while answer is None and time.perf_counter() - started < args.limit_s:
            if server.poll() is not None:
                print(f"the server exited with {server.returncode}; see {log}")
                return 1
            try:
                answer = stub.Complete(request, timeout=args.limit_s, wait_for_ready=True)
            except grpc.RpcError as exc:
                if exc.code() not in (
                    grpc.StatusCode.UNAVAILABLE,
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                ):
                    print(f"Complete failed: {exc.code().name}: {exc.details()}")
                    return 1
                time.sleep(0.2)
        elapsed = time.perf_counter() - started
    finally:
        channel.close()
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=120)
    if answer is None:
        print(f"no answer within {args.limit_s:.0f} s; see {log}")
        return 1
    for line in log.read_text().splitlines():
        if "language model" in line or "model v" in line:
            print("server:", line.strip())
    print(f"first Complete answered {elapsed:.1f} s after `kgweave serve` started")
    for c in answer.candidates:
        print(f"  {c.entity_id}: combined {c.combined_score:.3f}  {c.evidence}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
