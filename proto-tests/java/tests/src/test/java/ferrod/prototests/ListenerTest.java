package ferrod.prototests;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;

import org.infinispan.client.hotrod.Flag;
import org.infinispan.client.hotrod.RemoteCache;
import org.infinispan.client.hotrod.RemoteCacheManager;
import org.infinispan.client.hotrod.annotation.ClientCacheEntryCreated;
import org.infinispan.client.hotrod.annotation.ClientCacheEntryExpired;
import org.infinispan.client.hotrod.annotation.ClientCacheEntryModified;
import org.infinispan.client.hotrod.annotation.ClientCacheEntryRemoved;
import org.infinispan.client.hotrod.annotation.ClientListener;
import org.infinispan.client.hotrod.event.ClientCacheEntryCreatedEvent;
import org.infinispan.client.hotrod.event.ClientCacheEntryExpiredEvent;
import org.infinispan.client.hotrod.event.ClientCacheEntryModifiedEvent;
import org.infinispan.client.hotrod.event.ClientCacheEntryRemovedEvent;
import org.infinispan.client.hotrod.event.ClientEvent;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;

import ferrod.prototests.harness.Case;

/**
 * Client listeners as Keycloak registers them (a plain {@code @ClientListener}, created/modified/
 * removed, plus expired): events for writes made by another client, carrying the entry versions.
 */
class ListenerTest extends HotRodTestBase {

   /** One event as received: type, key, version (0 where the event has none). */
   record Ev(ClientEvent.Type type, Object key, long version) {
   }

   @ClientListener
   public static final class Recorder {
      final BlockingQueue<Ev> events = new LinkedBlockingQueue<>();

      @ClientCacheEntryCreated
      public void created(ClientCacheEntryCreatedEvent<Object> e) {
         events.add(new Ev(e.getType(), e.getKey(), e.getVersion()));
      }

      @ClientCacheEntryModified
      public void modified(ClientCacheEntryModifiedEvent<Object> e) {
         events.add(new Ev(e.getType(), e.getKey(), e.getVersion()));
      }

      @ClientCacheEntryRemoved
      public void removed(ClientCacheEntryRemovedEvent<Object> e) {
         events.add(new Ev(e.getType(), e.getKey(), 0));
      }

      @ClientCacheEntryExpired
      public void expired(ClientCacheEntryExpiredEvent<Object> e) {
         events.add(new Ev(e.getType(), e.getKey(), 0));
      }

      /** Next event about one of our keys (other tests' events are skipped). */
      Ev next(String prefix, long timeoutMs) throws InterruptedException {
         long deadline = System.currentTimeMillis() + timeoutMs;
         while (true) {
            Ev e = events.poll(Math.max(1, deadline - System.currentTimeMillis()), TimeUnit.MILLISECONDS);
            if (e == null) {
               return null;
            }
            if (String.valueOf(e.key()).startsWith(prefix)) {
               return e;
            }
         }
      }
   }

   @ParameterizedTest(name = NAME)
   @MethodSource("cases")
   void eventsForAnotherClientsWrites(Case c) throws Exception {
      String prefix = key(c, "listen", "");
      RemoteCache<String, String> listening = proto(c);
      Recorder recorder = new Recorder();
      listening.addClientListener(recorder);
      RemoteCacheManager other = newManager(c, b -> {});
      try {
         RemoteCache<String, String> writer = other.getCache(PROTO);
         String a = prefix + "a";
         String b = prefix + "b";
         writer.put(a, "1");
         long va1 = writer.getWithMetadata(a).getVersion();
         writer.put(a, "2");
         long va2 = writer.getWithMetadata(a).getVersion();
         assertTrue(writer.replaceWithVersion(a, "3", va2));
         long va3 = writer.getWithMetadata(a).getVersion();
         writer.putIfAbsent(b, "x");
         long vb = writer.getWithMetadata(b).getVersion();
         writer.putIfAbsent(b, "not written"); // no event: nothing changed
         writer.withFlags(Flag.SKIP_LISTENER_NOTIFICATION).put(b, "silent");
         long vbSilent = writer.getWithMetadata(b).getVersion();
         writer.remove(a);
         // (a remove of a missing key is not done here: Infinispan raises a removed event for it)
         writer.putAll(Map.of(prefix + "c", "c"));
         long vc = writer.getWithMetadata(prefix + "c").getVersion();

         List<Ev> expected = List.of(
               new Ev(ClientEvent.Type.CLIENT_CACHE_ENTRY_CREATED, a, va1),
               new Ev(ClientEvent.Type.CLIENT_CACHE_ENTRY_MODIFIED, a, va2),
               new Ev(ClientEvent.Type.CLIENT_CACHE_ENTRY_MODIFIED, a, va3),
               new Ev(ClientEvent.Type.CLIENT_CACHE_ENTRY_CREATED, b, vb),
               new Ev(ClientEvent.Type.CLIENT_CACHE_ENTRY_REMOVED, a, 0),
               new Ev(ClientEvent.Type.CLIENT_CACHE_ENTRY_CREATED, prefix + "c", vc));
         List<Ev> got = new ArrayList<>();
         for (int i = 0; i < expected.size(); i++) {
            Ev e = recorder.next(prefix, 10_000);
            assertNotNull(e, "event #" + i + " (" + expected.get(i) + ") not received; got so far " + got);
            got.add(e);
         }
         assertEquals(expected, got, "events in order, with the versions getWithMetadata reports (the put of " + b
               + " with SKIP_LISTENER_NOTIFICATION wrote version " + vbSilent + " and must raise no event)");
         assertNull(recorder.next(prefix, 500), "no further events (a no-op putIfAbsent and a SKIP_LISTENER_NOTIFICATION put raise none)");

         listening.removeClientListener(recorder);
         writer.put(prefix + "after-removal", "x");
         assertNull(recorder.next(prefix, 1000), "no event after removeClientListener");
      } finally {
         stopQuietly(other);
      }
   }

   @ParameterizedTest(name = NAME)
   @MethodSource("cases")
   void expiredEvent(Case c) throws Exception {
      String prefix = key(c, "listen-exp", "");
      RemoteCache<String, String> cache = proto(c);
      Recorder recorder = new Recorder();
      cache.addClientListener(recorder);
      try {
         String k = prefix + "k";
         cache.put(k, "v", 300, TimeUnit.MILLISECONDS);
         Ev created = recorder.next(prefix, 10_000);
         assertNotNull(created);
         assertEquals(ClientEvent.Type.CLIENT_CACHE_ENTRY_CREATED, created.type());
         Thread.sleep(500);
         // a read of the expired entry makes Infinispan notice; a server with a reaper may be first
         assertNull(cache.get(k));
         Ev expired = recorder.next(prefix, 10_000);
         assertNotNull(expired, "no expired event within 10 s of the expiry");
         assertEquals(new Ev(ClientEvent.Type.CLIENT_CACHE_ENTRY_EXPIRED, k, 0), expired);
      } finally {
         cache.removeClientListener(recorder);
      }
   }
}
