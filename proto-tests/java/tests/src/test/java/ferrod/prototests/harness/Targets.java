package ferrod.prototests.harness;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.net.InetAddress;
import java.net.ServerSocket;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.stream.Stream;

/**
 * Builds the servers under test. {@code TARGET} (system property or environment variable) picks
 * them: {@code ferrod}, {@code infinispan}, or a comma-separated list; both by default.
 */
public final class Targets {

   public static final String FERROD = "ferrod";
   public static final String INFINISPAN = "infinispan";

   /** Caches of the test configuration; the reference server defines the same (see proto-tests/README.md). */
   static final String FERROD_TOML = """
         # written by the proto-tests Java harness; same caches as reference-server.sh
         [[cache]]
         name = "proto"
         key_media_type = "application/x-protostream"
         value_media_type = "application/x-protostream"

         [[cache]]
         name = "text"
         key_media_type = "text/plain"
         value_media_type = "text/plain"

         [[cache]]
         name = "raw"
         key_media_type = "application/octet-stream"
         value_media_type = "application/octet-stream"

         [[cache]]
         name = "expiring"
         key_media_type = "application/x-protostream"
         value_media_type = "application/x-protostream"
         lifespan_ms = 2000
         """;

   private Targets() {
   }

   static String setting(String name, String dflt) {
      String v = System.getProperty(name);
      if (v == null || v.isBlank()) {
         v = System.getenv(name);
      }
      return v == null || v.isBlank() ? dflt : v.trim();
   }

   /** The selected targets, reference first. */
   public static List<String> selected() {
      List<String> out = new ArrayList<>();
      for (String t : setting("TARGET", INFINISPAN + "," + FERROD).split("[,\\s]+")) {
         String n = t.trim().toLowerCase();
         if (n.isEmpty() || n.equals("both") || n.equals("all")) {
            if (!out.contains(INFINISPAN)) out.add(INFINISPAN);
            if (!out.contains(FERROD)) out.add(FERROD);
         } else if (n.equals(FERROD) || n.equals(INFINISPAN)) {
            if (!out.contains(n)) out.add(n);
         } else {
            throw new IllegalArgumentException("TARGET must be ferrod, infinispan or both, not '" + t + "'");
         }
      }
      return out;
   }

   /** proto-tests/java (set by the pom as proto-tests.java.dir). */
   static Path javaDir() {
      String dir = System.getProperty("proto-tests.java.dir");
      if (dir == null) {
         throw new IllegalStateException("system property proto-tests.java.dir is not set (run through Maven)");
      }
      return Paths.get(dir).toAbsolutePath().normalize();
   }

   public static Path repoRoot() {
      return javaDir().getParent().getParent();
   }

   /** Release line of the reference server matching the client on the classpath: 15 or 16. */
   static String ispnLine() {
      return setting("ispn.line", "16");
   }

   static int freePort() {
      try (ServerSocket s = new ServerSocket(0, 1, InetAddress.getLoopbackAddress())) {
         s.setReuseAddress(true);
         return s.getLocalPort();
      } catch (IOException e) {
         throw new UncheckedIOException(e);
      }
   }

   /** The ferrod binary the harness runs (FERROD_BIN, default target/debug/ferrod). */
   public static Path ferrodBin() {
      return Paths.get(setting("FERROD_BIN", repoRoot().resolve("target/debug/ferrod").toString()));
   }

   /** {@code ferrod user add NAME --password PASSWORD --roles ROLES --file FILE}, which must succeed. */
   public static void ferrodUserAdd(Path file, String name, String password, String roles) {
      try {
         Process p = new ProcessBuilder(ferrodBin().toString(), "user", "add", name, "--password", password,
               "--roles", roles, "--file", file.toString()).redirectErrorStream(true).start();
         String out = new String(p.getInputStream().readAllBytes(), java.nio.charset.StandardCharsets.UTF_8);
         if (p.waitFor() != 0) {
            throw new IllegalStateException("ferrod user add " + name + ": " + out);
         }
      } catch (java.io.IOException e) {
         throw new java.io.UncheckedIOException(e);
      } catch (InterruptedException e) {
         Thread.currentThread().interrupt();
         throw new IllegalStateException(e);
      }
   }

   /** A new, not yet started target of the given kind, with its own port and empty data. */
   public static TargetProcess create(String kind, String label) {
      return create(kind, label, List.of());
   }

   /**
    * As {@link #create(String, String)}, with extra command-line arguments for ferrod (e.g. TLS
    * settings; ignored for the reference server). The reference server also serves Infinispan's
    * REST API, on a port of its own ({@link TargetProcess#httpPort()}); ferrod serves it on the
    * HotRod port.
    */
   public static TargetProcess create(String kind, String label, List<String> ferrodArgs) {
      int port = freePort();
      Path work;
      try {
         Path base = Paths.get(setting("proto-tests.work.dir", System.getProperty("java.io.tmpdir")));
         Files.createDirectories(base);
         work = Files.createTempDirectory(base, kind + "-" + label + "-");
      } catch (IOException e) {
         throw new UncheckedIOException(e);
      }
      Path logs = Paths.get(setting("proto-tests.log.dir", work.toString()));
      Path log = logs.resolve(label + "-" + kind + ".log");
      try {
         Files.deleteIfExists(log);
      } catch (IOException e) {
         throw new UncheckedIOException(e);
      }
      Runnable cleanup = setting("KEEP_TARGET_DATA", "").isEmpty() ? () -> deleteTree(work) : null;
      switch (kind) {
         case INFINISPAN: {
            List<String> cmd = TargetProcess.list("bash", javaDir().resolve("reference-server.sh").toString(),
                  ispnLine(), Integer.toString(port), work.resolve("data").toString());
            int restPort = freePort();
            return new TargetProcess(INFINISPAN + "-" + ispnLine(), cmd,
                  Map.of("REFERENCE_REST_PORT", Integer.toString(restPort)), port, restPort, log,
                  Duration.ofSeconds(300), cleanup);
         }
         case FERROD: {
            Path bin = ferrodBin();
            if (!Files.isExecutable(bin)) {
               throw new IllegalStateException("ferrod binary not found at " + bin
                     + " (build it with `cargo build -p ferrod` or set FERROD_BIN)");
            }
            Path toml = work.resolve("ferrod.toml");
            try {
               Files.writeString(toml, FERROD_TOML);
            } catch (IOException e) {
               throw new UncheckedIOException(e);
            }
            String db = setting("FERROD_DATABASE_URL", "sqlite://" + work.resolve("ferrod.db"));
            List<String> cmd = TargetProcess.list(bin.toString(), "--listen", "127.0.0.1:" + port,
                  "--database-url", db, "--config", toml.toString());
            cmd.addAll(ferrodArgs);
            Map<String, String> env = new HashMap<>();
            // keep the child's configuration to what the command line says
            env.put("FERROD_LOG", setting("FERROD_LOG", "info"));
            return new TargetProcess(FERROD, cmd, env, port, port, log, Duration.ofSeconds(120), cleanup);
         }
         default:
            throw new IllegalArgumentException(kind);
      }
   }

   /**
    * A new, not yet started ferrod replica on a shared database (its own port and work
    * directory; the caches of the test configuration).
    */
   public static TargetProcess ferrodReplica(String label, String databaseUrl) {
      return ferrodReplica(label, databaseUrl,
            Paths.get(setting("FERROD_BIN", repoRoot().resolve("target/debug/ferrod").toString())), freePort());
   }

   /** As above with a given binary and port (a replica replaced by another build keeps its port). */
   public static TargetProcess ferrodReplica(String label, String databaseUrl, Path bin, int port) {
      Path work;
      try {
         Path base = Paths.get(setting("proto-tests.work.dir", System.getProperty("java.io.tmpdir")));
         Files.createDirectories(base);
         work = Files.createTempDirectory(base, FERROD + "-" + label + "-");
         Files.writeString(work.resolve("ferrod.toml"), FERROD_TOML);
      } catch (IOException e) {
         throw new UncheckedIOException(e);
      }
      Path log = Paths.get(setting("proto-tests.log.dir", work.toString())).resolve(label + "-" + FERROD + ".log");
      if (!Files.isExecutable(bin)) {
         throw new IllegalStateException("ferrod binary not found at " + bin
               + " (build it with `cargo build -p ferrod` or set FERROD_BIN)");
      }
      List<String> cmd = TargetProcess.list(bin.toString(), "--listen", "127.0.0.1:" + port,
            "--database-url", databaseUrl, "--config", work.resolve("ferrod.toml").toString());
      Map<String, String> env = new HashMap<>();
      env.put("FERROD_LOG", setting("FERROD_LOG", "info"));
      Runnable cleanup = setting("KEEP_TARGET_DATA", "").isEmpty() ? () -> deleteTree(work) : null;
      return new TargetProcess(FERROD + "-" + label, cmd, env, port, port, log, Duration.ofSeconds(120), cleanup);
   }

   /** Removes a directory and everything in it (best effort). */
   public static void deleteTree(Path root) {
      if (!Files.exists(root)) {
         return;
      }
      try (Stream<Path> walk = Files.walk(root)) {
         walk.sorted(Comparator.reverseOrder()).forEach(p -> {
            try {
               Files.deleteIfExists(p);
            } catch (IOException ignored) {
               // best effort
            }
         });
      } catch (IOException ignored) {
         // best effort
      }
   }
}
