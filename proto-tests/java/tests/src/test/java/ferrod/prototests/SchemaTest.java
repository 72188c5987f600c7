package ferrod.prototests;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.infinispan.client.hotrod.Flag;
import org.infinispan.client.hotrod.MetadataValue;
import org.infinispan.client.hotrod.RemoteCache;
import org.infinispan.client.hotrod.exceptions.HotRodClientException;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;

import ferrod.prototests.harness.Case;

/**
 * Schemas registered the way Keycloak registers {@code KeycloakModelSchema.proto}
 * ({@code KeycloakIndexSchemaUtil#uploadAndReindexCaches}): plain String operations on the
 * {@code ___protobuf_metadata} cache with the client's default (ProtoStream) marshaller —
 * getWithMetadata, putIfAbsent or replaceWithVersion, then GET of {@code .errors} and
 * {@code <file>.errors}. Broken schemas get their error keys, which go away with the file.
 * <p>
 * {@code .errors} is shared by every case on the server, so it is checked for this case's file
 * names only.
 */
class SchemaTest extends HotRodTestBase {

   static final String METADATA = "___protobuf_metadata";
   static final String ERRORS = ".errors";

   private static String pkg(Case c) {
      return ("t" + RUN + c.id()).replaceAll("[^A-Za-z0-9]", "_");
   }

   private static boolean lists(String errors, String file) {
      return errors != null && java.util.Arrays.asList(errors.split("\n")).contains(file);
   }

   @ParameterizedTest(name = NAME)
   @MethodSource("cases")
   void keycloakStyleUploadReplaceAndRemove(Case c) {
      RemoteCache<String, String> meta = cache(c, METADATA);
      String file = pkg(c) + "_model.proto";
      String schema = """
            syntax = "proto3";
            package %s;
            import "org/infinispan/protostream/message-wrapping.proto";
            import "common-java-types.proto";

            /**
             * @Indexed
             */
            message Entity {
               /**
                * @Basic(sortable=true)
                */
               string id = 1;
               /**
                * @Basic
                */
               string realmId = 2;
               org.infinispan.protostream.commons.UUID uuid = 3;
               map<string, string> notes = 4;
            }
            """.formatted(pkg(c));

      assertNull(meta.getWithMetadata(file));
      assertNull(meta.putIfAbsent(file, schema), "first upload");
      assertNull(meta.get(file + ERRORS), "errors of a good schema");
      assertFalse(lists(meta.get(ERRORS), file), ".errors lists a good schema: " + meta.get(ERRORS));
      assertEquals(schema, meta.get(file));

      // A second node finds it there (the previous value travels back with FORCE_RETURN_VALUE).
      assertEquals(schema, meta.withFlags(Flag.FORCE_RETURN_VALUE).putIfAbsent(file, schema));

      // A newer Keycloak replaces it with the version it read.
      MetadataValue<String> stored = meta.getWithMetadata(file);
      assertEquals(schema, stored.getValue());
      String newer = schema.replace("map<string, string> notes = 4;", "map<string, string> notes = 4;\n   int64 created = 5;");
      assertTrue(meta.replaceWithVersion(file, newer, stored.getVersion()));
      assertFalse(meta.replaceWithVersion(file, schema, stored.getVersion()), "stale version");
      assertNull(meta.get(file + ERRORS));
      assertEquals(newer, meta.get(file));

      meta.remove(file);
      assertNull(meta.get(file));
      assertNull(meta.get(file + ERRORS));
   }

   @ParameterizedTest(name = NAME)
   @MethodSource("cases")
   void brokenSchemasGetErrorKeysUntilRemoved(Case c) {
      RemoteCache<String, String> meta = cache(c, METADATA);
      String good = pkg(c) + "_good.proto";
      String broken = pkg(c) + "_broken.proto";
      String needsMissing = pkg(c) + "_needs.proto";
      String missing = pkg(c) + "_missing.proto";

      meta.put(good, "package " + pkg(c) + ".good;\nmessage Good { optional string s = 1; }\n");
      assertNull(meta.get(good + ERRORS));

      meta.put(broken, "package " + pkg(c) + ".broken;\nmessage Broken { optional string s = ; }\n");
      String brokenError = meta.get(broken + ERRORS);
      assertNotNull(brokenError, "a schema with a syntax error gets <file>.errors");
      assertTrue(lists(meta.get(ERRORS), broken), ".errors after the broken upload: " + meta.get(ERRORS));
      assertNull(meta.get(good + ERRORS), "the good schema is not affected");

      meta.put(needsMissing, "import \"" + missing + "\";\npackage " + pkg(c) + ".needs;\nmessage Needs { }\n");
      String needsError = meta.get(needsMissing + ERRORS);
      assertNotNull(needsError, "a schema importing an unknown file gets <file>.errors");
      assertTrue(needsError.contains(missing), needsError);
      assertTrue(lists(meta.get(ERRORS), needsMissing), ".errors: " + meta.get(ERRORS));

      // Fixing the broken schema clears its error.
      meta.put(broken, "package " + pkg(c) + ".broken;\nmessage Broken { optional string s = 1; }\n");
      assertNull(meta.get(broken + ERRORS));
      assertFalse(lists(meta.get(ERRORS), broken), ".errors after the fix: " + meta.get(ERRORS));

      meta.remove(needsMissing);
      meta.remove(broken);
      meta.remove(good);
      assertNull(meta.get(needsMissing + ERRORS));
      assertNull(meta.get(broken + ERRORS));
      String left = meta.get(ERRORS);
      assertFalse(lists(left, needsMissing) || lists(left, broken), ".errors after removal: " + left);
   }

   @ParameterizedTest(name = NAME)
   @MethodSource("cases")
   void keysMustBeProtoFileNames(Case c) {
      RemoteCache<String, String> meta = cache(c, METADATA);
      String key = pkg(c) + "_not_a_schema";
      HotRodClientException e = assertThrows(HotRodClientException.class, () -> meta.put(key, "x"));
      assertTrue(e.getMessage().contains(".proto"), e.getMessage());
      assertNull(meta.get(key));
   }
}
