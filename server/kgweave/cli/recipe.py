"""Where ``kgweave train``'s settings come from: the flags given, over a recipe (a file from
``kgweave tune``, the graph's own recipe when none is given, or ``defaults``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kgweave.errors import InvalidArgumentError, echo

if TYPE_CHECKING:
    from kgweave.data import KGDataset
    from kgweave.training import TrainConfig

#: ``--recipe`` values that are not files
AUTO, DEFAULTS = "auto", "defaults"


def train_config(values: dict[str, Any], source: str = "") -> TrainConfig:
    """A TrainConfig from flag values; a bad one is a one-line error naming its flag (and
    ``source``, the recipe file, when the value came from there)."""
    from pydantic import ValidationError

    from kgweave.training import TrainConfig

    try:
        return TrainConfig(**values)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "settings"
        message = str(first["msg"]).removeprefix("Value error, ")
        flag = f"--{where.replace('_', '-')}"
        raise InvalidArgumentError(
            f"{flag}: {message}" + (f" (in {source})" if source else "")
        ) from None


def read_recipe(path: Path) -> dict[str, Any]:
    """A recipe file's TrainConfig fields (a JSON object, as ``kgweave tune`` writes)."""
    try:
        recipe = json.loads(path.read_text())
    except FileNotFoundError:
        raise InvalidArgumentError(f"--recipe: no file {echo(str(path))}") from None
    except (OSError, ValueError) as exc:
        raise InvalidArgumentError(f"--recipe: {echo(str(path))} is not JSON ({exc})") from None
    if not isinstance(recipe, dict):
        raise InvalidArgumentError(f"--recipe: {echo(str(path))} is not a JSON object")
    return recipe


def settings_for(
    recipe: str | None, flags: dict[str, Any], dataset: KGDataset
) -> tuple[TrainConfig, dict[str, Any]]:
    """The training settings: ``flags`` over the recipe. Returns them and the recipe's record
    for the artifact (name, reason, the graph's statistics when chosen from them)."""
    from kgweave.tuning.recipes import recipe_for

    if recipe is None or recipe == AUTO:
        chosen = recipe_for(dataset.train, dataset.num_entities, dataset.num_relations)
        record, base, source = chosen.to_dict(), chosen.settings, ""
    elif recipe == DEFAULTS:
        record, base, source = {"name": DEFAULTS, "reason": "TrainConfig's defaults"}, {}, ""
    else:
        base = read_recipe(Path(recipe))
        source = recipe
        record = {"name": f"file {Path(recipe).name}", "reason": f"--recipe {recipe}"}
    config = train_config({**base, **flags}, source)
    overridden = sorted(k for k in flags if k in base and base[k] != flags[k])
    if overridden:
        record["overridden_by_flags"] = overridden
    return config, record


def describe(record: dict[str, Any]) -> str:
    """For the terminal: which recipe, and why; then, when it was chosen from the graph's
    statistics, those statistics (size, density, relation patterns) on a second line."""
    from kgweave.tuning.recipes import GraphStatistics

    line = f"recipe {record['name']}: {record['reason']}"
    if record.get("settings"):
        line += " (" + ", ".join(f"{k}={v}" for k, v in record["settings"].items()) + ")"
    if record.get("overridden_by_flags"):
        line += "; flags override " + ", ".join(record["overridden_by_flags"])
    if record.get("statistics"):
        line += "\n" + GraphStatistics(**record["statistics"]).describe()
    return line


def job_settings(recipe: dict[str, Any]) -> dict[str, Any]:
    """The part of a recipe a server job takes (``--remote``): its job fields that are set
    (local-only ones such as ``num_threads`` stay here; the server's defaults stand for them)."""
    from kgweave.training.config import JOB_FIELDS

    return {k: v for k, v in recipe.items() if k in JOB_FIELDS and v is not None}
