package ferrod.prototests.harness;

import java.util.ArrayList;
import java.util.List;
import java.util.Locale;

import org.infinispan.client.hotrod.ProtocolVersion;

/** One cell of the test matrix: a target and the protocol version the client is configured with. */
public record Case(String target, ProtocolVersion version) {

   /** Protocol versions under test: every version >= 3.0 the client on the classpath speaks, plus AUTO. */
   public static List<ProtocolVersion> versions() {
      String only = Targets.setting("PROTOCOL_VERSIONS", "");
      List<ProtocolVersion> out = new ArrayList<>();
      for (ProtocolVersion v : ProtocolVersion.values()) {
         if (v == ProtocolVersion.PROTOCOL_VERSION_AUTO || number(v) >= 30) {
            if (only.isEmpty() || List.of(only.toUpperCase(Locale.ROOT).split("[,\\s]+")).contains(v.toString().toUpperCase(Locale.ROOT))) {
               out.add(v);
            }
         }
      }
      return out;
   }

   /** 30 for PROTOCOL_VERSION_30 ... ; AUTO is the client's newest. */
   public static int number(ProtocolVersion v) {
      String n = v.name();
      if (n.endsWith("AUTO")) {
         return Integer.MAX_VALUE;
      }
      return Integer.parseInt(n.substring(n.lastIndexOf('_') + 1));
   }

   /** True for the 16.x client generation (protocol 4.1 and the rewritten client). */
   public static boolean clientSpeaks41() {
      for (ProtocolVersion v : ProtocolVersion.values()) {
         if (v.name().endsWith("_41")) {
            return true;
         }
      }
      return false;
   }

   public static List<Case> all() {
      List<Case> out = new ArrayList<>();
      for (String t : Targets.selected()) {
         for (ProtocolVersion v : versions()) {
            out.add(new Case(t, v));
         }
      }
      return out;
   }

   /** Short id usable inside keys. */
   public String id() {
      return target + "-" + version.toString().replace(".", "");
   }

   @Override
   public String toString() {
      return target + " v" + version;
   }
}
