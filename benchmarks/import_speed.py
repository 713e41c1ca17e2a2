#!/usr/bin/env python3
"""Import speed into the embedded FalkorDB: triples per second for a whole dataset.

Starts a fresh embedded server in a temporary folder, imports every split of the dataset with
its entity text (``kgweave import`` does the same), checks the counts, and prints one JSON line.

    python benchmarks/import_speed.py --datasets-dir ../shared/datasets --dataset fb15k-237
"""

from __future__ import annotations

import argparse
import json
import pathlib
import tempfile

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
        finally:
            server.stop()
    print(json.dumps(report))


if __name__ == "__main__":
    main()
