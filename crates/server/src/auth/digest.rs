//! DIGEST-MD5 (RFC 2831) and Elytron's DIGEST-SHA family: the same exchange with the hash
//! swapped. Only QOP `auth` is offered, so no security layer is ever negotiated (a wrapped
//! connection would need length-prefixed frames, reference §12.1).

use std::collections::HashMap;

use super::hash::{same, HashAlg};
use super::users::DigestCredential;

/// The challenge the server sent, kept to check the client's response against.
#[derive(Debug)]
pub struct Challenge {
    pub hash: HashAlg,
    nonce: String,
    realm: String,
    digest_uri: String,
}

pub fn challenge(
    hash: HashAlg,
    realm: &str,
    nonce: &str,
    digest_uri: &str,
) -> (Challenge, Vec<u8>) {
    let text = format!(
        "realm=\"{}\",nonce=\"{nonce}\",qop=\"auth\",charset=utf-8,algorithm=md5-sess",
        quote(realm)
    );
    (
        Challenge {
            hash,
            nonce: nonce.to_string(),
            realm: realm.to_string(),
            digest_uri: digest_uri.to_string(),
        },
        text.into_bytes(),
    )
}

/// Who the response claims to be, before it is checked.
pub fn username(response: &[u8]) -> Result<String, String> {
    let fields = parse(response)?;
    fields
        .get("username")
        .cloned()
        .ok_or_else(|| "missing username directive".into())
}

/// Checks the client's digest-response; on success answers `rspauth=...`.
pub fn verify(
    ch: &Challenge,
    response: &[u8],
    credential: Option<&DigestCredential>,
) -> Result<Vec<u8>, String> {
    let f = parse(response)?;
    let get = |k: &str| f.get(k).map(String::as_str);
    let user = get("username").ok_or("missing username directive")?;
    let realm = get("realm").unwrap_or("");
    if realm != ch.realm {
        return Err(format!(
            "client sent realm '{realm}', the server's is '{}'",
            ch.realm
        ));
    }
    if get("nonce") != Some(ch.nonce.as_str()) {
        return Err("nonce mismatch".into());
    }
    let cnonce = get("cnonce").ok_or("missing cnonce")?;
    let nc = get("nc").ok_or("missing nonce-count")?;
    if u32::from_str_radix(nc, 16).ok() != Some(1) {
        return Err("nonce-count is not 1".into());
    }
    let uri = get("digest-uri").ok_or("digest-uri directive is missing")?;
    if !uri.eq_ignore_ascii_case(&ch.digest_uri) {
        return Err(format!("digest-uri '{uri}', expected '{}'", ch.digest_uri));
    }
    let qop = get("qop").unwrap_or("auth");
    if qop != "auth" {
        return Err(format!("qop '{qop}' was not offered"));
    }
    if let Some(charset) = get("charset") {
        if charset != "utf-8" {
            return Err(format!("charset '{charset}' was not offered"));
        }
    }
    let authzid = get("authzid").filter(|a| !a.is_empty());
    if let Some(a) = authzid {
        if a != user {
            return Err(format!("'{user}' may not act as another user ('{a}')"));
        }
    }
    let claimed = get("response").ok_or("missing response directive")?;
    let cred = credential.filter(|c| c.realm == ch.realm).ok_or_else(|| {
        format!(
            "no {:?} digest credential for '{user}' in realm '{realm}'",
            ch.hash
        )
    })?;
    let ha1 = ha1(
        ch.hash,
        &cred.user_realm_password,
        &ch.nonce,
        cnonce,
        authzid,
    );
    let expected = response_value(ch.hash, &ha1, &ch.nonce, cnonce, qop, uri, true);
    if !same(expected.as_bytes(), claimed.as_bytes()) {
        return Err(format!("wrong password for '{user}'"));
    }
    let rspauth = response_value(ch.hash, &ha1, &ch.nonce, cnonce, qop, uri, false);
    Ok(format!("rspauth={rspauth}").into_bytes())
}

fn ha1(h: HashAlg, urp: &[u8], nonce: &str, cnonce: &str, authzid: Option<&str>) -> String {
    let mut parts: Vec<&[u8]> = vec![urp, b":", nonce.as_bytes(), b":", cnonce.as_bytes()];
    if let Some(a) = authzid {
        parts.push(b":");
        parts.push(a.as_bytes());
    }
    hex::encode(h.digest(&parts))
}

fn response_value(
    h: HashAlg,
    ha1: &str,
    nonce: &str,
    cnonce: &str,
    qop: &str,
    uri: &str,
    authenticate: bool,
) -> String {
    let a2 = if authenticate {
        format!("AUTHENTICATE:{uri}")
    } else {
        format!(":{uri}")
    };
    let ha2 = hex::encode(h.digest(&[a2.as_bytes()]));
    let kd = format!("{ha1}:{nonce}:00000001:{cnonce}:{qop}:{ha2}");
    hex::encode(h.digest(&[kd.as_bytes()]))
}

fn quote(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// `key=value` or `key="quoted value"` pairs separated by commas.
fn parse(msg: &[u8]) -> Result<HashMap<String, String>, String> {
    let text = std::str::from_utf8(msg).map_err(|_| "digest message is not UTF-8")?;
    let mut out = HashMap::new();
    let mut chars = text.chars().peekable();
    loop {
        while matches!(chars.peek(), Some(c) if c.is_whitespace() || *c == ',') {
            chars.next();
        }
        if chars.peek().is_none() {
            break;
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' {
                break;
            }
            key.push(c);
            chars.next();
        }
        if chars.next() != Some('=') {
            return Err(format!("directive '{}' has no value", key.trim()));
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    Some('\\') => value.push(chars.next().ok_or("unterminated quoted string")?),
                    Some('"') => break,
                    Some(c) => value.push(c),
                    None => return Err("unterminated quoted string".into()),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' {
                    break;
                }
                value.push(c);
                chars.next();
            }
        }
        let key = key.trim().to_ascii_lowercase();
        if out.insert(key.clone(), value.trim().to_string()).is_some() {
            return Err(format!("directive '{key}' appears twice"));
        }
    }
    Ok(out)
}

/// The client side, for tests and tools that speak HotRod without another client.
pub fn client_response(
    hash: HashAlg,
    challenge: &[u8],
    user: &str,
    password: &str,
    digest_uri: &str,
    cnonce: &str,
) -> Result<(Vec<u8>, String), String> {
    let f = parse(challenge)?;
    let realm = f.get("realm").cloned().unwrap_or_default();
    let nonce = f.get("nonce").ok_or("challenge has no nonce")?;
    let cred = DigestCredential::derive(hash, user, &realm, password);
    let ha1 = ha1(hash, &cred.user_realm_password, nonce, cnonce, None);
    let response = response_value(hash, &ha1, nonce, cnonce, "auth", digest_uri, true);
    let rspauth = response_value(hash, &ha1, nonce, cnonce, "auth", digest_uri, false);
    let msg = format!(
        "charset=utf-8,username=\"{}\",realm=\"{}\",nonce=\"{}\",nc=00000001,cnonce=\"{}\",digest-uri=\"{}\",maxbuf=65536,response={response},qop=auth",
        quote(user),
        quote(&realm),
        quote(nonce),
        quote(cnonce),
        quote(digest_uri)
    );
    Ok((msg.into_bytes(), format!("rspauth={rspauth}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 2831 §4's IMAP example: response and rspauth as published.
    #[test]
    fn rfc2831_example_response() {
        let cred = DigestCredential::derive(HashAlg::Md5, "chris", "elwood.innosoft.com", "secret");
        let ha1 = ha1(
            HashAlg::Md5,
            &cred.user_realm_password,
            "OA6MG9tEQGm2hh",
            "OA6MHXh6VqTrRk",
            None,
        );
        let r = response_value(
            HashAlg::Md5,
            &ha1,
            "OA6MG9tEQGm2hh",
            "OA6MHXh6VqTrRk",
            "auth",
            "imap/elwood.innosoft.com",
            true,
        );
        assert_eq!(r, "d388dad90d4bbd760a152321f2143af7");
        let r = response_value(
            HashAlg::Md5,
            &ha1,
            "OA6MG9tEQGm2hh",
            "OA6MHXh6VqTrRk",
            "auth",
            "imap/elwood.innosoft.com",
            false,
        );
        assert_eq!(r, "ea40f60335c427b5527b84dbabcdfffd");
    }

    #[test]
    fn round_trip_and_wrong_password() {
        for h in [HashAlg::Md5, HashAlg::Sha1, HashAlg::Sha512] {
            let cred = DigestCredential::derive(h, "u", "default", "pw");
            let (ch, text) = challenge(h, "default", "n0nce", "hotrod/infinispan");
            let (resp, rspauth) =
                client_response(h, &text, "u", "pw", "hotrod/infinispan", "c").unwrap();
            assert_eq!(
                verify(&ch, &resp, Some(&cred)).unwrap(),
                rspauth.into_bytes()
            );
            let (resp, _) =
                client_response(h, &text, "u", "nope", "hotrod/infinispan", "c").unwrap();
            assert!(verify(&ch, &resp, Some(&cred)).is_err());
            let (resp, _) = client_response(h, &text, "u", "pw", "hotrod/other", "c").unwrap();
            assert!(verify(&ch, &resp, Some(&cred)).is_err());
        }
    }
}
