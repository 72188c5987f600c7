//! SCRAM (RFC 5802 / RFC 7677) over the stored-key form: the server never needs the password.
//! No channel binding (no -PLUS mechanisms are offered), so the GS2 header is `n,,` or `y,,`.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;

use super::hash::{same, HashAlg};
use super::users::ScramCredential;

/// What the server knows after the client-first message, waiting for the client-final one.
#[derive(Debug)]
pub struct ServerFirst {
    pub hash: HashAlg,
    pub username: String,
    /// `None` for an unknown user: the exchange goes on with made-up parameters so a client
    /// cannot tell unknown users from wrong passwords, and fails at the proof.
    pub credential: Option<ScramCredential>,
    gs2_header: String,
    client_first_bare: String,
    server_first: String,
    nonce: String,
}

/// Parses client-first and answers server-first. `lookup` finds the user's credential; `fake`
/// gives the salt to show for an unknown user.
pub fn server_first(
    hash: HashAlg,
    client_first: &[u8],
    server_nonce: &str,
    lookup: impl FnOnce(&str) -> Option<ScramCredential>,
    fake: impl FnOnce(&str) -> ScramCredential,
) -> Result<(ServerFirst, Vec<u8>), String> {
    let msg = std::str::from_utf8(client_first).map_err(|_| "client-first is not UTF-8")?;
    let (cbind, rest) = msg
        .split_once(',')
        .ok_or("client-first has no GS2 header")?;
    match cbind {
        "n" | "y" => {}
        c if c.starts_with("p=") => {
            return Err("channel binding was requested but is not offered".into())
        }
        _ => return Err(format!("bad GS2 channel-binding flag '{cbind}'")),
    }
    let (authzid, bare) = rest
        .split_once(',')
        .ok_or("client-first has no GS2 header")?;
    let gs2_header = format!("{cbind},{authzid},");
    let mut fields = bare.split(',');
    let mut first = fields.next().unwrap_or("");
    if first.starts_with("m=") {
        return Err("mandatory SCRAM extensions are not supported".into());
    }
    let username = first
        .strip_prefix("n=")
        .map(unescape)
        .transpose()?
        .ok_or("client-first has no username")?;
    first = fields.next().unwrap_or("");
    let client_nonce = first
        .strip_prefix("r=")
        .ok_or("client-first has no nonce")?;
    if client_nonce.is_empty() {
        return Err("client nonce is empty".into());
    }
    if !authzid.is_empty() {
        let a = authzid
            .strip_prefix("a=")
            .map(unescape)
            .transpose()?
            .ok_or("bad authzid in GS2 header")?;
        if a != username {
            return Err(format!("'{username}' may not act as another user ('{a}')"));
        }
    }
    let credential = lookup(&username);
    let shown = credential.clone().unwrap_or_else(|| fake(&username));
    let nonce = format!("{client_nonce}{server_nonce}");
    let server_first = format!(
        "r={nonce},s={},i={}",
        B64.encode(&shown.salt),
        shown.iterations
    );
    let out = server_first.clone().into_bytes();
    Ok((
        ServerFirst {
            hash,
            username,
            credential,
            gs2_header,
            client_first_bare: bare.to_string(),
            server_first,
            nonce,
        },
        out,
    ))
}

/// Checks client-final; on success answers server-final (`v=...`).
pub fn server_final(state: &ServerFirst, client_final: &[u8]) -> Result<Vec<u8>, String> {
    let msg = std::str::from_utf8(client_final).map_err(|_| "client-final is not UTF-8")?;
    let (without_proof, proof) = msg.rsplit_once(",p=").ok_or("client-final has no proof")?;
    let mut fields = without_proof.split(',');
    let cb = fields
        .next()
        .and_then(|f| f.strip_prefix("c="))
        .ok_or("client-final has no channel binding")?;
    if B64.decode(cb).ok().as_deref() != Some(state.gs2_header.as_bytes()) {
        return Err("channel binding does not match the GS2 header".into());
    }
    let nonce = fields
        .next()
        .and_then(|f| f.strip_prefix("r="))
        .ok_or("client-final has no nonce")?;
    if nonce != state.nonce {
        return Err("nonce mismatch".into());
    }
    let proof = B64.decode(proof).map_err(|_| "proof is not base64")?;
    let cred = state
        .credential
        .as_ref()
        .ok_or_else(|| format!("unknown user '{}'", state.username))?;
    let auth_message = format!(
        "{},{},{}",
        state.client_first_bare, state.server_first, without_proof
    );
    let h = state.hash;
    let signature = h.hmac(&cred.stored_key, &[auth_message.as_bytes()]);
    if proof.len() != signature.len() {
        return Err("proof has the wrong length".into());
    }
    let client_key: Vec<u8> = proof.iter().zip(&signature).map(|(a, b)| a ^ b).collect();
    if !same(&h.digest(&[&client_key]), &cred.stored_key) {
        return Err(format!("wrong password for '{}'", state.username));
    }
    let verifier = h.hmac(&cred.server_key, &[auth_message.as_bytes()]);
    Ok(format!("v={}", B64.encode(verifier)).into_bytes())
}

fn unescape(s: &str) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('=') {
        out.push_str(&rest[..i]);
        match rest.get(i..i + 3) {
            Some("=2C") => out.push(','),
            Some("=3D") => out.push('='),
            _ => return Err("bad escape in SCRAM name".into()),
        }
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    Ok(out)
}

fn escape(s: &str) -> String {
    s.replace('=', "=3D").replace(',', "=2C")
}

/// The client side, for tests and tools that speak HotRod without another client.
pub struct Client {
    hash: HashAlg,
    password: String,
    client_first_bare: String,
    nonce: String,
    server_signature: Option<Vec<u8>>,
}

impl Client {
    pub fn new(hash: HashAlg, user: &str, password: &str, nonce: &str) -> (Client, Vec<u8>) {
        let bare = format!("n={},r={nonce}", escape(user));
        let first = format!("n,,{bare}").into_bytes();
        (
            Client {
                hash,
                password: password.to_string(),
                client_first_bare: bare,
                nonce: nonce.to_string(),
                server_signature: None,
            },
            first,
        )
    }

    /// Answers server-first with client-final.
    pub fn client_final(&mut self, server_first: &[u8]) -> Result<Vec<u8>, String> {
        let sf = std::str::from_utf8(server_first).map_err(|e| e.to_string())?;
        let mut nonce = None;
        let mut salt = None;
        let mut iterations = None;
        for f in sf.split(',') {
            if let Some(v) = f.strip_prefix("r=") {
                nonce = Some(v.to_string());
            } else if let Some(v) = f.strip_prefix("s=") {
                salt = Some(B64.decode(v).map_err(|e| e.to_string())?);
            } else if let Some(v) = f.strip_prefix("i=") {
                iterations = Some(v.parse::<u32>().map_err(|e| e.to_string())?);
            }
        }
        let (nonce, salt, iterations) = match (nonce, salt, iterations) {
            (Some(n), Some(s), Some(i)) => (n, s, i),
            _ => return Err(format!("incomplete server-first '{sf}'")),
        };
        if !nonce.starts_with(&self.nonce) {
            return Err("server nonce does not extend ours".into());
        }
        let h = self.hash;
        let cred = ScramCredential::derive(h, &self.password, salt, iterations);
        let without_proof = format!("c={},r={nonce}", B64.encode("n,,"));
        let auth_message = format!("{},{sf},{without_proof}", self.client_first_bare);
        let salted = h.hi(
            super::users::prepare_password(&self.password).as_bytes(),
            &cred.salt,
            iterations,
        );
        let client_key = h.hmac(&salted, &[b"Client Key"]);
        let signature = h.hmac(&cred.stored_key, &[auth_message.as_bytes()]);
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&signature)
            .map(|(a, b)| a ^ b)
            .collect();
        self.server_signature = Some(h.hmac(&cred.server_key, &[auth_message.as_bytes()]));
        Ok(format!("{without_proof},p={}", B64.encode(proof)).into_bytes())
    }

    /// Checks server-final: the server proved it knows the credential too.
    pub fn verify_server(&self, server_final: &[u8]) -> Result<(), String> {
        let sf = std::str::from_utf8(server_final).map_err(|e| e.to_string())?;
        let v = sf
            .strip_prefix("v=")
            .ok_or_else(|| format!("server-final is '{sf}'"))?;
        let v = B64.decode(v).map_err(|e| e.to_string())?;
        match &self.server_signature {
            Some(s) if same(s, &v) => Ok(()),
            _ => Err("server signature does not verify".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677 §3's SCRAM-SHA-256 example, replayed through both sides.
    #[test]
    fn rfc7677_example() {
        let h = HashAlg::Sha256;
        let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let cred = ScramCredential::derive(h, "pencil", salt, 4096);
        let (mut client, first) = Client::new(h, "user", "pencil", "rOprNGfwEbeRWgbNEkqO");
        assert_eq!(first, b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
        let (state, sf) = server_first(
            h,
            &first,
            "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
            |_| Some(cred.clone()),
            |_| unreachable!(),
        )
        .unwrap();
        assert_eq!(
            sf,
            b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
        );
        let cf = client.client_final(&sf).unwrap();
        assert_eq!(
            cf,
            b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        let fin = server_final(&state, &cf).unwrap();
        assert_eq!(fin, b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=");
        client.verify_server(&fin).unwrap();
    }

    #[test]
    fn wrong_password_and_unknown_user_fail_at_the_proof() {
        let h = HashAlg::Sha512;
        let cred = ScramCredential::derive(h, "right", b"salty".to_vec(), 4096);
        let (mut client, first) = Client::new(h, "u", "wrong", "abc");
        let (state, sf) =
            server_first(h, &first, "xyz", |_| Some(cred.clone()), |_| unreachable!()).unwrap();
        let cf = client.client_final(&sf).unwrap();
        assert!(server_final(&state, &cf)
            .unwrap_err()
            .contains("wrong password"));
        let (mut client, first) = Client::new(h, "ghost", "x", "abc");
        let (state, sf) = server_first(h, &first, "xyz", |_| None, |_| cred.clone()).unwrap();
        let cf = client.client_final(&sf).unwrap();
        assert!(server_final(&state, &cf)
            .unwrap_err()
            .contains("unknown user"));
    }
}
