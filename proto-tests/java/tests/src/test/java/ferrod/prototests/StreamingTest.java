package ferrod.prototests;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.util.Random;
import java.util.concurrent.TimeUnit;

import org.infinispan.client.hotrod.RemoteCache;
import org.infinispan.client.hotrod.StreamingRemoteCache;
import org.infinispan.client.hotrod.VersionedMetadata;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;

import ferrod.prototests.harness.Case;

/**
 * {@code RemoteCache.streaming()}: the 15.0 client uses PUT_STREAM/GET_STREAM (0x37/0x39), the 16.0
 * client the chunked 4.1 streaming operations (START_PUT_STREAM ... 0xE4-0xEF).
 */
class StreamingTest extends HotRodTestBase {

   @ParameterizedTest(name = NAME)
   @MethodSource("cases")
   void streamPutGetAndConditionalStreams(Case c) throws IOException {
      // The 16.x client always sends the 4.1 chunked streaming ops; the reference server refuses
      // them in 3.x/4.0 frames ("requires HR 4.1 or newer"), so they only exist at 4.1.
      assumeTrue(!Case.clientSpeaks41() || Case.number(c.version()) >= 41,
            "the 16.x client streams only with protocol 4.1");
      RemoteCache<String, byte[]> cache = proto(c);
      StreamingRemoteCache<String> streaming = cache.streaming();
      String k = key(c, "stream", "k");
      byte[] data = new byte[3 * 1024 * 1024 + 12345];
      new Random(7).nextBytes(data);

      assertNull(streaming.get(key(c, "stream", "missing")), "stream get of a missing key");

      try (OutputStream out = streaming.put(k, 1, TimeUnit.HOURS)) {
         for (int off = 0; off < data.length; off += 100_000) {
            out.write(data, off, Math.min(100_000, data.length - off));
         }
      }
      long v1 = read(streaming, k, data, 3600);

      // putIfAbsent on a present key does not write
      try (OutputStream out = streaming.putIfAbsent(k)) {
         out.write(new byte[] {1, 2, 3});
      }
      assertEquals(v1, read(streaming, k, data, 3600), "stream putIfAbsent on a present key must not write");

      // replaceWithVersion: stale version loses, current version wins
      try (OutputStream out = streaming.replaceWithVersion(k, v1 + 1_000_000)) {
         out.write(new byte[] {9});
      }
      assertEquals(v1, read(streaming, k, data, 3600), "stream replaceWithVersion with a wrong version must not write");
      byte[] small = "streamed".getBytes();
      try (OutputStream out = streaming.replaceWithVersion(k, v1)) {
         out.write(small);
      }
      long v2 = read(streaming, k, small, -1);
      assertNotEquals(v1, v2, "a stream write gets a new version");

      // putIfAbsent on a missing key writes
      String k2 = key(c, "stream", "k2");
      try (OutputStream out = streaming.putIfAbsent(k2)) {
         out.write(data, 0, 1000);
      }
      byte[] first1000 = new byte[1000];
      System.arraycopy(data, 0, first1000, 0, 1000);
      read(streaming, k2, first1000, -1);
      cache.remove(k);
      cache.remove(k2);
      assertNull(streaming.get(k));
   }

   /** Reads a streamed value, checks content and lifespan, returns its version. */
   private static long read(StreamingRemoteCache<String> streaming, String k, byte[] expected, long lifespan) throws IOException {
      InputStream in = streaming.get(k);
      assertNotNull(in, "stream get of " + k);
      try (in) {
         byte[] got = in.readAllBytes();
         assertArrayEquals(expected, got, "streamed value of " + k);
         VersionedMetadata m = (VersionedMetadata) in;
         assertEquals(lifespan, m.getLifespan(), "lifespan of " + k);
         return m.getVersion();
      }
   }
}
