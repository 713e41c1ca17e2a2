"""Joint KG-LM training (``kgweave train --joint``): one run, one artifact folder.

The run, top to bottom:

1. **LM -> KG.** Entity text vectors (:class:`kgweave.language.components.encoder.TextEncoder` over
   ``"name: description"``, or vectors passed in) enter the KGE model: each entity's
   representation is ``structural + P · text`` (:class:`TextEnhancedEntities`, ``P``
   zero-initialised so training starts from the plain model), trained with the configured
   KGE regime and loss (:mod:`kgweave.training.regimes`), plus
2. **alignment**: an InfoNCE loss between the structural embeddings and a second projection
   ``A · text`` of the same entities (a random batch of entities each step): it pulls the two
   spaces together, so ``A · text`` approximates the embedding of an entity the graph has not
   seen yet.
3. **KG -> LM.** A causal LM (by default the packaged SmolLM2-135M-Instruct with LoRA
   adapters, base frozen; or ``small``, a GPT-2-style one trained from scratch with a tokenizer
   trained on the graph's text: :mod:`kgweave.language.joint.lm_side`) learns the KG-to-text
   corpus (every training fact verbalized; validation and test facts never) with the trained
   entity embeddings added at entity mentions
   (:class:`kgweave.language.joint.entity_lm.EntityAwareLM`).
4. **Text fusion** (``text_fusion``, on by default): link-prediction scores that add entity
   text to the trained embeddings (text cosine, names found in descriptions and names,
   relation popularity; :mod:`kgweave.language.features.text_fusion`), per-relation weights fitted
   on
   validation; the completer ranks and re-ranks by it.
5. Optionally, the completion re-ranking weights are fitted on validation
   (:meth:`kgweave.language.features.completion.LMCompleter.fit_weights`).

The artifact folder::

    config.json, model.safetensors, id_maps.json, ...   the normal KGE artifact (the text-
                                                         enhanced table baked in, so every
                                                         existing loader serves it)
    language/
        adapter_model.safetensors, adapter_config.json   a pretrained LM's LoRA adapters (the
                                                         base named in joint.json, not copied)
        or config.json, model.safetensors, tokenizer.json...   the whole LM (small, or no LoRA)
        lm_loss.png             the LM's training loss per step
        fusion.safetensors      the fusion projection (and the KGE table it reads)
        text.safetensors        text vectors (N, Dt), P, A and the structural table
        text_fusion.json        the fitted text-fusion weights and their fit report
        joint.json              written last: format, this config, the base LM's identity,
                                fusion and completion settings, sha256 of every other file
                                in language/
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from kgweave import atomic
from kgweave.artifact import load_artifact, save_artifact
from kgweave.data.dataset import KGDataset
from kgweave.device import resolve_device
from kgweave.engine import TrainingCancelledError
from kgweave.errors import InvalidArgumentError
from kgweave.evaluation.ranking import build_filter, evaluate
from kgweave.language.components.lm import EncodedBatch, train_lm
from kgweave.language.components.lora import merged_for_inference
from kgweave.language.components.pretrained import SMALL_LM, resolve_language_model
from kgweave.language.features.completion import LMCompleter
from kgweave.language.features.rerank import RerankWeights
from kgweave.language.features.text_fusion import FusedScorer, TextFusion
from kgweave.language.features.verbalize import Verbalizer
from kgweave.language.joint.config import (
    FUSION_WEIGHTS,
    JOINT_CONFIG,
    JOINT_FORMAT,
    JOINT_FORMAT_VERSION,
    LANGUAGE_DIR,
    LM_LOSS_PLOT,
    TEXT_FUSION,
    TEXT_WEIGHTS,
    JointConfig,
)
from kgweave.language.joint.entity_lm import EntityAwareLM, char_spans_to_token_spans
from kgweave.language.joint.lm_side import (
    lm_spec,
    plot_lm_loss,
    prepare_lm,
    save_language_model,
    uses_adapters,
)
from kgweave.language.joint.text_side import (
    bake,
    train_text_enhanced_kge,
)
from kgweave.predict import LinkPredictor
from kgweave.settings import Settings

#: validation facts the LM's held-out loss is measured on
VALID_LOSS_SAMPLE = 256


@dataclass
class JointResult:
    """What a joint run produced."""

    path: Path
    metrics: dict[str, Any]
    kge_history: list[dict[str, Any]]
    lm_history: list[dict[str, float]]
    completion_weights: RerankWeights | None
    seconds: float


# ---- the corpus


def fact_corpus(
    dataset: KGDataset, verbalizer: Verbalizer, split: str = "train"
) -> tuple[list[str], list[list[tuple[int, int, int]]]]:
    """Every fact of ``split`` (the LM's corpus: training facts) as a sentence, with its
    entity mentions.

    Returns:
        (sentences, mentions): per sentence, (char start, char end, entity id) of the head and
        the tail names.
    """
    ents, rels = dataset.entities.labels, dataset.relations.labels
    texts: list[str] = []
    mentions: list[list[tuple[int, int, int]]] = []
    for h, r, t in dataset.split(split).tolist():
        sentence = verbalizer.triple(ents[h], rels[r], ents[t])
        texts.append(sentence)
        mentions.append(verbalizer.mentions(sentence, rels[r], (h, ents[h]), (t, ents[t])))
    return texts, mentions


def held_out_lm_loss(
    fused: EntityAwareLM,
    tokenizer: Any,
    dataset: KGDataset,
    verbalizer: Verbalizer,
    config: JointConfig,
    sample: int = VALID_LOSS_SAMPLE,
) -> dict[str, float]:
    """The trained LM's loss per token on verbalized validation facts (a seeded sample of at
    most ``sample``; facts it never trained on): ``valid_loss`` as it scores in completion
    (with the entity fusion when the run used it), and with it ``valid_loss_text_alone``, the
    same LM without the fusion (what the KG embeddings add at inference). Empty without
    validation facts."""
    texts, mentions = fact_corpus(dataset, verbalizer, "valid")
    if not texts:
        return {}
    if len(texts) > sample:
        order = torch.randperm(len(texts), generator=torch.Generator().manual_seed(config.seed))
        texts = [texts[i] for i in order[:sample].tolist()]
        mentions = [mentions[i] for i in order[:sample].tolist()]
    loss = fused.text_loss(tokenizer, texts, mentions if config.entity_fusion else None,
                           config.lm_max_length, config.lm_batch_size)  # fmt: skip
    if not config.entity_fusion:
        return {"valid_loss": loss}
    alone = fused.text_loss(tokenizer, texts, None, config.lm_max_length, config.lm_batch_size)
    return {"valid_loss": loss, "valid_loss_text_alone": alone}


# ---- the whole run


def _text_vectors(
    dataset: KGDataset, settings: Settings, given: torch.Tensor | None, progress: bool
) -> torch.Tensor:
    if given is not None:
        if given.dim() != 2 or given.shape[0] != dataset.num_entities:
            raise InvalidArgumentError(
                f"text vectors must have shape ({dataset.num_entities}, D), got "
                f"{tuple(given.shape)}"
            )
        return given.detach().float().cpu()
    from kgweave.language.components.encoder import TextEncoder

    encoder = TextEncoder.from_settings(settings)
    labels = dataset.entities.labels
    return encoder.encode_entities(
        [dataset.entity_names.get(e) for e in labels],
        [dataset.entity_descriptions.get(e) for e in labels],
        labels,
        progress=progress,
    )


def train_joint(
    dataset: KGDataset,
    config: JointConfig,
    out: Path,
    settings: Settings,
    progress: bool = True,
    text_vectors: torch.Tensor | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    on_phase: Callable[[str], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    on_lm_progress: Callable[[dict[str, float]], None] | None = None,
    extra: dict[str, Any] | None = None,
) -> JointResult:
    """Train the KGE model and the LM together and write one artifact folder to ``out``.

    Args:
        text_vectors: shape (N, Dt) entity text vectors in the dataset's id order; default:
            encoded with the ``text_encoder`` setting.
        on_epoch, on_phase: the KGE half's epoch rows, and the later phases' names ("text
            fusion", "language model", "completion weights"): a job's progress.
        should_stop: polled in every training step and between phases; ``True`` ends the run
            with nothing written (a cancelled job).
        on_lm_progress: the LM's training progress (loss, tokens/s, ETA; ``train_lm``'s
            ``on_progress``).
        extra: more of the artifact's config (a job's: its source, its recipe, and for a
            training on the graph the fixed validation set it is judged on).
    Returns:
        where it was written, metrics (KGE valid/test, LM loss, completion fit), histories.
    Raises:
        TrainingCancelledError: ``should_stop`` ended the run.
    """

    def check_stop() -> None:
        if should_stop is not None and should_stop():
            raise TrainingCancelledError

    started = time.perf_counter()
    spec = lm_spec(config, settings)
    if spec != SMALL_LM:  # fetch the LM, or fail for want of it, before the KGE half runs
        resolve_language_model(spec, settings.data_dir, fetch=not settings.offline, log=progress)
    device = resolve_device(settings.device)
    if config.kge.num_threads:
        torch.set_num_threads(config.kge.num_threads)
    text = _text_vectors(dataset, settings, text_vectors, progress)

    # ---- LM -> KG (+ alignment)
    model, enhanced, align, kge_history, valid_metrics = train_text_enhanced_kge(
        dataset, config, text.to(device), device, progress, on_epoch, should_stop
    )
    check_stop()
    phase = on_phase or (lambda _name: None)
    plain = bake(model, enhanced).to(device)
    known = build_filter(dataset.all_triples(), dataset.num_entities, dataset.num_relations)
    # a graph's snapshot has no test split: no test metrics (not an MRR of 0 over no facts)
    has_test = len(dataset.split("test")) > 0
    test_metrics = (
        evaluate(plain, dataset.split("test").to(device), known.to(device)).metrics
        if has_test
        else {}
    )
    metrics: dict[str, Any] = {"valid": valid_metrics, "test": test_metrics}
    verbalizer = Verbalizer.from_dataset(dataset)

    # ---- text fusion, fitted on validation
    text_fusion: TextFusion | None = None
    if config.text_fusion and len(dataset.split("valid")):
        phase("text fusion")
        text_fusion = TextFusion.from_verbalizer(
            text, verbalizer, dataset.entities.labels, dataset.train, dataset.num_relations
        )
        report = text_fusion.fit(
            plain,
            dataset.split("valid"),
            known,
            candidates=config.text_fusion_candidates,
            progress=progress,
            relation_labels=dataset.relations.labels,
        )
        metrics["text_fusion"] = {
            "accepted": report.accepted,
            "held_out": report.held_out,
            "valid_kge_mrr": report.kge_mrr,
            "valid_mrr": report.fused_mrr,
            "test": (
                text_fusion.evaluate(plain, dataset.split("test"), known).metrics
                if has_test
                else {}
            ),
        }

    # ---- KG -> LM: the training facts only (validation and test facts never reach the LM)
    check_stop()
    phase("language model")
    texts, mentions = fact_corpus(dataset, verbalizer)
    lm, tokenizer, base_model, lm_lr = prepare_lm(
        config, settings, dataset, verbalizer, texts, device, progress
    )
    fused = EntityAwareLM(
        lm,
        plain.entity.weight.detach(),
        layer=config.fusion_layer,
        train_entities=config.fusion_train_entities,
    )

    def fused_loss(batch: EncodedBatch, ids: Any) -> torch.Tensor:
        spans = (
            char_spans_to_token_spans(batch.offsets, [mentions[i] for i in ids])
            if config.entity_fusion
            else None  # the ablation: text alone
        )
        loss: torch.Tensor | None = fused(
            batch.input_ids, batch.attention_mask, spans, batch.labels
        )[1]
        assert loss is not None
        return loss

    budget = config.lm_time_budget_s
    if (
        budget is None
        and config.lm_max_steps is None
        and device.type == "cpu"
        and base_model["kind"] != SMALL_LM
    ):
        budget = config.lm_cpu_budget_s  # a pretrained LM on a CPU: bounded unless asked
    step_losses: list[float] = []
    lm_history = train_lm(
        fused,
        tokenizer,
        texts,
        epochs=config.lm_epochs,
        batch_size=config.lm_batch_size,
        lr=lm_lr,
        device=device,
        progress=progress,
        seed=config.seed,
        max_length=config.lm_max_length,
        step_loss=fused_loss,
        time_budget_s=budget,
        max_steps=config.lm_max_steps,
        step_losses=step_losses,
        should_stop=should_stop,
        on_progress=on_lm_progress,
    )
    check_stop()
    metrics["lm"] = {
        "final_loss": lm_history[-1]["loss"] if lm_history else None,
        "steps": len(step_losses),
        "time_budget_s": budget,
        "corpus_facts": len(texts),
        "adapters": uses_adapters(fused.lm),
        "entity_fusion": config.entity_fusion,
        **held_out_lm_loss(fused, tokenizer, dataset, verbalizer, config),
    }

    # ---- write the KGE artifact, then the language part
    save_artifact(
        out,
        plain,
        dataset,
        training=config.kge.model_dump(),
        metrics={
            "valid": valid_metrics,
            "test": test_metrics,
            **({"text_fusion": metrics["text_fusion"]} if "text_fusion" in metrics else {}),
        },
        history=kge_history,
        extra={
            **(extra or {}),
            "joint": {"language": LANGUAGE_DIR},
            "relation_templates": verbalizer.templates,
        },
    )
    language = out / LANGUAGE_DIR
    (language / JOINT_CONFIG).unlink(missing_ok=True)  # first: a half-written part never loads
    if language.is_dir():  # an earlier run's LM files (whole LM or adapters) must not linger
        shutil.rmtree(language)
    save_language_model(fused.lm, tokenizer, language, base_model)
    if step_losses:
        plot_lm_loss(step_losses, lm_history, language / LM_LOSS_PLOT)
    save_file(
        {k: v.detach().float().cpu().contiguous() for k, v in fused.fusion_state().items()},
        str(language / FUSION_WEIGHTS),
        metadata={"format": JOINT_FORMAT},
    )
    save_file(
        {
            "text_vectors": text.contiguous(),
            "text_projection.weight": enhanced.project.weight.detach().cpu().contiguous(),
            "align_projection.weight": align.weight.detach().cpu().contiguous(),
            "structural": enhanced.structural.weight.detach().cpu().contiguous(),
        },
        str(language / TEXT_WEIGHTS),
        metadata={"format": JOINT_FORMAT},
    )

    if text_fusion is not None:
        atomic.write_text(language / TEXT_FUSION, json.dumps(text_fusion.to_dict(), indent=1))

    # ---- completion weights, fitted on validation with the parts just written
    weights: RerankWeights | None = None
    if config.fit_completion:
        phase("completion weights")
        predictor = LinkPredictor(load_artifact(out, device=device))
        # the adapters are saved above: merged into the base now, as serving does
        completer = LMCompleter(
            predictor,
            merged_for_inference(fused.lm),
            tokenizer,
            verbalizer=verbalizer,
            top_n=config.completion_top_n,
            lm_candidates=0,
            ranker=(FusedScorer(text_fusion, predictor.model) if text_fusion is not None else None),
            fusion=fused if config.entity_fusion else None,
        )
        weights = completer.fit_weights(
            dataset.split("valid"), max_triples=config.completion_fit_triples, seed=config.seed
        )
        metrics["completion"] = weights.report
    files = {
        p.name: atomic.sha256_file(p)
        for p in sorted(language.iterdir())
        if p.is_file() and p.name != JOINT_CONFIG and not p.name.endswith(".tmp")
    }
    joint = {
        "format": JOINT_FORMAT,
        "format_version": JOINT_FORMAT_VERSION,
        "config": config.model_dump(),
        "language_model": spec,
        "base_model": base_model,
        # "scoring": completion scores with the fusion (its weights were fitted so)
        "fusion": {**fused.config(), "scoring": config.entity_fusion},
        "text_dim": int(text.shape[1]),
        "completion_weights": (weights or RerankWeights()).to_dict(),
        "lm_history": lm_history,
        "metrics": metrics,
        "files": files,
    }
    atomic.write_text(language / JOINT_CONFIG, json.dumps(joint, indent=2))
    return JointResult(
        path=out,
        metrics=metrics,
        kge_history=kge_history,
        lm_history=lm_history,
        completion_weights=weights,
        seconds=time.perf_counter() - started,
    )
