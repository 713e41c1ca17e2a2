"""The CLI end to end, in-process, on the demo graph and real datasets."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from kgweave.cli.main import main

#: ``cli("train", "-d", "demo", ...)``: kgweave run in-process -> (exit code, stdout, stderr)
Cli = Callable[..., tuple[int, str, str]]


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Cli:
    """Runs kgweave in-process with the given arguments (paths as they are) and returns its
    exit code and what it wrote to stdout and stderr."""

    def run(*args: str | Path) -> tuple[int, str, str]:
        code = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture(scope="module")
def demo_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "model"
    assert (
        main(
            [
                "train",
                "--dataset",
                "demo",
                "--out",
                str(out),
                "--epochs",
                "60",
                "--dim",
                "64",
                "--batch-size",
                "128",
                "--no-progress",
                "--json",
            ]
        )
        == 0
    )
    return out


def test_train_json_reports_metrics_and_artifact(cli: Cli, tmp_path: Path) -> None:
    code, out, _ = cli(
        "train",
        "-d",
        "nations",
        "-m",
        "distmult",
        "-o",
        tmp_path / "m",
        "--epochs",
        "5",
        "--dim",
        "16",
        "--no-progress",
        "--json",
    )
    assert code == 0
    payload = json.loads(out)
    assert Path(payload["artifact"]) == (tmp_path / "m").resolve()
    assert {"mrr", "hits@1", "hits@3", "hits@10", "mean_rank"} <= set(payload["test"])
    assert payload["valid"]["mrr"] > 0
    assert (tmp_path / "m" / "config.json").is_file()


def test_eval_matches_training_report(cli: Cli, demo_model: Path) -> None:
    code, out, _ = cli("eval", demo_model, "--dataset", "demo", "--split", "test", "--json")
    assert code == 0
    metrics = json.loads(out)
    stored = json.loads((demo_model / "config.json").read_text())["metrics"]["test"]
    assert metrics["mrr"] == pytest.approx(stored["mrr"])
    code, out, _ = cli("eval", demo_model, "--dataset", "demo")
    assert code == 0
    for key in ("mrr", "hits@1", "hits@3", "hits@10", "mean_rank"):
        assert key in out


def test_eval_plot_draws_the_rank_distribution(cli: Cli, demo_model: Path, tmp_path: Path) -> None:
    from PIL import Image

    png = tmp_path / "ranks.png"
    code, out, _ = cli("eval", demo_model, "-d", "demo", "--plot", png, "--json")
    assert code == 0 and json.loads(out)["plot"] == str(png.resolve())
    with Image.open(png) as image:  # two panels: ranks per side, MRR per relation
        assert image.format == "PNG" and image.size == (1320, 495)
        colours = image.convert("RGB").getcolors(maxcolors=1 << 16) or []
    assert len(colours) > 50  # drawn, not blank
    code, _, err = cli("eval", demo_model, "-d", "demo", "--split", "nope")
    assert code != 0 and "Traceback" not in err


def test_eval_plot_title_names_the_model_and_the_data(demo_model: Path, datasets_dir: Path) -> None:
    """Not the folder's name ("model on demo"): the model, its size, what it was trained on."""
    from kgweave.artifact import load_artifact
    from kgweave.cli.output import evaluation_title

    artifact = load_artifact(demo_model)
    assert evaluation_title(artifact, "demo", "test") == "ComplEx (dim 64) on demo test"
    assert evaluation_title(artifact, f"{datasets_dir / 'umls'}/", "valid") == (
        "ComplEx (dim 64, trained on demo) on umls valid"
    )


def test_predict_by_name_learns_real_patterns(cli: Cli, demo_model: Path) -> None:
    code, out, _ = cli(
        "predict", demo_model, "--head", "Marie Curie", "--relation", "born_in", "-k", "5", "--json"
    )
    assert code == 0
    answers = json.loads(out)["results"][0]["candidates"]  # the proto's PredictLinksResponse
    assert len(answers) == 5
    assert answers[0]["rank"] == 1
    assert answers[0]["score"] >= answers[-1]["score"]
    # a learned pattern: people are born in cities, and cities lie in countries
    demo = Path(__file__).resolve().parent.parent / "server" / "kgweave" / "demo"
    rows = [line.split("\t") for line in (demo / "train.tsv").read_text().splitlines() if line]
    countries = {t for _, r, t in rows if r == "citizen_of"}
    cities = {h for h, r, t in rows if r == "located_in" and t in countries}
    cities |= {h for h, r, _ in rows if r == "capital_of"} | {
        t for _, r, t in rows if r == "born_in"
    }
    assert sum(a["entity_id"] in cities for a in answers) >= 4, answers


def test_filter_known_drops_training_facts(cli: Cli, demo_model: Path) -> None:
    args = (
        "predict",
        demo_model,
        "--relation",
        "located_in",
        "--tail",
        "united_states",
        "-k",
        "20",
    )
    _, plain, _ = cli(*args, "--json")
    _, filtered, _ = cli(*args, "--json", "--filter-known")
    assert any(a["known"] for a in json.loads(plain)["results"][0]["candidates"])
    assert not any(a["known"] for a in json.loads(filtered)["results"][0]["candidates"])


def test_datasets_lists_local(cli: Cli) -> None:
    code, out, _ = cli("datasets", "--json")
    assert code == 0
    names = [d["name"] for d in json.loads(out)]
    assert names[0] == "demo" and "fb15k-237" in names


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (("train", "-d", "nope", "-o", "x"), 3, "error: no dataset 'nope'"),
        (("train", "-d", "demo", "-o", "x", "-m", "tucker"), 2, "unknown model 'tucker'"),
        (("train", "-d", "demo", "-o", "x", "--dim", "0"), 2, "--dim"),
        (("predict", "missing-model", "-r", "born_in", "--head", "x"), 3, "does not exist"),
        (("predict", "m", "-r", "born_in"), 2, "exactly one of --head and --tail"),
        (("train", "-d", "demo", "-o", "x", "--lm-time-budget", "5"), 2, "need --joint"),
        (("train", "-d", "demo", "-o", "x", "--no-entity-fusion"), 2, "need --joint"),
        (("train", "--remote", "--joint", "--no-entity-fusion"), 2, "local --joint training only"),
        (
            ("train", "-d", "demo", "-o", "x", "--joint", "--lm-time-budget", "0"),
            2,
            "--lm-time-budget: Input should be greater than 0",
        ),
    ],
)
def test_errors_are_one_line(
    cli: Cli,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    args: tuple[str, ...],
    code: int,
    message: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    got, out, err = cli(*args)
    assert got == code
    assert message in err
    assert "Traceback" not in err + out
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("debug", [None, "1", "true"])
def test_internal_error_is_one_line_that_says_how_to_see_the_traceback(
    cli: Cli, monkeypatch: pytest.MonkeyPatch, debug: str | None
) -> None:
    """A bug (not a user error) is one line and exit 70; KGWEAVE_DEBUG (a documented setting,
    any of pydantic's true values) adds the traceback."""
    import kgweave.engine

    def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(kgweave.engine, "evaluate_artifact", broken)  # the failure injected
    if debug is None:
        monkeypatch.delenv("KGWEAVE_DEBUG", raising=False)
    else:
        monkeypatch.setenv("KGWEAVE_DEBUG", debug)
    code, _, err = cli("eval", "some-model", "-d", "demo")
    assert code == 70
    last = "internal error: RuntimeError: a bug (KGWEAVE_DEBUG=1 shows the traceback)"
    assert err.splitlines()[-1] == last
    assert ("Traceback" in err) == bool(debug), err


def test_an_invalid_setting_is_one_line_naming_the_variable(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KGWEAVE_GRPC_PORT", "fifty")
    code, out, err = cli("datasets")
    assert code == 2 and out == "", err
    assert err.startswith("error: KGWEAVE_GRPC_PORT='fifty': Input should be a valid integer")
    assert err.count("\n") == 1


def test_unknown_entity_suggests_names(cli: Cli, demo_model: Path) -> None:
    code, _, err = cli("predict", demo_model, "--head", "Marie Curi", "--relation", "born_in")
    assert code == 3
    assert "did you mean 'Marie Curie'" in err
    code, _, err = cli("predict", demo_model, "--head", "Marie Curie", "--relation", "born")
    assert code == 3 and "unknown relation 'born'" in err


def test_malformed_dataset_file_reports_line(cli: Cli, tmp_path: Path) -> None:
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "train.tsv").write_text("a\tr\tb\nb\tr\n")
    (folder / "valid.tsv").write_text("a\tr\tb\n")
    (folder / "test.tsv").write_text("a\tr\tb\n")
    code, _, err = cli("train", "-d", folder, "-o", tmp_path / "m")
    assert code == 4
    assert "train.tsv:2: expected 3 tab-separated fields" in err


def test_joint_training_without_the_entity_fusion(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`train --joint --no-entity-fusion` (the ablation): the LM trains on text alone and the
    model's completion scores without the fusion (test_joint checks the default keeps it)."""
    monkeypatch.setenv("KGWEAVE_LANGUAGE_MODEL", "small")  # seconds, not minutes
    out = tmp_path / "joint"
    code, stdout, err = cli("train", "-d", "demo", "-o", out, "--joint", "--no-entity-fusion",
                            "--epochs", "4", "--dim", "16", "--lm-epochs", "1", "--json",
                            "--no-progress")  # fmt: skip
    assert code == 0, err
    assert json.loads(stdout)["metrics"]["lm"]["entity_fusion"] is False
    joint = json.loads((out / "language" / "joint.json").read_text())
    assert joint["config"]["entity_fusion"] is False and joint["fusion"]["scoring"] is False
