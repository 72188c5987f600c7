//! The credentials file: one user per line, passwords only as the salted hashes each SASL
//! mechanism needs (never clear text).
//!
//! ```text
//! # NAME roles=R[,R...] [CREDENTIAL...]
//! keycloak roles=deployer scram-sha-512=4096:SALT:STOREDKEY:SERVERKEY digest-md5=default:HEX ...
//! ```
//! * `scram-sha-1|256|384|512=ITERATIONS:SALT:STOREDKEY:SERVERKEY` (base64): RFC 5802's stored
//!   form. PLAIN checks a password against the strongest of these (recomputing the StoredKey).
//! * `digest-md5|digest-sha|digest-sha-256|384|512=REALM:HEX`: H(user:realm:password) of RFC
//!   2831 with that mechanism's hash (DIGEST-SHA is SHA-1, as in Elytron).
//! * A line with roles and no credential is a user known only by a TLS client certificate
//!   (EXTERNAL).
//!
//! `ferrod user add` / `ferrod user remove` write the file; the server reads it at startup and a
//! bad line stops startup with the file and line named.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use rand::RngCore;

use super::hash::HashAlg;
use super::roles::Role;

/// Iterations for new SCRAM credentials: the Elytron client refuses fewer than 4096 and, by
/// default, more than 32768.
pub const DEFAULT_ITERATIONS: u32 = 4096;
pub const MIN_ITERATIONS: u32 = 4096;
pub const MAX_ITERATIONS: u32 = 32768;

pub const SCRAM_HASHES: [HashAlg; 4] = [
    HashAlg::Sha1,
    HashAlg::Sha256,
    HashAlg::Sha384,
    HashAlg::Sha512,
];
pub const DIGEST_HASHES: [HashAlg; 5] = [
    HashAlg::Md5,
    HashAlg::Sha1,
    HashAlg::Sha256,
    HashAlg::Sha384,
    HashAlg::Sha512,
];

pub fn scram_key(h: HashAlg) -> &'static str {
    match h {
        HashAlg::Md5 => "scram-md5",
        HashAlg::Sha1 => "scram-sha-1",
        HashAlg::Sha256 => "scram-sha-256",
        HashAlg::Sha384 => "scram-sha-384",
        HashAlg::Sha512 => "scram-sha-512",
    }
}

pub fn digest_key(h: HashAlg) -> &'static str {
    match h {
        HashAlg::Md5 => "digest-md5",
        HashAlg::Sha1 => "digest-sha",
        HashAlg::Sha256 => "digest-sha-256",
        HashAlg::Sha384 => "digest-sha-384",
        HashAlg::Sha512 => "digest-sha-512",
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScramCredential {
    pub iterations: u32,
    pub salt: Vec<u8>,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
}

impl ScramCredential {
    pub fn derive(h: HashAlg, password: &str, salt: Vec<u8>, iterations: u32) -> Self {
        let salted = h.hi(prepare_password(password).as_bytes(), &salt, iterations);
        let client_key = h.hmac(&salted, &[b"Client Key"]);
        ScramCredential {
            iterations,
            stored_key: h.digest(&[&client_key]),
            server_key: h.hmac(&salted, &[b"Server Key"]),
            salt,
        }
    }

    /// Whether `password` is the one this credential was derived from.
    pub fn verify(&self, h: HashAlg, password: &str) -> bool {
        let again = ScramCredential::derive(h, password, self.salt.clone(), self.iterations);
        super::hash::same(&again.stored_key, &self.stored_key)
    }
}

/// SASLprep (RFC 4013) of a password, as SCRAM clients apply it; a password SASLprep refuses is
/// used as given.
pub fn prepare_password(password: &str) -> String {
    stringprep::saslprep(password)
        .map(|p| p.into_owned())
        .unwrap_or_else(|_| password.to_string())
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DigestCredential {
    pub realm: String,
    /// H(username ":" realm ":" password), raw bytes.
    pub user_realm_password: Vec<u8>,
}

impl DigestCredential {
    pub fn derive(h: HashAlg, user: &str, realm: &str, password: &str) -> Self {
        DigestCredential {
            realm: realm.to_string(),
            user_realm_password: h.digest(&[
                user.as_bytes(),
                b":",
                realm.as_bytes(),
                b":",
                password.as_bytes(),
            ]),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub roles: Vec<Role>,
    pub scram: BTreeMap<HashAlg, ScramCredential>,
    pub digest: BTreeMap<HashAlg, DigestCredential>,
}

impl User {
    /// A user with every credential derived from `password`.
    pub fn with_password(
        name: &str,
        roles: Vec<Role>,
        password: &str,
        realm: &str,
        iterations: u32,
    ) -> User {
        let mut scram = BTreeMap::new();
        for h in SCRAM_HASHES {
            let mut salt = vec![0u8; 16];
            rand::thread_rng().fill_bytes(&mut salt);
            scram.insert(h, ScramCredential::derive(h, password, salt, iterations));
        }
        let digest = DIGEST_HASHES
            .iter()
            .map(|h| (*h, DigestCredential::derive(*h, name, realm, password)))
            .collect();
        User {
            name: name.to_string(),
            roles,
            scram,
            digest,
        }
    }

    fn line(&self) -> String {
        let roles: Vec<&str> = self.roles.iter().map(|r| r.name()).collect();
        let mut s = format!("{} roles={}", self.name, roles.join(","));
        for (h, c) in &self.scram {
            let _ = write!(
                s,
                " {}={}:{}:{}:{}",
                scram_key(*h),
                c.iterations,
                B64.encode(&c.salt),
                B64.encode(&c.stored_key),
                B64.encode(&c.server_key)
            );
        }
        for (h, c) in &self.digest {
            let _ = write!(
                s,
                " {}={}:{}",
                digest_key(*h),
                c.realm,
                hex::encode(&c.user_realm_password)
            );
        }
        s
    }

    fn parse(line: &str) -> Result<User, String> {
        let mut words = line.split_whitespace();
        let name = words.next().ok_or("empty line")?;
        check_name(name)?;
        let mut user = User {
            name: name.to_string(),
            roles: Vec::new(),
            scram: BTreeMap::new(),
            digest: BTreeMap::new(),
        };
        let mut saw_roles = false;
        for w in words {
            let (key, value) = w
                .split_once('=')
                .ok_or_else(|| format!("'{w}' is not KEY=VALUE"))?;
            if key == "roles" {
                saw_roles = true;
                user.roles = parse_roles(value)?;
            } else if let Some(h) = SCRAM_HASHES.iter().find(|h| scram_key(**h) == key) {
                let c = parse_scram(*h, value).map_err(|e| format!("{key}: {e}"))?;
                user.scram.insert(*h, c);
            } else if let Some(h) = DIGEST_HASHES.iter().find(|h| digest_key(**h) == key) {
                let c = parse_digest(*h, value).map_err(|e| format!("{key}: {e}"))?;
                user.digest.insert(*h, c);
            } else {
                return Err(format!("unknown field '{key}'"));
            }
        }
        if !saw_roles {
            return Err("missing roles=...".into());
        }
        Ok(user)
    }
}

pub fn parse_roles(value: &str) -> Result<Vec<Role>, String> {
    let mut roles = Vec::new();
    for r in value.split(',').map(str::trim).filter(|r| !r.is_empty()) {
        let role = Role::parse(r).ok_or_else(|| {
            format!(
                "unknown role '{r}' (known: {})",
                Role::ALL.map(|r| r.name()).join(", ")
            )
        })?;
        if !roles.contains(&role) {
            roles.push(role);
        }
    }
    Ok(roles)
}

fn parse_scram(h: HashAlg, value: &str) -> Result<ScramCredential, String> {
    let parts: Vec<&str> = value.split(':').collect();
    if parts.len() != 4 {
        return Err("expected ITERATIONS:SALT:STOREDKEY:SERVERKEY".into());
    }
    let iterations: u32 = parts[0]
        .parse()
        .map_err(|_| format!("'{}' is not an iteration count", parts[0]))?;
    if !(MIN_ITERATIONS..=MAX_ITERATIONS).contains(&iterations) {
        return Err(format!(
            "{iterations} iterations is outside {MIN_ITERATIONS}..={MAX_ITERATIONS} (what SCRAM clients accept)"
        ));
    }
    let b = |s: &str, what: &str| B64.decode(s).map_err(|_| format!("{what} is not base64"));
    let c = ScramCredential {
        iterations,
        salt: b(parts[1], "salt")?,
        stored_key: b(parts[2], "stored key")?,
        server_key: b(parts[3], "server key")?,
    };
    let len = h.digest(&[]).len();
    if c.stored_key.len() != len || c.server_key.len() != len || c.salt.is_empty() {
        return Err(format!("keys must be {len} bytes and the salt non-empty"));
    }
    Ok(c)
}

fn parse_digest(h: HashAlg, value: &str) -> Result<DigestCredential, String> {
    let (realm, hexed) = value.rsplit_once(':').ok_or("expected REALM:HEX")?;
    let bytes = hex::decode(hexed).map_err(|_| "the hash is not hex".to_string())?;
    if bytes.len() != h.digest(&[]).len() {
        return Err(format!("the hash must be {} bytes", h.digest(&[]).len()));
    }
    Ok(DigestCredential {
        realm: realm.to_string(),
        user_realm_password: bytes,
    })
}

/// User names go on a line and into SASL messages unescaped: no whitespace, no separators.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.starts_with('#')
        || name
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, ',' | '=' | ':' | '"'))
    {
        return Err(format!(
            "'{name}' is not a valid user name (no whitespace, ',', '=', ':', '\"', or leading '#')"
        ));
    }
    Ok(())
}

#[derive(Debug, thiserror::Error)]
#[error("credentials file {path}{}: {problem}", line.map(|l| format!(" line {l}")).unwrap_or_default())]
pub struct UsersError {
    pub path: PathBuf,
    pub line: Option<usize>,
    pub problem: String,
}

/// Every user of a credentials file, by name.
#[derive(Clone, Debug, Default)]
pub struct Users {
    pub users: BTreeMap<String, User>,
}

impl Users {
    pub fn load(path: &Path) -> Result<Users, UsersError> {
        let text = std::fs::read_to_string(path).map_err(|e| UsersError {
            path: path.to_path_buf(),
            line: None,
            problem: format!("cannot read: {e}"),
        })?;
        Users::parse(&text).map_err(|(line, problem)| UsersError {
            path: path.to_path_buf(),
            line: Some(line),
            problem,
        })
    }

    /// Parses the file's text; an error carries the 1-based line number.
    pub fn parse(text: &str) -> Result<Users, (usize, String)> {
        let mut users = Users::default();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let user = User::parse(line).map_err(|e| (i + 1, e))?;
            if users.users.contains_key(&user.name) {
                return Err((i + 1, format!("user '{}' appears twice", user.name)));
            }
            users.users.insert(user.name.clone(), user);
        }
        Ok(users)
    }

    pub fn get(&self, name: &str) -> Option<&User> {
        self.users.get(name)
    }

    pub fn render(&self) -> String {
        let mut s = String::from(
            "# ferrod credentials: one user per line, written by `ferrod user add`.\n\
             # Passwords are kept only as the salted hashes of each SASL mechanism.\n",
        );
        for u in self.users.values() {
            s.push_str(&u.line());
            s.push('\n');
        }
        s
    }

    /// Writes the file in place of the old one (a reader never sees half a file), readable by
    /// its owner only.
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let tmp = dir.join(format!(
            ".{}.tmp",
            path.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "credentials".into())
        ));
        {
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create(true).truncate(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                opts.mode(0o600);
            }
            let mut f = opts.open(&tmp)?;
            std::io::Write::write_all(&mut f, self.render().as_bytes())?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_verify() {
        let mut users = Users::default();
        let u = User::with_password("kc", vec![Role::Deployer], "s3cret", "default", 4096);
        users.users.insert("kc".into(), u.clone());
        let again = Users::parse(&users.render()).unwrap();
        assert_eq!(again.get("kc"), Some(&u));
        let c = &u.scram[&HashAlg::Sha256];
        assert!(c.verify(HashAlg::Sha256, "s3cret"));
        assert!(!c.verify(HashAlg::Sha256, "s3cre"));
        assert!(!users.render().contains("s3cret"));
    }

    #[test]
    fn bad_lines_name_their_line() {
        let e = Users::parse("# c\nok roles=admin\nbad roles=wizard\n").unwrap_err();
        assert_eq!(e.0, 3);
        assert!(e.1.contains("wizard"), "{}", e.1);
        let e = Users::parse("x roles=admin scram-sha-256=12:AA:BB:CC\n").unwrap_err();
        assert_eq!(e.0, 1);
        let e = Users::parse("x\n").unwrap_err();
        assert!(e.1.contains("roles"), "{}", e.1);
        let e = Users::parse("x roles=admin\nx roles=admin\n").unwrap_err();
        assert_eq!(e.0, 2);
    }
}
