package ferrod.prototests;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.io.ByteArrayOutputStream;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;

import org.infinispan.client.hotrod.DataFormat;
import org.infinispan.client.hotrod.RemoteCache;
import org.infinispan.client.hotrod.Search;
import org.infinispan.client.hotrod.exceptions.HotRodClientException;
import org.infinispan.commons.api.query.Query;
import org.infinispan.commons.dataconversion.MediaType;
import org.infinispan.commons.marshall.IdentityMarshaller;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;

import ferrod.prototests.harness.Case;
import ferrod.prototests.harness.Targets;

/**
 * Ickle queries and DELETE statements from the real client ({@code Search.getQueryFactory(cache)
 * .create(...)}), with Keycloak's query shapes (ClientSessionQueries, the client-session
 * remover's DELETE), on the {@code proto} cache after registering a schema in
 * {@code ___protobuf_metadata}. The entities are written as ProtoStream would write them
 * (WrappedMessage{type name, message bytes}) through a raw protostream DataFormat, so the test
 * needs no generated marshaller; results are projections and counts, which the client decodes
 * with its default marshaller. Each case has its own schema package, so cases sharing the
 * server never see each other's entities.
 */
class QueryTest extends HotRodTestBase {

   static final DataFormat RAW_PROTO = DataFormat.builder()
         .keyType(MediaType.APPLICATION_PROTOSTREAM).keyMarshaller(IdentityMarshaller.INSTANCE)
         .valueType(MediaType.APPLICATION_PROTOSTREAM).valueMarshaller(IdentityMarshaller.INSTANCE)
         .build();

   /** One schema package (hence entity type) per case and test: cases and tests share the server. */
   private static String pkg(Case c, String test) {
      return ("q" + RUN + c.id() + test).replaceAll("[^A-Za-z0-9]", "_");
   }

   /** The 16.x reference is a bare HotRod server without the remote-query module. */
   private static void assumeQueries(Case c) {
      boolean ref16 = c.target().startsWith(Targets.INFINISPAN)
            && "16".equals(System.getProperty("ispn.line", System.getenv().getOrDefault("ispn.line", "16")));
      assumeTrue(!ref16, "the 16.x reference server has no remote query");
   }

   private static void field(ByteArrayOutputStream out, int number, byte[] bytes) {
      varint(out, (number << 3) | 2);
      varint(out, bytes.length);
      out.writeBytes(bytes);
   }

   private static void varint(ByteArrayOutputStream out, long v) {
      while ((v & ~0x7FL) != 0) {
         out.write((int) ((v & 0x7F) | 0x80));
         v >>>= 7;
      }
      out.write((int) v);
   }

   private static byte[] wrappedString(String s) {
      ByteArrayOutputStream out = new ByteArrayOutputStream();
      field(out, 9, s.getBytes(StandardCharsets.UTF_8));
      return out.toByteArray();
   }

   /** RemoteAuthenticatedClientSessionEntity's first fields, wrapped with the type's name; a null userId is left out. */
   private static byte[] clientSession(String type, String clientId, String userId, String userSessionId, String realmId) {
      ByteArrayOutputStream msg = new ByteArrayOutputStream();
      field(msg, 1, clientId.getBytes(StandardCharsets.UTF_8));
      if (userId != null) {
         field(msg, 2, userId.getBytes(StandardCharsets.UTF_8));
      }
      field(msg, 3, userSessionId.getBytes(StandardCharsets.UTF_8));
      field(msg, 4, realmId.getBytes(StandardCharsets.UTF_8));
      ByteArrayOutputStream out = new ByteArrayOutputStream();
      field(out, 16, type.getBytes(StandardCharsets.UTF_8));
      field(out, 17, msg.toByteArray());
      return out.toByteArray();
   }

   private String setUp(Case c, String test) {
      String pkg = pkg(c, test);
      RemoteCache<String, String> meta = cache(c, "___protobuf_metadata");
      String schema = """
            syntax = "proto3";
            package %s;

            /**
             * @Indexed
             */
            message ClientSession {
               /** @Basic(projectable = true, sortable = true) */
               string clientId = 1;
               /** @Basic */
               string userId = 2;
               /** @Basic(projectable = true, sortable = true) */
               string userSessionId = 3;
               /** @Basic */
               string realmId = 4;
            }
            """.formatted(pkg);
      meta.put(pkg + ".proto", schema);
      assertNull(meta.get(pkg + ".proto.errors"), "schema errors");
      String type = pkg + ".ClientSession";
      RemoteCache<byte[], byte[]> raw = this.<byte[], byte[]>proto(c).withDataFormat(RAW_PROTO);
      String[][] rows = {
            {"app-b", "u1", "us-0", "r1"}, {"app-a", "u1", "us-0", "r1"}, {"app-a", "u2", "us-1", "r1"},
            {"app-c", "u3", "us-2", "r2"}, {"app-a", "u1", "us-3", "r1"},
      };
      for (int i = 0; i < rows.length; i++) {
         String[] r = rows[i];
         raw.put(wrappedString(key(c, test, i)), clientSession(type, r[0], r[1], r[2], r[3]));
      }
      return type;
   }

   private static List<List<Object>> rows(List<Object[]> list) {
      List<List<Object>> out = new ArrayList<>();
      for (Object[] row : list) {
         out.add(Arrays.asList(row));
      }
      return out;
   }

   @ParameterizedTest(name = NAME)
   @MethodSource("cases")
   void keycloakQueryShapesAndDelete(Case c) {
      assumeQueries(c);
      String type = setUp(c, "shapes");
      RemoteCache<Object, Object> cache = proto(c);

      Query<Object[]> q = Search.getQueryFactory(cache).create(
            "SELECT e.userSessionId FROM " + type + " as e WHERE e.realmId = :realmId && e.clientId = :clientId ORDER BY e.userSessionId");
      q.setParameter("realmId", "r1");
      q.setParameter("clientId", "app-a");
      q.startOffset(0).maxResults(2);
      var page = q.execute();
      assertEquals(List.of(List.of("us-0"), List.of("us-1")), rows(page.list()));
      assertEquals(3, page.count().value(), "hitCount counts every match");
      q.startOffset(2);
      assertEquals(List.of(List.of("us-3")), rows(q.execute().list()));

      Query<Object[]> groups = Search.getQueryFactory(cache).create(
            "SELECT e.clientId, count(e.clientId) FROM " + type + " as e GROUP BY e.clientId ORDER BY e.clientId");
      assertEquals(List.of(List.of("app-a", 3L), List.of("app-b", 1L), List.of("app-c", 1L)), rows(groups.execute().list()));

      Query<Object[]> count = Search.getQueryFactory(cache).create(
            "SELECT count(e) FROM " + type + " as e WHERE e.realmId = :realmId && e.clientId = :clientId");
      count.setParameter("realmId", "r1");
      count.setParameter("clientId", "app-a");
      assertEquals(3L, (long) count.execute().list().get(0)[0]);

      Query<Object[]> byUs = Search.getQueryFactory(cache).create(
            "SELECT e.clientId FROM " + type + " as e WHERE e.userSessionId = :userSessionId ORDER BY e.clientId");
      byUs.setParameter("userSessionId", "us-0");
      assertEquals(List.of(List.of("app-a"), List.of("app-b")), rows(byUs.execute().list()));

      // The client-session remover's statement: conditions OR-joined, bare field names.
      Query<Object[]> delete = Search.getQueryFactory(cache).create(
            "DELETE FROM " + type + " WHERE (userSessionId = :p0) || (realmId = :p1) || (userId = :p2 && realmId = :p3)");
      delete.setParameter("p0", "us-0");
      delete.setParameter("p1", "r2");
      delete.setParameter("p2", "u1");
      delete.setParameter("p3", "r1");
      assertEquals(4, delete.executeStatement());
      RemoteCache<byte[], byte[]> raw = this.<byte[], byte[]>proto(c).withDataFormat(RAW_PROTO);
      assertNull(raw.get(wrappedString(key(c, "shapes", 0))), "deleted");
      assertNotNull(raw.get(wrappedString(key(c, "shapes", 2))), "not matched, kept");
      Query<Object[]> left = Search.getQueryFactory(cache).create("SELECT e.userSessionId FROM " + type + " e ORDER BY e.userSessionId");
      assertEquals(List.of(List.of("us-1")), rows(left.execute().list()));
   }

   @ParameterizedTest(name = NAME)
   @MethodSource("cases")
   void nullFieldsInConditionsAndOrdering(Case c) {
      assumeQueries(c);
      String type = setUp(c, "nulls");
      RemoteCache<byte[], byte[]> raw = this.<byte[], byte[]>proto(c).withDataFormat(RAW_PROTO);
      raw.put(wrappedString(key(c, "nulls", "nouser")), clientSession(type, "app-z", null, "us-9", "r1"));
      RemoteCache<Object, Object> cache = proto(c);
      // != is NOT(=): an entity without the field matches.
      Query<Object[]> ne = Search.getQueryFactory(cache).create(
            "SELECT e.userSessionId FROM " + type + " e WHERE e.userId != 'u1' ORDER BY e.userSessionId");
      assertEquals(List.of(List.of("us-1"), List.of("us-2"), List.of("us-9")), rows(ne.execute().list()));
      Query<Object[]> isNull = Search.getQueryFactory(cache).create(
            "SELECT e.userSessionId FROM " + type + " e WHERE e.userId IS NULL");
      assertEquals(List.of(List.of("us-9")), rows(isNull.execute().list()));
      // Ordering on a field some entities lack: nulls first ascending, last descending.
      Query<Object[]> asc = Search.getQueryFactory(cache).create(
            "SELECT e.userId, e.userSessionId FROM " + type + " e WHERE e.clientId IN ('app-z', 'app-c') ORDER BY e.userId");
      assertEquals(Arrays.asList(Arrays.asList(null, "us-9"), List.of("u3", "us-2")), rows(asc.execute().list()));
      Query<Object[]> desc = Search.getQueryFactory(cache).create(
            "SELECT e.userId, e.userSessionId FROM " + type + " e WHERE e.clientId IN ('app-z', 'app-c') ORDER BY e.userId DESC");
      assertEquals(Arrays.asList(List.of("u3", "us-2"), Arrays.asList(null, "us-9")), rows(desc.execute().list()));
   }

   @ParameterizedTest(name = NAME)
   @MethodSource("cases")
   void badQueriesFailClearly(Case c) {
      assumeQueries(c);
      String type = setUp(c, "bad");
      RemoteCache<Object, Object> cache = proto(c);
      for (String bad : new String[] {
            "FROM " + pkg(c, "bad") + ".NoSuchEntity e",
            "SELECT e.nope FROM " + type + " e",
            "FROM " + type + " e WHERE e.realmId = ",
      }) {
         Query<Object[]> q = Search.getQueryFactory(cache).create(bad);
         HotRodClientException e = assertThrows(HotRodClientException.class, () -> q.execute().list(), bad);
         assertNotNull(e.getMessage(), bad);
      }
      Query<Object[]> unknownDelete = Search.getQueryFactory(cache).create("DELETE FROM " + pkg(c, "bad") + ".NoSuchEntity WHERE realmId = 'r1'");
      assertThrows(HotRodClientException.class, unknownDelete::executeStatement);
      // Nothing was removed by any of it.
      Query<Object[]> all = Search.getQueryFactory(cache).create("SELECT count(e) FROM " + type + " e");
      assertEquals(5L, (long) all.execute().list().get(0)[0]);
   }
}
