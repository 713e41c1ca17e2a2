# ruff: noqa: E402
"""``kgweave``: train, evaluate and query knowledge-graph embedding models.

Every command has ``--json`` for machine-readable output. Errors print one line on stderr and
exit non-zero; ``KGWEAVE_DEBUG=1`` adds the traceback.

Size (over 400 lines): the group and the model commands (train, eval, predict); the others are
in cli/graph.py, cli/remote.py, cli/language.py, cli/neo4j.py and cli/tune.py.
"""

from __future__ import annotations

import os
import sys

# before anything loads torch: `kgweave serve` lets idle OpenMP threads sleep (hence the
# imports below this call: ruff's E402 is off for this file); the other commands (training,
# evaluation) reuse freed memory for torch's big temporaries (kgweave.allocator)
from kgweave.allocator import reuse_freed_memory
from kgweave.serving.logs import quiet_grpc_core
from kgweave.serving.openmp import prefer_passive

SERVING = sys.argv[1:2] == ["serve"]
prefer_passive(SERVING)
quiet_grpc_core()  # before grpc loads: its C core's lines would mix into ours
if not SERVING:
    reuse_freed_memory()

import traceback
from pathlib import Path
from typing import Any

import click

from kgweave import __version__
from kgweave.cli.connect import link_query_options
from kgweave.cli.options import job_options, report_options, training_options
from kgweave.cli.output import emit_json, emit_metrics, err
from kgweave.errors import InvalidArgumentError, KGWeaveError
from kgweave.settings import get_settings


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="kgweave")
def cli() -> None:
    """kgweave: knowledge-graph embeddings and language models beside your graph database.

    Settings come from KGWEAVE_* environment variables: KGWEAVE_DATASETS_DIR (folder of
    datasets), KGWEAVE_DATA_DIR (kgweave's own data, default ~/.kgweave), KGWEAVE_DEVICE
    (auto, cpu, cuda), KGWEAVE_OFFLINE (never download datasets).
    """


@cli.command()
@click.option(
    "--dataset",
    "-d",
    default=None,
    help="Dataset name (demo, umls, fb15k-237, ...) or folder. Required unless --remote "
    "(which trains on a snapshot of the server's graph by default).",
)
@click.option(
    "--out",
    "-o",
    type=click.Path(path_type=Path),
    default=None,
    help="Folder to write the model artifact to (required unless --remote).",
)
@training_options
@click.option(
    "--recipe",
    default=None,
    help="Settings to start from: a recipe file (JSON of the settings, as kgweave tune writes), "
    "'defaults' (the defaults below), or 'auto': chosen from the graph's statistics "
    "(docs/training.md, Tuning). Flags given override it. [default: auto]",
)
@click.option("--resume", is_flag=True, help="Continue from the checkpoint in OUT/checkpoint.")
@click.option(
    "--seeds",
    type=int,
    default=None,
    help="Train with K seeds (--seed, --seed + 1, ...) and report mean ± spread; OUT keeps the "
    "seed with the best validation MRR. [default: 1]",
)
@click.option(
    "--remote",
    is_flag=True,
    help="Train as a job of the running server (KGWEAVE_SERVER) and show its live progress.",
)
@job_options(served="the new model")
@click.option(
    "--joint",
    is_flag=True,
    help="Joint KG-LM training: text-enhanced entities (text encoder), a text fusion (KGE "
    "scores plus entity-text features), a language model trained on the verbalized graph "
    "with entity embeddings fused in, completion weights fitted on validation; one artifact "
    "(docs/language.md).",
)
@click.option(
    "--lm-epochs", type=int, default=None, help="With --joint: passes of the LM over the corpus."
)
@click.option(
    "--lm-time-budget",
    type=float,
    default=None,
    help="With --joint: stop LM training after this many seconds (--time-budget bounds the "
    "KGE part).",
)
@click.option(
    "--no-entity-fusion",
    is_flag=True,
    help="With --joint: fine-tune the LM on the verbalized facts' text alone, without the "
    "entities' KG embeddings at their mentions (the ablation; docs/language.md).",
)
@report_options
def train(
    dataset: str | None,
    out: Path | None,
    recipe: str | None,
    resume: bool,
    seeds: int | None,
    remote: bool,
    activation: str | None,
    detach: bool,
    joint: bool,
    lm_epochs: int | None,
    lm_time_budget: float | None,
    no_entity_fusion: bool,
    no_progress: bool,
    as_json: bool,
    **options: Any,
) -> None:
    """Train a model on a dataset, evaluate it, and write the artifact to OUT.

    With --remote, the server trains it as a job (on a snapshot of its graph unless --dataset
    is given), registers it as a new version and activates it by policy.
    """
    from kgweave.engine import ArtifactOutput, open_dataset, train_model

    values = {k: v for k, v in options.items() if v is not None}
    if seeds is not None and (remote or joint or resume):
        raise InvalidArgumentError("--seeds is for local training without --joint or --resume")
    if remote:
        from kgweave.cli.remote import train_remote

        if lm_epochs is not None or lm_time_budget is not None or no_entity_fusion:
            raise InvalidArgumentError(
                "--lm-epochs, --lm-time-budget and --no-entity-fusion are for local --joint "
                "training only"
            )
        if joint:
            values["joint"] = True
        if recipe not in (None, "auto", "defaults"):
            from kgweave.cli.recipe import job_settings, read_recipe

            values = {**job_settings(read_recipe(Path(recipe))), **values}
        train_remote(values, dataset or "", activation or "", detach, no_progress, as_json)
        return
    if dataset is None or out is None:
        raise InvalidArgumentError("give --dataset and --out (or --remote to train on the server)")
    if (lm_epochs is not None or lm_time_budget is not None or no_entity_fusion) and not joint:
        raise InvalidArgumentError(
            "--lm-epochs, --lm-time-budget and --no-entity-fusion need --joint"
        )
    from kgweave.cli.recipe import describe, settings_for, train_config

    train_config(values)  # a bad flag is refused before the dataset is read
    settings = get_settings()
    data = open_dataset(dataset, settings)
    config, recipe_record = settings_for(recipe, values, data)
    if joint:
        lm = {
            "lm_epochs": lm_epochs,
            "lm_time_budget_s": lm_time_budget,
            "entity_fusion": False if no_entity_fusion else None,
        }
        _train_joint(data, config, out, settings, lm, no_progress, as_json)
        return
    if not as_json:
        s = data.summary()
        err(
            f"dataset {s['name']}: {s['entities']} entities, {s['relations']} relations, "
            f"{s['train_triples']} training triples"
        )
        err(describe(recipe_record))
    if seeds is not None:
        _train_seeds(data, config, seeds, out, settings, no_progress, as_json)
        return
    output = ArtifactOutput(out, extra={"recipe": recipe_record})
    result, metrics, path = train_model(
        data, config, output, settings, resume=resume, progress=not no_progress
    )
    payload = {
        "artifact": str(path.resolve()),
        "dataset": data.name,
        "model": config.model,
        "epochs_completed": result.epochs_completed,
        "train_seconds": round(result.train_seconds, 3),
        "stopped_because": result.stopped_because,
        "device": result.device,
        "seed": config.seed,
        "validation": result.extra["validation"],
        "valid": metrics.get("valid"),
        "test": {k: v for k, v in metrics.get("test", {}).items() if k != "per_relation"},
        "recipe": recipe_record,
    }
    if as_json:
        emit_json(payload)
        return
    click.echo(
        f"trained {config.model} in {result.train_seconds:.1f}s on {result.device}, "
        f"{result.epochs_completed} epochs ({result.stopped_because}), seed {config.seed}"
    )
    click.echo(result.extra["validation"]["described"])
    if metrics.get("valid"):
        emit_metrics("validation (filtered):", metrics["valid"])
    emit_metrics("test (filtered):", metrics["test"])
    click.echo(f"model written to {path}")


def _train_seeds(
    data: Any, config: Any, seeds: int, out: Path, settings: Any, no_progress: bool, as_json: bool
) -> None:
    from kgweave.cli.seeds import train_seeds

    def told(run: dict[str, Any]) -> None:
        if not as_json:
            valid = (run["valid"] or {}).get("mrr", float("nan"))
            err(f"seed {run['seed']}: valid MRR {valid:.4f}, test MRR {run['test']['mrr']:.4f}")

    report = train_seeds(data, config, seeds, out, settings, not no_progress, told)
    if as_json:
        emit_json({"artifact": str(report.path.resolve()), **report.to_dict()})
        return
    for split, metrics in report.summary.items():
        click.echo(f"{split} (filtered), mean ± sd over {len(report.seeds)} seeds:")
        for name, s in metrics.items():
            click.echo(
                f"  {name:<10} {s['mean']:.4f} ± {s['sd']:.4f}  [{s['min']:.4f}, {s['max']:.4f}]"
            )
    click.echo(f"model of seed {report.kept_seed} (best validation MRR) written to {report.path}")


def _train_joint(
    data: Any,
    config: Any,
    out: Path,
    settings: Any,
    lm: dict[str, Any],
    no_progress: bool,
    as_json: bool,
) -> None:
    from pydantic import ValidationError

    from kgweave.language.joint.config import JointConfig
    from kgweave.language.joint.pipeline import train_joint

    try:
        joint_config = JointConfig.model_validate(
            {
                "kge": config,
                "language_model": settings.language_model,
                **{k: v for k, v in lm.items() if v is not None},
            }
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        where = str(first["loc"][0]).removesuffix("_s").replace("_", "-")
        raise InvalidArgumentError(f"--{where}: {first['msg']}") from None
    result = train_joint(data, joint_config, out, settings, progress=not no_progress)
    payload = {
        "artifact": str(result.path.resolve()),
        "dataset": data.name,
        "seconds": round(result.seconds, 3),
        "metrics": result.metrics,
        "completion_weights": result.completion_weights.to_dict()
        if result.completion_weights
        else None,
    }
    if as_json:
        emit_json(payload)
        return
    click.echo(f"trained jointly on {data.name} in {result.seconds:.1f}s")
    for name, metrics in result.metrics.items():
        if isinstance(metrics, dict) and "mrr" in metrics:
            emit_metrics(f"{name} (filtered):", metrics)
    fusion = result.metrics.get("text_fusion")
    if fusion:
        held = fusion.get("held_out") or {}
        if held:
            verdict = "kept" if fusion.get("accepted", True) else "refused (KGE-only weights)"
            click.echo(
                f"text fusion on held-out validation facts: MRR {held['kge_mrr']:.4f} (KGE) "
                f"-> {held['fused_mrr']:.4f}: {verdict}"
            )
        click.echo(
            f"text fusion fitted on valid: MRR {fusion['valid_kge_mrr']:.4f} (KGE) -> "
            f"{fusion['valid_mrr']:.4f}"
        )
        emit_metrics("test with text fusion (filtered):", fusion["test"])
    click.echo(f"model written to {result.path}")


@cli.command("eval")
@click.argument("model_dir", type=click.Path(path_type=Path))
@click.option("--dataset", "-d", required=True, help="Dataset name or folder.")
@click.option("--split", default="test", show_default=True, help="train, valid or test.")
@click.option("--per-relation", is_flag=True, help="Also print per-relation metrics.")
@click.option(
    "--plot",
    type=click.Path(path_type=Path),
    default=None,
    help="Write a PNG: where the true answers rank (tail and head queries) and MRR per relation.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def eval_(
    model_dir: Path, dataset: str, split: str, per_relation: bool, plot: Path | None, as_json: bool
) -> None:
    """Filtered evaluation of a trained model (both sides, realistic ranks)."""
    from kgweave.engine import evaluate_artifact

    artifact, result = evaluate_artifact(
        model_dir, dataset, split, get_settings(), progress=not as_json
    )
    if plot is not None:
        from kgweave.cli.output import evaluation_title
        from kgweave.evaluation.plots import plot_rank_distribution

        plot_rank_distribution(result, plot, evaluation_title(artifact, dataset, split))
    if as_json:
        payload = result.to_dict()
        if not per_relation:
            payload.pop("per_relation")
        if plot is not None:
            payload["plot"] = str(plot.resolve())
        emit_json(payload)
        return
    emit_metrics(f"{split} (filtered, {int(result.metrics['count'])} ranks):", result.metrics)
    if plot is not None:
        click.echo(f"rank distribution written to {plot}")
    if per_relation:
        click.echo(f"{'relation':<60} {'mrr':>7} {'hits@10':>8} {'count':>6}")
        for rel, m in result.per_relation.items():
            click.echo(
                f"{rel[-60:]:<60} {m['mrr']:>7.4f} {m['hits@10']:>8.4f} {int(m['count']):>6}"
            )


@cli.command()
@link_query_options
@click.option("--filter-known", is_flag=True, help="Drop answers that are known facts.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def predict(
    model_dir: Path | None,
    head: str | None,
    relation: str,
    tail: str | None,
    k: int | None,
    filter_known: bool,
    as_json: bool,
) -> None:
    """Most plausible tails for --head/--relation, or heads for --relation/--tail.

    With MODEL_DIR the model is loaded here; without it the running server answers. Models
    trained with --joint rank by their text fusion (KGE plus entity text) unless
    KGWEAVE_TEXT_FUSION=false; scores are then fused log-probabilities.
    """
    from kgweave.cli.connect import open_client
    from kgweave.predict import Query

    if (head is None) == (tail is None):
        raise InvalidArgumentError("give exactly one of --head and --tail")
    with open_client(model_dir) as client:
        reply = client.predict(Query(relation=relation, head=head, tail=tail), k or 0, filter_known)
    if as_json:
        emit_json(reply)
        return
    (result,) = reply["results"]
    for c in result["candidates"]:
        name, entity = c["name"], c["entity_id"]
        label = f"{name} ({entity})" if name and name != entity else entity
        mark = "  [known]" if c["known"] else ""
        click.echo(f"{c['rank']:>3}. {c['score']:>9.4f}  {label}{mark}")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def datasets(as_json: bool) -> None:
    """List the datasets available locally (no download)."""
    from kgweave.data import list_datasets

    found = list_datasets(get_settings())
    if as_json:
        emit_json([{"name": d.name, "path": str(d.path), "source": d.source} for d in found])
        return
    for d in found:
        click.echo(f"{d.name:<16} {d.source:<13} {d.path}")


from kgweave.cli import graph as _graph
from kgweave.cli import language as _language
from kgweave.cli import lm as _lm
from kgweave.cli import neo4j as _neo4j
from kgweave.cli import remote as _remote  # registers serve, status, ...
from kgweave.cli import tune as _tune
from kgweave.cli import write as _write

_remote.register(cli)
_graph.register(cli)
_language.register(cli)
_neo4j.register(cli)
_tune.register(cli)
cli.add_command(_write.write)  # kgweave write (graph changes through the server)
cli.add_command(_lm.lm)  # kgweave lm fetch | list


def main(argv: list[str] | None = None) -> int:
    """Entry point: runs the CLI and turns every error into one line and an exit code."""
    # the `debug` setting, read without Settings: it must work when other settings are invalid
    debug = os.environ.get("KGWEAVE_DEBUG", "").lower() in ("1", "true", "yes", "on")
    try:
        cli.main(args=argv, prog_name="kgweave", standalone_mode=False)
    except click.exceptions.Abort:
        err("aborted")
        return 130
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except KGWeaveError as exc:
        if debug:
            traceback.print_exc()
        err(f"error: {exc.message}")
        return exc.exit_code
    except KeyboardInterrupt:
        err("interrupted")
        return 130
    except Exception as exc:  # last resort: never a traceback to a user
        if debug:
            traceback.print_exc()
        err(f"internal error: {type(exc).__name__}: {exc} (KGWEAVE_DEBUG=1 shows the traceback)")
        return 70
    return 0


if __name__ == "__main__":
    sys.exit(main())
