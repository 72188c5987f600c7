'use strict';
// The HotRod connection's security, as Keycloak is deployed in production: TLS
// (--cache-remote-tls-enabled=true, Keycloak's default) with the test CA in Keycloak's truststore,
// and SASL (--cache-remote-username/--cache-remote-password: Keycloak's default mechanism
// SCRAM-SHA-512, realm "default") against ferrod replicas with tls_certificate/tls_private_key
// (tls_mode required) and a credentials file written by `ferrod user add`.
//
// KC_HOTROD_SECURE=0 runs the plain variant (no TLS, no authentication).

const crypto = require('node:crypto');
const fs = require('node:fs');
const http = require('node:http');
const https = require('node:https');
const path = require('node:path');
const { spawnSync } = require('node:child_process');

/** The user Keycloak logs in as. */
const HOTROD_USER = 'keycloak';
/**
 * Its role. Keycloak needs CREATE (role deployer): it creates its caches with the admin task
 * @@cache@getorcreate and writes its schema to ___protobuf_metadata (CREATE on Infinispan). A
 * Keycloak upgrade that changes an indexed field also runs @@cache@updateindexschema and
 * @@cache@reindex, which need ADMIN; the stages here always start on an empty ferrod database,
 * so that path does not run (KC_HOTROD_ROLE=admin to use the wider role anyway).
 */
const HOTROD_ROLE = process.env.KC_HOTROD_ROLE || 'deployer';

function secureByDefault() {
  const v = process.env.KC_HOTROD_SECURE ?? '1';
  if (v !== '0' && v !== '1') throw new Error(`KC_HOTROD_SECURE: '${v}' (0 = plain, 1 = TLS + SCRAM-SHA-512)`);
  return v === '1';
}

function run(cmd, args, what, input) {
  const r = spawnSync(cmd, args, { encoding: 'utf8', input });
  if (r.status !== 0) {
    throw new Error(`${what} failed (${cmd} ${args.join(' ')}): ${r.error || ''}${r.stderr || ''}${r.stdout || ''}`);
  }
  return r.stdout;
}

/**
 * A throwaway test CA and a server certificate signed by it, made with openssl. The server
 * certificate names what Keycloak's HotRod client checks: it connects to cache-remote-host
 * 127.0.0.1 (the proxy, or replica 1 on the `list` route) with hostname validation on (the
 * client's default; endpoint identification "HTTPS", which for an IP literal needs an IP SAN),
 * and sends 127.0.0.1 as SNI (which rustls ignores, serving the default certificate).
 */
function makePki(dir) {
  fs.mkdirSync(dir, { recursive: true });
  const f = (n) => path.join(dir, n);
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];
  run('openssl', ['req', '-x509', ...ec, '-keyout', f('ca.key'), '-out', f('ca.pem'), '-days', '2',
    '-subj', '/CN=ferrod proto-tests keycloak CA',
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign'], 'openssl CA');
  run('openssl', ['req', ...ec, '-keyout', f('server.key'), '-out', f('server.csr'), '-subj', '/CN=localhost'], 'openssl server key');
  fs.writeFileSync(f('server.ext'), [
    'subjectAltName=IP:127.0.0.1,DNS:localhost',
    'basicConstraints=critical,CA:FALSE',
    'keyUsage=critical,digitalSignature',
    'extendedKeyUsage=serverAuth',
  ].join('\n'));
  run('openssl', ['x509', '-req', '-in', f('server.csr'), '-CA', f('ca.pem'), '-CAkey', f('ca.key'),
    '-CAcreateserial', '-days', '2', '-sha256', '-extfile', f('server.ext'), '-out', f('server.pem')], 'openssl server certificate');
  return { ca: f('ca.pem'), cert: f('server.pem'), key: f('server.key') };
}

class HotRodSecurity {
  /** @param {string} dir where the certificates and the credentials file go */
  constructor(dir, secure = secureByDefault()) {
    this.dir = dir;
    this.secure = secure;
  }

  /** Certificates, and the credentials file written by this ferrod binary's `user add`. */
  setup(ferrodBin) {
    if (!this.secure) return;
    this.pki = makePki(path.join(this.dir, 'pki'));
    this.password = crypto.randomBytes(18).toString('base64url');
    this.credentials = path.join(this.dir, 'ferrod-users.toml');
    // The password on standard input (`user add` reads its first line), not on the command line.
    run(ferrodBin, ['user', 'add', HOTROD_USER, '--roles', HOTROD_ROLE, '--file', this.credentials],
      'ferrod user add', `${this.password}\n`);
  }

  /** ferrod replica arguments. */
  ferrodArgs() {
    if (!this.secure) return [];
    return ['--tls-mode', 'required', '--tls-certificate', this.pki.cert, '--tls-private-key', this.pki.key,
      '--credentials-file', this.credentials];
  }

  /** Keycloak runtime options (the password goes in the environment, see keycloakEnv). */
  keycloakOptions() {
    if (!this.secure) return ['--cache-remote-tls-enabled=false'];
    return ['--cache-remote-tls-enabled=true', `--truststore-paths=${this.pki.ca}`,
      `--cache-remote-username=${HOTROD_USER}`];
  }

  keycloakEnv() {
    return this.secure ? { KC_CACHE_REMOTE_PASSWORD: this.password } : {};
  }

  describe() {
    return this.secure
      ? `TLS (test CA in Keycloak's truststore, server certificate for IP 127.0.0.1) + SASL SCRAM-SHA-512 as user '${HOTROD_USER}' (role ${HOTROD_ROLE})`
      : 'plain (KC_HOTROD_SECURE=0: no TLS, no authentication)';
  }

  /**
   * One REST call on the HotRod port, made as Infinispan's REST client does for Keycloak's
   * multi-site health check (same host, port, TLS and user as the HotRod client; HTTP BASIC).
   * `auth` false sends no credentials. Resolves { status, body }.
   */
  rest(port, urlPath, { auth = true } = {}) {
    const headers = {};
    if (this.secure && auth) {
      headers.authorization = `Basic ${Buffer.from(`${HOTROD_USER}:${this.password}`).toString('base64')}`;
    }
    const opts = { host: '127.0.0.1', port, path: urlPath, method: 'GET', headers, timeout: 15_000 };
    const mod = this.secure ? https : http;
    // No servername: the identity is checked against 127.0.0.1 (the IP SAN), as Keycloak's is.
    if (this.secure) opts.ca = fs.readFileSync(this.pki.ca);
    return new Promise((resolve, reject) => {
      const req = mod.request(opts, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d) => { body += d; });
        res.on('end', () => resolve({ status: res.statusCode, body }));
      });
      req.on('timeout', () => req.destroy(new Error(`REST ${urlPath}: no answer`)));
      req.on('error', reject);
      req.end();
    });
  }
}

module.exports = { HotRodSecurity, HOTROD_USER, HOTROD_ROLE, secureByDefault, makePki };
