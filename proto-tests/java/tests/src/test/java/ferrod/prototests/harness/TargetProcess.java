package ferrod.prototests.harness;

import java.io.IOException;
import java.net.InetSocketAddress;
import java.net.Socket;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;

/**
 * A server under test run as a child process: started with a fixed command line, ready when its
 * TCP port accepts connections, restarted with the same command line (same port, same data).
 */
public final class TargetProcess implements AutoCloseable {

   private final String name;
   private final List<String> command;
   private final Map<String, String> environment;
   private final int port;
   private final int httpPort;
   private final Path log;
   private final Duration startTimeout;
   private final Runnable cleanup;
   private Process process;
   private int starts;

   TargetProcess(String name, List<String> command, Map<String, String> environment, int port, int httpPort,
                 Path log, Duration startTimeout, Runnable cleanup) {
      this.name = name;
      this.command = List.copyOf(command);
      this.environment = Map.copyOf(environment);
      this.port = port;
      this.httpPort = httpPort;
      this.log = log;
      this.startTimeout = startTimeout;
      this.cleanup = cleanup;
   }

   public String name() {
      return name;
   }

   public String host() {
      return "127.0.0.1";
   }

   public int port() {
      return port;
   }

   /** Where Infinispan's REST API is served: the HotRod port for ferrod, a port of its own for the reference. */
   public int httpPort() {
      return httpPort;
   }

   public Path log() {
      return log;
   }

   public synchronized boolean isAlive() {
      return process != null && process.isAlive();
   }

   /** Starts the process and waits until its port accepts TCP connections. */
   public synchronized void start() {
      if (isAlive()) {
         throw new IllegalStateException(name + " is already running");
      }
      try {
         Files.createDirectories(log.getParent());
         Files.writeString(log, "\n==== start #" + (++starts) + ": " + String.join(" ", command) + "\n",
               StandardCharsets.UTF_8, java.nio.file.StandardOpenOption.CREATE, java.nio.file.StandardOpenOption.APPEND);
         ProcessBuilder pb = new ProcessBuilder(command);
         pb.environment().putAll(environment);
         pb.redirectErrorStream(true);
         pb.redirectOutput(ProcessBuilder.Redirect.appendTo(log.toFile()));
         pb.redirectInput(ProcessBuilder.Redirect.PIPE);
         process = pb.start();
      } catch (IOException e) {
         throw new IllegalStateException("cannot start " + name + ": " + e, e);
      }
      waitReady();
   }

   private void waitReady() {
      long deadline = System.nanoTime() + startTimeout.toNanos();
      while (System.nanoTime() < deadline) {
         if (!process.isAlive()) {
            throw new IllegalStateException(name + " exited with status " + process.exitValue()
                  + " before accepting connections on port " + port + "; log " + log + ":\n" + logTail(40));
         }
         try (Socket s = new Socket()) {
            s.connect(new InetSocketAddress(host(), port), 250);
            note("accepting connections after " + (startTimeout.toNanos() - (deadline - System.nanoTime())) / 1_000_000 + " ms");
            return;
         } catch (IOException e) {
            sleep(100);
         }
      }
      process.destroyForcibly();
      throw new IllegalStateException(name + " did not accept connections on port " + port + " within "
            + startTimeout.toSeconds() + " s; log " + log + ":\n" + logTail(40));
   }

   /** Graceful stop: SIGTERM, then wait for the process to exit (SIGKILL after 60 s). */
   public synchronized void stop() {
      if (process == null) {
         return;
      }
      long t0 = System.nanoTime();
      process.destroy();
      waitExit(Duration.ofSeconds(60));
      note("stopped (SIGTERM) in " + (System.nanoTime() - t0) / 1_000_000 + " ms, exit status " + process.exitValue());
   }

   /** Crash: SIGKILL, no chance to flush anything. */
   public synchronized void kill() {
      if (process == null) {
         return;
      }
      process.destroyForcibly();
      waitExit(Duration.ofSeconds(30));
      note("killed (SIGKILL)");
   }

   private void waitExit(Duration timeout) {
      try {
         if (!process.waitFor(timeout.toMillis(), TimeUnit.MILLISECONDS)) {
            process.destroyForcibly();
            process.waitFor(30, TimeUnit.SECONDS);
         }
      } catch (InterruptedException e) {
         Thread.currentThread().interrupt();
         process.destroyForcibly();
      }
   }

   /** SIGTERM, then start again with the same arguments. */
   public synchronized void restart() {
      stop();
      start();
   }

   /** SIGKILL, then start again with the same arguments. */
   public synchronized void restartAfterKill() {
      kill();
      start();
   }

   /** Exit status if the process has died on its own (not stopped by us), else null. */
   public synchronized Integer deathStatus() {
      if (process != null && !process.isAlive()) {
         return process.exitValue();
      }
      return null;
   }

   /** Appends a harness line to the target's log. */
   public void note(String line) {
      try {
         Files.writeString(log, "==== " + java.time.Instant.now() + " " + line + "\n", StandardCharsets.UTF_8,
               java.nio.file.StandardOpenOption.CREATE, java.nio.file.StandardOpenOption.APPEND);
      } catch (IOException ignored) {
         // the log is best effort
      }
   }

   public String logTail(int lines) {
      try {
         List<String> all = Files.readAllLines(log, StandardCharsets.UTF_8);
         return String.join("\n", all.subList(Math.max(0, all.size() - lines), all.size()));
      } catch (IOException | java.io.UncheckedIOException e) {
         return "(log unreadable: " + e + ")";
      }
   }

   @Override
   public synchronized void close() {
      try {
         stop();
      } finally {
         process = null;
         if (cleanup != null) {
            cleanup.run();
         }
      }
   }

   private static void sleep(long ms) {
      try {
         Thread.sleep(ms);
      } catch (InterruptedException e) {
         Thread.currentThread().interrupt();
         throw new IllegalStateException(e);
      }
   }

   @Override
   public String toString() {
      return name + "@" + host() + ":" + port;
   }

   static List<String> list(String... items) {
      return new ArrayList<>(List.of(items));
   }
}
