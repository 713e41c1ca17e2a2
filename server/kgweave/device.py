"""Device choice: CUDA when present, the CPU otherwise, with no code change."""

from __future__ import annotations

import functools

import torch

from kgweave.errors import InvalidArgumentError, echo


@functools.cache
def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX), read from cpuinfo
    once (a served model is made per change batch)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:  # no /proc (not Linux): assume no native bf16
        return False
    return False


def resolve_device(name: str = "auto") -> torch.device:
    """Turn a device setting (``auto``, ``cpu``, ``cuda``, ``cuda:1``) into a torch device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise InvalidArgumentError(
            f"unknown device {echo(name)}: use auto, cpu or cuda[:N]"
        ) from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InvalidArgumentError(f"device {echo(name)} asked for but CUDA is not available here")
    return device
