"""What a small incremental update costs and what it does, by replay floor and steps.

A chain of updates, each of ``--facts-per-update`` new facts (test facts of the dataset the
model never saw), run through the updater's own code (:func:`run_incremental`, in this
process, as the updater runs it: each update based on the version the one before wrote, kept
in memory). Per update: its seconds by phase, the fixed-set MRR (the dataset's validation
facts, as the graph's fixed set) and each new fact's filtered rank before and after. Per
setting: the drift of the fixed-set MRR over the chain, the new facts' median rank gain and
the seconds per update.

    python benchmarks/update_cost.py --model MODEL_DIR --floors 1000,256,64 --updates 20
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="a trained artifact")
    parser.add_argument("--dataset", default="fb15k-237")
    parser.add_argument("--floors", default="1000,256,64",
                        help="incremental_replay_min values, comma-separated")  # fmt: skip
    parser.add_argument("--steps", default="50", help="incremental_steps values, comma-separated")
    parser.add_argument("--epochs", type=int, default=None,
                        help="incremental_epochs (default: the setting's; 0: --steps)")  # fmt: skip
    parser.add_argument("--updates", type=int, default=20)
    parser.add_argument("--facts-per-update", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/update_cost.json"))
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="kgweave-update-cost-"))
    os.environ["KGWEAVE_DATA_DIR"] = str(work / "data")
    os.environ.setdefault("KGWEAVE_DEVICE", "cpu")
    from kgweave.artifact import load_artifact, read_config
    from kgweave.changes import incremental
    from kgweave.changes.overlay import Overlay
    from kgweave.engine import open_dataset
    from kgweave.serving.training_run import JobRun
    from kgweave.serving.validation import make_fixed
    from kgweave.settings import get_settings

    settings = get_settings()
    dataset = open_dataset(args.dataset, settings)
    base = load_artifact(args.model)
    ents, rels = base.entities.index, base.relations.index
    labels_e, labels_r = dataset.entities.labels, dataset.relations.labels

    def labelled(rows: torch.Tensor) -> list[tuple[str, str, str]]:
        return [(labels_e[h], labels_r[r], labels_e[t]) for h, r, t in rows.tolist()]

    make_fixed(settings, labelled(dataset.splits["valid"]), "base")
    pool = [t for t in labelled(dataset.splits["test"])
            if t[0] in ents and t[2] in ents and t[1] in rels]  # fmt: skip
    random.Random(args.seed).shuffle(pool)
    need = args.updates * args.facts_per_update
    facts = pool[:need]
    record: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "model": str(args.model), "dataset": args.dataset, "torch": torch.__version__,
        "threads": args.threads, "updates": args.updates,
        "facts_per_update": args.facts_per_update, "runs": [],
    }  # fmt: skip
    for steps in [int(s) for s in args.steps.split(",")]:
        for floor in [int(f) for f in args.floors.split(",")]:
            incremental.KEPT = incremental.Kept()  # each chain starts from the model on disk
            run_settings = settings.model_copy(
                update={"incremental_replay_min": floor, "incremental_steps": steps}
            )
            if args.epochs is not None:
                run_settings = run_settings.model_copy(update={"incremental_epochs": args.epochs})
            folder, version = args.model, "base"
            rows = []
            for i in range(args.updates):
                batch = facts[i * args.facts_per_update : (i + 1) * args.facts_per_update]
                overlay = Overlay(base_version=version, next_offset=i + 1, added=set(batch),
                                  events=len(batch))  # fmt: skip
                staging = work / f"s{steps}-f{floor}-{i}"
                overlay.save(staging / "overlay")
                out = staging / "out"
                began = time.monotonic()
                incremental.run_incremental(JobRun(
                    spec={"kind": "incremental", "base": str(folder), "base_version": version,
                          "overlay": str(staging / "overlay")},
                    out=out, settings=run_settings, report=lambda _m: None,
                ))  # fmt: skip
                seconds = time.monotonic() - began
                config = read_config(out)
                judged, inc = config["fixed_valid"], config["incremental"]
                rows.append({
                    "seconds": round(seconds, 3), "timings": inc["timings"],
                    "replayed": inc["replayed"], "candidates": inc["candidates"],
                    "steps": inc["steps"],
                    "base_queries_ranked": judged["base_queries_ranked"],
                    "mrr": judged["mrr"], "base_mrr": judged["base_mrr"],
                    "anchor_mrr": judged["anchor_mrr"],
                })  # fmt: skip
                folder, version = out, f"u{i}"
                print(
                    f"steps {steps} floor {floor} update {i}: {seconds:.2f} s, fixed-set MRR "
                    f"{judged['base_mrr']:.4f} -> {judged['mrr']:.4f}, replayed "
                    f"{inc['replayed']}, candidates {inc['candidates']}, steps {inc['steps']}, "
                    f"base queries ranked {judged['base_queries_ranked']}",
                    flush=True,
                )
            ranks = _ranks(folder, facts[:need], settings)
            first = rows[0]["base_mrr"]
            record["runs"].append({
                "steps": steps, "epochs": run_settings.incremental_epochs, "floor": floor,
                "updates": rows,
                "seconds_median": statistics.median(r["seconds"] for r in rows),
                "train_median": statistics.median(r["timings"]["train"] for r in rows),
                "fixed_mrr_start": first, "fixed_mrr_end": rows[-1]["mrr"],
                "drift": rows[-1]["mrr"] - first, "new_fact_ranks_end": ranks,
                "new_fact_rank_median_end": statistics.median(ranks),
            })  # fmt: skip
            start_ranks = _ranks(args.model, facts[:need], settings)
            record["new_fact_rank_median_start"] = statistics.median(start_ranks)
            brief = {k: v for k, v in record["runs"][-1].items()
                     if k not in {"updates", "new_fact_ranks_end"}}  # fmt: skip
            print(json.dumps(brief), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"record: {args.out}")


def _ranks(folder: Path, facts: list[tuple[str, str, str]], settings: Any) -> list[int]:
    """Each fact's tail rank (filtered by the known facts of the version in ``folder``, the
    fact itself aside)."""
    import torch

    from kgweave.artifact import load_artifact
    from kgweave.evaluation.ranking import build_filter, evaluate

    art = load_artifact(folder)
    e, r = art.entities.index, art.relations.index
    rows = torch.tensor([(e[h], r[p], e[t]) for h, p, t in facts], dtype=torch.long)
    known = art.known.cpu()
    keys = (known[:, 0] * len(r) + known[:, 1]) * len(e) + known[:, 2]
    mine = (rows[:, 0] * len(r) + rows[:, 1]) * len(e) + rows[:, 2]
    known_filter = build_filter(known[~torch.isin(keys, mine)], len(e), len(r))
    art.model.eval()
    result = evaluate(art.model, rows, known_filter)
    assert result.ranks is not None
    return [int(x) for x in result.ranks[: len(rows)].tolist()]


if __name__ == "__main__":
    main()
