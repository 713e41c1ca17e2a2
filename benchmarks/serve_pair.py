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
import contextlib
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from serve_load import LoadRun, in_process, load_native, queries_of, server_process


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
    with contextlib.ExitStack() as servers:
        addresses = [servers.enter_context(server_process(args.model, "native"))[0] for _ in "ab"]
        with ThreadPoolExecutor(2) as pool:  # both load generators at once
            results = list(
                pool.map(
                    lambda i: load_native(
                        LoadRun(addresses[i], queries[i::2], args.clients, args.seconds)
                    ),
                    range(2),
                )
            )
    after = baseline(args.model, args.seconds)
    total = sum(r["qps"] for r in results)
    print(
        json.dumps(
            {
                "per_server_qps": [round(r["qps"]) for r in results],
                "per_server_p99_ms": [r["p99_ms"] for r in results],
                "total_qps": round(total),
                "in_process_batch_64_before_after": [round(before), round(after)],
                "served_over_in_process": round(total / max(before, after), 3),
            }
        )
    )


if __name__ == "__main__":
    main()
