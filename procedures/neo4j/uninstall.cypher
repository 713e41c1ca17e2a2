// Remove kgweave's trigger (run against the system database, as an admin user).
// Signature (APOC 5 reference): apoc.trigger.drop(databaseName, name)
CALL apoc.trigger.drop('neo4j', 'kgweave');
