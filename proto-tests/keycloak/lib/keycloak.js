'use strict';
// A Keycloak node: a distribution built once per version and mode by run.sh (`kc.sh build`),
// started here with `kc.sh start --optimized` and the runtime options of the test setup.

const fs = require('node:fs');
const path = require('node:path');
const { spawnSync } = require('node:child_process');
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

class KeycloakNode {
  /**
   * @param {string} name   label (log file name)
   * @param {object} o      { version, mode, jdbcUrl, dbUser, dbPassword, cacheOptions: () => string[],
   *                          cacheEnv: () => object (secrets, kept out of the logged command line),
   *                          hostname: () => string (the cluster's public URL), logFile }
   */
  constructor(name, o) {
    this.name = name;
    this.o = o;
    this.dist = distDir(o.version, o.mode);
    this.logFile = o.logFile;
    this.home = path.join(path.dirname(o.logFile), `${name}-home`);
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

  /**
   * The node's own Keycloak home: a hard-linked copy of the built distribution (no disk cost)
   * with an empty `data/` of its own. Keycloak writes into `data/` at every start (the truststore
   * it builds from --truststore-paths, `data/keycloak-truststore.p12`; transaction logs; tmp), and
   * two nodes writing one file at once corrupt it (seen: "Failed to initialize
   * TruststoreProviderFactory … Tag number over 30" when both restarted together). In production
   * every node has its own filesystem.
   */
  prepareHome() {
    if (fs.existsSync(this.home)) return;
    const r = spawnSync('cp', ['-al', this.dist, this.home], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`cp -al ${this.dist} ${this.home}: ${r.stderr}`);
    fs.rmSync(path.join(this.home, 'data'), { recursive: true, force: true });
    fs.mkdirSync(path.join(this.home, 'data'));
  }

  async start() {
    await this.ports();
    this.prepareHome();
    this.starts += 1;
    const env = {
      ...process.env,
      KC_BOOTSTRAP_ADMIN_USERNAME: 'admin',
      KC_BOOTSTRAP_ADMIN_PASSWORD: 'admin',
      // Two nodes plus everything else on a small machine: bounded heap.
      JAVA_OPTS_KC_HEAP: process.env.KC_HEAP || '-Xms128m -Xmx768m',
      ...(this.o.cacheEnv ? this.o.cacheEnv() : {}),
    };
    if (process.env.KC_JAVA_HOME) env.JAVA_HOME = process.env.KC_JAVA_HOME;
    this.logStart = fs.existsSync(this.logFile) ? fs.statSync(this.logFile).size : 0;
    this.proc = new Proc(this.name, path.join(this.home, 'bin', 'kc.sh'), this.args(),
      { env, cwd: this.home, logFile: this.logFile });
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

module.exports = { KeycloakNode, distDir };
