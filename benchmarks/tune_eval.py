#!/usr/bin/env python3
"""No-flag `kgweave train` against `kgweave tune` on any folder of triples, side by side.

    python benchmarks/tune_eval.py DATASET_FOLDER --budget 30m [--trials N]
        [--published MRR] [-- TUNE FLAGS]

Runs, in this order and as a user would (the `kgweave` CLI in a subprocess, its own data
folder): `kgweave train -d FOLDER` with no flags (the recipe picked from the graph's
statistics), then `kgweave tune -d FOLDER --budget ...` (its first trial is that same recipe,
so the search starts from it). Prints validation and test MRR of both, the recipe picked, the
best trial's settings, and writes everything as JSON (``--json-out``). Flags after ``--`` go to
`kgweave tune` (e.g. ``-- --target-mrr 0.47``); ``--common="FLAGS"`` go to both runs (the
same training budget or thread count for both: ``--common="--epochs 50 --num-threads 1"``).

FOLDER holds ``train``, ``valid`` and ``test`` splits of ``head<TAB>relation<TAB>tail`` lines,
named ``.tsv`` (kgweave's layout) or ``.txt`` (LibKGE's, CoDEx's, the ConvE release's): the
latter are linked under the work folder with kgweave's names, never copied. ``--published``:
the best published tuned test MRR for the same model on that graph (ComplEx: CoDEx-S 0.465 and
CoDEx-M 0.337, Safavi & Koutra 2020; WN18 0.95 and YAGO3-10 0.58, Lacroix et al. 2018); each
row then says how far it is from it (issue 19's targets: no-flag within 5 %, tune at or above).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
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


SPLITS = ("train", "valid", "test")


def as_kgweave_folder(folder: Path, work: Path) -> Path:
    """``folder`` when it has ``train.tsv``...; else, when it has ``train.txt``..., a folder
    under ``work`` whose ``.tsv`` names link to them. Exits with a one-line error otherwise."""
    if all((folder / f"{split}.tsv").is_file() for split in SPLITS):
        return folder
    if not all((folder / f"{split}.txt").is_file() for split in SPLITS):
        sys.exit(f"{folder}: needs train, valid and test splits as .tsv or .txt files")
    linked = work / "dataset" / folder.name
    linked.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        target = linked / f"{split}.tsv"
        target.unlink(missing_ok=True)
        target.symlink_to((folder / f"{split}.txt").resolve())
    return linked


def against(mrr: float | None, published: float | None) -> str:
    """``mrr`` relative to the published figure: ``-4.3 %``, or nothing."""
    if mrr is None or published is None:
        return ""
    return f"{100 * (mrr - published) / published:+.1f} %"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "dataset", type=Path, help="folder with train, valid, test splits (.tsv or .txt)"
    )
    parser.add_argument("--budget", default=None, help="kgweave tune --budget (90s, 30m, 1h)")
    parser.add_argument("--trials", type=int, default=None, help="kgweave tune --trials")
    parser.add_argument("--work", type=Path, default=None, help="folder for models and studies")
    parser.add_argument("--json-out", type=Path, default=None, help="write the results here")
    parser.add_argument(
        "--common",
        default="",
        help='flags for both runs, one string: --common="--epochs 50 --num-threads 1"',
    )
    parser.add_argument(
        "--published",
        type=float,
        default=None,
        help="best published tuned test MRR of the same model on this graph, to compare with",
    )
    options = parser.parse_args(argv)
    if options.budget is None and options.trials is None:
        parser.error("give --budget, --trials or both")
    work = options.work or Path(tempfile.mkdtemp(prefix="tune-eval-"))
    data_dir = work / "data"
    folder = str(as_kgweave_folder(options.dataset.resolve(), work))

    started = time.monotonic()
    common = shlex.split(options.common)
    train_args = ["train", "-d", folder, "-o", str(work / "no-flags"), "--no-progress", *common]
    plain = kgweave(train_args, data_dir)
    plain_s = time.monotonic() - started
    tune_args = ["tune", "-d", folder, "-o", str(work / "tuned"), "--no-progress", *common]
    tune_args += extra
    tune_args += ["--budget", options.budget] if options.budget else []
    tune_args += ["--trials", str(options.trials)] if options.trials else []
    started = time.monotonic()
    tuned = kgweave(tune_args, data_dir)
    tuned_s = time.monotonic() - started

    result = {
        "dataset": options.dataset.name,
        "budget": options.budget,
        "trials": len(tuned["trials"]),
        "common_flags": common,
        "statistics": plain["recipe"].get("statistics"),
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
            "stopped_because": tuned["stopped_because"],
            "recipe": tuned["recipe"],
        },
        "published_test_mrr": options.published,
        "machine": {"cpus": os.cpu_count(), "load_1min": round(os.getloadavg()[0], 1)},
    }
    header = f"{'':<22} {'valid MRR':>9} {'test MRR':>9} {'seconds':>8}"
    print(header + (f" {'vs published':>12}" if options.published else ""))
    for name, row in (("no-flag train", result["no_flags"]), ("tune", result["tuned"])):
        test = "-" if row["test_mrr"] is None else f"{row['test_mrr']:.4f}"
        print(
            f"{name:<22} {row['valid_mrr']:>9.4f} {test:>9} {row['seconds']:>8.0f}"
            + (f" {against(row['test_mrr'], options.published):>12}" if options.published else "")
        )
    if options.published:
        print(f"{'published (tuned)':<22} {'':>9} {options.published:>9.4f}")
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
