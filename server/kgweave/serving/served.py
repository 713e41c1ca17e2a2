"""One model version loaded for serving: weights on the device, lookups in memory.

A :class:`ServedModel` is immutable once built. The service swaps whole objects, so a request
that captured one answers entirely from that version.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from kgweave import arguments
from kgweave.artifact import ModelArtifact, load_artifact
from kgweave.errors import FailedPreconditionError, InvalidArgumentError
from kgweave.language.joint.config import is_joint
from kgweave.predict import LinkPredictor, Query
from kgweave.serving.known_delta import DeltaEntityFacts, EntityFacts, KnownChange
from kgweave.serving.prefix_search import PrefixIndex

if TYPE_CHECKING:
    from kgweave.language.components.encoder import TextEncoder
    from kgweave.language.features.coldstart import TextProjection
    from kgweave.language.features.completion import LMCompleter
    from kgweave.language.features.semantic import SemanticIndex
    from kgweave.language.features.text_fusion import TextFusion
    from kgweave.language.features.verbalize import Verbalizer

log = logging.getLogger(__name__)

#: what transports derive from each loaded version (pre-encoded answers, say), built by
#: :meth:`ServedModel.warm_up` into :attr:`ServedModel.derived` so no request pays for it;
#: transports register here, the core knows nothing of them. Each gets the version and the one
#: it is derived from (graph changes applied to it: the same entities first, then new ones), or
#: None, so a change batch extends what that one built instead of building it again
WARM_UPS: list[Callable[[ServedModel, ServedModel | None], object]] = []


@dataclass(frozen=True)
class EntityInfo:
    """An entity with its text, degree and (some of) its facts."""

    id: str
    name: str
    description: str
    degree: int
    facts: list[tuple[str, str, str]]


class ServedModel:
    """A registered version, loaded on ``device`` and warmed up."""

    def __init__(
        self,
        version: str,
        artifact: ModelArtifact,
        precision: str = "fp32",
        base_version: str | None = None,
        text_fusion: TextFusion | None = None,
        prepack: bool = True,
        excluded: frozenset[int] = frozenset(),
        change: KnownChange | None = None,
        like: LinkPredictor | None = None,
    ) -> None:
        """``change``: how ``artifact``'s known facts follow from those of the version it is
        derived from (its indexes are then read through that version's, not rebuilt);
        ``like``: a predictor whose scorer serves here too when its model is this one's (the
        previous change batch's, when this batch brings no new rows; default: the base's)."""
        #: what answers carry; ``v0003@120`` is registry version v0003 with the graph changes
        #: of the event log up to offset 120 applied (:mod:`kgweave.changes.apply`)
        self.version = version
        #: the registry version this was loaded from
        self.base_version = base_version or version
        self.precision = precision
        self.prepack = prepack
        self.artifact = artifact
        scorer = None
        #: the text fusion ranking this version's links (None: the embeddings alone)
        self.text_fusion = text_fusion
        if text_fusion is not None:
            from kgweave.language.features.text_fusion import FusedScorer

            scorer = FusedScorer(text_fusion, artifact.model)
        num_r = len(artifact.relations)
        index = None
        if change is not None:  # the base's indexes, read through the change
            index = change.index(len(artifact.entities), num_r)
            like = like or change.base.predictor
        self.predictor: LinkPredictor = LinkPredictor(
            artifact, precision, scorer, prepack, excluded, index, like
        )
        #: entity ids deleted from the graph: they resolve to nothing and are never answers
        self.excluded = excluded
        self.device = self.predictor.device
        self.loaded_at = time.time()
        self._text_lock = threading.Lock()
        self._text_index: tuple[str, SemanticIndex] | None = None
        self._projection: TextProjection | None = None
        self._completer: tuple[LMCompleter, str] | None = None
        self.completion_lock = threading.Lock()
        #: per-version data of transports (see WARM_UPS), by name
        self.derived: dict[str, Any] = {}
        #: known facts by entity (head or tail); a version derived per change batch reads its
        #: base's through the change (:mod:`kgweave.serving.known_delta`)
        self._change = change
        self.entity_facts: EntityFacts | DeltaEntityFacts = (
            EntityFacts(artifact.known, len(artifact.entities))
            if change is None
            else change.facts(len(artifact.entities))
        )

    @functools.cached_property
    def _prefix_index(self) -> PrefixIndex:
        """Prefix search over folded names and ids, made on the first search: a version
        derived per change batch extends its base's (:mod:`kgweave.serving.prefix_search`)."""
        art = self.artifact
        if self._change is not None:
            base = self._change.base
            assert isinstance(base, ServedModel)  # (a change applies to a loaded version)
            return base._prefix_index.extended(art.entities.labels, art.entity_names, self.excluded)
        return PrefixIndex.of(art.entities.labels, art.entity_names, self.excluded)

    @classmethod
    def load(
        cls,
        version: str,
        path: Path,
        device: str | torch.device,
        precision: str = "fp32",
        text_fusion: bool = True,
        prepack: bool = True,
        language: bool = True,
        artifact: ModelArtifact | None = None,
        like: ServedModel | None = None,
    ) -> ServedModel:
        """Load a version's artifact onto ``device`` and warm it up; with ``text_fusion``,
        a joint artifact's text fusion ranks its link predictions; with ``language``, a joint
        artifact's LM (base + adapters + fusion) is loaded too and warmed by one scoring pass,
        so the first ``Complete`` pays no loading. ``artifact``: the folder's, loaded
        already (on ``device``). ``like``: the model served before it; where this version's
        entities extend that one's (an incremental update's do), its per-entity indexes
        (names, encoded answers) are extended rather than rebuilt, so a swap holds the
        interpreter lock for what changed, not for every entity."""
        artifact = artifact if artifact is not None else load_artifact(path, device=device)
        fusion = verbalizer = None
        if text_fusion and is_joint(path):
            from kgweave.language.features.verbalize import Verbalizer
            from kgweave.language.joint.artifact import load_text_fusion

            verbalizer = Verbalizer.from_artifact(artifact)
            fusion = load_text_fusion(path, artifact, verbalizer)
        served = cls(
            version,
            artifact,
            precision,
            text_fusion=fusion,
            prepack=prepack,
            like=like.predictor if like is not None else None,
        )
        if verbalizer is not None:
            served.__dict__["verbalizer"] = verbalizer  # built already: prime the cached property
        served.warm_up(like)
        if language and is_joint(path):
            served.warm_language()
        return served

    def warm_up(self, base: ServedModel | None = None) -> None:
        """Run one of each kind of request so the first real one pays no first-call costs;
        ``base``: the version this one is derived from, or the one served before it (see
        :data:`WARM_UPS`)."""
        n = len(self.artifact.entities)
        if not self.predictor.scorer_shared:  # (a shared scorer was warmed up by its owner)
            hr = torch.zeros(min(8, n), 2, dtype=torch.long, device=self.device)
            self.predictor.predict_ids(hr, min(10, n), filter_known=True)
            if n:
                with torch.no_grad():
                    self.predictor.model.score_hrt(
                        torch.zeros(1, 3, dtype=torch.long, device=self.device)
                    )
        for build in WARM_UPS:
            build(self, base)

    @property
    def language_loaded(self) -> bool:
        """Whether this version's completer (its LM) is loaded."""
        return self._completer is not None

    def warm_language(self) -> None:
        """Load the joint LM (see :meth:`completer`) and score one verbalized fact with it."""
        from kgweave.language.components.lm import sequence_logprob

        started = time.perf_counter()
        completer, _ = self.completer(None)
        art = self.artifact
        if len(art.known):
            h, r, t = art.known[0].tolist()
            sentence = self.verbalizer.triple(
                art.entities.labels[h], art.relations.labels[r], art.entities.labels[t]
            )
        else:
            sentence = "kgweave warms up."
        prompt, _, last = sentence.rpartition(" ")
        with self.completion_lock:
            sequence_logprob(completer.model, completer.tokenizer, [prompt], [" " + last])
        log.info("language model of %s ready in %.1fs", self.version, time.perf_counter() - started)

    # ---- requests, resolved against this version
    def resolve_queries(self, queries: list[Query]) -> torch.Tensor:
        """Queries as ids, shape (B, 2) on the CPU; errors name the first bad query."""
        return torch.tensor(self.resolve_rows(queries), dtype=torch.long)

    def resolve_rows(self, queries: list[Query]) -> list[tuple[int, int]]:
        """Queries as (entity, relation) ids; errors name the first bad query."""
        arguments.count("query", "queries", len(queries), arguments.MAX_QUERIES)
        rows = []
        for i, query in enumerate(queries):
            if not query.relation:
                raise InvalidArgumentError(f"query {i}: relation is required")
            rows.append(self.predictor.hr_of(query))
        return rows

    @functools.cached_property
    def verbalizer(self) -> Verbalizer:
        """Graph-to-text for this version (built on first use)."""
        from kgweave.language.features.verbalize import Verbalizer

        return Verbalizer.from_artifact(self.artifact)

    def verbalize(
        self,
        entity: str = "",
        triples: list[tuple[str, str, str]] | None = None,
        max_chars: int = 600,
    ) -> tuple[str, list[str]]:
        """An entity's paragraph, or one sentence per triple (names or ids resolved)."""
        if bool(entity) == bool(triples):
            raise InvalidArgumentError("give an entity or triples to verbalize (not both)")
        labels = self.artifact.entities.labels
        relations = self.artifact.relations.labels
        if entity:
            return self.verbalizer.entity(labels[self.predictor.resolve_entity(entity)],
                                          max_chars=max_chars), []  # fmt: skip
        assert triples is not None
        sentences = [
            self.verbalizer.triple(
                labels[self.predictor.resolve_entity(h)],
                relations[self.predictor.resolve_relation(r)],
                labels[self.predictor.resolve_entity(t)],
            )
            for h, r, t in triples
        ]
        return " ".join(sentences), sentences

    def semantic_index(
        self,
        encoder: TextEncoder,
        cache_dir: Path,
        should_stop: Callable[[], bool] | None = None,
    ) -> SemanticIndex:
        """Entity text vectors of this version under ``encoder``: looked up by text in the
        cache in ``cache_dir``, only texts never seen encoded
        (:mod:`kgweave.language.features.text_vectors`; ``should_stop`` ends the encoding
        between chunks with ``EncodingStoppedError``)."""
        from kgweave.language.features.coldstart import artifact_entity_texts
        from kgweave.language.features.semantic import SemanticIndex
        from kgweave.language.features.text_vectors import cached_text_vectors

        with self._text_lock:
            if self._text_index is not None and self._text_index[0] == encoder.spec:
                return self._text_index[1]
            texts = artifact_entity_texts(self.artifact)
            vectors = cached_text_vectors(texts, encoder, cache_dir, should_stop=should_stop)
            index = SemanticIndex(vectors, self.artifact.entities.labels, encoder)
            self._text_index = (encoder.spec, index)
            return index

    def cold_projection(
        self,
        encoder: TextEncoder,
        cache_dir: Path,
        should_stop: Callable[[], bool] | None = None,
    ) -> TextProjection:
        """The map from text vectors into this version's entity space (cold start), fitted
        once per version on its entities that have text (ridge regression); ``should_stop``:
        as :meth:`semantic_index`'s."""
        from kgweave.language.features.coldstart import TextProjection

        index = self.semantic_index(encoder, cache_dir, should_stop)
        with self._text_lock:
            if self._projection is None:
                art = self.artifact
                has_text = torch.tensor(
                    [i for i, n in enumerate(art.entity_names) if n and i not in self.excluded],
                    dtype=torch.long,
                )
                if len(has_text) < 2:
                    raise FailedPreconditionError(
                        "this model's entities have no text to learn a cold-start projection from"
                    )
                kge = art.model.entity.weight.detach().float().cpu()[has_text]
                self._projection = TextProjection.fit(index.vectors[has_text], kge)
            return self._projection

    def completer(self, language_model: str | None) -> tuple[LMCompleter, str]:
        """The LLM-driven completer of this version, built on first use (at load for joint
        versions: :meth:`warm_language`): the joint artifact's own LM and fitted weights when
        the version was trained with ``--joint``, otherwise the ``language_model`` setting
        (weights not fitted: 1, 1, 0). Returns it and a label of the LM used."""
        from kgweave.language.features.completion import LMCompleter
        from kgweave.serving.language_models import joint_language, pretrained_lm

        with self._text_lock:
            if self._completer is None:
                if is_joint(self.artifact.path):
                    parts = joint_language(self.artifact.path, self.device)
                    self._completer = (
                        LMCompleter(
                            self.predictor, parts.lm, parts.tokenizer, self.verbalizer,
                            parts.weights, fusion=parts.fusion,
                        ),
                        "joint",
                    )  # fmt: skip
                elif language_model and language_model != "small":
                    lm, tokenizer = pretrained_lm(language_model, self.device)
                    self._completer = (
                        LMCompleter(self.predictor, lm, tokenizer, self.verbalizer),
                        language_model,
                    )
                else:
                    raise FailedPreconditionError(
                        f"model {self.version} has no language model: train one with "
                        "`kgweave train --joint` (or --remote --joint), or set "
                        "KGWEAVE_LANGUAGE_MODEL to a pretrained causal LM (smollm2-135m-instruct, "
                        "a folder or a Hugging Face id)"
                    )
            return self._completer

    @property
    def cold_count(self) -> int:
        """Entities added to the registry version by graph changes."""
        return len(self.artifact.config.get("cold_entities", []))

    def semantic_search(
        self, text: str, limit: int, encoder: TextEncoder, cache_dir: Path
    ) -> list[tuple[EntityInfo, float]]:
        """Entities whose text is closest to ``text`` (cosine under ``encoder``)."""
        if not text.strip():
            raise InvalidArgumentError("give a non-empty text to search for")
        # deleted entities are skipped, so as many more are asked for: still ``limit`` hits
        wanted = max(limit, min(limit + len(self.excluded), arguments.MAX_K))
        hits = self.semantic_index(encoder, cache_dir).search_one(text, wanted)
        index = self.artifact.entities.index
        kept = [(index[label], score) for label, score in hits if index[label] not in self.excluded]
        return [(self._info(e, 0), score) for e, score in kept[:limit]]

    def entity(self, text: str, max_facts: int = 20) -> EntityInfo:
        if not text:
            raise InvalidArgumentError("give an entity id or name")
        e = self.predictor.resolve_entity(text)
        return self._info(e, max_facts)

    def _info(self, e: int, max_facts: int) -> EntityInfo:
        art = self.artifact
        ids, degree = self.entity_facts.of(e, max_facts)
        labels, relations = art.entities.labels, art.relations.labels
        facts = [(labels[h], relations[r], labels[t]) for h, r, t in ids.tolist()]
        descriptions = art.entity_descriptions
        return EntityInfo(
            id=labels[e],
            name=art.entity_names[e] or "",
            description=(descriptions[e] if e < len(descriptions) else None) or "",
            degree=degree,
            facts=facts,
        )

    def search(self, prefix: str, limit: int = 10) -> list[EntityInfo]:
        """Entities whose name or id starts with ``prefix`` (case-insensitive)."""
        if not prefix:
            raise InvalidArgumentError("give a non-empty prefix")
        hits = self._prefix_index.search(prefix.casefold())
        ranked = sorted(hits, key=lambda e: (len(hits[e]), hits[e]))[:limit]
        return [self._info(e, 0) for e in ranked]
