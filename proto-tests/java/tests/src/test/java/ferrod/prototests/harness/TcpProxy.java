package ferrod.prototests.harness;

import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.util.List;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * A TCP proxy standing in for a Kubernetes Service: one address, each new connection sent to the
 * next backend that accepts it (round robin, skipping backends that refuse).
 */
public final class TcpProxy implements AutoCloseable {

   private final ServerSocket server;
   private final List<InetSocketAddress> backends;
   private final AtomicInteger next = new AtomicInteger();
   private final Set<Socket> open = ConcurrentHashMap.newKeySet();
   private final Thread acceptor;

   public TcpProxy(List<InetSocketAddress> backends) {
      this.backends = List.copyOf(backends);
      try {
         server = new ServerSocket(0, 128, InetAddress.getLoopbackAddress());
      } catch (IOException e) {
         throw new IllegalStateException(e);
      }
      acceptor = new Thread(this::acceptLoop, "tcp-proxy-" + port());
      acceptor.setDaemon(true);
      acceptor.start();
   }

   public String host() {
      return "127.0.0.1";
   }

   public int port() {
      return server.getLocalPort();
   }

   private void acceptLoop() {
      while (!server.isClosed()) {
         Socket client;
         try {
            client = server.accept();
         } catch (IOException e) {
            return;
         }
         Socket upstream = connectSomewhere();
         if (upstream == null) {
            closeQuietly(client);
            continue;
         }
         open.add(client);
         open.add(upstream);
         pump(client, upstream);
         pump(upstream, client);
      }
   }

   private Socket connectSomewhere() {
      int start = Math.floorMod(next.getAndIncrement(), backends.size());
      for (int i = 0; i < backends.size(); i++) {
         InetSocketAddress b = backends.get((start + i) % backends.size());
         Socket s = new Socket();
         try {
            s.setTcpNoDelay(true);
            s.connect(b, 1000);
            return s;
         } catch (IOException e) {
            closeQuietly(s);
         }
      }
      return null;
   }

   private void pump(Socket from, Socket to) {
      Thread t = new Thread(() -> {
         byte[] buf = new byte[16 * 1024];
         try (InputStream in = from.getInputStream(); OutputStream out = to.getOutputStream()) {
            int n;
            while ((n = in.read(buf)) >= 0) {
               out.write(buf, 0, n);
               out.flush();
            }
         } catch (IOException ignored) {
            // one side went away: close both below
         } finally {
            closeQuietly(from);
            closeQuietly(to);
            open.remove(from);
            open.remove(to);
         }
      }, "tcp-proxy-pump");
      t.setDaemon(true);
      t.start();
   }

   private static void closeQuietly(Socket s) {
      try {
         s.close();
      } catch (IOException ignored) {
         // closing
      }
   }

   @Override
   public void close() {
      try {
         server.close();
      } catch (IOException ignored) {
         // closing
      }
      open.forEach(TcpProxy::closeQuietly);
   }
}
