package ferrod.prototests;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Set;
import java.util.concurrent.Callable;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;

import org.infinispan.client.hotrod.Flag;
import org.infinispan.client.hotrod.MetadataValue;
import org.infinispan.client.hotrod.RemoteCache;
import org.infinispan.client.hotrod.RemoteCacheManager;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;

import ferrod.prototests.harness.Case;

/**
 * Conditional writes racing from several clients (separate RemoteCacheManagers, so separate
 * connections): exactly one writer wins each round, as Keycloak's read-then-replaceWithVersion
 * loops rely on.
 */
class ConcurrencyTest extends HotRodTestBase {

   static final int CLIENTS = 4;

   @ParameterizedTest(name = NAME)
   @MethodSource("cases")
   void optimisticIncrementsWithReplaceWithVersion(Case c) throws Exception {
      String k = key(c, "counter", "k");
      proto(c).put(k, "0");
      int perClient = 40;
      List<RemoteCacheManager> clients = clients(c);
      ExecutorService pool = Executors.newFixedThreadPool(CLIENTS);
      AtomicInteger conflicts = new AtomicInteger();
      try {
         List<Future<Set<Long>>> results = new ArrayList<>();
         for (RemoteCacheManager rcm : clients) {
            RemoteCache<String, String> cache = rcm.getCache(PROTO);
            assertNotNull(cache);
            results.add(pool.submit(() -> {
               Set<Long> wonWith = new HashSet<>();
               for (int done = 0; done < perClient; ) {
                  MetadataValue<String> m = cache.getWithMetadata(k);
                  int n = Integer.parseInt(m.getValue());
                  if (cache.replaceWithVersion(k, Integer.toString(n + 1), m.getVersion())) {
                     assertTrue(wonWith.add(m.getVersion()), "won twice with version " + m.getVersion());
                     done++;
                  } else {
                     conflicts.incrementAndGet();
                  }
               }
               return wonWith;
            }));
         }
         Set<Long> allWins = new HashSet<>();
         for (Future<Set<Long>> f : results) {
            for (long v : f.get(120, TimeUnit.SECONDS)) {
               assertTrue(allWins.add(v), "two clients both won a replaceWithVersion with version " + v);
            }
         }
         assertEquals(Integer.toString(CLIENTS * perClient), proto(c).get(k),
               "every successful replaceWithVersion counted exactly once (" + conflicts.get() + " conflicts)");
      } finally {
         pool.shutdownNow();
         clients.forEach(HotRodTestBase::stopQuietly);
      }
   }

   @ParameterizedTest(name = NAME)
   @MethodSource("cases")
   void racingPutIfAbsentHasOneWinner(Case c) throws Exception {
      int keys = 50;
      List<RemoteCacheManager> clients = clients(c);
      ExecutorService pool = Executors.newFixedThreadPool(CLIENTS);
      try {
         List<Future<List<String>>> results = new ArrayList<>();
         for (int i = 0; i < CLIENTS; i++) {
            RemoteCache<String, String> cache = clients.get(i).getCache(PROTO);
            String me = "client-" + i;
            Callable<List<String>> task = () -> {
               List<String> won = new ArrayList<>();
               for (int j = 0; j < keys; j++) {
                  String k = key(c, "pia-race", j);
                  String prev = cache.withFlags(Flag.FORCE_RETURN_VALUE).putIfAbsent(k, me);
                  if (prev == null) {
                     won.add(k);
                  }
               }
               return won;
            };
            results.add(pool.submit(task));
         }
         Set<String> winners = new HashSet<>();
         int wins = 0;
         for (Future<List<String>> f : results) {
            List<String> won = f.get(120, TimeUnit.SECONDS);
            wins += won.size();
            winners.addAll(won);
         }
         assertEquals(keys, winners.size(), "every key has a winner");
         assertEquals(keys, wins, "exactly one putIfAbsent per key saw no previous value");
         // the stored value is the winner's
         RemoteCache<String, String> cache = proto(c);
         for (int j = 0; j < keys; j++) {
            assertNotNull(cache.get(key(c, "pia-race", j)));
         }
      } finally {
         pool.shutdownNow();
         clients.forEach(HotRodTestBase::stopQuietly);
      }
   }

   @ParameterizedTest(name = NAME)
   @MethodSource("cases")
   void racingRemoveWithVersionHasOneWinner(Case c) throws Exception {
      int keys = 40;
      RemoteCache<String, String> cache = proto(c);
      List<Long> versions = new ArrayList<>();
      for (int j = 0; j < keys; j++) {
         String k = key(c, "rwv-race", j);
         cache.put(k, "v");
         versions.add(cache.getWithMetadata(k).getVersion());
      }
      List<RemoteCacheManager> clients = clients(c);
      ExecutorService pool = Executors.newFixedThreadPool(CLIENTS);
      try {
         List<Future<Integer>> results = new ArrayList<>();
         for (RemoteCacheManager rcm : clients) {
            RemoteCache<String, String> mine = rcm.getCache(PROTO);
            results.add(pool.submit(() -> {
               int won = 0;
               for (int j = 0; j < keys; j++) {
                  if (mine.removeWithVersion(key(c, "rwv-race", j), versions.get(j))) {
                     won++;
                  }
               }
               return won;
            }));
         }
         int wins = 0;
         for (Future<Integer> f : results) {
            wins += f.get(120, TimeUnit.SECONDS);
         }
         assertEquals(keys, wins, "exactly one removeWithVersion per key succeeds");
         for (int j = 0; j < keys; j++) {
            assertEquals(null, cache.get(key(c, "rwv-race", j)));
         }
      } finally {
         pool.shutdownNow();
         clients.forEach(HotRodTestBase::stopQuietly);
      }
   }

   private List<RemoteCacheManager> clients(Case c) {
      List<RemoteCacheManager> out = new ArrayList<>();
      for (int i = 0; i < CLIENTS; i++) {
         out.add(newManager(c, b -> {}));
      }
      return out;
   }
}
