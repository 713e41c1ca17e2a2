"""What the snapshot diff costs when the graph changed behind the log: reading the relations
whose counts changed against reading every fact.

Usage::

    python benchmarks/diff_cost.py [--dataset fb15k-237] [--repeats 3] [--out FILE]

Imports the dataset's triples and texts into a fresh embedded FalkorDB (in a temporary folder),
records the diff's baseline, then, ``--repeats`` times each:

- *census*: the graph's census (entities, facts per relation: one aggregate query), what
  every tick of the diff costs;
- *partial*: three facts written behind the log in one relation (a small one and the largest
  one in turn) between entities the graph holds, the census naming that relation
  (``to_export``), and the diff reading its facts (``snapshot_diff(part=...)``; no entity:
  their count did not move): what a tick costs now;
- *full*: three facts written behind the log, and the diff reading every fact (what every
  such tick cost before, and what the periodic full compare costs).

Each diff runs in this process, as the server's diff worker runs it. The events each found
are checked: the three facts written, nothing else.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="fb15k-237")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS / "diff_cost_fb15k237.json")
    args = parser.parse_args()

    import torch

    from kgweave.changes import EventLog
    from kgweave.changes.diff import Part, snapshot_diff, to_export
    from kgweave.data import load_dataset
    from kgweave.graph.embedded import EmbeddedFalkorDB
    from kgweave.graph.falkordb_store import FalkorDBStore
    from kgweave.graph.sync import import_dataset
    from kgweave.settings import get_settings

    dataset = load_dataset(get_settings().datasets_dir / args.dataset)
    entities = dataset.entities.labels
    record: dict[str, Any] = {"dataset": args.dataset}
    with tempfile.TemporaryDirectory() as tmp:
        server = EmbeddedFalkorDB(Path(tmp) / "graph")
        info = server.start()
        try:
            store = FalkorDBStore(info.host, info.port, graph="kgweave", password=info.password())
            store.ensure_schema()
            began = time.perf_counter()
            import_dataset(store, dataset, progress=False)
            record["import_s"] = round(time.perf_counter() - began, 1)
            state = Path(tmp) / "state"
            with EventLog(Path(tmp) / "log") as log:
                began = time.perf_counter()
                snapshot_diff(store, state, log, emit=False)
                record["baseline_s"] = round(time.perf_counter() - began, 2)
                census = store.census()
                record["graph"] = {**census.counts()}
                sizes = Counter(census.facts)
                largest = sizes.most_common(1)[0][0]
                small = min(sizes, key=lambda r: abs(sizes[r] - 1000))
                record["relations_read"] = {"small": [small, sizes[small]],
                                            "largest": [largest, sizes[largest]]}  # fmt: skip
                generator = torch.Generator().manual_seed(0)

                def behind_the_log(relation: str) -> set[tuple[str, str, str]]:
                    picks = torch.randint(len(entities), (3, 2), generator=generator).tolist()
                    facts = {(entities[h], relation, entities[t]) for h, t in picks}
                    store.add_triples(sorted(facts))
                    return facts

                timings: dict[str, list[float]] = {}
                for _ in range(args.repeats):
                    last = store.census()
                    began = time.perf_counter()
                    store.census()
                    timings.setdefault("census", []).append(time.perf_counter() - began)
                    kinds = (("partial_small", small), ("partial_largest", largest),
                             ("full", small))  # fmt: skip
                    for kind, relation in kinds:
                        written = behind_the_log(relation)
                        began = time.perf_counter()
                        now = store.census()
                        wanted = None if kind == "full" else to_export(last, now, [])
                        result = snapshot_diff(store, state, log, part=wanted)
                        seconds = time.perf_counter() - began  # the census's included
                        if kind != "full":  # that relation's facts, no entity
                            assert wanted == Part(frozenset({relation}), False), wanted
                        found = {(e.head, e.relation, e.tail)
                                 for _, e in log.read(result["first_offset"])}  # fmt: skip
                        assert found == written, (found, written)
                        timings.setdefault(kind, []).append(seconds)
                        last = now
        finally:
            server.stop()
    record["seconds_median"] = {k: round(statistics.median(v), 3) for k, v in timings.items()}
    record["seconds"] = {k: [round(x, 3) for x in v] for k, v in timings.items()}
    full = record["seconds_median"]["full"]
    record["full_over_partial"] = {
        k: round(full / record["seconds_median"][k], 1)
        for k in ("partial_small", "partial_largest")
    }
    record["machine"] = f"{os.cpu_count()} CPUs, {platform.machine()}, embedded FalkorDB"
    record["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    record["command"] = "python benchmarks/diff_cost.py " + (
        f"--dataset {args.dataset} --repeats {args.repeats}"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
