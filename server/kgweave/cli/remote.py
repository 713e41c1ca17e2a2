"""The server and the commands that talk to it: serve, status, models, score, train --remote."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from kgweave.cli.connect import open_client
from kgweave.cli.options import triples_option
from kgweave.cli.output import emit_json, err, show
from kgweave.errors import InvalidArgumentError
from kgweave.settings import get_settings

if TYPE_CHECKING:
    from kgweave.api.client import BaseClient


def _client() -> BaseClient:
    return open_client(None)


@click.command()
@click.option(
    "--port", type=int, default=None, help="gRPC port [default: KGWEAVE_GRPC_PORT, 50051]."
)
@click.option("--host", default=None, help="Bind address [default: KGWEAVE_GRPC_HOST, 127.0.0.1].")
@click.option(
    "--http-port", type=int, default=None, help="Metrics/health/changes HTTP port [default: 8080]."
)
@click.option("--graph", "graph_uri", default=None, help="Graph URI [default: embedded FalkorDB].")
@click.option("--device", default=None, help="Torch device [default: auto].")
@click.option("--no-progress", is_flag=True, help="No progress bars while preparing.")
def serve(
    port: int | None,
    host: str | None,
    http_port: int | None,
    graph_uri: str | None,
    device: str | None,
    no_progress: bool,
) -> None:
    """Run the kgweave server (gRPC, plus HTTP metrics) until SIGTERM or Ctrl-C.

    With no graph configured it starts the embedded FalkorDB, imports the demo graph if the
    graph is empty, trains a first model if none exists, loads it, then serves.
    """
    import asyncio

    from kgweave.api.ports import check_ports_free
    from kgweave.api.server import serve_forever
    from kgweave.bootstrap import prepare_plane
    from kgweave.serving.logs import configure_logging
    from kgweave.serving.openmp import keep_default_for_children, use_serve_threads

    keep_default_for_children()  # torch is loaded: training jobs get OpenMP's default

    overrides = {
        k: v
        for k, v in {
            "grpc_port": port,
            "grpc_host": host,
            "http_port": http_port,
            "graph_uri": graph_uri,
            "device": device,
        }.items()
        if v is not None
    }
    settings = get_settings().model_copy(update=overrides)
    configure_logging(settings.log_format, settings.log_level)
    check_ports_free(settings)  # at once, not after the bootstrap's training
    from kgweave.api.auth import load_security

    # TLS files, tokens and bind addresses are checked before anything starts or trains
    security = load_security(settings, say=err)
    plane = prepare_plane(settings, progress=not no_progress)  # may train a first model
    from kgweave.api.frontend import serves_natively

    # then, with the native front end, a core is left to the transport
    use_serve_threads(settings.serve_threads, serves_natively(settings))
    from kgweave.changes.retrain import retraining_wanted

    retraining = retraining_wanted(settings)
    if settings.neo4j_cdc or retraining:
        from kgweave.graph.connect import open_store

        store = open_store(settings.graph_uri, settings)
        if settings.neo4j_cdc:
            plane.changes.start_cdc(store)
        if retraining:
            plane.changes.start_retraining(lambda: store)

    def ready(grpc_port: int, http: int) -> None:
        scheme = "https" if security.tls is not None else "http"
        http_host = settings.http_host or settings.grpc_host
        err(
            f"kgweave serving model {plane.versions.active().version} on "
            f"{settings.grpc_host}:{grpc_port}"
            + (" (TLS" + (", client certificates" if security.tls.client_ca else "") + ")"
               if security.tls is not None else "")
            + (", tokens required" if security.authorizer is not None else "")
            + f" (metrics on {scheme}://{http_host}:{http}/metrics); Ctrl-C stops"
        )  # fmt: skip

    try:
        asyncio.run(serve_forever(plane, settings, ready, security=security))
    finally:
        if plane.owns_embedded_graph:
            from kgweave.graph.embedded import EmbeddedFalkorDB

            EmbeddedFalkorDB(settings.graph_dir).stop()


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def status(as_json: bool) -> None:
    """The server's state: active model and its metrics, graph, device, memory, uptime."""
    with _client() as client:
        show(client.status(), as_json, _print_status)


def _print_status(info: dict[str, Any]) -> None:
    model = info.get("active_model")
    click.echo(f"server      {get_settings().server} (kgweave {info['kgweave_version']})")
    click.echo(f"ready       {info['ready']}")
    if info.get("frontend"):
        click.echo(f"front end   {info['frontend']}")
    if model:
        mrr = model.get("valid_metrics", {}).get("mrr")
        click.echo(
            f"model       {model['version']}: {model['model']} dim {model['dim']}, "
            f"{model['num_entities']} entities"
            + (f", valid MRR {_number(mrr)}" if mrr is not None else "")
        )
    else:
        click.echo("model       none")
    click.echo(f"graph       {info['graph_backend']} {info['graph_uri']}")
    click.echo(f"device      {info['device']}")
    click.echo(f"memory      {int(info['process_memory_bytes']) / 2**20:.0f} MiB")
    click.echo(f"uptime      {float(info['uptime_s']):.0f}s")
    click.echo(f"jobs        {info['active_jobs']} running")
    if info.get("changes"):
        c = info["changes"]
        click.echo(
            f"changes     served up to log offset {c['applied_offset']} of {c['end_offset']}"
            + (f" (last error: {c['last_error']})" if c["last_error"] else "")
        )
        started = sum(
            int(c.get(k, 0))
            for k in ("updates_started", "full_retrains_started", "refinements_started")
        )
        if started or c.get("updates_skipped"):
            click.echo(
                f"retraining  trained up to log offset {c.get('trained_offset', 0)}; "
                f"{c.get('updates_registered', 0)} of {c.get('updates_started', 0)} updates "
                f"registered, {c.get('full_retrains_started', 0)} full retrains"
                + (
                    f", {c.get('refinements_activated', 0)} of {c['refinements_started']} "
                    "refinements activated"
                    if int(c.get("refinements_started", 0))
                    else ""
                )
                + (f"; {c['updates_skipped']}" if c.get("updates_skipped") else "")
                + (f" (last error: {c['retrain_error']})" if c.get("retrain_error") else "")
            )
        if int(c.get("snapshot_diffs", 0)):
            click.echo(
                f"diff        {c['snapshot_diffs']} checks of the graph, "
                f"{c.get('snapshot_diff_reads', 0)} reads "
                f"({c.get('snapshot_diff_partial_reads', 0)} of some relations only); "
                f"changes found behind the log: {c.get('changes_behind_the_log', 0)}"
            )


@click.group()
def models() -> None:
    """Model versions registered on the server."""


@models.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def models_list(as_json: bool) -> None:
    """Every registered version, newest first; * marks the active one."""
    with _client() as client:
        show(client.models(), as_json, _print_models)


def _print_models(listing: dict[str, Any]) -> None:
    models = listing.get("models", [])
    fused = any(m.get("fused_test_metrics") for m in models)
    click.echo(
        f"  {'version':<8} {'model':<9} {'dim':>4} {'valid mrr':>9} {'test mrr':>9}  "
        + (f"{'fused test':>10}  " if fused else "")
        + f"{'created':<25}  decision"
    )
    for m in models:
        mark = "*" if m.get("active") else " "
        valid = m.get("valid_metrics", {}).get("mrr")
        test = m.get("test_metrics", {}).get("mrr")
        fused_test = m.get("fused_test_metrics", {}).get("mrr")
        fused_cell = "-" if fused_test is None else _number(fused_test)
        click.echo(
            f"{mark} {m['version']:<8} {m['model']:<9} {m['dim']:>4} "
            f"{'-' if valid is None else _number(valid):>9} "
            f"{'-' if test is None else _number(test):>9}  "
            + (f"{fused_cell:>10}  " if fused else "")
            + f"{m['created_at']:<25}  {m.get('decision') or '-'}"
        )


@models.command("activate")
@click.argument("version")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def models_activate(version: str, as_json: bool) -> None:
    """Serve VERSION from now on (requests in flight finish on the old one)."""
    with _client() as client:
        info = client.activate(version)
    if as_json:
        emit_json(info)
    else:
        click.echo(f"model {info['version']} is active")


@models.command("register")
@click.argument("model_dir", type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.option(
    "--activation",
    type=click.Choice(["if_better", "always", "never"]),
    default=None,
    help="Activate it: if its validation MRR beats the active model's, always, or never "
    "[default: the server's KGWEAVE_ACTIVATION_POLICY].",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def models_register(model_dir: Path, activation: str | None, as_json: bool) -> None:
    """Send a model folder trained here (kgweave train --out MODEL_DIR) to the server, where it
    is verified and registered as a new version."""
    with _client() as client:
        reply = client.register(model_dir, activation or "")
    if as_json:
        emit_json(reply)
        return
    click.echo(f"registered {model_dir} as {reply['model']['version']}: {reply['message']}")


@click.command()
@click.argument("model_dir", type=click.Path(path_type=Path), required=False)
@triples_option(
    "--triple",
    "-t",
    "triples",
    help="A triple to score (repeatable). Without any, tab-separated triples are read from stdin.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def score(model_dir: Path | None, triples: tuple[tuple[str, str, str], ...], as_json: bool) -> None:
    """Score triples (higher is more plausible) with MODEL_DIR, or on the server without it."""
    rows = [tuple(t) for t in triples]
    if not rows:
        for number, line in enumerate(sys.stdin, start=1):
            if not line.strip():
                continue
            parts = line.rstrip("\r\n").split("\t")
            if len(parts) != 3:
                raise InvalidArgumentError(
                    f"stdin line {number}: expected 3 tab-separated fields, got {len(parts)}"
                )
            rows.append((parts[0], parts[1], parts[2]))
    if not rows:
        raise InvalidArgumentError("no triples given (use --triple H R T or stdin)")
    typed = [(h, r, t) for h, r, t in rows]
    with open_client(model_dir) as client:
        reply = client.score(typed)
    if as_json:
        reply["triples"] = [{"head": h, "relation": r, "tail": t} for h, r, t in typed]
        emit_json(reply)
        return
    for (h, r, t), s in zip(typed, reply["scores"], strict=True):
        click.echo(f"{s:>10.4f}  {h}\t{r}\t{t}")


def _number(value: str | float) -> str:
    """A metric with 4 decimals; protobuf's JSON form writes NaN and inf as the strings "NaN"
    and "Infinity", which ``:.4f`` refuses."""
    return f"{float(value):.4f}"


def job_postfix(job: dict[str, Any]) -> dict[str, str]:
    """The progress bar's fields for a job update (a WatchJob message as JSON)."""
    postfix = {"phase": str(job.get("phase", ""))}
    for key in ("loss", "valid_mrr"):
        if job.get(key):
            postfix[key] = _number(job[key])
    if job.get("rate") and job.get("rate_unit"):
        postfix["rate"] = f"{float(job['rate']):.1f} {job['rate_unit']}"
    if float(job.get("eta_s", -1)) >= 0:
        postfix["eta"] = f"{float(job['eta_s']):.0f}s"
    return postfix


class JobBar:
    """The progress bar of a job followed from the CLI: its epochs (trials for a search) while
    it counts them; from the first phase that reports a rate of its own instead (a joint job's
    language model, in tokens/s), a bar of that phase, its share done from the time spent in
    it and the job's ETA (the epochs counted before are done by then)."""

    def __init__(self, unit: str, disable: bool = False) -> None:
        from tqdm.auto import tqdm

        self._tqdm, self._disable = tqdm, disable
        self.bar = tqdm(total=None, unit=unit, desc="job", disable=disable)
        self.phase = ""  # the rated phase the bar shows ("": epochs)
        self._began = 0.0

    def show(self, job: dict[str, Any]) -> None:
        """Show a job update (a WatchJob message as JSON)."""
        phase = str(job.get("phase", ""))
        if job.get("rate_unit") and phase != self.phase:  # a rated phase begins
            self.bar.close()
            self.bar = self._tqdm(total=100, desc=phase, disable=self._disable,
                                  bar_format=PHASE_BAR)  # fmt: skip
            self.phase, self._began = phase, time.monotonic()
        if not self.phase:
            if job.get("epochs"):
                self.bar.total = int(job["epochs"])
            self.bar.n = int(job.get("epoch", 0))
        elif phase != self.phase:  # after it: done
            self.bar.n = 100
        elif float(job.get("eta_s", -1)) >= 0:
            spent = time.monotonic() - self._began
            eta = float(job["eta_s"])
            self.bar.n = 100 if eta <= 0 else min(99, int(100 * spent / (spent + eta)))
        self.bar.set_postfix(job_postfix(job), refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


#: a rated phase's bar: its share done, the time spent, then the job's fields
PHASE_BAR = "{desc}: {percentage:3.0f}%|{bar}| [{elapsed}{postfix}]"


def train_remote(
    values: dict[str, Any],
    dataset: str,
    activation: str,
    detach: bool,
    quiet: bool,
    as_json: bool,
    tuning: dict[str, Any] | None = None,
) -> None:
    """``kgweave train --remote``: start a job on the server and follow it; with ``tuning``
    (``kgweave tune --remote``), a search whose epochs are trials."""
    from kgweave.training.config import JOB_FIELDS  # lazy: the client needs no torch otherwise

    unsupported = sorted(set(values) - {*JOB_FIELDS, "joint"})
    if unsupported:
        flags = ", ".join("--" + u.replace("_", "-") for u in unsupported)
        raise InvalidArgumentError(f"{flags} cannot be sent to the server (local training only)")
    with _client() as client:
        job = client.start_training(values, dataset, activation, tuning)
        if detach:
            emit_json(job) if as_json else click.echo(job["job_id"])
            return
        if not as_json:
            err(f"job {job['job_id']} started on {client.address}")
        bar = JobBar("trial" if tuning else "epoch", disable=quiet or as_json)
        try:
            for update in client.watch(job["job_id"]):
                job = update
                bar.show(job)
        except KeyboardInterrupt:
            client.cancel(job["job_id"])
            raise
        finally:
            bar.close()
    if as_json:
        emit_json(job)
        return
    state = job["state"].removeprefix("JOB_STATE_").lower()
    if state != "succeeded":
        from kgweave.errors import KGWeaveError

        raise KGWeaveError(f"job {job['job_id']} {state}: {job.get('message') or 'no details'}")
    line = f"job {job['job_id']} succeeded: model {job['model_version']}"
    if job.get("message"):
        line += f" ({job['message']})"
    click.echo(line)


def register(group: click.Group) -> None:
    """Add the server commands to the CLI."""
    for command in (serve, status, models, score):
        group.add_command(command)
