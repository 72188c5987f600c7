package ferrod.prototests;

import static org.junit.jupiter.api.Assertions.assertNotNull;

import java.util.LinkedHashMap;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.function.Consumer;
import java.util.stream.Stream;

import org.infinispan.client.hotrod.RemoteCache;
import org.infinispan.client.hotrod.RemoteCacheManager;
import org.infinispan.client.hotrod.configuration.ConfigurationBuilder;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.TestInstance;
import org.junit.jupiter.params.provider.Arguments;

import ferrod.prototests.harness.Case;
import ferrod.prototests.harness.TargetProcess;
import ferrod.prototests.harness.Targets;

/**
 * One server per target per test class (started on first use, stopped after the class), one
 * RemoteCacheManager per (target, protocol version). Subclasses write
 * {@code @ParameterizedTest(name = NAME) @MethodSource("cases") void scenario(Case c)}.
 */
@TestInstance(TestInstance.Lifecycle.PER_CLASS)
public abstract class HotRodTestBase {

   public static final String NAME = "{0}";

   public static final String PROTO = "proto";
   public static final String EXPIRING = "expiring";

   private final Map<String, TargetProcess> targets = new LinkedHashMap<>();
   private final Map<String, RuntimeException> startFailures = new LinkedHashMap<>();
   private final Map<Case, RemoteCacheManager> managers = new ConcurrentHashMap<>();

   Stream<Arguments> cases() {
      return Case.all().stream().map(Arguments::of);
   }

   /** The running server for a target (started on first use; restarted if it died since). */
   protected synchronized TargetProcess target(String kind) {
      RuntimeException failed = startFailures.get(kind);
      if (failed != null) {
         throw new IllegalStateException(kind + " could not be started for " + getClass().getSimpleName()
               + ": " + failed.getMessage(), failed);
      }
      TargetProcess t = targets.get(kind);
      if (t == null) {
         try {
            t = Targets.create(kind, getClass().getSimpleName(), ferrodArgs());
            t.start();
         } catch (RuntimeException e) {
            startFailures.put(kind, e);
            throw e;
         }
         targets.put(kind, t);
      } else {
         Integer died = t.deathStatus();
         if (died != null) {
            System.err.printf("WARNING: %s died with status %d; restarting it. Log tail:%n%s%n", t, died, t.logTail(30));
            closeManagers(kind);
            t.start();
            throw new IllegalStateException(t.name() + " had died (exit status " + died + ") during an earlier test"
                  + " and was restarted; log " + t.log());
         }
      }
      return t;
   }

   /** Extra command-line arguments for ferrod targets of this class (e.g. a credentials file). */
   protected java.util.List<String> ferrodArgs() {
      return java.util.List.of();
   }

   protected TargetProcess target(Case c) {
      return target(c.target());
   }

   /** The shared client of a case. */
   protected RemoteCacheManager rcm(Case c) {
      TargetProcess t = target(c);
      return managers.computeIfAbsent(c, k -> newManager(k, t, b -> {}));
   }

   /** A dedicated client (the caller stops it). */
   protected RemoteCacheManager newManager(Case c, Consumer<ConfigurationBuilder> customizer) {
      return newManager(c, target(c), customizer);
   }

   private static RemoteCacheManager newManager(Case c, TargetProcess t, Consumer<ConfigurationBuilder> customizer) {
      ConfigurationBuilder b = new ConfigurationBuilder();
      b.addServer().host(t.host()).port(t.port());
      b.version(c.version());
      b.connectionTimeout(10_000);
      b.socketTimeout(60_000);
      customizer.accept(b);
      return new RemoteCacheManager(b.build(), true);
   }

   protected <K, V> RemoteCache<K, V> cache(Case c, String name) {
      RemoteCache<K, V> cache = rcm(c).getCache(name);
      assertNotNull(cache, "getCache(\"" + name + "\") returned null");
      return cache;
   }

   protected <K, V> RemoteCache<K, V> proto(Case c) {
      return cache(c, PROTO);
   }

   /**
    * Differs per test JVM, so that runs sharing one database (FERROD_DATABASE_URL: both client
    * modules, earlier runs) never see each other's keys.
    */
   static final String RUN = Long.toString(Math.abs(new java.security.SecureRandom().nextLong()) % 1_000_000_000L, 36);

   /** A key unique to this test, case and run, so tests sharing one server never see each other's data. */
   protected static String key(Case c, String test, Object suffix) {
      return test + ":" + c.id() + ":" + RUN + ":" + suffix;
   }

   private void closeManagers(String kind) {
      managers.entrySet().removeIf(e -> {
         if (e.getKey().target().equals(kind)) {
            stopQuietly(e.getValue());
            return true;
         }
         return false;
      });
   }

   @AfterAll
   void stopTargets() {
      managers.values().forEach(HotRodTestBase::stopQuietly);
      managers.clear();
      for (TargetProcess t : targets.values()) {
         try {
            t.close();
         } catch (RuntimeException e) {
            System.err.println("stopping " + t + ": " + e);
         }
      }
      targets.clear();
   }

   static void stopQuietly(RemoteCacheManager m) {
      try {
         m.stop();
      } catch (RuntimeException e) {
         System.err.println("stopping client: " + e);
      }
   }

   protected static void sleepMs(long ms) {
      try {
         Thread.sleep(Math.max(0, ms));
      } catch (InterruptedException e) {
         Thread.currentThread().interrupt();
         throw new IllegalStateException(e);
      }
   }
}
