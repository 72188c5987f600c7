package ferrod.prototests;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.io.IOException;
import java.io.InputStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.KeyStore;
import java.util.ArrayList;
import java.util.List;

import javax.net.ssl.SSLContext;
import javax.net.ssl.TrustManagerFactory;

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

   @Test
   void keycloakStyleSslContextWithSniHostName() throws Exception {
      TargetProcess t = ferrod("sslcontext");
      KeyStore trust = KeyStore.getInstance("PKCS12");
      try (InputStream in = Files.newInputStream(pki.file("trust-ca.p12"))) {
         trust.load(in, TestPki.PASSWORD.toCharArray());
      }
      TrustManagerFactory tmf = TrustManagerFactory.getInstance(TrustManagerFactory.getDefaultAlgorithm());
      tmf.init(trust);
      SSLContext ctx = SSLContext.getInstance("TLS");
      ctx.init(null, tmf.getTrustManagers(), null);
      ConfigurationBuilder b = new ConfigurationBuilder();
      b.addServer().host(t.host()).port(t.port());
      b.security().ssl().enable().sslContext(ctx).sniHostName("localhost");
      RemoteCacheManager rcm = new RemoteCacheManager(b.build(), true);
      clients.add(rcm);
      roundTrip(rcm.getCache(HotRodTestBase.PROTO), "sslcontext");
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
