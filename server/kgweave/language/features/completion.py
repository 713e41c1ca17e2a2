"""LLM-driven link completion: KGE candidates and constrained LM generation, re-ranked together.

For a query ``(head, relation, ?)`` (or ``(?, relation, tail)``):

1. **Candidates** are the KGE model's top ``top_n`` (:class:`kgweave.predict.LinkPredictor`)
   together with the language model's own proposals: beam search over a prefix trie of the
   tokenized entity names (:class:`EntityNameTrie`), so the LM can only emit tokens that
   continue some entity name and a hypothesis ends only at a complete name. The text after the
   slot (``"."``, or ``" was born in London."`` for a head query) is scored after each
   complete name, so names that fit the whole sentence win.
   Where :attr:`LMCompleter.new_candidates` is set, the LM also generates freely after the
   slot's prefix (:meth:`kgweave.language.features.constrained.NameSearch.free`); a name that
   is no entity's comes back **new** (``new=True``, no entity id) with its evidence sentence.
2. **Evidence**: each candidate's fact verbalized as one sentence
   (:class:`kgweave.language.features.verbalize.Verbalizer`); ``lm_logprob`` is ``log P(sentence
   after the slot's prefix | prefix)`` under the LM and ``lm_marginal`` is ``log P(name)`` with
   no context, both by :class:`kgweave.language.features.lm_scoring.LMScorer` (the prompt run
   once per query, the candidates batched on its cache). A joint model's LM, trained with KG
   embeddings added at entity mentions, scores the same way (``fusion``): the known entity's
   embedding at its name in the prompt, each candidate's at its name in its continuation
   (and in its ``lm_marginal``).
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
KGE-selected negatives would reward low KGE scores). Only the KGE top-N take part in fitting
(not LM-generated candidates): it keeps fitting to one LM pass per validation fact and side.
How the weights are fitted on those lists (a conditional logistic regression or a grid, and
which LM feature is kept) is :func:`kgweave.language.features.rerank.fit_weights`'s.

Size (over 400 lines): one class, :class:`LMCompleter`, whose answering and fitting share the
query's slot, the name tries, the marginal memo and the KGE side; the decoding is
:class:`kgweave.language.features.constrained.NameSearch`'s and the re-ranking maths
:mod:`kgweave.language.features.rerank`'s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal

import torch

from kgweave.errors import InvalidArgumentError
from kgweave.language.features.constrained import EntityNameTrie, GeneratedName, NameSearch
from kgweave.language.features.lm_scoring import EntityFusion, LMScorer, Mention
from kgweave.language.features.relation_phrases import HEAD, TAIL
from kgweave.language.features.rerank import LM_FEATURES, RerankWeights, Scored, check_fit
from kgweave.language.features.rerank import fit_weights as fit_rerank_weights
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
    known: bool  # the completed fact is known
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
        scorer: scores continuations with the LM, and decodes names with its model (default:
            an :class:`LMScorer` on ``model`` and ``fusion``).
        fusion: the KG embeddings the LM was trained to read at entity mentions (a joint
            model's :class:`~kgweave.language.joint.entity_lm.EntityAwareLM`); None: the LM
            scores text alone. Decoding names reads text alone either way.
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
        fusion: EntityFusion | None = None,
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
        self.scorer = scorer or LMScorer(model, tokenizer, fusion=fusion)
        labels = self.artifact.entities.labels
        self.names = [self.verbalizer.name(e) for e in labels]
        self._by_name: dict[str, int] = {}
        for i, name in enumerate(self.names):
            self._by_name.setdefault(name.casefold(), i)
        #: most names are capitalised: proper names, not lemmas (how free text is cut)
        self.proper_names = sum(n[:1].isupper() for n in self.names) * 2 > len(self.names)
        self._tries: dict[tuple[str, bool], EntityNameTrie] = {}
        self._marginals: dict[tuple[str, bool], dict[tuple[str, int | None], float]] = {}

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
        constrained beam search (:meth:`NameSearch.constrained`)."""
        prefix, suffix, leading, capitalize = self.slot(entity, relation, side)
        trie = self.trie(leading, capitalize)
        return NameSearch(self.scorer, beam_size, num_return).constrained(trie, prefix, suffix)

    def evidence(self, entity: int, relation: int, candidate: int, side: Side) -> str:
        """The verbalized fact that puts ``candidate`` in the missing slot."""
        labels = self.artifact.entities.labels
        head, tail = (entity, candidate) if side == "tail" else (candidate, entity)
        return self.verbalizer.triple(
            labels[head], self.artifact.relations.labels[relation], labels[tail]
        )

    def marginals(
        self,
        surfaces: list[str],
        leading: str,
        capitalize: bool,
        entities: list[int] | None = None,
    ) -> list[float]:
        """``log P(leading + surface)`` from the start token alone, remembered per slot form.

        ``entities``: the entity each surface names; with a fusion, its embedding is added at
        the surface's tokens, as in the continuation it is compared with (none: new names).
        """
        memo = self._marginals.setdefault((leading, capitalize), {})
        fused = self.scorer.fusion is not None and entities is not None
        keys = [
            (x, entities[i] if fused and entities is not None else None)
            for i, x in enumerate(surfaces)
        ]
        todo = sorted({k for k in keys if k not in memo}, key=lambda k: (k[0], k[1] or -1))
        if todo:
            found = self.scorer.score(
                "",
                [leading + x for x, _ in todo],
                mentions=[
                    [(len(leading), len(leading) + len(x), e)] if e is not None else []
                    for x, e in todo
                ],
            )
            memo.update(zip(todo, found, strict=True))
        return [memo[k] for k in keys]

    def _hr(self, entity: int, relation: int, side: Side) -> torch.Tensor:
        """The query as a (1, 2) batch for tail scoring (a head query through the reciprocal)."""
        rel = relation if side == "tail" else relation + len(self.artifact.relations)
        return torch.tensor([[entity, rel]], device=self.predictor.device)

    def _graph_scores(
        self, entity: int, relation: int, side: Side, candidates: list[int]
    ) -> tuple[list[float], list[float] | None]:
        """KGE scores of the candidates, and their fused scores (None without a fusion)."""
        hr = self._hr(entity, relation, side)
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
        if self.scorer.fusion is not None:
            at_prompt, mentions = self._mentions(entity, relation, side, candidates, prefix, conts)
            lm = self.scorer.score(prefix, conts, at_prompt, mentions)
        else:
            lm = self.scorer.score(prefix, conts)
        marginal = self.marginals(
            [trie.texts[c] for c in candidates], leading, capitalize, candidates
        )
        graph = text if text is not None else kge
        return Scored(candidates, list(graph), lm, texts, kge, text, marginal)

    def _mentions(
        self,
        entity: int,
        relation: int,
        side: Side,
        candidates: list[int],
        prefix: str,
        conts: list[str],
    ) -> tuple[list[Mention], list[list[Mention]]]:
        """Where the prompt (:meth:`prompt_mentions`) and each candidate's continuation name
        the fact's entities."""
        labels = self.artifact.entities.labels
        rel_label = self.artifact.relations.labels[relation]
        cut = len(prefix)
        mentions: list[list[Mention]] = []
        for c, cont in zip(candidates, conts, strict=True):
            head, tail = (entity, c) if side == "tail" else (c, entity)
            found = self.verbalizer.mentions(
                prefix + cont, rel_label, (head, labels[head]), (tail, labels[tail])
            )
            mentions.append([(a - cut, z - cut, e) for a, z, e in found if a >= cut])
        return self.prompt_mentions(entity, prefix), mentions

    def prompt_mentions(self, entity: int, prefix: str) -> list[Mention]:
        """The known entity's name in the slot's prefix (none when the slot comes first)."""
        name = self.names[entity].casefold()
        at = prefix.casefold().find(name) if name else -1
        return [(at, at + len(name), entity)] if at >= 0 else []

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
            search = NameSearch(self.scorer, self.beam_size, self.new_candidates)
            for name in search.free(prefix, suffix, proper_names=self.proper_names):
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
        rows = [
            CompletionCandidate(
                rank=0,
                entity=self.artifact.entities.labels[c],
                name=self.names[c],
                kge_score=kg,
                lm_logprob=lm,
                combined=combined,
                source="+".join(s for s in ("kge", "lm") if s in sources[c]),
                evidence=text,
                known=c in known,
                graph_score=graph,
                lm_marginal=marg,
            )
            for c, graph, text, (kg, lm, _, marg), combined in zip(
                scored.entities,
                scored.graph,
                scored.evidence,
                scored.signals(),
                scored.combined(self.weights),
                strict=True,
            )
        ]
        if new_names:
            at_prompt = self.prompt_mentions(entity, prefix)
            rows += self._new_rows(
                new_names, scored, prefix, suffix, leading, capitalize, at_prompt
            )
        rows.sort(key=lambda c: (-c.combined, c.new, c.entity or c.name))
        return [replace(c, rank=i + 1) for i, c in enumerate(rows[:k])]

    def _new_rows(
        self,
        names: list[str],
        scored: Scored,
        prefix: str,
        suffix: str,
        leading: str,
        capitalize: bool,
        at_prompt: list[Mention],
    ) -> list[CompletionCandidate]:
        """New names scored by the LM (``at_prompt``: the prompt's mentions); their graph
        signals are the query's lowest (the graph knows nothing of them)."""
        surfaces = [n[:1].upper() + n[1:] if capitalize else n for n in names]
        evidence = [prefix + leading + x + suffix for x in surfaces]
        lm = self.scorer.score(prefix, [leading + x + suffix for x in surfaces], at_prompt)
        marginal = self.marginals(surfaces, leading, capitalize)
        kge = min(scored.kge)
        text = min(scored.text) if scored.text is not None else None
        return [
            CompletionCandidate(
                rank=0,
                entity="",
                name=x,
                kge_score=math.nan,
                lm_logprob=lp,
                combined=self.weights.combine(kge, lp, text, mg),
                source="new",
                evidence=e,
                known=False,
                graph_score=math.nan,
                new=True,
                lm_marginal=mg,
            )
            for x, e, lp, mg in zip(surfaces, evidence, lm, marginal, strict=True)
        ]

    def _kge_candidates(self, entity: int, relation: int, side: Side, n: int) -> list[int]:
        hr = self._hr(entity, relation, side)
        if self.ranker is not None:
            fused = self.ranker(hr)[0]
            top = fused.topk(min(n, len(fused)))
            return [int(i) for i in top.indices.tolist()]
        found = self.predictor.predict_ids(hr, n, False)[0]
        index = self.artifact.entities.index
        return [index[p.entity] for p in found]

    def _known_answers(self, entity: int, relation: int, side: Side) -> set[int]:
        hr = self._hr(entity, relation, side)
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
            max_triples: use a seeded sample of at most this many facts.
            method, lm_features: as :func:`kgweave.language.features.rerank.fit_weights`.
        Returns:
            the fitted weights with their report (see
            :func:`~kgweave.language.features.rerank.fit_weights`).
        """
        check_fit(method, lm_features)
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
        self.weights = fit_rerank_weights(
            groups, method, lm_features, extra, self.scorer.sequences_per_second
        )
        return self.weights
