"""Request arguments: their defaults and limits, defined and checked here once.

Every face (gRPC, HTTP/JSON, the Cypher plugin through gRPC, the CLI) hands the data plane
what the user gave, with ``None`` (or protobuf's 0) for "not given"; the plane calls these
helpers, so a default or a limit is written in exactly one place.
"""

from __future__ import annotations

from kgweave.errors import InvalidArgumentError

#: answers per link-prediction query, completion candidates, search hits: default and limit
DEFAULT_K = 10
MAX_K = 1000
#: completion: answers (at most 100) and the KGE candidates re-ranked
MAX_COMPLETE_K = 100
DEFAULT_KGE_CANDIDATES = 50
#: facts listed with an entity
DEFAULT_MAX_FACTS = 20
MAX_FACTS = 1000
#: characters of an entity's verbalization
DEFAULT_MAX_CHARS = 600
MAX_CHARS = 100_000
#: items in one call
MAX_QUERIES = 1000
MAX_TRIPLES = 10_000


def bounded(name: str, value: int | None, default: int, low: int, high: int) -> int:
    """``value`` (``default`` when None or 0) if ``low <= value <= high``; else
    InvalidArgumentError naming the argument and its range."""
    if not value:
        value = default
    if not low <= value <= high:
        raise InvalidArgumentError(f"{name} must be between {low} and {high}, got {value}")
    return value


def top_k(k: int | None) -> int:
    """Answers per query: 1..MAX_K, default DEFAULT_K."""
    return bounded("k", k, DEFAULT_K, 1, MAX_K)


def limit(value: int | None) -> int:
    """Hits of a search: 1..MAX_K, default DEFAULT_K."""
    return bounded("limit", value, DEFAULT_K, 1, MAX_K)


def count(one: str, many: str, items: int, maximum: int) -> None:
    """At least one and at most ``maximum`` items (``one`` query, ``many`` queries) in one
    call."""
    if items == 0:
        raise InvalidArgumentError(f"give at least one {one}")
    if items > maximum:
        raise InvalidArgumentError(f"at most {maximum} {many} per call, got {items}")
