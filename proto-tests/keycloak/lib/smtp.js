'use strict';
// A minimal SMTP server (RFC 5321 without extensions) that keeps every message it receives, so a
// test can read the links Keycloak mails (execute-actions, reset-credentials). Plain TCP only.

const net = require('node:net');

class MailSink {
  constructor() {
    this.messages = []; // { from, to: [], data }
    this.waiters = [];
    this.server = undefined;
    this.port = undefined;
  }

  async start() {
    this.server = net.createServer((sock) => this.session(sock));
    await new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(0, '127.0.0.1', resolve);
    });
    this.port = this.server.address().port;
  }

  session(sock) {
    sock.setEncoding('latin1');
    sock.on('error', () => {});
    let buf = '';
    let inData = false;
    let mail = { from: null, to: [], data: '' };
    const reply = (s) => sock.write(`${s}\r\n`);
    reply('220 proto-tests.keycloak mail sink');
    sock.on('data', (chunk) => {
      buf += chunk;
      for (;;) {
        if (inData) {
          const end = buf.indexOf('\r\n.\r\n');
          if (end < 0) return;
          // Undo dot-stuffing (RFC 5321 §4.5.2).
          mail.data = buf.slice(0, end).replace(/\r\n\.\./g, '\r\n.');
          buf = buf.slice(end + 5);
          inData = false;
          this.deliver(mail);
          mail = { from: null, to: [], data: '' };
          reply('250 OK queued');
          continue;
        }
        const nl = buf.indexOf('\r\n');
        if (nl < 0) return;
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 2);
        const verb = line.slice(0, 4).toUpperCase();
        if (verb === 'EHLO' || verb === 'HELO') reply('250 proto-tests.keycloak');
        else if (verb === 'MAIL') { mail.from = line.slice(10).trim(); reply('250 OK'); }
        else if (verb === 'RCPT') { mail.to.push(line.slice(8).trim()); reply('250 OK'); }
        else if (verb === 'DATA') { inData = true; reply('354 end with <CRLF>.<CRLF>'); }
        else if (verb === 'RSET') { mail = { from: null, to: [], data: '' }; reply('250 OK'); }
        else if (verb === 'NOOP') reply('250 OK');
        else if (verb === 'QUIT') { reply('221 bye'); sock.end(); return; }
        else reply('502 command not implemented');
      }
    });
  }

  deliver(mail) {
    this.messages.push(mail);
    const waiting = this.waiters;
    this.waiters = [];
    for (const w of waiting) w();
  }

  /** Waits for a message to `rcpt` (substring match) that arrives after `since` messages. */
  async waitFor(rcpt, since, timeoutMs = 30_000) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const m = this.messages.slice(since).find((x) => x.to.some((t) => t.includes(rcpt)));
      if (m) return m;
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no mail to ${rcpt} within ${timeoutMs} ms (${this.messages.length} received)`);
      await new Promise((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiters.push(() => { clearTimeout(t); resolve(); });
      });
    }
  }

  async stop() {
    if (this.server) await new Promise((r) => this.server.close(() => r()));
  }
}

/** Decodes the quoted-printable parts of a raw message well enough to read its links. */
function decodeQuotedPrintable(s) {
  return s.replace(/=\r?\n/g, '').replace(/=([0-9A-F]{2})/g, (_, h) => String.fromCharCode(parseInt(h, 16)));
}

/** Every http(s) link in a mail body, in order, HTML entities decoded. */
function links(mail) {
  let body = mail.data;
  if (/content-transfer-encoding:\s*quoted-printable/i.test(body)) body = decodeQuotedPrintable(body);
  // Base64 parts: decode each and search them too.
  const b64 = [...body.matchAll(/content-transfer-encoding:\s*base64\r?\n(?:[^\r\n]+\r?\n)*?\r?\n([A-Za-z0-9+/=\r\n]+)/gi)]
    .map((m) => Buffer.from(m[1].replace(/\s+/g, ''), 'base64').toString('utf8'));
  const all = [body, ...b64].join('\n');
  return [...all.matchAll(/https?:\/\/[^\s"'<>]+/g)].map((m) => m[0].replace(/&amp;/g, '&'));
}

module.exports = { MailSink, links };
