"""Training: settings, regimes, the loop, checkpoints and curves."""

from kgweave.training.config import TrainConfig
from kgweave.training.loop import TrainResult, train

__all__ = ["TrainConfig", "TrainResult", "train"]
