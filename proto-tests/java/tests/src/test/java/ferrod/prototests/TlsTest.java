package ferrod.prototests;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.function.Consumer;

import org.infinispan.client.hotrod.RemoteCache;
import org.infinispan.client.hotrod.RemoteCacheManager;
import org.infinispan.client.hotrod.configuration.ConfigurationBuilder;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestInstance;

import ferrod.prototests.harness.TargetProcess;
import ferrod.prototests.harness.Targets;
import ferrod.prototests.harness.TestPki;

/**
 * The Java HotRod client over TLS against ferrod: a truststore with the server's CA, the SNI host
 * name choosing the certificate, an untrusted certificate refused, client certificates required.
 * ferrod only: the reference server runs without TLS.
 */
@TestInstance(TestInstance.Lifecycle.PER_CLASS)
class TlsTest {

   private TestPki pki;
   private Path work;
   private final List<TargetProcess> servers = new ArrayList<>();
   private final List<RemoteCacheManager> clients = new ArrayList<>();

   @BeforeAll
   void certificates() throws IOException {
      assumeTrue(Targets.selected().contains(Targets.FERROD), "TLS is tested on ferrod (the reference runs without TLS)");
      work = Files.createTempDirectory("ferrod-tls-");
      pki = new TestPki(work);
      pki.ca("ca", "proto-tests CA");
      pki.ca("sni-ca", "proto-tests SNI CA");
      pki.ca("stranger-ca", "stranger CA");
      pki.leaf("server", "ca", "ferrod", false, "localhost");
      pki.leaf("cache", "sni-ca", "cache", false, "cache.example.test");
      pki.leaf("keycloak", "ca", "keycloak", true);
      pki.leaf("mallory", "stranger-ca", "mallory", true);
      pki.truststore("trust-ca", "ca");
      pki.truststore("trust-sni", "sni-ca");
      pki.truststore("trust-stranger", "stranger-ca");
      pki.keystore("keycloak");
      pki.keystore("mallory");
      pki.leaf("app", "ca", "app", true);
      pki.keystore("app");
   }

   @AfterAll
   void stop() {
      clients.forEach(HotRodTestBase::stopQuietly);
      servers.forEach(TargetProcess::close);
      if (work != null) {
         try (var walk = Files.walk(work)) {
            walk.sorted(java.util.Comparator.reverseOrder()).forEach(p -> p.toFile().delete());
         } catch (IOException ignored) {
            // best effort
         }
      }
   }

   private TargetProcess ferrod(String label, String... extra) {
      List<String> args = new ArrayList<>(List.of(
            "--tls-certificate", pki.file("server.pem").toString(),
            "--tls-private-key", pki.file("server.key").toString()));
      args.addAll(List.of(extra));
      TargetProcess t = Targets.create(Targets.FERROD, "TlsTest-" + label, args);
      servers.add(t);
      t.start();
      return t;
   }

   /** A client configured as Keycloak configures it: TLS with an SSLContext and the SNI host name. */
   private RemoteCache<String, String> cache(TargetProcess t, String truststore, String sniHost, String keystore) {
      ConfigurationBuilder b = new ConfigurationBuilder();
      b.addServer().host(t.host()).port(t.port());
      b.connectionTimeout(5_000).socketTimeout(5_000).maxRetries(0);
      var ssl = b.security().ssl().enable()
            .trustStoreFileName(pki.file(truststore + ".p12").toString())
            .trustStorePassword(TestPki.PASSWORD.toCharArray())
            .trustStoreType("PKCS12")
            .sniHostName(sniHost);
      if (keystore != null) {
         ssl.keyStoreFileName(pki.file(keystore + ".p12").toString())
               .keyStorePassword(TestPki.PASSWORD.toCharArray())
               .keyStoreType("PKCS12");
      }
      RemoteCacheManager rcm = new RemoteCacheManager(b.build(), true);
      clients.add(rcm);
      return rcm.getCache(HotRodTestBase.PROTO);
   }

   private static void roundTrip(RemoteCache<String, String> cache, String key) {
      cache.put(key, "over TLS");
      assertEquals("over TLS", cache.get(key));
   }

   private void refused(TargetProcess t, String truststore, String sniHost, String keystore) {
      assertThrows(Exception.class, () -> roundTrip(cache(t, truststore, sniHost, keystore), "refused"),
            "the operation succeeded although the TLS session must fail");
   }

   @Test
   void hotRodOverTlsWithTheServersCaInTheTruststore() {
      TargetProcess t = ferrod("basic");
      roundTrip(cache(t, "trust-ca", "localhost", null), "basic");
   }

   /**
    * A client as Keycloak configures one ({@code cache-remote-tls-enabled}): TLS with an
    * SSLContext over the truststore, SNI = the host name; {@code more} adds e.g. SASL.
    */
   private RemoteCache<String, String> keycloakCache(TargetProcess t, String truststore,
                                                     Consumer<ConfigurationBuilder> more) {
      ConfigurationBuilder b = new ConfigurationBuilder();
      b.addServer().host(t.host()).port(t.port());
      b.connectionTimeout(5_000).socketTimeout(5_000).maxRetries(0);
      b.security().ssl().enable().sslContext(pki.sslContext(truststore)).sniHostName("localhost");
      more.accept(b);
      RemoteCacheManager rcm = new RemoteCacheManager(b.build(), true);
      clients.add(rcm);
      return rcm.getCache(HotRodTestBase.PROTO);
   }

   @Test
   void keycloakStyleSslContextWithSniHostName() {
      TargetProcess t = ferrod("sslcontext");
      roundTrip(keycloakCache(t, "trust-ca", b -> { }), "sslcontext");
   }

   /** A credentials file with a password user and the certificate-only user {@code app}. */
   private Path credentials(String label) throws IOException {
      Path users = work.resolve("users-" + label);
      Files.writeString(users, "app roles=observer\n");
      Targets.ferrodUserAdd(users, "keycloak", AuthTest.PASSWORD, "deployer");
      return users;
   }

   @Test
   void keycloakTlsWithScramSha512() throws IOException {
      TargetProcess t = ferrod("tls-scram", "--credentials-file", credentials("tls-scram").toString());
      roundTrip(keycloakCache(t, "trust-ca", AuthTest.sasl("SCRAM-SHA-512", "keycloak", AuthTest.PASSWORD)),
            "tls-scram");
      Exception e = assertThrows(Exception.class, () -> roundTrip(
            keycloakCache(t, "trust-ca", AuthTest.sasl("SCRAM-SHA-512", "keycloak", "wrong")), "wrong"));
      assertTrue(AuthTest.chain(e).contains("authentication failed"), AuthTest.chain(e));
      // The right password, but the server's certificate is not trusted: no session, no login.
      e = assertThrows(Exception.class, () -> roundTrip(
            keycloakCache(t, "trust-stranger", AuthTest.sasl("SCRAM-SHA-512", "keycloak", AuthTest.PASSWORD)),
            "untrusted"));
      assertFalse(AuthTest.chain(e).contains("authentication failed"), AuthTest.chain(e));
   }

   @Test
   void saslExternalAuthenticatesAsTheClientCertificate() throws IOException {
      TargetProcess t = ferrod("external", "--credentials-file", credentials("external").toString(),
            "--tls-client-auth", "optional", "--tls-client-ca", pki.file("ca.pem").toString());
      Consumer<ConfigurationBuilder> external = b -> b.security().authentication().saslMechanism("EXTERNAL");
      // writes as keycloak (deployer), reads as app (observer, from its certificate CN=app)
      roundTrip(keycloakCache(t, "trust-ca", AuthTest.sasl("SCRAM-SHA-512", "keycloak", AuthTest.PASSWORD)),
            "external");
      // The client certificate comes with the SSLContext (the client refuses a keystore beside one).
      RemoteCache<String, String> app = keycloakCache(t, "trust-ca", b -> {
         external.accept(b);
         b.security().ssl().sslContext(pki.sslContext("trust-ca", "app"));
      });
      assertEquals("over TLS", app.get("external"));
      Exception e = assertThrows(Exception.class, () -> app.put("external", "w"));
      assertTrue(AuthTest.chain(e).contains("user 'app' lacks 'WRITE'"), AuthTest.chain(e));
      // Without a client certificate the server does not offer EXTERNAL.
      e = assertThrows(Exception.class, () -> keycloakCache(t, "trust-ca", external).get("external"));
      assertFalse(AuthTest.chain(e).contains("lacks"), AuthTest.chain(e));
   }

   @Test
   void sniHostNameChoosesTheCertificate() {
      // cache.example.test's certificate comes from another CA than the default one: a client
      // trusting only that CA completes a session only if SNI chose that certificate.
      TargetProcess t = ferrod("sni", "--tls-sni",
            "cache.example.test=" + pki.file("cache.pem") + "," + pki.file("cache.key"));
      roundTrip(cache(t, "trust-sni", "cache.example.test", null), "sni");
      refused(t, "trust-sni", "localhost", null);
      roundTrip(cache(t, "trust-ca", "localhost", null), "sni-default");
   }

   @Test
   void anUntrustedServerCertificateIsRefused() {
      TargetProcess t = ferrod("untrusted");
      refused(t, "trust-stranger", "localhost", null);
   }

   @Test
   void clientCertificatesRequired() {
      TargetProcess t = ferrod("client-auth", "--tls-client-auth", "required",
            "--tls-client-ca", pki.file("ca.pem").toString());
      roundTrip(cache(t, "trust-ca", "localhost", "keycloak"), "client-cert");
      refused(t, "trust-ca", "localhost", null);
      refused(t, "trust-ca", "localhost", "mallory");
   }

   @Test
   void aPlainClientIsRefusedWhenTlsIsRequired() {
      TargetProcess t = ferrod("plain-refused");
      ConfigurationBuilder b = new ConfigurationBuilder();
      b.addServer().host(t.host()).port(t.port());
      b.connectionTimeout(5_000).socketTimeout(5_000).maxRetries(0);
      RemoteCacheManager rcm = new RemoteCacheManager(b.build(), true);
      clients.add(rcm);
      assertThrows(Exception.class, () -> roundTrip(rcm.getCache(HotRodTestBase.PROTO), "plain"));
   }
}
