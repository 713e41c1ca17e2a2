"""Deterministic train/valid/test split of a graph's triples (for graph snapshots).

A held-out triple is only useful if its head, relation and tail still occur in training, so
triples are considered in a seeded random order and held out only while every part keeps at
least one training triple. Same triples and seed, same split.
"""

from __future__ import annotations

import torch


def split_triples(
    triples: torch.Tensor,
    num_entities: int,
    num_relations: int,
    holdout: float = 0.05,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """Split ``triples`` (M, 3) into ``train``, ``valid`` and ``test`` (each (·, 3)).

    ``holdout`` is the fraction for valid and for test each (so 0.05 keeps about 90% for
    training). Small graphs keep at least one validation and one test triple when possible.
    """
    m = len(triples)
    want = int(m * holdout)
    if m >= 20:
        want = max(want, 1)
    if want == 0:
        empty = triples[:0]
        return {"train": triples, "valid": empty, "test": empty}
    degree = torch.bincount(
        torch.cat((triples[:, 0], triples[:, 2])), minlength=num_entities
    ).tolist()
    rel_count = torch.bincount(triples[:, 1], minlength=num_relations).tolist()
    order = torch.randperm(m, generator=torch.Generator().manual_seed(seed)).tolist()
    rows = triples.tolist()
    held: list[int] = []
    for i in order:
        h, r, t = rows[i]
        need_h, need_t = (2, 2) if h != t else (3, 3)
        if degree[h] >= need_h and degree[t] >= need_t and rel_count[r] >= 2:
            degree[h] -= 1
            degree[t] -= 1
            rel_count[r] -= 1
            held.append(i)
            if len(held) == 2 * want:
                break
    mask = torch.ones(m, dtype=torch.bool)
    held_t = torch.tensor(held, dtype=torch.long)
    mask[held_t] = False
    half = (len(held) + 1) // 2
    return {
        "train": triples[mask],
        "valid": triples[torch.sort(held_t[:half]).values],
        "test": triples[torch.sort(held_t[half:]).values],
    }
