package io.kgweave.neo4j;

import java.io.IOException;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.DirectoryStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CountDownLatch;
import java.util.stream.Stream;

import org.neo4j.configuration.Config;
import org.neo4j.configuration.GraphDatabaseSettings;
import org.neo4j.configuration.connectors.BoltConnector;
import org.neo4j.configuration.connectors.HttpConnector;
import org.neo4j.configuration.helpers.SocketAddress;
import org.neo4j.graphdb.GraphDatabaseService;
import org.neo4j.graphdb.config.Setting;
import org.neo4j.harness.Neo4j;
import org.neo4j.harness.Neo4jBuilder;
import org.neo4j.harness.Neo4jBuilders;

/**
 * Starts a Neo4j 5 Community DBMS through Neo4j's test harness, with APOC Core, until SIGTERM.
 *
 * <p>Layout of {@code --data DIR}: {@code DIR/data} holds the databases, their transaction logs
 * and the DBMS's users (it persists between runs); {@code DIR/logs} Neo4j's {@code debug.log};
 * {@code DIR/plugins} is refreshed at every start
 * with APOC Core and the jars of {@code --plugins}; {@code DIR/run} holds the harness's working
 * folder (configuration, certificates, {@code neo4j.log}), which the harness deletes when it stops.
 *
 * <p>Plugin jars must also be on the JVM's class path (as Neo4j's own start script puts
 * {@code plugins/*} there) for their extensions and settings: {@code java -cp
 * "kgweave-neo4j-launcher.jar:PLUGINS/*" io.kgweave.neo4j.Launcher --plugins PLUGINS ...}.
 */
public final class Launcher {
    /** What {@code kgweave neo4j start} and the tests wait for on standard output. */
    public static final String READY = "kgweave-neo4j ready";

    private Launcher() {}

    private static final String USAGE = String.join(
            "\n",
            "usage: java -jar kgweave-neo4j-launcher.jar --data DIR [options]",
            "  --data DIR             persistent folder (DIR/data keeps the databases and users)",
            "  --host HOST            listen address for Bolt and HTTP (default 127.0.0.1)",
            "  --bolt-port N          Bolt port (default 7687; 0: any free port)",
            "  --http-port N          HTTP port (default: HTTP off)",
            "  --password-file FILE   initial password of user neo4j (applied while the user",
            "                         still has to change it, i.e. on a new data folder)",
            "  --no-auth              authentication off (default: on)",
            "  --plugins DIR          extra plugin jars (also put DIR/* on the class path)",
            "  --trigger-refresh MS   apoc.trigger.refresh in ms (default 1000)",
            "  --conf KEY=VALUE       any other Neo4j setting (repeatable)");

    /** The parsed command line. */
    static final class Options {
        Path data;
        String host = "127.0.0.1";
        int boltPort = 7687;
        Integer httpPort;
        Path passwordFile;
        boolean auth = true;
        Path plugins;
        long triggerRefreshMs = 1000;
        Map<String, String> conf = new LinkedHashMap<>();
    }

    static Options parse(String[] args) {
        Options o = new Options();
        for (int i = 0; i < args.length; i++) {
            String flag = args[i];
            if (flag.equals("-h") || flag.equals("--help")) {
                throw new UsageException(null);
            }
            if (flag.equals("--no-auth")) {
                o.auth = false;
                continue;
            }
            if (i + 1 >= args.length) {
                throw new UsageException(flag + " needs a value");
            }
            String value = args[++i];
            switch (flag) {
                case "--data" -> o.data = Path.of(value).toAbsolutePath();
                case "--host" -> o.host = value;
                case "--bolt-port" -> o.boltPort = port(flag, value);
                case "--http-port" -> o.httpPort = port(flag, value);
                case "--password-file" -> o.passwordFile = Path.of(value);
                case "--plugins" -> o.plugins = Path.of(value).toAbsolutePath();
                case "--trigger-refresh" -> o.triggerRefreshMs = number(flag, value, 1, Long.MAX_VALUE);
                case "--conf" -> {
                    int eq = value.indexOf('=');
                    if (eq < 1) {
                        throw new UsageException("--conf wants KEY=VALUE, got " + value);
                    }
                    o.conf.put(value.substring(0, eq).trim(), value.substring(eq + 1).trim());
                }
                default -> throw new UsageException("unknown option " + flag);
            }
        }
        if (o.data == null) {
            throw new UsageException("--data DIR is required");
        }
        if (o.plugins != null && !Files.isDirectory(o.plugins)) {
            throw new UsageException("--plugins " + o.plugins + " is not a folder");
        }
        return o;
    }

    private static int port(String flag, String value) {
        return (int) number(flag, value, 0, 65535);
    }

    private static long number(String flag, String value, long min, long max) {
        try {
            long n = Long.parseLong(value);
            if (n < min || n > max) {
                throw new UsageException(flag + " must be between " + min + " and " + max);
            }
            return n;
        } catch (NumberFormatException e) {
            throw new UsageException(flag + " wants a number, got " + value);
        }
    }

    /** A bad command line: one line on stderr and exit code 2. */
    static final class UsageException extends RuntimeException {
        UsageException(String message) {
            super(message);
        }
    }

    /** The launcher's own jar folder's {@code lib/apoc-core-*.jar}, or any on the class path. */
    static Path apocJar() throws IOException {
        for (String entry : System.getProperty("java.class.path").split(java.io.File.pathSeparator)) {
            Path p = Path.of(entry).toAbsolutePath();
            Path lib = p.getParent() == null ? null : p.getParent().resolve("lib");
            if (p.getFileName() != null && p.getFileName().toString().startsWith("apoc-core-")) {
                return p;
            }
            if (lib != null && Files.isDirectory(lib)) {
                try (DirectoryStream<Path> found = Files.newDirectoryStream(lib, "apoc-core-*.jar")) {
                    for (Path jar : found) {
                        return jar;
                    }
                }
            }
        }
        throw new IOException("apoc-core jar not found next to the launcher (lib/apoc-core-*.jar)");
    }

    /**
     * Whether a jar of a Maven {@code target} folder is a plugin: not the shade plugin's
     * {@code original-*.jar} (the same procedures again, unshaded) nor sources, javadoc or tests.
     */
    static boolean isPluginJar(String name) {
        return name.endsWith(".jar") && !name.startsWith("original-")
                && !name.endsWith("-sources.jar") && !name.endsWith("-javadoc.jar")
                && !name.endsWith("-tests.jar");
    }

    /** Fill {@code DIR/plugins} afresh: APOC Core's procedures plus every jar of {@code --plugins}. */
    static Path preparePlugins(Options o) throws IOException {
        Path dir = o.data.resolve("plugins");
        Files.createDirectories(dir);
        try (DirectoryStream<Path> old = Files.newDirectoryStream(dir, "*.jar")) {
            for (Path jar : old) {
                Files.delete(jar);
            }
        }
        List<Path> jars = new ArrayList<>();
        jars.add(apocJar());
        if (o.plugins != null) {
            try (DirectoryStream<Path> extra = Files.newDirectoryStream(o.plugins, "*.jar")) {
                for (Path jar : extra) {
                    if (isPluginJar(jar.getFileName().toString())) {
                        jars.add(jar);
                    }
                }
            }
        }
        for (Path jar : jars) {
            Files.copy(jar, dir.resolve(jar.getFileName()), StandardCopyOption.REPLACE_EXISTING);
        }
        return dir;
    }

    /** Remove harness folders a killed JVM left behind (the harness names them by an MD5 hex). */
    static void removeStaleRuns(Path run) throws IOException {
        if (!Files.isDirectory(run)) {
            return;
        }
        try (DirectoryStream<Path> dirs = Files.newDirectoryStream(run)) {
            for (Path d : dirs) {
                if (d.getFileName().toString().matches("[0-9a-f]{32}")) {
                    try (Stream<Path> walk = Files.walk(d)) {
                        walk.sorted(java.util.Comparator.reverseOrder()).forEach(p -> p.toFile().delete());
                    }
                }
            }
        }
    }

    @SuppressWarnings({"unchecked", "rawtypes"})
    static Neo4jBuilder builder(Options o, Path plugins) {
        Path run = o.data.resolve("run");
        Neo4jBuilder b = Neo4jBuilders.newInProcessBuilder(run)
                .withConfig(GraphDatabaseSettings.data_directory, o.data.resolve("data"))
                // debug.log (APOC trigger errors land there), query.log, security.log
                .withConfig(GraphDatabaseSettings.logs_directory, o.data.resolve("logs"))
                .withConfig(GraphDatabaseSettings.plugin_dir, plugins)
                .withConfig(GraphDatabaseSettings.auth_enabled, o.auth)
                .withConfig(GraphDatabaseSettings.procedure_unrestricted, List.of("apoc.*", "kgweave.*"))
                .withConfig(BoltConnector.enabled, true)
                .withConfig(BoltConnector.listen_address, new SocketAddress(o.host, o.boltPort));
        if (o.httpPort == null) {
            b = b.withDisabledServer();
        } else {
            b = b.withConfig(HttpConnector.enabled, true)
                    .withConfig(HttpConnector.listen_address, new SocketAddress(o.host, o.httpPort));
        }
        if (!o.conf.isEmpty()) {
            // parse KEY=VALUE with Neo4j's own setting declarations (plugins' ones included)
            Config parsed = Config.newBuilder().setRaw(o.conf).build();
            Map<String, Setting<Object>> declared = parsed.getDeclaredSettings();
            for (String key : o.conf.keySet()) {
                Setting<Object> s = declared.get(key);
                if (s == null) {
                    throw new UsageException("--conf " + key + ": not a known Neo4j setting");
                }
                b = b.withConfig((Setting) s, parsed.get(s));
            }
        }
        return b;
    }

    /** Give user neo4j the initial password while it still has to change the default one. */
    static boolean setInitialPassword(Neo4j neo4j, String password) {
        GraphDatabaseService system = neo4j.databaseManagementService().database("system");
        boolean required = system.executeTransactionally(
                "SHOW USERS YIELD user, passwordChangeRequired WHERE user = 'neo4j' "
                        + "RETURN passwordChangeRequired",
                Map.of(),
                r -> r.hasNext() && Boolean.TRUE.equals(r.next().get("passwordChangeRequired")));
        if (required) {
            system.executeTransactionally(
                    "ALTER USER neo4j SET PASSWORD $password CHANGE NOT REQUIRED",
                    Map.of("password", password));
        }
        return required;
    }

    public static void main(String[] args) {
        PrintStream out = System.out;
        Options o;
        try {
            o = parse(args);
        } catch (UsageException e) {
            if (e.getMessage() != null) {
                System.err.println("kgweave-neo4j: " + e.getMessage());
            }
            System.err.println(USAGE);
            System.exit(e.getMessage() == null ? 0 : 2);
            return;
        }
        Neo4j neo4j;
        try {
            String password = null;
            if (o.auth && o.passwordFile != null) {
                password = Files.readString(o.passwordFile, StandardCharsets.UTF_8).strip();
                if (password.length() < 8) {
                    throw new UsageException("the password must have at least 8 characters");
                }
            }
            Files.createDirectories(o.data);
            removeStaleRuns(o.data.resolve("run"));
            Path plugins = preparePlugins(o);
            // APOC 5 reads its settings from apoc.conf, the environment and system properties
            System.setProperty("apoc.trigger.enabled", "true");
            System.setProperty("apoc.trigger.refresh", Long.toString(o.triggerRefreshMs));
            neo4j = builder(o, plugins).build();
            if (password != null && setInitialPassword(neo4j, password)) {
                out.println("kgweave-neo4j: initial password set for user neo4j");
            }
        } catch (UsageException e) {
            System.err.println("kgweave-neo4j: " + e.getMessage());
            System.exit(2);
            return;
        } catch (Exception e) {
            Throwable root = e;
            while (root.getCause() != null) {
                root = root.getCause();
            }
            System.err.println("kgweave-neo4j: Neo4j did not start: " + e.getMessage()
                    + (root != e ? " (" + root + ")" : ""));
            System.exit(1);
            return;
        }
        CountDownLatch stopped = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            try {
                neo4j.close();
            } finally {
                out.println("kgweave-neo4j stopped");
                out.flush();
                stopped.countDown();
            }
        }, "kgweave-neo4j-stop"));
        String http = o.httpPort == null ? "" : " http " + neo4j.httpURI();
        out.println(READY + " " + neo4j.boltURI() + http + " data " + o.data);
        out.flush();
        try {
            stopped.await();
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }
}
