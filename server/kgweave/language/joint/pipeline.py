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
3. **KG -> LM.** A causal LM (the small GPT-2-style one, trained from scratch with a tokenizer
   trained on the graph's text, or ``language_model`` fine-tuned) learns the KG-to-text corpus
   (every training fact verbalized) with the trained entity embeddings added at entity
   mentions (:class:`kgweave.language.joint.entity_lm.EntityAwareLM`).
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
        config.json, model.safetensors, tokenizer.json,  the LM (save_pretrained, safetensors)
        tokenizer_config.json, generation_config.json
        fusion.safetensors      the fusion projection (and the KGE table it reads)
        text.safetensors        text vectors (N, Dt), P, A and the structural table
        text_fusion.json        the fitted text-fusion weights and their fit report
        joint.json              written last: format, this config, fusion and completion
                                settings, sha256 of every other file in language/
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from kgweave import atomic
from kgweave.artifact import ModelArtifact, load_artifact, save_artifact
from kgweave.data.dataset import KGDataset
from kgweave.device import resolve_device
from kgweave.errors import ArtifactError, InvalidArgumentError, NotFoundError
from kgweave.evaluation.ranking import build_filter, evaluate
from kgweave.language.components.lm import (
    EncodedBatch,
    build_small_lm,
    load_causal_lm,
    load_lm,
    save_lm,
    train_lm,
)
from kgweave.language.components.tokenizer import train_tokenizer
from kgweave.language.features.completion import LMCompleter
from kgweave.language.features.rerank import RerankWeights
from kgweave.language.features.text_fusion import FusedScorer, TextFusion
from kgweave.language.features.verbalize import HEAD, TAIL, Verbalizer
from kgweave.language.joint.entity_lm import EntityAwareLM, char_spans_to_token_spans
from kgweave.models import KGEModel, model_class
from kgweave.predict import LinkPredictor
from kgweave.settings import Settings
from kgweave.training.config import TrainConfig
from kgweave.training.loop import TrainingHooks, train

LANGUAGE_DIR = "language"
JOINT_CONFIG = "joint.json"
FUSION_WEIGHTS = "fusion.safetensors"
TEXT_WEIGHTS = "text.safetensors"
TEXT_FUSION = "text_fusion.json"
JOINT_FORMAT = "kgweave-joint"
JOINT_FORMAT_VERSION = 1


class JointConfig(BaseModel):
    """Everything that decides a joint run; stored verbatim in ``language/joint.json``."""

    model_config = ConfigDict(extra="forbid")

    kge: TrainConfig = Field(
        default_factory=lambda: TrainConfig.model_validate({"dim": 100, "epochs": 100}),
        description="The KGE side: model, dim, regime, epochs, optimiser... (as `kgweave "
        "train`). Validation every `eval_every` epochs keeps the best model.",
    )
    align_weight: float = Field(
        0.1, ge=0, description="Weight of the text/KGE alignment (InfoNCE) loss; 0 disables."
    )
    align_temperature: float = Field(0.1, gt=0, description="InfoNCE temperature.")
    align_batch: int = Field(256, ge=2, description="Entities per alignment step.")
    use_text: bool = Field(
        True,
        description="Add projected entity text vectors to the KGE representations (LM -> KG).",
    )
    language_model: str | None = Field(
        None,
        description="Causal LM to fine-tune (local folder or Hugging Face id); unset: the "
        "`language_model` setting, and when that is unset too, a small GPT-2-style model "
        "trained from scratch.",
    )
    vocab_size: int = Field(2000, ge=300, description="Tokenizer size for the small LM.")
    lm_layers: int = Field(4, ge=1, description="Small LM: transformer blocks.")
    lm_width: int = Field(256, ge=8, description="Small LM: hidden width.")
    lm_heads: int = Field(4, ge=1, description="Small LM: attention heads.")
    lm_max_length: int = Field(128, ge=8, description="Longest training text in tokens.")
    lm_epochs: int = Field(20, ge=1, description="Passes over the KG-to-text corpus.")
    lm_time_budget_s: float | None = Field(
        None, gt=0, description="Stop LM training after this many seconds (checked every step)."
    )
    lm_batch_size: int = Field(32, ge=1, description="Sentences per LM step.")
    lm_lr: float = Field(
        2e-3, gt=0, description="LM learning rate (use ~5e-5 to fine-tune a pretrained LM)."
    )
    fusion_layer: int | None = Field(
        0,
        description="Where entity embeddings enter the LM: output of this block (0-based); "
        "None: the input embeddings.",
    )
    fusion_train_entities: bool = Field(
        False, description="Fine-tune the KGE table inside the fused LM (default: frozen)."
    )
    fit_completion: bool = Field(
        True, description="Fit the completion re-ranking weights on validation."
    )
    completion_top_n: int = Field(20, ge=1, description="KGE candidates per completion query.")
    text_fusion: bool = Field(
        True,
        description="Fit a text fusion (KGE scores plus entity-text features, per-relation "
        "weights) on validation; completion ranks by it.",
    )
    text_fusion_candidates: int = Field(
        300, ge=1, description="Text fusion fit: top entities by KGE and by text per query."
    )
    seed: int = Field(0, description="Seeds every part of the run.")


class TextEnhancedEntities(nn.Module):
    """Entity representations ``structural + P · text`` with the interface of ``nn.Embedding``
    that :class:`kgweave.models.KGEModel` uses (``module(ids)`` and ``module.weight``).

    Args:
        structural: the model's own entity table, (N, De).
        text: shape (N, Dt) text vectors (a buffer, not trained).
    """

    text: torch.Tensor

    def __init__(self, structural: nn.Embedding, text: torch.Tensor) -> None:
        super().__init__()
        if text.shape[0] != structural.num_embeddings:
            raise InvalidArgumentError(
                f"{text.shape[0]} text vectors for {structural.num_embeddings} entities"
            )
        self.structural = structural
        self.register_buffer("text", text.detach().float().clone())
        self.project = nn.Linear(text.shape[1], structural.embedding_dim, bias=False)
        nn.init.zeros_(self.project.weight)

    @property
    def weight(self) -> torch.Tensor:
        """The whole enhanced table: shape (N, De)."""
        table: torch.Tensor = self.structural.weight + self.project(self.text)
        return table

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """ids: any shape (...) -> (..., De)."""
        rows: torch.Tensor = self.structural(ids) + self.project(self.text[ids])
        return rows


def alignment_loss(
    structural: torch.Tensor, projected_text: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Symmetric InfoNCE: each entity's structural vector should be closest to its own text.

    Args:
        structural, projected_text: shape (B, De), row i of both is the same entity.
    Returns:
        shape () loss.
    """
    a = F.normalize(structural, dim=1)
    b = F.normalize(projected_text, dim=1)
    logits = a @ b.t() / temperature  # (B, B)
    target = torch.arange(len(a), device=a.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))


@dataclass
class JointResult:
    """What a joint run produced."""

    path: Path
    metrics: dict[str, Any]
    kge_history: list[dict[str, Any]]
    lm_history: list[dict[str, float]]
    completion_weights: RerankWeights | None
    seconds: float


@dataclass
class JointModel:
    """Every part of a joint artifact, loaded and verified."""

    path: Path
    artifact: ModelArtifact
    lm: Any
    tokenizer: Any
    fused: EntityAwareLM
    text_vectors: torch.Tensor  # (N, Dt)
    text_projection: nn.Linear  # P: Dt -> De
    align_projection: nn.Linear  # A: Dt -> De
    structural: torch.Tensor  # (N, De)
    completion_weights: RerankWeights
    config: dict[str, Any] = field(default_factory=dict)
    text_fusion: TextFusion | None = None

    def completer(self, top_n: int | None = None) -> LMCompleter:
        """A :class:`LMCompleter` on these parts, with the fitted weights."""
        return LMCompleter(
            LinkPredictor(self.artifact),
            self.lm,
            self.tokenizer,
            weights=self.completion_weights,
            top_n=top_n or int(self.config.get("config", {}).get("completion_top_n", 20)),
            ranker=(
                FusedScorer(self.text_fusion, self.artifact.model)
                if self.text_fusion is not None
                else None
            ),
        )


# ---- the corpus


def fact_corpus(
    dataset: KGDataset, verbalizer: Verbalizer
) -> tuple[list[str], list[list[tuple[int, int, int]]]]:
    """Every training fact as a sentence, with its entity mentions.

    Returns:
        (sentences, mentions): per sentence, (char start, char end, entity id) of the head and
        the tail names.
    """
    ents, rels = dataset.entities.labels, dataset.relations.labels
    texts: list[str] = []
    mentions: list[list[tuple[int, int, int]]] = []
    for h, r, t in dataset.train.tolist():
        sentence = verbalizer.triple(ents[h], rels[r], ents[t])
        template = verbalizer.template(rels[r])
        order = [(h, ents[h]), (t, ents[t])]
        if template.find(TAIL) < template.find(HEAD):
            order.reverse()
        folded = sentence.casefold()
        spans: list[tuple[int, int, int]] = []
        cursor = 0
        for entity, label in order:
            name = verbalizer.name(label).casefold()
            at = folded.find(name, cursor)
            if at >= 0 and name:
                spans.append((at, at + len(name), entity))
                cursor = at + len(name)
        texts.append(sentence)
        mentions.append(spans)
    return texts, mentions


# ---- LM -> KG with alignment


class TextSideHooks(TrainingHooks):
    """Joint training's additions to the one training loop: the entity table becomes
    ``structural + P · text`` (:class:`TextEnhancedEntities`), and every step adds the
    weighted alignment loss of a random batch of entities (``align_weight``)."""

    extra_loss_name = "align_loss"

    def __init__(self, config: JointConfig, text: torch.Tensor) -> None:
        self.config = config
        self.text = text
        self.enhanced: TextEnhancedEntities | None = None
        self.align: nn.Linear | None = None

    def build(self, model: KGEModel) -> list[nn.Module]:
        enhanced = TextEnhancedEntities(model.entity, self.text)
        if not self.config.use_text:
            enhanced.project.weight.requires_grad_(False)
        # KGEModel only calls entity(ids) and entity.weight, which TextEnhancedEntities provides
        model.entity = enhanced  # type: ignore[assignment]
        self.enhanced = enhanced
        self.align = nn.Linear(self.text.shape[1], enhanced.structural.embedding_dim, bias=False)
        return [self.align]

    def extra_loss(self, model: KGEModel, generator: torch.Generator) -> torch.Tensor | None:
        c = self.config
        if c.align_weight <= 0:
            return None
        assert self.enhanced is not None and self.align is not None
        pick = torch.randperm(self.enhanced.text.shape[0], generator=generator)
        ids = pick[: c.align_batch].to(self.enhanced.text.device)
        loss = alignment_loss(
            self.enhanced.structural(ids), self.align(self.enhanced.text[ids]), c.align_temperature
        )
        return c.align_weight * loss


def train_text_enhanced_kge(
    dataset: KGDataset,
    config: JointConfig,
    text: torch.Tensor,
    device: torch.device,
    progress: bool,
) -> tuple[KGEModel, TextEnhancedEntities, nn.Linear, list[dict[str, Any]], dict[str, float]]:
    """Train the text-enhanced KGE model with its regime's loss plus the alignment loss: the
    one training loop (:func:`kgweave.training.train`, the KGE config's every setting) with
    :class:`TextSideHooks`. Returns the model, its enhanced entity table, the alignment
    projection, the history and the best validation metrics."""
    hooks = TextSideHooks(config, text)
    kge = config.kge.model_copy(update={"seed": config.seed})
    result = train(dataset, kge, device=device, progress=progress, hooks=hooks)
    assert hooks.enhanced is not None and hooks.align is not None
    valid = dict(result.best_valid.metrics) if result.best_valid is not None else {}
    return result.model, hooks.enhanced, hooks.align, result.history, valid


def bake(model: KGEModel, enhanced: TextEnhancedEntities) -> KGEModel:
    """A plain model of the same class whose entity table is the enhanced one."""
    plain = model_class(model.name)(model.num_entities, model.num_relations, model.dim)
    with torch.no_grad():
        plain.entity.weight.copy_(enhanced.weight.detach().cpu())
        plain.relation.weight.copy_(model.relation.weight.detach().cpu())
    return plain.eval()


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
) -> JointResult:
    """Train the KGE model and the LM together and write one artifact folder to ``out``.

    Args:
        text_vectors: shape (N, Dt) entity text vectors in the dataset's id order; default:
            encoded with the ``text_encoder`` setting.
    Returns:
        where it was written, metrics (KGE valid/test, LM loss, completion fit), histories.
    """
    started = time.perf_counter()
    device = resolve_device(settings.device)
    if config.kge.num_threads:
        torch.set_num_threads(config.kge.num_threads)
    text = _text_vectors(dataset, settings, text_vectors, progress)

    # ---- LM -> KG (+ alignment)
    model, enhanced, align, kge_history, valid_metrics = train_text_enhanced_kge(
        dataset, config, text.to(device), device, progress
    )
    plain = bake(model, enhanced).to(device)
    known = build_filter(dataset.all_triples(), dataset.num_entities, dataset.num_relations)
    test = evaluate(plain, dataset.split("test").to(device), known.to(device))
    metrics: dict[str, Any] = {"valid": valid_metrics, "test": test.metrics}
    verbalizer = Verbalizer.from_dataset(dataset)

    # ---- text fusion, fitted on validation
    text_fusion: TextFusion | None = None
    if config.text_fusion and len(dataset.split("valid")):
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
        fused_test = text_fusion.evaluate(plain, dataset.split("test"), known)
        metrics["text_fusion"] = {
            "accepted": report.accepted,
            "held_out": report.held_out,
            "valid_kge_mrr": report.kge_mrr,
            "valid_mrr": report.fused_mrr,
            "test": fused_test.metrics,
        }

    # ---- KG -> LM
    texts, mentions = fact_corpus(dataset, verbalizer)
    spec = config.language_model or settings.language_model
    if spec:
        lm, tokenizer = load_causal_lm(spec, device, offline=settings.offline or None)
    else:
        names = [verbalizer.name(e) for e in dataset.entities.labels]
        descriptions = [
            s for e in dataset.entities.labels if (s := dataset.entity_descriptions.get(e))
        ]
        tokenizer = train_tokenizer([*texts, *names, *descriptions], config.vocab_size)
        lm = build_small_lm(
            tokenizer,
            n_layer=config.lm_layers,
            n_embd=config.lm_width,
            n_head=config.lm_heads,
            n_positions=max(config.lm_max_length, 16),
            seed=config.seed,
        )
    fused = EntityAwareLM(
        lm,
        plain.entity.weight.detach(),
        layer=config.fusion_layer,
        train_entities=config.fusion_train_entities,
    )

    def fused_loss(batch: EncodedBatch, ids: Any) -> torch.Tensor:
        spans = char_spans_to_token_spans(batch.offsets, [mentions[i] for i in ids])
        loss: torch.Tensor | None = fused(
            batch.input_ids, batch.attention_mask, spans, batch.labels
        )[1]
        assert loss is not None
        return loss

    lm_history = train_lm(
        fused,
        tokenizer,
        texts,
        epochs=config.lm_epochs,
        batch_size=config.lm_batch_size,
        lr=config.lm_lr,
        device=device,
        progress=progress,
        seed=config.seed,
        max_length=config.lm_max_length,
        step_loss=fused_loss,
        time_budget_s=config.lm_time_budget_s,
    )
    metrics["lm"] = {"final_loss": lm_history[-1]["loss"] if lm_history else None}

    # ---- write the KGE artifact, then the language part
    save_artifact(
        out,
        plain,
        dataset,
        training=config.kge.model_dump(),
        metrics={
            "valid": valid_metrics,
            "test": test.metrics,
            **({"text_fusion": metrics["text_fusion"]} if "text_fusion" in metrics else {}),
        },
        history=kge_history,
        extra={"joint": {"language": LANGUAGE_DIR}, "relation_templates": verbalizer.templates},
    )
    language = out / LANGUAGE_DIR
    (language / JOINT_CONFIG).unlink(missing_ok=True)
    save_lm(fused.lm, tokenizer, language)
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
        predictor = LinkPredictor(load_artifact(out, device=device))
        completer = LMCompleter(
            predictor,
            fused.lm,
            tokenizer,
            verbalizer=verbalizer,
            top_n=config.completion_top_n,
            lm_candidates=0,
            ranker=(FusedScorer(text_fusion, predictor.model) if text_fusion is not None else None),
        )
        weights = completer.fit_weights(dataset.split("valid"), seed=config.seed)
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
        "language_model": spec or "small",
        "fusion": fused.config(),
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


def load_text_fusion(
    folder: Path, artifact: ModelArtifact, verbalizer: Verbalizer | None = None
) -> TextFusion | None:
    """The text fusion of a joint artifact, without loading its LM (what serving needs).

    Returns None when ``folder`` is not a joint artifact or has no text fusion. ``verbalizer``:
    the artifact's, when the caller has one already (names and descriptions come from it).

    Raises:
        ArtifactError: the fusion or the text vectors are missing, corrupt (checksum) or do not
            fit ``artifact``.
    """
    language = folder / LANGUAGE_DIR
    config_path = language / JOINT_CONFIG
    if not config_path.is_file():
        return None
    joint = atomic.read_json(config_path)
    files = joint.get("files") if isinstance(joint, dict) else None
    if not isinstance(files, dict) or TEXT_FUSION not in files:
        return None
    for name in (TEXT_FUSION, TEXT_WEIGHTS):
        atomic.verify_sha256(language / name, files.get(name))
    try:
        with safe_open(str(language / TEXT_WEIGHTS), framework="pt") as handle:
            vectors = handle.get_tensor("text_vectors")
    except (SafetensorError, OSError) as exc:
        raise ArtifactError(f"{language / TEXT_WEIGHTS}: unreadable weights ({exc})") from exc
    return _text_fusion_of(language, artifact, vectors, verbalizer)


def _text_fusion_of(
    language: Path,
    artifact: ModelArtifact,
    vectors: torch.Tensor,
    verbalizer: Verbalizer | None = None,
) -> TextFusion:
    """Build the fusion of ``artifact`` from its text vectors and stored weights (verified)."""
    if vectors.shape[0] != len(artifact.entities):
        raise ArtifactError(
            f"{language / TEXT_WEIGHTS}: {vectors.shape[0]} text vectors for "
            f"{len(artifact.entities)} entities"
        )
    try:
        stored = json.loads((language / TEXT_FUSION).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{language / TEXT_FUSION}: unreadable ({exc})") from exc
    if not isinstance(stored, dict):
        raise ArtifactError(f"{language / TEXT_FUSION}: not a kgweave text fusion")
    fusion = TextFusion.from_verbalizer(
        vectors,
        verbalizer or Verbalizer.from_artifact(artifact),
        artifact.entities.labels,
        artifact.known,
        len(artifact.relations),
    )
    try:
        fusion.load_weights(stored)
    except ArtifactError as exc:
        raise ArtifactError(f"{language / TEXT_FUSION}: {exc}") from exc
    return fusion


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        tensors: dict[str, torch.Tensor] = load_file(str(path))
        return tensors
    except (SafetensorError, OSError) as exc:
        raise ArtifactError(f"{path}: unreadable weights ({exc})") from exc


def load_joint(
    folder: Path, device: str | torch.device = "cpu", with_text_fusion: bool = True
) -> JointModel:
    """Load and verify every part of a joint artifact (``with_text_fusion=False``: leave the
    text fusion out, for a caller that has loaded it already).

    Raises:
        NotFoundError: no such folder, or no model in it.
        ArtifactError: a part is missing, corrupt (checksum), or disagrees with the others; the
            message names the part.
    """
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    artifact = load_artifact(folder, device=dev)  # verifies the KGE part
    language = folder / LANGUAGE_DIR
    if not language.is_dir():
        raise NotFoundError(f"{folder} holds a KGE model but no joint language part ({language})")
    config_path = language / JOINT_CONFIG
    if not config_path.is_file():
        raise ArtifactError(f"{language}: missing {JOINT_CONFIG} (unfinished or damaged write)")
    joint = atomic.read_json(config_path)
    if not isinstance(joint, dict) or joint.get("format") != JOINT_FORMAT:
        raise ArtifactError(f"{config_path}: not a kgweave joint config")
    if joint.get("format_version", 0) > JOINT_FORMAT_VERSION:
        raise ArtifactError(f"{config_path}: newer format than this kgweave reads; upgrade")
    files = joint.get("files")
    if not isinstance(files, dict) or not files:
        raise ArtifactError(f"{config_path}: lists no files")
    for required in (
        "model.safetensors",
        "config.json",
        "tokenizer.json",
        FUSION_WEIGHTS,
        TEXT_WEIGHTS,
    ):
        if required not in files:
            raise ArtifactError(f"{config_path}: does not list {required}")
    for name, expected in files.items():
        atomic.verify_sha256(language / name, expected)
    lm, tokenizer = load_lm(language, dev)
    num_entities = len(artifact.entities)
    text = _tensors(language / TEXT_WEIGHTS)
    fusion = _tensors(language / FUSION_WEIGHTS)
    try:
        vectors = text["text_vectors"]
        p_weight, a_weight = text["text_projection.weight"], text["align_projection.weight"]
        structural = text["structural"]
        table = fusion["entities.weight"]
    except KeyError as exc:
        raise ArtifactError(f"{language}: missing tensor {exc}") from exc
    width = artifact.model.entity.weight.shape[1]
    if vectors.shape[0] != num_entities or table.shape[0] != num_entities:
        raise ArtifactError(
            f"{language}: text vectors / fusion table have {vectors.shape[0]} / "
            f"{table.shape[0]} rows but the model has {num_entities} entities"
        )
    if p_weight.shape != (width, vectors.shape[1]) or structural.shape != (num_entities, width):
        raise ArtifactError(f"{language / TEXT_WEIGHTS}: shapes disagree with the KGE model")
    fusion_config = joint.get("fusion") or {}
    fused = EntityAwareLM(
        lm,
        table,
        layer=fusion_config.get("layer", 0),
        train_entities=bool(fusion_config.get("train_entities", False)),
    )
    missing, unexpected = fused.load_state_dict(
        {**{f"lm.{k}": v for k, v in lm.state_dict().items()}, **fusion}, strict=False
    )
    if missing or unexpected:
        raise ArtifactError(
            f"{language / FUSION_WEIGHTS}: weights do not match the fusion config "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    fused.to(dev).eval()
    text_fusion = (
        _text_fusion_of(language, artifact, vectors)
        if with_text_fusion and TEXT_FUSION in files
        else None
    )
    text_projection = nn.Linear(vectors.shape[1], width, bias=False)
    align_projection = nn.Linear(vectors.shape[1], width, bias=False)
    with torch.no_grad():
        text_projection.weight.copy_(p_weight)
        align_projection.weight.copy_(a_weight)
    return JointModel(
        path=folder,
        artifact=artifact,
        lm=lm,
        tokenizer=tokenizer,
        fused=fused,
        text_vectors=vectors,
        text_projection=text_projection,
        align_projection=align_projection,
        structural=structural,
        completion_weights=(
            RerankWeights.from_dict(joint["completion_weights"])
            if isinstance(joint.get("completion_weights"), dict)
            else RerankWeights()
        ),
        config=joint,
        text_fusion=text_fusion,
    )
