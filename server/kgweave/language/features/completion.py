"""LLM-driven link completion: KGE candidates and constrained LM generation, re-ranked together.

For a query ``(head, relation, ?)`` (or ``(?, relation, tail)``):

1. **Candidates** are the KGE model's top ``top_n`` (:class:`kgweave.predict.LinkPredictor`)
   together with the language model's own proposals: beam search over a prefix trie of the
   tokenized entity names (:class:`EntityNameTrie`), so the LM can only emit tokens that
   continue some entity name and a hypothesis ends only at a complete name. The text after the
   slot (``"."``, or ``" was born in London."`` for a head query) is scored after each
   complete name, so names that fit the whole sentence win.
   Where :attr:`LMCompleter.new_candidates` is set, the LM also generates freely after the
   slot's prefix (:func:`kgweave.language.features.constrained.generate_names`); a name that
   is no entity's comes back **new** (``new=True``, no entity id) with its evidence sentence.
2. **Evidence**: each candidate's fact verbalized as one sentence
   (:class:`kgweave.language.features.verbalize.Verbalizer`); ``lm_logprob`` is ``log P(sentence
   after the slot's prefix | prefix)`` under the LM and ``lm_marginal`` is ``log P(name)`` with
   no context, both by :class:`kgweave.language.features.lm_scoring.LMScorer` (the prompt run
   once per query, the candidates batched on its cache).
3. **Re-ranking** over three signals (:class:`kgweave.language.features.rerank.RerankWeights`):
   ``combined = w_kge * kge + w_text * text + w_lm * lm + b``, where ``text`` is the fused score
   of the KGE and the entity-text features when the model carries a text fusion
   (:class:`kgweave.language.features.text_fusion.TextFusion`; the candidates then come from the
   fused ranking too) and ``lm`` is either the log-likelihood or the **PMI** ``lm_logprob -
   lm_marginal`` (raw log-probabilities favour short and frequent names). A new name has no
   graph scores: it takes the lowest ``kge`` and ``text`` of its query's graph candidates.

The weights are **fitted on validation** by :meth:`LMCompleter.fit_weights`: for each
validation fact and both of its sides whose true entity is among the KGE top-N (other known
answers removed), the true entity is a positive and the rest of that top-N are negatives —
the same candidate lists re-ranking sees at inference (adding an out-of-list true entity to
KGE-selected negatives would reward low KGE scores). ``method="logistic"`` (default) fits a
conditional logistic regression: the weights maximise the probability of the true entity under
a softmax over its own query's candidates (KGE scores are comparable only within a query), then
``b`` is fitted so that ``sigmoid(combined)`` is a class-balanced probability of the fact being
true (features standardised while fitting, weights mapped back to raw units); ``method="grid"``
picks the convex mix of the standardised features that maximises validation MRR. Both LM
features (log-likelihood and PMI) are fitted; the one with the better **two-fold
cross-validated** MRR over the validation queries is kept (then refitted on all of them), and
the report keeps both fits' weights and MRRs beside the signals' own. Only the KGE top-N take
part in fitting (not LM-generated candidates): it keeps fitting to one LM pass per validation
fact and side.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import torch

from kgweave.errors import FailedPreconditionError, InvalidArgumentError, echo
from kgweave.language.features.constrained import (
    EntityNameTrie,
    GeneratedName,
    constrained_generate,
    generate_names,
)
from kgweave.language.features.lm_scoring import LMScorer
from kgweave.language.features.relation_phrases import HEAD, TAIL
from kgweave.language.features.rerank import (
    LM_FEATURES,
    RerankWeights,
    Scored,
    fit_grid,
    fit_logistic,
    ranked_mrr,
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
    entity: str  # "" for a new name (no entity of the graph)
    name: str
    kge_score: float  # nan for a new name
    lm_logprob: float
    combined: float
    source: str  # "kge", "lm", "kge+lm", or "new": which generator proposed it
    evidence: str  # the verbalized fact
    known: bool  # the completed fact is in the training graph
    #: what the two-signal weights weigh: the text-fused score, else kge_score (nan if new)
    graph_score: float
    #: the LM proposed a name that is no entity of the graph
    new: bool = False
    #: log P(name alone), the PMI's second term
    lm_marginal: float = 0.0


class LMCompleter:
    """Link completion with a KGE model and a causal LM (see the module docstring).

    Args:
        predictor: the KGE side (its artifact names the entities and relations).
        model, tokenizer: a causal LM and its tokenizer (e.g. from
            :func:`kgweave.language.components.lm.load_lm`).
        verbalizer: facts to sentences; default: from the predictor's artifact.
        weights: the re-ranking weights; default unfitted (1, 1, 0) until :meth:`fit_weights`.
        top_n: KGE candidates per query; lm_candidates: names kept from constrained decoding;
            new_candidates: freely generated names kept (0: none; names of no entity come back
            marked new).
        ranker: when given (default: the predictor's own, if any), candidates and the text
            score come from it: the KGE model fused with entity text
            (:class:`kgweave.language.features.text_fusion.FusedScorer`).
        scorer: scores continuations with the LM (default: an :class:`LMScorer` on ``model``).
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
        new_candidates: int = 0,
        scorer: LMScorer | None = None,
    ) -> None:
        if top_n < 1 or lm_candidates < 0 or beam_size < 1 or new_candidates < 0:
            raise InvalidArgumentError(
                "top_n and beam_size must be >= 1, lm_candidates and new_candidates >= 0"
            )
        self.predictor = predictor
        self.artifact = predictor.artifact
        self.model = model
        self.tokenizer = tokenizer
        self.verbalizer = verbalizer or Verbalizer.from_artifact(self.artifact)
        self.weights = weights or RerankWeights()
        self.top_n = top_n
        self.lm_candidates = lm_candidates
        self.new_candidates = new_candidates
        self.beam_size = beam_size
        self.ranker = ranker if ranker is not None else predictor.fused
        self.scorer = scorer or LMScorer(model, tokenizer)
        labels = self.artifact.entities.labels
        self.names = [self.verbalizer.name(e) for e in labels]
        self._by_name: dict[str, int] = {}
        for i, name in enumerate(self.names):
            self._by_name.setdefault(name.casefold(), i)
        #: most names are capitalised: proper names, not lemmas (how free text is cut)
        self.proper_names = sum(n[:1].isupper() for n in self.names) * 2 > len(self.names)
        self._tries: dict[tuple[str, bool], EntityNameTrie] = {}
        self._marginals: dict[tuple[str, bool], dict[str, float]] = {}

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

    def marginals(self, surfaces: list[str], leading: str, capitalize: bool) -> list[float]:
        """``log P(leading + surface)`` from the start token alone, remembered per slot form."""
        memo = self._marginals.setdefault((leading, capitalize), {})
        todo = sorted({x for x in surfaces if x not in memo})
        if todo:
            found = self.scorer.score("", [leading + x for x in todo])
            memo.update(zip(todo, found, strict=True))
        return [memo[x] for x in surfaces]

    def _graph_scores(
        self, entity: int, relation: int, side: Side, candidates: list[int]
    ) -> tuple[list[float], list[float] | None]:
        """KGE scores of the candidates, and their fused scores (None without a fusion)."""
        num_base = len(self.artifact.relations)
        rel = relation if side == "tail" else relation + num_base
        hr = torch.tensor([[entity, rel]], device=self.predictor.device)
        tails = torch.tensor([candidates], device=self.predictor.device)
        with torch.no_grad():
            kge = self.predictor.model.score_candidates(hr, tails).float()[0].tolist()
            text = None
            if self.ranker is not None:  # the fused row: one pass over all entities
                text = [float(x) for x in self.ranker(hr)[0][tails[0]].tolist()]
        return [float(x) for x in kge], text

    def _score(self, entity: int, relation: int, side: Side, candidates: list[int]) -> Scored:
        """Every signal of the candidates of one query."""
        kge, text = self._graph_scores(entity, relation, side, candidates)
        prefix, suffix, leading, capitalize = self.slot(entity, relation, side)
        texts = [self.evidence(entity, relation, c, side) for c in candidates]
        trie = self.trie(leading, capitalize)
        conts = [
            self._continuation(t, prefix, leading + trie.texts[c] + suffix)
            for t, c in zip(texts, candidates, strict=True)
        ]
        lm = self.scorer.score(prefix, conts)
        marginal = self.marginals([trie.texts[c] for c in candidates], leading, capitalize)
        graph = text if text is not None else kge
        return Scored(candidates, list(graph), lm, texts, kge, text, marginal)

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
        prefix, suffix, leading, capitalize = self.slot(entity, relation, side)
        if self.lm_candidates:
            generated = self.generate(entity, relation, side, self.beam_size, self.lm_candidates)
            for g in generated:
                sources.setdefault(g.entity, set()).add("lm")
        new_names: list[str] = []
        if self.new_candidates and prefix:  # a causal LM cannot write a head before its tail
            for name in generate_names(
                self.model,
                self.tokenizer,
                prefix,
                suffix,
                leading,
                beam_size=max(self.beam_size, self.new_candidates),
                num_return=self.new_candidates,
                start_id=self.scorer.start,
                proper_names=self.proper_names,
            ):
                found = self._by_name.get(name.casefold())
                if found is None:
                    new_names.append(name)
                else:
                    sources.setdefault(found, set()).add("lm")
        known = self._known_answers(entity, relation, side)
        candidates = [c for c in sources if not (filter_known and c in known)]
        if not candidates:
            return []
        scored = self._score(entity, relation, side, candidates)
        w = self.weights
        rows = [
            (
                w.combine(kg, lm, txt, marg),
                CompletionCandidate(
                    rank=0,
                    entity=self.artifact.entities.labels[c],
                    name=self.names[c],
                    kge_score=kg,
                    lm_logprob=lm,
                    combined=w.combine(kg, lm, txt, marg),
                    source="+".join(s for s in ("kge", "lm") if s in sources[c]),
                    evidence=text,
                    known=c in known,
                    graph_score=graph,
                    lm_marginal=marg,
                ),
            )
            for c, graph, lm, text, kg, txt, marg in zip(
                scored.entities,
                scored.graph,
                scored.lm,
                scored.evidence,
                scored.kge,
                _or_none(scored.text, len(candidates)),
                scored.marginal or [0.0] * len(candidates),
                strict=True,
            )
        ]
        if new_names:
            rows += self._new_rows(new_names, scored, prefix, suffix, leading, capitalize)
        rows.sort(key=lambda r: (-r[0], r[1].new, r[1].entity or r[1].name))
        return [
            CompletionCandidate(**{**c.__dict__, "rank": i + 1})
            for i, (_, c) in enumerate(rows[:k])
        ]

    def _new_rows(
        self,
        names: list[str],
        scored: Scored,
        prefix: str,
        suffix: str,
        leading: str,
        capitalize: bool,
    ) -> list[tuple[float, CompletionCandidate]]:
        """New names scored by the LM; their graph signals are the query's lowest (the graph
        knows nothing of them)."""
        surfaces = [n[:1].upper() + n[1:] if capitalize else n for n in names]
        evidence = [prefix + leading + x + suffix for x in surfaces]
        lm = self.scorer.score(prefix, [leading + x + suffix for x in surfaces])
        marginal = self.marginals(surfaces, leading, capitalize)
        kge = min(scored.kge)
        text = min(scored.text) if scored.text is not None else None
        w = self.weights
        return [
            (
                w.combine(kge, lp, text, mg),
                CompletionCandidate(
                    rank=0,
                    entity="",
                    name=x,
                    kge_score=math.nan,
                    lm_logprob=lp,
                    combined=w.combine(kge, lp, text, mg),
                    source="new",
                    evidence=e,
                    known=False,
                    graph_score=math.nan,
                    new=True,
                    lm_marginal=mg,
                ),
            )
            for x, e, lp, mg in zip(surfaces, evidence, lm, marginal, strict=True)
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
    def validation_groups(
        self, triples: torch.Tensor, max_triples: int | None = None, seed: int = 0
    ) -> tuple[list[tuple[Scored, int]], int, bool]:
        """The scored candidate lists fitting sees (see the module docstring): groups, the
        number of queries whose answer was outside the top-N, and whether the true entity had
        to be added (no answer in any top-N)."""
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
        groups = [
            (self._score(entity, r, s, cands), target_at)
            for entity, r, s, cands, target_at in pending
        ]
        return groups, len(missed), biased

    def fit_weights(
        self,
        triples: torch.Tensor,
        method: Literal["logistic", "grid"] = "logistic",
        max_triples: int | None = None,
        seed: int = 0,
        lm_features: tuple[str, ...] = LM_FEATURES,
    ) -> RerankWeights:
        """Fit the weights on validation facts and use them from now on.

        Args:
            triples: shape (M, 3) validation facts as ids of the artifact's maps.
            method: ``logistic`` or ``grid`` (see the module docstring).
            max_triples: use a seeded sample of at most this many facts.
            lm_features: the LM features to try (``logprob``, ``pmi``); the better by two-fold
                cross-validated MRR is kept.
        Returns:
            the fitted weights, with a report: queries, candidates, the validation MRR of each
            signal alone, of each LM feature's fit (in-sample and cross-validated, with its
            weights) and of the chosen combination.
        """
        _check_fit(method, lm_features)
        groups, outside, biased = self.validation_groups(triples, max_triples, seed)
        extra = {
            "queries_answer_outside_top_n": float(outside),
            "fallback_true_added": float(biased),
        }
        return self.fit_groups(groups, method, lm_features, extra)

    def fit_groups(
        self,
        groups: list[tuple[Scored, int]],
        method: Literal["logistic", "grid"] = "logistic",
        lm_features: tuple[str, ...] = LM_FEATURES,
        extra: dict[str, float] | None = None,
    ) -> RerankWeights:
        """:meth:`fit_weights` on scored candidate lists (each with its true entity's index),
        e.g. from :meth:`validation_groups` or :meth:`_score`; ``extra`` joins the report."""
        _check_fit(method, lm_features)
        if not groups or not any(len(g.entities) > 1 for g, _ in groups):
            raise FailedPreconditionError(
                "cannot fit re-ranking weights: no validation query has a negative candidate"
            )
        has_text = groups[0][0].text is not None
        targets = [t for _, t in groups]
        report: dict[str, float] = {
            "queries": float(len(groups)),
            **(extra or {}),
            "candidates": float(sum(len(g.entities) for g, _ in groups)),
            "valid_mrr_kge": ranked_mrr([g.kge for g, _ in groups], targets),
            "valid_mrr_lm": ranked_mrr([g.lm for g, _ in groups], targets),
            "valid_mrr_pmi": ranked_mrr(
                [[a - b for a, b in zip(g.lm, g.marginal or [], strict=True)] for g, _ in groups],
                targets,
            ),
            "lm_sequences_per_s": self.scorer.sequences_per_second,
        }
        if has_text:
            report["valid_mrr_text"] = ranked_mrr([g.text or [] for g, _ in groups], targets)
        best: tuple[float, RerankWeights] | None = None
        for feature in (None, *lm_features):
            weights = _fit(groups, feature, method, has_text)
            name = feature or "no_lm"
            report[f"{name}_valid_mrr"] = _mrr(groups, weights)
            report[f"{name}_cv_mrr"] = _cross_validated(groups, feature, method, has_text)
            for key in ("w_kge", "w_text", "w_lm"):
                report[f"{name}_{key}"] = float(getattr(weights, key) or 0.0)
            report.update({f"{name}_{k}": v for k, v in weights.report.items()})
            if feature is not None and (best is None or report[f"{name}_cv_mrr"] > best[0]):
                best = (report[f"{name}_cv_mrr"], weights)
        assert best is not None
        chosen = best[1]
        report["valid_mrr_combined"] = _mrr(groups, chosen)
        report.update(chosen.report)  # z_kge, z_text, z_lm: the standardised weights
        self.weights = RerankWeights(
            chosen.w_kge, chosen.w_lm, chosen.bias, method, report, chosen.w_text,
            chosen.lm_feature,
        )  # fmt: skip
        return self.weights


def _or_none(values: list[float] | None, n: int) -> list[float | None]:
    return list(values) if values is not None else [None] * n


def _check_fit(method: str, lm_features: tuple[str, ...]) -> None:
    if method not in ("logistic", "grid"):
        raise InvalidArgumentError(f"unknown fitting method {echo(method)}: logistic or grid")
    if not lm_features or any(f not in LM_FEATURES for f in lm_features):
        raise InvalidArgumentError(f"lm_features must be among {', '.join(LM_FEATURES)}")


def _fit(
    groups: list[tuple[Scored, int]], feature: str | None, method: str, has_text: bool
) -> RerankWeights:
    """Weights over kge, text (with a fusion) and the LM ``feature`` (none for None)."""
    x = torch.tensor([row for g, _ in groups for row in g.features(feature)], dtype=torch.float64)
    labels = torch.tensor(
        [1.0 if i == t else 0.0 for g, t in groups for i in range(len(g.entities))],
        dtype=torch.float64,
    )
    mean, std = x.mean(dim=0), x.std(dim=0).nan_to_num(1.0).clamp(min=1e-6)
    z = (x - mean) / std
    if method == "logistic":
        w_std, b_std = fit_logistic(z, labels, [len(g.entities) for g, _ in groups])
    else:
        w_std, b_std = fit_grid(z, groups), 0.0
    w = (w_std / std).tolist()
    bias = b_std - float((w_std * mean / std).sum())
    w_text = w[1] if has_text else 0.0
    w_lm = w[-1] if feature is not None else 0.0
    zw = [float(x) for x in w_std.tolist()]  # standardised: comparable across features
    scale = {"z_kge": zw[0], "z_text": zw[1] if has_text else 0.0}
    scale["z_lm"] = zw[-1] if feature is not None else 0.0
    return RerankWeights(w[0], w_lm, bias, method, scale, w_text, feature or "logprob")


def _mrr(groups: list[tuple[Scored, int]], weights: RerankWeights) -> float:
    scores = [
        [
            weights.combine(kg, lm, txt, mg)
            for kg, lm, txt, mg in zip(
                g.kge,
                g.lm,
                _or_none(g.text, len(g.kge)),
                g.marginal or [0.0] * len(g.kge),
                strict=True,
            )
        ]
        for g, _ in groups
    ]
    return ranked_mrr(scores, [t for _, t in groups])


def _cross_validated(
    groups: list[tuple[Scored, int]], feature: str | None, method: str, has_text: bool
) -> float:
    """Two-fold MRR: fit on the even queries, rank the odd ones, and the other way round."""
    folds = [groups[0::2], groups[1::2]]
    if not all(any(len(g.entities) > 1 for g, _ in f) for f in folds):
        return _mrr(groups, _fit(groups, feature, method, has_text))
    total = 0.0
    for train, held in ((folds[0], folds[1]), (folds[1], folds[0])):
        total += _mrr(held, _fit(train, feature, method, has_text)) * len(held)
    return total / len(groups)
