"""The activation policy: whether a newly registered version replaces the served one.

Pure: it reads the two versions' configs and decides; the service applies the answer. The
policy names are defined here once (settings, CLI and proto converters refer to them).

Under ``if_better`` two guards come first. A version that would lose the active joint model's
language side (``kgweave complete``, text fusion) is not activated. A version judged on the
graph's fixed validation set (:mod:`kgweave.serving.validation`; ``config.fixed_valid``) is
activated unless its MRR there falls more than ``tolerance`` below the active version's on the
same facts: an incremental update measures both in one run (``base_mrr``, and the standard
error of the difference over the same queries: the drop must also exceed ``noise_z`` of them,
so that on a small fixed set one query's rank moving is not taken for a regression; and the
same margin below the fixed-set MRR of the full training its chain of updates descends from,
its ``anchor``, so drift cannot add up over updates; a refinement, which trains the version on
further, must beat it), a full retrain on the graph holds those facts out as its validation
split. Otherwise ``if_better`` compares
validation MRRs only when they were measured alike: the same data (the
dataset's or graph snapshot's fingerprint, which also fixes the filter of the filtered ranking)
and the same validation triples (``dataset.valid_fingerprint``, recorded since artifact format
2). Otherwise it refuses to compare, and the version stays registered, not activated, with the
reason; activate it by hand (``kgweave models activate VERSION``) or train with ``always``.
"""

from __future__ import annotations

import math
from typing import Any, Final, Protocol

from kgweave.errors import echo


class ModelVersion(Protocol):
    """What the policy reads of a registered version
    (:class:`kgweave.serving.registry.ModelVersion`)."""

    @property
    def version(self) -> str: ...

    @property
    def config(self) -> dict[str, Any]: ...

    @property
    def valid_mrr(self) -> float | None: ...


IF_BETTER: Final = "if_better"
ALWAYS: Final = "always"
NEVER: Final = "never"
#: every activation policy, the default first
POLICIES: Final = (IF_BETTER, ALWAYS, NEVER)


def decide(
    policy: str,
    new: ModelVersion,
    active: ModelVersion | None,
    tolerance: float = 0.01,
    noise_z: float = 2.0,
) -> tuple[bool, str]:
    """(activate?, the reason, one line) for ``new`` under ``policy``, ``active`` being the
    version served now (None when none is); ``tolerance``: the most MRR on the fixed
    validation set may drop; ``noise_z``: standard errors of the drop (where measured) it must
    exceed too.

    Raises:
        ValueError: ``policy`` is not one of :data:`POLICIES` (callers validate it first).
    """
    if policy not in POLICIES:
        raise ValueError(f"activation policy {echo(policy)}: use one of {', '.join(POLICIES)}")
    if policy == NEVER:
        return False, "registered; activation policy is never"
    if policy == ALWAYS:
        return True, "activated (policy always)"
    if active is None:
        return True, "activated: no model was active"
    if "joint" in active.config and "joint" not in new.config:
        return False, (
            f"not activated: {active.version} is a joint model and {new.version} has no "
            "language side (kgweave complete and text fusion would stop working)"
        )
    judged = _on_fixed_set(new, active, tolerance, noise_z)
    if judged is not None:
        return judged
    return _if_better(new, active)


def fixed_mrr(config: dict[str, Any]) -> float | None:
    """A version's MRR on the fixed validation set (None when it was not measured there)."""
    fixed = config.get("fixed_valid")
    if not isinstance(fixed, dict):
        return None
    value = fixed.get("mrr")
    if value is None:  # a full retrain: its validation split is the fixed set
        value = config.get("metrics", {}).get("valid", {}).get("mrr")
    return float(value) if isinstance(value, int | float) else None


def _on_fixed_set(
    new: ModelVersion, active: ModelVersion, tolerance: float, noise_z: float
) -> tuple[bool, str] | None:
    """The fixed-validation-set judgement of ``new`` against ``active``; None when the two
    were not measured on the same fixed set."""
    fixed = new.config.get("fixed_valid")
    if not isinstance(fixed, dict):
        return None
    new_mrr = fixed_mrr(new.config)
    allowed, why = tolerance, f"tolerance {tolerance:g}"
    if fixed.get("base_version") == active.version:  # measured in the same run
        old_mrr = fixed.get("base_mrr")
        old_mrr = float(old_mrr) if isinstance(old_mrr, int | float) else None
        se = fixed.get("difference_se")
        if isinstance(se, int | float) and math.isfinite(se) and noise_z * se > tolerance:
            allowed = noise_z * se
            why += f", noise {allowed:.4f} on {fixed.get('triples')} facts"
    else:
        theirs = active.config.get("fixed_valid")
        if not isinstance(theirs, dict) or theirs.get("fingerprint") != fixed.get("fingerprint"):
            return None
        old_mrr = fixed_mrr(active.config)
    if new_mrr is None or old_mrr is None:
        return True, "activated: no fixed validation facts to judge it on yet"
    if not (math.isfinite(new_mrr) and 0.0 <= new_mrr <= 1.0):
        return False, f"not activated: fixed-set MRR {new_mrr} is not a valid MRR"
    short = _falls_short(fixed, new_mrr, (active.version, old_mrr), allowed, why)
    if short:
        return False, short
    return True, (
        f"activated: MRR on the fixed validation set {new_mrr:.4f} vs {active.version}'s "
        f"{old_mrr:.4f} ({why})"
    )


def _falls_short(
    fixed: dict[str, Any], mrr: float, active: tuple[str, float], allowed: float, why: str
) -> str:
    """Why a version's fixed-set MRR ``mrr`` (its ``fixed_valid``: ``fixed``) is not good
    enough against the ``active`` version's (name, MRR) and its chain's anchor, less the
    margin ``allowed`` (``why`` says what makes it up); "" when it is."""
    version, old = active
    if fixed.get("improve_only") and not mrr > old:  # a refinement: a gain or nothing
        return (
            f"not activated: a refinement, MRR on the fixed validation set {mrr:.4f} does "
            f"not beat {version}'s {old:.4f}"
        )
    for ref, ref_mrr, what in _references(fixed, version, old):
        if mrr < ref_mrr - allowed:
            return (
                f"not activated: MRR on the fixed validation set {mrr:.4f} is "
                f"{ref_mrr - mrr:.4f} below {ref}'s {ref_mrr:.4f}{what} ({why})"
            )
    return ""


def _references(fixed: dict[str, Any], active: str, mrr: float) -> list[tuple[str, float, str]]:
    """What a version's fixed-set MRR may not fall below (less the margin): the active
    version's, and for an update whose chain of updates descends from another full training
    (its anchor), that one's too, so drift cannot add up over updates."""
    refs = [(active, mrr, "")]
    anchor, anchor_mrr = fixed.get("anchor_version"), fixed.get("anchor_mrr")
    if anchor not in (None, active) and isinstance(anchor_mrr, int | float):
        what = ", the full training its updates descend from; a full retrain starts over"
        refs.append((str(anchor), float(anchor_mrr), what))
    return refs


def _if_better(new: ModelVersion, active: ModelVersion) -> tuple[bool, str]:
    unlike = _unlike(new, active)
    if unlike:
        return False, (
            f"not activated: validation MRRs are not comparable, {unlike} "
            f"(activate it by hand: kgweave models activate {new.version})"
        )
    old_mrr, new_mrr = active.valid_mrr, new.valid_mrr
    if new_mrr is None or old_mrr is None:
        return False, "not activated: validation MRR missing for a comparison"
    if not (math.isfinite(new_mrr) and 0.0 <= new_mrr <= 1.0):
        return False, f"not activated: validation MRR {new_mrr} is not a valid MRR"
    if new_mrr > old_mrr:
        return True, f"activated: validation MRR {new_mrr:.4f} beats {old_mrr:.4f}"
    return False, f"not activated: validation MRR {new_mrr:.4f} does not beat {old_mrr:.4f}"


def _unlike(new: ModelVersion, active: ModelVersion) -> str:
    """Why the two versions' validation metrics cannot be compared ("" when they can)."""
    a, b = _data(active.config), _data(new.config)
    if a["fingerprint"] is None or b["fingerprint"] is None:
        return "a version records no data fingerprint"
    if a["fingerprint"] != b["fingerprint"]:
        return (
            f"{new.version} was trained on other data ({b['name']}, {_short(b['fingerprint'])}) "
            f"than {active.version} ({a['name']}, {_short(a['fingerprint'])})"
        )
    for version, data in ((active.version, a), (new.version, b)):
        if data["valid_fingerprint"] is None:
            return (
                f"{version} records no validation fingerprint (artifact format 1: retrain it "
                "to compare)"
            )
    if a["valid_fingerprint"] != b["valid_fingerprint"]:
        return (
            f"{new.version} was validated on other triples ({b['valid_triples']}, "
            f"{_short(b['valid_fingerprint'])}) than {active.version} ({a['valid_triples']}, "
            f"{_short(a['valid_fingerprint'])})"
        )
    return ""


def _data(config: dict[str, Any]) -> dict[str, Any]:
    dataset = config.get("dataset")
    dataset = dataset if isinstance(dataset, dict) else {}
    keys = ("name", "fingerprint", "valid_fingerprint", "valid_triples")
    return {k: dataset.get(k) for k in keys}


def _short(fingerprint: object) -> str:
    return f"sha256 {str(fingerprint)[:12]}"
