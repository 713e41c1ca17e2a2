"""Graph changes served at once: the change applier.

The applier is the event log's consumer ``serve``, on its own thread. Each batch of events
after its overlay's offset is folded into a copy of the :class:`~kgweave.changes.overlay.Overlay`,
one new immutable :class:`~kgweave.serving.served.ServedModel` is derived from the loaded
registry version plus that overlay (:mod:`kgweave.changes.derive`; its known facts read
through the version's indexes plus the change, :mod:`kgweave.serving.known_delta`), and the
derived model is swapped in (one reference assignment): requests see the whole batch or none
of it. Then, at most every ``overlay_save_interval_s`` (and when the applier stops), a
checkpoint:

1. the served overlay (with its ``next_offset``) is saved atomically next to the data
   (``data_dir/overlay/overlay.safetensors``);
2. the consumer offset is committed up to it (for the log's retention).

The events are durable in the log before a write is acknowledged; the overlay is a
checkpoint of their effect. A crash serves the last saved overlay on restart and re-applies
the events after it from the log (those of the last interval at most); a crash between 1 and
2 re-reads events the overlay holds already, and folding them in again changes nothing (every
event is an assignment). So no acknowledged event is lost, none takes effect twice, and no
half-applied batch is ever served. Saving per batch instead (the whole overlay written and
fsynced, the offset too) made a batch's cost grow with the overlay (docs/benchmarks.md,
``benchmarks/apply_batch.py``).

What a batch does to the served world:

- added facts become known (``filter_known``, ``known`` flags, GetEntity facts); removed facts
  stop being known;
- entities the version does not know get rows: from their text (name, description) through the
  text encoder and the version's cold-start projection; else the mean of their neighbours'
  rows (the other ends of their added facts); else the mean of all entity rows. They resolve
  by id and by name. A row is made once (again only when an entity without text gets text);
- deleted entities stop resolving (NOT_FOUND), are masked out of every top-k, and their facts
  stop being known;
- relations the version does not know get rows: the mean of the version's relation rows
  (forward and inverse separately), so they can be queried at once, with scores that carry no
  relation-specific signal until a retrained version learns them.

When another version is activated (a retrain, ``kgweave models activate``), the overlay is
rebased on it before it is swapped in (:meth:`ChangeApplier.rebase`, through
``ModelVersions.derive``): what the new version knows already is dropped from the overlay, and
the rows of entities it still does not know are made again in its embedding space. At start-up
the saved overlay is applied to the loaded version the same way, so cold-start entities,
deletions and added facts survive a restart without re-reading the log.

About 550 lines: one class, the applier's whole cycle (batches, rebases, rows for new
entities and relations); the pure derivation is in :mod:`kgweave.changes.derive`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from kgweave import killpoints
from kgweave.artifact import UPDATE, ModelArtifact
from kgweave.changes.derive import BaseFacts, FactDelta, derive_artifact, prune
from kgweave.changes.events import ChangeEvent
from kgweave.changes.log import EventLog
from kgweave.changes.overlay import Overlay, Touched, Triple
from kgweave.errors import KGWeaveError
from kgweave.serving.known_delta import KnownChange
from kgweave.serving.metrics import ServiceMetrics
from kgweave.serving.placement import lower_thread_priority
from kgweave.serving.served import ServedModel
from kgweave.serving.versions import ModelVersions
from kgweave.settings import Settings

if TYPE_CHECKING:
    from kgweave.language.components.encoder import TextEncoder
    from kgweave.language.features.coldstart import TextProjection

log = logging.getLogger(__name__)

#: the applier's consumer name in the event log
CONSUMER = "serve"
#: events per read of the log; a batch (one derived model) folds every whole append pending
MAX_BATCH = 100_000


@dataclass
class ApplyState:
    """What the applier did, for status and tests."""

    batches: int = 0
    events: int = 0
    applied_offset: int = 0
    served_version: str = ""
    last_error: str = ""
    last_apply_s: float = 0.0


@dataclass(frozen=True)
class Extended:
    """The last served model whose model has rows of new entities or relations, or whose
    names have texts of the overlay, and the overlay rows and texts it was made with (a
    copy)."""

    served: ServedModel
    new_entities: list[str]
    new_relations: list[str]
    entity_rows: torch.Tensor
    relation_rows: torch.Tensor
    texts: dict[str, tuple[str | None, str | None]]

    @classmethod
    def of(cls, served: ServedModel, overlay: Overlay) -> Extended:
        return cls(
            served,
            list(overlay.new_entities),
            list(overlay.new_relations),
            overlay.entity_rows.clone(),
            overlay.relation_rows.clone(),
            dict(overlay.texts),
        )

    def made_for(self, base: ServedModel, overlay: Overlay) -> bool:
        """Whether its model is ``base``'s with exactly ``overlay``'s rows, and its names
        have exactly ``overlay``'s texts."""
        return (
            self.served.base_version == base.version
            and overlay.new_entities == self.new_entities
            and overlay.new_relations == self.new_relations
            and overlay.texts == self.texts
            and torch.equal(overlay.entity_rows, self.entity_rows)
            and torch.equal(overlay.relation_rows, self.relation_rows)
        )


class ChangeApplier:
    """Applies the event log's change batches to the served version (see the module doc)."""

    #: how long :meth:`stop` waits for each of its threads
    STOP_WAIT_S = 30.0

    def __init__(
        self,
        settings: Settings,
        versions: ModelVersions,
        event_log: EventLog,
        metrics: ServiceMetrics,
        encoder: Callable[[], TextEncoder] | None = None,
    ) -> None:
        self.versions = versions
        self.log = event_log
        self.metrics = metrics
        self._encoder = encoder
        self._cache_dir = settings.text_vectors_dir
        self.folder = settings.data_dir / "overlay"
        self.overlay = Overlay.load(self.folder) or Overlay(
            next_offset=event_log.position(CONSUMER)
        )
        #: the overlay last saved (a checkpoint is due when the served one is another)
        self._saved: Overlay = self.overlay
        self._saved_at = time.monotonic()
        self._save_lock = threading.Lock()
        self.save_interval_s = settings.overlay_save_interval_s
        self.state = ApplyState(applied_offset=self.overlay.next_offset)
        self._base: ServedModel | None = None
        self._facts: BaseFacts | None = None  # the loaded version's facts, for lookups
        self._extended: Extended | None = None  # the last model made with new rows
        #: the served overlay's facts as rows and ids of the version it was derived from
        self._delta: FactDelta | None = None
        self._delta_of: ModelArtifact | None = None
        self._projection: TextProjection | None = None
        #: the entity space of the loaded version: the version it descends from by warm
        #: starts (incremental updates and refinements), where the projection was fitted
        self._space = ""
        self._text_failed = ""
        self._refresh = False  # the projection got ready: make text rows for waiting entities
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._applied = threading.Condition()
        #: called after each batch is served (the retrain watcher's wake-up)
        self.listeners: list[Callable[[], None]] = []
        self._thread = threading.Thread(target=self._run, name="kgweave-apply", daemon=True)
        self._text_thread: threading.Thread | None = None  # the cold-start fit, when started
        versions.derive = self.rebase

    @property
    def base(self) -> ServedModel | None:
        """The registry version the served model is derived from, as loaded."""
        return self._base

    # ---- lifecycle
    def start(self) -> None:
        self._thread.start()
        self._prepare_text()

    def _prepare_text(self) -> None:
        """Fit the cold-start projection of the loaded version in the background (encoding
        its entity texts once), so new entities with text do not wait for it: until it is
        ready they are placed by their neighbours, then their rows are made from text."""
        base, space = self._base, self._space
        if self._encoder is None or base is None:
            return

        def fit() -> None:
            from kgweave.language.features.text_vectors import EncodingStoppedError

            try:
                assert self._encoder is not None
                projection = base.cold_projection(
                    self._encoder(), self._cache_dir, should_stop=self._stop.is_set
                )
            except EncodingStoppedError:
                return  # stopping: what was encoded is cached for the next start
            except KGWeaveError as exc:
                self._text_failed = exc.message
                log.warning("new entities are placed by their neighbours: %s", exc.message)
                return
            with self.versions.swap_lock:
                if self._base is not None and self._space == space:  # (or an update of it)
                    self._projection = projection
                    self._refresh = True
            self._wake.set()

        self._text_thread = threading.Thread(target=fit, name="kgweave-apply-text", daemon=True)
        self._text_thread.start()

    def stop(self) -> None:
        """Stop applying; wait (a bounded time) for the thread and the cold-start fit, which
        stops after the chunk of entity texts it is encoding (the chunks done are cached): a
        process that exits while a thread of it runs torch kernels can abort in its C++
        teardown ("terminate called without an active exception")."""
        self._stop.set()
        self._wake.set()
        for thread in (self._thread, self._text_thread):
            if thread is not None and thread.is_alive():
                if thread is self._text_thread:
                    log.info("waiting for the cold-start text encoding to finish")
                thread.join(timeout=self.STOP_WAIT_S)
        if not self._thread.is_alive():
            self.checkpoint(force=True)
        if self.versions.derive == self.rebase:
            self.versions.derive = None

    def wake(self) -> None:
        """Events were appended: apply them without waiting for the next poll."""
        self._wake.set()

    def wait_applied(self, offset: int, timeout: float) -> bool:
        """Block until every event below ``offset`` is served (or ``timeout`` passes)."""
        deadline = time.monotonic() + timeout
        with self._applied:
            while self.overlay.next_offset < offset:
                left = deadline - time.monotonic()
                if left <= 0 or self._stop.is_set():
                    return False
                self._applied.wait(left)
            return True

    def _run(self) -> None:
        lower_thread_priority()  # queries first: a batch's derivation yields the cores
        while not self._stop.is_set():
            try:
                applied = self.apply_pending()
                self.checkpoint()
                if applied:
                    continue
                if self._refresh:
                    self._refresh = False
                    self.refresh_rows()
                self._wake.wait(0.2)
                self._wake.clear()
            except KGWeaveError as exc:
                self.state.last_error = exc.message
                log.warning("applying graph changes failed: %s", exc.message)
                self._stop.wait(1.0)
            except Exception as exc:
                self.state.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("applying graph changes failed")
                self._stop.wait(1.0)

    # ---- one batch
    def apply_pending(self) -> bool:
        """Apply one batch of pending events; returns whether there was one."""
        start, target = self.overlay.next_offset, self.log.end_offset
        if start >= target:
            return False
        began = time.monotonic()
        events = self._read_whole_appends(start, target)
        if not events:
            return False
        end = target
        with self.versions.swap_lock:
            serving = self._serving()
            if serving is None:
                return False  # nothing served yet, or an activation is under way
            active, base = serving
            overlay = self.overlay.copy()
            touched = overlay.fold(events, self._facts_of)
            # what the version knows stays out (the served overlay holds none of it already)
            prune(overlay, self._base_facts(base), touched)
            overlay.next_offset = end
            served = self._publish(active, base, overlay, touched)
        now = time.time()
        seconds = time.monotonic() - began
        self.metrics.changes_applied.inc(len(events))
        self.metrics.change_batches.inc()
        self.metrics.change_apply_seconds.observe(seconds)
        for event in events:
            self.metrics.change_lag_seconds.observe(max(0.0, now - event.time))
        self.state.batches += 1
        self.state.events += len(events)
        self.state.applied_offset = end
        self.state.served_version = served.version
        self.state.last_apply_s = seconds
        self.state.last_error = ""
        for listener in self.listeners:
            listener()
        log.info("applied %d graph changes: %s served (%.3f s)", len(events), served.version,
                 seconds)  # fmt: skip
        return True

    def _read_whole_appends(self, start: int, target: int) -> list[ChangeEvent]:
        """The events from ``start`` up to ``target``, the log's end between two appends (it
        moves once per append), read ``MAX_BATCH`` at a time: a batch is never cut inside one
        write, so no request sees half of it."""
        events: list[ChangeEvent] = []
        while start < target:
            chunk = self.log.read(start, limit=MAX_BATCH)
            events += [event for offset, event in chunk if offset < target]
            if not chunk or chunk[-1][0] + 1 >= target:
                break
            start = chunk[-1][0] + 1
        return events

    def refresh_rows(self) -> None:
        """Make text rows for new entities that were placed by neighbours while the
        projection was being fitted (same events, better rows: swapped in as one model)."""
        with self.versions.swap_lock:
            serving = self._serving()
            overlay = self.overlay
            if serving is None or not any(
                overlay.origins.get(e) != "text" and any(overlay.texts.get(e, (None, None)))
                for e in overlay.new_entities
            ):
                return
            served = self._publish(*serving, overlay.copy())
        log.info("cold start: text rows made for new entities (%s)", served.version)

    def _serving(self) -> tuple[ServedModel, ServedModel] | None:
        """The served model and the version it derives from; None when nothing is served or
        an activation is under way (call under the swap lock)."""
        active, base = self.versions.current, self._base
        if active is None or base is None or active.base_version != base.version:
            return None
        return active, base

    def _publish(
        self,
        active: ServedModel,
        base: ServedModel,
        overlay: Overlay,
        touched: Touched | None = None,
    ) -> ServedModel:
        """Rows for what is new, then derive and swap in (under the swap lock): the model
        serving ``overlay``; ``touched``: what folding a batch into the served overlay
        touched, when that is how ``overlay`` was made."""
        self._make_rows(overlay, base, touched)
        served = self._derive(base, overlay, touched)
        self.versions.replace(active, served)  # served, the whole batch at once
        killpoints.reached("served", server=True)  # (not yet acknowledged, nor saved)
        with self._applied:
            self.overlay = overlay
            self._applied.notify_all()
        return served

    def checkpoint(self, force: bool = False) -> bool:
        """Save the served overlay (1) and commit the log's consumer offset up to it (2) when
        it changed since the last save and ``save_interval_s`` passed (``force``: whenever it
        changed); returns whether it saved. The overlay is never modified once served, so it
        is saved outside the swap lock: serving and the next batch go on meanwhile."""
        with self._save_lock:
            overlay = self.overlay
            if overlay is self._saved:
                return False
            if not force and time.monotonic() - self._saved_at < self.save_interval_s:
                return False
            overlay.save(self.folder)  # 1: durable
            if overlay.next_offset > self._saved.next_offset:  # (events, not a rebase alone)
                killpoints.reached("overlay-saved", server=True)
            self._saved, self._saved_at = overlay, time.monotonic()
        if overlay.next_offset > self.log.position(CONSUMER):
            self.log.commit(CONSUMER, overlay.next_offset)  # 2: the log may let go of them
        return True

    def _base_facts(self, base: ServedModel) -> BaseFacts:
        if self._facts is None or self._facts.artifact is not base.artifact:
            self._facts = BaseFacts(base.artifact)
        return self._facts

    def _facts_of(self, entity: str) -> list[Triple]:
        """The loaded version's facts that touch ``entity``."""
        base = self._base
        if base is None or entity not in base.artifact.entities:
            return []
        info = base._info(base.artifact.entities.index[entity], max_facts=1 << 30)
        return info.facts

    # ---- a new version: the overlay follows it
    def rebase(self, loaded: ServedModel) -> ServedModel:
        """The freshly loaded ``loaded`` with the overlay applied (called by
        :meth:`ModelVersions.activate` before the swap, under its swap lock)."""
        previous, self._base = self._base, loaded
        self._extended = None
        if previous is None or warm_started_from(loaded.artifact.config) != previous.version:
            # another entity space (a full training): fit the projection again. An update
            # or refinement keeps the space of the version it was warm-started from, so its
            # projection stays (refitting it cost the serving process about 0.6 CPU-seconds
            # per update on FB15k-237: docs/benchmarks.md)
            self._space = loaded.version
            self._projection = None
            if self._thread.is_alive():
                self._prepare_text()
        overlay = self.overlay
        if overlay.base_version != loaded.version:
            overlay = overlay.copy()
            prune(overlay, self._base_facts(loaded))
            overlay.base_version = loaded.version
            # rows made in another version's space mean nothing in this one: make them again
            overlay.new_entities, overlay.origins = [], {}
            overlay.entity_rows = torch.zeros(0, 0)
            overlay.new_relations, overlay.relation_rows = [], torch.zeros(0, 2, 0)
            self._make_rows(overlay, loaded, None)
            with self._applied:  # (saved by the next checkpoint; a restart before it rebases
                self.overlay = overlay  # the saved one on the version it serves)
        if overlay.empty:
            return loaded
        return self._derive(loaded, overlay)

    # ---- rows for new entities and relations
    def _make_rows(self, overlay: Overlay, base: ServedModel, touched: Touched | None) -> None:
        """Rows for the entities and relations ``overlay`` names that ``base`` does not know
        (``touched``: only those a batch touched can be new, the rest have rows)."""
        art = base.artifact
        known = art.entities.index
        have = set(overlay.new_entities)
        mentioned = overlay.mentioned(touched)
        wanted = sorted(e for e in mentioned if e not in known and e not in have)
        redo = [
            e
            for e in (overlay.new_entities if touched is None else sorted(mentioned & have))
            if overlay.origins.get(e) != "text" and any(overlay.texts.get(e, (None, None)))
        ]
        table = art.model.entity.weight.detach().float().cpu()
        if overlay.entity_rows.numel() == 0:
            overlay.entity_rows = torch.zeros(0, table.shape[1])
        rows: dict[str, torch.Tensor] = {}
        texted = [e for e in [*wanted, *redo] if any(overlay.texts.get(e, (None, None)))]
        if texted:
            rows.update(self._text_rows(overlay, base, texted))
        index = {e: i for i, e in enumerate(overlay.new_entities)}
        for e in rows:
            overlay.origins[e] = "text"
        placed = [
            e
            for e in [*wanted, *redo]
            if e not in rows  # (one placed by its neighbours keeps its row)
            and not (e in index and overlay.origins.get(e) == "neighbours")
        ]
        around = neighbours_of(overlay.added, placed)  # (one pass, not one per entity)
        for e in placed:
            neighbours = around[e]
            vectors = [table[known[n]] for n in neighbours if n in known]
            vectors += [overlay.entity_rows[index[n]] for n in neighbours if n in index]
            if vectors:
                rows[e], overlay.origins[e] = torch.stack(vectors).mean(0), "neighbours"
            else:
                rows[e], overlay.origins[e] = table.mean(0), "mean"
        for e, row in rows.items():
            if e in index:
                overlay.entity_rows[index[e]] = row
        fresh = [e for e in wanted if e in rows]
        if fresh:
            overlay.new_entities.extend(fresh)
            overlay.entity_rows = torch.cat(
                (overlay.entity_rows, torch.stack([rows[e] for e in fresh]))
            )
        # relations
        facts = overlay.added if touched is None else touched.facts & overlay.added
        relations = {f[1] for f in facts if f[1] not in art.relations.index}
        missing = sorted(relations - set(overlay.new_relations))
        if missing:
            weight = art.model.relation.weight.detach().float().cpu()
            half = len(art.relations)
            mean = torch.stack((weight[:half].mean(0), weight[half:].mean(0)))  # (2, Wr)
            if overlay.relation_rows.numel() == 0:
                overlay.relation_rows = torch.zeros(0, 2, weight.shape[1])
            overlay.new_relations.extend(missing)
            overlay.relation_rows = torch.cat(
                (overlay.relation_rows, mean.unsqueeze(0).expand(len(missing), 2, -1))
            )

    def _text_rows(
        self, overlay: Overlay, base: ServedModel, entities: list[str]
    ) -> dict[str, torch.Tensor]:
        """Rows from text through the encoder and the version's projection ({} without an
        encoder or with too little text to fit a projection; the reason is logged once)."""
        if self._encoder is None or self._projection is None:
            return {}  # no encoder, or the projection is not fitted yet (_prepare_text)
        try:
            encoder = self._encoder()
            from kgweave.language.components.encoder import entity_texts

            names = [overlay.texts[e][0] for e in entities]
            descriptions = [overlay.texts[e][1] for e in entities]
            vectors = encoder.encode(entity_texts(names, descriptions, entities))
            projected = self._projection.project(vectors).cpu()
        except KGWeaveError as exc:
            if self._text_failed != exc.message:
                self._text_failed = exc.message
                log.warning("new entities are placed by their neighbours: %s", exc.message)
            return {}
        return {e: projected[i] for i, e in enumerate(entities)}

    # ---- the derived served model
    def _derive(
        self, base: ServedModel, overlay: Overlay, touched: Touched | None = None
    ) -> ServedModel:
        art = base.artifact
        # the previous batch's model, id maps and names, when this overlay brings no other rows
        # or texts: its extended tables and prepacked scorer serve again (a copy of the entity
        # table per batch was most of a batch's cost once a graph had new entities; a copy of
        # its labels, indexed again, then the most)
        last = self._extended
        reused = last.served if last is not None and last.made_for(base, overlay) else None
        # the served overlay's facts as rows and ids, when ``overlay`` is it with a batch in
        carried = self._delta
        if carried is None or self._delta_of is not art or carried.overlay is not self.overlay:
            carried, touched = None, None
        artifact, excluded, gone, delta = derive_artifact(
            art,
            overlay,
            self._base_facts(base),
            reused.artifact if reused is not None else None,
            carried,
            touched,
        )
        self._delta, self._delta_of = delta, art
        fusion = base.text_fusion if artifact.model is art.model else None
        served = ServedModel(
            f"{base.version}@{overlay.next_offset}",
            artifact,
            base.precision,
            base.version,
            text_fusion=fusion,
            prepack=base.prepack,
            excluded=excluded,
            change=KnownChange(base, delta.added, gone),
            like=reused.predictor if reused is not None else None,
        )
        served.warm_up(base)
        if reused is None and (
            artifact.model is not art.model or artifact.entity_names is not art.entity_names
        ):
            self._extended = Extended.of(served, overlay)
        return served


def neighbours_of(facts: Iterable[Triple], entities: Iterable[str]) -> dict[str, list[str]]:
    """Each of ``entities``' neighbours in ``facts``: the other end of each fact it is in (its
    own label once for a fact from it to itself), in the order of ``facts``; one pass over
    them whatever the number of entities, none without entities."""
    found: dict[str, list[str]] = {e: [] for e in entities}
    if not found:
        return found  # (most batches bring no new entity: no pass at all)
    for h, _, t in facts:
        if h in found:
            found[h].append(t)
        if t in found and t != h:
            found[t].append(h)
    return found


def warm_started_from(config: dict[str, Any]) -> str:
    """The version a version of config.json ``config`` was warm-started from (an incremental
    update's or a refinement's base), or "" (a training from scratch)."""
    update = config.get(UPDATE)
    return str(update.get("base_version", "")) if isinstance(update, dict) else ""
