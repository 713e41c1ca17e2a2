"""An update based on the version the updater wrote last ranks the base on the fixed set again
only where its changes touch the filter (changes/incremental.py, ``Judged``): the base's MRR
it reports equals a full evaluation of the base with the update's filter, on the real UMLS.
A small update stops after ``incremental_epochs`` passes over its queries."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from kgweave.artifact import ModelArtifact, load_artifact, read_config, save_artifact
from kgweave.changes import incremental
from kgweave.changes.derive import derive_artifact
from kgweave.changes.overlay import Overlay, Triple
from kgweave.data.dataset import KGDataset
from kgweave.engine import open_dataset
from kgweave.errors import FailedPreconditionError
from kgweave.evaluation.ranking import build_filter, evaluate
from kgweave.models import build_model
from kgweave.serving.training_run import JobRun
from kgweave.serving.validation import make_fixed
from kgweave.settings import Settings
from kgweave.training import TrainConfig, train


def labelled(source: KGDataset | ModelArtifact, rows: torch.Tensor) -> list[Triple]:
    e, r = source.entities.labels, source.relations.labels
    return [(e[h], r[p], e[t]) for h, p, t in rows.tolist()]


def run_update(settings: Settings, base: Path, version: str, overlay: Overlay, out: Path) -> dict:
    overlay.save(out.parent / "overlay")
    spec = {"kind": "incremental", "base": str(base), "base_version": version,
            "overlay": str(out.parent / "overlay")}  # fmt: skip
    incremental.run_incremental(JobRun(spec, out, settings, lambda _m: None))
    return read_config(out)


def test_the_base_is_ranked_again_only_where_the_changes_touch_the_filter(
    tmp_path: Path, datasets_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(incremental, "KEPT", incremental.Kept())
    settings = Settings(data_dir=tmp_path / "data", datasets_dir=datasets_dir, device="cpu",
                        incremental_steps=1000, incremental_epochs=2)  # fmt: skip
    umls = open_dataset("umls", settings)
    result = train(umls, TrainConfig(epochs=5, dim=32), device="cpu", progress=False)
    base = save_artifact(tmp_path / "base", result.model, umls, {"dim": 32}, {})
    fixed = make_fixed(settings, labelled(umls, umls.splits["valid"]), "base")
    valid_keys = {(h, r) for h, r, _t in fixed.triples}
    test = [t for t in labelled(umls, umls.splits["test"]) if t not in set(fixed.triples)]
    # the first update: nothing carried (the base came from disk), every query ranked
    first = run_update(settings, base, "base", Overlay("base", 1, added={test[0]}, events=1),
                       tmp_path / "u1" / "out")  # fmt: skip
    assert first["fixed_valid"]["base_queries_ranked"] == 2 * len(fixed.triples)
    # a one-fact update stops after its passes over its queries, far below its step limit
    steps = first["incremental"]["steps"]
    assert steps == 2 * first["incremental"]["steps_per_pass"] < 1000
    # its replay sample fills one batch (256) with the new fact's two queries: one step a pass
    assert first["incremental"]["replayed"] == 256 // 2 - 1
    assert first["incremental"]["steps_per_pass"] == 1
    # the second, on the version the first wrote: a fact added and a known one removed, each
    # sharing a fixed-set query's head and relation (so those queries' filters change)
    added = next(t for t in test[1:] if (t[0], t[1]) in valid_keys)
    known = labelled(umls, umls.splits["train"])
    removed = next(t for t in known if (t[0], t[1]) in valid_keys and t != added)
    overlay = Overlay("u1", 2, added={added}, removed={removed}, events=2)
    second = run_update(settings, tmp_path / "u1" / "out", "u1", overlay, tmp_path / "u2" / "out")
    ranked = second["fixed_valid"]["base_queries_ranked"]
    assert 0 < ranked < 2 * len(fixed.triples), ranked

    # the same base, every query ranked with the second update's filter
    u1 = load_artifact(tmp_path / "u1" / "out")
    e, r = u1.entities.index, u1.relations.index

    def ids(facts: list[Triple]) -> torch.Tensor:
        return torch.tensor([(e[h], r[p], e[t]) for h, p, t in facts])

    facts = set(labelled(u1, u1.known)) | {added}
    facts.discard(removed)
    valid = ids(sorted(fixed.triples))
    known_filter = build_filter(torch.cat((ids(sorted(facts)), valid)), len(e), len(r))
    full = evaluate(u1.model.eval(), valid, known_filter)
    assert second["fixed_valid"]["base_mrr"] == pytest.approx(full.metrics["mrr"], abs=1e-9)

    # the third brings a new entity, its row the mean of the rows (so it outscores some
    # answers): the untouched queries' ranks move down where it beats their answer
    u2 = load_artifact(tmp_path / "u2" / "out")
    row = u2.model.entity.weight.detach().mean(0, keepdim=True) * 3
    fact = ("brand_new", umls.relations.labels[0], umls.entities.labels[0])
    overlay = Overlay("u2", 3, added={fact}, new_entities=["brand_new"], entity_rows=row,
                      origins={"brand_new": "mean"}, events=1)  # fmt: skip
    third = run_update(settings, tmp_path / "u2" / "out", "u2", overlay, tmp_path / "u3" / "out")
    assert third["fixed_valid"]["base_queries_ranked"] < 2 * len(fixed.triples)
    derived = derive_artifact(u2, overlay).artifact
    e, r = derived.entities.index, derived.relations.index
    facts = set(labelled(u2, u2.known)) | {fact}
    valid = ids(sorted(fixed.triples))
    known_filter = build_filter(torch.cat((ids(sorted(facts)), valid)), len(e), len(r))
    full = evaluate(derived.model.eval(), valid, known_filter)
    assert third["fixed_valid"]["base_mrr"] == pytest.approx(full.metrics["mrr"], abs=1e-9)
    alone = evaluate(u2.model.eval(), valid[:, :], build_filter(
        torch.cat((u2.known, valid)), len(u2.entities), len(u2.relations)))  # fmt: skip
    assert full.metrics["mrr"] < alone.metrics["mrr"]  # the new row did outscore answers


def test_an_update_with_nothing_left_to_train_on_is_refused(
    tmp_path: Path, datasets_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The only fact the model knows removed: no new fact, no replay; a clear refusal (the
    removal is served all the same by the change applier), not a step loop with no steps."""
    monkeypatch.setattr(incremental, "KEPT", incremental.Kept())
    settings = Settings(data_dir=tmp_path / "data", datasets_dir=datasets_dir, device="cpu")
    umls = open_dataset("umls", settings)
    one = dataclasses.replace(umls, splits={**umls.splits, "train": umls.splits["train"][:1]})
    model = build_model({"name": "complex", "num_entities": len(umls.entities),
                         "num_relations": 2 * len(umls.relations), "dim": 8})  # fmt: skip
    base = save_artifact(tmp_path / "base", model, one, {}, {})
    make_fixed(settings, labelled(umls, umls.splits["valid"][:20]), "base")
    (fact,) = labelled(umls, umls.splits["train"][:1])
    with pytest.raises(FailedPreconditionError, match="nothing to train on"):
        run_update(settings, base, "base", Overlay("base", 1, removed={fact}, events=1),
                   tmp_path / "u1" / "out")  # fmt: skip
