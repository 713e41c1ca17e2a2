"""The graph's fixed validation set, for a graph whose versions predate it.

The first training on a graph snapshot stores the set (:mod:`kgweave.serving.validation`).
A server that serves a version trained elsewhere (registered, or of an older kgweave) has
none: it is made from the facts of the graph that the version was not trained on, less those
that came in through change events (updates train on them). The server makes it when it
starts (:class:`~kgweave.changes.retrain.RetrainWatcher`; the scan of the graph in the snapshot
diff's worker process, so it costs the serving process neither CPU nor the interpreter lock),
so the first incremental update does not wait for it; an update that still finds none makes it
itself.
"""

from __future__ import annotations

from collections.abc import Collection

from kgweave.artifact import ModelArtifact
from kgweave.changes.derive import BaseFacts
from kgweave.changes.overlay import Triple
from kgweave.graph.store import GraphStore
from kgweave.serving.validation import FixedValidation, load_fixed, make_fixed
from kgweave.settings import Settings


def fixed_validation(
    settings: Settings,
    base: ModelArtifact,
    version: str,
    exclude: Collection[Triple],
    store: GraphStore | None = None,
) -> FixedValidation:
    """The graph's fixed validation set (made by the first training on a graph snapshot);
    for a graph whose versions predate it, made now from the facts ``base`` held out
    (:func:`held_out_facts`) less ``exclude`` (the facts that came in through change events,
    which updates train on). ``store``: the graph
    (default: connect to it; a worker never starts an embedded one)."""
    fixed = load_fixed(settings)
    if fixed is not None:
        return fixed
    if store is None:
        from kgweave.graph.connect import open_store

        store = open_store(settings.graph_uri, settings, start=False)
    return fixed_of(settings, held_out_facts(store, base), exclude, version)


def held_out_facts(store: GraphStore, base: ModelArtifact) -> list[Triple]:
    """The graph's facts that ``base`` was not trained on and can rank (its own entities
    and relations): a scan of the graph."""
    facts = BaseFacts(base, base.training_facts)  # (the graph's held-out facts it knows)
    e, r = base.entities, base.relations
    unknown: list[Triple] = []
    for page in store.iter_triples(page_size=50_000):
        rows = facts.rows(list(page))
        unknown += [t for t, row in zip(page, rows, strict=True)
                    if row < 0 and t[0] in e and t[1] in r and t[2] in e]  # fmt: skip
    return unknown


def fixed_of(
    settings: Settings, held_out: list[Triple], exclude: Collection[Triple], version: str
) -> FixedValidation:
    """Store the graph's set: a sample of ``held_out`` less ``exclude``."""
    came_in = set(exclude)
    return make_fixed(settings, [t for t in held_out if t not in came_in], version)
