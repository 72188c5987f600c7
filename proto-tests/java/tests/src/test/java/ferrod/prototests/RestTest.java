package ferrod.prototests;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
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
   /** Temporary directories of the TLS tests (certificates, credentials), removed at the end. */
   private final List<Path> workDirs = new ArrayList<>();

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
      workDirs.forEach(Targets::deleteTree);
   }

   /** Configured as RestInfinispanManagement.fromRemoteCacheManager configures it. */
   private RestClient client(String host, int port, SSLContext ssl, javax.net.ssl.TrustManager[] trustManagers,
                             String sniHost) {
      return client(host, port, ssl, trustManagers, sniHost, null, null);
   }

   /** As Keycloak's copyAuthentication: the HotRod username, password and realm, mechanism AUTO. */
   private RestClient client(String host, int port, SSLContext ssl, javax.net.ssl.TrustManager[] trustManagers,
                             String sniHost, String user, String password) {
      RestClientConfigurationBuilder b = new RestClientConfigurationBuilder();
      if (user != null) {
         b.security().authentication().enable().mechanism("AUTO").username(user).password(password)
               .realm("default");
      }
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
      Path work = Files.createTempDirectory("ferrod-rest-tls-");
      workDirs.add(work);
      TestPki pki = new TestPki(work);
      pki.ca("ca", "proto-tests CA");
      pki.leaf("server", "ca", "ferrod", false, "localhost");
      pki.truststore("trust", "ca");
      TargetProcess t = Targets.create(Targets.FERROD, "RestTest-tls", List.of(
            "--tls-certificate", pki.file("server.pem").toString(),
            "--tls-private-key", pki.file("server.key").toString()));
      targets.put("ferrod-tls", t);
      t.start();
      keycloakCalls(client(t.host(), t.port(), pki.sslContext("trust"), pki.trustManagers("trust"), "localhost"),
            "ferrod over TLS");
   }

   /**
    * ferrod only: with a credentials file, Keycloak's calls authenticate with the HotRod user
    * (over TLS, as Keycloak sends them); no or wrong credentials get 401, a user without ADMIN
    * may read info but not take a site offline; the probe status stays anonymous.
    */
   @Test
   void keycloakCallsWithCredentials() throws Exception {
      assumeTrue(Targets.selected().contains(Targets.FERROD), "ferrod only");
      Path dir = Files.createTempDirectory("ferrod-rest-auth-");
      workDirs.add(dir);
      TestPki pki = new TestPki(dir);
      pki.ca("ca", "proto-tests CA");
      pki.leaf("server", "ca", "ferrod", false, "localhost");
      pki.truststore("trust", "ca");
      Path users = dir.resolve("users");
      Targets.ferrodUserAdd(users, "keycloak", AuthTest.PASSWORD, "admin");
      Targets.ferrodUserAdd(users, "app", AuthTest.PASSWORD, "application");
      TargetProcess t = Targets.create(Targets.FERROD, "RestTest-auth", List.of(
            "--tls-certificate", pki.file("server.pem").toString(),
            "--tls-private-key", pki.file("server.key").toString(),
            "--credentials-file", users.toString()));
      targets.put("ferrod-auth", t);
      t.start();
      SSLContext ctx = pki.sslContext("trust");
      var tms = pki.trustManagers("trust");
      keycloakCalls(client(t.host(), t.port(), ctx, tms, "localhost", "keycloak", AuthTest.PASSWORD),
            "ferrod with credentials");

      RestClient anonymous = client(t.host(), t.port(), ctx, tms, "localhost");
      assertEquals(401, await(anonymous.container().info()).status());
      assertEquals(401, await(anonymous.container().takeOffline("site-b")).status());
      RestResponse probe = await(anonymous.container().healthStatus());
      assertEquals(200, probe.status(), probe.body());
      assertEquals("HEALTHY", probe.body());

      RestClient wrong = client(t.host(), t.port(), ctx, tms, "localhost", "keycloak", "not-the-password");
      assertEquals(401, await(wrong.container().info()).status());
      RestClient stranger = client(t.host(), t.port(), ctx, tms, "localhost", "nobody", AuthTest.PASSWORD);
      assertEquals(401, await(stranger.container().backupStatuses()).status());

      RestClient app = client(t.host(), t.port(), ctx, tms, "localhost", "app", AuthTest.PASSWORD);
      assertEquals(200, await(app.container().info()).status());
      RestResponse refused = await(app.container().takeOffline("site-b"));
      assertEquals(403, refused.status(), refused.body());
      assertTrue(refused.body().contains("lacks 'ADMIN'"), refused.body());
   }
}
