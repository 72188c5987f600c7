package ferrod.prototests;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.atomic.AtomicInteger;

import org.infinispan.client.hotrod.RemoteCacheManager;
import java.util.Map;
import java.util.concurrent.TimeUnit;

import org.infinispan.client.hotrod.MetadataValue;
import org.infinispan.client.hotrod.RemoteCache;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;

import ferrod.prototests.harness.Case;
import ferrod.prototests.harness.TargetProcess;
import ferrod.prototests.harness.Targets;

/**
 * A server restart in the middle of a client's life: every acknowledged write is back with the
 * same value and version, and the same RemoteCacheManager reconnects by itself.
 */
class RestartTest extends HotRodTestBase {

   static final int N = 300;

   @ParameterizedTest(name = NAME)
   @MethodSource("cases")
   void gracefulRestartKeepsDataAndVersions(Case c) {
      restartScenario(c, "restart", TargetProcess::restart);
   }

   /** SIGKILL instead of SIGTERM: nothing acknowledged may be lost (ferrod's durability contract). */
   @ParameterizedTest(name = NAME)
   @MethodSource("cases")
   void restartAfterSigkillKeepsAcknowledgedWrites(Case c) {
      // Infinispan's file store is not a durability reference for a crash: only ferrod promises it.
      assumeTrue(c.target().equals(Targets.FERROD), "SIGKILL durability is checked on ferrod only");
      restartScenario(c, "kill", TargetProcess::restartAfterKill);
   }

   /**
    * SIGKILL while thousands of writes are in flight on one connection: every write the client saw
    * acknowledged is there after the restart (ferrod acknowledges only committed writes).
    */
   @ParameterizedTest(name = NAME)
   @MethodSource("cases")
   void sigkillWithWritesInFlightLosesNoAcknowledgedWrite(Case c) throws Exception {
      assumeTrue(c.target().equals(Targets.FERROD), "SIGKILL durability is checked on ferrod only");
      TargetProcess t = target(c);
      RemoteCacheManager writerRcm = newManager(c, b -> b.maxRetries(0));
      Map<String, CompletableFuture<String>> writes = new LinkedHashMap<>();
      try {
         RemoteCache<String, String> writer = writerRcm.getCache(PROTO);
         AtomicInteger acked = new AtomicInteger();
         int n = 20_000;
         for (int i = 0; i < n; i++) {
            String k = key(c, "inflight", i);
            CompletableFuture<String> f = writer.putAsync(k, "value-" + i);
            f.thenRun(acked::incrementAndGet);
            writes.put(k, f);
            if (i == 2000) {
               // kill once some writes are acknowledged and many are still in flight
               long deadline = System.currentTimeMillis() + 30_000;
               while (acked.get() < 500 && System.currentTimeMillis() < deadline) {
                  Thread.sleep(1);
               }
               t.kill();
               break;
            }
         }
         for (CompletableFuture<String> f : writes.values()) {
            try {
               f.get(60, TimeUnit.SECONDS);
            } catch (ExecutionException e) {
               // not acknowledged: may or may not have been committed
            }
         }
      } finally {
         stopQuietly(writerRcm);
      }
      t.start();
      RemoteCache<String, String> reader = proto(c);
      int checked = 0;
      for (Map.Entry<String, CompletableFuture<String>> w : writes.entrySet()) {
         if (!w.getValue().isCompletedExceptionally()) {
            String k = w.getKey();
            String expected = "value-" + k.substring(k.lastIndexOf(':') + 1);
            assertEquals(expected, reader.get(k), "acknowledged write of " + k + " lost by the SIGKILL");
            checked++;
         }
      }
      t.note("in-flight SIGKILL: " + checked + " acknowledged of " + writes.size() + " sent");
      assertTrue(checked >= 500, "at least 500 writes were acknowledged before the kill (" + checked + ")");
   }

   private void restartScenario(Case c, String test, java.util.function.Consumer<TargetProcess> restart) {
      RemoteCache<String, String> cache = proto(c);
      RemoteCache<String, String> dflt = cache(c, "");
      Map<String, MetadataValue<String>> before = new HashMap<>();
      for (int i = 0; i < N; i++) {
         String k = key(c, test, i);
         if (i % 3 == 0) {
            cache.put(k, "value-" + i, 1, TimeUnit.HOURS);
         } else if (i % 3 == 1) {
            cache.put(k, "first-" + i);
            cache.replace(k, "value-" + i);
         } else {
            cache.put(k, "value-" + i);
         }
      }
      String removed = key(c, test, "removed");
      cache.put(removed, "gone");
      cache.remove(removed);
      String dk = key(c, test, "default-cache");
      dflt.put(dk, "in the default cache");
      for (int i = 0; i < N; i++) {
         String k = key(c, test, i);
         before.put(k, cache.getWithMetadata(k));
      }
      long dfltVersion = dflt.getWithMetadata(dk).getVersion();

      TargetProcess t = target(c);
      long t0 = System.nanoTime();
      restart.accept(t);
      t.note("restarted; first client operation next");
      long t1 = System.nanoTime();

      // same client, no new RemoteCacheManager: it must reconnect by itself
      for (int i = 0; i < N; i++) {
         String k = key(c, test, i);
         MetadataValue<String> was = before.get(k);
         MetadataValue<String> now = cache.getWithMetadata(k);
         assertNotNull(now, "entry " + k + " lost in the restart");
         assertEquals(was.getValue(), now.getValue(), "value of " + k);
         assertEquals(was.getVersion(), now.getVersion(), "version of " + k);
         assertEquals(was.getLifespan(), now.getLifespan(), "lifespan of " + k);
         // Infinispan's file store keeps `created` only to within some tens of ms
         assertTrue(Math.abs(was.getCreated() - now.getCreated()) <= 1000,
               "created of " + k + ": " + was.getCreated() + " before, " + now.getCreated() + " after");
         assertEquals(was.getMaxIdle(), now.getMaxIdle(), "maxIdle of " + k);
      }
      t.note("all entries read back after the restart: restart " + (t1 - t0) / 1_000_000 + " ms, reads "
            + (System.nanoTime() - t1) / 1_000_000 + " ms");
      assertNull(cache.get(removed), "a removed entry came back after the restart");
      assertEquals("in the default cache", dflt.get(dk));
      assertEquals(dfltVersion, dflt.getWithMetadata(dk).getVersion());

      // conditional writes with the pre-restart versions still work, and new writes get new versions
      String k0 = key(c, test, 1);
      long v0 = before.get(k0).getVersion();
      assertEquals(true, cache.replaceWithVersion(k0, "after", v0), "replaceWithVersion with a version read before the restart");
      long v1 = cache.getWithMetadata(k0).getVersion();
      org.junit.jupiter.api.Assertions.assertNotEquals(v0, v1, "a write after the restart reuses the version from before it");
      for (MetadataValue<String> m : before.values()) {
         org.junit.jupiter.api.Assertions.assertNotEquals(m.getVersion(), v1,
               "a write after the restart got a version already used before it");
      }
      assertEquals(false, cache.replaceWithVersion(k0, "stale", v0));
      assertEquals("after", cache.get(k0));
   }
}
