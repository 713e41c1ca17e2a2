"""Scoring models behind a registry: name to class."""

from __future__ import annotations

from typing import Any

from kgweave.errors import InvalidArgumentError, echo
from kgweave.models.base import KGEModel
from kgweave.models.complex import ComplEx
from kgweave.models.distmult import DistMult
from kgweave.models.rotate import RotatE
from kgweave.models.transe import TransE

MODELS: dict[str, type[KGEModel]] = {cls.name: cls for cls in (TransE, DistMult, ComplEx, RotatE)}


def model_class(name: str) -> type[KGEModel]:
    """The model class registered under ``name`` (case-insensitive)."""
    try:
        return MODELS[name.lower()]
    except KeyError:
        raise InvalidArgumentError(
            f"unknown model {echo(name)}: choose one of {', '.join(sorted(MODELS))}"
        ) from None


def build_model(config: dict[str, Any]) -> KGEModel:
    """Rebuild a model from :meth:`KGEModel.config` output."""
    options = dict(config)
    cls = model_class(str(options.pop("name")))
    return cls(**options)


__all__ = [
    "MODELS",
    "ComplEx",
    "DistMult",
    "KGEModel",
    "RotatE",
    "TransE",
    "build_model",
    "model_class",
]
