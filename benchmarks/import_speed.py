#!/usr/bin/env python3
"""Import speed into the embedded FalkorDB: triples per second for a whole dataset.

Starts a fresh embedded server in a temporary folder, imports every split of the dataset with
its entity text (``kgweave import`` does the same), checks the counts, then measures two
restarts: after a kill -9 of the server right after the import (its append-only file replayed)
and after a clean stop, each with the counts checked again. Prints one JSON line.

    python benchmarks/import_speed.py --datasets-dir ../shared/datasets --dataset fb15k-237
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import signal
import tempfile
import time

from kgweave.data import load_dataset
from kgweave.graph import EmbeddedFalkorDB
from kgweave.graph.falkordb_store import FalkorDBStore
from kgweave.graph.sync import import_dataset


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets-dir", type=pathlib.Path, required=True)
    p.add_argument("--dataset", default="fb15k-237")
    p.add_argument("--batch-size", type=int, default=5000)
    args = p.parse_args()
    dataset = load_dataset(args.datasets_dir / args.dataset)
    with tempfile.TemporaryDirectory() as folder:
        server = EmbeddedFalkorDB(pathlib.Path(folder))
        info = server.start()
        try:
            store = FalkorDBStore(
                info.host, info.port, batch_size=args.batch_size, password=info.password()
            )
            report = import_dataset(store, dataset, progress=False)
            report["counts"] = store.counts()
            report["batch_size"] = args.batch_size
            os.kill(info.pid, signal.SIGKILL)  # a crash: nothing saved beyond the log
            os.waitpid(info.pid, 0)
            report["restart_after_kill"] = _restart(server, args.batch_size, report["counts"])
            server.stop()
            report["restart_after_stop"] = _restart(server, args.batch_size, report["counts"])
        finally:
            server.stop()
    print(json.dumps(report))


def _restart(
    server: EmbeddedFalkorDB, batch_size: int, counts: dict[str, int]
) -> dict[str, object]:
    began = time.monotonic()
    info = server.start()
    ready = time.monotonic() - began
    store = FalkorDBStore(info.host, info.port, batch_size=batch_size, password=info.password())
    return {"ready_s": round(ready, 2), "counts_equal": store.counts() == counts}


if __name__ == "__main__":
    main()
