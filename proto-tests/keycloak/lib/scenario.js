'use strict';
// The end-to-end scenario, step by step, against one Stage (two Keycloak nodes, two ferrod
// replicas). Each step is one node:test test; they share the state kept here.

const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { Kc, Browser, HttpError, request, formAction, hrefs, feedback } = require('./http');
const { links } = require('./smtp');
const { scanLog } = require('./scan');
const { sleep, timed } = require('./stage');

const REALM = 'ferrod';
const CLIENT = 'app';
const USER = 'alice';
const LOAD_WORKERS = Number(process.env.KC_LOAD_WORKERS || 3);
const LOAD_PASSWORD = 'Load-pass-1';

/** Asserts `p` rejects with an HttpError whose status is one of `statuses`; returns it. */
async function refused(p, statuses, what) {
  try {
    await p;
  } catch (e) {
    if (e instanceof HttpError && statuses.includes(e.status)) return e;
    throw e;
  }
  assert.fail(`${what}: accepted, expected a refusal (HTTP ${statuses.join('/')})`);
}

class Scenario {
  constructor(stage) {
    this.stage = stage;
    this.password = 'Alice-pass-1';
    this.windows = []; // { name, from, to } of the steps that break connections on purpose
    this.report = { version: stage.version, mode: stage.mode, notes: stage.notes, timings: stage.timings };
  }

  get kc1() { return new Kc(this.stage.nodes[0].url); }

  get kc2() { return new Kc(this.stage.nodes[1].url); }

  async admin(kc) { return kc.adminToken(); }

  async setupRealm() {
    const kc = this.kc1;
    const token = await this.admin(kc);
    await request('POST', kc.admin(''), {
      token,
      json: {
        realm: REALM,
        enabled: true,
        // Lock a user out after 3 failures (quick-login check effectively off, so the count decides).
        bruteForceProtected: true,
        permanentLockout: false,
        failureFactor: 3,
        waitIncrementSeconds: 60,
        maxFailureWaitSeconds: 900,
        quickLoginCheckMilliSeconds: 1,
        minimumQuickLoginWaitSeconds: 60,
        maxDeltaTimeSeconds: 43200,
        smtpServer: { host: '127.0.0.1', port: String(this.stage.mail.port), from: 'keycloak@proto-tests.invalid', auth: 'false', ssl: 'false', starttls: 'false' },
      },
      expect: [201],
    });
    await request('POST', kc.admin(`/${REALM}/clients`), {
      token,
      json: {
        clientId: CLIENT, publicClient: true, directAccessGrantsEnabled: true, standardFlowEnabled: true,
        redirectUris: ['http://127.0.0.1/*'],
      },
      expect: [201],
    });
    await request('POST', kc.admin(`/${REALM}/users`), {
      token,
      json: {
        username: USER, enabled: true, email: 'alice@proto-tests.invalid', emailVerified: true, firstName: 'Alice', lastName: 'Example',
        credentials: [{ type: 'password', value: this.password, temporary: false }],
      },
      expect: [201],
    });
    // One user per load worker: Keycloak's brute-force protection blocks concurrent logins of one
    // user by design (26.x "concurrent login requests are blocked by default when brute force is
    // enabled"), so parallel workers must not share a user.
    for (let w = 0; w < LOAD_WORKERS; w++) {
      await request('POST', kc.admin(`/${REALM}/users`), {
        token,
        json: {
          username: `load${w}`, enabled: true, email: `load${w}@proto-tests.invalid`, emailVerified: true, firstName: 'Load', lastName: `Worker ${w}`,
          credentials: [{ type: 'password', value: LOAD_PASSWORD, temporary: false }],
        },
        expect: [201],
      });
    }
    // Node 2 sees the user (from the shared database).
    const t2 = await this.admin(this.kc2);
    const users = (await request('GET', this.kc2.admin(`/${REALM}/users?username=${USER}&exact=true`), { token: t2 })).body;
    assert.equal(users.length, 1, 'node 2 sees the user');
    this.userId = users[0].id;
  }

  async loginRefreshUserinfo() {
    const t1 = await this.kc1.passwordGrant(REALM, CLIENT, USER, this.password);
    assert.ok(t1.refresh_token, 'node 1 password grant gives a refresh token');
    const t2 = await this.kc2.refresh(REALM, CLIENT, t1.refresh_token);
    assert.ok(t2.access_token, 'node 2 refreshes a token issued by node 1');
    assert.equal(t2.session_state, t1.session_state, 'same user session');
    for (const kc of [this.kc1, this.kc2]) {
      const info = await kc.userinfo(REALM, t2.access_token);
      assert.equal(info.preferred_username, USER);
    }
    this.session = t2;
  }

  async bruteForce() {
    const status = async (kc) => (await request('GET', kc.admin(`/${REALM}/attack-detection/brute-force/users/${this.userId}`),
      { token: await this.admin(kc) })).body;
    const nodes = [this.kc1, this.kc2, this.kc1];
    for (const kc of nodes) {
      // 26.4 answers 401, 26.7 answers 400 (both invalid_grant).
      await refused(kc.passwordGrant(REALM, CLIENT, USER, 'wrong-password'), [400, 401], 'wrong password');
    }
    const locked = await status(this.kc2);
    assert.equal(locked.numFailures, 3, `node 2 counts the failures of both nodes: ${JSON.stringify(locked)}`);
    assert.equal(locked.disabled, true, `user locked out: ${JSON.stringify(locked)}`);
    // The right password is refused while locked out, on either node.
    await refused(this.kc2.passwordGrant(REALM, CLIENT, USER, this.password), [400, 401], 'locked-out login on node 2');
    await refused(this.kc1.passwordGrant(REALM, CLIENT, USER, this.password), [400, 401], 'locked-out login on node 1');
    // Unlock on node 1; node 2 lets the user in again.
    await request('DELETE', this.kc1.admin(`/${REALM}/attack-detection/brute-force/users/${this.userId}`),
      { token: await this.admin(this.kc1), expect: [204] });
    const unlocked = await status(this.kc2);
    assert.equal(unlocked.disabled, false, `unlocked: ${JSON.stringify(unlocked)}`);
    assert.equal(unlocked.numFailures, 0);
    const ok = await this.kc2.passwordGrant(REALM, CLIENT, USER, this.password);
    assert.ok(ok.access_token);
  }

  /**
   * execute-actions-email (UPDATE_PASSWORD) sends a single-use action token by mail: used once
   * on node 1 (the password changes), then refused on node 2 and again on node 1.
   */
  async actionToken() {
    const since = this.stage.mail.messages.length;
    // Node 2's view of the password (it caches the user) before the change.
    const passwordBefore = await this.passwordCredential(this.kc2);
    const token = await this.admin(this.kc1);
    await request('PUT', this.kc1.admin(`/${REALM}/users/${this.userId}/execute-actions-email?client_id=${CLIENT}&redirect_uri=${encodeURIComponent('http://127.0.0.1/done')}&lifespan=600`),
      { token, json: ['UPDATE_PASSWORD'], expect: [204] });
    const mail = await this.stage.mail.waitFor('alice@proto-tests.invalid', since);
    const link = links(mail).find((l) => l.includes('/login-actions/action-token'));
    assert.ok(link, `the mail carries an action-token link: ${mail.data.slice(0, 2000)}`);

    const first = new Browser();
    let page = await first.go(link);
    // A fresh browser first gets an info page ("Perform the following action(s)") with a link on.
    const proceed = hrefs(page.html, '/login-actions/action-token');
    if (proceed.length > 0 && !formAction(page.html, /kc-passwd-update-form/)) {
      page = await first.go(new URL(proceed[0], page.url).toString());
    }
    const action = formAction(page.html, /kc-passwd-update-form/);
    assert.ok(action, `first use shows the update-password form (HTTP ${page.status}, ${feedback(page.html)})`);
    const newPassword = 'Alice-pass-2';
    const done = await first.go(new URL(action, page.url).toString(),
      { method: 'POST', form: { 'password-new': newPassword, 'password-confirm': newPassword } });
    // Success ends with a redirect to the client's redirect_uri (or an info page).
    if (!done.leftTo) {
      assert.ok(!formAction(done.html, /kc-passwd-update-form/), `password accepted (HTTP ${done.status}: ${feedback(done.html)})`);
    } else {
      assert.ok(done.leftTo.startsWith('http://127.0.0.1/done'), `redirected to ${done.leftTo}`);
    }
    this.password = newPassword;
    // Node 2 drops its cached user when node 1's invalidation arrives through the work cache's
    // client listener, asynchronously (as with Infinispan): wait for it (at most 2 s, as for a
    // realm change) before logging in there, rather than spend failed logins on brute-force
    // protection.
    const t0 = Date.now();
    let passwordNow = passwordBefore;
    while (passwordNow === passwordBefore && Date.now() - t0 < 2000) {
      await sleep(50);
      passwordNow = await this.passwordCredential(this.kc2);
    }
    assert.notEqual(passwordNow, passwordBefore, 'node 2 sees the new password within 2 s (user-cache invalidation)');
    this.report.passwordInvalidationMs = Date.now() - t0;
    await this.kc2.passwordGrant(REALM, CLIENT, USER, this.password);

    // Second use, on node 2 and on node 1: refused.
    for (const base of [this.stage.nodes[1].url, this.stage.nodes[0].url]) {
      const again = new URL(link);
      const b = new URL(base);
      again.host = b.host;
      const second = await new Browser().go(again.toString());
      const followUps = hrefs(second.html, '/login-actions/action-token');
      let formShown = !!formAction(second.html, /kc-passwd-update-form/);
      if (!formShown && followUps.length > 0) {
        const next = await new Browser().go(new URL(followUps[0], second.url).toString());
        formShown = !!formAction(next.html, /kc-passwd-update-form/);
      }
      assert.ok(!formShown, `second use on ${b.host} refused (HTTP ${second.status}: ${feedback(second.html)})`);
      assert.ok(second.status >= 400, `second use on ${b.host}: HTTP ${second.status} (${feedback(second.html)})`);
    }
  }

  /**
   * After both replicas were killed, each Keycloak node's HotRod client re-registers its
   * work-cache listener once it finds a live server again (its first attempts, while no replica
   * is up, log "Error encountered trying to add listener", allowed during this window). A realm
   * change made before node 2's listener is back is not delivered to it: HotRod does not replay
   * events to a listener that was not registered, with Infinispan too. So: repeat the 2 s
   * propagation check until one passes, at most 60 s (4-6 s on the loaded 2-core machine), and
   * record how long invalidation took to resume.
   */
  async realmSettingPropagatesAfterRecovery() {
    const t0 = Date.now();
    for (;;) {
      try {
        await this.realmSettingPropagates();
        break;
      } catch (e) {
        if (Date.now() - t0 > 60_000) throw e;
      }
    }
    if (this.kill9Window) this.kill9Window.to = Date.now();
    this.report.invalidationAfterCrash = `resumed after ${Date.now() - t0} ms`;
  }

  async realmSettingPropagates() {
    const t1 = await this.admin(this.kc1);
    const t2 = await this.admin(this.kc2);
    const read = async () => (await request('GET', this.kc2.admin(`/${REALM}`), { token: t2 })).body.displayName;
    await read(); // node 2 has the realm cached
    const value = `changed-${Date.now()}`;
    await request('PUT', this.kc1.admin(`/${REALM}`), { token: t1, json: { displayName: value }, expect: [204] });
    const t0 = Date.now();
    let seen;
    while (Date.now() - t0 < 2000) {
      seen = await read();
      if (seen === value) break;
      await sleep(50);
    }
    assert.equal(seen, value, 'node 2 sees node 1\'s realm change within 2 s (work-cache listener invalidation)');
    (this.report.realmInvalidationMs ||= []).push(Date.now() - t0);
  }

  async logoutAcrossNodes() {
    const t = await this.kc1.passwordGrant(REALM, CLIENT, USER, this.password);
    await this.kc2.logout(REALM, CLIENT, t.refresh_token);
    const e = await refused(this.kc1.refresh(REALM, CLIENT, t.refresh_token), [400], 'refresh after logout');
    assert.match(e.body, /invalid_grant/);
  }

  async restartKeycloak() {
    const before = await this.kc1.passwordGrant(REALM, CLIENT, USER, this.password);
    const lockBefore = await this.lockStatus(this.kc2);
    const window = { name: 'kcRestart', from: Date.now(), to: Infinity };
    this.windows.push(window);
    this.report.timings.keycloakRestartS = await timed(() => this.stage.restartKeycloak());
    window.to = Date.now();
    assert.deepEqual(await this.lockStatus(this.kc2), lockBefore, 'login-failure state unchanged by the restart');
    const after = await this.kc2.refresh(REALM, CLIENT, before.refresh_token);
    assert.equal(after.session_state, before.session_state);
    await this.kc1.userinfo(REALM, after.access_token);
    this.session = after;
    this.report.sessionAfterRestart = this.stage.mode === 'multi-site'
      ? 'kept (user sessions live in Keycloak\'s database in multi-site mode; ferrod kept login failures, action tokens, auth sessions)'
      : 'kept (user sessions live in ferrod)';
  }

  /** The user's password credential as `kc` sees it (id and creation time). */
  async passwordCredential(kc) {
    const list = (await request('GET', kc.admin(`/${REALM}/users/${this.userId}/credentials`),
      { token: await this.admin(kc) })).body;
    const p = list.find((c) => c.type === 'password');
    assert.ok(p, `user ${USER} has a password credential: ${JSON.stringify(list)}`);
    return `${p.id}@${p.createdDate}`;
  }

  /** The brute-force state of the user as `kc` sees it (read from the loginFailures cache). */
  async lockStatus(kc) {
    return (await request('GET', kc.admin(`/${REALM}/attack-detection/brute-force/users/${this.userId}`),
      { token: await this.admin(kc) })).body;
  }

  async killReplicas() {
    const t = await this.kc1.passwordGrant(REALM, CLIENT, USER, this.password);
    const before = await this.kc2.refresh(REALM, CLIENT, t.refresh_token);
    const lockBefore = await this.lockStatus(this.kc2);
    const window = { name: 'kill9', from: Date.now(), to: Infinity };
    this.windows.push(window);
    // Extended to the end of the recovery check that follows (listener re-registration).
    this.kill9Window = window;
    for (const r of this.stage.replicas) await r.kill9();
    await Promise.all(this.stage.replicas.map((r) => r.start()));
    window.to = Date.now();
    const after = await this.kc1.refresh(REALM, CLIENT, before.refresh_token);
    assert.equal(after.session_state, before.session_state);
    assert.deepEqual(await this.lockStatus(this.kc2), lockBefore, 'login-failure state unchanged by the crash');
    const fresh = await this.kc2.passwordGrant(REALM, CLIENT, USER, this.password);
    await this.kc1.refresh(REALM, CLIENT, fresh.refresh_token);
    this.session = after;
  }

  /**
   * Replaces the replicas one at a time with a fresh copy of the binary while workers log in on
   * one node and refresh on the other. Every request must succeed, and every session must still
   * refresh afterwards.
   */
  async rollingReplacement() {
    const copy = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'kcproto-ferrod-')), 'ferrod-new');
    fs.copyFileSync(process.env.FERROD_BIN, copy);
    fs.chmodSync(copy, 0o755);
    const sessions = new Map(); // session_state -> latest refresh token
    const failures = [];
    let requests = 0;
    let running = true;
    const worker = async (w) => {
      const nodes = [this.kc1, this.kc2];
      for (let i = 0; running; i++) {
        const a = nodes[(w + i) % 2];
        const b = nodes[(w + i + 1) % 2];
        try {
          requests += 1;
          const t = await a.passwordGrant(REALM, CLIENT, `load${w}`, LOAD_PASSWORD);
          requests += 1;
          const r = await b.refresh(REALM, CLIENT, t.refresh_token);
          sessions.set(r.session_state, r.refresh_token);
        } catch (e) {
          failures.push(`${new Date().toISOString()} worker ${w}: ${e.message}`);
        }
      }
    };
    const workers = Array.from({ length: LOAD_WORKERS }, (_, w) => worker(w));
    try {
      await sleep(3000);
      for (const r of this.stage.replicas) {
        await r.stop();
        await r.start(copy);
        await sleep(3000);
      }
    } finally {
      running = false;
      await Promise.all(workers);
      fs.rmSync(path.dirname(copy), { recursive: true, force: true });
    }
    this.report.rolling = { requests, failures: failures.length, sessions: sessions.size };
    assert.deepEqual(failures, [], `failed requests during the rolling replacement (${requests} sent)`);
    assert.ok(sessions.size > 0, 'the load created sessions');
    const lost = [];
    for (const [state, rt] of sessions) {
      try { await this.kc1.refresh(REALM, CLIENT, rt); } catch (e) { lost.push(`${state}: ${e.message}`); }
    }
    assert.deepEqual(lost, [], `sessions lost after the rolling replacement (of ${sessions.size})`);
  }

  /**
   * The REST API on the HotRod port (what Infinispan's REST client sends for Keycloak's multi-site
   * health check, `RestInfinispanManagement`, which copies host, port, TLS and user from the
   * HotRod configuration; Keycloak 26.4.7 and 26.7.3 do not ship it yet, so the harness makes the
   * call itself), through the same address Keycloak uses: container info answers 200 with a null
   * `local_site`; with authentication on, the same call without credentials gets 401.
   */
  async restOnHotRodPort() {
    const sec = this.stage.security;
    const port = this.stage.route.hotrodPort();
    const info = await sec.rest(port, '/rest/v2/container');
    assert.equal(info.status, 200, `GET /rest/v2/container: ${info.status} ${info.body.slice(0, 200)}`);
    const body = JSON.parse(info.body);
    assert.equal(body.local_site, null, 'local_site');
    assert.ok(Array.isArray(body.sites_view), 'sites_view is a list');
    const found = [`GET /rest/v2/container as ${sec.secure ? 'the HotRod user over TLS' : 'anonymous, plain'}: 200`];
    if (sec.secure) {
      const anon = await sec.rest(port, '/rest/v2/container', { auth: false });
      assert.equal(anon.status, 401, `GET /rest/v2/container without credentials: ${anon.status}`);
      found.push('without credentials: 401');
    }
    this.report.rest = found.join('; ');
  }

  scanLogs() {
    const bad = [];
    for (const n of this.stage.nodes) {
      for (const b of scanLog(n.logFile, { windows: this.windows })) bad.push(`${n.name}: ${b.text}`);
    }
    this.report.logFindings = bad.length;
    assert.deepEqual(bad, [], 'WARN/ERROR lines from the remote-cache layer (see lib/scan.js for the allow-list)');
  }
}

module.exports = { Scenario, REALM, CLIENT, USER, refused };
