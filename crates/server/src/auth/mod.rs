//! SASL authentication (AUTH_MECH_LIST 0x21 / AUTH 0x23, reference §12) and authorization.
//!
//! Authentication is on when a credentials file is configured. Until a connection has
//! authenticated, every operation but PING, AUTH_MECH_LIST and AUTH is refused (status 0x85, the
//! connection stays usable). The AUTH responses follow upstream's `Authentication`: while the
//! mechanism has bytes to send, `complete` is 0 and the bytes go out, *including* the final
//! SCRAM `v=` and DIGEST `rspauth` (the client's mechanism must see them to finish); `complete`
//! is 1, with no data, only when the mechanism finished with nothing to say (PLAIN, EXTERNAL).

pub mod digest;
pub mod hash;
pub mod roles;
pub mod scram;
pub mod user_cmd;
pub mod users;

use std::collections::HashMap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine;
use bytes::Bytes;
use ferrod_codec::{op, status, Request, RequestHeader, Response, ResponseBody};
use rand::RngCore;
use tracing::{debug, info};

use hash::HashAlg;
use roles::{Permissions, Role};
use users::{ScramCredential, Users};

/// Mechanisms in the order AUTH_MECH_LIST offers them (strongest first).
pub const MECHANISMS: &[&str] = &[
    "SCRAM-SHA-512",
    "SCRAM-SHA-384",
    "SCRAM-SHA-256",
    "SCRAM-SHA-1",
    "DIGEST-SHA-512",
    "DIGEST-SHA-384",
    "DIGEST-SHA-256",
    "DIGEST-SHA",
    "DIGEST-MD5",
    "PLAIN",
    "EXTERNAL",
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mechanism {
    Scram(HashAlg),
    Digest(HashAlg),
    Plain,
    External,
}

impl Mechanism {
    fn parse(name: &str) -> Option<Mechanism> {
        Some(match name {
            "SCRAM-SHA-1" => Mechanism::Scram(HashAlg::Sha1),
            "SCRAM-SHA-256" => Mechanism::Scram(HashAlg::Sha256),
            "SCRAM-SHA-384" => Mechanism::Scram(HashAlg::Sha384),
            "SCRAM-SHA-512" => Mechanism::Scram(HashAlg::Sha512),
            "DIGEST-MD5" => Mechanism::Digest(HashAlg::Md5),
            "DIGEST-SHA" => Mechanism::Digest(HashAlg::Sha1),
            "DIGEST-SHA-256" => Mechanism::Digest(HashAlg::Sha256),
            "DIGEST-SHA-384" => Mechanism::Digest(HashAlg::Sha384),
            "DIGEST-SHA-512" => Mechanism::Digest(HashAlg::Sha512),
            "PLAIN" => Mechanism::Plain,
            "EXTERNAL" => Mechanism::External,
            _ => return None,
        })
    }
}

/// Authentication settings and the users, shared by every connection.
pub struct Authenticator {
    users: Users,
    /// The DIGEST realm offered in challenges (clients default to `default`).
    pub realm: String,
    /// The SASL server name; DIGEST's digest-uri must be `hotrod/<server_name>`.
    pub server_name: String,
    /// Mechanisms offered (a subset of [`MECHANISMS`], in that order).
    pub mechanisms: Vec<String>,
    /// Per-cache role restriction: only these roles' permissions count on that cache.
    pub cache_roles: HashMap<String, Vec<Role>>,
    /// Makes up SCRAM salts for unknown users, stable per name so probing learns nothing.
    fake_salt_key: [u8; 32],
}

/// Who a connection authenticated as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub user: String,
    pub roles: Vec<Role>,
}

/// Per-connection authentication state.
#[derive(Default)]
pub struct Session {
    /// The TLS client certificate's identity, when the connection has one (EXTERNAL).
    pub peer_identity: Option<String>,
    pub identity: Option<Identity>,
    exchange: Option<(String, Exchange)>,
}

impl Session {
    /// A fresh session for a connection whose TLS client certificate proved `peer_identity`.
    pub fn with_peer_identity(peer_identity: Option<String>) -> Session {
        Session {
            peer_identity,
            ..Default::default()
        }
    }
}

enum Exchange {
    Scram(scram::ServerFirst),
    Digest(digest::Challenge),
}

/// Why an AUTH failed. Clients see only "authentication failed"; the detail goes to the log.
struct Refused(String);

impl Authenticator {
    pub fn new(
        users: Users,
        realm: String,
        server_name: String,
        mechanisms: Option<Vec<String>>,
        cache_roles: HashMap<String, Vec<Role>>,
    ) -> Result<Authenticator, String> {
        let mechanisms = match mechanisms {
            None => MECHANISMS.iter().map(|m| m.to_string()).collect(),
            Some(list) => {
                for m in &list {
                    if Mechanism::parse(m).is_none() {
                        return Err(format!(
                            "unknown SASL mechanism '{m}' (known: {})",
                            MECHANISMS.join(", ")
                        ));
                    }
                }
                MECHANISMS
                    .iter()
                    .filter(|m| list.iter().any(|l| l == *m))
                    .map(|m| m.to_string())
                    .collect()
            }
        };
        let mut fake_salt_key = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut fake_salt_key);
        Ok(Authenticator {
            users,
            realm,
            server_name,
            mechanisms,
            cache_roles,
            fake_salt_key,
        })
    }

    /// The authenticator a configuration asks for: `None` without a credentials file.
    pub fn from_config(config: &crate::Config) -> Result<Option<Authenticator>, String> {
        let Some(path) = &config.credentials_file else {
            return Ok(None);
        };
        let users = Users::load(path).map_err(|e| e.to_string())?;
        Authenticator::new(
            users,
            config.auth_realm.clone(),
            config.auth_server_name.clone(),
            config.auth_mechanisms.clone(),
            config.cache_roles.clone(),
        )
        .map(Some)
    }

    pub fn user_count(&self) -> usize {
        self.users.users.len()
    }

    /// AUTH_MECH_LIST: EXTERNAL only where the connection has a client certificate.
    pub fn mech_list(&self, session: &Session, header: &RequestHeader) -> Response {
        let mechs = self
            .mechanisms
            .iter()
            .filter(|m| *m != "EXTERNAL" || session.peer_identity.is_some())
            .cloned()
            .collect();
        Response::new(
            header.message_id,
            op::AUTH_MECH_LIST,
            status::SUCCESS,
            ResponseBody::AuthMechs(mechs),
        )
    }

    /// AUTH: one step of the exchange.
    pub fn auth(
        &self,
        session: &mut Session,
        header: &RequestHeader,
        mechanism: &str,
        response: &[u8],
        connection: u64,
    ) -> Response {
        match self.step(session, mechanism, response) {
            Ok((complete, data)) => Response::new(
                header.message_id,
                op::AUTH,
                status::SUCCESS,
                ResponseBody::Auth {
                    complete,
                    challenge: data,
                },
            ),
            Err(Refused(why)) => {
                session.exchange = None;
                info!(connection, mechanism, "authentication failed: {why}");
                Response::error(
                    header.message_id,
                    status::SERVER_ERROR,
                    format!("org.infinispan.server.hotrod.HotRodServerException: authentication failed ({mechanism})"),
                )
            }
        }
    }

    fn step(
        &self,
        session: &mut Session,
        mechanism: &str,
        response: &[u8],
    ) -> Result<(bool, Bytes), Refused> {
        let exchange = match session.exchange.take() {
            Some((m, ex)) if m == mechanism => Some(ex),
            Some((m, _)) => {
                return Err(Refused(format!(
                    "mechanism changed from {m} to {mechanism} in the middle of an exchange"
                )))
            }
            None => None,
        };
        let offered = self.mechanisms.iter().any(|m| m == mechanism)
            && (mechanism != "EXTERNAL" || session.peer_identity.is_some());
        let mech = Mechanism::parse(mechanism)
            .filter(|_| offered)
            .ok_or_else(|| Refused(format!("mechanism '{mechanism}' is not offered")))?;
        match (mech, exchange) {
            (Mechanism::Scram(h), None) => {
                let nonce = random_nonce();
                let (state, first) = scram::server_first(
                    h,
                    response,
                    &nonce,
                    |user| self.users.get(user).and_then(|u| u.scram.get(&h).cloned()),
                    |user| self.fake_scram(h, user),
                )
                .map_err(Refused)?;
                session.exchange = Some((mechanism.to_string(), Exchange::Scram(state)));
                Ok((false, Bytes::from(first)))
            }
            (Mechanism::Scram(_), Some(Exchange::Scram(state))) => {
                let fin = scram::server_final(&state, response).map_err(Refused)?;
                self.complete(session, &state.username)?;
                Ok((false, Bytes::from(fin)))
            }
            (Mechanism::Digest(h), None) => {
                if !response.is_empty() {
                    return Err(Refused(format!(
                        "{mechanism} has no initial response, got {} bytes",
                        response.len()
                    )));
                }
                let uri = format!("hotrod/{}", self.server_name);
                let (state, text) = digest::challenge(h, &self.realm, &random_nonce(), &uri);
                session.exchange = Some((mechanism.to_string(), Exchange::Digest(state)));
                Ok((false, Bytes::from(text)))
            }
            (Mechanism::Digest(h), Some(Exchange::Digest(state))) => {
                let user = digest::username(response).map_err(Refused)?;
                let cred = self.users.get(&user).and_then(|u| u.digest.get(&h));
                let rspauth = digest::verify(&state, response, cred).map_err(Refused)?;
                self.complete(session, &user)?;
                Ok((false, Bytes::from(rspauth)))
            }
            (Mechanism::Plain, None) => {
                let user = self.plain(response)?;
                self.complete(session, &user)?;
                Ok((true, Bytes::new()))
            }
            (Mechanism::External, None) => {
                let identity = session.peer_identity.clone().ok_or_else(|| {
                    Refused("EXTERNAL needs a TLS client certificate".to_string())
                })?;
                let authzid = std::str::from_utf8(response)
                    .map_err(|_| Refused("EXTERNAL authzid is not UTF-8".into()))?;
                if !authzid.is_empty() && authzid != identity {
                    return Err(Refused(format!(
                        "certificate identity '{identity}' may not act as '{authzid}'"
                    )));
                }
                self.complete(session, &identity)?;
                Ok((true, Bytes::new()))
            }
            (_, Some(_)) => Err(Refused(format!(
                "unexpected {mechanism} message in this exchange"
            ))),
        }
    }

    /// PLAIN: `authzid NUL authcid NUL password`, checked against the user's strongest SCRAM
    /// credential (a salted hash; there is no clear-text password to compare with).
    fn plain(&self, msg: &[u8]) -> Result<String, Refused> {
        let text =
            std::str::from_utf8(msg).map_err(|_| Refused("PLAIN message is not UTF-8".into()))?;
        let mut parts = text.split('\0');
        let (authzid, user, password) =
            match (parts.next(), parts.next(), parts.next(), parts.next()) {
                (Some(a), Some(u), Some(p), None) => (a, u, p),
                _ => {
                    return Err(Refused(
                        "PLAIN message is not authzid\\0user\\0password".into(),
                    ))
                }
            };
        if !authzid.is_empty() && authzid != user {
            return Err(Refused(format!("'{user}' may not act as '{authzid}'")));
        }
        self.check_password(user, password).map_err(Refused)?;
        Ok(user.to_string())
    }

    /// Checks a clear-text password (PLAIN, HTTP BASIC) against the user's strongest SCRAM
    /// credential (a salted hash; there is no clear-text password to compare with).
    fn check_password(&self, user: &str, password: &str) -> Result<(), String> {
        let Some(u) = self.users.get(user) else {
            // Spend the same work as a real check, so timing does not tell unknown users apart.
            let _ = self
                .fake_scram(HashAlg::Sha512, user)
                .verify(HashAlg::Sha512, password);
            return Err(format!("unknown user '{user}'"));
        };
        let (h, cred) = u
            .scram
            .iter()
            .next_back()
            .ok_or_else(|| format!("user '{user}' has no password"))?;
        if !cred.verify(*h, password) {
            return Err(format!("wrong password for '{user}'"));
        }
        Ok(())
    }

    /// HTTP BASIC: who `user` is if `password` is theirs, else why not (for the log only).
    pub fn login(&self, user: &str, password: &str) -> Result<Identity, String> {
        self.check_password(user, password)?;
        let u = self
            .users
            .get(user)
            .ok_or_else(|| format!("unknown user '{user}'"))?;
        Ok(Identity {
            user: user.to_string(),
            roles: u.roles.clone(),
        })
    }

    fn complete(&self, session: &mut Session, user: &str) -> Result<(), Refused> {
        let u = self
            .users
            .get(user)
            .ok_or_else(|| Refused(format!("unknown user '{user}'")))?;
        debug!(user, "authenticated");
        session.identity = Some(Identity {
            user: user.to_string(),
            roles: u.roles.clone(),
        });
        Ok(())
    }

    fn fake_scram(&self, h: HashAlg, user: &str) -> ScramCredential {
        let salt = HashAlg::Sha256.hmac(&self.fake_salt_key, &[user.as_bytes()]);
        let len = h.digest(&[]).len();
        ScramCredential {
            iterations: users::DEFAULT_ITERATIONS,
            salt: salt[..16].to_vec(),
            stored_key: vec![0; len],
            server_key: vec![0; len],
        }
    }

    /// Refuses a request the connection may not make: before authentication anything but
    /// PING / AUTH_MECH_LIST / AUTH, after it anything the user's roles do not permit on the
    /// cache addressed.
    pub fn check(
        &self,
        session: &Session,
        header: &RequestHeader,
        request: &Request,
    ) -> Result<(), Box<Response>> {
        let needed = roles::required_on(crate::context::cache_name(header), request);
        if matches!(
            request,
            Request::Ping | Request::AuthMechList | Request::Auth { .. }
        ) {
            return Ok(());
        }
        // Operations with no permission of their own (`@@cache@names`) still need a login.
        let needed = needed.unwrap_or(Permissions::NONE);
        // Admin tasks address the container, not a cache: only the user's own roles count.
        let admin_task = matches!(request, Request::Exec { task, .. } if task.starts_with("@@"));
        self.permits(session, header, needed, admin_task)
    }

    /// Whether the connection's user holds `needed` on the cache `header` addresses (or, for
    /// `container`, on the cache container). For commands whose permission depends on their
    /// content (an Ickle DELETE needs BULK_WRITE on top of the query's BULK_READ).
    pub fn permits(
        &self,
        session: &Session,
        header: &RequestHeader,
        needed: Permissions,
        container: bool,
    ) -> Result<(), Box<Response>> {
        let Some(identity) = &session.identity else {
            return Err(Box::new(Response::error(
                header.message_id,
                status::SERVER_ERROR,
                format!(
                    "java.lang.SecurityException: ISPN006017: Operation '{}' requires authentication",
                    op::name(header.opcode)
                ),
            )));
        };
        let cache = crate::context::cache_name(header);
        let granted = match self.cache_roles.get(cache).filter(|_| !container) {
            Some(allowed) => {
                roles::permissions_of(identity.roles.iter().filter(|r| allowed.contains(r)))
            }
            None => roles::permissions_of(&identity.roles),
        };
        if granted.implies(needed) {
            return Ok(());
        }
        let target = if container {
            "the cache container".to_string()
        } else {
            format!("cache '{cache}'")
        };
        Err(Box::new(Response::error(
            header.message_id,
            status::SERVER_ERROR,
            format!(
                "java.lang.SecurityException: ISPN000287: Unauthorized access: user '{}' lacks '{}' permission on {target} for {}",
                identity.user,
                needed.name(),
                op::name(header.opcode)
            ),
        )))
    }
}

/// A SCRAM/DIGEST server nonce: 24 random bytes, printable and free of `,` and `"`.
fn random_nonce() -> String {
    let mut b = [0u8; 24];
    rand::thread_rng().fill_bytes(&mut b);
    B64URL.encode(b)
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("users", &self.users.users.len())
            .field("realm", &self.realm)
            .field("server_name", &self.server_name)
            .field("mechanisms", &self.mechanisms)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use users::User;

    fn authenticator() -> Authenticator {
        let mut users = Users::default();
        let u = User {
            name: "CN=client".into(),
            roles: vec![Role::Application],
            scram: Default::default(),
            digest: Default::default(),
        };
        users.users.insert(u.name.clone(), u);
        Authenticator::new(
            users,
            "default".into(),
            "infinispan".into(),
            None,
            HashMap::new(),
        )
        .unwrap()
    }

    fn header() -> RequestHeader {
        RequestHeader::new(31, op::AUTH, 7, "")
    }

    fn mechs(r: &Response) -> Vec<String> {
        match &r.body {
            ResponseBody::AuthMechs(m) => m.clone(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn external_uses_the_peer_identity_and_is_offered_only_with_one() {
        let a = authenticator();
        let mut s = Session::default();
        assert!(!mechs(&a.mech_list(&s, &header())).contains(&"EXTERNAL".to_string()));
        let r = a.auth(&mut s, &header(), "EXTERNAL", b"", 1);
        assert_eq!(r.header.status, status::SERVER_ERROR);
        assert!(s.identity.is_none());

        s.peer_identity = Some("CN=client".into());
        assert!(mechs(&a.mech_list(&s, &header())).contains(&"EXTERNAL".to_string()));
        let r = a.auth(&mut s, &header(), "EXTERNAL", b"CN=other", 1);
        assert_eq!(
            r.header.status,
            status::SERVER_ERROR,
            "may not act as another"
        );
        let r = a.auth(&mut s, &header(), "EXTERNAL", b"", 1);
        assert_eq!(
            r.body,
            ResponseBody::Auth {
                complete: true,
                challenge: Bytes::new()
            }
        );
        assert_eq!(s.identity.as_ref().unwrap().roles, vec![Role::Application]);

        let mut stranger = Session {
            peer_identity: Some("CN=stranger".into()),
            ..Default::default()
        };
        let r = a.auth(&mut stranger, &header(), "EXTERNAL", b"", 1);
        assert_eq!(
            r.header.status,
            status::SERVER_ERROR,
            "no entry for that identity"
        );
        assert!(stranger.identity.is_none());
    }

    #[test]
    fn a_user_known_only_by_certificate_cannot_use_passwords() {
        let a = authenticator();
        let mut s = Session::default();
        let r = a.auth(&mut s, &header(), "PLAIN", b"\0CN=client\0", 1);
        assert_eq!(r.header.status, status::SERVER_ERROR);
        assert!(s.identity.is_none());
    }
}
