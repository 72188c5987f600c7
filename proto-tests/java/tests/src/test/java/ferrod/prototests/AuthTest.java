package ferrod.prototests;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.function.Consumer;

import org.infinispan.client.hotrod.RemoteCache;
import org.infinispan.client.hotrod.RemoteCacheManager;
import org.infinispan.client.hotrod.configuration.ConfigurationBuilder;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;

import ferrod.prototests.harness.Case;
import ferrod.prototests.harness.Targets;

/**
 * SASL with the Java client: SCRAM-SHA-512 configured exactly as Keycloak does
 * ({@code security().authentication().saslMechanism("SCRAM-SHA-512").username().password().realm("default")}),
 * DIGEST-MD5 and PLAIN; a wrong password is refused; roles decide what a user may do. The users
 * are written with {@code ferrod user add}. ferrod only: the reference server runs without
 * security.
 */
class AuthTest extends HotRodTestBase {

   static final String PASSWORD = "s3cret-pässword";

   private Path credentials;

   @Override
   protected synchronized List<String> ferrodArgs() {
      if (credentials == null) {
         try {
            credentials = Files.createTempDirectory("ferrod-auth-").resolve("users");
         } catch (IOException e) {
            throw new UncheckedIOException(e);
         }
         addUser("keycloak", "deployer");
         addUser("reader", "observer");
      }
      return List.of("--credentials-file", credentials.toString());
   }

   @AfterAll
   void removeCredentials() {
      if (credentials != null) {
         Targets.deleteTree(credentials.getParent());
      }
   }

   private void addUser(String name, String roles) {
      Targets.ferrodUserAdd(credentials, name, PASSWORD, roles);
   }

   static Consumer<ConfigurationBuilder> sasl(String mech, String user, String password) {
      return b -> b.security().authentication().saslMechanism(mech).username(user).password(password).realm("default");
   }

   private void roundTrip(Case c, String mech) {
      Assumptions.assumeTrue(c.target().equals(Targets.FERROD), "the reference server runs without security");
      RemoteCacheManager m = newManager(c, sasl(mech, "keycloak", PASSWORD));
      try {
         RemoteCache<String, String> cache = m.getCache(PROTO);
         String k = key(c, "auth-" + mech, 1);
         cache.put(k, mech);
         assertEquals(mech, cache.get(k));
         cache.remove(k);
         assertNull(cache.get(k));
      } finally {
         stopQuietly(m);
      }
   }

   @ParameterizedTest(name = NAME)
   @MethodSource("cases")
   void scramSha512AsKeycloakConfiguresIt(Case c) {
      roundTrip(c, "SCRAM-SHA-512");
   }

   @ParameterizedTest(name = NAME)
   @MethodSource("cases")
   void digestMd5(Case c) {
      roundTrip(c, "DIGEST-MD5");
   }

   @ParameterizedTest(name = NAME)
   @MethodSource("cases")
   void plain(Case c) {
      roundTrip(c, "PLAIN");
   }

   @ParameterizedTest(name = NAME)
   @MethodSource("cases")
   void wrongPasswordIsRefused(Case c) {
      Assumptions.assumeTrue(c.target().equals(Targets.FERROD), "the reference server runs without security");
      for (String mech : List.of("SCRAM-SHA-512", "DIGEST-MD5", "PLAIN")) {
         RemoteCacheManager m = newManager(c, b -> {
            sasl(mech, "keycloak", "not-the-password").accept(b);
            b.maxRetries(0);
         });
         try {
            Exception e = assertThrows(Exception.class, () -> {
               RemoteCache<String, String> cache = m.getCache(PROTO);
               cache.put(key(c, "wrong-" + mech, 1), "x");
            }, mech + " with a wrong password must fail");
            assertTrue(chain(e).contains("authentication failed"), mech + ": " + chain(e));
         } finally {
            stopQuietly(m);
         }
      }
   }

   @ParameterizedTest(name = NAME)
   @MethodSource("cases")
   void anObserverReadsButMayNotWrite(Case c) {
      Assumptions.assumeTrue(c.target().equals(Targets.FERROD), "the reference server runs without security");
      String k = key(c, "observer", 1);
      RemoteCacheManager writer = newManager(c, sasl("SCRAM-SHA-512", "keycloak", PASSWORD));
      RemoteCacheManager reader = newManager(c, sasl("SCRAM-SHA-256", "reader", PASSWORD));
      try {
         writer.<String, String>getCache(PROTO).put(k, "v");
         RemoteCache<String, String> cache = reader.getCache(PROTO);
         assertEquals("v", cache.get(k));
         Exception e = assertThrows(Exception.class, () -> cache.put(k, "w"));
         assertTrue(chain(e).contains("lacks 'WRITE' permission"), chain(e));
         // refused, and the client goes on working
         assertEquals("v", cache.get(k));
      } finally {
         stopQuietly(reader);
         stopQuietly(writer);
      }
   }

   /** Every message of an exception and its causes. */
   static String chain(Throwable t) {
      StringBuilder sb = new StringBuilder();
      for (Throwable x = t; x != null; x = x.getCause() == x ? null : x.getCause()) {
         sb.append(x).append(" | ");
      }
      return sb.toString();
   }
}
