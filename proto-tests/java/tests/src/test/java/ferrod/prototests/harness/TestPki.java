package ferrod.prototests.harness;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.KeyStore;
import java.security.SecureRandom;
import java.util.ArrayList;
import java.util.HexFormat;
import java.util.List;
import java.util.concurrent.TimeUnit;

import javax.net.ssl.SSLContext;
import javax.net.ssl.TrustManager;
import javax.net.ssl.TrustManagerFactory;

/**
 * Certificates made at test time with the {@code openssl} and {@code keytool} command-line tools:
 * CAs, server certificates (PEM for ferrod), client certificates and truststores (PKCS#12 for the
 * Java clients). Everything lives in one directory; every store has the password {@link #PASSWORD}.
 */
public final class TestPki {

   public static final String PASSWORD = "changeit";

   private final Path dir;

   public TestPki(Path dir) {
      this.dir = dir;
   }

   public Path dir() {
      return dir;
   }

   /** A self-signed CA: {@code name.pem} and {@code name.key}. */
   public Path ca(String name, String commonName) {
      run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-keyout", file(name + ".key").toString(), "-out", file(name + ".pem").toString(),
            "-subj", "/CN=" + commonName);
      return file(name + ".pem");
   }

   /**
    * A certificate signed by CA {@code ca}: {@code name.pem} and {@code name.key} (PKCS#8).
    * Server certificates carry {@code dnsNames} (and 127.0.0.1) as subject alternative names.
    */
   public Path leaf(String name, String ca, String commonName, boolean client, String... dnsNames) {
      StringBuilder ext = new StringBuilder("basicConstraints=CA:FALSE\n");
      ext.append("extendedKeyUsage=").append(client ? "clientAuth" : "serverAuth").append('\n');
      if (!client) {
         List<String> sans = new ArrayList<>();
         for (String d : dnsNames) sans.add("DNS:" + d);
         sans.add("IP:127.0.0.1");
         ext.append("subjectAltName=").append(String.join(",", sans)).append('\n');
      }
      write(name + ".ext", ext.toString());
      run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", file(name + ".key").toString(),
            "-out", file(name + ".csr").toString(), "-subj", "/O=ferrod proto-tests/CN=" + commonName);
      byte[] serial = new byte[8];
      new SecureRandom().nextBytes(serial);
      serial[0] &= 0x7f;
      run("openssl", "x509", "-req", "-in", file(name + ".csr").toString(),
            "-CA", file(ca + ".pem").toString(), "-CAkey", file(ca + ".key").toString(),
            "-set_serial", "0x" + HexFormat.of().formatHex(serial), "-days", "2",
            "-extfile", file(name + ".ext").toString(), "-out", file(name + ".pem").toString());
      return file(name + ".pem");
   }

   /** A PKCS#12 truststore holding the given CAs' certificates. */
   public Path truststore(String name, String... cas) {
      Path store = file(name + ".p12");
      for (String ca : cas) {
         run("keytool", "-importcert", "-noprompt", "-alias", ca, "-file", file(ca + ".pem").toString(),
               "-keystore", store.toString(), "-storetype", "PKCS12", "-storepass", PASSWORD);
      }
      return store;
   }

   /** A PKCS#12 keystore with the certificate and key of {@code leaf}. */
   public Path keystore(String leaf) {
      Path store = file(leaf + ".p12");
      run("openssl", "pkcs12", "-export", "-in", file(leaf + ".pem").toString(),
            "-inkey", file(leaf + ".key").toString(), "-name", leaf, "-out", store.toString(),
            "-passout", "pass:" + PASSWORD);
      return store;
   }

   public Path file(String name) {
      return dir.resolve(name);
   }

   private void write(String name, String text) {
      try {
         Files.writeString(file(name), text, StandardCharsets.UTF_8);
      } catch (IOException e) {
         throw new UncheckedIOException(e);
      }
   }

   private void run(String... command) {
      try {
         Process p = new ProcessBuilder(command).directory(dir.toFile()).redirectErrorStream(true).start();
         byte[] out = p.getInputStream().readAllBytes();
         if (!p.waitFor(60, TimeUnit.SECONDS) || p.exitValue() != 0) {
            throw new IllegalStateException(String.join(" ", command) + " failed:\n"
                  + new String(out, StandardCharsets.UTF_8));
         }
      } catch (IOException e) {
         throw new UncheckedIOException("cannot run " + command[0] + " (needed to make test certificates)", e);
      } catch (InterruptedException e) {
         Thread.currentThread().interrupt();
         throw new IllegalStateException(e);
      }
   }

   /** The trust managers of a truststore made by {@link #truststore}. */
   public TrustManager[] trustManagers(String truststore) {
      try (var in = Files.newInputStream(file(truststore + ".p12"))) {
         KeyStore trust = KeyStore.getInstance("PKCS12");
         trust.load(in, PASSWORD.toCharArray());
         TrustManagerFactory tmf = TrustManagerFactory.getInstance(TrustManagerFactory.getDefaultAlgorithm());
         tmf.init(trust);
         return tmf.getTrustManagers();
      } catch (IOException e) {
         throw new UncheckedIOException(e);
      } catch (java.security.GeneralSecurityException e) {
         throw new IllegalStateException(e);
      }
   }

   /** An SSLContext as Keycloak builds it: {@code SSLContext.getInstance("TLS")} over the truststore. */
   public SSLContext sslContext(String truststore) {
      return sslContext(truststore, null);
   }

   /** As {@link #sslContext(String)}, presenting the client certificate of {@link #keystore}{@code (leaf)}. */
   public SSLContext sslContext(String truststore, String keystoreLeaf) {
      try {
         javax.net.ssl.KeyManager[] keyManagers = null;
         if (keystoreLeaf != null) {
            KeyStore keys = KeyStore.getInstance("PKCS12");
            try (var in = Files.newInputStream(file(keystoreLeaf + ".p12"))) {
               keys.load(in, PASSWORD.toCharArray());
            }
            var kmf = javax.net.ssl.KeyManagerFactory.getInstance(javax.net.ssl.KeyManagerFactory.getDefaultAlgorithm());
            kmf.init(keys, PASSWORD.toCharArray());
            keyManagers = kmf.getKeyManagers();
         }
         SSLContext ctx = SSLContext.getInstance("TLS");
         ctx.init(keyManagers, trustManagers(truststore), null);
         return ctx;
      } catch (IOException e) {
         throw new UncheckedIOException(e);
      } catch (java.security.GeneralSecurityException e) {
         throw new IllegalStateException(e);
      }
   }
}
