package io.kgweave.neo4j;

import java.util.HashMap;
import java.util.List;
import java.util.Map;
import org.neo4j.configuration.Config;
import org.neo4j.graphdb.Label;
import org.neo4j.graphdb.Node;
import org.neo4j.graphdb.Relationship;
import org.neo4j.graphdb.ResourceIterator;
import org.neo4j.graphdb.Transaction;
import org.neo4j.kernel.internal.GraphDatabaseAPI;

/**
 * What every procedure needs from the database: the plugin's settings, the shared client, and
 * the mapping between kgweave entity ids and the database's nodes (label and key property from
 * kgweave.conf). One instance per procedure call; node look-ups are cached for the call.
 */
final class Graph {
  private final Transaction tx;
  private final KgweaveConfig config;
  private final Label label;
  private final String keyProperty;
  private final Map<String, Node> nodes = new HashMap<>();

  Graph(GraphDatabaseAPI db, Transaction tx) {
    this.tx = tx;
    this.config = KgweaveConfig.of(db.getDependencyResolver().resolveDependency(Config.class));
    this.label = Label.label(config.entityLabel());
    this.keyProperty = config.keyProperty();
  }

  KgweaveClient client() {
    return KgweaveClient.of(config);
  }

  /** An entity given as a node (its key property), an id or name string, or a number id. */
  String entity(Object value, String what) {
    if (value instanceof Node node) {
      Object key = node.getProperty(keyProperty, null);
      if (key == null) {
        throw KgweaveException.invalidArgument(
            what + " node " + node.getElementId() + " has no '" + keyProperty
                + "' property (kgweave.key_property in kgweave.conf)");
      }
      return key.toString();
    }
    if (value instanceof String text) {
      if (text.isBlank()) {
        throw KgweaveException.invalidArgument(what + " is an empty string");
      }
      return text;
    }
    if (value instanceof Long || value instanceof Integer) {
      return value.toString();
    }
    if (value == null) {
      throw KgweaveException.invalidArgument(what + " is null");
    }
    throw KgweaveException.invalidArgument(
        what + " must be a node, an id or a name, not " + describe(value));
  }

  /**
   * A relation given as a string or as a relationship: its {@code relation} property where it
   * has one (kgweave's generic {@code RELATED} relationships, for names that are no valid type),
   * else its type.
   */
  static String relation(Object value) {
    if (value instanceof String text && !text.isBlank()) {
      return text;
    }
    if (value instanceof Relationship rel) {
      return relationOf(rel);
    }
    throw KgweaveException.invalidArgument(
        "relation must be a non-empty string, not " + describe(value));
  }

  /** The relation a relationship stands for (see {@link #relation}). */
  static String relationOf(Relationship rel) {
    Object named = rel.getProperty("relation", null);
    return named instanceof String text && !text.isBlank() ? text : rel.getType().name();
  }

  /** A triple given as [head, relation, tail], {head, relation, tail} or a relationship. */
  io.kgweave.v1.Triple triple(Object value, int index) {
    String where = "triple " + index;
    if (value instanceof Relationship rel) {
      return io.kgweave.v1.Triple.newBuilder()
          .setHead(entity(rel.getStartNode(), where + " head"))
          .setRelation(relationOf(rel))
          .setTail(entity(rel.getEndNode(), where + " tail"))
          .build();
    }
    Object h;
    Object r;
    Object t;
    if (value instanceof List<?> list && list.size() == 3) {
      h = list.get(0);
      r = list.get(1);
      t = list.get(2);
    } else if (value instanceof Map<?, ?> map) {
      h = map.get("head");
      r = map.get("relation");
      t = map.get("tail");
    } else {
      throw KgweaveException.invalidArgument(
          where + " must be [head, relation, tail], {head, relation, tail} or a relationship, not "
              + describe(value));
    }
    return io.kgweave.v1.Triple.newBuilder()
        .setHead(entity(h, where + " head"))
        .setRelation(relation(r))
        .setTail(entity(t, where + " tail"))
        .build();
  }

  /** The database node of an entity id, or null when the graph has none. */
  Node node(String entityId) {
    return nodes.computeIfAbsent(entityId, this::find);
  }

  private Node find(String entityId) {
    try (ResourceIterator<Node> found = tx.findNodes(label, keyProperty, entityId)) {
      return found.hasNext() ? found.next() : null;
    }
  }

  static long positive(Object value, String name, long max) {
    return integer(value, name, 1, max);
  }

  static long integer(Object value, String name, long min, long max) {
    if (!(value instanceof Number number) || number.doubleValue() != number.longValue()) {
      throw KgweaveException.invalidArgument(name + " must be an integer, not " + describe(value));
    }
    long k = number.longValue();
    if (k < min || k > max) {
      throw KgweaveException.invalidArgument(
          name + " must be between " + min + " and " + max + ", got " + k);
    }
    return k;
  }

  static double number(Object value, String name) {
    if (!(value instanceof Number number)) {
      throw KgweaveException.invalidArgument(name + " must be a number, not " + describe(value));
    }
    return number.doubleValue();
  }

  /** A string argument that must not be null or blank. */
  static String required(Object value, String name) {
    if (value instanceof String text && !text.isBlank()) {
      return text;
    }
    throw KgweaveException.invalidArgument(name + " is empty");
  }

  static boolean flag(Map<String, Object> options, String name, boolean fallback) {
    Object value = options == null ? null : options.get(name);
    if (value == null) {
      return fallback;
    }
    if (value instanceof Boolean b) {
      return b;
    }
    throw KgweaveException.invalidArgument(name + " must be true or false, not " + describe(value));
  }

  /** Reject option keys that the procedure does not know (a typo must not pass silently). */
  static void knownOptions(Map<String, Object> options, String procedure, List<String> known) {
    if (options == null) {
      return;
    }
    for (String key : options.keySet()) {
      if (!known.contains(key)) {
        throw KgweaveException.invalidArgument(
            "unknown option '" + key + "' of " + procedure + " (known: "
                + String.join(", ", known) + ")");
      }
    }
  }

  static String describe(Object value) {
    if (value == null) {
      return "null";
    }
    if (value instanceof Node) {
      return "a node";
    }
    if (value instanceof Relationship) {
      return "a relationship";
    }
    if (value instanceof String s) {
      return "'" + s + "'";
    }
    if (value instanceof List<?>) {
      return "a list";
    }
    if (value instanceof Map<?, ?>) {
      return "a map";
    }
    return value.toString();
  }
}
