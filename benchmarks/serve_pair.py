"""Two independent servers side by side: does a second engine process help one machine?

Usage::

    python benchmarks/serve_pair.py --model MODEL_DIR [--clients 32] [--seconds 10]

Starts two servers as ``serve_load.py`` does (each ``kgweave serve``'s engine behind the
native front end, in its own process), loads each with ``kgweave-loadgen`` (C++, ``--clients``
closed-loop clients, one PredictLinks top-10 query per call) at the same time, and compares
their summed queries/s with the in-process batch of 64, measured before and after (the faster
counts). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from serve_load import LOADGEN, free_port, in_process, queries_of, requests_of


def baseline(model: Path, seconds: float) -> float:
    return max(b["qps"] for b in in_process(model, [64], seconds, "auto"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="model artifact folder")
    parser.add_argument("--clients", type=int, default=32, help="per server")
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    from kgweave.allocator import reuse_freed_memory

    reuse_freed_memory()  # the in-process baseline at its best, as in serve_load.py
    before = baseline(args.model, args.seconds)
    queries = queries_of(args.model, 4096)
    with tempfile.TemporaryDirectory() as tmp:
        servers, ports = [], []
        for i in range(2):
            port = free_port()
            server = subprocess.Popen(
                [sys.executable, str(Path(__file__).with_name("serve_load.py")), "--role",
                 "server", "--model", str(args.model), "--port", str(port), "--data-dir",
                 str(Path(tmp) / f"server{i}"), "--frontends", "native"],
                stdout=subprocess.PIPE, text=True,
            )  # fmt: skip
            assert server.stdout is not None
            assert server.stdout.readline().strip() == "READY"
            servers.append(server)
            ports.append(port)
        files = []
        for i in range(2):
            path = Path(tmp) / f"requests{i}.bin"
            with path.open("wb") as file:
                for request in requests_of(queries[i::2], "PredictLinks", 1):
                    data = request.SerializeToString()
                    file.write(len(data).to_bytes(4, "little") + data)
            files.append(path)
        try:
            method = "/kgweave.v1.KnowledgeService/PredictLinks"
            commands = [
                [str(LOADGEN), "--target", f"127.0.0.1:{port}", "--method", method,
                 "--requests", str(file), "--clients", str(args.clients),
                 "--seconds", str(args.seconds)]
                for port, file in zip(ports, files, strict=True)
            ]  # fmt: skip
            loads = [subprocess.Popen(c, stdout=subprocess.PIPE, text=True) for c in commands]
            results: list[dict[str, Any]] = [json.loads(p.communicate()[0]) for p in loads]
        finally:
            for server in servers:
                server.terminate()
                server.wait(timeout=60)
    after = baseline(args.model, args.seconds)
    total = sum(r["calls_per_s"] for r in results)
    print(
        json.dumps(
            {
                "per_server_qps": [round(r["calls_per_s"]) for r in results],
                "per_server_p99_ms": [r["p99_ms"] for r in results],
                "total_qps": round(total),
                "in_process_batch_64_before_after": [round(before), round(after)],
                "served_over_in_process": round(total / max(before, after), 3),
            }
        )
    )


if __name__ == "__main__":
    main()
