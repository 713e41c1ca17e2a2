"""benchmarks/sched_attribution.py on a recorded folder: which task ran and which waited for a
CPU while the slow PredictLinks calls were answered.

The folder is what ``freshness.py --sched-trace`` writes, with each phase's ``perf sched
timehist --state`` text already beside its recording (the script reads that text when it is
there, so no ``perf`` is needed): a few slices whose attribution is worked out by hand below.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "sched_attribution.py"

SERVER, BATCHER, LOOP = 100, 101, 102  # the server's process and two of its threads
PROBER, WORKER = 200, 300  # the prober's process; a worker of the server (the updater)

HEADER = """\
           time    cpu  task name                       wait time  sch delay   run time
                        [tid/pid]                          (msec)     (msec)     (msec)
--------------- ------  ------------------------------  ---------  ---------  ---------
"""


@pytest.fixture(scope="module")
def script() -> Iterator[ModuleType]:
    spec = importlib.util.spec_from_file_location("sched_attribution", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # (its dataclasses look their module up)
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


def row(end: float, cpu: int, task: str, delay_ms: float, run_ms: float) -> str:
    """A line of ``perf sched timehist --state``: the slice ending at ``end`` seconds."""
    return f"{end:15.6f} [{cpu:04d}]  {task:<30}  {0.0:9.3f}  {delay_ms:9.3f}  {run_ms:9.3f} \n"


def phase(folder: Path, name: str, rows: list[str], calls: list[tuple[float, float]]) -> None:
    """Write phase ``name`` as freshness.py --sched-trace does, its timehist text beside it."""
    (folder / f"{name}.json").write_text(json.dumps({
        "server": SERVER,
        "threads": {str(SERVER): "MainThread", str(BATCHER): "kgweave-batcher"},
        "processes": {str(PROBER): "prober", str(WORKER): "worker"},
        "data": f"{name}.data",
        "calls": f"{name}.calls.json",
    }))  # fmt: skip
    (folder / f"{name}.data.txt").write_text(HEADER + "".join(rows))
    (folder / f"{name}.calls.json").write_text(json.dumps({
        "start": [s for s, _ in calls], "seconds": [d for _, d in calls],
    }))  # fmt: skip


def record(folder: Path) -> None:
    """An idle phase of 2 ms calls (p99 2 ms: slow is over 4 ms), and an ingesting one where
    one call, 20.100-20.110 s, waited 3 ms for CPU 0 while the updater held it."""
    bounds = [row(10.0, 0, f"python[{BATCHER}/{SERVER}]", 0, 0.01),
              row(11.0, 0, f"python[{BATCHER}/{SERVER}]", 0, 0.01)]  # fmt: skip
    phase(folder, "1-idle", bounds, [(10.1 + 0.005 * i, 0.002) for i in range(100)])
    rows = [
        row(20.0, 0, f"python[{BATCHER}/{SERVER}]", 0, 0.01),
        row(20.103, 1, f"python[{PROBER}]", 0, 3.0),  # 20.100-20.103, on the other CPU
        row(20.104, 0, f"pt_main_thread[{WORKER + 1}/{WORKER}]", 0, 4.0),  # 20.100-20.104
        # the batcher, runnable from 20.101, ran at 20.104 once the updater left CPU 0
        row(20.108, 0, f"python[{BATCHER}/{SERVER}]", 3.0, 4.0),
        row(20.106, 1, f"python[{LOOP}/{SERVER}]", 0, 1.0),  # 20.105-20.106, an unnamed thread
        row(20.109, 1, "kworker/1:1[50]", 0, 1.0),  # 20.108-20.109: not of the run
        row(21.0, 0, f"python[{BATCHER}/{SERVER}]", 0, 0.01),
    ]
    rows.sort(key=lambda line: float(line.split()[0]))  # perf writes them in time order
    calls = [(20.2 + 0.005 * i, 0.002) for i in range(99)] + [(20.1, 0.010)]
    phase(folder, "1-ingesting", rows, calls)


def test_the_slow_calls_waits_are_put_on_who_held_the_cpu(
    script: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    record(tmp_path)
    out = tmp_path / "attribution.json"
    assert script.main([str(tmp_path), "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert set(result) == {"1-idle", "1-ingesting"}
    idle, busy = result["1-idle"], result["1-ingesting"]
    assert (idle["calls"], idle["p99_ms"], idle["slow_ms"]) == (100, 2.0, 4.0)
    assert idle["slow_calls"] == 0
    assert (busy["calls"], busy["slow_calls"]) == (100, 1)
    assert busy["ran_ms_per_slow_call"] == {
        "worker": 4.0,
        "server: kgweave-batcher": 4.0,
        "prober": 3.0,
        "server: other threads": 1.0,
        "other: kworker/1:1": 1.0,
    }
    assert busy["waited_ms_per_slow_call"] == {"server: kgweave-batcher": 3.0}
    # (the prober ran meanwhile too, on the other CPU: not what the batcher waited for)
    assert busy["cpu_held_meanwhile_ms_per_slow_call"] == {"worker": 3.0}
    assert busy["waits_over_1ms"] == {"n": 1, "ms_total": 3, "by_ms": {"3-4": 1}}
    printed = capsys.readouterr().out
    assert "== 1-ingesting: 100 calls" in printed and "1 slower than 4.0 ms" in printed


def test_a_threshold_given_counts_every_call_over_it(script: ModuleType, tmp_path: Path) -> None:
    record(tmp_path)
    out = tmp_path / "attribution.json"
    assert script.main([str(tmp_path), "--slow-ms", "1", "--json", str(out)]) == 0
    busy = json.loads(out.read_text())["1-ingesting"]
    assert (busy["slow_ms"], busy["slow_calls"]) == (1.0, 100)


def test_a_folder_without_a_phase_is_one_line_and_status_2(
    script: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "attribution.json").write_text("{}")  # an earlier --json: not a phase
    assert script.main([str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"{tmp_path}: no phase recorded (freshness.py --sched-trace)"
