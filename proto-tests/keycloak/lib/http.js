'use strict';
// Keycloak over HTTP: the admin REST API, the OIDC token/userinfo/logout endpoints, and a small
// cookie-keeping browser for the login-actions pages (no JavaScript is needed for them).

const REQUEST_TIMEOUT_MS = 60_000;

/** An HTTP error carrying the status and body, so tests can assert on refusals. */
class HttpError extends Error {
  constructor(method, url, status, body) {
    super(`${method} ${url}: HTTP ${status} ${String(body).slice(0, 400)}`);
    this.status = status;
    this.body = body;
  }
}

async function request(method, url, { token, json, form, headers = {}, expect } = {}) {
  const h = { ...headers };
  let body;
  if (token) h.authorization = `Bearer ${token}`;
  if (json !== undefined) { h['content-type'] = 'application/json'; body = JSON.stringify(json); }
  if (form !== undefined) { h['content-type'] = 'application/x-www-form-urlencoded'; body = new URLSearchParams(form).toString(); }
  const res = await fetch(url, { method, headers: h, body, signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) });
  const text = await res.text();
  let parsed = text;
  if ((res.headers.get('content-type') || '').includes('json') && text) {
    try { parsed = JSON.parse(text); } catch (_) { /* keep text */ }
  }
  const ok = expect ? expect.includes(res.status) : res.status < 300;
  if (!ok) throw new HttpError(method, url, res.status, text);
  return { status: res.status, body: parsed, headers: res.headers };
}

/** One Keycloak node's endpoints. */
class Kc {
  constructor(baseUrl) { this.base = baseUrl; }

  oidc(realm, path) { return `${this.base}/realms/${realm}/protocol/openid-connect/${path}`; }

  admin(path) { return `${this.base}/admin/realms${path}`; }

  async adminToken() {
    const r = await request('POST', this.oidc('master', 'token'), {
      form: { grant_type: 'password', client_id: 'admin-cli', username: 'admin', password: 'admin' },
    });
    return r.body.access_token;
  }

  /** Resource Owner Password grant; throws HttpError on refusal. */
  async passwordGrant(realm, clientId, username, password) {
    const r = await request('POST', this.oidc(realm, 'token'), {
      form: { grant_type: 'password', client_id: clientId, username, password, scope: 'openid' },
    });
    return r.body;
  }

  async refresh(realm, clientId, refreshToken) {
    const r = await request('POST', this.oidc(realm, 'token'), {
      form: { grant_type: 'refresh_token', client_id: clientId, refresh_token: refreshToken },
    });
    return r.body;
  }

  async userinfo(realm, accessToken) {
    return (await request('GET', this.oidc(realm, 'userinfo'), { token: accessToken })).body;
  }

  async logout(realm, clientId, refreshToken) {
    await request('POST', this.oidc(realm, 'logout'), {
      form: { client_id: clientId, refresh_token: refreshToken }, expect: [204],
    });
  }
}

/** A browser without JavaScript: keeps cookies, follows redirects by hand, reads forms. */
class Browser {
  constructor() { this.cookies = new Map(); }

  cookieHeader() {
    return [...this.cookies.entries()].map(([k, v]) => `${k}=${v}`).join('; ');
  }

  keep(res) {
    for (const c of res.headers.getSetCookie()) {
      const [pair, ...attrs] = c.split(';');
      const eq = pair.indexOf('=');
      const name = pair.slice(0, eq).trim();
      const value = pair.slice(eq + 1).trim();
      const expired = attrs.some((a) => /max-age=0\b/i.test(a.trim()) || /expires=thu, 01[- ]jan[- ]1970/i.test(a.trim()));
      if (expired || value === '') this.cookies.delete(name);
      else this.cookies.set(name, value);
    }
  }

  /**
   * GET/POST following redirects within the same origin; returns { status, url, html }, or
   * { status, url, leftTo } when a redirect leaves the origin (e.g. to a client's redirect_uri).
   */
  async go(url, { method = 'GET', form } = {}) {
    const origin = new URL(url).origin;
    let current = url;
    let m = method;
    let body = form ? new URLSearchParams(form).toString() : undefined;
    for (let hop = 0; hop < 10; hop++) {
      const headers = { cookie: this.cookieHeader() };
      if (body) headers['content-type'] = 'application/x-www-form-urlencoded';
      const res = await fetch(current, { method: m, headers, body, redirect: 'manual', signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) });
      this.keep(res);
      if (res.status >= 300 && res.status < 400 && res.headers.get('location')) {
        const next = new URL(res.headers.get('location'), current);
        await res.arrayBuffer();
        if (next.origin !== origin) return { status: res.status, url: current, leftTo: next.toString(), html: '' };
        current = next.toString();
        m = 'GET';
        body = undefined;
        continue;
      }
      return { status: res.status, url: current, html: await res.text() };
    }
    throw new Error(`too many redirects from ${url}`);
  }
}

const unescapeHtml = (s) => s.replace(/&amp;/g, '&').replace(/&#x3D;/gi, '=').replace(/&quot;/g, '"').replace(/&#39;/g, "'");

/** The action URL of the first form in `html` whose tag matches `idPattern` (or any form). */
function formAction(html, idPattern = /./) {
  for (const m of html.matchAll(/<form\b[^>]*>/gi)) {
    if (!idPattern.test(m[0])) continue;
    const a = m[0].match(/action="([^"]*)"/i);
    if (a) return unescapeHtml(a[1]);
  }
  return null;
}

/** Every href in `html` that contains `needle`, unescaped. */
function hrefs(html, needle) {
  return [...html.matchAll(/href="([^"]*)"/gi)].map((m) => unescapeHtml(m[1])).filter((h) => h.includes(needle));
}

/** The visible text of Keycloak's feedback message on a login page (error/info), if any. */
function feedback(html) {
  const m = html.match(/class="[^"]*(?:kc-feedback-text|alert-[a-z]+|pf-c-alert__title|kc-error-message|instruction)[^"]*"[^>]*>([\s\S]*?)</i);
  return m ? unescapeHtml(m[1]).replace(/\s+/g, ' ').trim() : null;
}

module.exports = { request, HttpError, Kc, Browser, formAction, hrefs, feedback };
