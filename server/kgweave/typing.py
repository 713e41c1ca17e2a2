"""Named tensor aliases used in docstrings and signatures.

Shapes are written in docstrings as ``(batch_size, 3)``; ``B`` is a batch size, ``N`` the number
of entities, ``R`` the number of relations *including* reciprocal ones, ``D`` the embedding width.
"""

from __future__ import annotations

from typing import TypeAlias

import torch

#: (B, 3) long tensor of (head, relation, tail) ids.
TripleBatch: TypeAlias = torch.Tensor
#: (B, 2) long tensor of (head, relation) ids: the queries of tail prediction.
HRBatch: TypeAlias = torch.Tensor
#: (B,) float tensor of scores, higher is more plausible.
Scores: TypeAlias = torch.Tensor
#: (B, N) float tensor of scores against every entity.
AllScores: TypeAlias = torch.Tensor
