package ferrod.prototests;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.net.InetSocketAddress;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeSet;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.stream.Collectors;

import org.infinispan.client.hotrod.MetadataValue;
import org.infinispan.client.hotrod.RemoteCache;
import org.infinispan.client.hotrod.RemoteCacheManager;
import org.infinispan.client.hotrod.configuration.ClientIntelligence;
import org.infinispan.client.hotrod.configuration.ConfigurationBuilder;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestInstance;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

import ferrod.prototests.harness.PgDatabase;
import ferrod.prototests.harness.TargetProcess;
import ferrod.prototests.harness.Targets;
import ferrod.prototests.harness.TcpProxy;

/**
 * Three ferrod replicas over one PostgreSQL, driven by the Java client with each intelligence it
 * offers (README "Replicas and topology": ferrod never sends topology). Reached (a) through one
 * address, a TCP proxy standing in for a Kubernetes Service, and (b) with every replica's address
 * configured: operations work, failover works when a replica is killed, and the client's server
 * list stays what it was configured with (a topology would replace it: the Java client adopts
 * the servers a topology names, which behind a Service are addresses it must not use).
 * Also 16 clients over the 3 replicas racing replaceWithVersion increments on a few keys.
 */
@TestInstance(TestInstance.Lifecycle.PER_CLASS)
class ReplicasTopologyTest {

   static final String CACHE = HotRodTestBase.PROTO;

   PgDatabase db;
   final List<TargetProcess> replicas = new ArrayList<>();
   final String run = HotRodTestBase.RUN;

   @BeforeAll
   void startReplicas() {
      Assumptions.assumeTrue(Targets.selected().contains(Targets.FERROD), "ferrod-only: replicas of one database");
      db = PgDatabase.create("replicas_topology");
      for (int i = 0; i < 3; i++) {
         TargetProcess t = Targets.ferrodReplica("ReplicasTopologyTest-r" + i, db.url);
         replicas.add(t);
      }
      // all at once: migrations are safe under simultaneous startup
      replicas.parallelStream().forEach(TargetProcess::start);
   }

   @AfterAll
   void stopReplicas() {
      for (TargetProcess t : replicas) {
         try {
            t.close();
         } catch (RuntimeException e) {
            System.err.println("stopping " + t + ": " + e);
         }
      }
      if (db != null) {
         db.close();
      }
   }

   List<InetSocketAddress> addresses() {
      return replicas.stream().map(t -> new InetSocketAddress(t.host(), t.port())).toList();
   }

   static RemoteCacheManager client(ClientIntelligence intelligence, List<InetSocketAddress> servers) {
      ConfigurationBuilder b = new ConfigurationBuilder();
      for (InetSocketAddress a : servers) {
         b.addServer().host(a.getHostString()).port(a.getPort());
      }
      b.clientIntelligence(intelligence);
      b.connectionTimeout(5_000);
      b.socketTimeout(20_000);
      b.maxRetries(5);
      return new RemoteCacheManager(b.build(), true);
   }

   static Set<String> servers(RemoteCacheManager rcm) {
      return new TreeSet<>(Arrays.asList(rcm.getServers()));
   }

   static Set<String> names(List<InetSocketAddress> addrs) {
      return addrs.stream().map(a -> a.getHostString() + ":" + a.getPort()).collect(Collectors.toCollection(TreeSet::new));
   }

   /** Writes then reads n keys through the client; every operation must succeed. */
   static void workload(RemoteCache<String, String> cache, String prefix, int n) {
      for (int i = 0; i < n; i++) {
         cache.put(prefix + i, "v" + i);
      }
      for (int i = 0; i < n; i++) {
         assertEquals("v" + i, cache.get(prefix + i), prefix + i);
      }
   }

   /** The killed replica comes back (same port, same database) and serves what was written meanwhile. */
   void restartAndCheckCaughtUp(TargetProcess t, String prefix, int n) {
      t.start();
      try (RemoteCacheManager direct = client(ClientIntelligence.BASIC, List.of(new InetSocketAddress(t.host(), t.port())))) {
         RemoteCache<String, String> c = direct.getCache(CACHE);
         for (int i = 0; i < n; i++) {
            assertEquals("v" + i, c.get(prefix + i), "restarted replica serves " + prefix + i);
         }
      }
   }

   void scenario(ClientIntelligence intelligence, List<InetSocketAddress> configured, String label, int victim) {
      String prefix = "topo:" + label + ":" + intelligence + ":" + run + ":";
      RemoteCacheManager rcm = client(intelligence, configured);
      try {
         RemoteCache<String, String> cache = rcm.getCache(CACHE);
         assertNotNull(cache);
         Set<String> before = servers(rcm);
         assertEquals(names(configured), before, "the client starts with the configured servers");
         workload(cache, prefix + "a", 40);
         int topologyId = cache.getCacheTopologyInfo().getTopologyId();
         assertEquals(before, servers(rcm), "after operations the client still knows only the configured servers");

         replicas.get(victim).kill();
         workload(cache, prefix + "b", 40);
         assertEquals(before, servers(rcm), "after failover the client still knows only the configured servers");
         assertEquals(topologyId, cache.getCacheTopologyInfo().getTopologyId(), "no topology was installed");
         restartAndCheckCaughtUp(replicas.get(victim), prefix + "b", 40);
         workload(cache, prefix + "c", 20);
         assertEquals(before, servers(rcm));
      } finally {
         HotRodTestBase.stopQuietly(rcm);
         if (!replicas.get(victim).isAlive()) {
            replicas.get(victim).start();
         }
      }
   }

   @ParameterizedTest(name = "{0}")
   @EnumSource(ClientIntelligence.class)
   void oneServiceAddress(ClientIntelligence intelligence) {
      try (TcpProxy service = new TcpProxy(addresses())) {
         scenario(intelligence, List.of(new InetSocketAddress(service.host(), service.port())), "service",
               intelligence.ordinal() % 3);
      }
   }

   @ParameterizedTest(name = "{0}")
   @EnumSource(ClientIntelligence.class)
   void everyReplicaAddress(ClientIntelligence intelligence) {
      scenario(intelligence, addresses(), "direct", (intelligence.ordinal() + 1) % 3);
   }

   /**
    * 16 clients, spread over the 3 replicas, each running getWithMetadata + replaceWithVersion
    * increments on the same 3 keys: conditional writes are decided in SQL, so every key ends at
    * exactly its number of successful replaces, and no expected version wins twice.
    */
   @Test
   void sixteenClientsRaceReplaceWithVersion() throws Exception {
      String prefix = "race:" + run + ":";
      List<String> keys = List.of(prefix + "a", prefix + "b", prefix + "c");
      List<InetSocketAddress> addrs = addresses();
      List<RemoteCacheManager> clients = new ArrayList<>();
      ExecutorService pool = Executors.newFixedThreadPool(16);
      try {
         for (int i = 0; i < 16; i++) {
            clients.add(client(ClientIntelligence.HASH_DISTRIBUTION_AWARE, List.of(addrs.get(i % 3))));
         }
         RemoteCache<String, Integer> setup = clients.get(0).getCache(CACHE);
         for (String k : keys) {
            setup.put(k, 0);
         }
         Map<String, AtomicInteger> successes = new ConcurrentHashMap<>();
         Set<String> wonVersions = ConcurrentHashMap.newKeySet();
         List<String> duplicates = new ArrayList<>();
         AtomicInteger failures = new AtomicInteger();
         List<Future<?>> done = new ArrayList<>();
         for (int i = 0; i < 16; i++) {
            RemoteCache<String, Integer> cache = clients.get(i).getCache(CACHE);
            int id = i;
            done.add(pool.submit(() -> {
               for (int n = 0; n < 60; n++) {
                  String k = keys.get((id + n) % keys.size());
                  MetadataValue<Integer> mv = cache.getWithMetadata(k);
                  assertNotNull(mv, k);
                  if (cache.replaceWithVersion(k, mv.getValue() + 1, mv.getVersion())) {
                     successes.computeIfAbsent(k, x -> new AtomicInteger()).incrementAndGet();
                     if (!wonVersions.add(k + "@" + mv.getVersion())) {
                        synchronized (duplicates) {
                           duplicates.add(k + "@" + mv.getVersion());
                        }
                     }
                  } else {
                     failures.incrementAndGet();
                  }
               }
               return null;
            }));
         }
         for (Future<?> f : done) {
            f.get();
         }
         assertEquals(List.of(), duplicates, "two replaces with the same expected version both succeeded");
         int total = successes.values().stream().mapToInt(AtomicInteger::get).sum();
         System.out.printf("race: %d successful replaces, %d lost races%n", total, failures.get());
         assertTrue(total > 0);
         // Every replica converges on the same values: each key's value is its number of wins.
         for (int r = 0; r < 3; r++) {
            RemoteCache<String, Integer> cache = clients.get(r).getCache(CACHE);
            for (String k : keys) {
               int want = successes.getOrDefault(k, new AtomicInteger()).get();
               Integer got = null;
               for (int attempt = 0; attempt < 100; attempt++) {
                  got = cache.get(k);
                  if (got != null && got == want) {
                     break;
                  }
                  HotRodTestBase.sleepMs(100); // the other replicas' last writes arrive through the feed
               }
               assertEquals(want, got, k + " on replica " + r);
            }
         }
         Map<String, Integer> sqlVersionsWon = new HashMap<>();
         for (String v : wonVersions) {
            sqlVersionsWon.merge(v.substring(0, v.lastIndexOf('@')), 1, Integer::sum);
         }
         for (String k : keys) {
            assertEquals(successes.getOrDefault(k, new AtomicInteger()).get(), sqlVersionsWon.getOrDefault(k, 0));
         }
      } finally {
         pool.shutdownNow();
         clients.forEach(HotRodTestBase::stopQuietly);
      }
   }
}
