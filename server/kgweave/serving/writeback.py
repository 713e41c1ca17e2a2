"""Write a trained model back into the graph, where Cypher users can query it.

- Entity embeddings become a vector property with the database's own vector index, so
  ``db.idx.vector.queryNodes`` (FalkorDB) or ``db.index.vector.queryNodes`` (Neo4j) finds
  nearest neighbours.
- Relation-aware search: every relation becomes a ``mapping.relation_label`` node with its
  vector and its reciprocal's, and every entity gets a second vector
  (``mapping.search_property``, euclidean index) such that the entities nearest to a query
  vector built from ``(h, r)`` are the model's best tails. For DistMult and ComplEx a tail's
  score is an inner product ``q . t`` with ``q = h * r``; appending ``sqrt(M^2 - |t|^2)`` to
  each entity (``M`` the largest norm) and 0 to the query makes
  ``|q' - t'|^2 = |q|^2 + M^2 - 2 q . t``: the nearest is the best scored. For TransE the
  distance is the score itself (exact for p = 2); for RotatE the rotated head is compared
  with the entities (a candidate search; rescore with ``kgweave.score``). On FalkorDB the
  ``kgweave`` functions (``kgweave/graph/udf/kgweave.js``) compute scores and query vectors
  in Cypher.
- Predicted links: for every (head, relation) pair the model knows, the best tails the
  model proposes that are not facts yet; the highest-scoring ``max_links`` become relationships
  of their own type (``KGWEAVE_PREDICTED``) with score, model version and provenance, replacing
  the previous version's, never mixed with real facts (links that are already facts of the
  graph, e.g. held-out ones, are left out).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import torch
from tqdm.auto import tqdm

from kgweave.artifact import ModelArtifact
from kgweave.errors import InvalidArgumentError
from kgweave.graph.store import GraphStore, PredictedLink, RelationVectors
from kgweave.models import KGEModel
from kgweave.predict import LinkPredictor

log = logging.getLogger(__name__)


def predicted_links(
    artifact: ModelArtifact,
    links_per_query: int = 1,
    max_links: int = 10_000,
    batch_size: int = 512,
    progress: bool = True,
) -> list[PredictedLink]:
    """The model's best new links: top ``links_per_query`` unknown tails of each training
    (head, relation) pair, the best ``max_links`` of them overall by score."""
    if links_per_query < 1 or max_links < 0:
        raise InvalidArgumentError("links_per_query must be >= 1 and max_links >= 0")
    if max_links == 0 or len(artifact.known) == 0:
        return []
    predictor = LinkPredictor(artifact)
    pairs = torch.unique(artifact.known[:, :2], dim=0).to(predictor.device)  # (Q, 2)
    best: list[tuple[float, int, int, int]] = []
    for start in tqdm(
        range(0, len(pairs), batch_size), desc="predicted links", unit="batch",
        disable=not progress,
    ):  # fmt: skip
        hr = pairs[start : start + batch_size]
        for (h, r), row in zip(hr.tolist(), predictor.predict_ids(hr, links_per_query, True),
                               strict=True):  # fmt: skip
            best.extend((p.score, h, r, artifact.entities.index[p.entity]) for p in row)
        if len(best) > 4 * max_links:  # keep memory bounded
            best = sorted(best, reverse=True)[:max_links]
    best = sorted(best, reverse=True)[:max_links]
    e, r_labels = artifact.entities.labels, artifact.relations.labels
    return [PredictedLink(e[h], r_labels[r], e[t], s) for s, h, r, t in best]


def search_vectors(model: KGEModel) -> torch.Tensor:
    """Each entity's vector for the relation-aware euclidean search.

    Returns: shape (N, D + 1) for bilinear models (the entity and ``sqrt(M^2 - |e|^2)``),
    (N, D) otherwise (the entity itself).
    """
    with torch.no_grad():
        weight = model.entity.weight.detach().float().cpu()
        probe = torch.zeros((0, 2), dtype=torch.long, device=model.entity.weight.device)
        if model.tail_query(probe) is None:
            return weight
        norms = weight.pow(2).sum(dim=1)
        extra = (norms.max() - norms).clamp_min(0).sqrt()
        return torch.cat((weight, extra.unsqueeze(1)), dim=1)


def relation_vectors(artifact: ModelArtifact) -> list[RelationVectors]:
    """Each relation's vector and its reciprocal's (row ``r + R``), with its readable name."""
    weight = artifact.model.relation.weight.detach().float().cpu()
    base = len(artifact.relations)
    return [
        RelationVectors(
            label,
            artifact.relation_texts.get(label, label),
            weight[r].tolist(),
            weight[r + base].tolist(),
        )
        for r, label in enumerate(artifact.relations.labels)
    ]


def write_search(store: GraphStore, artifact: ModelArtifact, model_version: str) -> dict[str, int]:
    """The relation-aware search: relation nodes, each entity's search vector (euclidean
    index) and, where the database takes them, the Cypher functions."""
    model = artifact.model
    search = search_vectors(model)
    radius = float(search.norm(dim=1).max()) if len(search) else 0.0
    relations = store.write_relations(
        relation_vectors(artifact),
        {"name": model.name, **model.config(), "search_norm": radius},
        model_version,
    )
    written = store.write_embeddings(
        artifact.entities.labels, search.tolist(), "euclidean", store.mapping.search_property
    )
    return {
        "relations": relations,
        "search_vectors": written,
        "functions": store.install_functions(),
    }


def write_back(
    store: GraphStore,
    artifact: ModelArtifact,
    model_version: str,
    embeddings: bool = True,
    links_per_query: int = 1,
    max_links: int = 10_000,
    progress: bool = True,
) -> dict[str, Any]:
    """Write embeddings and predicted links of ``artifact``; returns counts and seconds."""
    started = time.perf_counter()
    report: dict[str, Any] = {"model_version": model_version}
    if embeddings:
        vectors = artifact.model.entity.weight.detach().float().cpu().tolist()
        report["embeddings"] = store.write_embeddings(artifact.entities.labels, vectors)
        report |= write_search(store, artifact, model_version)
    # facts the model did not train on (validation, test, new ones) may already be in the
    # graph: over-generate, drop those, keep the best max_links
    links = predicted_links(artifact, links_per_query, 2 * max_links + 100, progress=progress)
    wanted = {(p.head, p.relation, p.tail) for p in links}
    present = {t for page in store.iter_triples() for t in page if t in wanted}
    links = [p for p in links if (p.head, p.relation, p.tail) not in present][:max_links]
    provenance = f"kgweave {artifact.config.get('kgweave_version', '')} {artifact.model.name}"
    report["predicted_links"] = store.write_predicted_links(links, model_version, provenance)
    report["seconds"] = round(time.perf_counter() - started, 3)
    return report


class WriteBackOnActivate:
    """Writes each activated version back into the graph on a thread of its own, latest
    first: activations that arrive while one is written are coalesced into the newest, so
    the graph ends at the version being served. Failures are logged and kept in
    :attr:`last_error`; serving never waits for the graph."""

    def __init__(self, store: Callable[[], GraphStore], max_links: int = 10_000) -> None:
        self._store = store
        self.max_links = max_links
        self._pending: tuple[str, ModelArtifact] | None = None
        self._wake = threading.Condition()
        self._closed = False
        self._busy = False
        #: the version last written, and the last failure ("" when none)
        self.written = ""
        self.last_error = ""
        self._thread = threading.Thread(target=self._run, name="kgweave-writeback", daemon=True)
        self._thread.start()

    def activated(self, version: str, artifact: ModelArtifact) -> None:
        """Queue ``version`` (replacing any version still waiting)."""
        with self._wake:
            self._pending = (version, artifact)
            self._wake.notify()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """True once nothing is queued or being written (for tests and shutdown)."""
        with self._wake:
            return self._wake.wait_for(lambda: self._pending is None and not self._busy, timeout)

    def close(self) -> None:
        with self._wake:
            self._closed = True
            self._wake.notify_all()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while True:
            with self._wake:
                self._wake.wait_for(lambda: self._pending is not None or self._closed)
                if self._closed:
                    return
                assert self._pending is not None
                version, artifact = self._pending
                self._pending, self._busy = None, True
            try:
                write_back(
                    self._store(), artifact, version, max_links=self.max_links, progress=False
                )
                self.written, self.last_error = version, ""
                log.info("write-back: %s written into the graph", version)
            except Exception as exc:  # the graph may be down: serving goes on
                self.last_error = str(exc)
                log.warning("write-back of %s failed: %s", version, exc)
            finally:
                with self._wake:
                    self._busy = False
                    self._wake.notify_all()
