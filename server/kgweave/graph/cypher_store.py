"""What the Cypher backends share (FalkorDB, Neo4j): the mapping's names quoted once, batching,
and the entity and triple writes, written once over a runner each backend provides.

A backend implements :meth:`CypherStore.rows` (one write statement, values as parameters, rows
of values back) and whatever its dialect does differently (indexes, vectors, paging).
"""

from __future__ import annotations

from abc import abstractmethod
from collections import defaultdict
from collections.abc import Iterable, Iterator
from typing import Any

from kgweave.errors import InvalidArgumentError
from kgweave.graph.store import (
    EntityRow,
    GraphMapping,
    GraphStore,
    Triple,
    checked_identifier,
)


class CypherStore(GraphStore):
    """A :class:`GraphStore` spoken to in Cypher."""

    def __init__(self, mapping: GraphMapping | None, batch_size: int) -> None:
        if batch_size < 1:
            raise InvalidArgumentError("batch size must be at least 1")
        self.mapping = mapping or GraphMapping()
        self.batch_size = batch_size
        m = self.mapping
        # names put into query text, validated once (values always travel as parameters)
        self._label = checked_identifier(m.entity_label, "entity label")
        self._key = checked_identifier(m.key_property, "key property")
        self._name = checked_identifier(m.name_property, "name property")
        self._description = checked_identifier(m.description_property, "description property")
        self._generic = checked_identifier(m.generic_type, "generic relationship type")
        self._relation = checked_identifier(m.relation_property, "relation property")
        self._predicted = checked_identifier(m.predicted_type, "predicted-link type")

    @abstractmethod
    def rows(self, cypher: str, params: dict[str, Any] | None = None) -> list[list[Any]]:
        """Run one write statement; its rows, each a list of the returned values in order."""

    def execute(self, cypher: str, params: dict[str, Any] | None = None) -> None:
        self.rows(cypher, params)

    def _batches(self, rows: Iterable[Any]) -> Iterator[list[Any]]:
        batch: list[Any] = []
        for row in rows:
            batch.append(row)
            if len(batch) >= self.batch_size:
                yield batch
                batch = []
        if batch:
            yield batch

    # ---- writes
    def upsert_entities(self, rows: Iterable[EntityRow]) -> int:
        cypher = (
            f"UNWIND $rows AS row MERGE (e:{self._label} {{{self._key}: row.id}}) "
            f"SET e.{self._name} = coalesce(row.name, e.{self._name}), "
            f"e.{self._description} = coalesce(row.description, e.{self._description})"
        )
        written = 0
        for batch in self._batches(rows):
            payload = [{"id": r.id, "name": r.name, "description": r.description} for r in batch]
            self.rows(cypher, {"rows": payload})
            written += len(batch)
        return written

    def _by_type(self, triples: Iterable[Triple]) -> dict[str | None, list[dict[str, str]]]:
        groups: dict[str | None, list[dict[str, str]]] = defaultdict(list)
        for h, r, t in triples:
            groups[self.mapping.storage_type(r)].append({"h": h, "r": r, "t": t})
        return groups

    def add_triples(self, triples: Iterable[Triple]) -> int:
        added = 0
        for batch in self._batches(triples):
            # nodes first (one MERGE per distinct entity), then edges between matched nodes
            entities = sorted({h for h, _, _ in batch} | {t for _, _, t in batch})
            self.rows(
                f"UNWIND $ids AS id MERGE (:{self._label} {{{self._key}: id}})", {"ids": entities}
            )
            for rel_type, rows in self._by_type(batch).items():
                rel = (
                    f"[:{checked_identifier(rel_type, 'relationship type')}]"
                    if rel_type
                    else f"[:{self._generic} {{{self._relation}: row.r}}]"
                )
                self.rows(
                    f"UNWIND $rows AS row "
                    f"MATCH (h:{self._label} {{{self._key}: row.h}}) "
                    f"MATCH (t:{self._label} {{{self._key}: row.t}}) "
                    f"MERGE (h)-{rel}->(t)",
                    {"rows": rows},
                )
                added += len(rows)
        return added

    def remove_triples(self, triples: Iterable[Triple]) -> int:
        removed = 0
        for batch in self._batches(triples):
            for rel_type, rows in self._by_type(batch).items():
                if rel_type:
                    match = f"-[x:{checked_identifier(rel_type, 'relationship type')}]->"
                    where = ""
                else:
                    match = f"-[x:{self._generic}]->"
                    where = f"WHERE x.{self._relation} = row.r "
                result = self.rows(
                    f"UNWIND $rows AS row "
                    f"MATCH (h:{self._label} {{{self._key}: row.h}}){match}"
                    f"(t:{self._label} {{{self._key}: row.t}}) {where}"
                    f"DELETE x RETURN count(x) AS removed",
                    {"rows": rows},
                )
                removed += int(result[0][0]) if result else 0
        return removed

    # ---- reads
    def _type_filter(self) -> tuple[str, dict[str, Any]]:
        """The WHERE condition on relationship ``x`` that keeps facts (not kgweave's links)."""
        m = self.mapping
        if m.relation_types is None:
            return "NOT type(x) IN $own", {"own": self.own_types}
        return "type(x) IN $types", {"types": [*m.relation_types, m.generic_type]}
