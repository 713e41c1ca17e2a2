"""LLM-driven link completion: KGE candidates and constrained LM generation, re-ranked together.

For a query ``(head, relation, ?)`` (or ``(?, relation, tail)``):

1. **Candidates** are the KGE model's top ``top_n`` (:class:`kgweave.predict.LinkPredictor`)
   together with the language model's own proposals: beam search over a prefix trie of the
   tokenized entity names (:class:`EntityNameTrie`), so the LM can only emit tokens that
   continue some entity name and a hypothesis ends only at a complete name. The text after the
   slot (``"."``, or ``" was born in London."`` for a head query) is scored after each
   complete name, so names that fit the whole sentence win.
2. **Evidence**: each candidate's fact verbalized as one sentence
   (:class:`kgweave.language.features.verbalize.Verbalizer`); ``lm_logprob`` is ``log P(sentence
   after
   the slot's prefix | prefix)`` under the LM
   (:func:`kgweave.language.components.lm.sequence_logprob`).
3. **Re-ranking**: ``combined = w_kge * graph_score + w_lm * lm_logprob + b``, where
   ``graph_score`` is the KGE score, or, when the model carries a text fusion
   (:class:`kgweave.language.features.text_fusion.TextFusion`), the fused score of the KGE and the
   entity-text features; the candidates then come from the fused ranking too.

The weights are **fitted on validation** by :meth:`LMCompleter.fit_weights`: for each
validation fact and both of its sides whose true entity is among the KGE top-N (other known
answers removed), the true entity is a positive and the rest of that top-N are negatives —
the same candidate lists re-ranking sees at inference (adding an out-of-list true entity to
KGE-selected negatives would reward low KGE scores). ``method="logistic"`` (default) fits a
conditional logistic regression on the two features: the weights maximise the probability of
the true entity under a softmax over its own query's candidates (KGE scores are comparable only
within a query), then ``b`` is fitted so that ``sigmoid(combined)`` is a class-balanced
probability of the fact being true (features standardised while fitting, weights mapped back to
raw units); ``method="grid"`` picks the mix of the
standardised features that maximises validation MRR over those candidate lists (``b`` then
only shifts scores). Only the KGE top-N take part in fitting (not LM-generated candidates):
it keeps fitting to one LM pass per validation fact and side.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import torch

from kgweave.errors import FailedPreconditionError, InvalidArgumentError, echo
from kgweave.language.components.lm import sequence_logprob
from kgweave.language.features.constrained import (
    EntityNameTrie,
    GeneratedName,
    constrained_generate,
)
from kgweave.language.features.relation_phrases import HEAD, TAIL
from kgweave.language.features.rerank import (
    RerankWeights,
    Scored,
    fit_grid,
    fit_logistic,
    group_mrr,
)
from kgweave.language.features.verbalize import Verbalizer
from kgweave.predict import LinkPredictor, Query

if TYPE_CHECKING:
    from kgweave.models.products import EntityScorer

Side = Literal["tail", "head"]


@dataclass(frozen=True)
class CompletionCandidate:
    """One ranked answer with the evidence for it."""

    rank: int
    entity: str
    name: str
    kge_score: float
    lm_logprob: float
    combined: float
    source: str  # "kge", "lm" or "kge+lm": which candidate generator proposed it
    evidence: str  # the verbalized fact
    known: bool  # the completed fact is in the training graph
    #: what the re-ranker weighs: the text-fused score, or kge_score without a text fusion
    graph_score: float


class LMCompleter:
    """Link completion with a KGE model and a causal LM (see the module docstring).

    Args:
        predictor: the KGE side (its artifact names the entities and relations).
        model, tokenizer: a causal LM and its tokenizer (e.g. from
            :func:`kgweave.language.components.lm.load_lm`).
        verbalizer: facts to sentences; default: from the predictor's artifact.
        weights: the re-ranking weights; default unfitted (1, 1, 0) until :meth:`fit_weights`.
        top_n: KGE candidates per query; lm_candidates: names kept from constrained decoding.
        ranker: when given (default: the predictor's own, if any), candidates and
            ``graph_score`` come from it: the KGE model fused with entity text
            (:class:`kgweave.language.features.text_fusion.FusedScorer`).
    """

    def __init__(
        self,
        predictor: LinkPredictor,
        model: Any,
        tokenizer: Any,
        verbalizer: Verbalizer | None = None,
        weights: RerankWeights | None = None,
        top_n: int = 20,
        lm_candidates: int = 5,
        beam_size: int = 8,
        ranker: EntityScorer | None = None,
    ) -> None:
        if top_n < 1 or lm_candidates < 0 or beam_size < 1:
            raise InvalidArgumentError("top_n and beam_size must be >= 1, lm_candidates >= 0")
        self.predictor = predictor
        self.artifact = predictor.artifact
        self.model = model
        self.tokenizer = tokenizer
        self.verbalizer = verbalizer or Verbalizer.from_artifact(self.artifact)
        self.weights = weights or RerankWeights()
        self.top_n = top_n
        self.lm_candidates = lm_candidates
        self.beam_size = beam_size
        self.ranker = ranker if ranker is not None else predictor.fused
        labels = self.artifact.entities.labels
        self.names = [self.verbalizer.name(e) for e in labels]
        self._tries: dict[tuple[str, bool], EntityNameTrie] = {}

    # ---- pieces
    def trie(self, leading: str, capitalize: bool) -> EntityNameTrie:
        """The name trie for a slot context (built once, then cached)."""
        key = (leading, capitalize)
        if key not in self._tries:
            self._tries[key] = EntityNameTrie(self.tokenizer, self.names, leading, capitalize)
        return self._tries[key]

    def slot(self, entity: int, relation: int, side: Side) -> tuple[str, str, str, bool]:
        """(prefix, suffix, leading, capitalize) around the missing entity's slot."""
        rel_label = self.artifact.relations.labels[relation]
        phrase = self.verbalizer.relation_phrase(rel_label)
        known = self.names[entity]
        prefix, suffix = phrase.split_tail(known) if side == "tail" else phrase.split_head(known)
        before = phrase.template.partition(TAIL if side == "tail" else HEAD)[0]
        leading = " " if prefix and before[-1:].isspace() else ""
        return prefix, suffix, leading, not prefix

    def generate(
        self, entity: int, relation: int, side: Side, beam_size: int, num_return: int
    ) -> list[GeneratedName]:
        """The language model's own answers for the missing slot: entity names spelled by
        constrained beam search (:func:`constrained_generate`)."""
        prefix, suffix, leading, capitalize = self.slot(entity, relation, side)
        trie = self.trie(leading, capitalize)
        return constrained_generate(
            self.model, self.tokenizer, trie, prefix, suffix, beam_size, num_return
        )

    def evidence(self, entity: int, relation: int, candidate: int, side: Side) -> str:
        """The verbalized fact that puts ``candidate`` in the missing slot."""
        labels = self.artifact.entities.labels
        head, tail = (entity, candidate) if side == "tail" else (candidate, entity)
        return self.verbalizer.triple(
            labels[head], self.artifact.relations.labels[relation], labels[tail]
        )

    def _score(self, entity: int, relation: int, side: Side, candidates: list[int]) -> Scored:
        """KGE scores and LM log-likelihoods of the candidates of one query."""
        num_base = len(self.artifact.relations)
        rel = relation if side == "tail" else relation + num_base
        hr = torch.tensor([[entity, rel]], device=self.predictor.device)
        tails = torch.tensor([candidates], device=self.predictor.device)
        with torch.no_grad():
            kge = self.predictor.model.score_candidates(hr, tails).float()[0].tolist()
            graph = kge
            if self.ranker is not None:  # the fused row: one pass over all entities
                fused = self.ranker(hr)[0]
                graph = fused[tails[0]].tolist()
        prefix, suffix, leading, capitalize = self.slot(entity, relation, side)
        texts = [self.evidence(entity, relation, c, side) for c in candidates]
        trie = self.trie(leading, capitalize)
        conts = [
            self._continuation(t, prefix, leading + trie.texts[c] + suffix)
            for t, c in zip(texts, candidates, strict=True)
        ]
        lm = sequence_logprob(self.model, self.tokenizer, [prefix] * len(conts), conts).tolist()
        return Scored(
            candidates,
            [float(x) for x in graph],
            [float(x) for x in lm],
            texts,
            [float(x) for x in kge],
        )

    @staticmethod
    def _continuation(evidence: str, prefix: str, fallback: str) -> str:
        """The evidence sentence after the slot's prefix (all of it when there is none)."""
        if not prefix:
            return evidence
        return evidence[len(prefix) :] if evidence.startswith(prefix) else fallback

    def _resolve(self, query: Query) -> tuple[int, int, Side]:
        for what, value in (("head", query.head), ("tail", query.tail)):
            if value is not None and not value.strip():
                raise InvalidArgumentError(f"empty {what}: give an entity id or name")
        if not query.relation or not query.relation.strip():
            raise InvalidArgumentError("empty relation: give a relation label")
        entity, rel = self.predictor.hr_of(query)
        num_base = len(self.artifact.relations)
        if query.head is not None:
            return entity, rel, "tail"
        return entity, rel - num_base, "head"

    # ---- answering
    def complete(
        self, query: Query, k: int = 10, filter_known: bool = False
    ) -> list[CompletionCandidate]:
        """Ranked answers to ``(head, relation, ?)`` or ``(?, relation, tail)``.

        Raises:
            InvalidArgumentError: both or neither of head and tail, empty text, bad k.
            NotFoundError: unknown entity or relation (with close names).
        """
        if k < 1:
            raise InvalidArgumentError(f"k must be at least 1, got {k}")
        entity, relation, side = self._resolve(query)
        return self.complete_ids(entity, relation, side, k, filter_known)

    def complete_ids(
        self, entity: int, relation: int, side: Side, k: int = 10, filter_known: bool = False
    ) -> list[CompletionCandidate]:
        """As :meth:`complete`, for ids (``relation`` without reciprocals)."""
        sources: dict[int, set[str]] = {}
        for c in self._kge_candidates(entity, relation, side, self.top_n):
            sources.setdefault(c, set()).add("kge")
        if self.lm_candidates:
            generated = self.generate(entity, relation, side, self.beam_size, self.lm_candidates)
            for g in generated:
                sources.setdefault(g.entity, set()).add("lm")
        known = self._known_answers(entity, relation, side)
        candidates = [c for c in sources if not (filter_known and c in known)]
        if not candidates:
            return []
        scored = self._score(entity, relation, side, candidates)
        w = self.weights
        rows = [
            (w.combine(graph, lm), c, kg, lm, text, graph)
            for c, graph, lm, text, kg in zip(
                scored.entities, scored.graph, scored.lm, scored.evidence, scored.kge, strict=True
            )
        ]
        rows.sort(key=lambda r: (-r[0], r[1]))
        labels = self.artifact.entities.labels
        return [
            CompletionCandidate(
                rank=i + 1,
                entity=labels[c],
                name=self.names[c],
                kge_score=kg,
                lm_logprob=lm,
                combined=combined,
                source="+".join(s for s in ("kge", "lm") if s in sources[c]),
                evidence=text,
                known=c in known,
                graph_score=graph,
            )
            for i, (combined, c, kg, lm, text, graph) in enumerate(rows[:k])
        ]

    def _kge_candidates(self, entity: int, relation: int, side: Side, n: int) -> list[int]:
        num_base = len(self.artifact.relations)
        rel = relation if side == "tail" else relation + num_base
        hr = torch.tensor([[entity, rel]], device=self.predictor.device)
        if self.ranker is not None:
            fused = self.ranker(hr)[0]
            top = fused.topk(min(n, len(fused)))
            return [int(i) for i in top.indices.tolist()]
        found = self.predictor.predict_ids(hr, n, False)[0]
        index = self.artifact.entities.index
        return [index[p.entity] for p in found]

    def _known_answers(self, entity: int, relation: int, side: Side) -> set[int]:
        num_base = len(self.artifact.relations)
        rel = relation if side == "tail" else relation + num_base
        hr = torch.tensor([[entity, rel]], device=self.predictor.device)
        _, tails = self.predictor.known.lookup(hr)
        return {int(t) for t in tails.tolist()}

    # ---- fitting the weights on validation
    def fit_weights(
        self,
        triples: torch.Tensor,
        method: Literal["logistic", "grid"] = "logistic",
        max_triples: int | None = None,
        seed: int = 0,
    ) -> RerankWeights:
        """Fit ``w_kge``, ``w_lm`` and ``b`` on validation facts and use them from now on.

        Args:
            triples: shape (M, 3) validation facts as ids of the artifact's maps.
            method: ``logistic`` or ``grid`` (see the module docstring).
            max_triples: use a seeded sample of at most this many facts.
        Returns:
            the fitted weights, with a report (queries, candidates, validation MRR of the KGE
            score alone and of the combined score over the same candidate lists).
        """
        if triples.dim() != 2 or triples.shape[1] != 3 or len(triples) == 0:
            raise InvalidArgumentError("fit_weights needs validation triples of shape (M, 3)")
        if max_triples is not None and len(triples) > max_triples:
            generator = torch.Generator().manual_seed(seed)
            triples = triples[torch.randperm(len(triples), generator=generator)[:max_triples]]
        rows = triples.tolist()
        answers: dict[tuple[int, int, str], set[int]] = {}
        for h, r, t in rows:
            answers.setdefault((h, r, "tail"), set()).add(t)
            answers.setdefault((t, r, "head"), set()).add(h)
        # Candidate lists as at inference: the KGE top-N (other known answers removed). A query
        # whose true answer is not among them cannot be re-ranked and is left out: adding the
        # true entity to a list of KGE-selected negatives would teach "low KGE score = true".
        pending: list[tuple[int, int, Side, list[int], int]] = []
        missed: list[tuple[int, int, Side, list[int], int]] = []
        for h, r, t in rows:
            for entity, target, side in ((h, t, "tail"), (t, h, "head")):
                s: Side = "tail" if side == "tail" else "head"
                other = (answers[(entity, r, side)] | self._known_answers(entity, r, s)) - {target}
                top = [c for c in self._kge_candidates(entity, r, s, self.top_n) if c not in other]
                if target in top:
                    pending.append((entity, r, s, top, top.index(target)))
                else:
                    missed.append((entity, r, s, [target, *top], 0))
        biased = not pending
        if biased:  # no answer in any top-N: fall back to adding the true entity
            pending = missed
        groups: list[tuple[Scored, int]] = [
            (self._score(entity, r, s, cands), target_at)
            for entity, r, s, cands, target_at in pending
        ]
        if not any(len(g.entities) > 1 for g, _ in groups):
            raise FailedPreconditionError(
                "cannot fit re-ranking weights: no validation query has a negative candidate"
            )
        kge = torch.tensor([x for g, _ in groups for x in g.graph], dtype=torch.float64)
        lm = torch.tensor([x for g, _ in groups for x in g.lm], dtype=torch.float64)
        labels = torch.tensor(
            [1.0 if i == g_i else 0.0 for g, g_i in groups for i in range(len(g.entities))],
            dtype=torch.float64,
        )
        mean = torch.stack((kge.mean(), lm.mean()))
        std = torch.stack((kge.std(), lm.std())).clamp(min=1e-6)
        z = (torch.stack((kge, lm), dim=1) - mean) / std  # (C, 2)
        if method == "logistic":
            w_std, b_std = fit_logistic(z, labels, [len(g.entities) for g, _ in groups])
        elif method == "grid":
            w_std, b_std = fit_grid(z, groups), 0.0
        else:
            raise InvalidArgumentError(f"unknown fitting method {echo(method)}: logistic or grid")
        w = w_std / std
        bias = b_std - float((w_std * mean / std).sum())
        fitted = RerankWeights(float(w[0]), float(w[1]), float(bias), method)
        report = {
            "queries": float(len(groups)),
            "queries_answer_outside_top_n": float(len(missed)),
            "fallback_true_added": float(biased),
            "candidates": float(len(labels)),
            "valid_mrr_kge": group_mrr(groups, lambda kg, lm: kg),
            "valid_mrr_lm": group_mrr(groups, lambda kg, lm: lm),
            "valid_mrr_combined": group_mrr(groups, fitted.combine),
        }
        self.weights = RerankWeights(fitted.w_kge, fitted.w_lm, fitted.bias, method, report)
        return self.weights
