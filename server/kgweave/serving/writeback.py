"""Write a trained model back into the graph, where Cypher users can query it.

- Entity embeddings become a vector property with the database's own vector index, so
  ``db.idx.vector.queryNodes`` (FalkorDB) or ``db.index.vector.queryNodes`` (Neo4j) finds
  nearest neighbours.
- Predicted links: for every (head, relation) pair of the training graph, the best tails the
  model proposes that are not facts yet; the highest-scoring ``max_links`` become relationships
  of their own type (``KGWEAVE_PREDICTED``) with score, model version and provenance, replacing
  the previous version's, never mixed with real facts (links that are already facts of the
  graph, e.g. held-out ones, are left out).
"""

from __future__ import annotations

import time
from typing import Any

import torch
from tqdm.auto import tqdm

from kgweave.artifact import ModelArtifact
from kgweave.errors import InvalidArgumentError
from kgweave.graph.store import GraphStore, PredictedLink
from kgweave.predict import LinkPredictor


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
