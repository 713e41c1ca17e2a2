"""Language-side commands: verbalize (graph to text) and corpus (KG-to-text for LM training)."""

from __future__ import annotations

from pathlib import Path

import click

from kgweave.cli.connect import link_query_options
from kgweave.cli.options import report_options, triples_option
from kgweave.cli.output import emit_json
from kgweave.errors import InvalidArgumentError, echo
from kgweave.settings import get_settings


@click.command()
@click.argument("entity", required=False)
@click.option(
    "--model", "model_dir", type=click.Path(path_type=Path), default=None,
    help="Use this model folder's graph (default: ask the server).",
)  # fmt: skip
@click.option("--dataset", "-d", default=None, help="Use this dataset's graph and text files.")
@triples_option(
    "--triple", "-t", "triples", help="Verbalize this triple instead of an entity (repeatable)."
)
@click.option("--max-chars", type=int, default=600, show_default=True, help="Length limit.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def verbalize(
    entity: str | None,
    model_dir: Path | None,
    dataset: str | None,
    triples: tuple[tuple[str, str, str], ...],
    max_chars: int,
    as_json: bool,
) -> None:
    """Graph to text: ENTITY (id or name) with its facts, or --triple sentences.

    Facts come in order of importance and stop at the length limit on a sentence boundary.
    """
    rows = [(h, r, t) for h, r, t in triples]
    if bool(entity) == bool(rows):
        raise InvalidArgumentError("give an ENTITY or --triple (not both)")
    if model_dir is not None and dataset is not None:
        raise InvalidArgumentError("give --model or --dataset, not both")
    if dataset is None:
        from kgweave.cli.connect import open_client

        with open_client(model_dir) as client:
            reply = client.verbalize(entity or "", rows, max_chars)
        text, sentences = reply["text"], reply["sentences"]
    else:
        from kgweave.engine import open_dataset
        from kgweave.language.features.verbalize import Verbalizer

        assert dataset is not None
        data = open_dataset(dataset, get_settings())
        verbalizer = Verbalizer.from_dataset(data)
        if entity:
            label = entity if entity in data.entities else _by_name(data, entity)
            text, sentences = verbalizer.entity(label, max_chars=max_chars), []
        else:
            sentences = [verbalizer.triple(h, r, t) for h, r, t in rows]
            text = " ".join(sentences)
    if as_json:
        emit_json({"text": text, "sentences": sentences})
    else:
        click.echo("\n".join(sentences) if sentences else text)


def _by_name(data: object, name: str) -> str:
    from kgweave.data.dataset import KGDataset
    from kgweave.errors import NotFoundError, did_you_mean

    assert isinstance(data, KGDataset)
    folded = name.casefold()
    hits = [e for e, n in data.entity_names.items() if n.casefold() == folded]
    if len(hits) == 1:
        return hits[0]
    if hits:
        raise InvalidArgumentError(
            f"entity name {echo(name)} is ambiguous: use an id ({hits[0]}, ...)"
        )
    suffix = did_you_mean(name, list(data.entity_names.values()) + data.entities.labels)
    raise NotFoundError(f"unknown entity {echo(name)}{suffix}")


@click.command()
@click.option("--dataset", "-d", required=True, help="Dataset name or folder.")
@click.option(
    "--out", "-o", type=click.Path(path_type=Path), required=True, help="Text file to write."
)
@click.option(
    "--splits", default="train", show_default=True,
    help="Comma-separated splits whose facts become sentences (train keeps evaluation facts out).",
)  # fmt: skip
@click.option("--no-descriptions", is_flag=True, help="Leave entity descriptions out.")
@report_options
def corpus(
    dataset: str, out: Path, splits: str, no_descriptions: bool, no_progress: bool, as_json: bool
) -> None:
    """Write a KG-to-text corpus (every fact as a sentence) for language-model training."""
    from kgweave.engine import open_dataset
    from kgweave.language.joint.corpus import write_corpus

    data = open_dataset(dataset, get_settings())
    wanted = tuple(s.strip() for s in splits.split(",") if s.strip())
    for split in wanted:
        data.split(split)  # unknown split: NotFoundError naming the ones there are
    report = write_corpus(
        data, out, splits=wanted, include_descriptions=not no_descriptions,
        progress=not no_progress,
    )  # fmt: skip
    if as_json:
        emit_json({"path": str(out), **report})
    else:
        click.echo(", ".join(f"{v} {k}" for k, v in report.items()) + f" written to {out}")


@click.command()
@link_query_options
@click.option(
    "--kge-candidates", type=int, default=None,
    help="Candidates from the embeddings before re-ranking [default: 50].",
)  # fmt: skip
@click.option("--no-generate", is_flag=True, help="Do not let the LM propose names.")
@click.option(
    "--write", "write_to_graph", is_flag=True,
    help="Add the accepted candidates to the graph as suggested links (KGWEAVE_SUGGESTED).",
)  # fmt: skip
@click.option(
    "--min-score", type=float, default=0.0, show_default=True,
    help="With --write: lowest combined score accepted.",
)  # fmt: skip
@click.option("--graph", "graph_uri", default=None, help="With --write and MODEL_DIR: graph URI.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def complete(
    model_dir: Path | None,
    head: str | None,
    relation: str,
    tail: str | None,
    k: int | None,
    kge_candidates: int | None,
    no_generate: bool,
    write_to_graph: bool,
    min_score: float,
    graph_uri: str | None,
    as_json: bool,
) -> None:
    """LLM-driven completion of (--head, --relation, ?) or (?, --relation, --tail).

    Candidates come from the embeddings' top-N (fused with entity text for --joint models) and
    from the language model (constrained to entity names), re-ranked by w_kge * graph +
    w_lm * lm_logprob + bias (weights fitted on validation by `kgweave train --joint`; graph is
    the text-fused score when the model has one, else the KGE score). With MODEL_DIR it runs
    here; without, on the server.
    """
    if (head is None) == (tail is None):
        raise InvalidArgumentError("give exactly one of --head and --tail")
    from kgweave.cli.connect import open_client
    from kgweave.predict import Query

    with open_client(model_dir, graph_uri) as client:
        reply = client.complete(
            Query(relation=relation, head=head, tail=tail), k or 0, kge_candidates or 0,
            not no_generate, write_to_graph, min_score,
        )  # fmt: skip
    if as_json:
        emit_json(reply)
        return
    rows = reply["candidates"]
    written = int(reply["written"])
    fused = any(c["graph_score"] != c["kge_score"] for c in rows)
    lm = "(lm - lm_marginal)" if reply.get("lm_feature") == "pmi" else "lm"
    if reply.get("w_text") is None:  # the two-signal form of models fitted before
        graph = "graph (KGE + text)" if fused else "kge"
        terms = f"{reply['w_kge']:.3g} * {graph}"
    else:
        terms = f"{reply['w_kge']:.3g} * kge + {reply['w_text']:.3g} * graph (KGE + text)"
    click.echo(f"combined = {terms} + {reply['w_lm']:.3g} * {lm} + {reply['bias']:.3g}")
    click.echo(
        f"{'rank':>4} {'combined':>8}  {'kge':>7}  "
        + (f"{'graph':>7}  " if fused else "")
        + f"{'lm':>8}  {'source':<6}  entity (evidence below)"
    )
    for c in rows:
        label = f"{c['name']} ({c['entity_id']})" if c["name"] != c["entity_id"] else c["entity_id"]
        mark = "  [known]" if c["known"] else ""
        click.echo(
            f"{c['rank']:>3}. {c['combined_score']:>8.3f}  {c['kge_score']:>7.3f}  "
            + (f"{c['graph_score']:>7.3f}  " if fused else "")
            + f"{c['lm_logprob']:>8.2f}  {c['source']:<6}  {label}{mark}"
        )
        click.echo(f"       {c['evidence']}")
    if write_to_graph:
        click.echo(f"{written} suggested links written to the graph")


def register(group: click.Group) -> None:
    for command in (verbalize, corpus, complete):
        group.add_command(command)
