'use strict';
// A Keycloak node: a distribution built once per version and mode by run.sh (`kc.sh build`),
// started here with `kc.sh start --optimized` and the runtime options of the test setup.

const fs = require('node:fs');
const path = require('node:path');
const { Proc, sleep, freePort } = require('./procs');

const HERE = path.resolve(__dirname, '..');
const START_TIMEOUT_MS = Number(process.env.KC_START_TIMEOUT_MS || 300_000);

function distDir(version, mode) {
  const dir = path.join(HERE, '.cache', 'dist', `${version}-${mode}`);
  if (!fs.existsSync(path.join(dir, '.built'))) {
    throw new Error(`Keycloak ${version} (${mode}) is not built in ${dir}: run proto-tests/keycloak/run.sh`);
  }
  return dir;
}

/**
 * Options for the HotRod connection's security, kept here so TLS/SASL can be switched on without
 * touching the scenarios: KC_HOTROD_TLS=true (with KC_TRUSTSTORE_PATHS for ferrod's certificate),
 * KC_HOTROD_USERNAME / KC_HOTROD_PASSWORD (SASL SCRAM-SHA-512, Keycloak's default mechanism).
 */
function hotrodSecurityOptions() {
  const opts = [`--cache-remote-tls-enabled=${process.env.KC_HOTROD_TLS === 'true' ? 'true' : 'false'}`];
  if (process.env.KC_TRUSTSTORE_PATHS) opts.push(`--truststore-paths=${process.env.KC_TRUSTSTORE_PATHS}`);
  if (process.env.KC_HOTROD_USERNAME) {
    opts.push(`--cache-remote-username=${process.env.KC_HOTROD_USERNAME}`);
    opts.push(`--cache-remote-password=${process.env.KC_HOTROD_PASSWORD || ''}`);
  }
  return opts;
}

class KeycloakNode {
  /**
   * @param {string} name   label (log file name)
   * @param {object} o      { version, mode, jdbcUrl, dbUser, dbPassword, cacheOptions: () => string[],
   *                          hostname: () => string (the cluster's public URL), logFile }
   */
  constructor(name, o) {
    this.name = name;
    this.o = o;
    this.dist = distDir(o.version, o.mode);
    this.logFile = o.logFile;
    this.port = undefined;
    this.mgmtPort = undefined;
    this.proc = undefined;
    this.starts = 0;
  }

  get url() { return `http://127.0.0.1:${this.port}`; }

  args() {
    return [
      'start', '--optimized',
      '--http-enabled=true', '--http-host=127.0.0.1', `--http-port=${this.port}`,
      `--http-management-port=${this.mgmtPort}`,
      // One public URL for the cluster, as behind a load balancer: tokens issued by one node carry
      // the issuer the other node expects. Tests call each node directly on its own port.
      `--hostname=${this.o.hostname()}`,
      `--db-url=${this.o.jdbcUrl}`, `--db-username=${this.o.dbUser}`, `--db-password=${this.o.dbPassword}`,
      ...this.o.cacheOptions(),
    ];
  }

  async ports() {
    if (!this.port) {
      this.port = await freePort();
      this.mgmtPort = await freePort();
    }
  }

  async start() {
    await this.ports();
    this.starts += 1;
    const env = {
      ...process.env,
      KC_BOOTSTRAP_ADMIN_USERNAME: 'admin',
      KC_BOOTSTRAP_ADMIN_PASSWORD: 'admin',
      // Two nodes plus everything else on a small machine: bounded heap.
      JAVA_OPTS_KC_HEAP: process.env.KC_HEAP || '-Xms128m -Xmx768m',
    };
    if (process.env.KC_JAVA_HOME) env.JAVA_HOME = process.env.KC_JAVA_HOME;
    this.logStart = fs.existsSync(this.logFile) ? fs.statSync(this.logFile).size : 0;
    this.proc = new Proc(this.name, path.join(this.dist, 'bin', 'kc.sh'), this.args(),
      { env, cwd: this.dist, logFile: this.logFile });
    const deadline = Date.now() + START_TIMEOUT_MS;
    while (Date.now() < deadline) {
      if (!this.proc.running) {
        throw new Error(`Keycloak ${this.name} exited during startup (${JSON.stringify(this.proc.exit)}); log: ${this.logFile}\n${this.tail(40)}`);
      }
      try {
        const r = await fetch(`http://127.0.0.1:${this.mgmtPort}/health/ready`, { signal: AbortSignal.timeout(5000) });
        if (r.status === 200) return;
      } catch (_) { /* not yet */ }
      await sleep(500);
    }
    await this.proc.kill9();
    throw new Error(`Keycloak ${this.name} not ready after ${START_TIMEOUT_MS} ms; log: ${this.logFile}\n${this.tail(40)}`);
  }

  async stop() {
    if (this.proc) await this.proc.stop(60_000);
  }

  async restart() {
    await this.stop();
    await this.start();
  }

  tail(n) {
    try {
      return fs.readFileSync(this.logFile, 'utf8').split('\n').slice(-n).join('\n');
    } catch (_) { return ''; }
  }
}

module.exports = { KeycloakNode, hotrodSecurityOptions, distDir };
