package ferrod.prototests.harness;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;

/**
 * A fresh PostgreSQL database for replicas that share one (dropped on close). The server comes
 * from {@code FERROD_TEST_PG_URL}, else from {@code scripts/pg-start.sh} (which prints its URL);
 * statements run through {@code psql}.
 */
public final class PgDatabase implements AutoCloseable {

   private final String adminUrl;
   private final String name;
   public final String url;

   private PgDatabase(String adminUrl, String name) {
      this.adminUrl = adminUrl;
      this.name = name;
      this.url = withDatabase(adminUrl, name);
   }

   public static PgDatabase create(String label) {
      String admin = Targets.setting("FERROD_TEST_PG_URL", "");
      if (admin.isEmpty()) {
         admin = run(List.of("bash", Targets.repoRoot().resolve("scripts/pg-start.sh").toString()), null).trim();
      }
      String name = ("proto_java_" + label + "_" + ProcessHandle.current().pid() + "_" + System.nanoTime() % 1_000_000)
            .toLowerCase().replaceAll("[^a-z0-9_]", "_");
      PgDatabase db = new PgDatabase(admin, name);
      db.psqlAdmin("CREATE DATABASE " + name);
      return db;
   }

   static String withDatabase(String url, String db) {
      int q = url.indexOf('?');
      String main = q < 0 ? url : url.substring(0, q);
      String query = q < 0 ? "" : url.substring(q);
      int scheme = main.indexOf("://") + 3;
      int slash = main.indexOf('/', scheme);
      String base = slash < 0 ? main : main.substring(0, slash);
      return base + "/" + db + query;
   }

   private void psqlAdmin(String sql) {
      run(List.of("psql", adminUrl, "-v", "ON_ERROR_STOP=1", "-qtAX", "-c", sql), null);
   }

   /** Rows of a query on this database, columns separated by a tab. */
   public List<String[]> query(String sql) {
      String out = run(List.of("psql", url, "-v", "ON_ERROR_STOP=1", "-qtAX", "-F", "\t", "-f", "-"), sql);
      List<String[]> rows = new ArrayList<>();
      for (String line : out.split("\n")) {
         if (!line.isEmpty()) {
            rows.add(line.split("\t", -1));
         }
      }
      return rows;
   }

   static String run(List<String> cmd, String stdin) {
      try {
         ProcessBuilder pb = new ProcessBuilder(cmd);
         pb.redirectErrorStream(false);
         Process p = pb.start();
         if (stdin != null) {
            p.getOutputStream().write(stdin.getBytes(StandardCharsets.UTF_8));
         }
         p.getOutputStream().close();
         String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
         String err = new String(p.getErrorStream().readAllBytes(), StandardCharsets.UTF_8);
         if (!p.waitFor(120, TimeUnit.SECONDS) || p.exitValue() != 0) {
            throw new IllegalStateException(String.join(" ", cmd.subList(0, 1)) + " failed: " + err);
         }
         return out;
      } catch (IOException e) {
         throw new IllegalStateException("cannot run " + cmd.get(0) + ": " + e, e);
      } catch (InterruptedException e) {
         Thread.currentThread().interrupt();
         throw new IllegalStateException(e);
      }
   }

   @Override
   public void close() {
      try {
         psqlAdmin("DROP DATABASE IF EXISTS " + name + " WITH (FORCE)");
      } catch (RuntimeException e) {
         System.err.println("dropping " + name + ": " + e.getMessage());
      }
   }
}
