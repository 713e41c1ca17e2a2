"""What one change batch costs the change applier as its overlay grows.

The change applier (server/kgweave/changes/apply.py) serves each batch of graph changes at
once; between two incremental updates (or with updates off) its overlay grows with every
batch. This runs the real applier, on its own thread in this process as in ``kgweave serve``,
on a trained model with no graph database (the events are appended to the log directly, as
``POST /v1/changes`` does), one small batch at a time, and records each batch's CPU time on
the applier's thread, its wall time and the overlay's size; a batch's cost should follow the
batch, not the overlay::

    python benchmarks/apply_batch.py --model MODEL_DIR [--batches 3000] [--remove-every 10]
        [--out benchmarks/results/apply_batch.json] [--plot docs/img/apply_batch.png]
        [--new-entities N]          # the first N batches each bring a new entity
        [--before OTHER_RUN.json]   # a record of another run (other code), plotted beside
    python benchmarks/apply_batch.py --replot RUN.json --before OTHER_RUN.json --plot P.png

Each batch adds one fact between two entities of the version (new to it); every
``--remove-every``-th batch also removes one of the version's facts; with ``--new-entities N``
the first N batches each add a fact of a new entity instead (placed by its neighbour: no text
encoder), which the overlay then holds for every later batch, as a graph's new entities stay
in it until an update trains them. Printed and recorded:
per-batch CPU and wall (ms, p50 and p95) for each range of overlay sizes.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="a trained model's folder")
    parser.add_argument("--batches", type=int, default=3000)
    parser.add_argument(
        "--remove-every", type=int, default=10, help="every N-th batch also removes a fact"
    )
    parser.add_argument(
        "--new-entities", type=int, default=0, help="the first N batches bring a new entity each"
    )
    parser.add_argument("--buckets", type=int, default=6, help="ranges of overlay size")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--plot", type=Path)
    parser.add_argument("--before", type=Path, help="another run's --out, plotted beside")
    parser.add_argument("--replot", type=Path, help="plot this --out record; run nothing")
    args = parser.parse_args()
    before = json.loads(args.before.read_text())["per_batch"] if args.before else None
    if args.replot:
        if not args.plot:
            raise SystemExit("--replot needs --plot")
        plot(args.plot, json.loads(args.replot.read_text())["per_batch"], before)
        return
    if args.model is None:
        raise SystemExit("--model is needed (a trained model's folder)")

    data_dir = Path(tempfile.mkdtemp(prefix="kgweave-apply-batch-"))
    os.environ["KGWEAVE_DATA_DIR"] = str(data_dir)
    os.environ.setdefault("KGWEAVE_DEVICE", "cpu")
    from kgweave.changes.apply import ChangeApplier
    from kgweave.changes.events import ChangeEvent, ChangeKind
    from kgweave.dataplane import DataPlane
    from kgweave.settings import get_settings

    settings = get_settings()
    try:
        staged = data_dir / "staged"
        shutil.copytree(args.model, staged)
        plane = DataPlane(settings)
        plane.versions.registry.register(staged)
        event_log = plane.changes.event_log
        # no text encoder: every fact is between entities the version has, so no row is made
        applier = ChangeApplier(settings, plane.versions, event_log, plane.versions.metrics)
        plane.versions.load_active()
        applier.start()
        art = plane.versions.active().artifact
        entities, relations = art.entities.labels, art.relations.labels
        base = {tuple(row) for row in art.known.tolist()}
        rng = random.Random(0)
        clock = time.pthread_getcpuclockid(applier._thread.ident or 0)
        rows: list[dict[str, float]] = []
        began = time.monotonic()
        for n in range(args.batches):
            events: list[ChangeEvent] = []
            if n < args.new_entities:  # a new entity, placed by its neighbour
                events.append(ChangeEvent(ChangeKind.TRIPLE_ADDED, f"kgweave-bench-new-{n}",
                                          relations[0], entities[n]))  # fmt: skip
            while not events:
                h, t = rng.randrange(len(entities)), rng.randrange(len(entities))
                r = rng.randrange(len(relations))
                if (h, r, t) not in base:
                    events.append(ChangeEvent(ChangeKind.TRIPLE_ADDED, entities[h],
                                              relations[r], entities[t]))  # fmt: skip
            if args.remove_every and n % args.remove_every == args.remove_every - 1:
                h, r, t = art.known[rng.randrange(len(art.known))].tolist()
                events.append(ChangeEvent(ChangeKind.TRIPLE_REMOVED, entities[h],
                                          relations[r], entities[t]))  # fmt: skip
            cpu = time.clock_gettime(clock)
            wall = time.monotonic()
            end = event_log.append(events)[-1] + 1
            applier.wake()
            if not applier.wait_applied(end, 120):
                raise SystemExit(f"batch {n} was not applied: {applier.state.last_error}")
            rows.append({
                "overlay_facts": len(applier.overlay.added) + len(applier.overlay.removed),
                "cpu_ms": round((time.clock_gettime(clock) - cpu) * 1e3, 3),
                "wall_ms": round((time.monotonic() - wall) * 1e3, 3),
            })  # fmt: skip
            if (n + 1) % 500 == 0:
                rate = (n + 1) / (time.monotonic() - began)
                print(f"  {n + 1} of {args.batches} batches, {rate:.0f}/s, "
                      f"ETA {(args.batches - n - 1) / rate:.0f} s", file=sys.stderr)  # fmt: skip
        applier.stop()
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)

    size = max(1, -(-len(rows) // args.buckets))
    buckets: list[dict[str, Any]] = []
    for i in range(0, len(rows), size):
        part = rows[i : i + size]
        cpus, walls = sorted(r["cpu_ms"] for r in part), sorted(r["wall_ms"] for r in part)
        buckets.append({
            "overlay_facts": [int(part[0]["overlay_facts"]), int(part[-1]["overlay_facts"])],
            "batches": len(part),
            "cpu_ms_p50": round(statistics.median(cpus), 2),
            "cpu_ms_p95": round(cpus[int(0.95 * (len(cpus) - 1))], 2),
            "wall_ms_p50": round(statistics.median(walls), 2),
            "wall_ms_p95": round(walls[int(0.95 * (len(walls) - 1))], 2),
        })  # fmt: skip
    record: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": " ".join(sys.argv),
        "model": {"entities": len(entities), "known_facts": len(art.known)},
        "batches": len(rows),
        "remove_every": args.remove_every,
        "new_entities": args.new_entities,
        "by_overlay_size": buckets,
    }
    for b in buckets:
        lo, hi = b["overlay_facts"]
        print(f"overlay {lo:>6}-{hi:<6} facts: CPU p50 {b['cpu_ms_p50']:6.2f} p95 "
              f"{b['cpu_ms_p95']:6.2f} ms, wall p50 {b['wall_ms_p50']:6.2f} p95 "
              f"{b['wall_ms_p95']:6.2f} ms")  # fmt: skip
    if args.out:
        args.out.write_text(json.dumps({**record, "per_batch": rows}, indent=1) + "\n")
    if args.plot:
        plot(args.plot, rows, before)


def plot(
    path: Path, rows: list[dict[str, float]], before: list[dict[str, float]] | None = None
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    if before:
        ax.scatter([r["overlay_facts"] for r in before], [r["cpu_ms"] for r in before], s=3,
                   color="tab:gray", label="CPU of the applier's thread, before")  # fmt: skip
    x = [r["overlay_facts"] for r in rows]
    ax.scatter(x, [r["cpu_ms"] for r in rows], s=3, label="CPU of the applier's thread")
    ax.scatter(x, [r["wall_ms"] for r in rows], s=3, alpha=0.5, label="append to served (wall)")
    ax.set_xlabel("facts in the overlay")
    ax.set_ylabel("ms per one-fact batch")
    ax.set_yscale("log")
    ax.set_title("The change applier: one batch's cost as the overlay grows")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
