"""Text fusion: link prediction that adds what entity text says to what the embeddings say.

For a query ``(e, r, ?)`` (a head query is ``(t, r + R, ?)`` with a reciprocal relation), every
entity ``c`` gets

    score(e, r, c) = sum_f w[r, f] * feature_f(e, r, c)

with one weight vector per relation and direction (reciprocal ids), fitted on validation
facts (:meth:`TextFusion.fit`). The features (:data:`FEATURES`), all computed for every entity
so the ranking stays exact:

- ``kge``: the embedding model's score, log-softmax-normalised over all entities (so scores
  of different queries and relations are on one scale);
- ``text_cosine``: cosine of the entities' text vectors
(:mod:`kgweave.language.components.encoder`);
- ``name_in_description``: ``c``'s name occurs, as whole words, in ``e``'s description
  (WordNet: a gloss names its hypernym, "breadfruit: ... fruit tree");
- ``description_names``: ``e``'s name occurs in ``c``'s description (the reverse);
- ``name_suffix``: ``c``'s name is a proper word suffix of ``e``'s name (``fruit tree`` ->
  ``tree``: the head word of a compound names its kind);
- ``name_extends``: ``e``'s name is a proper word suffix of ``c``'s name (the reverse);
- ``popularity``: ``log(1 + n)``, ``n`` the number of training facts of relation ``r`` that
  ``c`` answers.

Initial weights are ``kge = 1``, the others 0: an unfitted fusion ranks exactly as the
embedding model does, and a relation without validation facts keeps that ranking.

Names and descriptions are the verbalizer's
(:class:`kgweave.language.features.verbalize.Verbalizer`),
so WN18RR's ``lemma, definition`` texts are split into name and description.

Size (over 400 lines): one class (about 370 lines) whose features, fitting and scoring share
private tables; the lexical links are in lexical_links.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from kgweave.data.dataset import TailIndex, expand_ranges, with_reciprocals
from kgweave.errors import ArtifactError, InvalidArgumentError
from kgweave.evaluation.ranking import EvaluationResult, evaluate, realistic_rank
from kgweave.language.features.lexical_links import LexicalLinks
from kgweave.language.features.verbalize import Verbalizer
from kgweave.models import KGEModel

FEATURES = (
    "kge",
    "text_cosine",
    "name_in_description",
    "description_names",
    "name_suffix",
    "name_extends",
    "popularity",
)
_KGE, _COSINE, _POPULARITY = 0, 1, 6
_LINKS = (2, 3, 4, 5)  # the feature index of each LexicalLinks table, in links.tables() order
TEXT_FUSION_FORMAT = "kgweave-text-fusion"


@dataclass
class FitReport:
    """What :meth:`TextFusion.fit` saw and reached (validation, filtered)."""

    queries: int
    candidates: int
    kge_mrr: float
    fused_mrr: float
    loss_before: float
    loss_after: float
    seconds: float
    per_relation: dict[str, dict[str, float]] = field(default_factory=dict)
    #: kept because it beat the embeddings on held-out validation facts (else KGE-only weights)
    accepted: bool = True
    #: MRR of the embeddings and of the fusion on the held-out halves (two-fold)
    held_out: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class TextFusion:
    """Exact link-prediction scores from a KGE model plus entity text (see the module doc).

    Args:
        text_vectors: shape (N, Dt) entity text vectors (normalised here; zero rows for
            entities without text).
        links: the lexical links of the same entities.
        known: shape (M, 3) training triples (relations without reciprocals): popularity.
        num_relations: relations without reciprocals.
        weights: shape (2 * num_relations, len(FEATURES)); default: KGE only.
    """

    def __init__(
        self,
        text_vectors: torch.Tensor,
        links: LexicalLinks,
        known: torch.Tensor,
        num_relations: int,
        weights: torch.Tensor | None = None,
    ) -> None:
        n = text_vectors.shape[0]
        if links.num_entities != n:
            raise InvalidArgumentError(
                f"{n} text vectors but lexical links over {links.num_entities} entities"
            )
        self.num_entities = n
        self.num_relations = num_relations
        self.vectors = F.normalize(text_vectors.detach().float().cpu(), dim=1)
        self.links = links
        both = with_reciprocals(known.cpu(), num_relations)
        counts = torch.zeros(2 * num_relations * n)
        counts.index_add_(0, both[:, 1] * n + both[:, 2], torch.ones(len(both)))
        nonzero = counts.nonzero().squeeze(1)
        # popularity as (relation * N + entity) -> log(1 + count), sparse
        self._pop_keys = nonzero
        self._pop_values = torch.log1p(counts[nonzero])
        if weights is None:
            weights = self.initial_weights()
        self.weights = self._checked(weights)
        self.report: FitReport | None = None

    @property
    def device(self) -> torch.device:
        return self.vectors.device

    def to(self, device: str | torch.device) -> TextFusion:
        """Move every table to ``device`` (in place; scoring runs there) and return self."""
        dev = torch.device(device)
        self.vectors = self.vectors.to(dev)
        self._pop_keys, self._pop_values = self._pop_keys.to(dev), self._pop_values.to(dev)
        self.weights = self.weights.to(dev)
        self.links.to(dev)
        return self

    @classmethod
    def from_verbalizer(
        cls,
        text_vectors: torch.Tensor,
        verbalizer: Verbalizer,
        labels: Sequence[str],
        known: torch.Tensor,
        num_relations: int,
    ) -> TextFusion:
        """An unfitted fusion over the verbalizer's names and descriptions of ``labels``
        (the entities, in id order; ``text_vectors`` in the same order)."""
        links = LexicalLinks(
            [verbalizer.name(e) for e in labels], [verbalizer.descriptions.get(e) for e in labels]
        )
        return cls(text_vectors, links, known, num_relations)

    # ---- weights
    def initial_weights(self) -> torch.Tensor:
        """KGE only: shape (2R, F)."""
        w = torch.zeros(2 * self.num_relations, len(FEATURES))
        w[:, _KGE] = 1.0
        return w

    def _checked(self, weights: torch.Tensor) -> torch.Tensor:
        expected = (2 * self.num_relations, len(FEATURES))
        if tuple(weights.shape) != expected:
            raise ArtifactError(
                f"text fusion weights have shape {tuple(weights.shape)}, expected {expected}"
            )
        if not torch.isfinite(weights).all():
            raise ArtifactError("text fusion weights are not finite")
        return weights.detach().float().to(self.vectors.device)

    def to_dict(self) -> dict[str, Any]:
        """Weights and fit report, JSON-ready (relations by reciprocal id)."""
        return {
            "format": TEXT_FUSION_FORMAT,
            "features": list(FEATURES),
            "weights": [[round(float(x), 6) for x in row] for row in self.weights],
            "report": self.report.to_dict() if self.report else None,
        }

    def load_weights(self, data: dict[str, Any]) -> None:
        """Weights from :meth:`to_dict`'s output.

        Raises:
            ArtifactError: another format, other features, or the wrong shape.
        """
        if data.get("format") != TEXT_FUSION_FORMAT:
            raise ArtifactError("not a kgweave text fusion")
        if list(data.get("features", [])) != list(FEATURES):
            raise ArtifactError(
                f"text fusion features {data.get('features')} differ from this kgweave's "
                f"{list(FEATURES)}: refit it"
            )
        try:
            weights = torch.tensor(data["weights"], dtype=torch.float32)
        except (KeyError, TypeError, ValueError) as exc:
            raise ArtifactError(f"text fusion weights unreadable ({exc})") from exc
        self.weights = self._checked(weights)

    # ---- features
    def _popularity(self, relations: torch.Tensor) -> torch.Tensor:
        """shape (B, N): log(1 + training answers) of each entity for each row's relation."""
        n, dev = self.num_entities, self.device
        relations = relations.to(dev)
        out = torch.zeros(len(relations), n, device=dev)
        starts = torch.searchsorted(self._pop_keys, relations * n)
        ends = torch.searchsorted(self._pop_keys, (relations + 1) * n)
        rows, at = expand_ranges(starts, ends - starts)
        out[rows, self._pop_keys[at] - relations[rows] * n] = self._pop_values[at]
        return out

    @torch.no_grad()
    def dense_features(self, model: KGEModel, hr: torch.Tensor) -> torch.Tensor:
        """Every feature of every entity for a batch of queries.

        Args:
            hr: shape (B, 2) of (entity, relation), reciprocal relations for head queries.
        Returns:
            shape (B, F, N) float32 on the CPU.
        """
        device, dev = model.entity.weight.device, self.device
        hr = hr.to(dev)
        kge = torch.log_softmax(model.predict_t(hr.to(device)).float(), dim=1).to(dev)
        out = torch.zeros(len(hr), len(FEATURES), self.num_entities, device=dev)
        out[:, _KGE] = kge
        out[:, _COSINE] = self.vectors[hr[:, 0]] @ self.vectors.T
        out[:, _POPULARITY] = self._popularity(hr[:, 1])
        for feature, table in zip(_LINKS, self.links.tables(), strict=True):
            rows, cols = table.rows(hr[:, 0])
            out[rows, feature, cols] = 1.0
        return out.cpu()

    @torch.no_grad()
    def scores(self, model: KGEModel, hr: torch.Tensor) -> torch.Tensor:
        """Fused scores of every entity: shape (B, N) float32, on the model's device.

        Args:
            hr: shape (B, 2) of (entity, relation), reciprocal relations for head queries.
        """
        device, dev = model.entity.weight.device, self.device
        hr = hr.to(dev)
        w = self.weights[hr[:, 1]]  # (B, F)
        kge = torch.log_softmax(model.predict_t(hr.to(device)).float(), dim=1).to(dev)
        out = w[:, _KGE : _KGE + 1] * kge
        out += w[:, _COSINE : _COSINE + 1] * (self.vectors[hr[:, 0]] @ self.vectors.T)
        out += w[:, _POPULARITY : _POPULARITY + 1] * self._popularity(hr[:, 1])
        for feature, table in zip(_LINKS, self.links.tables(), strict=True):
            rows, cols = table.rows(hr[:, 0])
            out.index_put_((rows, cols), w[rows, feature], accumulate=True)
        return out.to(device)

    def evaluate(
        self,
        model: KGEModel,
        triples: torch.Tensor,
        known: TailIndex,
        relation_labels: list[str] | None = None,
        progress: bool = False,
    ) -> EvaluationResult:
        """Filtered evaluation of ``triples`` (shape (M, 3)) ranked by the fused scores, with
        :func:`kgweave.evaluation.ranking.evaluate` (same filter, ties and breakdowns)."""
        return evaluate(
            model,
            triples,
            known,
            relation_labels=relation_labels,
            batch_size=max(1, min(1024, (32 << 20) // max(self.num_entities, 1))),
            progress=progress,
            scorer=lambda hr: self.scores(model, hr),
        )

    # ---- fitting
    def fit(
        self,
        model: KGEModel,
        triples: torch.Tensor,
        known: TailIndex,
        candidates: int = 300,
        max_iter: int = 200,
        l2: float = 1e-3,
        batch_size: int | None = None,
        progress: bool = False,
        relation_labels: Sequence[str] | None = None,
        features: Sequence[str] | None = None,
    ) -> FitReport:
        """Fit the weights on validation facts and use them from now on.

        The loss is the softmax cross-entropy of each answer among its query's candidates (the
        top ``candidates`` entities by KGE score, by text cosine, every lexically linked
        entity and the answer; other known answers removed), minimised by L-BFGS with an L2
        pull towards the KGE-only weights (``l2``), so relations with few facts stay close to
        the embeddings. Before the final fit on all facts, a two-fold check fits on one half
        of the facts and ranks the other: unless the fusion beats the embeddings there
        (exact filtered MRR), the KGE-only weights are kept (``report.accepted`` False). The
        report's MRRs are exact (all entities, filtered).

        Args:
            triples: shape (M, 3) validation facts (relations without reciprocals); both
                directions are used.
            known: every known triple with reciprocals (the evaluation filter).
            features: the features to fit (default: all); the others keep their KGE-only
                weight (``kge`` 1, others 0): for ablations.
            batch_size: queries per feature pass; by default sized to ~64M feature values.
        """
        fitted = list(FEATURES) if features is None else list(features)
        unknown = [f for f in fitted if f not in FEATURES]
        if unknown:
            raise InvalidArgumentError(
                f"unknown text fusion feature(s) {', '.join(unknown)}: use {', '.join(FEATURES)}"
            )
        free = torch.tensor([1.0 if f in fitted else 0.0 for f in FEATURES])
        if len(triples) == 0:
            raise InvalidArgumentError("no validation triples to fit the text fusion on")
        if candidates < 1:
            raise InvalidArgumentError(f"candidates must be at least 1, got {candidates}")
        if batch_size is None:
            batch_size = max(1, min(256, (64 << 20) // (len(FEATURES) * self.num_entities)))
        started = time.perf_counter()
        queries = with_reciprocals(triples.cpu(), self.num_relations)
        known_cpu = known.copy_to("cpu")
        feats, masks, relations, before_ranks = [], [], [], []
        bar = tqdm(total=len(queries), unit="q", desc="text fusion", disable=not progress)
        for start in range(0, len(queries), batch_size):
            batch = queries[start : start + batch_size]
            dense = self.dense_features(model, batch[:, :2])  # (B, F, N)
            rows_idx = torch.arange(len(batch))
            filt = known_cpu.mask(batch[:, :2])
            filt[rows_idx, batch[:, 2]] = False
            kge = dense[:, _KGE].masked_fill(filt, float("-inf"))
            before_ranks.append(realistic_rank(kge, batch[:, 2]))
            pick = torch.zeros_like(filt)
            k = min(candidates, self.num_entities)
            pick.scatter_(1, kge.topk(k, dim=1).indices, True)
            cos = dense[:, _COSINE].masked_fill(filt, float("-inf"))
            pick.scatter_(1, cos.topk(k, dim=1).indices, True)
            for feature in _LINKS:
                pick |= dense[:, feature] > 0
            pick &= ~filt
            pick[rows_idx, batch[:, 2]] = False  # the answer goes first, below
            cap = 8 * k  # names common in descriptions link thousands: keep the best by KGE
            if int(pick.sum(1).max()) > cap:
                best = kge.masked_fill(~pick, float("-inf")).topk(cap, dim=1)
                pick = torch.zeros_like(pick).scatter_(1, best.indices, best.values > -1e30)
            # answer first, then the other candidates, padded to the batch's widest row
            width = int(pick.sum(1).max()) + 1
            order = torch.sort(pick.float(), dim=1, descending=True, stable=True).indices
            cols = torch.cat((batch[:, 2:3], order[:, : width - 1]), dim=1)  # (B, W)
            first = torch.ones(len(batch), 1, dtype=torch.bool)
            valid = torch.cat((first, pick.gather(1, order[:, : width - 1])), dim=1)
            feats.append(dense.gather(2, cols[:, None, :].expand(-1, len(FEATURES), -1)))
            masks.append(valid)
            relations.append(batch[:, 1])
            bar.update(len(batch))
        bar.close()
        width = max(f.shape[2] for f in feats)
        x = torch.cat([F.pad(f, (0, width - f.shape[2])) for f in feats])  # (Q, F, W)
        valid = torch.cat([F.pad(m, (0, width - m.shape[1])) for m in masks])  # (Q, W)
        rel = torch.cat(relations)
        x = torch.nan_to_num(x, neginf=-1e4)
        w0 = self.initial_weights().cpu()
        target = torch.zeros(len(x), dtype=torch.long)  # the answer sits in column 0
        before = torch.cat(before_ranks)

        def effective(weights: torch.Tensor) -> torch.Tensor:
            return w0 + (weights - w0) * free

        def loss_fn(rows: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
            xs, vs, rs, ts = x[rows], valid[rows], rel[rows], target[rows]

            def loss_of(weights: torch.Tensor) -> torch.Tensor:
                weights = effective(weights)
                logits = (xs * weights[rs][:, :, None]).sum(1).masked_fill(~vs, float("-inf"))
                return F.cross_entropy(logits, ts) + l2 * ((weights - w0) ** 2).sum()

            return loss_of

        def solve(rows: torch.Tensor) -> torch.Tensor:
            loss_of = loss_fn(rows)
            w = w0.clone().requires_grad_(True)
            optimizer = torch.optim.LBFGS(
                [w], lr=1.0, max_iter=max_iter, history_size=20, line_search_fn="strong_wolfe"
            )

            def closure() -> torch.Tensor:
                optimizer.zero_grad()
                loss = loss_of(w)
                loss.backward()  # type: ignore[no-untyped-call]
                return loss

            optimizer.step(closure)  # type: ignore[no-untyped-call]
            return effective(w.detach())

        def exactrealistic_rank() -> torch.Tensor:
            """Filtered ranks of every validation query under the current weights."""
            out = []
            for start in range(0, len(queries), batch_size):
                batch = queries[start : start + batch_size]
                fused = self.scores(model, batch[:, :2]).cpu()
                filt = known_cpu.mask(batch[:, :2])
                filt[torch.arange(len(batch)), batch[:, 2]] = False
                out.append(realistic_rank(fused.masked_fill(filt, float("-inf")), batch[:, 2]))
            return torch.cat(out)

        # Held-out check: fit on half of the validation facts, rank the other half, both ways;
        # the fusion is kept only if it beats the embeddings on facts it was not fitted on.
        m = len(triples)
        held_out: dict[str, float] = {}
        accepted = True
        if m >= 2:
            order = torch.randperm(m, generator=torch.Generator().manual_seed(0))
            half = torch.zeros(m, dtype=torch.bool)
            half[order[: m // 2]] = True
            fold = torch.cat((half, half))  # a fact's tail and head queries stay together
            fused_rr, kge_rr = [], []
            for part in (fold, ~fold):
                self.weights = self._checked(solve(part))
                fused_rr.append(1.0 / exactrealistic_rank()[~part])
                kge_rr.append(1.0 / before[~part])
            held_out = {
                "kge_mrr": float(torch.cat(kge_rr).mean()),
                "fused_mrr": float(torch.cat(fused_rr).mean()),
            }
            accepted = held_out["fused_mrr"] > held_out["kge_mrr"]
        everything = torch.ones(len(x), dtype=torch.bool)
        with torch.no_grad():
            loss_before = float(loss_fn(everything)(w0))
        final = solve(everything) if accepted else w0
        with torch.no_grad():
            loss_after = float(loss_fn(everything)(final))
        self.weights = self._checked(final)
        after = exactrealistic_rank()
        per_relation: dict[str, dict[str, float]] = {}
        for r in range(2 * self.num_relations):
            chosen = queries[:, 1] == r
            if chosen.any():
                base = relation_labels[r % self.num_relations] if relation_labels else str(r)
                name = base if r < self.num_relations else f"{base} (head)"
                per_relation[name] = {
                    "queries": int(chosen.sum()),
                    "kge_mrr": float((1.0 / before[chosen]).mean()),
                    "fused_mrr": float((1.0 / after[chosen]).mean()),
                }
        self.report = FitReport(
            queries=len(queries),
            candidates=int(valid.sum()),
            kge_mrr=float((1.0 / before).mean()),
            fused_mrr=float((1.0 / after).mean()),
            loss_before=loss_before,
            loss_after=loss_after,
            seconds=time.perf_counter() - started,
            per_relation=per_relation,
            accepted=accepted,
            held_out=held_out,
        )
        return self.report


class FusedScorer:
    """A :class:`TextFusion` over one model as an
    :class:`~kgweave.models.products.EntityScorer`: what
    :class:`~kgweave.predict.LinkPredictor` ranks by for joint models, exactly like a
    model's own pass.

    Raises:
        InvalidArgumentError: the fusion and the model have different entity counts.
    """

    exact = True

    def __init__(self, fusion: TextFusion, model: KGEModel) -> None:
        n = model.entity.weight.shape[0]
        if fusion.num_entities != n:
            raise InvalidArgumentError(
                f"text fusion over {fusion.num_entities} entities cannot rank a model of {n}"
            )
        self.fusion = fusion.to(model.entity.weight.device)
        self.model = model

    def __call__(self, hr: torch.Tensor) -> torch.Tensor:
        """Args: hr: shape (B, 2). Returns: shape (B, N) fused scores, float32."""
        with torch.no_grad():
            return self.fusion.scores(self.model, hr)
