"""What the Cypher backends share (FalkorDB, Neo4j): the mapping's names quoted once, batching,
and the entity and triple writes, written once over a runner each backend provides.

A backend implements :meth:`CypherStore.rows` (one write statement, values as parameters, rows
of values back) and whatever its dialect does differently (indexes, vectors, paging).
"""

from __future__ import annotations

from abc import abstractmethod
from collections import defaultdict
from collections.abc import Collection, Iterable, Iterator
from typing import Any

from kgweave.errors import InvalidArgumentError
from kgweave.graph.store import (
    Census,
    EntityRow,
    GraphMapping,
    GraphStore,
    PredictedLink,
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

    @abstractmethod
    def read_rows(self, cypher: str, params: dict[str, Any] | None = None) -> list[list[Any]]:
        """Run one read statement; its rows, as :meth:`rows`."""

    @abstractmethod
    def _delete_predicted(self) -> None:
        """Delete every predicted link (in bounded transactions where the database needs it)."""

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

    def existing_triples(self, triples: Iterable[Triple]) -> set[Triple]:
        found: set[Triple] = set()
        for batch in self._batches(triples):
            for rel_type, rows in self._by_type(batch).items():
                match, where = self._edge(rel_type)
                found.update(
                    (str(h), str(r), str(t))
                    for h, r, t in self.read_rows(
                        f"UNWIND $rows AS row "
                        f"MATCH (h:{self._label} {{{self._key}: row.h}}){match}"
                        f"(t:{self._label} {{{self._key}: row.t}}) {where}"
                        f"RETURN DISTINCT row.h, row.r, row.t",
                        {"rows": rows},
                    )
                )
        return found

    def _edge(self, rel_type: str | None) -> tuple[str, str]:
        """The pattern of a relationship ``x`` of ``rel_type`` (else the generic type) and the
        WHERE clause that picks the row's relation."""
        if rel_type:
            return f"-[x:{checked_identifier(rel_type, 'relationship type')}]->", ""
        return f"-[x:{self._generic}]->", f"WHERE x.{self._relation} = row.r "

    def remove_triples(self, triples: Iterable[Triple]) -> int:
        removed = 0
        for batch in self._batches(triples):
            for rel_type, rows in self._by_type(batch).items():
                match, where = self._edge(rel_type)
                result = self.rows(
                    f"UNWIND $rows AS row "
                    f"MATCH (h:{self._label} {{{self._key}: row.h}}){match}"
                    f"(t:{self._label} {{{self._key}: row.t}}) {where}"
                    f"DELETE x RETURN count(x) AS removed",
                    {"rows": rows},
                )
                removed += int(result[0][0]) if result else 0
        return removed

    # ---- kgweave's own links: predicted (replaced per version) and suggested (merged)
    def write_predicted_links(
        self, links: list[PredictedLink], model_version: str, provenance: str
    ) -> int:
        self._delete_predicted()
        return self._write_links(links, self._predicted, model_version, provenance, merge=False)

    def add_suggested_links(
        self, links: list[PredictedLink], model_version: str, provenance: str
    ) -> int:
        suggested = checked_identifier(self.mapping.suggested_type, "suggested-link type")
        return self._write_links(links, suggested, model_version, provenance, merge=True)

    def _write_links(
        self,
        links: list[PredictedLink],
        link_type: str,
        model_version: str,
        provenance: str,
        merge: bool,
    ) -> int:
        """Links of ``link_type`` (quoted) between existing entities: created anew, or merged
        by (head, relation, tail) with their score, version and provenance refreshed."""
        make = (
            f"MERGE (h)-[x:{link_type} {{relation: row.r}}]->(t) "
            "SET x.score = row.s, x.model_version = $version, x.provenance = $provenance"
            if merge
            else f"CREATE (h)-[:{link_type} {{relation: row.r, score: row.s, "
            "model_version: $version, provenance: $provenance}]->(t)"
        )
        written = 0
        for batch in self._batches(links):
            rows = [{"h": p.head, "r": p.relation, "t": p.tail, "s": float(p.score)} for p in batch]
            self.rows(
                f"UNWIND $rows AS row "
                f"MATCH (h:{self._label} {{{self._key}: row.h}}) "
                f"MATCH (t:{self._label} {{{self._key}: row.t}}) " + make,
                {"rows": rows, "version": model_version, "provenance": provenance},
            )
            written += len(rows)
        return written

    def predicted_links(self) -> list[tuple[str, str, str, float, str]]:
        """Every predicted link: (head, relation, tail, score, model_version)."""
        return self._links(self._predicted)

    def suggested_links(self) -> list[tuple[str, str, str, float, str]]:
        """Every suggested link: (head, relation, tail, score, model_version)."""
        return self._links(checked_identifier(self.mapping.suggested_type, "suggested-link type"))

    def _links(self, link_type: str) -> list[tuple[str, str, str, float, str]]:
        rows = self.read_rows(
            f"MATCH (h:{self._label})-[x:{link_type}]->(t:{self._label}) "
            f"RETURN h.{self._key} AS h, x.relation AS r, t.{self._key} AS t, "
            "x.score AS s, x.model_version AS v ORDER BY h, r, t"
        )
        return [(str(h), str(r), str(t), float(s), str(v)) for h, r, t, s, v in rows]

    # ---- reads
    def census(self) -> Census:
        condition, params = self._type_filter()
        ((entities,),) = self.read_rows(f"MATCH (e:{self._label}) RETURN count(e) AS n")
        rows = self.read_rows(
            f"MATCH (:{self._label})-[x]->(:{self._label}) WHERE {condition} "
            f"RETURN coalesce(x.{self._relation}, type(x)) AS r, count(x) AS n",
            params,
        )
        return Census(int(entities), {str(r): int(n) for r, n in rows})

    def _type_filter(self, relations: Collection[str] | None = None) -> tuple[str, dict[str, Any]]:
        """The WHERE condition on relationship ``x`` that keeps facts (not kgweave's links), of
        ``relations`` only when given."""
        m = self.mapping
        if m.relation_types is None:
            condition, params = "NOT type(x) IN $own", {"own": self.own_types}
        else:
            condition, params = "type(x) IN $types", {"types": [*m.relation_types, m.generic_type]}
        if relations is not None:
            condition += f" AND coalesce(x.{self._relation}, type(x)) IN $relations"
            params["relations"] = sorted(relations)
        return condition, params
