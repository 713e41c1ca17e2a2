"""Change capture that works on any backend: compare the graph with the last snapshot.

Each run exports the current triples and entities (:func:`export_snapshot`, stable ids),
compares them with the snapshot saved by the previous run, appends one event per added or
removed triple, per new entity or entity whose name or description changed (with its text)
and per deleted entity to the event log, and only then makes the new snapshot the last one.
A crash between the two re-emits the same events next time: at-least-once, never lost. It
leaves out what the log already says: a change that another source (WriteFacts, the APOC
trigger, the CDC poller) logged since the previous run, and anything logged while the export
ran (newer than the export's view). The server runs the export and the comparison in a
worker process (:class:`DiffWorker`), and before it compares the graph's census (entities,
facts per relation) with the last run's (:mod:`kgweave.changes.retrain`): a graph whose
changes all came through the event log costs one count query, and an export reads only the
relations whose counts the log does not explain, and the entities only when their count is
not explained (:func:`to_export`), merged into the last snapshot's rest.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing as mp
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from kgweave import atomic
from kgweave.changes.events import ChangeEvent, ChangeKind
from kgweave.changes.log import EventLog
from kgweave.graph.store import Census, GraphStore
from kgweave.graph.sync import export_snapshot
from kgweave.settings import Settings

SOURCE = "snapshot-diff"
#: the last committed snapshot, and the one a run wrote and has not committed yet
SNAPSHOT, NEXT = "snapshot.safetensors", "snapshot.next.safetensors"
#: the log's end when the last committed run's export began, and when the last one that
#: read every relation began
LOGGED = "snapshot.logged.json"


def state_dir_of(settings: Settings) -> Path:
    """The folder of the snapshot diff's state (its last snapshot and ids)."""
    return settings.data_dir / "snapshot-diff"


def record_baseline(store: GraphStore, settings: Settings, log: EventLog) -> bool:
    """Record the graph as it is as the diff's baseline, unless there is one: called before
    the first model is trained on the graph, so that whatever reaches the graph after that
    without a change event (written around kgweave, or by a write killed between the graph
    and the log) is emitted by the diff's first run. Returns whether it recorded one."""
    folder = state_dir_of(settings)
    if (folder / SNAPSHOT).is_file():
        return False
    snapshot_diff(store, folder, log, emit=False)
    return True


def _keys(triples: torch.Tensor, num_entities: int, num_relations: int) -> torch.Tensor:
    """One int64 per triple: ((h * R) + r) * E + t."""
    return (triples[:, 0] * num_relations + triples[:, 1]) * num_entities + triples[:, 2]


def _text_of(name: str | None, description: str | None) -> dict[str, Any]:
    """An entity's name and description as event properties (the applier's cold start)."""
    return {k: v for k, v in (("name", name), ("description", description)) if v}


@dataclass(frozen=True)
class Part:
    """What a partial read of the graph reads (:func:`to_export`): the facts of
    ``relations``, and every entity when ``entities``; the rest is kept from the last
    snapshot."""

    relations: frozenset[str]
    entities: bool


def snapshot_diff(
    store: GraphStore,
    state_dir: Path,
    log: EventLog,
    emit: bool = True,
    part: Part | None = None,
) -> dict[str, Any]:
    """Emit the graph's changes since the last run into ``log``; returns counts and offsets.

    ``emit=False`` records the graph as the baseline without emitting anything (the served
    model was trained on it: its facts are not changes); ``part``: see :func:`compute_diff`.
    In the calling process; the server runs it in a worker process (:class:`DiffWorker`)."""
    since = log.end_offset
    events, result = compute_diff(store, state_dir, emit, part)
    return commit_diff(state_dir, log, events, result, since)


def compute_diff(
    store: GraphStore,
    state_dir: Path,
    emit: bool = True,
    part: Part | None = None,
) -> tuple[list[ChangeEvent], dict[str, Any]]:
    """The graph's changes since the last committed run, as events (none when not ``emit``),
    and their counts; the new snapshot is written beside the last one
    (``snapshot.next.safetensors``) for :func:`commit_diff`.

    ``part``: read only the facts of ``part.relations`` and keep the last snapshot's facts of
    the others; read the entities only when ``part.entities`` (else keep the last snapshot's,
    with the ends of the facts read): what :func:`to_export` names when the log explains the
    rest of the graph's census. None: every fact and entity (so always the first run).

    The events: an upsert per entity new in the graph or whose name or description changed
    (with its text), an added or removed fact per fact, a deletion per entity gone."""
    state_dir.mkdir(parents=True, exist_ok=True)
    previous_path = state_dir / SNAPSHOT
    saved = load_file(str(previous_path)) if previous_path.is_file() else {}
    previous = saved.get("triples", torch.zeros(0, 3, dtype=torch.long))
    if not saved:
        part = None
    snap = export_snapshot(
        store,
        state_dir / "ids.json",
        relations=None if part is None else part.relations,
        entities=part is None or part.entities,
    )
    n_e, n_r = max(len(snap.entities), 1), max(len(snap.relations), 1)
    triples = snap.triples
    if part is not None:  # the other relations' facts as the last run saw them
        read = torch.tensor([snap.relations.index[r] for r in part.relations
                             if r in snap.relations], dtype=torch.long)  # fmt: skip
        merged = torch.cat([previous[~torch.isin(previous[:, 1], read)], triples])
        triples = merged[torch.argsort(_keys(merged, n_e, n_r))]
    current_keys = _keys(triples, n_e, n_r)
    previous_keys = _keys(previous, n_e, n_r)
    added = triples[~torch.isin(current_keys, previous_keys)]
    removed = previous[~torch.isin(previous_keys, current_keys)]
    was_present, old_hashes = _previous_entities(saved, len(snap.entities))
    present, hashes = snap.present, snap.text_hashes
    if part is not None and not part.entities:  # as the last run saw them, and the facts' ends
        present, hashes = snap.present | was_present, old_hashes
    fresh_mask = present & ~was_present
    retexted_mask = present & was_present & (old_hashes != hashes)
    if "text_hashes" not in saved:  # a snapshot of an older kgweave: no texts to compare
        retexted_mask[:] = False
    gone_mask = was_present & ~present
    e, r = snap.entities.labels, snap.relations.labels
    upserted = [e[i] for i in (fresh_mask | retexted_mask).nonzero()[:, 0].tolist()]
    gone = [e[i] for i in gone_mask.nonzero()[:, 0].tolist()]
    events: list[ChangeEvent] = []
    if emit:
        events = [
            ChangeEvent(
                ChangeKind.ENTITY_UPSERTED,
                entity=label,
                properties=_text_of(snap.names.get(label), snap.descriptions.get(label)),
                source=SOURCE,
            )
            for label in upserted
        ]
        events += [
            ChangeEvent(ChangeKind.TRIPLE_ADDED, head=e[h], relation=r[p], tail=e[t],
                        source=SOURCE)
            for h, p, t in added.tolist()
        ]  # fmt: skip
        events += [
            ChangeEvent(ChangeKind.TRIPLE_REMOVED, head=e[h], relation=r[p], tail=e[t],
                        source=SOURCE)
            for h, p, t in removed.tolist()
        ]  # fmt: skip
        events += [ChangeEvent(ChangeKind.ENTITY_DELETED, entity=label, source=SOURCE)
                   for label in gone]  # fmt: skip
    with atomic.atomic_path(state_dir / NEXT) as tmp:
        save_file(
            {
                "triples": triples.contiguous(),
                "present": present.to(torch.uint8),
                "text_hashes": hashes,
            },
            str(tmp),
        )
    result = {
        "added": len(added),
        "removed": len(removed),
        "new_entities": int(fresh_mask.sum()),
        "changed_texts": int(retexted_mask.sum()),
        "deleted_entities": len(gone),
        "relations_read": len(snap.relations) if part is None else len(part.relations),
        "relations": len(snap.relations),
        "every_relation": part is None,
        "entities_read": part is None or part.entities,
    }
    return events, result


def _previous_entities(
    saved: dict[str, torch.Tensor], num_entities: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The last run's entities in the graph (bool, (E,)) and their text hashes (int64, (E,)),
    over today's (longer) id maps; a snapshot of an older kgweave recorded only how many ids
    there were (all taken as present)."""
    present = torch.zeros(num_entities, dtype=torch.bool)
    hashes = torch.zeros(num_entities, dtype=torch.long)
    if "present" in saved:
        present[: len(saved["present"])] = saved["present"].bool()
        hashes[: len(saved["text_hashes"])] = saved["text_hashes"]
    else:
        present[: len(saved.get("entities_known", ()))] = True
    return present, hashes


def commit_diff(
    state_dir: Path,
    log: EventLog,
    events: list[ChangeEvent],
    result: dict[str, Any],
    since: int | None = None,
) -> dict[str, Any]:
    """Append the events of :func:`compute_diff` to ``log``, then make its snapshot the
    last one (in this order: a crash between re-emits the same events next time).

    ``since``: the log's end when the export began. The events the log already holds are
    left out (:func:`_not_logged`): what other sources logged from the previous run's
    ``since`` on (from the last run that read every relation, when runs since read some: the
    snapshot's other relations are that old), in the same direction, and anything they
    logged from this ``since`` on."""
    logged = _logged_from(state_dir)
    if since is not None and events:
        kept = _not_logged(events, log, logged.get("from"), since)
        result = {**result, "already_logged": len(events) - len(kept)}
        events = kept
    offsets = log.append(events) if events else []
    os.replace(state_dir / NEXT, state_dir / SNAPSHOT)
    if since is not None:
        every = result.get("every_relation", True)
        full_since = since if every else logged.get("full_since", logged.get("since", since))
        atomic.write_json(state_dir / LOGGED, {"since": since, "full_since": full_since})
    else:
        (state_dir / LOGGED).unlink(missing_ok=True)
    atomic.fsync_dir(state_dir)
    return {
        **result,
        "first_offset": offsets[0] if offsets else None,
        "next_offset": log.end_offset,
    }


def _logged_from(state_dir: Path) -> dict[str, int]:
    """The log's end when the last committed run's export began (``since``), when the last
    one that read every relation began (``full_since``), and the older of the two
    (``from``); a key is missing where it was not recorded."""
    try:
        saved = json.loads((state_dir / LOGGED).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(saved, dict):
        return {}
    offsets = {
        k: v for k, v in saved.items() if k in ("since", "full_since") and isinstance(v, int)
    }
    if offsets:
        offsets["from"] = min(offsets.values())
    return offsets


def _key(event: ChangeEvent) -> tuple[str, ...]:
    if event.kind in (ChangeKind.TRIPLE_ADDED, ChangeKind.TRIPLE_REMOVED):
        return (event.head or "", event.relation or "", event.tail or "")
    return (event.entity or "",)


def _not_logged(
    events: list[ChangeEvent], log: EventLog, previous: int | None, since: int
) -> list[ChangeEvent]:
    """``events`` (the diff's) less what the log already says. What another source logged
    from ``since`` (the export's start) on is at least as new as the export's view of the
    same fact or entity (or of a fact of a deleted entity): the diff's event is dropped. What
    one logged between ``previous`` (the last run's ``since``) and ``since`` is older than the
    export's view: the diff's event is dropped only when it says the same (the same kind, an
    upsert with the same text), as a change the applier has already served; so is the upsert
    of an entity with no text that a logged added fact brought into the graph."""
    start = since if previous is None else min(previous, since)
    last: dict[tuple[str, ...], tuple[int, ChangeEvent]] = {}
    deleted_after: set[str] = set()
    in_facts: set[str] = set()  # entities a logged added fact made (or kept) in the graph
    while batch := log.read(start, limit=10_000):
        for offset, event in batch:
            if event.source == SOURCE:
                continue
            last[_key(event)] = (offset, event)
            if event.kind == ChangeKind.ENTITY_DELETED and offset >= since and event.entity:
                deleted_after.add(event.entity)
            elif event.kind == ChangeKind.TRIPLE_ADDED:
                in_facts.update((event.head or "", event.tail or ""))
        start = batch[-1][0] + 1
    if not last:
        return events

    def logged(event: ChangeEvent) -> bool:
        key = _key(event)
        if len(key) == 3 and (key[0] in deleted_after or key[2] in deleted_after):
            return True
        textless = event.kind == ChangeKind.ENTITY_UPSERTED and not event.properties
        if textless and key[0] in in_facts and key not in last:  # a logged fact brought it
            return True
        if key not in last:
            return False
        offset, theirs = last[key]
        if offset >= since:
            return True
        return theirs.kind == event.kind and theirs.properties == event.properties

    return [event for event in events if not logged(event)]


def to_export(last: Census, now: Census, events: list[ChangeEvent]) -> Part | None:
    """What the graph's census ``now`` says an export must read, given its census at the last
    export (``last``) and the events logged since by other sources (WriteFacts, the APOC
    trigger, the CDC poller): None when the log explains it (every change went through the
    log, and an export would find none; an unlogged addition and removal that cancel out,
    and a text changed behind the log, are left to the periodic full compare), else the
    relations whose fact counts the log does not explain, and the entities when their
    count is not explained. Events that changed no count (a fact written twice, the removal
    of one the graph did not hold: ``UNCHANGED``) are left out. A deleted entity takes facts
    the log does not list: their relations' counts name them. The entities' count must lie
    between what the deletions leave and what the added facts and upserted entities can
    add."""
    facts = dict(last.facts)
    low = high = last.entities
    for event in events:
        if event.source == SOURCE or event.graph_unchanged:  # in its snapshot; no change
            continue
        relation = event.relation or ""
        if event.kind == ChangeKind.TRIPLE_ADDED:
            facts[relation] = facts.get(relation, 0) + 1
            high += 2
        elif event.kind == ChangeKind.TRIPLE_REMOVED:
            facts[relation] = facts.get(relation, 0) - 1
        elif event.kind == ChangeKind.ENTITY_UPSERTED:
            high += 1
        else:
            low -= 1
    changed = frozenset(
        r for r in facts.keys() | now.facts.keys() if facts.get(r, 0) != now.facts.get(r, 0)
    )
    entities = not low <= now.entities <= high
    if not changed and not entities:
        return None
    return Part(changed, entities)


class DiffWorker:
    """Runs :func:`compute_diff` in a process of its own at lowered OS priority (started on
    first use, kept between runs), so exporting the graph costs the serving process neither
    CPU nor the interpreter lock; only appending the events and renaming the snapshot happen
    in the server. The process exits when the server does (it watches its parent)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._settings_json = settings.model_dump_json()
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()  # (the diff and the fixed set's scan share the worker)
        self._closed = False  # closed for good (the server stops): no worker starts again

    def _call(self, fn: Any, *args: Any) -> Any:
        """``fn(settings_json, *args)`` in the worker process (one call at a time)."""
        with self._lock:
            if self._closed:
                raise BrokenProcessPool("the diff worker is closed: the server is stopping")
            if self._pool is None:
                self._pool = ProcessPoolExecutor(
                    1,
                    mp_context=mp.get_context("spawn"),
                    initializer=_worker_started,
                    initargs=(os.getpid(), self._settings.background_cpu_set),
                )
            future = self._pool.submit(fn, self._settings_json, *args)
        try:
            return future.result()
        except BrokenProcessPool:
            self._end()  # the next call starts another
            raise

    def run(
        self, state_dir: Path, log: EventLog, emit: bool = True, part: Part | None = None
    ) -> dict[str, Any]:
        """:func:`snapshot_diff` with the export and the comparison in the worker."""
        since = log.end_offset
        events, result = self._call(_compute_in_worker, str(state_dir), emit, part)
        return commit_diff(state_dir, log, events, result, since)

    def held_out(self, base: Path) -> list[tuple[str, str, str]]:
        """The graph's facts that the version in folder ``base`` was not trained on
        (:func:`~kgweave.changes.fixed_set.held_out_facts`), scanned in the worker."""
        facts: list[tuple[str, str, str]] = self._call(_held_out_in_worker, str(base))
        return facts

    def close(self) -> None:
        """End the worker for good, at once: an export under way is abandoned (it writes only
        its own next snapshot file; the server commits nothing of it), the call waiting for it
        fails with ``BrokenProcessPool``, and so does any later call (a diff step that had
        passed its stop check starts no new worker)."""
        with self._lock:
            self._closed = True
        self._end()

    def _end(self) -> None:
        """End the worker process, if any (the next call, unless closed, starts another)."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is None:
            return
        # (ProcessPoolExecutor has no public terminate before Python 3.14)
        for process in list(getattr(pool, "_processes", {}).values()):
            with contextlib.suppress(OSError):
                process.terminate()
        pool.shutdown(wait=True, cancel_futures=True)


def _worker_started(parent: int, cpus: frozenset[int] = frozenset()) -> None:
    """In the diff worker: lowered priority (on ``cpus``, the background CPUs; empty: any),
    and gone as soon as its server (``parent``) is, even when the server died before the
    worker got this far."""
    from kgweave.serving.placement import BACKGROUND_NICE, lower_process_priority
    from kgweave.serving.workers import thread_locked_progress

    lower_process_priority(BACKGROUND_NICE, cpus)
    thread_locked_progress()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, name="kgweave-diff-parent", daemon=True).start()


#: the diff worker's graph connection, opened by its first run
_STORES: dict[str, GraphStore] = {}


def _worker_store(settings_json: str) -> GraphStore:
    from kgweave.graph.connect import open_store

    settings = Settings.model_validate_json(settings_json)
    key = settings.graph_uri or str(settings.graph_dir)
    if key not in _STORES:
        _STORES[key] = open_store(settings.graph_uri, settings, start=False)
    return _STORES[key]


def _compute_in_worker(
    settings_json: str, state_dir: str, emit: bool, part: Part | None = None
) -> tuple[list[ChangeEvent], dict[str, Any]]:
    return compute_diff(_worker_store(settings_json), Path(state_dir), emit, part)


def _held_out_in_worker(settings_json: str, base: str) -> list[tuple[str, str, str]]:
    from kgweave.artifact import load_artifact
    from kgweave.changes.fixed_set import held_out_facts

    return held_out_facts(_worker_store(settings_json), load_artifact(Path(base)))
