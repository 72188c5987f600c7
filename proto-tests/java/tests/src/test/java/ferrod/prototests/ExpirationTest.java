package ferrod.prototests;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.HashMap;
import java.util.HashSet;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.TimeUnit;
import java.util.function.Supplier;

import org.infinispan.client.hotrod.MetadataValue;
import org.infinispan.client.hotrod.RemoteCache;
import org.infinispan.commons.util.CloseableIterator;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.parallel.Execution;
import org.junit.jupiter.api.parallel.ExecutionMode;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;

import ferrod.prototests.harness.Case;

/**
 * Lifespan and max-idle as the client sends them (SECONDS and MILLISECONDS units) and the cache's
 * default lifespan.
 *
 * <p>The timing is exact rather than padded: the server stamps an entry somewhere between the
 * client sending the write and receiving the answer, so a read sent later than (answer + lifespan
 * + {@value #MARGIN_MS} ms) must miss, and a read answered earlier than (request + lifespan) must
 * hit. The cases of each method run concurrently (they mostly sleep; the class itself never runs
 * beside another class, whose server could share ferrod's database); when a thread wakes too late to prove that
 * an entry is still there, the test is aborted as inconclusive, never passed.
 */
class ExpirationTest extends HotRodTestBase {

   static final long MARGIN_MS = 150;

   @ParameterizedTest(name = NAME)
   @MethodSource("cases")
   @Execution(ExecutionMode.CONCURRENT)
   void lifespanInSeconds(Case c) {
      RemoteCache<String, String> cache = proto(c);
      String k = key(c, "lifespan-s", "k");
      long sent = now();
      cache.put(k, "v", 1, TimeUnit.SECONDS);
      long acked = now();
      assertPresentUntil(sent + 1000, () -> cache.get(k), "v", "right after the write");
      assertEquals(1, cache.getWithMetadata(k).getLifespan());
      sleepUntil(sent + 700);
      assertPresentUntil(sent + 1000, () -> cache.get(k), "v", "before the lifespan elapsed");
      sleepUntil(acked + 1000 + MARGIN_MS);
      assertNull(cache.get(k), "gone after the 1 s lifespan");
      assertFalse(cache.containsKey(k));
      assertNull(cache.getWithMetadata(k));
   }

   @ParameterizedTest(name = NAME)
   @MethodSource("cases")
   @Execution(ExecutionMode.CONCURRENT)
   void lifespanInMilliseconds(Case c) {
      RemoteCache<String, String> cache = proto(c);
      String k = key(c, "lifespan-ms", "k");
      long sent = now();
      cache.put(k, "v", 700, TimeUnit.MILLISECONDS);
      long acked = now();
      assertPresentUntil(sent + 700, () -> cache.get(k), "v", "right after the write");
      sleepUntil(acked + 700 + MARGIN_MS);
      assertNull(cache.get(k), "gone after the 700 ms lifespan");
      assertFalse(cache.containsKey(k));

      // replace with a lifespan in milliseconds, then a put that makes the entry immortal again
      String k2 = key(c, "lifespan-ms", "k2");
      cache.put(k2, "a");
      sent = now();
      cache.replace(k2, "b", 600, TimeUnit.MILLISECONDS);
      acked = now();
      assertPresentUntil(sent + 600, () -> cache.get(k2), "b", "after replace with a 600 ms lifespan");
      sleepUntil(acked + 600 + MARGIN_MS);
      assertNull(cache.get(k2), "gone after replace with a 600 ms lifespan");
      cache.put(k2, "c", 600, TimeUnit.MILLISECONDS);
      cache.put(k2, "d");
      acked = now();
      sleepUntil(acked + 600 + MARGIN_MS);
      assertEquals("d", cache.get(k2), "a later put without lifespan makes the entry immortal");
      cache.remove(k2);
   }

   @ParameterizedTest(name = NAME)
   @MethodSource("cases")
   @Execution(ExecutionMode.CONCURRENT)
   void maxIdleRestartedByAccess(Case c) {
      RemoteCache<String, String> cache = proto(c);
      String k = key(c, "maxidle", "k");
      String untouched = key(c, "maxidle", "untouched");
      long lastTouchSent = now();
      cache.put(k, "v", -1, TimeUnit.SECONDS, 1000, TimeUnit.MILLISECONDS);
      cache.put(untouched, "u", -1, TimeUnit.SECONDS, 1, TimeUnit.SECONDS);
      long untouchedAcked = now();
      // read every 500 ms for 2 s: each access restarts the 1 s idle period
      for (int i = 1; i <= 4; i++) {
         sleepUntil(lastTouchSent + 500);
         long sent = now();
         assertPresentUntil(lastTouchSent + 1000, () -> cache.get(k), "v", "read #" + i + " within max-idle of the previous access");
         lastTouchSent = sent;
      }
      long lastTouchAcked = now();
      sleepUntil(untouchedAcked + 1000 + MARGIN_MS);
      assertNull(cache.get(untouched), "an entry not accessed for longer than max-idle is gone");
      sleepUntil(lastTouchAcked + 1000 + MARGIN_MS);
      assertNull(cache.get(k), "gone once idle for longer than max-idle");
      assertFalse(cache.containsKey(k));
   }

   @ParameterizedTest(name = NAME)
   @MethodSource("cases")
   @Execution(ExecutionMode.CONCURRENT)
   void lastUsedAdvancesOnAccess(Case c) {
      RemoteCache<String, String> cache = proto(c);
      String k = key(c, "lastused", "k");
      cache.put(k, "v", 60, TimeUnit.SECONDS, 30, TimeUnit.SECONDS);
      MetadataValue<String> m1 = cache.getWithMetadata(k);
      assertTrue(m1.getLastUsed() > 0);
      sleepMs(1100);
      long touched = now();
      assertEquals("v", cache.get(k));
      MetadataValue<String> m2 = cache.getWithMetadata(k);
      assertTrue(m2.getLastUsed() >= m1.getLastUsed() + 1000 && m2.getLastUsed() >= touched - 1000,
            "lastUsed after an access 1.1 s later: " + m1.getLastUsed() + " -> " + m2.getLastUsed());
      assertEquals(m1.getCreated(), m2.getCreated(), "a read does not change created");
      assertEquals(m1.getVersion(), m2.getVersion(), "a read does not change the version");
      assertEquals(30, m2.getMaxIdle());
      assertEquals(60, m2.getLifespan());
      // max-idle only: created stays -1 (lifespan infinite), lastUsed is set
      String idleOnly = key(c, "lastused", "idle-only");
      cache.put(idleOnly, "w", -1, TimeUnit.SECONDS, 45, TimeUnit.SECONDS);
      MetadataValue<String> m3 = cache.getWithMetadata(idleOnly);
      assertEquals(-1, m3.getLifespan());
      assertEquals(-1, m3.getCreated());
      assertEquals(45, m3.getMaxIdle());
      assertTrue(m3.getLastUsed() > 0);
   }

   @ParameterizedTest(name = NAME)
   @MethodSource("cases")
   @Execution(ExecutionMode.CONCURRENT)
   void expiredEntriesAreInvisibleToBulkOperations(Case c) {
      RemoteCache<String, String> cache = proto(c);
      Map<String, String> mortal = new HashMap<>();
      for (int i = 0; i < 20; i++) {
         mortal.put(key(c, "expired-bulk", i), "m" + i);
      }
      String keep = key(c, "expired-bulk", "immortal");
      cache.putAll(mortal, 500, TimeUnit.MILLISECONDS);
      long acked = now();
      cache.put(keep, "i");
      sleepUntil(acked + 500 + MARGIN_MS);
      Set<String> all = new HashSet<>(mortal.keySet());
      all.add(keep);
      assertEquals(Map.of(keep, "i"), cache.getAll(all), "getAll after the lifespan");
      Set<String> iterated = new HashSet<>();
      try (CloseableIterator<Map.Entry<Object, Object>> it = cache.retrieveEntries(null, 100)) {
         it.forEachRemaining(e -> {
            if (all.contains(e.getKey())) {
               iterated.add((String) e.getKey());
            }
         });
      }
      assertEquals(Set.of(keep), iterated, "iteration after the lifespan");
      for (String k : mortal.keySet()) {
         assertFalse(cache.containsKey(k));
      }
      cache.remove(keep);
   }

   @ParameterizedTest(name = NAME)
   @MethodSource("cases")
   @Execution(ExecutionMode.CONCURRENT)
   void cacheDefaultLifespan(Case c) {
      RemoteCache<String, String> cache = cache(c, EXPIRING);
      String k = key(c, "default-lifespan", "k");
      String explicit = key(c, "default-lifespan", "explicit");
      String immortal = key(c, "default-lifespan", "immortal");
      long sent = now();
      cache.put(k, "v");
      long acked = now();
      cache.put(explicit, "e", 60, TimeUnit.SECONDS);
      cache.put(immortal, "i", -1, TimeUnit.SECONDS);
      MetadataValue<String> m = cache.getWithMetadata(k);
      assertNotNull(m);
      assertEquals(2, m.getLifespan(), "default lifespan 2000 ms");
      assertEquals(60, cache.getWithMetadata(explicit).getLifespan(), "an explicit lifespan overrides the default");
      assertEquals(-1, cache.getWithMetadata(immortal).getLifespan(), "a negative lifespan means immortal");
      sleepUntil(sent + 1200);
      assertPresentUntil(sent + 2000, () -> cache.get(k), "v", "before the default lifespan elapsed");
      sleepUntil(acked + 2000 + MARGIN_MS);
      assertNull(cache.get(k), "gone after the cache's default lifespan of 2000 ms");
      assertEquals("e", cache.get(explicit));
      assertEquals("i", cache.get(immortal));
      cache.remove(explicit);
      cache.remove(immortal);
   }

   /**
    * Reads; if the answer came before {@code deadline} the entry had to be there. An answer after
    * the deadline proves nothing: the test is then aborted as inconclusive (a loaded machine).
    */
   static <T> void assertPresentUntil(long deadline, Supplier<T> read, T expected, String what) {
      T got = read.get();
      long answered = now();
      if (answered < deadline) {
         assertEquals(expected, got, what);
      } else if (!expected.equals(got)) {
         Assumptions.abort("inconclusive: the read (" + what + ") was answered " + (answered - deadline)
               + " ms after the entry could have expired");
      }
   }

   static long now() {
      return System.currentTimeMillis();
   }

   static void sleepUntil(long epochMs) {
      sleepMs(epochMs - now());
   }
}
