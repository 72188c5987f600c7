'use strict';
// The npm client over TLS (its `ssl` options) against ferrod: trusted CA and SNI host name at every
// protocol version, the SNI name choosing the certificate, an untrusted server refused, client
// certificates required, plain and TLS clients on one port in optional mode.
// ferrod only: the reference server runs without TLS. Certificates are made with openssl.

const { describe, test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { execFileSync } = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { Server, targets } = require('../lib/servers');
const {
  VERSIONS, connect, disconnect, disconnectAll, withTimeout, key, errorText,
} = require('../lib/client');
const { PASSWORD, addUser, sasl } = require('../lib/auth');

const T = { timeout: 60_000 };
const CACHE = 'raw';

/** CAs and leaf certificates in one temporary directory. */
class Pki {
  constructor() {
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ferrod-node-tls-'));
  }

  file(name) {
    return path.join(this.dir, name);
  }

  openssl(...args) {
    execFileSync('openssl', args, { cwd: this.dir, stdio: ['ignore', 'pipe', 'pipe'] });
  }

  ca(name, cn) {
    this.openssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2',
      '-keyout', this.file(`${name}.key`), '-out', this.file(`${name}.pem`), '-subj', `/CN=${cn}`);
  }

  leaf(name, ca, cn, { client = false, dns = [] } = {}) {
    const ext = ['basicConstraints=CA:FALSE', `extendedKeyUsage=${client ? 'clientAuth' : 'serverAuth'}`];
    if (!client) ext.push(`subjectAltName=${[...dns.map((d) => `DNS:${d}`), 'IP:127.0.0.1'].join(',')}`);
    fs.writeFileSync(this.file(`${name}.ext`), `${ext.join('\n')}\n`);
    this.openssl('req', '-newkey', 'rsa:2048', '-nodes', '-keyout', this.file(`${name}.key`),
      '-out', this.file(`${name}.csr`), '-subj', `/O=ferrod proto-tests/CN=${cn}`);
    this.openssl('x509', '-req', '-in', this.file(`${name}.csr`), '-CA', this.file(`${ca}.pem`),
      '-CAkey', this.file(`${ca}.key`), '-set_serial', `0x${crypto.randomBytes(7).toString('hex')}`,
      '-days', '2', '-extfile', this.file(`${name}.ext`), '-out', this.file(`${name}.pem`));
  }

  destroy() {
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

const enabled = targets().includes('ferrod');

describe('ferrod TLS', { skip: enabled ? false : 'TLS is tested on ferrod (TARGET excludes it)' }, () => {
  const pki = new Pki();
  const servers = [];

  before(() => {
    pki.ca('ca', 'proto-tests CA');
    pki.ca('sni-ca', 'proto-tests SNI CA');
    pki.ca('stranger-ca', 'stranger CA');
    pki.leaf('server', 'ca', 'ferrod', { dns: ['localhost'] });
    pki.leaf('cache', 'sni-ca', 'cache', { dns: ['cache.example.test'] });
    pki.leaf('keycloak', 'ca', 'keycloak', { client: true });
    pki.leaf('mallory', 'stranger-ca', 'mallory', { client: true });
  });

  after(async () => {
    await disconnectAll();
    for (const s of servers) await s.destroy();
    pki.destroy();
  }, { timeout: 60_000 });

  async function ferrod(label, ...extra) {
    const s = new Server('ferrod', `tls-${label}`, {
      ferrodArgs: ['--tls-certificate', pki.file('server.pem'), '--tls-private-key', pki.file('server.key'), ...extra],
    });
    servers.push(s);
    await s.start();
    return s;
  }

  const ssl = (trust, sniHostName, clientAuth) => ({
    ssl: {
      enabled: true, trustCerts: trust.map((n) => pki.file(`${n}.pem`)), sniHostName, clientAuth,
    },
  });

  async function roundTrip(server, version, opts, label) {
    const c = await connect(server, version, CACHE, opts);
    try {
      const k = key('tls', version, label);
      await withTimeout(c.put(k, `over TLS ${label}`), 10_000, 'put');
      assert.equal(await withTimeout(c.get(k), 10_000, 'get'), `over TLS ${label}`);
    } finally {
      await disconnect(c);
    }
  }

  /** The client must not get a working session: connect or the first operation fails. */
  async function refused(server, opts, what) {
    let ok = false;
    try {
      await roundTrip(server, '3.1', opts, 'refused');
      ok = true;
    } catch (_) { /* expected */ }
    assert.equal(ok, false, `${what}: a session was established`);
  }

  test('put/get over TLS with the CA and SNI host name, every protocol version', T, async () => {
    const s = await ferrod('required');
    for (const v of VERSIONS) await roundTrip(s, v, ssl(['ca'], 'localhost'), v);
    // without an SNI name (the client then checks the certificate against 127.0.0.1)
    await roundTrip(s, 'auto', ssl(['ca'], undefined), 'no-sni');
  });

  test('the SNI host name chooses the certificate', T, async () => {
    const s = await ferrod('sni', '--tls-sni', `cache.example.test=${pki.file('cache.pem')},${pki.file('cache.key')}`);
    // cache.example.test's certificate is issued by another CA than the default one
    await roundTrip(s, 'auto', ssl(['sni-ca'], 'cache.example.test'), 'sni');
    await refused(s, ssl(['sni-ca'], 'localhost'), 'default certificate with only the SNI CA trusted');
    await roundTrip(s, 'auto', ssl(['ca'], 'localhost'), 'sni-default');
  });

  test('an untrusted server certificate and a plain client are refused', T, async () => {
    const s = await ferrod('untrusted');
    await refused(s, ssl(['stranger-ca'], 'localhost'), 'untrusted CA');
    await refused(s, {}, 'plain client on a TLS-only port');
  });

  test('client certificates required', T, async () => {
    const s = await ferrod('client-auth', '--tls-client-auth', 'required', '--tls-client-ca', pki.file('ca.pem'));
    await roundTrip(s, 'auto', ssl(['ca'], 'localhost', { cert: pki.file('keycloak.pem'), key: pki.file('keycloak.key') }), 'client-cert');
    await refused(s, ssl(['ca'], 'localhost'), 'no client certificate');
    await refused(s, ssl(['ca'], 'localhost', { cert: pki.file('mallory.pem'), key: pki.file('mallory.key') }), 'untrusted client certificate');
  });

  test('TLS and SCRAM-SHA-256 together; a wrong password and an untrusted server refused', T, async () => {
    const users = pki.file('users');
    addUser(users, 'app', 'application');
    const s = await ferrod('scram', '--credentials-file', users);
    const both = (trust, password) => ({ ...ssl(trust, 'localhost'), ...sasl('SCRAM-SHA-256', 'app', password) });
    await roundTrip(s, 'auto', both(['ca'], PASSWORD), 'scram');
    await roundTrip(s, '3.1', both(['ca'], PASSWORD), 'scram-3.1');
    await assert.rejects(connect(s, 'auto', CACHE, { ...both(['ca'], 'wrong'), maxRetries: 0 }), (e) => {
      assert.match(errorText(e), /authentication failed/, errorText(e));
      return true;
    });
    await refused(s, both(['stranger-ca'], PASSWORD), 'untrusted CA with the right password');
    // TLS without SASL: the session works, the operations are refused until AUTH
    await refused(s, ssl(['ca'], 'localhost'), 'TLS without authentication');
  });

  test('optional mode serves plain and TLS clients on one port', T, async () => {
    const s = await ferrod('optional', '--tls-mode', 'optional');
    await roundTrip(s, 'auto', {}, 'plain');
    await roundTrip(s, 'auto', ssl(['ca'], 'localhost'), 'tls');
  });
});
