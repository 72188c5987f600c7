package ferrod.prototests;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.io.IOException;
import java.io.InputStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.KeyStore;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.CompletionStage;
import java.util.concurrent.TimeUnit;
import java.util.stream.Collectors;
import java.util.stream.Stream;

import javax.net.ssl.SSLContext;
import javax.net.ssl.TrustManagerFactory;

import org.infinispan.client.rest.RestClient;
import org.infinispan.client.rest.RestResponse;
import org.infinispan.client.rest.configuration.RestClientConfigurationBuilder;
import org.infinispan.commons.dataconversion.internal.Json;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestInstance;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;

import ferrod.prototests.harness.TargetProcess;
import ferrod.prototests.harness.Targets;
import ferrod.prototests.harness.TestPki;

/**
 * Infinispan's own REST client making exactly the calls of Keycloak's multi-site health check
 * ({@code RestInfinispanManagement}: container {@code backupStatuses()}, {@code info()},
 * {@code takeOffline(site)}), read the way Keycloak reads them, against ferrod (on its HotRod
 * port) and the reference server (Infinispan's REST endpoint, without cross-site replication).
 */
@TestInstance(TestInstance.Lifecycle.PER_CLASS)
class RestTest {

   private final Map<String, TargetProcess> targets = new LinkedHashMap<>();
   private final List<RestClient> clients = new ArrayList<>();
   private Path work;

   Stream<String> targetNames() {
      return Targets.selected().stream();
   }

   private synchronized TargetProcess target(String kind) {
      return targets.computeIfAbsent(kind, k -> {
         TargetProcess t = Targets.create(k, "RestTest");
         t.start();
         return t;
      });
   }

   @AfterAll
   void stop() {
      for (RestClient c : clients) {
         try {
            c.close();
         } catch (Exception ignored) {
            // best effort
         }
      }
      targets.values().forEach(TargetProcess::close);
      if (work != null) {
         try (var walk = Files.walk(work)) {
            walk.sorted(java.util.Comparator.reverseOrder()).forEach(p -> p.toFile().delete());
         } catch (IOException ignored) {
            // best effort
         }
      }
   }

   /** Configured as RestInfinispanManagement.fromRemoteCacheManager configures it. */
   private RestClient client(String host, int port, SSLContext ssl, javax.net.ssl.TrustManager[] trustManagers,
                             String sniHost) {
      RestClientConfigurationBuilder b = new RestClientConfigurationBuilder();
      b.followRedirects(true).tcpKeepAlive(false).socketTimeout(60_000);
      b.addServer().host(host).port(port);
      if (ssl != null) {
         // Keycloak copies the HotRod client's SSLContext and SNI host name; this REST client
         // version also insists on the trust managers behind the context.
         b.security().ssl().enable().sslContext(ssl).trustManagers(trustManagers).sniHostName(sniHost);
      }
      RestClient c = RestClient.forConfiguration(b.build());
      clients.add(c);
      return c;
   }

   private static RestResponse await(CompletionStage<RestResponse> stage) throws Exception {
      RestResponse r = stage.toCompletableFuture().get(60, TimeUnit.SECONDS);
      assertNotNull(r, "null REST response");
      return r;
   }

   /** SiteHealthImpl's three calls, with Keycloak's checks. */
   private static void keycloakCalls(RestClient rest, String target) throws Exception {
      // siteStatus(): backupStatuses(), 200, a JSON object of site -> {status}
      RestResponse statuses = await(rest.container().backupStatuses());
      assertEquals(200, statuses.status(), target + " backupStatuses: " + statuses.body());
      Map<String, Object> sites = Json.read(statuses.body()).asMap();
      assertTrue(sites.isEmpty(), target + ": no backup sites expected, got " + sites);

      // siteConnection(): info(), 200, local_site (null = not cross-site) and sites_view
      RestResponse info = await(rest.container().info());
      assertEquals(200, info.status(), target + " info: " + info.body());
      Json data = Json.read(info.body());
      String localSite = data.at("local_site").isNull() ? null : data.at("local_site").asString();
      Set<String> view = data.at("sites_view").asJsonList().stream().map(Json::asString).collect(Collectors.toSet());
      assertTrue(view.isEmpty(), target + ": sites_view should be empty: " + view);
      // SiteHealthImpl: local_site null ("cross-site disabled") or no backup statuses = healthy.
      // A non-clustered Infinispan names its local site "local"; ferrod answers null.
      assertTrue(localSite == null || sites.isEmpty(), target + ": Keycloak would not see a healthy site");
      if (target.startsWith(Targets.FERROD)) {
         assertEquals(null, localSite, info.body());
      }

      // disconnect(sites): takeOffline(site), awaited
      RestResponse offline = await(rest.container().takeOffline("site-b"));
      assertEquals(200, offline.status(), target + " takeOffline: " + offline.body());
      assertTrue(Json.read(offline.body()).asMap().isEmpty(), target + " takeOffline: " + offline.body());
   }

   @ParameterizedTest(name = "{0}")
   @MethodSource("targetNames")
   void keycloakMultiSiteHealthCalls(String kind) throws Exception {
      TargetProcess t = target(kind);
      keycloakCalls(client(t.host(), t.httpPort(), null, null, null), kind);
   }

   @ParameterizedTest(name = "{0}")
   @MethodSource("targetNames")
   void healthStatusForProbes(String kind) throws Exception {
      TargetProcess t = target(kind);
      RestClient rest = client(t.host(), t.httpPort(), null, null, null);
      RestResponse r = await(rest.container().healthStatus());
      assertEquals(200, r.status(), kind + " health status: " + r.body());
      assertEquals("HEALTHY", r.body());
      RestResponse h = await(rest.container().health());
      assertEquals(200, h.status(), kind + " health: " + h.body());
      assertEquals("HEALTHY", Json.read(h.body()).at("cluster_health").at("health_status").asString(), h.body());
   }

   /** ferrod only: the REST calls over TLS on the HotRod port, with Keycloak's SSLContext and SNI. */
   @Test
   void keycloakCallsOverTlsOnTheHotRodPort() throws Exception {
      assumeTrue(Targets.selected().contains(Targets.FERROD), "ferrod only");
      work = Files.createTempDirectory("ferrod-rest-tls-");
      TestPki pki = new TestPki(work);
      pki.ca("ca", "proto-tests CA");
      pki.leaf("server", "ca", "ferrod", false, "localhost");
      pki.truststore("trust", "ca");
      TargetProcess t = Targets.create(Targets.FERROD, "RestTest-tls", List.of(
            "--tls-certificate", pki.file("server.pem").toString(),
            "--tls-private-key", pki.file("server.key").toString()));
      targets.put("ferrod-tls", t);
      t.start();
      KeyStore trust = KeyStore.getInstance("PKCS12");
      try (InputStream in = Files.newInputStream(pki.file("trust.p12"))) {
         trust.load(in, TestPki.PASSWORD.toCharArray());
      }
      TrustManagerFactory tmf = TrustManagerFactory.getInstance(TrustManagerFactory.getDefaultAlgorithm());
      tmf.init(trust);
      SSLContext ctx = SSLContext.getInstance("TLS");
      ctx.init(null, tmf.getTrustManagers(), null);
      keycloakCalls(client(t.host(), t.port(), ctx, tmf.getTrustManagers(), "localhost"), "ferrod over TLS");
   }
}
