// kgweave change capture for Neo4j 5 Community (and Enterprise without CDC): an APOC trigger
// that posts every committed transaction's created and deleted entities and facts to kgweave.
//
// Run against the SYSTEM database (APOC 5: "the apoc.trigger.* procedures are intended to be
// executed in the system database"), as an admin user, with apoc.trigger.enabled=true in
// apoc.conf. See README.md next to this file. Placeholders: KGWEAVE_URL (kgweave's HTTP base
// URL, e.g. https://kgweave.internal:8080), KGWEAVE_TOKEN (its admin token; empty when kgweave
// runs without auth) and the database name 'neo4j'. The labels, keys and types follow kgweave's default
// mapping: (:Entity {id, name, description}), [:RELATED {relation}] for relation names that are
// not identifiers, kgweave's own [:KGWEAVE_PREDICTED] and [:KGWEAVE_SUGGESTED] links left out.
//
// Signature (APOC 5 reference, apoc.trigger.install):
//   apoc.trigger.install(databaseName, name, statement, selector, config)
// HTTP (APOC 5 reference, apoc.load.jsonParams): apoc.load.jsonParams(url, headers, payload)
// sends `payload` as the request body (chunked: Transfer-Encoding: chunked, no Content-Length);
// the `method` header picks POST.
//
// Run against a real Neo4j 5.26 with APOC Core 5.26 (tests/test_neo4j_real.py): afterAsync
// statements run later, in their own transaction, so what they read from the database is the
// state at that time, not the transaction's. Deleted nodes have no labels or properties left,
// and a node or relationship deleted by a later transaction reads as empty. So the events are
// built from what APOC captured at commit: $assignedLabels / $assignedNodeProperties for
// created entities, $removedLabels / $removedNodeProperties for deleted ones,
// $assigned/$removedRelationshipProperties for the `relation` property; only the endpoints of
// relationships between pre-existing entities are read from the database.
CALL apoc.trigger.install(
  'neo4j',
  'kgweave',
  'WITH
     coalesce($assignedLabels.Entity, []) AS labelled, coalesce($removedLabels.Entity, []) AS unlabelled,
     coalesce($assignedNodeProperties.id, []) AS newIds, coalesce($removedNodeProperties.id, []) AS oldIds
   WITH labelled, unlabelled, newIds, oldIds,
     [p IN newIds WHERE p.node IN $createdNodes AND p.node IN labelled AND p.new IS NOT NULL |
       {kind: "entity_upserted", entity: toString(p.new),
        properties: {
          name: head([q IN coalesce($assignedNodeProperties.name, []) WHERE q.node = p.node | q.new]),
          description: head([q IN coalesce($assignedNodeProperties.description, []) WHERE q.node = p.node | q.new])}}] AS upserted,
     [p IN oldIds WHERE p.node IN $deletedNodes AND p.node IN unlabelled AND p.old IS NOT NULL |
       {kind: "entity_deleted", entity: toString(p.old)}] AS deleted,
     [r IN $createdRelationships
       WHERE NOT type(r) IN ["KGWEAVE_PREDICTED", "KGWEAVE_SUGGESTED"]
         AND (startNode(r) IN labelled OR startNode(r):Entity) AND (endNode(r) IN labelled OR endNode(r):Entity) |
       {kind: "triple_added",
        head: toString(coalesce(head([p IN newIds WHERE p.node = startNode(r) | p.new]), startNode(r).id)),
        relation: coalesce(head([p IN coalesce($assignedRelationshipProperties.relation, []) WHERE p.relationship = r | p.new]), type(r)),
        tail: toString(coalesce(head([p IN newIds WHERE p.node = endNode(r) | p.new]), endNode(r).id))}] AS added,
     [r IN $deletedRelationships
       WHERE NOT type(r) IN ["KGWEAVE_PREDICTED", "KGWEAVE_SUGGESTED"]
         AND (startNode(r) IN unlabelled OR startNode(r):Entity) AND (endNode(r) IN unlabelled OR endNode(r):Entity) |
       {kind: "triple_removed",
        head: toString(coalesce(head([p IN oldIds WHERE p.node = startNode(r) | p.old]), startNode(r).id)),
        relation: coalesce(head([p IN coalesce($removedRelationshipProperties.relation, []) WHERE p.relationship = r | p.old]), type(r)),
        tail: toString(coalesce(head([p IN oldIds WHERE p.node = endNode(r) | p.old]), endNode(r).id))}] AS removed
   WITH [e IN upserted + deleted + added + removed WHERE e.entity IS NOT NULL OR (e.head IS NOT NULL AND e.tail IS NOT NULL)] AS events
   WHERE size(events) > 0
   CALL apoc.load.jsonParams(
     "KGWEAVE_URL/v1/changes",
     {method: "POST", `Content-Type`: "application/json", Authorization: "Bearer KGWEAVE_TOKEN"},
     apoc.convert.toJson({source: "neo4j-apoc", events: events})
   ) YIELD value
   RETURN value',
  {phase: 'afterAsync'},
  {}
);
