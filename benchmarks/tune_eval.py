#!/usr/bin/env python3
"""No-flag `kgweave train` against `kgweave tune` on any folder of triples, side by side.

    python benchmarks/tune_eval.py DATASET_FOLDER --budget 30m [--trials N] [-- TUNE FLAGS]

Runs, in this order and as a user would (the `kgweave` CLI in a subprocess, its own data
folder): `kgweave train -d FOLDER` with no flags (the recipe picked from the graph's
statistics), then `kgweave tune -d FOLDER --budget ...` (its first trial is that same recipe,
so the search starts from it). Prints validation and test MRR of both, the recipe picked, the
best trial's settings, and writes everything as JSON (``--json-out``). Flags after ``--`` go to
`kgweave tune` (e.g. ``-- --num-threads 1 --epochs 50``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def kgweave(args: list[str], data_dir: Path) -> dict[str, Any]:
    """Run ``kgweave ARGS --json`` and return its JSON (stderr passes through)."""
    env = {**os.environ, "KGWEAVE_DATA_DIR": str(data_dir)}
    command = [sys.executable, "-m", "kgweave.cli.main", *args, "--json"]
    done = subprocess.run(command, env=env, stdout=subprocess.PIPE, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"kgweave {' '.join(args)} failed with exit status {done.returncode}")
    return dict(json.loads(done.stdout))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", type=Path, help="folder with train.tsv, valid.tsv, test.tsv")
    parser.add_argument("--budget", default=None, help="kgweave tune --budget (90s, 30m, 1h)")
    parser.add_argument("--trials", type=int, default=None, help="kgweave tune --trials")
    parser.add_argument("--work", type=Path, default=None, help="folder for models and studies")
    parser.add_argument("--json-out", type=Path, default=None, help="write the results here")
    options = parser.parse_args(argv)
    if options.budget is None and options.trials is None:
        parser.error("give --budget, --trials or both")
    work = options.work or Path(tempfile.mkdtemp(prefix="tune-eval-"))
    data_dir = work / "data"
    folder = str(options.dataset.resolve())

    started = time.monotonic()
    train_args = ["train", "-d", folder, "-o", str(work / "no-flags"), "--no-progress"]
    plain = kgweave(train_args, data_dir)
    plain_s = time.monotonic() - started
    tune_args = ["tune", "-d", folder, "-o", str(work / "tuned"), "--no-progress", *extra]
    tune_args += ["--budget", options.budget] if options.budget else []
    tune_args += ["--trials", str(options.trials)] if options.trials else []
    started = time.monotonic()
    tuned = kgweave(tune_args, data_dir)
    tuned_s = time.monotonic() - started

    result = {
        "dataset": options.dataset.name,
        "budget": options.budget,
        "trials": len(tuned["trials"]),
        "no_flags": {
            "recipe": plain["recipe"]["name"],
            "valid_mrr": plain["valid"]["mrr"],
            "test_mrr": plain["test"]["mrr"],
            "seconds": round(plain_s, 1),
        },
        "tuned": {
            "best_trial": tuned["best_trial"],
            "valid_mrr": tuned["best_valid_mrr"],
            "test_mrr": tuned["test"].get("mrr"),
            "seconds": round(tuned_s, 1),
            "recipe": tuned["recipe"],
        },
        "machine": {"cpus": os.cpu_count(), "load_1min": round(os.getloadavg()[0], 1)},
    }
    print(f"{'':<22} {'valid MRR':>9} {'test MRR':>9} {'seconds':>8}")
    for name, row in (("no-flag train", result["no_flags"]), ("tune", result["tuned"])):
        print(f"{name:<22} {row['valid_mrr']:>9.4f} {row['test_mrr']:>9.4f} {row['seconds']:>8.0f}")
    print(
        f"dataset {result['dataset']}: recipe {plain['recipe']['name']}; tune "
        f"{options.budget or ''} {result['trials']} trials, best trial {tuned['best_trial']}: "
        + ", ".join(f"{k}={v}" for k, v in tuned["trials"][tuned["best_trial"]]["params"].items())
    )
    if options.json_out is not None:
        options.json_out.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
