package ferrod.prototests;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.HashMap;
import java.util.HashSet;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.TimeUnit;

import org.infinispan.client.hotrod.MetadataValue;
import org.infinispan.client.hotrod.RemoteCache;
import org.infinispan.commons.util.CloseableIterator;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;

import ferrod.prototests.harness.Case;

/** Server-side iteration (ITERATION_START/NEXT/END) over 10,000 entries. */
class IterationTest extends HotRodTestBase {

   static final int ENTRIES = 10_000;
   static final int MORTAL_EVERY = 10;

   @ParameterizedTest(name = NAME)
   @MethodSource("cases")
   void iterateTenThousandEntries(Case c) {
      RemoteCache<String, String> cache = proto(c);
      cache.clear();
      Map<String, String> immortal = new HashMap<>();
      Map<String, String> mortal = new HashMap<>();
      for (int i = 0; i < ENTRIES; i++) {
         (i % MORTAL_EVERY == 0 ? mortal : immortal).put(key(c, "it", i), "value-" + i);
      }
      putAllChunked(cache, immortal, -1);
      putAllChunked(cache, mortal, 3600);
      Map<String, String> all = new HashMap<>(immortal);
      all.putAll(mortal);
      assertEquals(ENTRIES, cache.size());

      // sample of versions as getWithMetadata reports them
      Map<String, Long> versions = new HashMap<>();
      for (int i = 0; i < ENTRIES; i += 97) {
         String k = key(c, "it", i);
         versions.put(k, cache.getWithMetadata(k).getVersion());
      }

      // 1. entries with metadata, several batch sizes
      for (int batch : new int[] {1000, 77}) {
         Map<String, String> seen = new HashMap<>();
         try (CloseableIterator<Map.Entry<Object, MetadataValue<Object>>> it = cache.retrieveEntriesWithMetadata(null, batch)) {
            while (it.hasNext()) {
               Map.Entry<Object, MetadataValue<Object>> e = it.next();
               String k = (String) e.getKey();
               MetadataValue<Object> m = e.getValue();
               assertNull(seen.put(k, (String) m.getValue()), "key returned twice: " + k);
               if (mortal.containsKey(k)) {
                  assertEquals(3600, m.getLifespan(), "lifespan of " + k);
                  assertTrue(m.getCreated() > 0, "created of " + k);
               } else {
                  assertEquals(-1, m.getLifespan(), "lifespan of " + k);
                  assertEquals(-1, m.getCreated(), "created of " + k);
               }
               assertEquals(-1, m.getMaxIdle(), "maxIdle of " + k);
               Long v = versions.get(k);
               if (v != null) {
                  assertEquals(v.longValue(), m.getVersion(), "version of " + k + " in iteration vs getWithMetadata");
               }
            }
         }
         assertEquals(all, seen, "retrieveEntriesWithMetadata(batch " + batch + ")");
      }

      // 2. entrySet().iterator()
      Map<String, String> viaEntrySet = new HashMap<>();
      try (CloseableIterator<Map.Entry<String, String>> it = cache.entrySet().iterator()) {
         while (it.hasNext()) {
            Map.Entry<String, String> e = it.next();
            assertNull(viaEntrySet.put(e.getKey(), e.getValue()), "key returned twice: " + e.getKey());
         }
      }
      assertEquals(all, viaEntrySet, "entrySet().iterator()");

      // 3. keySet() (the 16.x client uses the ToEmptyBytesKeyValueFilterConverter)
      Set<String> viaKeySet = new HashSet<>();
      try (CloseableIterator<String> it = cache.keySet().iterator()) {
         while (it.hasNext()) {
            String k = it.next();
            assertTrue(viaKeySet.add(k), "key returned twice: " + k);
         }
      }
      assertEquals(all.keySet(), viaKeySet, "keySet()");

      // 4. values() and plain retrieveEntries
      Map<String, Integer> valueCounts = new HashMap<>();
      for (String v : cache.values()) {
         valueCounts.merge(v, 1, Integer::sum);
      }
      assertEquals(ENTRIES, valueCounts.size());
      Map<String, String> viaRetrieve = new HashMap<>();
      try (CloseableIterator<Map.Entry<Object, Object>> it = cache.retrieveEntries(null, 500)) {
         it.forEachRemaining(e -> viaRetrieve.put((String) e.getKey(), (String) e.getValue()));
      }
      assertEquals(all, viaRetrieve, "retrieveEntries(null, 500)");

      // 5. an iterator closed early, then the cache is still usable
      try (CloseableIterator<Map.Entry<Object, Object>> it = cache.retrieveEntries(null, 10)) {
         assertTrue(it.hasNext());
         assertNotNull(it.next());
      }
      assertEquals("value-1", cache.get(key(c, "it", 1)));
      cache.clear();
      assertEquals(0, cache.size());
   }

   static void putAllChunked(RemoteCache<String, String> cache, Map<String, String> data, long lifespanSeconds) {
      Map<String, String> chunk = new HashMap<>();
      for (Map.Entry<String, String> e : data.entrySet()) {
         chunk.put(e.getKey(), e.getValue());
         if (chunk.size() == 1000) {
            putAll(cache, chunk, lifespanSeconds);
            chunk.clear();
         }
      }
      if (!chunk.isEmpty()) {
         putAll(cache, chunk, lifespanSeconds);
      }
   }

   private static void putAll(RemoteCache<String, String> cache, Map<String, String> chunk, long lifespanSeconds) {
      if (lifespanSeconds > 0) {
         cache.putAll(chunk, lifespanSeconds, TimeUnit.SECONDS);
      } else {
         cache.putAll(chunk);
      }
   }
}
