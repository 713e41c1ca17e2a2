"""Training: settings, regimes, the loop, checkpoints and curves.

``TrainConfig`` loads without torch (the CLI reads its fields for ``--help``); the loop and
its result are imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kgweave.training.config import TrainConfig

if TYPE_CHECKING:
    from kgweave.training.loop import TrainResult, train

__all__ = ["TrainConfig", "TrainResult", "train"]


def __getattr__(name: str) -> Any:
    if name in ("TrainResult", "train"):
        from kgweave.training import loop

        return getattr(loop, name)
    raise AttributeError(f"module {__name__} has no attribute {name}")
