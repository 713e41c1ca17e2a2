"""How a training run fits its device: bf16 autocast where the device computes it natively,
and the check that refuses embedding tables too large for its memory before they are built.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

import torch

from kgweave.device import cpu_has_native_bf16
from kgweave.errors import InvalidArgumentError
from kgweave.models import model_class
from kgweave.training.config import TrainConfig


def use_bf16_autocast(config: TrainConfig, device: torch.device, num_entities: int) -> bool:
    """Resolve ``config.precision`` for this device and graph size."""
    if config.precision != "auto":
        return config.precision == "bf16"
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    return device.type == "cpu" and num_entities >= 2000 and cpu_has_native_bf16()


def bf16_autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast on ``device`` when ``enabled`` (see :func:`use_bf16_autocast`)."""
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


#: copies of the embedding tables a run holds: weights, gradients, two optimizer states (Adam),
#: the best model
TABLE_COPIES = 5


def check_memory(
    config: TrainConfig,
    num_entities: int,
    num_relations: int,
    device: torch.device,
    memory_bytes: int | None = None,
) -> None:
    """Refuse a run whose embedding tables alone cannot fit: ``TABLE_COPIES`` fp32 copies of
    (entities + relations) × dim × the model's width, against the device's memory
    (``memory_bytes``; default: the GPU's, or the machine's physical memory).

    Raises:
        InvalidArgumentError: naming the sizes and saying to lower ``--dim``.
    """
    width = config.dim * model_class(config.model).real_width
    need = TABLE_COPIES * 4 * width * (num_entities + num_relations)
    if memory_bytes is None:
        if device.type == "cuda":
            memory_bytes = int(torch.cuda.get_device_properties(device).total_memory)
        else:
            memory_bytes = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if need > memory_bytes:
        raise InvalidArgumentError(
            f"dim {config.dim} for {num_entities} entities needs about {need / 2**30:.1f} GiB "
            f"for the embedding tables alone, more than the {memory_bytes / 2**30:.1f} GiB "
            f"of {device.type}: lower --dim"
        )
