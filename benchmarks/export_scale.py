"""Export of a million-triple graph: time and peak memory of ``export_snapshot``.

Usage::

    python benchmarks/export_scale.py [--triples 1000000] [--entities 100000] [--relations 50]

Starts a fresh embedded FalkorDB in a temporary folder, writes a synthetic graph (seeded
random triples, identifier relation names), then runs the export in a fresh child process and
reports its wall time and peak resident memory (``ru_maxrss``) next to a child that only
imports kgweave and connects (the baseline). Bounded memory means the export's extra peak is
the result itself (M x 3 int64 ids, plus the id maps) plus one page, not a copy of the graph as
Python objects.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
from pathlib import Path
from kgweave.graph.falkordb_store import FalkorDBStore
from kgweave.graph.sync import export_snapshot
host, port, ids, mode = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3]), sys.argv[4]
store = FalkorDBStore(host, port, graph="scale")
started = time.perf_counter()
rows = 0
if mode == "export":
    snap = export_snapshot(store, ids, page_size=50_000)
    rows = len(snap.triples)
else:
    store.counts()
print(json.dumps({"seconds": time.perf_counter() - started, "triples": rows,
                  "max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def child(host: str, port: int, ids: Path, mode: str) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, host, str(port), str(ids), mode],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--triples", type=int, default=1_000_000)
    parser.add_argument("--entities", type=int, default=100_000)
    parser.add_argument("--relations", type=int, default=50)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    from tqdm.auto import tqdm

    from kgweave.graph.embedded import EmbeddedFalkorDB
    from kgweave.graph.falkordb_store import FalkorDBStore
    from kgweave.graph.store import EntityRow

    rng = random.Random(0)
    with tempfile.TemporaryDirectory() as tmp:
        server = EmbeddedFalkorDB(Path(tmp) / "graph")
        info = server.start()
        try:
            store = FalkorDBStore(
                info.host, info.port, graph="scale", batch_size=5000, password=info.password()
            )
            store.ensure_schema()
            started = time.perf_counter()
            for start in range(0, args.entities, 50_000):
                store.upsert_entities(
                    EntityRow(f"e{i}") for i in range(start, min(start + 50_000, args.entities))
                )
            seen: set[tuple[int, int, int]] = set()
            with tqdm(total=args.triples, unit="triples", desc="write") as bar:
                while len(seen) < args.triples:
                    batch = []
                    while len(batch) < 50_000 and len(seen) < args.triples:
                        t = (
                            rng.randrange(args.entities),
                            rng.randrange(args.relations),
                            rng.randrange(args.entities),
                        )
                        if t not in seen:
                            seen.add(t)
                            batch.append((f"e{t[0]}", f"r{t[1]}", f"e{t[2]}"))
                    store.add_triples(batch)
                    bar.update(len(batch))
            write_seconds = time.perf_counter() - started
            del seen
            baseline = child(info.host, info.port, Path(tmp) / "ids.json", "connect")
            export = child(info.host, info.port, Path(tmp) / "ids.json", "export")
        finally:
            server.stop()
    report = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.processor() or platform.machine()}, 2 cores",
        "triples": args.triples,
        "entities": args.entities,
        "relations": args.relations,
        "write_seconds": round(write_seconds, 1),
        "export_seconds": round(export["seconds"], 1),
        "exported_triples": export["triples"],
        "baseline_max_rss_mib": round(baseline["max_rss_mib"]),
        "export_max_rss_mib": round(export["max_rss_mib"]),
        "export_extra_mib": round(export["max_rss_mib"] - baseline["max_rss_mib"]),
        "result_tensor_mib": round(args.triples * 3 * 8 / 2**20),
    }
    print(json.dumps(report, indent=2))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
