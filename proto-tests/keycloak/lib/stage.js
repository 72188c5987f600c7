'use strict';
// One test stage: a Keycloak version and mode, its databases, two ferrod replicas behind the
// chosen HotRod route, a mail sink and two Keycloak nodes.

const fs = require('node:fs');
const path = require('node:path');
const { freshDatabase, dropDatabase, psql, withDatabase, sleep } = require('./procs');
const { Replica, HotRodRoute } = require('./ferrod');
const { KeycloakNode } = require('./keycloak');
const { HotRodSecurity } = require('./security');
const { MailSink } = require('./smtp');

const HERE = path.resolve(__dirname, '..');
const LOG_ROOT = path.join(HERE, 'logs');

function pgUrl() {
  const url = process.env.FERROD_TEST_PG_URL;
  if (!url) throw new Error('FERROD_TEST_PG_URL is not set (run proto-tests/keycloak/run.sh)');
  return url;
}

function jdbc(url) {
  const u = new URL(url);
  return { jdbcUrl: `jdbc:postgresql://${u.hostname}:${u.port || 5432}${u.pathname}`, user: decodeURIComponent(u.username), password: decodeURIComponent(u.password) };
}

const tag = (s) => s.replace(/[^a-z0-9]+/gi, '_').toLowerCase();

/** Runs `fn`, returns its duration in seconds (one decimal). */
async function timed(fn) {
  const t0 = Date.now();
  await fn();
  return Math.round((Date.now() - t0) / 100) / 10;
}

/**
 * The migrated Keycloak database of `version` (schema + master realm + bootstrap admin), made once
 * by one embedded node and kept on the server as a template: each stage's fresh database is a
 * copy, so Liquibase's first migration (about a minute here) runs once per version, not per stage.
 */
async function keycloakTemplate(version) {
  const url = pgUrl();
  const name = `kcproto_tpl_${tag(version)}`;
  const ready = psql(url, `select shobj_description(oid, 'pg_database') from pg_database where datname = '${name}'`);
  if (ready === 'ready') return name;
  const dir = path.join(LOG_ROOT, `${version}-template`);
  fs.mkdirSync(dir, { recursive: true });
  const db = freshDatabase(url, name);
  const j = jdbc(db);
  const node = new KeycloakNode('template', {
    version, mode: 'embedded', jdbcUrl: j.jdbcUrl, dbUser: j.user, dbPassword: j.password,
    cacheOptions: () => ['--cache=local'], hostname: () => node.url, logFile: path.join(dir, 'keycloak.log'),
  });
  try {
    await node.start();
  } finally {
    await node.stop();
  }
  psql(url, `comment on database ${name} is 'ready'`);
  return name;
}

function freshKeycloakDatabase(template, db) {
  const url = pgUrl();
  psql(url, `drop database if exists ${db} with (force)`);
  psql(url, `create database ${db} template ${template}`);
  return withDatabase(url, db);
}

class Stage {
  /**
   * @param {string} version  Keycloak version
   * @param {string} mode     multi-site | clusterless | embedded (no ferrod)
   */
  constructor(version, mode) {
    this.version = version;
    this.mode = mode;
    this.withFerrod = mode !== 'embedded';
    this.dir = path.join(LOG_ROOT, `${version}-${mode}`);
    this.dbPrefix = `kcproto_${tag(version)}_${tag(mode)}`;
    this.replicas = [];
    this.nodes = [];
    this.timings = {};
    this.started = false;
    this.notes = [];
    this.security = this.withFerrod ? new HotRodSecurity(this.dir) : undefined;
  }

  async start({ nodes = 2 } = {}) {
    fs.rmSync(this.dir, { recursive: true, force: true });
    fs.mkdirSync(this.dir, { recursive: true });
    const template = await keycloakTemplate(this.version);
    const kcDb = jdbc(freshKeycloakDatabase(template, `${this.dbPrefix}_kc`));

    this.mail = new MailSink();
    await this.mail.start();

    if (this.withFerrod) {
      const ferrodDb = freshDatabase(pgUrl(), `${this.dbPrefix}_ferrod`);
      const bin = process.env.FERROD_BIN;
      this.security.setup(bin);
      this.notes.push(`HotRod security: ${this.security.describe()}`);
      this.replicas = [1, 2].map((i) => new Replica(`ferrod${i}`, {
        bin, databaseUrl: ferrodDb, dir: path.join(this.dir, `ferrod${i}`), logFile: path.join(this.dir, `ferrod${i}.log`),
        args: this.security.ferrodArgs(),
      }));
      for (const r of this.replicas) await r.start();
      this.route = new HotRodRoute(process.env.KC_HOTROD_ROUTE || 'proxy', this.replicas, this.dir);
      await this.route.start();
    }

    const cacheOptions = this.withFerrod
      ? () => [...this.route.keycloakOptions(), ...this.security.keycloakOptions()]
      : () => ['--cache=local'];
    const cacheEnv = this.withFerrod ? () => this.security.keycloakEnv() : () => ({});
    // The cluster's public URL (what a load balancer would be): node 1's address.
    const hostname = () => this.nodes[0].url;
    for (let i = 1; i <= nodes; i++) {
      this.nodes.push(new KeycloakNode(`keycloak${i}`, {
        version: this.version, mode: this.mode, jdbcUrl: kcDb.jdbcUrl, dbUser: kcDb.user, dbPassword: kcDb.password,
        cacheOptions, cacheEnv, hostname, logFile: path.join(this.dir, `keycloak${i}.log`),
      }));
    }
    for (const n of this.nodes) await n.ports();
    this.timings.keycloakStartS = await timed(() => Promise.all(this.nodes.map((n) => n.start())));
    this.started = true;
  }

  async restartKeycloak() {
    await Promise.all(this.nodes.map((n) => n.stop()));
    await Promise.all(this.nodes.map((n) => n.start()));
  }

  /** The distinct QUERY requests the proxy saw (cache: Ickle), in first-seen order. */
  queriesSeen() {
    const file = path.join(this.dir, 'hotrod-queries.log');
    if (!fs.existsSync(file)) return [];
    const lines = fs.readFileSync(file, 'utf8').split('\n').filter(Boolean).map((l) => l.slice(l.indexOf(' ') + 1));
    return [...new Set(lines)];
  }

  async stop() {
    await Promise.all(this.nodes.map((n) => n.stop().catch(() => {})));
    for (const r of this.replicas) await r.stop().catch(() => {});
    if (this.route) await this.route.stop();
    if (this.mail) await this.mail.stop();
    if (!process.env.KEEP_DATA) {
      dropDatabase(pgUrl(), `${this.dbPrefix}_kc`);
      dropDatabase(pgUrl(), `${this.dbPrefix}_ferrod`);
    }
  }
}

module.exports = { Stage, timed, sleep, LOG_ROOT };
