"""The fixed validation set: the facts every version of one graph is judged on.

Versions trained on a living graph cannot be compared on their own validation splits (each
full retrain re-splits a different graph; an incremental update trains on every new fact and
holds none out). So the first time a version is judged, a seeded sample of the facts it held
out (the graph's facts it was not trained on) is stored once in the data folder,
``data_dir/validation/fixed.json``, with the graph's identity, and from then on:

- full retrains on a graph snapshot hold out exactly these facts (their validation split) and
  train on all the others (:func:`kgweave.serving.training_run.graph_dataset`);
- an incremental update is trained on every new fact and judged on these facts, and so is the
  version it would replace, in the same run, with the same filter
  (:mod:`kgweave.changes.incremental`);
- a fact of the set that leaves the graph is no longer ranked (an entity or relation the
  version does not know, a removed fact).

A different graph (another ``graph_uri``) gets a new set: the file records which graph it
belongs to and is replaced when that differs.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from kgweave import atomic
from kgweave.settings import Settings

FOLDER = "validation"
FILE = "fixed.json"
FORMAT = "kgweave-fixed-validation"

Triple = tuple[str, str, str]


def graph_identity(settings: Settings) -> str:
    """The graph a fixed set belongs to: its URI, or the embedded graph's folder."""
    return settings.graph_uri or f"embedded:{settings.graph_dir}"


@dataclass(frozen=True)
class FixedValidation:
    """The fixed validation facts of one graph, by label."""

    graph: str
    created_from: str
    triples: tuple[Triple, ...]

    @property
    def fingerprint(self) -> str:
        """sha256 of the facts as a sorted set."""
        digest = hashlib.sha256()
        for h, r, t in sorted(self.triples):
            digest.update(f"{h}\t{r}\t{t}\n".encode())
        return digest.hexdigest()


def path_of(settings: Settings) -> Path:
    return settings.data_dir / FOLDER / FILE


def load_fixed(settings: Settings) -> FixedValidation | None:
    """The stored set of this graph; None when there is none (or it is another graph's, or
    unreadable: it is then made again)."""
    path = path_of(settings)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        return None
    if data.get("graph") != graph_identity(settings):
        return None
    triples = tuple((str(h), str(r), str(t)) for h, r, t in data.get("triples", []))
    return FixedValidation(str(data["graph"]), str(data.get("created_from", "")), triples)


def make_fixed(
    settings: Settings, held_out: Iterable[Triple], created_from: str, seed: int = 0
) -> FixedValidation:
    """Store (atomically) a seeded sample of ``held_out`` (facts of the graph the version
    ``created_from`` was not trained on) of at most ``validation_size`` facts."""
    pool = sorted(set(held_out))
    random.Random(seed).shuffle(pool)
    fixed = FixedValidation(
        graph_identity(settings), created_from, tuple(sorted(pool[: settings.validation_size]))
    )
    path_of(settings).parent.mkdir(parents=True, exist_ok=True)
    atomic.write_json(
        path_of(settings),
        {
            "format": FORMAT,
            "graph": fixed.graph,
            "created_from": created_from,
            "fingerprint": fixed.fingerprint,
            "triples": [list(t) for t in fixed.triples],
        },
    )
    return fixed
