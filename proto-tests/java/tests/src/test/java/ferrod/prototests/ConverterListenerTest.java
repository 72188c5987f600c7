package ferrod.prototests;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;

import java.util.concurrent.BlockingQueue;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;

import org.infinispan.client.hotrod.RemoteCache;
import org.infinispan.client.hotrod.annotation.ClientCacheEntryCreated;
import org.infinispan.client.hotrod.annotation.ClientCacheEntryModified;
import org.infinispan.client.hotrod.annotation.ClientCacheEntryRemoved;
import org.infinispan.client.hotrod.annotation.ClientListener;
import org.infinispan.client.hotrod.event.ClientCacheEntryCustomEvent;
import org.infinispan.client.hotrod.event.ClientEvent;
import org.infinispan.commons.util.KeyValueWithPrevious;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;

import ferrod.prototests.harness.Case;

/**
 * The server-side converter clients name for "key, new value and previous value" events
 * ({@code key-value-with-previous-converter-factory}, what JCache-over-HotRod registers): the
 * Java client receives {@link KeyValueWithPrevious} objects for created, modified and removed.
 */
class ConverterListenerTest extends HotRodTestBase {

   record Got(ClientEvent.Type type, Object data) {
   }

   @ClientListener(converterFactoryName = "key-value-with-previous-converter-factory")
   public static final class WithPrevious {
      final BlockingQueue<Got> events = new LinkedBlockingQueue<>();

      @ClientCacheEntryCreated
      @ClientCacheEntryModified
      @ClientCacheEntryRemoved
      public void on(ClientCacheEntryCustomEvent<Object> e) {
         events.add(new Got(e.getType(), e.getEventData()));
      }

      /** The next event about a key with this prefix (other tests' events are skipped). */
      Got next(String prefix) throws InterruptedException {
         long deadline = System.currentTimeMillis() + 10_000;
         while (true) {
            Got g = events.poll(Math.max(1, deadline - System.currentTimeMillis()), TimeUnit.MILLISECONDS);
            if (g == null) {
               return null;
            }
            if (g.data() instanceof KeyValueWithPrevious<?, ?> kv && String.valueOf(kv.getKey()).startsWith(prefix)) {
               return g;
            }
            if (!(g.data() instanceof KeyValueWithPrevious<?, ?>)) {
               return g; // the wrong shape: let the assertion show it
            }
         }
      }
   }

   private static void assertKvp(Got g, ClientEvent.Type type, String key, String value, String prev) {
      assertNotNull(g, "no " + type + " event for " + key);
      assertEquals(type, g.type());
      KeyValueWithPrevious<?, ?> kv = assertInstanceOf(KeyValueWithPrevious.class, g.data());
      assertEquals(key, kv.getKey(), "key");
      assertEquals(value, kv.getValue(), "value");
      assertEquals(prev, kv.getPrev(), "previous value");
   }

   @ParameterizedTest(name = NAME)
   @MethodSource("cases")
   void keyValueWithPrevious(Case c) throws Exception {
      String prefix = key(c, "kvp", "");
      // KeyValueWithPrevious is a protostream message of infinispan-commons: the client needs
      // its schema to read it (JCache-over-HotRod registers it the same way).
      var rcm = newManager(c, b -> b.addContextInitializer(new org.infinispan.commons.GlobalContextInitializerImpl()));
      RemoteCache<String, String> cache = rcm.getCache(PROTO);
      WithPrevious l = new WithPrevious();
      cache.addClientListener(l);
      try {
         String k = prefix + "k";
         cache.put(k, "one");
         assertKvp(l.next(prefix), ClientEvent.Type.CLIENT_CACHE_ENTRY_CREATED, k, "one", null);
         cache.put(k, "two");
         assertKvp(l.next(prefix), ClientEvent.Type.CLIENT_CACHE_ENTRY_MODIFIED, k, "two", "one");
         long v = cache.getWithMetadata(k).getVersion();
         cache.replaceWithVersion(k, "three", v);
         assertKvp(l.next(prefix), ClientEvent.Type.CLIENT_CACHE_ENTRY_MODIFIED, k, "three", "two");
         cache.remove(k);
         assertKvp(l.next(prefix), ClientEvent.Type.CLIENT_CACHE_ENTRY_REMOVED, k, null, "three");
      } finally {
         cache.removeClientListener(l);
         stopQuietly(rcm);
      }
   }
}
