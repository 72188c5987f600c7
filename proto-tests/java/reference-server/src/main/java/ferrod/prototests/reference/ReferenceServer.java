package ferrod.prototests.reference;

import java.lang.reflect.Method;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.concurrent.CountDownLatch;

import org.infinispan.configuration.cache.CacheMode;
import org.infinispan.configuration.cache.ConfigurationBuilder;
import org.infinispan.configuration.global.GlobalConfigurationBuilder;
import org.infinispan.manager.DefaultCacheManager;
import org.infinispan.rest.RestServer;
import org.infinispan.rest.configuration.RestServerConfigurationBuilder;
import org.infinispan.server.hotrod.HotRodServer;
import org.infinispan.server.hotrod.configuration.HotRodServerConfigurationBuilder;

/**
 * A real Infinispan HotRod server (embedded cache manager + HotRodServer), used as the reference
 * target of the proto-tests. Usage: {@code ReferenceServer <port> <data-dir>}.
 *
 * <p>Caches (all local, each persisted in a soft-index file store under data-dir):
 * <ul>
 *   <li>{@code default} (the container's default cache, reached with the empty cache name):
 *       no encoding declared, i.e. application/unknown</li>
 *   <li>{@code proto}: application/x-protostream</li>
 *   <li>{@code text}: text/plain; charset=UTF-8</li>
 *   <li>{@code raw}: application/octet-stream</li>
 *   <li>{@code expiring}: application/x-protostream, default lifespan 2000 ms</li>
 * </ul>
 * With the environment variable {@code REFERENCE_REST_PORT} set, Infinispan's REST endpoint is
 * served on that port too (the reference for ferrod's REST answers on its HotRod port).
 * Prints {@code READY} on stdout once the endpoint accepts connections. SIGTERM (or SIGINT) stops
 * the server and the cache manager gracefully, so the stores are closed cleanly.
 */
public final class ReferenceServer {

   static final String PROTOSTREAM = "application/x-protostream";

   public static void main(String[] args) {
      try {
         run(args);
      } catch (Throwable t) {
         System.err.println("reference server failed to start: " + t);
         t.printStackTrace();
         System.exit(1);
      }
   }

   private static void run(String[] args) throws Exception {
      if (args.length != 2) {
         System.err.println("usage: ReferenceServer <port> <data-dir>");
         System.exit(2);
      }
      int port = Integer.parseInt(args[0]);
      Path data = Paths.get(args[1]).toAbsolutePath();
      Files.createDirectories(data);

      GlobalConfigurationBuilder global = new GlobalConfigurationBuilder().nonClusteredDefault();
      global.cacheContainer().name("ferrod-reference").statistics(true);
      global.globalState().enable()
            .persistentLocation(data.toString())
            .sharedPersistentLocation(data.toString())
            .temporaryLocation(data.resolve("tmp").toString());
      global.defaultCacheName("default");
      global.shutdown().hookBehavior(org.infinispan.configuration.global.ShutdownHookBehavior.DONT_REGISTER);

      Map<String, ConfigurationBuilder> caches = new LinkedHashMap<>();
      // no encoding: reported to clients as application/unknown, like a server cache declared
      // without <encoding> (and like ferrod's built-in default cache)
      caches.put("default", cache(data, "default", null, -1));
      caches.put("proto", cache(data, "proto", PROTOSTREAM, -1));
      caches.put("text", cache(data, "text", "text/plain; charset=UTF-8", -1));
      caches.put("raw", cache(data, "raw", "application/octet-stream", -1));
      caches.put("expiring", cache(data, "expiring", PROTOSTREAM, 2000));

      DefaultCacheManager cacheManager = new DefaultCacheManager(global.build(), false);
      for (Map.Entry<String, ConfigurationBuilder> e : caches.entrySet()) {
         cacheManager.defineConfiguration(e.getKey(), e.getValue().build());
      }
      cacheManager.start();
      for (String name : caches.keySet()) {
         cacheManager.getCache(name);
      }

      // REST first: the harness waits for the HotRod port, so REST is up when that accepts.
      String restPort = System.getenv("REFERENCE_REST_PORT");
      RestServer rest = null;
      if (restPort != null && !restPort.isBlank()) {
         RestServerConfigurationBuilder restConfig = new RestServerConfigurationBuilder();
         restConfig.host("127.0.0.1").port(Integer.parseInt(restPort.trim())).name("rest");
         rest = new RestServer();
         // Outside Infinispan's server launcher nothing provides the server-management view the
         // REST resources consult; a minimal one: running, this cache manager, no logins.
         rest.setServerManagement(serverManagement(cacheManager), true);
         rest.start(restConfig.build(), cacheManager);
         rest.postStart();
      }
      RestServer restServer = rest;

      HotRodServerConfigurationBuilder serverConfig = new HotRodServerConfigurationBuilder();
      serverConfig.host("127.0.0.1").port(port).defaultCacheName("default").name("hotrod");
      // 16.x servers reject requests larger than max-content-length (default 10MB, i.e. 10^7
      // bytes); the suite sends a 10 MiB value, so raise it where the setting exists (not in 15.0).
      setIfPresent(serverConfig, "maxContentLength", "256MiB");

      HotRodServer server = new HotRodServer();
      server.start(serverConfig.build(), cacheManager);
      server.postStart();

      CountDownLatch stopped = new CountDownLatch(1);
      Runtime.getRuntime().addShutdownHook(new Thread(() -> {
         try {
            server.stop();
         } catch (Throwable t) {
            t.printStackTrace();
         }
         if (restServer != null) {
            try {
               restServer.stop();
            } catch (Throwable t) {
               t.printStackTrace();
            }
         }
         try {
            cacheManager.stop();
         } catch (Throwable t) {
            t.printStackTrace();
         }
         System.err.println("reference server stopped");
         stopped.countDown();
      }, "reference-server-shutdown"));

      System.out.println("READY");
      System.out.flush();
      stopped.await();
   }

   private static org.infinispan.server.core.ServerManagement serverManagement(DefaultCacheManager cacheManager) {
      return (org.infinispan.server.core.ServerManagement) java.lang.reflect.Proxy.newProxyInstance(
            ReferenceServer.class.getClassLoader(),
            new Class<?>[]{org.infinispan.server.core.ServerManagement.class},
            (proxy, method, args) -> switch (method.getName()) {
               case "getStatus" -> org.infinispan.lifecycle.ComponentStatus.RUNNING;
               case "getCacheManager" -> cacheManager;
               case "getLoginConfiguration", "getProtocolServers", "getDataSources", "getUsers" -> Map.of();
               case "toString" -> "reference-server management";
               case "hashCode" -> System.identityHashCode(proxy);
               case "equals" -> proxy == args[0];
               default -> null;
            });
   }

   private static ConfigurationBuilder cache(Path data, String name, String mediaType, long lifespanMs) {
      ConfigurationBuilder b = new ConfigurationBuilder();
      b.clustering().cacheMode(CacheMode.LOCAL);
      b.statistics().enable();
      if (mediaType != null) {
         b.encoding().key().mediaType(mediaType);
         b.encoding().value().mediaType(mediaType);
      }
      if (lifespanMs > 0) {
         b.expiration().lifespan(lifespanMs);
      }
      // REFERENCE_SERVER_STORE=none: memory only, as a Keycloak deployment's external
      // Infinispan runs its session caches (benches/run.sh measures both).
      if ("none".equals(System.getenv("REFERENCE_SERVER_STORE"))) {
         return b;
      }
      b.persistence()
            .addSoftIndexFileStore()
            .dataLocation(data.resolve(name).resolve("data").toString())
            .indexLocation(data.resolve(name).resolve("index").toString())
            .preload(true)
            .purgeOnStartup(false);
      return b;
   }

   private static void setIfPresent(Object builder, String method, String value) {
      for (Method m : builder.getClass().getMethods()) {
         if (m.getName().equals(method) && m.getParameterCount() == 1 && m.getParameterTypes()[0] == String.class) {
            try {
               m.invoke(builder, value);
            } catch (ReflectiveOperationException e) {
               throw new IllegalStateException(e);
            }
            return;
         }
      }
   }
}
