package ferrod.prototests;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.Set;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;

import org.infinispan.client.hotrod.Flag;
import org.infinispan.client.hotrod.MetadataValue;
import org.infinispan.client.hotrod.RemoteCache;
import org.infinispan.client.hotrod.RemoteCacheManager;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;

import ferrod.prototests.harness.Case;

/** Key/value operations, conditional and versioned writes, metadata, bulk ops, large values, pipelining. */
class BasicOperationsTest extends HotRodTestBase {

   @ParameterizedTest(name = NAME)
   @MethodSource("cases")
   void pingAndGetExistingCaches(Case c) {
      RemoteCacheManager rcm = rcm(c);
      assertTrue(rcm.isStarted());
      for (String name : List.of("", PROTO, "text", "raw", EXPIRING)) {
         RemoteCache<Object, Object> cache = rcm.getCache(name);
         assertNotNull(cache, "getCache(\"" + name + "\")");
      }
      RemoteCache<Object, Object> dflt = rcm.getCache();
      assertNotNull(dflt, "getCache() (default cache)");
      // a round trip on each protostream/default cache
      for (RemoteCache<Object, Object> cache : List.of(dflt, rcm.getCache(PROTO))) {
         String k = key(c, "ping", cache.getName());
         assertFalse(cache.containsKey(k));
      }
   }

   @ParameterizedTest(name = NAME)
   @MethodSource("cases")
   void getCacheOfMissingCacheReturnsNull(Case c) {
      assertNull(rcm(c).getCache("no-such-cache-" + c.id()), "getCache of a cache that does not exist");
      // the client and its connections stay usable afterwards
      RemoteCache<String, String> cache = proto(c);
      String k = key(c, "missing", "k");
      cache.put(k, "v");
      assertEquals("v", cache.get(k));
   }

   @ParameterizedTest(name = NAME)
   @MethodSource("cases")
   void putGetRemoveContainsKey(Case c) {
      for (String name : List.of(PROTO, "")) {
         RemoteCache<String, String> cache = cache(c, name);
         String k = key(c, "pgr", "k");
         assertNull(cache.get(k));
         assertFalse(cache.containsKey(k));
         assertNull(cache.put(k, "v1"), "put without FORCE_RETURN_VALUE returns null");
         assertEquals("v1", cache.get(k));
         assertTrue(cache.containsKey(k));
         assertNull(cache.put(k, "v2"), "put without FORCE_RETURN_VALUE returns null");
         assertEquals("v2", cache.get(k));
         assertNull(cache.remove(k), "remove without FORCE_RETURN_VALUE returns null");
         assertNull(cache.get(k));
         assertFalse(cache.containsKey(k));
         assertNull(cache.remove(k));

         // other key and value types
         RemoteCache<Object, Object> any = cache(c, name);
         String bk = key(c, "pgr", "bytes");
         byte[] bytes = {0, 1, 2, (byte) 0xff, 0x7f, (byte) 0x80};
         any.put(bk, bytes);
         assertArrayEquals(bytes, (byte[]) any.get(bk));
         any.put(42L, "long-key-" + c.id());
         assertEquals("long-key-" + c.id(), any.get(42L));
         assertTrue(any.containsKey(42L));
         any.remove(42L);
         assertFalse(any.containsKey(42L));
         any.put(key(c, "pgr", "empty"), "");
         assertEquals("", any.get(key(c, "pgr", "empty")));
         String unicode = "zwölf Boxkämpfer jagen Viktor — 東京 \uD83D\uDE00";
         any.put(key(c, "pgr", unicode), unicode);
         assertEquals(unicode, any.get(key(c, "pgr", unicode)));
      }
   }

   @ParameterizedTest(name = NAME)
   @MethodSource("cases")
   void forceReturnValue(Case c) {
      RemoteCache<String, String> plain = proto(c);
      // withFlags on every call: the 15.x client applies flags to the next operation only
      Frv cache = () -> plain.withFlags(Flag.FORCE_RETURN_VALUE);
      String k = key(c, "frv", "k");
      // put
      assertNull(cache.f().put(k, "a"), "put on a missing key returns null");
      assertEquals("a", cache.f().put(k, "b"), "put returns the previous value");
      assertEquals("b", plain.get(k));
      // putIfAbsent
      assertEquals("b", cache.f().putIfAbsent(k, "c"), "putIfAbsent on a present key returns the current value");
      assertEquals("b", plain.get(k), "putIfAbsent on a present key does not write");
      String k2 = key(c, "frv", "k2");
      assertNull(cache.f().putIfAbsent(k2, "x"), "putIfAbsent on a missing key returns null");
      assertEquals("x", plain.get(k2));
      // replace
      assertEquals("b", cache.f().replace(k, "d"), "replace returns the previous value");
      assertEquals("d", plain.get(k));
      String k3 = key(c, "frv", "k3");
      assertNull(cache.f().replace(k3, "y"), "replace on a missing key returns null");
      assertNull(plain.get(k3), "replace on a missing key does not write");
      // remove
      assertEquals("d", cache.f().remove(k), "remove returns the previous value");
      assertNull(plain.get(k));
      assertNull(cache.f().remove(k), "remove of a missing key returns null");
      // put of a key that was removed
      assertNull(cache.f().put(k, "e"), "put after remove returns null");
      assertEquals("e", cache.f().remove(k));
      assertEquals("x", cache.f().remove(k2));
   }

   @ParameterizedTest(name = NAME)
   @MethodSource("cases")
   void putIfAbsentBothOutcomes(Case c) {
      RemoteCache<String, String> cache = proto(c);
      String k = key(c, "pia", "k");
      assertNull(cache.putIfAbsent(k, "first"));
      assertEquals("first", cache.get(k));
      long v1 = cache.getWithMetadata(k).getVersion();
      assertNull(cache.putIfAbsent(k, "second"), "without FORCE_RETURN_VALUE the client returns null");
      assertEquals("first", cache.get(k), "putIfAbsent on a present key must not overwrite");
      assertEquals(v1, cache.getWithMetadata(k).getVersion(), "a putIfAbsent that did not write must not change the version");
   }

   @ParameterizedTest(name = NAME)
   @MethodSource("cases")
   void replaceBothOutcomes(Case c) {
      RemoteCache<String, String> cache = proto(c);
      String k = key(c, "rep", "k");
      assertNull(cache.replace(k, "nothing"));
      assertFalse(cache.containsKey(k), "replace on a missing key must not create it");
      cache.put(k, "one");
      long v1 = cache.getWithMetadata(k).getVersion();
      cache.replace(k, "two");
      assertEquals("two", cache.get(k));
      assertNotEquals(v1, cache.getWithMetadata(k).getVersion(), "replace must change the version");
      // replace(k, old, new): conditional on the value
      assertFalse(cache.replace(k, "wrong", "three"));
      assertEquals("two", cache.get(k));
      assertTrue(cache.replace(k, "two", "three"));
      assertEquals("three", cache.get(k));
   }

   @ParameterizedTest(name = NAME)
   @MethodSource("cases")
   void getWithMetadata(Case c) {
      RemoteCache<String, String> cache = proto(c);
      assertNull(cache.getWithMetadata(key(c, "gwm", "missing")));

      String immortal = key(c, "gwm", "immortal");
      cache.put(immortal, "v");
      MetadataValue<String> m = cache.getWithMetadata(immortal);
      assertEquals("v", m.getValue());
      assertEquals(-1, m.getCreated(), "created of an immortal entry");
      assertEquals(-1, m.getLifespan(), "lifespan of an immortal entry");
      assertEquals(-1, m.getLastUsed(), "lastUsed of an entry without max-idle");
      assertEquals(-1, m.getMaxIdle(), "maxIdle of an entry without max-idle");
      assertNotEquals(0, m.getVersion(), "every write gets a version");

      String mortal = key(c, "gwm", "mortal");
      long before = System.currentTimeMillis();
      cache.put(mortal, "w", 60, TimeUnit.SECONDS, 30, TimeUnit.SECONDS);
      long after = System.currentTimeMillis();
      m = cache.getWithMetadata(mortal);
      assertEquals("w", m.getValue());
      assertEquals(60, m.getLifespan(), "lifespan in seconds");
      assertEquals(30, m.getMaxIdle(), "maxIdle in seconds");
      assertBetween(before - 1000, after + 1000, m.getCreated(), "created (epoch ms)");
      assertBetween(before - 1000, System.currentTimeMillis() + 1000, m.getLastUsed(), "lastUsed (epoch ms)");
      assertNotEquals(0, m.getVersion());

      // other units are converted to whole seconds
      String minutes = key(c, "gwm", "minutes");
      cache.put(minutes, "x", 2, TimeUnit.MINUTES, 90_500, TimeUnit.MILLISECONDS);
      m = cache.getWithMetadata(minutes);
      assertEquals(120, m.getLifespan(), "2 MINUTES lifespan");
      assertEquals(90, m.getMaxIdle(), "90500 MILLISECONDS maxIdle");

      // lifespan only
      String lifespanOnly = key(c, "gwm", "lifespanOnly");
      cache.put(lifespanOnly, "y", 1, TimeUnit.HOURS);
      m = cache.getWithMetadata(lifespanOnly);
      assertEquals(3600, m.getLifespan());
      assertEquals(-1, m.getMaxIdle());
      assertEquals(-1, m.getLastUsed());
      assertTrue(m.getCreated() > 0);

      // the expiring cache's default lifespan (2000 ms) shows as 2 s on entries written without one
      RemoteCache<String, String> expiring = cache(c, EXPIRING);
      String dflt = key(c, "gwm", "default-lifespan");
      expiring.put(dflt, "z");
      m = expiring.getWithMetadata(dflt);
      assertNotNull(m);
      assertEquals(2, m.getLifespan(), "cache default lifespan of 2000 ms");
      assertTrue(m.getCreated() > 0);
   }

   @ParameterizedTest(name = NAME)
   @MethodSource("cases")
   void versionedOperations(Case c) {
      RemoteCache<String, String> cache = proto(c);
      String k = key(c, "ver", "k");
      Set<Long> seen = new HashSet<>();

      cache.put(k, "v1");
      long v1 = cache.getWithMetadata(k).getVersion();
      assertTrue(seen.add(v1));
      cache.put(k, "v1");
      long v1b = cache.getWithMetadata(k).getVersion();
      assertTrue(seen.add(v1b), "a put of the same value still gets a new version");

      assertFalse(cache.replaceWithVersion(k, "stale", v1), "replaceWithVersion with a stale version");
      assertEquals("v1", cache.get(k));
      assertEquals(v1b, cache.getWithMetadata(k).getVersion(), "a failed replaceWithVersion keeps the version");

      assertTrue(cache.replaceWithVersion(k, "v2", v1b), "replaceWithVersion with the current version");
      MetadataValue<String> m2 = cache.getWithMetadata(k);
      assertEquals("v2", m2.getValue());
      assertTrue(seen.add(m2.getVersion()), "replaceWithVersion gives a new version");

      // replaceWithVersion with expiration (Keycloak does this)
      assertTrue(cache.replaceWithVersion(k, "v3", m2.getVersion(), 100, TimeUnit.SECONDS, 50, TimeUnit.SECONDS));
      MetadataValue<String> m3 = cache.getWithMetadata(k);
      assertEquals("v3", m3.getValue());
      assertEquals(100, m3.getLifespan());
      assertEquals(50, m3.getMaxIdle());
      assertTrue(seen.add(m3.getVersion()));

      cache.replace(k, "v4");
      long v4 = cache.getWithMetadata(k).getVersion();
      assertTrue(seen.add(v4), "replace gives a new version");

      assertFalse(cache.removeWithVersion(k, m3.getVersion()), "removeWithVersion with a stale version");
      assertEquals("v4", cache.get(k));
      assertEquals(v4, cache.getWithMetadata(k).getVersion());
      assertTrue(cache.removeWithVersion(k, v4), "removeWithVersion with the current version");
      assertNull(cache.get(k));
      assertNull(cache.getWithMetadata(k));

      assertFalse(cache.replaceWithVersion(k, "ghost", v4), "replaceWithVersion on a missing key");
      assertFalse(cache.containsKey(k));
      assertFalse(cache.removeWithVersion(k, v4), "removeWithVersion on a missing key");

      cache.putIfAbsent(k, "v5");
      assertTrue(seen.add(cache.getWithMetadata(k).getVersion()), "putIfAbsent gives a new version");
      Map<String, String> all = Map.of(k, "v6");
      cache.putAll(all);
      assertTrue(seen.add(cache.getWithMetadata(k).getVersion()), "putAll gives a new version");
      cache.remove(k);
   }

   @ParameterizedTest(name = NAME)
   @MethodSource("cases")
   void putAllGetAll(Case c) {
      RemoteCache<String, String> cache = proto(c);
      Map<String, String> data = new HashMap<>();
      for (int i = 0; i < 200; i++) {
         data.put(key(c, "bulk", i), "value-" + i);
      }
      cache.putAll(data);
      Set<String> keys = new HashSet<>(data.keySet());
      keys.add(key(c, "bulk", "missing-1"));
      keys.add(key(c, "bulk", "missing-2"));
      Map<String, String> got = cache.getAll(keys);
      assertEquals(data, got, "getAll returns exactly the present entries");
      for (int i = 0; i < 200; i += 37) {
         assertEquals("value-" + i, cache.get(key(c, "bulk", i)));
      }

      Map<String, String> mortal = Map.of(key(c, "bulk", "mortal-a"), "a", key(c, "bulk", "mortal-b"), "b");
      cache.putAll(mortal, 300, TimeUnit.SECONDS);
      for (String k : mortal.keySet()) {
         MetadataValue<String> m = cache.getWithMetadata(k);
         assertEquals(mortal.get(k), m.getValue());
         assertEquals(300, m.getLifespan(), "putAll lifespan");
      }
      assertEquals(Map.of(), cache.getAll(Set.of(key(c, "bulk", "none"))));
   }

   @ParameterizedTest(name = NAME)
   @MethodSource("cases")
   void sizeKeySetClear(Case c) {
      RemoteCache<String, String> cache = proto(c);
      cache.clear();
      assertEquals(0, cache.size());
      assertTrue(cache.isEmpty());
      Set<String> keys = new HashSet<>();
      for (int i = 0; i < 25; i++) {
         String k = key(c, "size", i);
         keys.add(k);
         cache.put(k, "v" + i);
      }
      assertEquals(25, cache.size());
      assertFalse(cache.isEmpty());
      assertEquals(keys, new HashSet<>(cache.keySet()));
      cache.remove(key(c, "size", 0));
      assertEquals(24, cache.size());
      cache.clear();
      assertEquals(0, cache.size());
      assertTrue(cache.isEmpty());
      assertEquals(Set.of(), new HashSet<>(cache.keySet()));
      assertNull(cache.get(key(c, "size", 3)));
      assertFalse(cache.containsKey(key(c, "size", 3)));
   }

   @ParameterizedTest(name = NAME)
   @MethodSource("cases")
   void largeValueRoundTrip(Case c) {
      RemoteCache<String, byte[]> cache = proto(c);
      byte[] big = new byte[10 * 1024 * 1024];
      new Random(42).nextBytes(big);
      String k = key(c, "large", "10MiB");
      cache.put(k, big);
      assertArrayEquals(big, cache.get(k), "10 MiB value read back");
      MetadataValue<byte[]> m = cache.getWithMetadata(k);
      assertArrayEquals(big, m.getValue());
      // FORCE_RETURN_VALUE brings the large previous value back too
      byte[] prev = cache.withFlags(Flag.FORCE_RETURN_VALUE).put(k, new byte[] {1});
      assertArrayEquals(big, prev);
      cache.remove(k);
   }

   @ParameterizedTest(name = NAME)
   @MethodSource("cases")
   void pipelinedAsyncOperations(Case c) throws Exception {
      // a dedicated client with a single connection, so that every request in flight shares it
      // (the 16.x client multiplexes one connection anyway; the 15.x pool is capped at 1)
      RemoteCacheManager rcm = newManager(c, b -> b.connectionPool().maxActive(1));
      try {
         RemoteCache<String, String> cache = rcm.getCache(PROTO);
         assertNotNull(cache);
         int n = 2000;
         List<CompletableFuture<String>> puts = new ArrayList<>();
         for (int i = 0; i < n; i++) {
            puts.add(cache.putAsync(key(c, "pipe", i), "value-" + i));
         }
         CompletableFuture.allOf(puts.toArray(new CompletableFuture[0])).get(120, TimeUnit.SECONDS);

         // reads, overwrites and removes interleaved, all in flight at once
         List<CompletableFuture<String>> gets = new ArrayList<>();
         List<CompletableFuture<String>> overwrites = new ArrayList<>();
         List<CompletableFuture<Boolean>> containsAbsent = new ArrayList<>();
         Frv frv = () -> cache.withFlags(Flag.FORCE_RETURN_VALUE);
         for (int i = 0; i < n; i++) {
            gets.add(cache.getAsync(key(c, "pipe", i)));
            overwrites.add(frv.f().putAsync(key(c, "pipe2", i), "other-" + i));
            containsAbsent.add(cache.containsKeyAsync(key(c, "pipe-absent", i)));
         }
         for (int i = 0; i < n; i++) {
            assertEquals("value-" + i, gets.get(i).get(60, TimeUnit.SECONDS), "getAsync #" + i);
            assertNull(overwrites.get(i).get(60, TimeUnit.SECONDS), "putAsync with FORCE_RETURN_VALUE of a new key #" + i);
            assertFalse(containsAbsent.get(i).get(60, TimeUnit.SECONDS), "containsKeyAsync #" + i);
         }
         List<CompletableFuture<String>> removes = new ArrayList<>();
         for (int i = 0; i < n; i++) {
            removes.add(frv.f().removeAsync(key(c, "pipe2", i)));
         }
         for (int i = 0; i < n; i++) {
            assertEquals("other-" + i, removes.get(i).get(60, TimeUnit.SECONDS), "removeAsync #" + i);
         }
         for (int i = 0; i < n; i += 97) {
            assertEquals("value-" + i, cache.get(key(c, "pipe", i)));
            assertNull(cache.get(key(c, "pipe2", i)));
         }
      } finally {
         stopQuietly(rcm);
      }
   }

   /** A view with FORCE_RETURN_VALUE for the next operation. */
   interface Frv {
      RemoteCache<String, String> f();
   }

   static void assertBetween(long lo, long hi, long actual, String what) {
      assertTrue(actual >= lo && actual <= hi, what + ": " + actual + " not within [" + lo + ", " + hi + "]");
   }
}
