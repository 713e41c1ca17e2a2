"""Link prediction and triple scoring on a loaded model: the transport-free serving core.

The CLI calls it in-process on a model folder; the server (``serving/served.py``, behind both
gRPC front ends and the HTTP side) calls the same :class:`LinkPredictor`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from kgweave.artifact import ModelArtifact
from kgweave.data.dataset import KnownIndex, TailIndex, with_reciprocals
from kgweave.device import cpu_has_native_bf16
from kgweave.errors import InvalidArgumentError, NotFoundError, did_you_mean, echo
from kgweave.models.products import EntityScorer, TailScorer


@dataclass(frozen=True)
class Query:
    """``(head, relation, ?)`` when ``tail`` is None, ``(?, relation, tail)`` when ``head`` is."""

    relation: str
    head: str | None = None
    tail: str | None = None


@dataclass
class Prediction:
    """One ranked candidate entity (not frozen: built thousands of times per serving batch, and
    a frozen dataclass costs four times as much to build)."""

    rank: int
    entity: str
    name: str | None
    score: float
    known: bool  # the completed triple is a known fact


@dataclass
class TopK:
    """The top-k answers of a batch of queries as plain lists; row ``i`` answers query ``i``.

    ``scores[i][j]`` is ``-inf`` where candidate ``j`` was filtered out (only when fewer than
    k entities remain); such entries are no answers.
    """

    scores: list[list[float]]  # (B, k)
    ids: list[list[int]]  # (B, k) entity ids
    known: list[list[bool]]  # (B, k): the completed triple is a known fact

    def labelled(
        self, labels: list[str], names: list[str | None]
    ) -> Iterator[list[tuple[int, str, str | None, float, bool]]]:
        """Per query, its answers as ``(rank, entity label, name, score, known)``, filtered
        entries dropped."""
        for scores, ids, known in zip(self.scores, self.ids, self.known, strict=True):
            yield [
                (rank + 1, labels[e], names[e], s, kn)
                for rank, (s, e, kn) in enumerate(zip(scores, ids, known, strict=True))
                if s != float("-inf")
            ]

    def rows(self, start: int, stop: int, k: int) -> TopK:
        """Rows ``start:stop``, cut to their best ``k``."""
        cut = slice(start, stop)
        if k >= (len(self.ids[0]) if self.ids else 0):
            return TopK(self.scores[cut], self.ids[cut], self.known[cut])
        return TopK(
            [r[:k] for r in self.scores[cut]],
            [r[:k] for r in self.ids[cut]],
            [r[:k] for r in self.known[cut]],
        )


def resolve_score_precision(precision: str, device: torch.device, num_entities: int) -> str:
    """``auto``: bf16 candidate search on CUDA with bf16 and on CPUs with native bf16, for
    graphs of at least 2,000 entities; fp32 otherwise."""
    if precision != "auto":
        if precision not in ("fp32", "bf16"):
            raise InvalidArgumentError(f"score precision {echo(precision)}: use auto, fp32 or bf16")
        return precision
    if num_entities < 2000:
        return "fp32"
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if device.type == "cpu" and cpu_has_native_bf16() else "fp32"


NameIndex = dict[str, list[int]]


def _names(
    names: list[str | None], excluded: frozenset[int], like: LinkPredictor | None
) -> tuple[NameIndex, NameIndex]:
    """Entity ids by exact and by case-folded name, deleted entities left out. From ``like``'s
    when this version extends its entities (graph changes applied to it, or a version
    trained from it: new entities at the end, some deleted or no longer deleted, some
    renamed), so a change batch or a swap touches those entities only."""
    start = 0
    by_name: NameIndex = {}
    folded: NameIndex = {}
    todo: list[int] = []
    if like is not None and len(names) >= len(like.artifact.entity_names):
        theirs = like.artifact.entity_names
        start = len(theirs)
        same = names[:start] == theirs  # (one C-level compare, the common case)
        renamed = [] if same else [i for i in range(start) if names[i] != theirs[i]]
        readded = like.excluded - excluded  # left out there, resolving here
        if len(renamed) > start // 2:
            start = 0  # another model's entities: a new index costs less
        else:
            if not renamed and not readded and excluded == like.excluded and start == len(names):
                return like._by_name, like._by_name_folded  # nothing new: theirs, shared
            by_name, folded = dict(like._by_name), dict(like._by_name_folded)
            for i in sorted({*(excluded - like.excluded), *renamed}):  # new lists, not theirs
                if i >= start or i in like.excluded:
                    continue  # not in their indexes
                name = theirs[i]
                for index, key in ((by_name, name), (folded, name.casefold() if name else None)):
                    if key is not None and key in index:
                        index[key] = [j for j in index[key] if j != i]
                        if not index[key]:
                            del index[key]
            todo = sorted({*renamed, *readded})
    for i in [*todo, *range(start, len(names))]:
        name = names[i]
        if name and i not in excluded:
            for index, key in ((by_name, name), (folded, name.casefold())):
                if start:  # the lists may be like's: a new one, in id order as rebuilt
                    index[key] = sorted([*index.get(key, []), i])
                else:
                    index.setdefault(key, []).append(i)
    return by_name, folded


class LinkPredictor:
    """Answers link-prediction and scoring requests on one model artifact.

    The all-entities pass works on a snapshot of the model's weights: for bilinear models one
    product with the entity table, prepacked for oneDNN on the CPU unless ``prepack`` is off
    (:mod:`kgweave.models.products`). With ``precision="bf16"`` it runs in bfloat16 (2-4x
    faster on hardware with native bf16) and only finds candidates: the best
    ``k + RESCORE_MARGIN`` of each query are then rescored exactly in fp32 and ranked by those
    scores, so returned scores are the fp32 model's. The top-k can only differ from a pure
    fp32 pass if a true top-k entity falls below ``k + RESCORE_MARGIN`` others under bf16
    rounding (relative error about 0.4%).

    With a ``scorer`` (an :class:`~kgweave.models.products.EntityScorer`, e.g. the text fusion
    of joint models) the ranking and the returned scores are that scorer's (KGE plus
    entity-text features), exact over all entities; ``score`` stays the KGE score of each
    triple.
    """

    RESCORE_MARGIN = 32

    def __init__(
        self,
        artifact: ModelArtifact,
        precision: str = "fp32",
        scorer: EntityScorer | None = None,
        prepack: bool = True,
        excluded: frozenset[int] = frozenset(),
        known_index: KnownIndex | None = None,
        like: LinkPredictor | None = None,
    ) -> None:
        """``known_index``: the index of ``artifact.known`` when the caller has it (made from
        its base's and the change, :mod:`kgweave.serving.known_delta`); ``like``: a predictor
        whose tail scorer serves here too when it scores the same model alike (graph changes
        applied to a version: its weights, prepacked once)."""
        self.artifact = artifact
        #: entity ids that neither resolve nor are ever candidates (deleted from the graph)
        self.excluded = excluded
        self._excluded_ids = torch.tensor(sorted(excluded), dtype=torch.long)
        self.model = artifact.model
        self.device = artifact.model.entity.weight.device
        #: the scorer given (a text fusion), or None when the model's own pass ranks
        self.fused = scorer
        #: the tail scorer is ``like``'s (warmed up there already)
        self.scorer_shared = False
        if scorer is not None:
            self.precision = "fp32"  # the given scorer's scores are final: nothing to rescore
            self._all: EntityScorer = scorer
        else:
            # exact fp32, or the bf16 candidate search; on a snapshot of the weights (the
            # artifact's model no longer changes)
            self.precision = resolve_score_precision(precision, self.device, len(artifact.entities))
            dtype = torch.bfloat16 if self.precision == "bf16" else torch.float32
            same = like is not None and like.fused is None and like.model is self.model
            if same and like is not None and like.precision == self.precision:
                self._all = like._all
                self.scorer_shared = True
            else:
                self._all = TailScorer(self.model, dtype, prepack)
        num_base = len(artifact.relations)
        if known_index is None:
            known_index = TailIndex(
                with_reciprocals(artifact.known, num_base), len(artifact.entities), 2 * num_base
            )
        self.known: KnownIndex = known_index.to(self.device)
        self._excluded_ids = self._excluded_ids.to(self.device)
        self._by_name, self._by_name_folded = _names(artifact.entity_names, excluded, like)
        same_relations = (
            like is not None
            and like.artifact.relation_texts is artifact.relation_texts
            and like.artifact.relations is artifact.relations
        )
        self._relation_by_text: dict[str, int] = (
            like._relation_by_text
            if same_relations and like is not None
            else {text: artifact.relations.index[r] for r, text in artifact.relation_texts.items()}
        )

    # ---- resolving user input
    def resolve_entity(self, text: str) -> int:
        """Entity id from an id label or an exact name (case-insensitive if unambiguous)."""
        found = self.artifact.entities.index.get(text)
        if found is not None and found not in self.excluded:
            return found
        matches = self._by_name.get(text) or self._by_name_folded.get(text.casefold())
        if matches and len(matches) == 1:
            return matches[0]
        if matches:
            ids = ", ".join(self.artifact.entities.labels[i] for i in matches[:5])
            raise InvalidArgumentError(f"entity name {echo(text)} is ambiguous: use an id ({ids})")
        if found is not None:
            raise NotFoundError(f"entity {echo(text)} was deleted from the graph")
        suffix = did_you_mean(text, list(self._by_name) + self.artifact.entities.labels)
        raise NotFoundError(f"unknown entity {echo(text)}{suffix}")

    def resolve_relation(self, text: str) -> int:
        """Relation id from its label or its readable text."""
        if text in self.artifact.relations:
            return self.artifact.relations.index[text]
        if text in self._relation_by_text:
            return self._relation_by_text[text]
        return self.artifact.relations.id_of(text, kind="relation")

    def hr_of(self, query: Query) -> tuple[int, int]:
        """A query as a tail-prediction pair (entity, relation with reciprocals)."""
        if (query.head is None) == (query.tail is None):
            raise InvalidArgumentError("give exactly one of head and tail")
        relation = self.resolve_relation(query.relation)
        if query.head is not None:
            return self.resolve_entity(query.head), relation
        assert query.tail is not None
        return self.resolve_entity(query.tail), relation + len(self.artifact.relations)

    # ---- answering
    def predict(
        self, queries: list[Query], k: int = 10, filter_known: bool = False
    ) -> list[list[Prediction]]:
        """Top-``k`` entities for each query, scored in one pass."""
        if not queries:
            return []
        hr = torch.tensor([self.hr_of(q) for q in queries], dtype=torch.long, device=self.device)
        return self.predict_ids(hr, k, filter_known)

    def predict_ids(
        self, hr: torch.Tensor, k: int, filter_known: bool | torch.Tensor
    ) -> list[list[Prediction]]:
        """Top-``k`` for id queries as ranked, labelled predictions (see :meth:`top_ids`)."""
        return self.predictions(self.top_ids(hr, k, filter_known))

    def predictions(self, top: TopK) -> list[list[Prediction]]:
        """Labelled :class:`Prediction` rows of ``top`` (filtered entries dropped)."""
        rows = top.labelled(self.artifact.entities.labels, self.artifact.entity_names)
        return [[Prediction(*answer) for answer in row] for row in rows]

    def top_ids(self, hr: torch.Tensor, k: int, filter_known: bool | torch.Tensor) -> TopK:
        """Top-``k`` for id queries, scored in one pass and ranked with one top-k: the
        engine's scoring + top-k, with no per-answer objects.

        On the CPU a large batch is scored in passes of :meth:`rows_per_pass` rows, so that
        each pass's intermediates (the ``(rows, N)`` scores, the candidates' embeddings when
        rescoring) stay in cache: one pass of 256 FB15k-237 queries costs twice as much per
        query as two passes of 128.

        Args:
            hr: shape (B, 2), entity and relation ids (relations with reciprocals).
            filter_known: for all rows, or per row (bool tensor of shape (B,)): drop
                candidates that complete a training fact.
        """
        k = min(k, len(self.artifact.entities))
        step = self.rows_per_pass(k)
        if len(hr) <= step:
            top_scores, top_ids = self._top(hr, k, filter_known)
        else:
            parts = [
                self._top(
                    hr[i : i + step],
                    k,
                    filter_known[i : i + step]
                    if isinstance(filter_known, torch.Tensor)
                    else filter_known,
                )
                for i in range(0, len(hr), step)
            ]
            top_scores = torch.cat([scores for scores, _ in parts])
            top_ids = torch.cat([ids for _, ids in parts])
        top_known = self.known.contains(hr, top_ids)  # (B, k)
        return TopK(top_scores.tolist(), top_ids.tolist(), top_known.tolist())

    #: the elements one CPU pass may touch: (rows, N) scores plus, when rescoring, the rows'
    #: (k + RESCORE_MARGIN, D) candidate embeddings; about L2 + a share of L3 on current CPUs
    PASS_ELEMENTS = 1 << 22
    #: but at least this many rows: each pass streams the whole entity table, which then
    #: costs more than the cache saves (200,000 entities, batch 256, one thread: passes of 19
    #: rows 837 µs per query, 77 rows 597, one pass 690)
    MIN_PASS_ROWS = 64

    def rows_per_pass(self, k: int) -> int:
        """Queries scored together in one pass on this device (all of them off the CPU)."""
        if self.device.type != "cpu":
            return 1 << 30
        per_row = len(self.artifact.entities)
        if self.precision != "fp32":
            per_row += (k + self.RESCORE_MARGIN) * self.model.entity.weight.shape[1]
        return max(self.MIN_PASS_ROWS, self.PASS_ELEMENTS // max(per_row, 1))

    def _top(
        self, hr: torch.Tensor, k: int, filter_known: bool | torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One pass: (B, k) scores (-inf where filtered) and entity ids, best first."""
        with torch.no_grad():
            scores = self._all(hr)  # (B, N); in bf16 a candidate search only
        if self.excluded:
            scores[:, self._excluded_ids] = float("-inf")
        if isinstance(filter_known, torch.Tensor):
            if bool(filter_known.any()):
                rows, tails = self.known.lookup(hr)  # (K,), (K,): known (row, tail) pairs
                drop = filter_known.to(rows.device)[rows]
                scores[rows[drop], tails[drop]] = float("-inf")
        elif filter_known:
            rows, tails = self.known.lookup(hr)
            scores[rows, tails] = float("-inf")
        if self._all.exact:
            top_scores, top_ids = scores.topk(k, dim=1)  # (B, k)
            return top_scores, top_ids
        return self._rescore(hr, scores, k)

    def _rescore(
        self, hr: torch.Tensor, approx: torch.Tensor, k: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact fp32 top-``k`` among the best candidates of a bf16 pass.

        Args: hr: (B, 2); approx: (B, N) bf16 scores, -inf where filtered. Returns (B, k) fp32
        scores (-inf kept for filtered) and entity ids.
        """
        c = min(k + self.RESCORE_MARGIN, approx.shape[1])
        cand_scores, cand = approx.topk(c, dim=1)  # (B, C)
        with torch.no_grad():
            exact = self.model.score_candidates(hr, cand).float()  # (B, C)
        exact = exact.masked_fill(cand_scores == float("-inf"), float("-inf"))
        top_scores, pos = exact.topk(k, dim=1)
        return top_scores, cand.gather(1, pos)

    def score(self, triples: list[tuple[str, str, str]]) -> list[float]:
        """Scores of labelled (or named) triples, higher is more plausible."""
        if not triples:
            return []
        ids = torch.tensor(
            [
                (self.resolve_entity(h), self.resolve_relation(r), self.resolve_entity(t))
                for h, r, t in triples
            ],
            dtype=torch.long,
            device=self.device,
        )
        with torch.no_grad():
            return [float(x) for x in self.model.score_hrt(ids).float().tolist()]
