"""The small joint KG-LM configuration the tests train: the scratch LM and a few epochs, seconds
on a CPU (the pretrained LM's joint run is test_lora's)."""

from __future__ import annotations

from typing import Any

TINY_JOINT: dict[str, Any] = {
    "language_model": "small",
    "kge": {"dim": 16, "epochs": 8, "eval_every": 4},
    "lm_layers": 2,
    "lm_width": 64,
    "lm_heads": 2,
    "lm_epochs": 2,
    "lm_max_length": 48,
    "vocab_size": 600,
    "completion_top_n": 10,
}
