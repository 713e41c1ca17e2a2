"""Device choice: CUDA when present, the CPU otherwise, with no code change."""

from __future__ import annotations

import torch

from kgweave.errors import InvalidArgumentError


def resolve_device(name: str = "auto") -> torch.device:
    """Turn a device setting (``auto``, ``cpu``, ``cuda``, ``cuda:1``) into a torch device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise InvalidArgumentError(f"unknown device {name!r}: use auto, cpu or cuda[:N]") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InvalidArgumentError(f"device {name!r} asked for but CUDA is not available here")
    return device
