"""LoRA fine-tuning of the real pretrained LM (SmolLM2-135M-Instruct, the ``pretrained_lm``
fixture): adapters train, are saved as safetensors and reload to identical logits, belong to
one base model; a tiny joint run on Nations with it writes an artifact that `kgweave complete`
serves."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from kgweave.cli.main import main
from kgweave.data import load_dataset
from kgweave.errors import ArtifactError
from kgweave.language.components.lm import (
    encode_texts,
    load_causal_lm,
    sequence_logprob,
    train_lm,
)
from kgweave.language.components.lora import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    add_lora,
    base_identity,
    check_loaded_base,
    load_adapters,
    locate_base,
    lora_targets,
    save_adapters,
)
from kgweave.language.components.pretrained import DEFAULT_LM
from kgweave.language.features.lm_scoring import LMScorer
from kgweave.language.joint.artifact import load_joint
from kgweave.language.joint.config import JointConfig
from kgweave.language.joint.pipeline import train_joint
from kgweave.serving.served import ServedModel
from kgweave.settings import Settings

TEXTS = [
    "Marie Curie was born in Warsaw.",
    "Alan Turing was born in London.",
    "Ada Lovelace was born in London.",
    "Niels Bohr was born in Copenhagen.",
]


def _logits(model: Any, tokenizer: Any) -> torch.Tensor:
    batch = encode_texts(tokenizer, TEXTS)
    with torch.no_grad():
        out: torch.Tensor = model(
            input_ids=batch.input_ids, attention_mask=batch.attention_mask
        ).logits
    return out


@pytest.fixture(scope="module")
def adapters(pretrained_lm: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """SmolLM2 with LoRA on attention, trained 4 steps on four sentences, saved."""
    lm, tokenizer = load_causal_lm(pretrained_lm, device="cpu")
    identity = base_identity(DEFAULT_LM, str(pretrained_lm), lm)
    base_before = lm.model.layers[0].self_attn.q_proj.weight.detach().clone()
    torch.manual_seed(0)
    model = add_lora(lm, rank=4, alpha=8, dropout=0.0)
    losses: list[float] = []
    train_lm(model, tokenizer, TEXTS, epochs=4, batch_size=4, lr=3e-3, device="cpu",
             progress=False, step_losses=losses)  # fmt: skip
    folder = tmp_path_factory.mktemp("adapters")
    written = save_adapters(model, folder, DEFAULT_LM)
    return {
        "model": model,
        "tokenizer": tokenizer,
        "identity": identity,
        "losses": losses,
        "folder": folder,
        "written": written,
        "base_before": base_before,
        "logits": _logits(model.eval(), tokenizer),
    }


def test_lora_trains_adapters_only_and_the_loss_goes_down(adapters: dict[str, Any]) -> None:
    model, losses = adapters["model"], adapters["losses"]
    assert len(losses) == 4 and losses[-1] < losses[0] - 0.5
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    assert {n.split(".")[-4] for n in trainable} == {"q_proj", "k_proj", "v_proj", "o_proj"}
    base = model.base_model.model.model.layers[0].self_attn.q_proj.base_layer.weight
    torch.testing.assert_close(base, adapters["base_before"], rtol=0, atol=0)  # frozen


def test_adapters_reload_to_identical_logits(adapters: dict[str, Any], pretrained_lm: Path) -> None:
    folder = adapters["folder"]
    assert sorted(p.name for p in folder.iterdir()) == [ADAPTER_CONFIG, ADAPTER_WEIGHTS]
    size = (folder / ADAPTER_WEIGHTS).stat().st_size
    assert size < 5_000_000  # adapters, not the 538 MB base
    config = json.loads((folder / ADAPTER_CONFIG).read_text())
    assert config["r"] == 4 and config["base_model_name_or_path"] == DEFAULT_LM
    identity = adapters["identity"]
    assert identity["kind"] == "packaged" and identity["name"] == DEFAULT_LM
    where = locate_base(identity, pretrained_lm.parent.parent)
    assert where == str(pretrained_lm)
    base, tokenizer = load_causal_lm(where, device="cpu")
    check_loaded_base(identity, base)
    reloaded = load_adapters(base, folder)
    torch.testing.assert_close(_logits(reloaded, tokenizer), adapters["logits"], rtol=0, atol=0)
    # and the adapters do change the base model's answers
    with reloaded.disable_adapter():
        assert not torch.allclose(_logits(reloaded, tokenizer), adapters["logits"], atol=1e-3)


def _tiny_llama(seed: int) -> Any:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=49152,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    return LlamaForCausalLM(config)


def _tiny_llama_folder(folder: Path, seed: int, tokenizer_from: Path) -> Path:
    """A small random Llama saved as a folder, with SmolLM2's tokenizer."""
    _tiny_llama(seed).save_pretrained(str(folder))
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tokenizer_from / name, folder / name)
    return folder


def test_adapters_of_another_base_model_are_refused(
    adapters: dict[str, Any], pretrained_lm: Path, tmp_path: Path
) -> None:
    data_dir = pretrained_lm.parent.parent
    other = dict(adapters["identity"], gguf_sha256="0" * 64)
    with pytest.raises(ArtifactError, match="another base model"):
        locate_base(other, data_dir)
    # a folder base whose weights changed since the adapters were trained
    folder = _tiny_llama_folder(tmp_path / "base", 0, pretrained_lm)
    lm, _ = load_causal_lm(folder, device="cpu")
    identity = base_identity(str(folder), str(folder), lm)
    assert identity["kind"] == "folder" and locate_base(identity, data_dir) == str(folder)
    shutil.rmtree(folder)
    _tiny_llama_folder(folder, 1, pretrained_lm)
    with pytest.raises(ArtifactError, match="another base model"):
        locate_base(identity, data_dir)
    # SmolLM2's adapters on another architecture's shapes: refused by shape and by peft
    with pytest.raises(ArtifactError, match="hidden_size 576"):
        check_loaded_base(adapters["identity"], lm)
    with pytest.raises(ArtifactError, match="do not fit the base LM"):
        load_adapters(lm, adapters["folder"])


def test_lora_targets_attention_and_optionally_the_mlp() -> None:
    lm = _tiny_llama(0)
    attention = ["self_attn.k_proj", "self_attn.o_proj", "self_attn.q_proj", "self_attn.v_proj"]
    assert lora_targets(lm) == attention
    assert lora_targets(lm, mlp=True) == sorted(
        [*attention, "mlp.down_proj", "mlp.gate_proj", "mlp.up_proj"]
    )


def test_joint_run_with_the_pretrained_lm_is_served_by_complete(
    pretrained_lm: Path, datasets_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Nations, a few KGE epochs and 3 LoRA steps: the artifact holds adapters (no base copy),
    the loss plot and the base's identity; `kgweave complete MODEL_DIR` answers from it."""
    nations = load_dataset(datasets_dir / "nations", name="nations")
    text = torch.randn(nations.num_entities, 16, generator=torch.Generator().manual_seed(0))
    config = JointConfig.model_validate(
        {
            "kge": {"dim": 16, "epochs": 2, "eval_every": 2},
            "lm_max_steps": 3,
            "lm_batch_size": 4,
            "lm_max_length": 32,
            "lora_rank": 4,
            "text_fusion": False,
            "fit_completion": False,
        }
    )
    settings = Settings(data_dir=pretrained_lm.parent.parent, device="cpu", offline=True)
    out = tmp_path / "model"
    result = train_joint(nations, config, out, settings, progress=False, text_vectors=text)
    language = out / "language"
    assert (language / ADAPTER_WEIGHTS).is_file() and (language / "lm_loss.png").is_file()
    assert not (language / "model.safetensors").exists()
    assert sum(p.stat().st_size for p in language.iterdir()) < 20_000_000
    joint = json.loads((language / "joint.json").read_text())
    assert joint["language_model"] == DEFAULT_LM and joint["base_model"]["kind"] == "packaged"
    assert {ADAPTER_WEIGHTS, ADAPTER_CONFIG, "lm_loss.png"} <= set(joint["files"])
    assert result.metrics["lm"]["steps"] == 3 and result.metrics["lm"]["adapters"]
    assert result.metrics["lm"]["time_budget_s"] is None  # steps given: no CPU default
    assert result.metrics["lm"]["corpus_facts"] == len(nations.train)
    loaded = load_joint(out, settings=settings)
    assert hasattr(loaded.lm, "peft_config")
    other = tmp_path / "other-base"  # the same adapters, said to belong to another GGUF
    shutil.copytree(out, other)
    edited = json.loads((other / "language" / "joint.json").read_text())
    edited["base_model"]["gguf_sha256"] = "f" * 64
    (other / "language" / "joint.json").write_text(json.dumps(edited))
    with pytest.raises(ArtifactError, match="another base model"):
        load_joint(other, settings=settings)
    # served: the LM is loaded and warmed with the version, once for the versions of a folder
    served = ServedModel.load("v0001", out, "cpu")
    assert served.language_loaded
    again = ServedModel.load("v0001", out, "cpu")
    served_lm = served.completer(None)[0].model
    assert again.completer(None)[0].model is served_lm
    # served with the adapters merged into the base: the same scores, within float rounding
    assert not hasattr(served_lm, "peft_config")
    # completion scores as the LM was trained: the KG embeddings at the entities' mentions
    # (the fusion's hook on the blocks the merge kept), and they move the scores
    assert joint["fusion"]["scoring"] is True
    assert {"valid_loss", "valid_loss_text_alone"} <= set(result.metrics["lm"])
    scorer = served.completer(None)[0].scorer
    assert scorer.fusion is not None
    prompt, conts = "Marie Curie was born in", [" Warsaw.", " Paris."]
    marks = ([(0, 11, 0)], [[(1, 7, 1)], [(1, 6, 2)]])
    reference = LMScorer(loaded.lm, loaded.tokenizer, fusion=loaded.fused)
    torch.testing.assert_close(
        scorer.score(prompt, conts, *marks),
        reference.score(prompt, conts, *marks),
        atol=1e-3,
        rtol=0,
    )
    assert scorer.score(prompt, conts, *marks) != pytest.approx(
        LMScorer(served_lm, loaded.tokenizer).score(prompt, conts), abs=1e-6
    )
    prompts, continuations = ["Marie Curie was born in"] * 2, [" Warsaw.", " Paris."]
    torch.testing.assert_close(
        sequence_logprob(served_lm, loaded.tokenizer, prompts, continuations),
        sequence_logprob(loaded.lm, loaded.tokenizer, prompts, continuations),
        rtol=0,
        atol=1e-3,
    )
    # served from the folder, in another data folder: the base is found where it was trained
    relation = nations.relations.labels[0]
    head = nations.entities.labels[0]
    code = main(["complete", str(out), "--head", head, "--relation", relation, "-k", "3",
                 "--no-generate", "--json"])  # fmt: skip
    printed = capsys.readouterr().out
    assert code == 0, printed
    reply = json.loads(printed)
    assert len(reply["candidates"]) == 3
    assert all(c["evidence"] for c in reply["candidates"])
