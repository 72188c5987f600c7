//! TLS for the HotRod port (rustls): PEM certificate and key, several certificate/key pairs chosen
//! by the server name the client asks for (SNI), optional client-certificate authentication, and
//! certificates reloaded from disk without a restart.
//!
//! Everything a handshake needs lives in one `rustls::ServerConfig`; a reload builds a new one
//! from the files and swaps it in, so a connection always handshakes with one consistent set.
//! A file that fails to load keeps the previous configuration (and is logged), so a half-written
//! certificate during a rotation never takes the port down.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tracing::{error, info};

/// Whether the port speaks TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// Plain connections only.
    Off,
    /// Every connection must start a TLS handshake; plain ones are closed.
    Required,
    /// TLS and plain connections on the same port, told apart by their first byte.
    Optional,
}

impl TlsMode {
    pub fn parse(s: &str) -> Option<TlsMode> {
        match s.trim().to_ascii_lowercase().as_str() {
            "off" | "disabled" => Some(TlsMode::Off),
            "required" | "on" => Some(TlsMode::Required),
            "optional" => Some(TlsMode::Optional),
            _ => None,
        }
    }
}

/// Whether clients must present a certificate signed by the configured CA bundle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    None,
    /// Asked for; a client without one is accepted (with no peer identity), one with a
    /// certificate the CA bundle does not vouch for is refused.
    Optional,
    Required,
}

impl ClientAuth {
    pub fn parse(s: &str) -> Option<ClientAuth> {
        match s.trim().to_ascii_lowercase().as_str() {
            "none" => Some(ClientAuth::None),
            "optional" | "want" | "requested" => Some(ClientAuth::Optional),
            "required" | "need" => Some(ClientAuth::Required),
            _ => None,
        }
    }
}

/// A certificate/key pair served to clients that ask for one of `host_names` (SNI).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SniEntry {
    /// Exact names (compared without case) or `*.domain` wildcards matching one label.
    pub host_names: Vec<String>,
    pub certificate: PathBuf,
    pub private_key: PathBuf,
}

/// The TLS settings of the port (from config.rs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    pub mode: TlsMode,
    /// The default pair: served when the client sends no server name or one no SNI entry has.
    pub certificate: PathBuf,
    pub private_key: PathBuf,
    pub sni: Vec<SniEntry>,
    pub client_auth: ClientAuth,
    pub client_ca: Option<PathBuf>,
    /// How often the files are checked for changes; zero = never reloaded.
    pub reload_interval: Duration,
}

/// A TLS file that could not be used; `key` is the configuration key that named it.
#[derive(Debug, Clone)]
pub struct TlsError {
    pub key: String,
    pub problem: String,
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.problem)
    }
}

fn tls_err(key: &str, problem: impl Into<String>) -> TlsError {
    TlsError {
        key: key.to_string(),
        problem: problem.into(),
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn load_certs(key: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| tls_err(key, format!("cannot read {}: {e}", path.display())))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls_err(key, format!("{}: bad PEM: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(tls_err(
            key,
            format!("{}: no PEM CERTIFICATE block found", path.display()),
        ));
    }
    Ok(certs)
}

fn load_pair(
    cert_key: &str,
    key_key: &str,
    certificate: &Path,
    private_key: &Path,
    provider: &CryptoProvider,
) -> Result<Arc<CertifiedKey>, TlsError> {
    let chain = load_certs(cert_key, certificate)?;
    let key = PrivateKeyDer::from_pem_file(private_key).map_err(|e| {
        tls_err(
            key_key,
            format!(
                "{}: no usable PEM private key (PKCS#8, PKCS#1 or SEC1): {e}",
                private_key.display()
            ),
        )
    })?;
    CertifiedKey::from_der(chain, key, provider)
        .map(Arc::new)
        .map_err(|e| {
            tls_err(
                key_key,
                format!(
                    "{} does not fit the certificate in {}: {e}",
                    private_key.display(),
                    certificate.display()
                ),
            )
        })
}

/// Chooses the certificate by the server name of the ClientHello.
#[derive(Debug)]
struct SniResolver {
    by_name: Vec<(Vec<String>, Arc<CertifiedKey>)>,
    default: Arc<CertifiedKey>,
}

fn name_matches(pattern: &str, name: &str) -> bool {
    if let Some(domain) = pattern.strip_prefix("*.") {
        // One label only, as for certificates: *.example.com matches a.example.com.
        match name.split_once('.') {
            Some((label, rest)) => !label.is_empty() && rest.eq_ignore_ascii_case(domain),
            None => false,
        }
    } else {
        pattern.eq_ignore_ascii_case(name)
    }
}

impl SniResolver {
    fn choose(&self, server_name: Option<&str>) -> Arc<CertifiedKey> {
        if let Some(name) = server_name {
            let name = name.trim_end_matches('.');
            // Exact names win over wildcards, whatever the order of the entries.
            for exact in [true, false] {
                for (names, key) in &self.by_name {
                    if names
                        .iter()
                        .any(|p| p.starts_with("*.") != exact && name_matches(p, name))
                    {
                        return key.clone();
                    }
                }
            }
        }
        self.default.clone()
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.choose(client_hello.server_name()))
    }
}

/// Builds the rustls configuration from the files named in `settings`.
pub fn build_server_config(settings: &TlsSettings) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = provider();
    let default = load_pair(
        "tls_certificate",
        "tls_private_key",
        &settings.certificate,
        &settings.private_key,
        &provider,
    )?;
    let mut by_name = Vec::with_capacity(settings.sni.len());
    for (i, entry) in settings.sni.iter().enumerate() {
        let key = load_pair(
            &format!("tls_sni[{i}].certificate"),
            &format!("tls_sni[{i}].private_key"),
            &entry.certificate,
            &entry.private_key,
            &provider,
        )?;
        by_name.push((entry.host_names.clone(), key));
    }
    let resolver = Arc::new(SniResolver { by_name, default });

    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_err("tls_mode", e.to_string()))?;
    let builder = match settings.client_auth {
        ClientAuth::None => builder.with_no_client_auth(),
        mode => {
            let path = settings.client_ca.as_deref().ok_or_else(|| {
                tls_err(
                    "tls_client_ca",
                    "required when tls_client_auth is optional or required",
                )
            })?;
            let mut roots = RootCertStore::empty();
            for cert in load_certs("tls_client_ca", path)? {
                roots.add(cert).map_err(|e| {
                    tls_err(
                        "tls_client_ca",
                        format!("{}: not a usable CA certificate: {e}", path.display()),
                    )
                })?;
            }
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
            let verifier = if mode == ClientAuth::Optional {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            let verifier = verifier
                .build()
                .map_err(|e| tls_err("tls_client_ca", e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    Ok(Arc::new(builder.with_cert_resolver(resolver)))
}

/// The files a configuration is built from, with what they looked like when it was built.
fn watched_files(settings: &TlsSettings) -> Vec<PathBuf> {
    let mut files = vec![settings.certificate.clone(), settings.private_key.clone()];
    for e in &settings.sni {
        files.push(e.certificate.clone());
        files.push(e.private_key.clone());
    }
    if settings.client_auth != ClientAuth::None {
        files.extend(settings.client_ca.clone());
    }
    files
}

/// Modification time and length of each file (None when it cannot be read right now).
fn fingerprint(files: &[PathBuf]) -> Vec<Option<(SystemTime, u64)>> {
    files
        .iter()
        .map(|p| {
            std::fs::metadata(p)
                .ok()
                .and_then(|m| Some((m.modified().ok()?, m.len())))
        })
        .collect()
}

/// The live TLS configuration of the port, replaced when the files change.
pub struct TlsState {
    pub settings: TlsSettings,
    current: RwLock<Arc<ServerConfig>>,
}

impl TlsState {
    pub fn new(settings: TlsSettings) -> Result<Arc<TlsState>, TlsError> {
        let config = build_server_config(&settings)?;
        Ok(Arc::new(TlsState {
            settings,
            current: RwLock::new(config),
        }))
    }

    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        let config = match self.current.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        tokio_rustls::TlsAcceptor::from(config)
    }

    /// Rebuilds the configuration from the files; on failure the old one stays in use.
    pub fn reload(&self) -> Result<(), TlsError> {
        let config = build_server_config(&self.settings)?;
        match self.current.write() {
            Ok(mut c) => *c = config,
            Err(poisoned) => *poisoned.into_inner() = config,
        }
        Ok(())
    }

    /// Polls the files every `reload_interval` and reloads after a change. Modification times
    /// rather than inotify: it also sees Kubernetes secret volumes, whose files change through
    /// a symlink swap in the parent directory.
    pub async fn watch(self: Arc<Self>) {
        let interval = self.settings.reload_interval;
        if interval.is_zero() {
            return;
        }
        let files = watched_files(&self.settings);
        let mut seen = fingerprint(&files);
        loop {
            tokio::time::sleep(interval).await;
            let now = fingerprint(&files);
            if now == seen {
                continue;
            }
            seen = now;
            let this = self.clone();
            // Reading and parsing files is blocking work.
            match tokio::task::spawn_blocking(move || this.reload()).await {
                Ok(Ok(())) => info!("TLS certificates reloaded"),
                Ok(Err(e)) => {
                    error!("TLS certificates not reloaded, the previous ones stay in use: {e}")
                }
                Err(e) => error!("TLS reload task failed: {e}"),
            }
        }
    }
}

/// Who the client proved to be with its certificate (client-certificate authentication).
/// `connection::serve` puts it in `ConnectionState::peer_identity` for SASL EXTERNAL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    /// Subject distinguished name in RFC 4514 form, most specific first, as Java's
    /// `X500Principal.getName()` prints it: e.g. `CN=keycloak,O=Example`.
    pub subject: String,
    /// Subject alternative names: DNS names, e-mail addresses, URIs and IP addresses as text.
    pub alt_names: Vec<String>,
}

impl PeerIdentity {
    /// The user this certificate authenticates as with SASL EXTERNAL: the subject's common name
    /// (as Infinispan's usual `common-name-principal-transformer` maps it), or the whole subject
    /// DN when it has no CN. Its roles are those of the user of that name in the credentials file.
    pub fn user_name(&self) -> String {
        self.subject
            .split(',')
            .find_map(|rdn| rdn.strip_prefix("CN="))
            .map(str::to_string)
            .unwrap_or_else(|| self.subject.clone())
    }

    /// Reads the end-entity certificate the handshake verified. `None` if it cannot be parsed
    /// (rustls already verified it, so this does not happen with a real certificate).
    pub fn from_certificate(der: &[u8]) -> Option<PeerIdentity> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let registry = x509_parser::objects::oid_registry();
        let mut rdns = Vec::new();
        for rdn in cert.subject().iter_rdn() {
            let mut parts = Vec::new();
            for attr in rdn.iter() {
                let name = x509_parser::objects::oid2abbrev(attr.attr_type(), registry)
                    .map(str::to_string)
                    .unwrap_or_else(|_| attr.attr_type().to_id_string());
                let value = match attr.as_str() {
                    Ok(s) => escape_dn_value(s),
                    // Other string types (BMPString...): the DER bytes in hex, as RFC 4514 says.
                    Err(_) => format!("#{}", hex(attr.attr_value().data)),
                };
                parts.push(format!("{}={value}", name.to_ascii_uppercase()));
            }
            rdns.push(parts.join("+"));
        }
        rdns.reverse();
        let mut alt_names = Vec::new();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            use x509_parser::extensions::GeneralName;
            for name in &san.value.general_names {
                match name {
                    GeneralName::DNSName(s) | GeneralName::RFC822Name(s) | GeneralName::URI(s) => {
                        alt_names.push(s.to_string())
                    }
                    GeneralName::IPAddress(b) => match b.len() {
                        4 => alt_names
                            .push(std::net::Ipv4Addr::new(b[0], b[1], b[2], b[3]).to_string()),
                        16 => {
                            let mut a = [0u8; 16];
                            a.copy_from_slice(b);
                            alt_names.push(std::net::Ipv6Addr::from(a).to_string())
                        }
                        _ => {}
                    },
                    _ => {}
                }
            }
        }
        Some(PeerIdentity {
            subject: rdns.join(","),
            alt_names,
        })
    }
}

impl fmt::Display for PeerIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.subject)
    }
}

fn escape_dn_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for (i, c) in s.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';' | '=')
            || (i == 0 && (c == ' ' || c == '#'))
            || (i == s.chars().count() - 1 && c == ' ');
        if special {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_one_label() {
        assert!(name_matches("*.example.com", "a.example.com"));
        assert!(name_matches("*.example.com", "A.EXAMPLE.com"));
        assert!(!name_matches("*.example.com", "a.b.example.com"));
        assert!(!name_matches("*.example.com", "example.com"));
        assert!(name_matches("Cache.Example.com", "cache.example.com"));
    }

    #[test]
    fn dn_values_are_escaped() {
        assert_eq!(escape_dn_value("a,b"), "a\\,b");
        assert_eq!(escape_dn_value(" x "), "\\ x\\ ");
        assert_eq!(escape_dn_value("#1"), "\\#1");
    }

    #[test]
    fn peer_identity_reads_subject_and_alt_names() {
        let mut params = rcgen::CertificateParams::new(vec![
            "kc.example.com".to_string(),
            "10.1.2.3".to_string(),
        ])
        .unwrap();
        // Encoded order O, CN (rcgen's default name already holds a CN, so start afresh).
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "Example, Inc.");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "keycloak");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let id = PeerIdentity::from_certificate(cert.der()).unwrap();
        // Most specific first, as Java prints it; the comma in the value escaped.
        assert_eq!(id.subject, "CN=keycloak,O=Example\\, Inc.");
        assert_eq!(id.alt_names, vec!["kc.example.com", "10.1.2.3"]);
        assert_eq!(PeerIdentity::from_certificate(b"not a certificate"), None);
    }

    #[test]
    fn modes_parse() {
        assert_eq!(TlsMode::parse("Required"), Some(TlsMode::Required));
        assert_eq!(TlsMode::parse("optional"), Some(TlsMode::Optional));
        assert_eq!(TlsMode::parse("maybe"), None);
        assert_eq!(ClientAuth::parse("required"), Some(ClientAuth::Required));
        assert_eq!(ClientAuth::parse("x"), None);
    }
}
