package ferrod.prototests;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;

import java.util.concurrent.TimeUnit;

import org.infinispan.client.hotrod.RemoteCache;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;

import ferrod.prototests.harness.Case;

/**
 * Lifespan and max-idle as the client sends them (SECONDS and MILLISECONDS units) and the cache's
 * default lifespan. Deadlines are measured from the moment the write was acknowledged, with a
 * margin of {@value #MARGIN_MS} ms after the expiry instant: a read then must miss.
 */
class ExpirationTest extends HotRodTestBase {

   static final long MARGIN_MS = 150;

   @ParameterizedTest(name = NAME)
   @MethodSource("cases")
   void lifespanInSeconds(Case c) {
      RemoteCache<String, String> cache = proto(c);
      String k = key(c, "lifespan-s", "k");
      cache.put(k, "v", 1, TimeUnit.SECONDS);
      long acked = System.currentTimeMillis();
      assertEquals("v", cache.get(k), "present right after the write");
      assertEquals(1, cache.getWithMetadata(k).getLifespan());
      sleepUntil(acked + 500);
      assertEquals("v", cache.get(k), "present before the lifespan elapsed");
      sleepUntil(acked + 1000 + MARGIN_MS);
      assertNull(cache.get(k), "gone after the 1 s lifespan");
      assertFalse(cache.containsKey(k));
      assertNull(cache.getWithMetadata(k));
   }

   @ParameterizedTest(name = NAME)
   @MethodSource("cases")
   void lifespanInMilliseconds(Case c) {
      RemoteCache<String, String> cache = proto(c);
      String k = key(c, "lifespan-ms", "k");
      cache.put(k, "v", 700, TimeUnit.MILLISECONDS);
      long acked = System.currentTimeMillis();
      assertEquals("v", cache.get(k), "present right after the write");
      sleepUntil(acked + 700 + MARGIN_MS);
      assertNull(cache.get(k), "gone after the 700 ms lifespan");
      assertFalse(cache.containsKey(k));
      // replace with a lifespan in milliseconds, then a put that makes the entry immortal again
      String k2 = key(c, "lifespan-ms", "k2");
      cache.put(k2, "a");
      cache.replace(k2, "b", 600, TimeUnit.MILLISECONDS);
      long replaced = System.currentTimeMillis();
      assertEquals("b", cache.get(k2));
      sleepUntil(replaced + 600 + MARGIN_MS);
      assertNull(cache.get(k2), "gone after replace with a 600 ms lifespan");
      cache.put(k2, "c", 600, TimeUnit.MILLISECONDS);
      cache.put(k2, "d");
      long immortal = System.currentTimeMillis();
      sleepUntil(immortal + 600 + MARGIN_MS);
      assertEquals("d", cache.get(k2), "a later put without lifespan makes the entry immortal");
      cache.remove(k2);
   }

   @ParameterizedTest(name = NAME)
   @MethodSource("cases")
   void maxIdleRestartedByAccess(Case c) {
      RemoteCache<String, String> cache = proto(c);
      String k = key(c, "maxidle", "k");
      String untouched = key(c, "maxidle", "untouched");
      cache.put(k, "v", -1, TimeUnit.SECONDS, 1000, TimeUnit.MILLISECONDS);
      cache.put(untouched, "u", -1, TimeUnit.SECONDS, 1, TimeUnit.SECONDS);
      long t0 = System.currentTimeMillis();
      // touch every 600 ms: each access restarts the 1 s idle period
      for (int i = 1; i <= 3; i++) {
         sleepUntil(t0 + 600L * i);
         assertEquals("v", cache.get(k), "accessed within max-idle at +" + (600 * i) + " ms");
      }
      long lastTouch = System.currentTimeMillis();
      // by now (+1.8 s) the untouched entry has been idle for longer than 1 s
      assertNull(cache.get(untouched), "an entry not accessed for longer than max-idle is gone");
      sleepUntil(lastTouch + 1000 + MARGIN_MS);
      assertNull(cache.get(k), "gone once idle for longer than max-idle");
      assertFalse(cache.containsKey(k));
   }

   @ParameterizedTest(name = NAME)
   @MethodSource("cases")
   void cacheDefaultLifespan(Case c) {
      RemoteCache<String, String> cache = cache(c, EXPIRING);
      String k = key(c, "default-lifespan", "k");
      String explicit = key(c, "default-lifespan", "explicit");
      String immortal = key(c, "default-lifespan", "immortal");
      cache.put(k, "v");
      cache.put(explicit, "e", 60, TimeUnit.SECONDS);
      cache.put(immortal, "i", -1, TimeUnit.SECONDS);
      long acked = System.currentTimeMillis();
      assertEquals("v", cache.get(k));
      assertEquals(2, cache.getWithMetadata(k).getLifespan(), "default lifespan 2000 ms");
      assertEquals(60, cache.getWithMetadata(explicit).getLifespan(), "an explicit lifespan overrides the default");
      assertEquals(-1, cache.getWithMetadata(immortal).getLifespan(), "a negative lifespan means immortal");
      sleepUntil(acked + 1000);
      assertEquals("v", cache.get(k), "present before the default lifespan elapsed");
      sleepUntil(acked + 2000 + MARGIN_MS);
      assertNull(cache.get(k), "gone after the cache's default lifespan of 2000 ms");
      assertEquals("e", cache.get(explicit));
      assertEquals("i", cache.get(immortal));
      cache.remove(explicit);
      cache.remove(immortal);
   }

   static void sleepUntil(long epochMs) {
      sleepMs(epochMs - System.currentTimeMillis());
   }
}
