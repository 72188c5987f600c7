package ferrod.prototests;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.io.InputStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.ArrayList;
import java.util.HexFormat;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.CopyOnWriteArrayList;

import org.infinispan.client.hotrod.MetadataValue;
import org.infinispan.client.hotrod.RemoteCache;
import org.infinispan.client.hotrod.RemoteCacheManager;
import org.infinispan.client.hotrod.configuration.ClientIntelligence;
import org.infinispan.client.hotrod.configuration.ConfigurationBuilder;
import org.infinispan.commons.util.CloseableIterator;
import org.infinispan.protostream.ProtobufUtil;
import org.infinispan.protostream.SerializationContext;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.MethodOrderer;
import org.junit.jupiter.api.Order;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestInstance;
import org.junit.jupiter.api.TestMethodOrder;

import ferrod.prototests.harness.PgDatabase;
import ferrod.prototests.harness.TargetProcess;
import ferrod.prototests.harness.Targets;

/**
 * Faults with the Java client (issue 3 item 7; proto-tests/node/test/faults.test.js is the npm
 * version): 3 replicas on the dedicated PostgreSQL cluster of proto-tests/node/faults-pg.sh (port
 * 5439, stopped and started by these tests, so nothing else uses it), clients connected to every
 * replica writing and reading throughout. kill -9 of a replica, PostgreSQL restarted mid-load,
 * rolling replacement of every replica by another binary; after each, no acknowledged write is
 * lost and every replica's memory equals the SQL content.
 */
@TestInstance(TestInstance.Lifecycle.PER_CLASS)
@TestMethodOrder(MethodOrderer.OrderAnnotation.class)
class FaultsTest {

   static final String CACHE = HotRodTestBase.PROTO;
   static final Path PG_SCRIPT = Targets.repoRoot().resolve("proto-tests/node/faults-pg.sh");
   static final Path LOCK = Path.of(System.getProperty("java.io.tmpdir"), "ferrod-proto-tests-faults.lock");

   Process lock;
   String url;
   final List<TargetProcess> replicas = new ArrayList<>();
   final List<Path> tempBins = new ArrayList<>();

   static String sh(String... cmd) {
      try {
         Process p = new ProcessBuilder(cmd).redirectError(ProcessBuilder.Redirect.INHERIT).start();
         String out = new String(p.getInputStream().readAllBytes()).trim();
         if (p.waitFor() != 0) {
            throw new IllegalStateException(String.join(" ", cmd) + " failed with status " + p.exitValue());
         }
         return out;
      } catch (IOException e) {
         throw new IllegalStateException(e);
      } catch (InterruptedException e) {
         Thread.currentThread().interrupt();
         throw new IllegalStateException(e);
      }
   }

   static String pg(String cmd) {
      return sh("bash", PG_SCRIPT.toString(), cmd);
   }

   @BeforeAll
   void start() throws Exception {
      Assumptions.assumeTrue(Targets.selected().contains(Targets.FERROD), "ferrod-only");
      Assumptions.assumeTrue("root".equals(System.getProperty("user.name")),
            "needs root: it drives its own PostgreSQL cluster with pg_ctlcluster (faults-pg.sh)");
      Assumptions.assumeTrue(Files.exists(Path.of("/usr/bin/pg_ctlcluster")),
            "PostgreSQL cluster tools (pg_ctlcluster) not installed");
      // one fault run at a time on this machine (shared with the npm faults suite): flock(1)
      lock = new ProcessBuilder("flock", "-x", LOCK.toString(), "-c", "echo locked; exec cat >/dev/null")
            .redirectError(ProcessBuilder.Redirect.INHERIT).start();
      InputStream in = lock.getInputStream();
      byte[] buf = new byte[7];
      int n = in.readNBytes(buf, 0, 6);
      if (n != 6 || !new String(buf, 0, 6).equals("locked")) {
         throw new IllegalStateException("could not take " + LOCK);
      }
      url = pg("fresh");
      for (int i = 0; i < 3; i++) {
         TargetProcess t = Targets.ferrodReplica("FaultsTest-r" + i, url);
         t.start(); // one after another: simultaneous start is another suite's topic
         replicas.add(t);
      }
   }

   @AfterAll
   void stop() {
      for (TargetProcess t : replicas) {
         try {
            t.close();
         } catch (RuntimeException e) {
            System.err.println("stopping " + t + ": " + e);
         }
      }
      for (Path b : tempBins) {
         try {
            Files.deleteIfExists(b);
            Files.deleteIfExists(b.getParent());
         } catch (IOException ignored) {
            // temp
         }
      }
      if (url != null) {
         try {
            pg("stop");
         } catch (RuntimeException e) {
            System.err.println(e.getMessage());
         }
      }
      if (lock != null) {
         lock.destroy();
      }
   }

   @AfterEach
   void replicasRunning() {
      for (TargetProcess t : replicas) {
         if (!t.isAlive()) {
            t.start();
         }
      }
   }

   // ------------------------------------------------------------------ clients

   /** The socket timeout of these tests' clients unless a test says otherwise. */
   static final int SOCKET_TIMEOUT_MS = 15_000;

   static RemoteCacheManager client(List<TargetProcess> servers) {
      return client(servers, SOCKET_TIMEOUT_MS);
   }

   static RemoteCacheManager client(List<TargetProcess> servers, int socketTimeoutMs) {
      ConfigurationBuilder b = new ConfigurationBuilder();
      for (TargetProcess t : servers) {
         b.addServer().host(t.host()).port(t.port());
      }
      b.clientIntelligence(ClientIntelligence.HASH_DISTRIBUTION_AWARE);
      b.connectionTimeout(3_000);
      b.socketTimeout(socketTimeoutMs);
      b.maxRetries(5);
      return new RemoteCacheManager(b.build(), true);
   }

   record Failure(long t, long tEnd, String op, String error) {
   }

   /** A read that did not return the acknowledged value: when, which key, acknowledged when. */
   record Mismatch(long t, String key, String expected, String got, long acked) {
   }

   /** One client writing new keys and reading the previous one back, until stopped. */
   static final class Writer implements Runnable {
      final String name;
      final RemoteCacheManager rcm;
      final RemoteCache<String, String> cache;
      final Map<String, String> acked = new ConcurrentHashMap<>();
      final List<Long> ackTimes = new CopyOnWriteArrayList<>();
      final List<Failure> failedPuts = new CopyOnWriteArrayList<>();
      final List<Failure> readErrors = new CopyOnWriteArrayList<>();
      final Map<String, Long> ackedAt = new ConcurrentHashMap<>();
      final List<Mismatch> mismatches = new CopyOnWriteArrayList<>();
      /** Operations that took longer than a second (client-side retries and waits included). */
      final List<Failure> slow = new CopyOnWriteArrayList<>();
      volatile boolean running = true;
      final Thread thread;

      Writer(String name, List<TargetProcess> servers, int socketTimeoutMs) {
         this.name = name;
         this.rcm = client(servers, socketTimeoutMs);
         this.cache = rcm.getCache(CACHE);
         this.thread = new Thread(this, "writer-" + name);
      }

      @Override
      public void run() {
         String last = null;
         for (int i = 0; running; i++) {
            String k = name + ":" + i;
            String v = "v" + i + "-" + System.nanoTime();
            long t = System.currentTimeMillis();
            try {
               cache.put(k, v);
               acked.put(k, v);
               long now = System.currentTimeMillis();
               noteIfSlow(t, now, "put " + k);
               ackedAt.put(k, now);
               ackTimes.add(now);
               last = k;
            } catch (RuntimeException e) {
               failedPuts.add(new Failure(t, System.currentTimeMillis(), "put " + k, String.valueOf(e.getMessage())));
               HotRodTestBase.sleepMs(50);
            }
            if (last != null) {
               long tr = System.currentTimeMillis();
               try {
                  String got = cache.get(last);
                  noteIfSlow(tr, System.currentTimeMillis(), "get " + last);
                  if (!acked.get(last).equals(got)) {
                     mismatches.add(new Mismatch(tr, last, acked.get(last), got, ackedAt.get(last)));
                  }
               } catch (RuntimeException e) {
                  readErrors.add(new Failure(tr, System.currentTimeMillis(), "get " + last, String.valueOf(e.getMessage())));
               }
            }
         }
      }

      void noteIfSlow(long t, long tEnd, String op) {
         if (tEnd - t > 1_000) {
            slow.add(new Failure(t, tEnd, op, "took " + (tEnd - t) + " ms"));
         }
      }

      long ackedSince(long t) {
         return ackTimes.stream().filter(x -> x >= t).count();
      }

      void stop() throws InterruptedException {
         running = false;
         thread.join(60_000);
      }

      String summary() {
         return String.format("%s: %d acknowledged, %d failed puts, %d failed reads, %d mismatches, slow: %s",
               name, acked.size(), failedPuts.size(), readErrors.size(), mismatches.size(), slow);
      }
   }

   /** One client per replica (that replica's address only) and one with every replica's address. */
   List<Writer> startWriters(String label) {
      return startWriters(label, SOCKET_TIMEOUT_MS);
   }

   List<Writer> startWriters(String label, int socketTimeoutMs) {
      List<Writer> ws = new ArrayList<>();
      String run = label + ":" + HotRodTestBase.RUN;
      for (int i = 0; i < replicas.size(); i++) {
         ws.add(new Writer(run + ":r" + i, List.of(replicas.get(i)), socketTimeoutMs));
      }
      ws.add(new Writer(run + ":all", replicas, socketTimeoutMs));
      ws.forEach(w -> w.thread.start());
      return ws;
   }

   static void stopWriters(List<Writer> ws) throws InterruptedException {
      for (Writer w : ws) {
         w.stop();
      }
      for (Writer w : ws) {
         System.out.println("faults: " + w.summary());
         HotRodTestBase.stopQuietly(w.rcm);
      }
   }

   // ------------------------------------------------------------------ checks

   static final SerializationContext PROTO_CTX = ProtobufUtil.newSerializationContext();

   /** A protostream-marshalled String (what the Java client stores) back to the String. */
   static String unwrap(byte[] b) {
      try {
         return String.valueOf((Object) ProtobufUtil.fromWrappedByteArray(PROTO_CTX, b));
      } catch (IOException e) {
         throw new IllegalStateException(e);
      }
   }

   /** key -> value@version of the cache in SQL (unexpired rows). */
   Map<String, String> sqlContent() {
      Map<String, String> m = new TreeMap<>();
      for (String line : sh("su", "postgres", "-c", "psql -p 5439 -d ferrod_faults -qtAX -F '\t' -c \"SELECT encode(key,'hex'), encode(value,'hex'), version FROM ferrod_entries WHERE cache = '" + CACHE + "'\"").split("\n")) {
         if (line.isBlank()) {
            continue;
         }
         String[] c = line.split("\t");
         m.put(unwrap(HexFormat.of().parseHex(c[0])), unwrap(HexFormat.of().parseHex(c[1])) + "@" + c[2]);
      }
      return m;
   }

   /** key -> value@version as one replica serves it (iteration over its memory). */
   static Map<String, String> replicaContent(TargetProcess t) {
      Map<String, String> m = new TreeMap<>();
      try (RemoteCacheManager rcm = client(List.of(t))) {
         RemoteCache<Object, Object> c = rcm.getCache(CACHE);
         try (CloseableIterator<Map.Entry<Object, MetadataValue<Object>>> it = c.retrieveEntriesWithMetadata(null, 1000)) {
            while (it.hasNext()) {
               Map.Entry<Object, MetadataValue<Object>> e = it.next();
               m.put(String.valueOf(e.getKey()), e.getValue().getValue() + "@" + e.getValue().getVersion());
            }
         }
      }
      return m;
   }

   /** Every replica's memory equals SQL (waiting for the feed to deliver the last writes). */
   void assertMemoryEqualsSql() {
      Map<String, String> sql = sqlContent();
      for (TargetProcess t : replicas) {
         Map<String, String> mem = replicaContent(t);
         for (int i = 0; i < 50 && !mem.equals(sql); i++) {
            HotRodTestBase.sleepMs(200);
            sql = sqlContent();
            mem = replicaContent(t);
         }
         if (!mem.equals(sql)) {
            Map<String, String> onlySql = new TreeMap<>(sql);
            onlySql.entrySet().removeAll(mem.entrySet());
            Map<String, String> onlyMem = new TreeMap<>(mem);
            onlyMem.entrySet().removeAll(sql.entrySet());
            throw new AssertionError(t + ": memory differs from SQL (" + sql.size() + " rows): only in SQL "
                  + first(onlySql) + ", only in memory " + first(onlyMem));
         }
      }
   }

   static Map<String, String> first(Map<String, String> m) {
      Map<String, String> out = new TreeMap<>();
      m.entrySet().stream().limit(5).forEach(e -> out.put(e.getKey(), e.getValue()));
      return out;
   }

   /** Every acknowledged write is in SQL with its value. */
   void assertNothingLost(List<Writer> ws) {
      assertNothingLost(ws, m -> false);
   }

   void assertNothingLost(List<Writer> ws, java.util.function.Predicate<Mismatch> tolerated) {
      Map<String, String> sql = sqlContent();
      for (Writer w : ws) {
         List<String> lost = new ArrayList<>();
         for (Map.Entry<String, String> e : w.acked.entrySet()) {
            String row = sql.get(e.getKey());
            if (row == null || !row.startsWith(e.getValue() + "@")) {
               lost.add(e.getKey() + " (acknowledged " + e.getValue() + ", SQL " + row + ")");
            }
         }
         assertEquals(List.of(), lost.stream().limit(5).toList(), w.name + ": acknowledged writes lost");
         assertEquals(List.of(), w.mismatches.stream().filter(tolerated.negate()).toList(),
               w.name + ": a read returned something else than the acknowledged value");
      }
   }

   // ------------------------------------------------------------------ faults

   @Test
   @Order(1)
   void killNineOfOneReplica() throws Exception {
      // kill -9 resets the connections whose requests the process had not read yet, and the
      // 15.0 client waits out its socket timeout when a connection is reset under a pending
      // request (its HeaderDecoder hands the error to the last operation it answered, which
      // removes the decoder, so the pending one is never told; see DRAIN_GRACE in
      // crates/server/src/connection.rs). Seen for a request sent at the kill instant in 2 runs
      // of 8, once from the all-replicas client; the 16.0 client retries at once. A socket
      // timeout shorter than the downtime lets that request go to another replica meanwhile.
      List<Writer> ws = startWriters("kill9", 2_000);
      TargetProcess victim = replicas.get(0);
      Writer own = ws.get(0);
      Writer all = ws.get(3);
      HotRodTestBase.sleepMs(3_000);
      long tKill = System.currentTimeMillis();
      victim.kill();
      HotRodTestBase.sleepMs(5_000);
      long tRestart = System.currentTimeMillis();
      victim.start();
      long tUp = System.currentTimeMillis();
      for (int i = 0; i < 100 && own.ackedSince(tUp) == 0; i++) {
         HotRodTestBase.sleepMs(100);
      }
      HotRodTestBase.sleepMs(2_000);
      stopWriters(ws);
      System.out.println("faults: kill -9 at " + tKill + ", restarted at " + tRestart + ", up at " + tUp);

      // the all-replicas client failed over: nothing surfaced (the client retried elsewhere)
      assertEquals(List.of(), all.failedPuts, "all-replicas client: no failed write");
      assertEquals(List.of(), all.readErrors, "all-replicas client: no failed read");
      assertTrue(all.ackTimes.stream().anyMatch(t -> t > tKill && t < tRestart), "all-replicas client kept writing while a replica was down");
      for (Writer w : ws.subList(1, 3)) {
         assertEquals(List.of(), w.failedPuts, w.name + ": no failure");
      }
      // the victim's own client failed while it was down, then wrote through the restarted replica
      assertTrue(own.ackedSince(tUp) > 0, own.name + ": writes acknowledged by the restarted replica");
      for (Failure f : own.failedPuts) {
         assertTrue(f.tEnd() >= tKill && f.t() <= tUp, own.name + ": failure outside the replica's downtime: " + f);
      }
      assertNothingLost(ws);
      assertMemoryEqualsSql();
   }

   @Test
   @Order(2)
   void postgresRestartedMidLoad() throws Exception {
      List<Writer> ws = startWriters("pgrestart");
      boolean down = false;
      try {
         HotRodTestBase.sleepMs(3_000);
         // acknowledged a while before the outage: every replica has them in memory
         Map<String, String> existing = new TreeMap<>();
         ws.forEach(w -> existing.putAll(w.acked));
         HotRodTestBase.sleepMs(1_000);
         long tDown = System.currentTimeMillis();
         pg("stop");
         down = true;
         HotRodTestBase.sleepMs(2_000);
         // reads of existing keys are served by every replica from memory during the outage
         List<String> problems = new ArrayList<>();
         for (TargetProcess t : replicas) {
            try (RemoteCacheManager rcm = client(List.of(t))) {
               RemoteCache<String, String> c = rcm.getCache(CACHE);
               existing.entrySet().stream().limit(200).forEach(e -> {
                  try {
                     String got = c.get(e.getKey());
                     if (!e.getValue().equals(got)) {
                        problems.add(t + " " + e.getKey() + ": " + got);
                     }
                  } catch (RuntimeException ex) {
                     problems.add(t + " " + e.getKey() + ": " + ex.getMessage());
                  }
               });
            }
         }
         HotRodTestBase.sleepMs(3_000);
         long tUpStart = System.currentTimeMillis();
         pg("start");
         down = false;
         long tUp = System.currentTimeMillis();
         for (int i = 0; i < 300 && !ws.stream().allMatch(w -> w.ackedSince(tUp) > 0); i++) {
            HotRodTestBase.sleepMs(100);
         }
         HotRodTestBase.sleepMs(2_000);
         stopWriters(ws);

         assertEquals(List.of(), problems.stream().limit(5).toList(), "reads served from memory during the outage");
         List<Failure> failed = new ArrayList<>();
         for (Writer w : ws) {
            failed.addAll(w.failedPuts);
            assertEquals(List.of(), w.readErrors.stream().limit(5).toList(), w.name + ": reads during the outage are served");
            assertTrue(w.ackedSince(tUp) > 0, w.name + ": writes succeed again after PostgreSQL is back, without restarting ferrod");
         }
         assertTrue(failed.stream().anyMatch(f -> f.tEnd() <= tUpStart), "writes fail while PostgreSQL is down");
         for (Failure f : failed) {
            assertTrue(f.error().matches("(?is).*(database|postgres|sql).*"), "a write during the outage fails with an error naming the database: " + f);
            assertTrue(f.tEnd() >= tDown, "no write failed before the outage: " + f);
         }
         for (TargetProcess t : replicas) {
            assertTrue(t.isAlive(), t + " survived the outage");
         }
         // The one read that may miss: through another replica, of a key acknowledged just
         // before the outage whose change had not reached that replica yet (the feed comes
         // from PostgreSQL, and so does the read-through of a miss).
         long tRecovered = ws.stream().mapToLong(w -> w.ackTimes.stream().filter(t -> t >= tUp).findFirst().orElse(Long.MAX_VALUE))
               .max().orElse(Long.MAX_VALUE);
         assertNothingLost(ws, m -> m.got() == null && m.acked() >= tDown - 2_000 && m.t() <= tRecovered);
         assertMemoryEqualsSql();
      } finally {
         if (down) {
            pg("start");
         }
         for (Writer w : ws) {
            if (w.running) {
               w.stop();
               HotRodTestBase.stopQuietly(w.rcm);
            }
         }
      }
   }

   @Test
   @Order(3)
   void rollingReplacementByANewBinary() throws Exception {
      Path bin = Path.of(Targets.repoRoot().resolve("target/debug/ferrod").toString());
      String custom = System.getenv("FERROD_BIN");
      if (custom != null && !custom.isBlank()) {
         bin = Path.of(custom);
      }
      Path dir = Files.createTempDirectory("ferrod-faults-bin-");
      Path newBin = dir.resolve("ferrod");
      Files.copy(bin, newBin, StandardCopyOption.REPLACE_EXISTING);
      newBin.toFile().setExecutable(true);
      tempBins.add(newBin);

      List<Writer> ws = startWriters("rolling");
      Writer all = ws.get(3);
      long[][] windows = new long[3][2];
      HotRodTestBase.sleepMs(2_000);
      for (int i = 0; i < 3; i++) {
         TargetProcess old = replicas.get(i);
         windows[i][0] = System.currentTimeMillis();
         old.stop(); // SIGTERM: drains its connections
         TargetProcess fresh = Targets.ferrodReplica("FaultsTest-r" + i + "-new", url, newBin, old.port());
         fresh.start();
         windows[i][1] = System.currentTimeMillis();
         replicas.set(i, fresh);
         old.close();
         HotRodTestBase.sleepMs(2_000);
      }
      HotRodTestBase.sleepMs(1_000);
      stopWriters(ws);

      assertEquals(List.of(), all.failedPuts, "all-replicas client: no failed write (only retried ones)");
      assertEquals(List.of(), all.readErrors, "all-replicas client: no failed read");
      for (int i = 0; i < 3; i++) {
         Writer w = ws.get(i);
         long t0 = windows[i][0];
         long t1 = windows[i][1];
         List<Failure> outside = new ArrayList<>();
         for (Failure f : w.failedPuts) {
            if (f.tEnd() < t0 || f.t() > t1 + 15_000) {
               outside.add(f);
            }
         }
         assertEquals(List.of(), outside, w.name + ": failures only while its replica was being replaced");
         assertTrue(w.ackedSince(t1) > 0, w.name + ": writes again through the new process");
      }
      assertNothingLost(ws);
      assertMemoryEqualsSql();
   }
}
