"""Incremental updates: a new version warm-started from the served one, trained on the new facts.

Runs in the warm job worker, the *updater* (:mod:`kgweave.serving.workers`, spec kind
``incremental``), never in the serving process. The updater lives on between updates, and keeps
the version it loaded last and the model it wrote last in memory (:class:`Kept`): the next
update, based on the version just written, starts without reading it back. Its input is
immutable: the registry folder of
the version the overlay is based on, and a copy of the change applier's overlay taken when the
job started (:class:`~kgweave.changes.overlay.Overlay`, up to one log offset). Then:

1. the served world is rebuilt as the server serves it (:func:`derive_artifact`): the
   version's weights, id maps extended by the overlay's new entities and relations with the
   rows the applier gave them (from their text through the encoder and the version's
   cold-start projection, else the mean of their neighbours), known facts updated by
   concatenation (removed ones dropped, added ones appended: no export of the graph);
2. it is scored on the fixed validation set (:mod:`kgweave.serving.validation`; made once,
   from the facts the version held out, the first time); when the version is the one this
   updater wrote last, its own ranks from then are kept (:class:`Judged`) and only the queries
   whose filter the overlay's facts change are ranked again;
3. ``incremental_epochs`` passes (at most ``incremental_steps`` Adam steps, ``incremental_lr``)
   over the queries of the new facts, both directions (reciprocals), mixed with a seeded replay
   sample of ``incremental_replay`` known facts per new fact (``incremental_replay_min`` at
   least), with the version's objective (KvsAll: each query's targets are
   all its known tails; else 1vsAll); facts the version knew and the graph no longer has
   (removed, both directions) are unlearned in the same steps, through the regime's
   :meth:`~kgweave.training.regimes.Regime.forget_loss` (their probability pushed down), so
   the model stops favouring a fact once it stops being known (one the rest of the graph
   implies may still be predicted); while it still ranks a removed fact first, more passes
   (:data:`UNLEARN_STEPS`);
4. it is scored again on the same facts with the same filter, and written as an artifact whose
   config carries both scores (``fixed_valid``): the activation policy compares them
   (:mod:`kgweave.serving.activation`); a joint version's language side is carried into it,
   with rows for the new entities (:mod:`kgweave.language.joint.carry`), so it stays joint.

Each phase's seconds go into the artifact's config (``incremental.timings``). No artifact is
written when the run is cancelled; a worker killed midway leaves only its job
folder, which the restarted server cleans up (the overlay and the log are untouched: the next
update covers the same events).
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from kgweave.artifact import (
    UPDATE,
    WEIGHTS,
    ModelArtifact,
    known_facts,
    load_artifact,
    read_config,
    save_artifact,
)
from kgweave.changes.candidates import LocalModel, candidate_entities
from kgweave.changes.derive import derive_artifact
from kgweave.changes.fixed_set import fixed_validation
from kgweave.changes.overlay import Overlay, Triple
from kgweave.changes.refine import SPEC_KEY, epochs_left, is_refinement
from kgweave.data.dataset import KGDataset, with_reciprocals
from kgweave.errors import FailedPreconditionError
from kgweave.evaluation.ranking import (
    EvaluationResult,
    build_filter,
    evaluate,
    result_of_ranks,
)
from kgweave.language.joint.carry import carry_language
from kgweave.language.joint.config import is_joint
from kgweave.models import build_model, copy_model
from kgweave.serving.training_run import JobRun
from kgweave.training import TrainConfig
from kgweave.training.regimes import KvsAll, OneVsAll, Regime

log = logging.getLogger(__name__)

#: an update goes on for at most this many times incremental_steps more steps while it still
#: ranks a removed fact first (docs/graph.md)
UNLEARN_STEPS = 3

#: the job spec's ``kind`` for an incremental update
KIND = "incremental"
#: the artifact config's ``source`` of an incremental version
SOURCE = "incremental"


@dataclass(frozen=True)
class Judged:
    """The fixed-set ranks of the model the updater wrote last (its own evaluation after
    training): the next update, based on it, ranks again only the queries its changes touch."""

    fingerprint: str
    #: shape (V, 3) the fixed-set facts ranked
    valid: torch.Tensor
    #: shape (2V,) their filtered ranks: V tail queries, then V head queries
    ranks: torch.Tensor


@dataclass
class Kept:
    """What the updater process keeps between updates: the last version it loaded or wrote,
    by the sha256 of its weights file (a registered version is the folder it wrote, moved),
    and for one it wrote, its fixed-set ranks."""

    weights_sha256: str = ""
    artifact: ModelArtifact | None = None
    judged: Judged | None = None

    def load(self, folder: Path) -> tuple[ModelArtifact, Judged | None]:
        """The version in ``folder`` and its fixed-set ranks: from memory when it is the one
        kept, else loaded (and verified) from disk and kept (no ranks)."""
        config = read_config(folder)
        digest = str(config.get("files", {}).get(WEIGHTS, ""))
        if self.artifact is not None and digest and digest == self.weights_sha256:
            return replace(self.artifact, path=folder, config=config), self.judged
        artifact = load_artifact(folder)
        self.weights_sha256, self.artifact, self.judged = digest, artifact, None
        return artifact, None

    def keep(self, folder: Path, model: Any, dataset: KGDataset, judged: Judged | None) -> None:
        """Keep the artifact just written to ``folder`` (what :func:`load_artifact` would read
        back from it) and its fixed-set ranks."""
        config = read_config(folder)
        labels = dataset.entities.labels
        self.weights_sha256, self.judged = str(config["files"][WEIGHTS]), judged
        known, trained_on = known_facts(dataset.train.to(torch.int64), dataset.known_held_out)
        self.artifact = ModelArtifact(
            path=folder,
            model=model.eval(),
            entities=dataset.entities,
            relations=dataset.relations,
            entity_names=[dataset.entity_names.get(e) for e in labels],
            known=known,
            trained_on=trained_on,
            config=config,
            relation_texts={
                r: t for r, t in dataset.relation_texts.items() if r in dataset.relations
            },
            entity_descriptions=[dataset.entity_descriptions.get(e) for e in labels],
        )


#: the updater's (one per process; a one-shot worker starts empty)
KEPT = Kept()


def warm_up() -> None:
    """What the updater does once when it starts, before its first job: torch's lazy start-up.
    The first model a process builds on the meta device (as every artifact is loaded) imports
    ``torch._dynamo``: 1.8-2.5 s on two cores, which the first update paid."""
    tiny = build_model({"name": "complex", "num_entities": 2, "num_relations": 2, "dim": 2})
    copy_model(tiny)


def _ids(facts: list[Triple], artifact: ModelArtifact) -> torch.Tensor:
    e, r = artifact.entities.index, artifact.relations.index
    rows = [(e[h], r[p], e[t]) for h, p, t in facts if h in e and p in r and t in e]
    return torch.tensor(rows, dtype=torch.long).reshape(-1, 3)


class ChosenQueries(KvsAll):
    """KvsAll over every known fact (each query's targets are all its known tails, as the
    version was trained), its epochs made of the queries of ``chosen`` only: the new facts
    and the replay sample (shape (C, 3), with reciprocals)."""

    def __init__(
        self,
        train: torch.Tensor,
        num_entities: int,
        config: TrainConfig,
        num_relations: int,
        chosen: torch.Tensor,
    ) -> None:
        super().__init__(train, num_entities, config, num_relations)
        keys = chosen[:, 0] * num_relations + chosen[:, 1]
        self.chosen = torch.unique(torch.searchsorted(self.index.keys, keys))

    @property
    def epoch_size(self) -> int:
        return len(self.chosen)

    def batches(self, generator: torch.Generator) -> Iterator[torch.Tensor]:
        order = self.chosen[torch.randperm(len(self.chosen), generator=generator)]
        yield from torch.split(order, self.config.batch_size)


class Timings(dict[str, float]):
    """Seconds per phase of one update."""

    def __init__(self) -> None:
        super().__init__()
        self._last = time.monotonic()

    def done(self, phase: str) -> None:
        now = time.monotonic()
        self[phase] = round(self.get(phase, 0.0) + now - self._last, 4)
        self._last = now


def run_incremental(run: JobRun) -> dict[str, Any] | None:
    """Run one incremental update (see the module doc) and write its artifact to
    ``run.out``.

    ``run.spec``: ``{"kind": "incremental", "base": registry folder, "base_version": name,
    "overlay": folder holding the overlay copy}``, and for a refinement
    (:mod:`kgweave.changes.refine`) ``"refine": {"seconds": s, "epochs": e}``: every known
    fact trained on for ``s`` seconds, ``e`` epochs at most, with the full softmax. Returns
    the metrics, or None when ``run.should_stop`` ended the run (nothing is written)."""
    spec, out, settings, report, should_stop = (
        run.spec, run.out, run.settings, run.report, run.should_stop
    )  # fmt: skip
    started = time.monotonic()
    timings = Timings()
    refine = spec.get(SPEC_KEY)  # a refinement: every known fact (kgweave.changes.refine)
    report({"phase": "loading"})
    base_dir, version = Path(spec["base"]), str(spec["base_version"])
    art, judged_base = KEPT.load(base_dir)
    timings.done("load")
    overlay = Overlay.load(Path(spec["overlay"]))
    if overlay is None or overlay.base_version != version:
        raise FailedPreconditionError(
            f"the incremental update's change overlay is missing or not based on {version}"
        )
    derived = derive_artifact(art, overlay).artifact
    model = derived.model
    if model is art.model:  # no new rows: train a copy, the loaded version stays as it was
        model = copy_model(art.model)
    timings.done("derive")
    n_e, n_r = len(derived.entities), len(derived.relations)
    deleted = set(overlay.deleted)
    known = derived.known.cpu()
    # ---- the fixed validation set, ranked among every entity with the same filter twice
    fixed = fixed_validation(settings, art, version, overlay.added)
    held = set(fixed.triples)  # held out by every version: the rest is all trained on
    added, removed = overlay.trained_changes(held)
    new, forget = _ids(sorted(added), derived), _ids(sorted(removed), derived)
    gone = overlay.removed
    if not len(new) and not len(forget) and refine is None:
        raise FailedPreconditionError(
            "the incremental update has no new or removed facts to train on"
        )
    valid_facts = [t for t in fixed.triples if t not in gone and not deleted & {t[0], t[2]}]
    valid = _ids(valid_facts, derived)
    known_filter = build_filter(torch.cat((known, valid)), n_e, n_r)
    report({"phase": "evaluating"})
    model.eval()
    carried = None if overlay.deleted else judged_base
    touched = _ids(sorted(overlay.added | overlay.removed), derived)
    before, base_ranked = _judge_base(
        model, valid, known_filter, fixed.fingerprint, carried, touched, art.model.num_entities
    )
    timings.done("evaluate")

    # ---- training: the new facts and a replay sample, both directions
    training = dict(art.config.get("training", {}))
    try:
        base_config = TrainConfig.model_validate(training)
    except ValueError:
        base_config = TrainConfig.model_validate({})
    config = base_config
    generator = torch.Generator().manual_seed(config.seed + overlay.next_offset)
    # the fixed set is never trained on, even where the overlay made it known (the graph
    # has it): out of the targets, the replay sample and the version's training facts
    keys = _keys(known, n_e, n_r)
    fixed_rows = torch.isin(keys, _keys(_ids(sorted(held), derived), n_e, n_r))
    training_facts = known[~fixed_rows]
    old = known[~fixed_rows & ~torch.isin(keys, _keys(new, n_e, n_r))]
    changed = len(new) + len(forget)
    if refine is not None:  # every known fact
        replay = old
    else:  # a few changes: replayed facts up to one batch of queries (both directions)
        floor = settings.incremental_replay_min or max(config.batch_size // 2 - changed, 1)
        replay_n = min(len(old), max(int(changed * settings.incremental_replay), floor))
        replay = old[torch.randperm(len(old), generator=generator)[:replay_n]]
    triples = with_reciprocals(torch.cat((new, replay)), n_r)
    targets = with_reciprocals(training_facts, n_r)
    unlearn = with_reciprocals(forget, n_r)
    trained, local = model, None
    if refine is None and 0 < settings.incremental_candidates < n_e:  # a sampled softmax
        entities = candidate_entities(
            model, torch.cat((triples, unlearn)),
            with_reciprocals(torch.cat((new, forget)), n_r)[:, :2],
            settings.incremental_candidates, settings.incremental_hard_negatives, generator,
        )  # fmt: skip
        local = LocalModel(model, entities)
        trained, triples, targets = local.model, local.triples(triples), local.triples(targets)
        unlearn = local.triples(unlearn)
    timings.done("candidates")
    regime: Regime
    if config.regime == "kvsall":  # the version's own objective: every known tail a target
        regime = ChosenQueries(targets, trained.num_entities, config, 2 * n_r, triples)
    else:
        regime = OneVsAll(triples, trained.num_entities, config)
    if not regime.epoch_size:  # removals only, and no other known fact to train on
        raise FailedPreconditionError(
            "the incremental update has nothing to train on: the graph holds no other facts "
            "the model knows"
        )
    batch = min(config.batch_size, regime.epoch_size)
    regime.config = config.model_copy(update={"batch_size": batch})
    # fresh optimizer state on warm weights: Adam's small, bounded steps (Adagrad's first
    # steps are lr-sized per coordinate, which undoes what the version learned)
    params = [p for p in trained.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=settings.incremental_lr)
    limit, per_pass = settings.incremental_steps, -(-regime.epoch_size // batch)
    deadline = None
    if refine is not None:  # its seconds, and the epochs left at most
        limit = max(1, math.ceil(float(refine["epochs"]) * per_pass))
        deadline = time.monotonic() + float(refine["seconds"])
    elif settings.incremental_epochs:  # a few facts: a few passes over them and their replay
        limit = min(limit, settings.incremental_epochs * per_pass)
    # while the model still ranks a removed fact's tail first for its (head, relation) query,
    # more passes, up to UNLEARN_STEPS x incremental_steps more (a few passes at a small
    # learning rate barely move a fact the version was sure of); both directions are unlearned,
    # but a reciprocal query the graph now answers with nothing may well keep its first
    stated = unlearn[: len(unlearn) // 2]  # (the facts as stated: reciprocals come second)
    extra = UNLEARN_STEPS * settings.incremental_steps if len(unlearn) and refine is None else 0
    unlearn_cap = limit + extra
    report({"phase": "training", "epoch": 0, "epochs": limit})
    trained.train()
    steps, losses, passes = 0, [], limit
    while steps < limit:  # (a refinement's deadline checked after each step: one at least)
        for batch_ids in regime.batches(generator):
            optimizer.zero_grad(set_to_none=True)
            loss, _covered = regime.batch_loss(trained, batch_ids)
            if len(unlearn):
                loss = loss + regime.forget_loss(trained, _sample(unlearn, batch, generator))
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
            losses.append(loss.detach())
            steps += 1
            if deadline is not None and (
                time.monotonic() >= deadline or (run.should_wrap_up and run.should_wrap_up())
            ):
                limit = steps  # its time is spent, or changes wait for the updater
            if steps >= limit and steps < unlearn_cap and _still_first(trained, stated):
                limit = min(limit + per_pass, unlearn_cap)
            if steps >= limit:
                break
            if should_stop is not None and should_stop():
                return None
    still_first = _still_first(trained, stated)
    if local is not None:
        local.write_back()
    model.eval()
    mean_loss = float(torch.stack(losses).mean())  # sync point
    timings.done("train")
    if should_stop is not None and should_stop():
        return None

    # ---- judged on the same facts, with the same filter
    report({"phase": "evaluating", "loss": mean_loss})
    after = evaluate(model, valid, known_filter) if len(valid) else None
    timings.done("evaluate")
    metrics: dict[str, Any] = {"valid": after.metrics if after else {}}
    base_mrr = before.metrics.get("mrr") if before else None
    judged = {
        "mrr": after.metrics.get("mrr") if after else None,
        "base_mrr": base_mrr,
        "base_version": version,
        "fingerprint": fixed.fingerprint,
        "triples": len(valid),
        "difference_se": difference_se(before, after),
        "base_queries_ranked": base_ranked,  # fewer than 2 * triples: the rest carried over
        **anchor_of(art.config, version, base_mrr),
    }
    refined = steps / per_pass if refine is not None else 0.0  # epochs
    if refine is not None:
        judged["improve_only"] = True  # activated only when it beats the base
    labels = derived.entities.labels
    dataset = KGDataset(
        name="graph",
        entities=derived.entities,
        relations=derived.relations,
        splits={"train": training_facts, "valid": valid, "test": known[:0]},
        known_held_out=known[fixed_rows],  # the graph's fixed-set facts: known, not trained
        fingerprint=_fingerprint(training_facts, derived),
        entity_names=_present(labels, derived.entity_names),
        entity_descriptions=_present(labels, derived.entity_descriptions),
        relation_texts=dict(art.relation_texts),
        relation_templates=dict(art.config.get("relation_templates", {})),
    )
    report({"phase": "saving"})
    timings.done("prepare")
    joint = "joint" in art.config and is_joint(base_dir)  # its language side goes with it
    save_artifact(
        out,
        model,
        dataset,
        training=base_config.model_dump(),  # what a full retrain of it uses
        metrics=metrics,
        extra={
            "source": SOURCE,
            **({"joint": art.config["joint"]} if joint else {}),
            "fixed_valid": judged,  # the activation policy compares mrr with base_mrr
            UPDATE: {
                "base_version": version,
                "offset": overlay.next_offset,
                "new_facts": len(new),
                "removed_facts": len(forget),
                "replayed": len(replay),
                "steps": steps,
                "unlearning_steps": max(steps - passes, 0),  # beyond its passes, for removals
                "removed_still_first": still_first,  # tails still ranked first
                "steps_per_pass": per_pass,
                "candidates": len(local.entities) if local is not None else n_e,
                "loss": mean_loss,
                "new_entities": list(overlay.new_entities),
                "new_relations": list(overlay.new_relations),
                "seconds": round(time.monotonic() - started, 3),
                "timings": timings,
                "refine_left": max(epochs_left(art.config) - refined, 0.0),
                **({SPEC_KEY: {"epochs": round(refined, 4)}} if refine is not None else {}),
            },
        },
    )
    if joint:
        report({"phase": "language side"})
        began = time.monotonic()
        language = carry_language(base_dir, version, len(art.entities), out, model, dataset,
                                  settings)  # fmt: skip
        log.info("update of %s: joint language side carried in %.2f s (%s)", version,
                 time.monotonic() - began, language)  # fmt: skip
    kept = None
    if after is not None and after.ranks is not None:
        kept = Judged(fixed.fingerprint, valid, after.ranks)
    KEPT.keep(out, model, dataset, kept)  # the next update is based on it once registered
    return metrics


def _judge_base(
    model: Any,
    valid: torch.Tensor,
    known_filter: Any,
    fingerprint: str,
    carried: Judged | None,
    touched: torch.Tensor,
    base_entities: int,
) -> tuple[EvaluationResult | None, int]:
    """The base version's fixed-set evaluation (``valid`` shape (V, 3), with the update's
    filter) by ``model``, the base with the overlay's new rows (entities from
    ``base_entities`` on) appended. ``carried``: the base's own ranks, when the updater wrote
    it and this update's overlay deleted no entity: only the queries whose filter the
    overlay's added or removed facts (``touched``, shape (T, 3)) change are ranked again; the
    others keep their ranks, each moved down by the new entities that outscore its answer
    (no fact of a new entity can filter them: it would touch them). Else every query is
    ranked. Returns the evaluation and the number of queries ranked in full."""
    if not len(valid):
        return None, 0
    usable = (
        carried is not None
        and carried.fingerprint == fingerprint
        and carried.valid.shape == valid.shape
        and bool(torch.equal(carried.valid, valid))
    )
    if carried is None or not usable:
        return evaluate(model, valid, known_filter), 2 * len(valid)
    n_r = model.num_relations // 2
    tails = torch.isin(valid[:, 0] * n_r + valid[:, 1], touched[:, 0] * n_r + touched[:, 1])
    heads = torch.isin(valid[:, 2] * n_r + valid[:, 1], touched[:, 2] * n_r + touched[:, 1])
    again = torch.nonzero(tails | heads).squeeze(1)
    ranks = carried.ranks.clone()
    if model.num_entities > base_entities:  # new rows: where they outscore the answer
        queries = with_reciprocals(valid, n_r)
        new = torch.arange(base_entities, model.num_entities).expand(len(queries), -1)
        with torch.no_grad():
            scores = model.score_candidates(queries[:, :2], torch.cat((queries[:, 2:], new), 1))
        answer, rows = scores[:, :1], scores[:, 1:]
        ranks += (rows > answer).sum(1).double() + (rows == answer).sum(1).double() / 2
    if len(again):
        fresh = evaluate(model, valid[again], known_filter).ranks
        assert fresh is not None
        ranks[again], ranks[again + len(valid)] = fresh[: len(again)], fresh[len(again) :]
    return result_of_ranks(ranks, valid), 2 * len(again)


def _still_first(model: Any, triples: torch.Tensor) -> int:
    """How many facts of ``triples`` (T, 3) the model still ranks first for their query
    (scored in eval mode)."""
    if not len(triples):
        return 0
    was_training = model.training
    model.eval()
    with torch.no_grad():
        first = model.score_t(triples[:, :2]).argmax(dim=1) == triples[:, 2]  # (T,)
    model.train(was_training)
    return int(first.sum())


def _sample(rows: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """``rows`` (T, 3), or ``n`` of them drawn at random when there are more."""
    if len(rows) <= n:
        return rows
    return rows[torch.randperm(len(rows), generator=generator)[:n]]


def anchor_of(config: dict[str, Any], version: str, mrr: float | None) -> dict[str, Any]:
    """The last full training a chain of updates descends from, and its fixed-set MRR: the
    base's anchor when the base is an update itself, else the base (``config``, ``version``,
    ``mrr`` measured in this run). Updates are judged against it too, so drift within each
    update's tolerance cannot add up."""
    theirs = config.get("fixed_valid")
    if (
        config.get("source") == SOURCE
        and not is_refinement(config)  # a refinement stands for a full training
        and isinstance(theirs, dict)
        and "anchor_version" in theirs
    ):
        return {"anchor_version": theirs["anchor_version"], "anchor_mrr": theirs.get("anchor_mrr")}
    return {"anchor_version": version, "anchor_mrr": mrr}


def difference_se(before: EvaluationResult | None, after: EvaluationResult | None) -> float | None:
    """The standard error of the MRR difference ``after - before`` over the same queries
    (paired: the spread of each query's change of reciprocal rank, over the square root of
    their number); None with fewer than two queries."""
    if before is None or after is None or before.ranks is None or after.ranks is None:
        return None
    change = 1.0 / after.ranks.double() - 1.0 / before.ranks.double()
    if len(change) < 2:
        return None
    return float(change.std() / len(change) ** 0.5)


def _keys(triples: torch.Tensor, n_e: int, n_r: int) -> torch.Tensor:
    return (triples[:, 0] * n_r + triples[:, 1]) * n_e + triples[:, 2]


def _present(labels: list[str], values: list[str | None]) -> dict[str, str]:
    return {label: value for label, value in zip(labels, values, strict=True) if value}


def _fingerprint(known: torch.Tensor, artifact: ModelArtifact) -> str:
    digest = hashlib.sha256(known.numpy().tobytes())
    digest.update("\n".join(artifact.entities.labels).encode())
    return digest.hexdigest()
