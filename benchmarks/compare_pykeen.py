#!/usr/bin/env python3
"""kgweave and PyKEEN side by side, in one run, on this machine.

Each case runs both tools one after the other in fresh processes with the same settings (model,
dim, epochs, batch size, optimiser, learning rate, regulariser, seed, initial scale), then
prints wall-time ratios and filtered MRR / Hits@10, and writes every record to a JSON file.

    python benchmarks/compare_pykeen.py --datasets-dir ../shared/datasets \\
        --pykeen-python /tmp/pykeen-venv/bin/python --out benchmarks/results/pykeen.json

Cases: UMLS, Kinships and Nations trained in full (matched epochs), and FB15k-237 with a fixed
wall-time budget each (``--fb-budget`` seconds): the MRR each reaches within it.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from typing import Any

HERE = pathlib.Path(__file__).resolve().parent

#: ComplEx-N3 with reciprocal relations, Adagrad; kgweave's default recipe.
COMMON = {"model": "complex", "optimizer": "adagrad", "lr": 0.1, "regularizer": "n3", "seed": 0}
SMALL = {
    "umls": {"dim": 200, "epochs": 100, "batch_size": 256, "reg_weight": 0.01},
    "kinships": {"dim": 200, "epochs": 100, "batch_size": 256, "reg_weight": 0.01},
    "nations": {"dim": 200, "epochs": 100, "batch_size": 256, "reg_weight": 0.01},
}


def _flags(settings: dict[str, Any]) -> list[str]:
    out = []
    for key, value in settings.items():
        out += [f"--{key.replace('_', '-')}", str(value)]
    return out


def run_one(
    python: str,
    script: str,
    dataset: pathlib.Path,
    settings: dict[str, Any],
    extra: list[str],
    out: pathlib.Path,
) -> dict[str, Any]:
    cmd = [
        python,
        str(HERE / script),
        "--dataset",
        str(dataset),
        *_flags(settings),
        *extra,
        "--json-out",
        str(out),
    ]
    print("$", " ".join(cmd), flush=True)
    started = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    record: dict[str, Any] = json.loads(out.read_text())
    record["process_seconds"] = round(time.perf_counter() - started, 2)
    record["command"] = " ".join(cmd)
    return record


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets-dir", type=pathlib.Path, required=True)
    p.add_argument(
        "--pykeen-python",
        default=sys.executable,
        help="python of an environment with pykeen==1.11.1",
    )
    p.add_argument("--cases", default="umls,kinships,nations,fb15k-237")
    p.add_argument("--fb-budget", type=float, default=600.0, help="seconds of training each")
    p.add_argument("--fb-dim", type=int, default=200)
    p.add_argument("--fb-eval-sample", type=int, default=2000)
    p.add_argument("--out", type=pathlib.Path, default=HERE / "results" / "pykeen.json")
    args = p.parse_args()

    work = args.out.parent / "runs"
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for case in args.cases.split(","):
        dataset = args.datasets_dir / case
        if case in SMALL:
            settings = {**COMMON, **SMALL[case]}
            ours_extra: list[str] = []
            theirs_extra = ["--init-std", "0.001"]
        else:
            settings = {
                **COMMON,
                "dim": args.fb_dim,
                "epochs": 1000,
                "batch_size": 512,
                "reg_weight": 0.01,
            }
            budget = [
                "--time-budget",
                str(args.fb_budget),
                "--eval-sample",
                str(args.fb_eval_sample),
            ]
            ours_extra = budget
            theirs_extra = [*budget, "--budget-check", "batch", "--init-std", "0.001"]
        ours = run_one(
            sys.executable,
            "kgweave_runner.py",
            dataset,
            settings,
            ours_extra,
            work / f"{case}-kgweave.json",
        )
        theirs = run_one(
            args.pykeen_python,
            "pykeen_runner.py",
            dataset,
            settings,
            theirs_extra,
            work / f"{case}-pykeen.json",
        )
        row = {
            "case": case,
            "settings": settings,
            "kgweave": ours,
            "pykeen": theirs,
            "speedup": round(theirs["train_seconds"] / max(ours["train_seconds"], 1e-9), 1),
        }
        rows.append(row)
        print(
            f"{case:<10} kgweave {ours['train_seconds']:8.1f}s mrr {ours['mrr']:.3f} "
            f"h@10 {ours['hits@10']:.3f} ({ours['epochs_completed']} ep) | pykeen "
            f"{theirs['train_seconds']:8.1f}s mrr {theirs['mrr']:.3f} h@10 {theirs['hits@10']:.3f}"
            f" ({theirs.get('epochs_fractional', theirs['epochs_completed'])} ep) | "
            f"time ratio {row['speedup']}x",
            flush=True,
        )
    report = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.processor() or platform.machine()}, {platform.platform()}",
        "cpus": __import__("os").cpu_count(),
        "rows": rows,
    }
    args.out.write_text(json.dumps(report, indent=1))
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
