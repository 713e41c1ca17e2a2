"""Resumable training checkpoints without pickle.

A checkpoint is a folder with ``checkpoint.safetensors`` (model weights, best weights, optimizer
tensors, RNG state) and ``checkpoint.json`` (epoch, history, optimizer scalars, config).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from kgweave import atomic
from kgweave.errors import ArtifactError

_TENSORS = "checkpoint.safetensors"
_STATE = "checkpoint.json"


@dataclass
class CheckpointState:
    """What a resumed run needs besides tensors."""

    epoch: int
    history: list[dict[str, Any]]
    best_mrr: float
    bad_evals: int
    config: dict[str, Any]
    elapsed_s: float
    #: the learning-rate schedule's state and the validation sample's size
    extra: dict[str, Any] = field(default_factory=dict)


def flatten_optimizer(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split ``optimizer.state_dict()`` into named tensors and a JSON-able rest."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {"param_groups": state["param_groups"], "state": {}}
    for index, entry in state["state"].items():
        plain: dict[str, Any] = {}
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{index}.{key}"] = value.detach().cpu().contiguous()
            else:
                plain[key] = value
        scalars["state"][str(index)] = plain
    return tensors, scalars


def unflatten_optimizer(
    tensors: dict[str, torch.Tensor], scalars: dict[str, Any]
) -> dict[str, Any]:
    """Inverse of :func:`flatten_optimizer`."""
    state: dict[int, dict[str, Any]] = {int(k): dict(v) for k, v in scalars["state"].items()}
    for name, value in tensors.items():
        if name.startswith("optim."):
            _, index, key = name.split(".", 2)
            state.setdefault(int(index), {})[key] = value
    return {"state": state, "param_groups": scalars["param_groups"]}


def save_checkpoint(
    folder: Path,
    model: torch.nn.Module,
    best_state: dict[str, torch.Tensor] | None,
    optimizer: torch.optim.Optimizer,
    state: CheckpointState,
) -> None:
    """Write a checkpoint atomically (temp files, then rename)."""
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if best_state is not None:
        tensors.update({f"best.{k}": v.detach().cpu().contiguous() for k, v in best_state.items()})
    opt_tensors, opt_scalars = flatten_optimizer(optimizer.state_dict())
    tensors.update(opt_tensors)
    tensors["rng.cpu"] = torch.get_rng_state()
    with atomic.atomic_path(folder / _TENSORS) as tmp:
        save_file(tensors, str(tmp))
    payload = {
        "epoch": state.epoch,
        "history": state.history,
        "best_mrr": state.best_mrr,
        "bad_evals": state.bad_evals,
        "config": state.config,
        "elapsed_s": state.elapsed_s,
        "extra": state.extra,
        "optimizer": opt_scalars,
    }
    atomic.write_text(folder / _STATE, json.dumps(payload, indent=1))


def load_checkpoint(
    folder: Path,
) -> tuple[
    dict[str, torch.Tensor],
    dict[str, torch.Tensor] | None,
    dict[str, Any],
    torch.Tensor,
    CheckpointState,
]:
    """Read a checkpoint: (model state, best state, optimizer state, rng state, state)."""
    try:
        tensors = load_file(str(folder / _TENSORS))
        payload = json.loads((folder / _STATE).read_text())
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"cannot resume from {folder}: unreadable checkpoint ({exc})") from exc
    model_state = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
    best = {k[5:]: v for k, v in tensors.items() if k.startswith("best.")} or None
    optimizer = unflatten_optimizer(tensors, payload["optimizer"])
    state = CheckpointState(
        epoch=payload["epoch"],
        history=payload["history"],
        best_mrr=payload["best_mrr"],
        bad_evals=payload["bad_evals"],
        config=payload["config"],
        elapsed_s=payload.get("elapsed_s", 0.0),
        extra=payload.get("extra", {}),
    )
    return model_state, best, optimizer, tensors["rng.cpu"], state
