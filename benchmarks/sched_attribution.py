"""What ran, and what waited for a CPU, while the slow PredictLinks calls were answered.

Reads a folder that ``benchmarks/freshness.py --sched-trace DIR`` wrote (per p99 phase: the
kernel's scheduler events from ``perf sched record``, each call's start and seconds, and
which process and server thread each task is)::

    python benchmarks/sched_attribution.py DIR [--slow-ms MS] [--json OUT]

A call is slow when it took more than ``--slow-ms`` (default: twice the idle phases' pooled
p99, the target's bound). For each phase, over the windows of its slow calls:

- **ran**: CPU milliseconds per slow call, by who ran (the server's threads by name, the
  prober, the writer, FalkorDB, the server's worker processes: the updater and the snapshot
  diff's worker);
- **waited**: milliseconds per slow call that tasks spent runnable but not running (perf's
  "sch delay"), by who waited, and by who held the CPU they waited on meanwhile;

and for the whole phase, how long the waits of more than 1 ms were (1 ms bins): on a kernel
that preempts only at its tick, they pile up just under the tick period.

Needs ``perf`` (``perf sched timehist``) to read the recordings.
"""

from __future__ import annotations

import argparse
import bisect
import collections
import json
import re
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: a row of ``perf sched timehist --state``: time, CPU, task[tid/pid], wait, sch delay, run
_ROW = re.compile(
    r"\s*([\d.]+) \[(\d+)\]\s+(.+?)\[(\d+)(?:/(\d+))?\]\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)"
)


@dataclass(frozen=True)
class Slice:
    """One time a task ran on a CPU (seconds, CLOCK_MONOTONIC), after waiting ``delay``
    seconds for it once runnable."""

    cpu: int
    who: str
    begin: float
    end: float
    delay: float


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def slices(folder: Path, phase: dict[str, Any]) -> list[Slice]:
    """The phase's scheduler events as slices, each task named by its role."""
    server = int(phase["server"])
    threads = {int(k): v for k, v in phase["threads"].items()}
    roles = {int(k): v for k, v in phase["processes"].items()}
    text = folder / (phase["data"] + ".txt")
    if not text.exists():
        out = subprocess.run(
            ["perf", "sched", "timehist", "--state", "-i", str(folder / phase["data"])],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        text.write_text(out.stdout)
    rows = []
    for line in text.read_text().splitlines():
        m = _ROW.match(line)
        if m is None:
            continue
        t, cpu, comm, tid, pid, _wait, delay, run = m.groups()
        tid_, pid_ = int(tid), int(pid or tid)
        if pid_ == server:
            who = "server: " + threads.get(tid_, "other threads")
        elif pid_ in roles:
            who = roles[pid_]
        else:
            who = "other: " + comm
        end = float(t)
        rows.append(Slice(int(cpu), who, end - float(run) / 1e3, end, float(delay) / 1e3))
    return rows


def attribute(runs: list[Slice], calls: list[tuple[float, float]], slow_s: float) -> dict[str, Any]:
    """What ran and what waited during the calls slower than ``slow_s`` (see the module doc)."""
    begin, end = runs[0].end, runs[-1].end
    inside = [(s, d) for s, d in calls if begin < s and s + d < end]
    slow = [(s, d) for s, d in inside if d > slow_s]
    ends = [r.end for r in runs]  # runs come in time order
    longest = max(r.end - r.begin + r.delay for r in runs)
    by_cpu: dict[int, list[Slice]] = collections.defaultdict(list)
    for r in runs:
        by_cpu[r.cpu].append(r)
    cpu_ends = {cpu: [r.end for r in rs] for cpu, rs in by_cpu.items()}
    ran: collections.Counter[str] = collections.Counter()
    waited: collections.Counter[str] = collections.Counter()
    held: collections.Counter[str] = collections.Counter()

    def overlap(a0: float, a1: float, b0: float, b1: float) -> float:
        return max(0.0, min(a1, b1) - max(a0, b0))

    def around(sorted_ends: list[float], t0: float, t1: float) -> range:
        """The indexes of the slices that may overlap [t0, t1] (ends sorted)."""
        return range(bisect.bisect_left(sorted_ends, t0),
                     bisect.bisect_right(sorted_ends, t1 + longest))  # fmt: skip

    for s, d in slow:
        for i in around(ends, s, s + d):
            r = runs[i]
            ran[r.who] += overlap(r.begin, r.end, s, s + d)
            w0, w1 = max(r.begin - r.delay, s), min(r.begin, s + d)
            if w1 <= w0:
                continue
            waited[r.who] += w1 - w0
            mates = by_cpu[r.cpu]
            for j in around(cpu_ends[r.cpu], w0, w1):  # who held that CPU meanwhile
                if mates[j] is not r:
                    held[mates[j].who] += overlap(mates[j].begin, mates[j].end, w0, w1)
    waits = [r.delay for r in runs if r.delay > 0.001]  # (the idle task has no row)
    bins = collections.Counter(min(int(w * 1e3), 8) for w in waits)
    per = max(len(slow), 1)

    def table(counter: collections.Counter[str]) -> dict[str, float]:
        return {
            k: round(1e3 * v / per, 2) for k, v in counter.most_common(12) if v * 1e3 >= per * 0.05
        }

    seconds = [d for _, d in inside]
    return {
        "calls": len(inside),
        "p50_ms": round(1e3 * statistics.median(seconds), 2) if seconds else 0.0,
        "p99_ms": round(1e3 * percentile(seconds, 0.99), 2),
        "slow_ms": round(1e3 * slow_s, 2),
        "slow_calls": len(slow),
        "ran_ms_per_slow_call": table(ran),
        "waited_ms_per_slow_call": table(waited),
        "cpu_held_meanwhile_ms_per_slow_call": table(held),
        "waits_over_1ms": {
            "n": len(waits),
            "ms_total": round(1e3 * sum(waits)),
            "by_ms": {f"{b}-{b + 1}" if b < 8 else ">=8": bins[b] for b in sorted(bins)},
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", type=Path, help="what freshness.py --sched-trace wrote")
    parser.add_argument(
        "--slow-ms", type=float, default=None, help="slower is slow (default: 2x the idle p99)"
    )
    parser.add_argument("--json", type=Path, default=None, help="write the result here too")
    args = parser.parse_args(argv)
    phases = {}
    for path in sorted(args.folder.glob("*.json")):
        if path.name.endswith(".calls.json"):
            continue
        phase = json.loads(path.read_text())
        if not isinstance(phase, dict) or "server" not in phase:
            continue  # not a phase's record (say, an earlier --json written here)
        calls = json.loads((args.folder / phase["calls"]).read_text())
        phases[path.stem] = (phase, list(zip(calls["start"], calls["seconds"], strict=True)))
    if not phases:
        print(f"{args.folder}: no phase recorded (freshness.py --sched-trace)", file=sys.stderr)
        return 2
    idle = [d for name, (_, calls) in phases.items() if name.endswith("idle") for _, d in calls]
    slow_s = args.slow_ms / 1e3 if args.slow_ms else 2 * percentile(idle, 0.99) if idle else 0.0
    result = {}
    for name, (phase, calls) in phases.items():
        found = attribute(slices(args.folder, phase), calls, slow_s)
        result[name] = found
        print(
            f"== {name}: {found['calls']} calls, p50 {found['p50_ms']} ms, p99 {found['p99_ms']}"
            f" ms; {found['slow_calls']} slower than {found['slow_ms']} ms"
        )
        for key in ("ran_ms_per_slow_call", "waited_ms_per_slow_call",
                    "cpu_held_meanwhile_ms_per_slow_call"):  # fmt: skip
            if found["slow_calls"]:
                print(f"  {key}: " + ", ".join(f"{k} {v}" for k, v in found[key].items()))
        waits = found["waits_over_1ms"]
        print(f"  runnable waits over 1 ms: {waits['n']} ({waits['ms_total']} ms), by length "
              + ", ".join(f"{k} ms: {v}" for k, v in waits["by_ms"].items()))  # fmt: skip
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
