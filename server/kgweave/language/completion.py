"""LLM-driven link completion: KGE candidates and constrained LM generation, re-ranked together.

For a query ``(head, relation, ?)`` (or ``(?, relation, tail)``):

1. **Candidates** are the KGE model's top ``top_n`` (:class:`kgweave.predict.LinkPredictor`)
   together with the language model's own proposals: beam search over a prefix trie of the
   tokenized entity names (:class:`EntityNameTrie`), so the LM can only emit tokens that
   continue some entity name and a hypothesis ends only at a complete name. The text after the
   slot (``"."``, or ``" was born in London."`` for a head query) is scored after each
   complete name, so names that fit the whole sentence win.
2. **Evidence**: each candidate's fact verbalized as one sentence
   (:class:`kgweave.language.verbalize.Verbalizer`); ``lm_logprob`` is ``log P(sentence after
   the slot's prefix | prefix)`` under the LM (:func:`kgweave.language.lm.sequence_logprob`).
3. **Re-ranking**: ``combined = w_kge * graph_score + w_lm * lm_logprob + b``, where
   ``graph_score`` is the KGE score, or, when the model carries a text fusion
   (:class:`kgweave.language.textfusion.TextFusion`), the fused score of the KGE and the
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

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import torch
import torch.nn.functional as F

from kgweave.errors import FailedPreconditionError, InvalidArgumentError, echo
from kgweave.language.lm import sequence_logprob
from kgweave.language.verbalize import HEAD, TAIL, Verbalizer
from kgweave.predict import LinkPredictor, Query

if TYPE_CHECKING:
    from kgweave.language.textfusion import TextFusion

Side = Literal["tail", "head"]


@dataclass(frozen=True)
class FusionWeights:
    """``combined = w_kge * graph_score + w_lm * lm_logprob + bias`` (``graph_score``: the
    KGE score, or the text-fused score when there is a text fusion)."""

    w_kge: float = 1.0
    w_lm: float = 1.0
    bias: float = 0.0
    method: str = "unfitted"
    #: what fitting saw: queries, candidates, validation MRR of KGE alone and combined
    report: dict[str, float] = field(default_factory=dict)

    def combine(self, kge_score: float, lm_logprob: float) -> float:
        """The combined score of one candidate."""
        return self.w_kge * kge_score + self.w_lm * lm_logprob + self.bias

    def to_dict(self) -> dict[str, Any]:
        return {
            "w_kge": self.w_kge,
            "w_lm": self.w_lm,
            "bias": self.bias,
            "method": self.method,
            "report": dict(self.report),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FusionWeights:
        return cls(
            float(data["w_kge"]),
            float(data["w_lm"]),
            float(data["bias"]),
            str(data.get("method", "unfitted")),
            {k: float(v) for k, v in dict(data.get("report") or {}).items()},
        )


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


@dataclass(frozen=True)
class GeneratedName:
    """A complete entity name produced by constrained decoding."""

    entity: int
    text: str
    logprob: float  # log P(name tokens + suffix | prompt)


class _Node:
    __slots__ = ("children", "entities")

    def __init__(self) -> None:
        self.children: dict[int, _Node] = {}
        self.entities: list[int] = []


class EntityNameTrie:
    """Prefix trie over the token ids of every entity name.

    Args:
        tokenizer: tokenizes each name as ``leading + name`` (``leading=" "`` for a name after
            a space, ``""`` at the start of a sentence, where ``capitalize`` upper-cases the
            first letter as the verbalizer does).
        names: entity id -> name.
    """

    def __init__(
        self, tokenizer: Any, names: Sequence[str], leading: str = " ", capitalize: bool = False
    ) -> None:
        self.leading = leading
        self.capitalize = capitalize
        self.root = _Node()
        self.texts = [self.surface(n) for n in names]
        token_lists = tokenizer([leading + t for t in self.texts], add_special_tokens=False)[
            "input_ids"
        ]
        for entity, tokens in enumerate(token_lists):
            if not tokens:
                continue
            node = self.root
            for token in tokens:
                node = node.children.setdefault(int(token), _Node())
            node.entities.append(entity)

    def surface(self, name: str) -> str:
        """How a name appears in the slot (capitalised at the start of a sentence)."""
        return name[:1].upper() + name[1:] if self.capitalize else name

    def allowed(self, tokens: Sequence[int]) -> list[int]:
        """Tokens that may follow ``tokens`` (a prefix of some name); [] when none."""
        node = self._walk(tokens)
        return sorted(node.children) if node is not None else []

    def complete(self, tokens: Sequence[int]) -> list[int]:
        """Entities whose name is exactly ``tokens``."""
        node = self._walk(tokens)
        return list(node.entities) if node is not None else []

    def _walk(self, tokens: Sequence[int]) -> _Node | None:
        node: _Node | None = self.root
        for token in tokens:
            assert node is not None
            node = node.children.get(token)
            if node is None:
                return None
        return node


def _model_device(model: Any) -> torch.device:
    return next(model.parameters()).device  # type: ignore[no-any-return]


@torch.no_grad()
def constrained_generate(
    model: Any,
    tokenizer: Any,
    trie: EntityNameTrie,
    prompt: str,
    suffix: str = "",
    beam_size: int = 8,
    num_return: int = 5,
    max_steps: int = 48,
) -> list[GeneratedName]:
    """Beam search that can only spell entity names.

    Every step extends each beam by one token among those the trie allows after it; a beam at a
    complete name also yields that name as a finished hypothesis, scored with the name's tokens
    plus ``log P(suffix | prompt + name)``. Greedy decoding is ``beam_size=1``.

    Args:
        prompt: the text before the slot (no trailing space; the trie's ``leading`` adds it).
        suffix: the text after the slot, scored after each complete name ("" to skip).
    Returns:
        up to ``num_return`` names, best first, each a real entity's name.
    """
    if not prompt.strip() and not suffix.strip():
        raise InvalidArgumentError("empty prompt: give the text before or after the slot")
    if beam_size < 1 or num_return < 1:
        raise InvalidArgumentError("beam_size and num_return must be at least 1")
    device = _model_device(model)
    was_training = model.training
    model.eval()
    prefix = [tokenizer.bos_token_id]
    if prompt:
        prefix += list(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    beams: list[tuple[list[int], float]] = [([], 0.0)]
    finished: dict[int, tuple[str, float]] = {}  # entity -> (text, name logprob)
    try:
        for _ in range(max_steps):
            if not beams:
                break
            input_ids = torch.tensor([prefix + b for b, _ in beams], device=device)
            logits = model(input_ids=input_ids).logits[:, -1].float()  # (beams, V)
            logp = torch.log_softmax(logits, dim=-1).cpu()
            expansions: list[tuple[float, list[int]]] = []
            for (tokens, score), row in zip(beams, logp, strict=True):
                for token in trie.allowed(tokens):
                    expansions.append((score + float(row[token]), [*tokens, token]))
            expansions.sort(key=lambda x: -x[0])
            beams = []
            for score, tokens in expansions[:beam_size]:
                for entity in trie.complete(tokens):
                    if entity not in finished or finished[entity][1] < score:
                        finished[entity] = (trie.texts[entity], score)
                if trie.allowed(tokens):
                    beams.append((tokens, score))
    finally:
        model.train(was_training)
    if not finished:
        return []
    entities = list(finished)
    totals = [finished[e][1] for e in entities]
    if suffix:
        heads = [prompt + trie.leading + finished[e][0] for e in entities]
        extra = sequence_logprob(model, tokenizer, heads, [suffix] * len(entities))
        totals = [t + float(x) for t, x in zip(totals, extra.tolist(), strict=True)]
    order = sorted(range(len(entities)), key=lambda i: -totals[i])[:num_return]
    return [GeneratedName(entities[i], finished[entities[i]][0], totals[i]) for i in order]


@dataclass
class _Scored:
    """Candidates of one query with both features (parallel lists)."""

    entities: list[int]
    graph: list[float]  # what the re-ranker weighs: the fused score, else the KGE score
    lm: list[float]
    evidence: list[str]
    kge: list[float]  # the KGE score alone


class LMCompleter:
    """Link completion with a KGE model and a causal LM (see the module docstring).

    Args:
        predictor: the KGE side (its artifact names the entities and relations).
        model, tokenizer: a causal LM and its tokenizer (e.g. from
            :func:`kgweave.language.lm.load_lm`).
        verbalizer: facts to sentences; default: from the predictor's artifact.
        weights: the re-ranking weights; default unfitted (1, 1, 0) until :meth:`fit_weights`.
        top_n: KGE candidates per query; lm_candidates: names kept from constrained decoding.
        text_fusion: when given (default: the predictor's), candidates and ``graph_score``
            come from the KGE model fused with entity text
            (:class:`kgweave.language.textfusion.TextFusion`).
    """

    def __init__(
        self,
        predictor: LinkPredictor,
        model: Any,
        tokenizer: Any,
        verbalizer: Verbalizer | None = None,
        weights: FusionWeights | None = None,
        top_n: int = 20,
        lm_candidates: int = 5,
        beam_size: int = 8,
        text_fusion: TextFusion | None = None,
    ) -> None:
        if top_n < 1 or lm_candidates < 0 or beam_size < 1:
            raise InvalidArgumentError("top_n and beam_size must be >= 1, lm_candidates >= 0")
        self.predictor = predictor
        self.artifact = predictor.artifact
        self.model = model
        self.tokenizer = tokenizer
        self.verbalizer = verbalizer or Verbalizer.from_artifact(self.artifact)
        self.weights = weights or FusionWeights()
        self.top_n = top_n
        self.lm_candidates = lm_candidates
        self.beam_size = beam_size
        self.text_fusion = text_fusion if text_fusion is not None else predictor.text_fusion
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

    def evidence(self, entity: int, relation: int, candidate: int, side: Side) -> str:
        """The verbalized fact that puts ``candidate`` in the missing slot."""
        labels = self.artifact.entities.labels
        head, tail = (entity, candidate) if side == "tail" else (candidate, entity)
        return self.verbalizer.triple(
            labels[head], self.artifact.relations.labels[relation], labels[tail]
        )

    def _score(self, entity: int, relation: int, side: Side, candidates: list[int]) -> _Scored:
        """KGE scores and LM log-likelihoods of the candidates of one query."""
        num_base = len(self.artifact.relations)
        rel = relation if side == "tail" else relation + num_base
        hr = torch.tensor([[entity, rel]], device=self.predictor.device)
        tails = torch.tensor([candidates], device=self.predictor.device)
        with torch.no_grad():
            kge = self.predictor.model.score_candidates(hr, tails).float()[0].tolist()
            graph = kge
            if self.text_fusion is not None:  # the fused row: one pass over all entities
                fused = self.text_fusion.scores(self.predictor.model, hr)[0]
                graph = fused[tails[0]].tolist()
        prefix, suffix, leading, capitalize = self.slot(entity, relation, side)
        texts = [self.evidence(entity, relation, c, side) for c in candidates]
        trie = self.trie(leading, capitalize)
        conts = [
            self._continuation(t, prefix, leading + trie.texts[c] + suffix)
            for t, c in zip(texts, candidates, strict=True)
        ]
        lm = sequence_logprob(self.model, self.tokenizer, [prefix] * len(conts), conts).tolist()
        return _Scored(
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
            prefix, suffix, leading, capitalize = self.slot(entity, relation, side)
            generated = constrained_generate(
                self.model,
                self.tokenizer,
                self.trie(leading, capitalize),
                prefix,
                suffix,
                beam_size=self.beam_size,
                num_return=self.lm_candidates,
            )
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
        if self.text_fusion is not None:
            fused = self.text_fusion.scores(self.predictor.model, hr)[0]
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
    ) -> FusionWeights:
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
        groups: list[tuple[_Scored, int]] = [
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
            w_std, b_std = _logistic(z, labels, [len(g.entities) for g, _ in groups])
        elif method == "grid":
            w_std, b_std = _grid(z, groups), 0.0
        else:
            raise InvalidArgumentError(f"unknown fitting method {echo(method)}: logistic or grid")
        w = w_std / std
        bias = b_std - float((w_std * mean / std).sum())
        fitted = FusionWeights(float(w[0]), float(w[1]), float(bias), method)
        report = {
            "queries": float(len(groups)),
            "queries_answer_outside_top_n": float(len(missed)),
            "fallback_true_added": float(biased),
            "candidates": float(len(labels)),
            "valid_mrr_kge": _mrr(groups, lambda kg, lm: kg),
            "valid_mrr_lm": _mrr(groups, lambda kg, lm: lm),
            "valid_mrr_combined": _mrr(groups, fitted.combine),
        }
        self.weights = FusionWeights(fitted.w_kge, fitted.w_lm, fitted.bias, method, report)
        return self.weights


def _logistic(
    z: torch.Tensor, labels: torch.Tensor, sizes: Sequence[int]
) -> tuple[torch.Tensor, float]:
    """Conditional logistic regression, then a calibrating bias (LBFGS, float64).

    The weights maximise the likelihood of the true candidate within each query's list
    (softmax over the list: KGE scores are only comparable within a query, so this separates
    true facts from their own query's negatives); the bias then makes ``sigmoid(combined)``
    a class-balanced probability of being true (the ranking does not depend on it).

    Args: z: shape (C, 2) standardised features, queries' candidates contiguous;
        labels: shape (C,) in {0, 1}, one 1 per query; sizes: candidates per query.
    Returns: weights (2,) and bias, in standardised units.
    """
    width = max(sizes)
    group = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(list(sizes)))
    within = torch.arange(len(z)) - torch.repeat_interleave(
        torch.cumsum(torch.tensor([0, *sizes[:-1]]), 0), torch.tensor(list(sizes))
    )
    features = torch.zeros(len(sizes), width, 2, dtype=z.dtype)
    features[group, within] = z
    mask = torch.zeros(len(sizes), width, dtype=torch.bool)
    mask[group, within] = True
    target = torch.zeros(len(sizes), dtype=torch.long)
    target[group[labels > 0]] = within[labels > 0]
    weights = torch.zeros(2, dtype=z.dtype, requires_grad=True)
    optimizer = torch.optim.LBFGS([weights], max_iter=200, line_search_fn="strong_wolfe")

    def listwise() -> torch.Tensor:
        optimizer.zero_grad()
        logits = (features @ weights).masked_fill(~mask, float("-inf"))  # (G, width)
        loss = F.cross_entropy(logits, target) + 1e-3 * (weights**2).sum()
        loss.backward()  # type: ignore[no-untyped-call]
        return loss

    optimizer.step(listwise)  # type: ignore[no-untyped-call]
    found = weights.detach()
    positives = float(labels.sum())
    pos_weight = torch.tensor((len(labels) - positives) / max(positives, 1.0), dtype=z.dtype)
    base = z @ found
    bias = torch.zeros(1, dtype=z.dtype, requires_grad=True)
    calibrate = torch.optim.LBFGS([bias], max_iter=100, line_search_fn="strong_wolfe")

    def pooled() -> torch.Tensor:
        calibrate.zero_grad()
        loss = F.binary_cross_entropy_with_logits(base + bias, labels, pos_weight=pos_weight)
        loss.backward()  # type: ignore[no-untyped-call]
        return loss

    calibrate.step(pooled)  # type: ignore[no-untyped-call]
    return found, float(bias.detach()[0])


def _grid(z: torch.Tensor, groups: list[tuple[_Scored, int]], steps: int = 21) -> torch.Tensor:
    """The mix ``(1 - a) * z_kge + a * z_lm`` (a in 0..1) with the best MRR; ties: smaller a."""
    best_a, best = 0.0, -1.0
    sizes = [len(g.entities) for g, _ in groups]
    for i in range(steps):
        a = i / (steps - 1)
        scores = ((1 - a) * z[:, 0] + a * z[:, 1]).tolist()
        rr, start = 0.0, 0
        for size, (_, target) in zip(sizes, groups, strict=True):
            part = scores[start : start + size]
            rr += 1.0 / (1 + sum(1 for x in part if x > part[target]))
            start += size
        mrr = rr / len(groups)
        if mrr > best + 1e-12:
            best_a, best = a, mrr
    return torch.tensor([1 - best_a, best_a], dtype=z.dtype)


def _mrr(groups: list[tuple[_Scored, int]], score: Any) -> float:
    """MRR of the true candidate within each group under ``score(kge, lm)`` (ties: optimistic
    for none: a tie counts half)."""
    total = 0.0
    for g, target in groups:
        values = [score(kg, lm) for kg, lm in zip(g.graph, g.lm, strict=True)]
        better = sum(1 for v in values if v > values[target])
        ties = sum(1 for v in values if v == values[target]) - 1
        total += 1.0 / (1 + better + ties / 2)
    return total / max(len(groups), 1) if groups else math.nan
