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
// sends `payload` as the request body; the `method` header picks POST.
CALL apoc.trigger.install(
  'neo4j',
  'kgweave',
  'WITH
     [n IN $createdNodes WHERE n:Entity AND n.id IS NOT NULL |
       {kind: "entity_upserted", entity: toString(n.id),
        properties: {name: n.name, description: n.description}}] AS upserted,
     [n IN $deletedNodes WHERE n:Entity AND n.id IS NOT NULL |
       {kind: "entity_deleted", entity: toString(n.id)}] AS deleted,
     [r IN $createdRelationships
       WHERE NOT type(r) IN ["KGWEAVE_PREDICTED", "KGWEAVE_SUGGESTED"] AND startNode(r):Entity AND endNode(r):Entity |
       {kind: "triple_added", head: toString(startNode(r).id),
        relation: coalesce(r.relation, type(r)), tail: toString(endNode(r).id)}] AS added,
     [r IN $deletedRelationships
       WHERE NOT type(r) IN ["KGWEAVE_PREDICTED", "KGWEAVE_SUGGESTED"] AND startNode(r):Entity AND endNode(r):Entity |
       {kind: "triple_removed", head: toString(startNode(r).id),
        relation: coalesce(r.relation, type(r)), tail: toString(endNode(r).id)}] AS removed
   WITH upserted + deleted + added + removed AS events
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
