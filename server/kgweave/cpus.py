"""CPU lists as Linux writes them (``"0-3,6"``): read, checked against the CPUs this process
may run on, and written back."""

from __future__ import annotations

import os

from kgweave.errors import InvalidArgumentError, echo


def parse_cpus(text: str, name: str = "background_cpus") -> frozenset[int]:
    """A Linux CPU list (``"0-3,6"``) as a set of CPU numbers; ``""``: the empty set.

    InvalidArgumentError for anything else, or for CPUs this process may not run on; its
    message names the list ``name`` (the setting or option it came from)."""
    cpus: set[int] = set()
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        low, _, high = part.partition("-")
        try:
            first, last = int(low), int(high or low)
        except ValueError:
            raise InvalidArgumentError(
                f"{name} {echo(text)}: expected a CPU list such as '1' or '2-3,6'"
            ) from None
        if first < 0 or last < first:
            raise InvalidArgumentError(f"{name} {echo(text)}: {echo(part)} is no CPU range")
        cpus.update(range(first, last + 1))
    allowed = _allowed()
    if cpus and allowed is not None and not cpus <= allowed:
        missing = ",".join(str(c) for c in sorted(cpus - allowed))
        raise InvalidArgumentError(
            f"{name} {echo(text)}: CPU {missing} is not one this process may run on "
            f"({format_cpus(allowed)})"
        )
    return frozenset(cpus)


def format_cpus(cpus: frozenset[int] | set[int]) -> str:
    """``{0, 1, 2, 5}`` as ``"0-2,5"``."""
    ranges: list[str] = []
    for cpu in sorted(cpus):
        if ranges and cpu == int(ranges[-1].rpartition("-")[2]) + 1:
            ranges[-1] = f"{ranges[-1].partition('-')[0]}-{cpu}"
        else:
            ranges.append(str(cpu))
    return ",".join(ranges)


def _allowed() -> frozenset[int] | None:
    getter = getattr(os, "sched_getaffinity", None)
    return frozenset(getter(0)) if getter is not None else None
