//! Configuration: every key can come from the TOML file, an environment variable or a flag
//! (flag > environment > file > default). A bad value stops startup with a message naming the key.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use serde::Deserialize;

use ferrod_store::CacheDef;

use crate::auth::roles::Role;
use crate::tls::{ClientAuth, SniEntry, TlsMode, TlsSettings};

/// Name the default cache (requests with an empty cache name) is stored under.
pub const DEFAULT_CACHE_NAME: &str = "default";

/// The log filter when none is configured. rustls logs through the `log` crate (bridged into
/// tracing) and warns about peers' protocol quirks on every handshake, e.g. "Illegal SNI
/// extension: ignoring IP address presented as hostname" for each client that connects by IP
/// address (Keycloak does); ferrod logs failed handshakes itself, so only rustls errors are kept.
/// A filter the operator sets is used as given.
pub const DEFAULT_LOG_FILTER: &str = "info,rustls=error";

#[derive(Debug, Parser)]
#[command(
    name = "ferrod",
    version,
    about = "HotRod server whose every write is committed to SQL before it answers"
)]
pub struct Cli {
    /// TOML configuration file.
    #[arg(long, env = "FERROD_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to accept HotRod connections on [default: 127.0.0.1:11222].
    #[arg(long, env = "FERROD_LISTEN")]
    pub listen: Option<String>,
    /// sqlite://path/file.db (embedded default: sqlite://./data/ferrod.db) or postgres://user:pass@host/db.
    #[arg(long, env = "FERROD_DATABASE_URL")]
    pub database_url: Option<String>,
    /// SQLite: how long a write waits for a lock held by another connection before it fails, in
    /// milliseconds [default: 10000].
    #[arg(long, env = "FERROD_DATABASE_BUSY_TIMEOUT_MS")]
    pub database_busy_timeout_ms: Option<String>,
    /// Largest value accepted, in bytes [default: 67108864].
    #[arg(long, env = "FERROD_MAX_VALUE_BYTES")]
    pub max_value_bytes: Option<String>,
    /// Largest key accepted, in bytes (keys are also bounded by max_value_bytes) [default: 65536].
    #[arg(long, env = "FERROD_MAX_KEY_BYTES")]
    pub max_key_bytes: Option<String>,
    /// Largest request frame (header, keys, values and metadata together), in bytes; a longer
    /// frame is answered with an error and the connection closed
    /// [default: max_value_bytes + max_key_bytes + 65536].
    #[arg(long, env = "FERROD_MAX_FRAME_BYTES")]
    pub max_frame_bytes: Option<String>,
    /// A connection that sends no request for this many seconds, has nothing in flight and no
    /// client listener is closed; 0 = never [default: 600].
    #[arg(long, env = "FERROD_IDLE_TIMEOUT_S")]
    pub idle_timeout_s: Option<String>,
    /// Iterations (ITERATION_START without END) one connection may hold open [default: 64].
    #[arg(long, env = "FERROD_MAX_ITERATIONS_PER_CONNECTION")]
    pub max_iterations_per_connection: Option<String>,
    /// Most client connections served at once [default: 10000].
    #[arg(long, env = "FERROD_MAX_CONNECTIONS")]
    pub max_connections: Option<String>,
    /// Most requests in flight per connection (pipelining depth) [default: 256].
    #[arg(long, env = "FERROD_MAX_INFLIGHT_PER_CONNECTION")]
    pub max_inflight_per_connection: Option<String>,
    /// PostgreSQL: write transactions run at once, keys spread over them by hash [default: 1].
    #[arg(long, env = "FERROD_WRITER_LANES")]
    pub writer_lanes: Option<String>,
    /// Events queued per connection for its client listeners; a connection whose queue
    /// overflows is closed [default: 10000].
    #[arg(long, env = "FERROD_MAX_LISTENER_QUEUE")]
    pub max_listener_queue: Option<String>,
    /// How often expired entries are removed, in milliseconds [default: 1000].
    #[arg(long, env = "FERROD_REAPER_INTERVAL_MS")]
    pub reaper_interval_ms: Option<String>,
    /// Most write operations grouped into one SQL transaction [default: 512].
    #[arg(long, env = "FERROD_MAX_BATCH_OPS")]
    pub max_batch_ops: Option<String>,
    /// Log filter, e.g. info or ferrod=debug [default: info,rustls=error].
    #[arg(long, env = "FERROD_LOG")]
    pub log: Option<String>,
    /// TLS on the port: off, required (TLS only) or optional (TLS and plain on one port)
    /// [default: required when tls_certificate is set, else off].
    #[arg(long, env = "FERROD_TLS_MODE")]
    pub tls_mode: Option<String>,
    /// PEM certificate chain (server certificate first) served by default.
    #[arg(long, env = "FERROD_TLS_CERTIFICATE")]
    pub tls_certificate: Option<String>,
    /// PEM private key of tls_certificate (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "FERROD_TLS_PRIVATE_KEY")]
    pub tls_private_key: Option<String>,
    /// Further certificate/key pairs chosen by the client's server name (SNI):
    /// HOST[|HOST...]=CERT_PEM,KEY_PEM entries separated by ';' (HOST may be *.domain).
    #[arg(long, env = "FERROD_TLS_SNI")]
    pub tls_sni: Option<String>,
    /// Client certificates: none, optional or required [default: none].
    #[arg(long, env = "FERROD_TLS_CLIENT_AUTH")]
    pub tls_client_auth: Option<String>,
    /// PEM bundle of the CA certificates that client certificates must chain to.
    #[arg(long, env = "FERROD_TLS_CLIENT_CA")]
    pub tls_client_ca: Option<String>,
    /// How often the TLS files are checked for changes and reloaded, in milliseconds; 0 = never
    /// [default: 5000].
    #[arg(long, env = "FERROD_TLS_RELOAD_INTERVAL_MS")]
    pub tls_reload_interval_ms: Option<String>,
    /// Answer HTTP (Infinispan's REST health and cross-site calls) on the HotRod port: true or
    /// false [default: true].
    #[arg(long, env = "FERROD_REST")]
    pub rest: Option<String>,
    /// Credentials file (`ferrod user add` writes it). Setting it turns authentication on:
    /// clients must authenticate (SASL) before any operation but PING [default: none, no auth].
    #[arg(long, env = "FERROD_CREDENTIALS_FILE")]
    pub credentials_file: Option<PathBuf>,
    /// SASL realm offered by DIGEST mechanisms [default: default].
    #[arg(long, env = "FERROD_AUTH_REALM")]
    pub auth_realm: Option<String>,
    /// SASL server name; DIGEST clients must use digest-uri hotrod/<name> [default: infinispan].
    #[arg(long, env = "FERROD_AUTH_SERVER_NAME")]
    pub auth_server_name: Option<String>,
    /// Comma-separated SASL mechanisms to offer [default: all: SCRAM-SHA-512/384/256/1,
    /// DIGEST-SHA-512/384/256, DIGEST-SHA, DIGEST-MD5, PLAIN, EXTERNAL].
    #[arg(long, env = "FERROD_AUTH_MECHANISMS")]
    pub auth_mechanisms: Option<String>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Manage the users of the credentials file.
    User {
        #[command(subcommand)]
        action: UserCommand,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum UserCommand {
    /// Add a user, or replace its password and roles.
    Add {
        name: String,
        /// The password; read from the first line of standard input when omitted.
        #[arg(long)]
        password: Option<String>,
        /// Roles: admin, deployer, application, observer, monitor (comma-separated).
        #[arg(long, value_delimiter = ',')]
        roles: Vec<String>,
        /// Credentials file [default: the configured credentials_file].
        #[arg(long)]
        file: Option<PathBuf>,
        /// Realm the DIGEST hashes are bound to [default: the configured auth_realm].
        #[arg(long)]
        realm: Option<String>,
        /// SCRAM iteration count, 4096..=32768 [default: 4096].
        #[arg(long)]
        iterations: Option<u32>,
    },
    /// Remove a user.
    Remove {
        name: String,
        /// Credentials file [default: the configured credentials_file].
        #[arg(long)]
        file: Option<PathBuf>,
    },
    /// List users and their roles.
    List {
        /// Credentials file [default: the configured credentials_file].
        #[arg(long)]
        file: Option<PathBuf>,
    },
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    database_url: Option<String>,
    database_busy_timeout_ms: Option<u64>,
    max_value_bytes: Option<u64>,
    max_key_bytes: Option<u64>,
    max_frame_bytes: Option<u64>,
    idle_timeout_s: Option<u64>,
    max_iterations_per_connection: Option<u64>,
    max_connections: Option<u64>,
    max_inflight_per_connection: Option<u64>,
    max_listener_queue: Option<u64>,
    writer_lanes: Option<u64>,
    reaper_interval_ms: Option<u64>,
    max_batch_ops: Option<u64>,
    log: Option<String>,
    tls_mode: Option<String>,
    tls_certificate: Option<PathBuf>,
    tls_private_key: Option<PathBuf>,
    #[serde(default)]
    tls_sni: Vec<FileSni>,
    tls_client_auth: Option<String>,
    tls_client_ca: Option<PathBuf>,
    tls_reload_interval_ms: Option<u64>,
    rest: Option<bool>,
    credentials_file: Option<PathBuf>,
    auth_realm: Option<String>,
    auth_server_name: Option<String>,
    auth_mechanisms: Option<Vec<String>>,
    #[serde(default, rename = "cache")]
    caches: Vec<FileCache>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSni {
    host_names: Vec<String>,
    certificate: PathBuf,
    private_key: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileCache {
    name: String,
    key_media_type: Option<String>,
    value_media_type: Option<String>,
    lifespan_ms: Option<i64>,
    max_idle_ms: Option<i64>,
    /// With authentication on: only these roles may use the cache.
    roles: Option<Vec<String>>,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub database_url: String,
    pub database_busy_timeout: Duration,
    pub max_value_bytes: usize,
    pub max_key_bytes: usize,
    /// Longest request frame the connection's decoder buffers before it gives up.
    pub max_frame_bytes: usize,
    /// `None`: connections are never closed for being idle.
    pub idle_timeout: Option<Duration>,
    pub max_iterations_per_connection: usize,
    pub max_connections: usize,
    pub max_inflight_per_connection: usize,
    pub max_listener_queue: usize,
    pub writer_lanes: usize,
    pub reaper_interval: Duration,
    pub max_batch_ops: usize,
    pub log: String,
    pub caches: Vec<CacheDef>,
    /// `None` when TLS is off.
    pub tls: Option<TlsSettings>,
    /// Whether HTTP requests on the port are served (REST health and cross-site endpoints).
    pub rest: bool,
    /// Set = authentication on (see `auth`).
    pub credentials_file: Option<PathBuf>,
    pub auth_realm: String,
    pub auth_server_name: String,
    /// `None` = every mechanism.
    pub auth_mechanisms: Option<Vec<String>>,
    /// Per-cache role restrictions (`[[cache]] roles = [...]`).
    pub cache_roles: HashMap<String, Vec<Role>>,
}

#[derive(Debug, thiserror::Error)]
#[error("configuration error: {key}: {problem}")]
pub struct ConfigError {
    pub key: String,
    pub problem: String,
}

fn err(key: &str, problem: impl Into<String>) -> ConfigError {
    ConfigError {
        key: key.to_string(),
        problem: problem.into(),
    }
}

/// A numeric setting from flag/env (a string, so the error can name the key) or the file.
fn number(
    key: &str,
    cli: &Option<String>,
    file: Option<u64>,
    default: u64,
    min: u64,
) -> Result<u64, ConfigError> {
    let v = match cli {
        Some(s) => s
            .trim()
            .parse::<u64>()
            .map_err(|_| err(key, format!("'{s}' is not a non-negative integer")))?,
        None => file.unwrap_or(default),
    };
    if v < min {
        return Err(err(key, format!("{v} is below the minimum of {min}")));
    }
    Ok(v)
}

pub fn media_type_is_known(name: &str) -> bool {
    let n = name.trim();
    // type/subtype with non-empty parts; parameters are not part of a cache's storage type.
    let mut parts = n.splitn(2, '/');
    matches!((parts.next(), parts.next()), (Some(a), Some(b)) if !a.is_empty() && !b.is_empty() && !b.contains('/') && !n.contains(char::is_whitespace))
}

fn cache_role_restriction(c: &FileCache, index: usize) -> Result<Option<Vec<Role>>, ConfigError> {
    match &c.roles {
        None => Ok(None),
        Some(list) => crate::auth::users::parse_roles(&list.join(","))
            .map(Some)
            .map_err(|e| err(&format!("cache[{index}].roles"), e)),
    }
}

fn cache_def(c: FileCache, index: usize) -> Result<CacheDef, ConfigError> {
    let key = |field: &str| format!("cache[{index}].{field}");
    if c.name.is_empty() {
        return Err(err(
            &key("name"),
            "must not be empty (the default cache is built in)",
        ));
    }
    let media = |field: &str, v: Option<String>| -> Result<String, ConfigError> {
        let v = v.unwrap_or_else(|| ferrod_codec::media::APPLICATION_UNKNOWN.to_string());
        if !media_type_is_known(&v) {
            return Err(err(
                &key(field),
                format!("'{v}' is not a media type (type/subtype)"),
            ));
        }
        Ok(v)
    };
    let duration = |field: &str, v: Option<i64>| -> Result<i64, ConfigError> {
        match v {
            None => Ok(-1),
            Some(ms) if ms > 0 || ms == -1 => Ok(ms),
            Some(ms) => Err(err(
                &key(field),
                format!("{ms} must be a positive number of milliseconds or -1 for none"),
            )),
        }
    };
    Ok(CacheDef {
        key_media_type: media("key_media_type", c.key_media_type)?,
        value_media_type: media("value_media_type", c.value_media_type)?,
        default_lifespan_ms: duration("lifespan_ms", c.lifespan_ms)?,
        default_max_idle_ms: duration("max_idle_ms", c.max_idle_ms)?,
        configuration: String::new(),
        name: c.name,
    })
}

/// The caches that exist out of the box: the default cache (empty cache name) and the protobuf
/// schema cache, which Infinispan declares with Java-object storage (so its PING announces
/// `application/x-java-object`, which the Java client expects for it).
pub fn builtin_caches() -> Vec<CacheDef> {
    vec![
        CacheDef {
            name: DEFAULT_CACHE_NAME.to_string(),
            key_media_type: ferrod_codec::media::APPLICATION_UNKNOWN.to_string(),
            value_media_type: ferrod_codec::media::APPLICATION_UNKNOWN.to_string(),
            default_lifespan_ms: -1,
            default_max_idle_ms: -1,
            configuration: String::new(),
        },
        CacheDef {
            name: ferrod_query::schema::PROTOBUF_METADATA_CACHE_NAME.to_string(),
            key_media_type: ferrod_codec::media::APPLICATION_OBJECT.to_string(),
            value_media_type: ferrod_codec::media::APPLICATION_OBJECT.to_string(),
            default_lifespan_ms: -1,
            default_max_idle_ms: -1,
            configuration: String::new(),
        },
    ]
}

impl Config {
    pub fn load(cli: &Cli) -> Result<Config, ConfigError> {
        let mut file = match &cli.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let tls = tls_settings(cli, &mut file)?;
        let listen_s = cli
            .listen
            .clone()
            .or(file.listen)
            .unwrap_or_else(|| "127.0.0.1:11222".to_string());
        let listen = listen_s.parse::<SocketAddr>().map_err(|e| {
            err(
                "listen",
                format!("'{listen_s}' is not a host:port socket address ({e})"),
            )
        })?;
        let database_url = cli
            .database_url
            .clone()
            .or(file.database_url)
            .unwrap_or_else(|| "sqlite://./data/ferrod.db".to_string());
        if !(database_url.starts_with("sqlite:")
            || database_url.starts_with("postgres://")
            || database_url.starts_with("postgresql://"))
        {
            return Err(err(
                "database_url",
                format!("'{database_url}' must start with sqlite:, postgres:// or postgresql://"),
            ));
        }
        let busy_timeout = number(
            "database_busy_timeout_ms",
            &cli.database_busy_timeout_ms,
            file.database_busy_timeout_ms,
            10_000,
            1,
        )?;
        let max_value_bytes = number(
            "max_value_bytes",
            &cli.max_value_bytes,
            file.max_value_bytes,
            64 * 1024 * 1024,
            1,
        )?;
        if max_value_bytes > 1 << 30 {
            return Err(err(
                "max_value_bytes",
                format!("{max_value_bytes} exceeds the hard limit of 1 GiB"),
            ));
        }
        let max_key_bytes = number(
            "max_key_bytes",
            &cli.max_key_bytes,
            file.max_key_bytes,
            64 * 1024,
            1,
        )?;
        if max_key_bytes > 1 << 30 {
            return Err(err(
                "max_key_bytes",
                format!("{max_key_bytes} exceeds the hard limit of 1 GiB"),
            ));
        }
        let max_frame_bytes = number(
            "max_frame_bytes",
            &cli.max_frame_bytes,
            file.max_frame_bytes,
            max_value_bytes + max_key_bytes + 64 * 1024,
            1024,
        )?;
        if max_frame_bytes > 3 << 30 {
            return Err(err(
                "max_frame_bytes",
                format!("{max_frame_bytes} exceeds the hard limit of 3 GiB"),
            ));
        }
        let idle_timeout_s = number(
            "idle_timeout_s",
            &cli.idle_timeout_s,
            file.idle_timeout_s,
            // Never by default, as Infinispan: Keycloak's pooled connections may rest for long,
            // and a close racing with the next request costs that request a retry.
            0,
            0,
        )?;
        let max_iterations = number(
            "max_iterations_per_connection",
            &cli.max_iterations_per_connection,
            file.max_iterations_per_connection,
            64,
            1,
        )?;
        let max_connections = number(
            "max_connections",
            &cli.max_connections,
            file.max_connections,
            10_000,
            1,
        )?;
        let max_inflight = number(
            "max_inflight_per_connection",
            &cli.max_inflight_per_connection,
            file.max_inflight_per_connection,
            256,
            1,
        )?;
        let max_listener_queue = number(
            "max_listener_queue",
            &cli.max_listener_queue,
            file.max_listener_queue,
            10_000,
            1,
        )?;
        let writer_lanes = number("writer_lanes", &cli.writer_lanes, file.writer_lanes, 1, 1)?;
        if writer_lanes > 64 {
            return Err(err(
                "writer_lanes",
                format!("{writer_lanes} exceeds the maximum of 64"),
            ));
        }
        let reaper = number(
            "reaper_interval_ms",
            &cli.reaper_interval_ms,
            file.reaper_interval_ms,
            1000,
            10,
        )?;
        let max_batch_ops = number(
            "max_batch_ops",
            &cli.max_batch_ops,
            file.max_batch_ops,
            512,
            1,
        )?;
        let log = cli
            .log
            .clone()
            .or(file.log)
            .unwrap_or_else(|| DEFAULT_LOG_FILTER.to_string());

        let rest = match &cli.rest {
            Some(s) => match s.trim().to_ascii_lowercase().as_str() {
                "true" | "on" | "yes" | "1" => true,
                "false" | "off" | "no" | "0" => false,
                _ => return Err(err("rest", format!("'{s}' is not true or false"))),
            },
            None => file.rest.unwrap_or(true),
        };

        let mut caches = builtin_caches();
        let mut cache_roles = HashMap::new();
        for (i, c) in file.caches.into_iter().enumerate() {
            if let Some(roles) = cache_role_restriction(&c, i)? {
                cache_roles.insert(c.name.clone(), roles);
            }
            let def = cache_def(c, i)?;
            if caches.iter().any(|d| d.name == def.name) {
                return Err(err(
                    &format!("cache[{i}].name"),
                    format!("cache '{}' is declared twice", def.name),
                ));
            }
            caches.push(def);
        }
        let credentials_file = cli.credentials_file.clone().or(file.credentials_file);
        let auth_realm = cli
            .auth_realm
            .clone()
            .or(file.auth_realm)
            .unwrap_or_else(|| "default".to_string());
        if auth_realm.is_empty() || auth_realm.contains(|c: char| c.is_whitespace() || c == '"') {
            return Err(err(
                "auth_realm",
                format!("'{auth_realm}' must be non-empty, without whitespace or '\"'"),
            ));
        }
        let auth_server_name = cli
            .auth_server_name
            .clone()
            .or(file.auth_server_name)
            .unwrap_or_else(|| "infinispan".to_string());
        let auth_mechanisms = match &cli.auth_mechanisms {
            Some(s) => Some(
                s.split(',')
                    .map(|m| m.trim().to_string())
                    .filter(|m| !m.is_empty())
                    .collect::<Vec<_>>(),
            ),
            None => file.auth_mechanisms,
        };
        if let Some(list) = &auth_mechanisms {
            if list.is_empty() {
                return Err(err("auth_mechanisms", "the list is empty"));
            }
            if let Some(bad) = list
                .iter()
                .find(|m| !crate::auth::MECHANISMS.contains(&m.as_str()))
            {
                return Err(err(
                    "auth_mechanisms",
                    format!(
                        "unknown SASL mechanism '{bad}' (known: {})",
                        crate::auth::MECHANISMS.join(", ")
                    ),
                ));
            }
        }
        Ok(Config {
            listen,
            database_url,
            database_busy_timeout: Duration::from_millis(busy_timeout),
            max_value_bytes: max_value_bytes as usize,
            max_key_bytes: max_key_bytes as usize,
            max_frame_bytes: max_frame_bytes as usize,
            idle_timeout: (idle_timeout_s > 0).then(|| Duration::from_secs(idle_timeout_s)),
            max_iterations_per_connection: max_iterations as usize,
            max_connections: max_connections as usize,
            max_inflight_per_connection: max_inflight as usize,
            max_listener_queue: max_listener_queue as usize,
            writer_lanes: writer_lanes as usize,
            reaper_interval: Duration::from_millis(reaper),
            max_batch_ops: max_batch_ops as usize,
            log,
            caches,
            tls,
            rest,
            credentials_file,
            auth_realm,
            auth_server_name,
            auth_mechanisms,
            cache_roles,
        })
    }
}

/// `HOST[|HOST...]=CERT,KEY;...` from a flag or environment variable.
fn parse_sni_flag(s: &str) -> Result<Vec<SniEntry>, ConfigError> {
    let mut entries = Vec::new();
    for (i, part) in s
        .split(';')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .enumerate()
    {
        let bad = || {
            err(
                "tls_sni",
                format!("entry {i} '{part}' is not HOST[|HOST...]=CERTIFICATE,PRIVATE_KEY"),
            )
        };
        let (hosts, files) = part.split_once('=').ok_or_else(bad)?;
        let (cert, key) = files.split_once(',').ok_or_else(bad)?;
        let host_names: Vec<String> = hosts
            .split('|')
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .collect();
        if host_names.is_empty() || cert.trim().is_empty() || key.trim().is_empty() {
            return Err(bad());
        }
        entries.push(SniEntry {
            host_names,
            certificate: PathBuf::from(cert.trim()),
            private_key: PathBuf::from(key.trim()),
        });
    }
    Ok(entries)
}

fn tls_settings(cli: &Cli, file: &mut FileConfig) -> Result<Option<TlsSettings>, ConfigError> {
    let certificate = cli
        .tls_certificate
        .clone()
        .map(PathBuf::from)
        .or(file.tls_certificate.take());
    let private_key = cli
        .tls_private_key
        .clone()
        .map(PathBuf::from)
        .or(file.tls_private_key.take());
    let mode = match cli.tls_mode.clone().or(file.tls_mode.take()) {
        Some(s) => TlsMode::parse(&s).ok_or_else(|| {
            err(
                "tls_mode",
                format!("'{s}' is not one of off, required, optional"),
            )
        })?,
        None if certificate.is_some() => TlsMode::Required,
        None => TlsMode::Off,
    };
    if mode == TlsMode::Off {
        return Ok(None);
    }
    let certificate = certificate.ok_or_else(|| {
        err(
            "tls_certificate",
            format!("required when tls_mode is {mode:?}"),
        )
    })?;
    let private_key = private_key.ok_or_else(|| {
        err(
            "tls_private_key",
            "required when a TLS certificate is configured",
        )
    })?;
    let sni = match &cli.tls_sni {
        Some(s) => parse_sni_flag(s)?,
        None => {
            let mut v = Vec::new();
            for (i, e) in std::mem::take(&mut file.tls_sni).into_iter().enumerate() {
                if e.host_names.iter().all(|h| h.trim().is_empty()) {
                    return Err(err(
                        &format!("tls_sni[{i}].host_names"),
                        "must name at least one host",
                    ));
                }
                v.push(SniEntry {
                    host_names: e.host_names,
                    certificate: e.certificate,
                    private_key: e.private_key,
                });
            }
            v
        }
    };
    let client_auth = match cli.tls_client_auth.clone().or(file.tls_client_auth.take()) {
        Some(s) => ClientAuth::parse(&s).ok_or_else(|| {
            err(
                "tls_client_auth",
                format!("'{s}' is not one of none, optional, required"),
            )
        })?,
        None => ClientAuth::None,
    };
    let client_ca = cli
        .tls_client_ca
        .clone()
        .map(PathBuf::from)
        .or(file.tls_client_ca.take());
    let reload = number(
        "tls_reload_interval_ms",
        &cli.tls_reload_interval_ms,
        file.tls_reload_interval_ms,
        5000,
        0,
    )?;
    let settings = TlsSettings {
        mode,
        certificate,
        private_key,
        sni,
        client_auth,
        client_ca,
        reload_interval: Duration::from_millis(reload),
    };
    // Load every file now: a certificate that cannot be used stops startup naming its key.
    crate::tls::build_server_config(&settings).map_err(|e| err(&e.key, e.problem))?;
    Ok(Some(settings))
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| err("config", format!("cannot read {}: {e}", path.display())))?;
    toml::from_str(&text).map_err(|e| err("config", format!("{}: {}", path.display(), e.message())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(args: &[&str]) -> Cli {
        let mut v = vec!["ferrod"];
        v.extend_from_slice(args);
        Cli::try_parse_from(v).unwrap()
    }

    #[test]
    fn defaults_are_the_embedded_setup() {
        let c = Config::load(&cli(&[])).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:11222");
        assert!(c.database_url.starts_with("sqlite:"));
        assert_eq!(c.max_value_bytes, 64 * 1024 * 1024);
        assert_eq!(c.database_busy_timeout, Duration::from_secs(10));
        let c = Config::load(&cli(&["--database-busy-timeout-ms", "250"])).unwrap();
        assert_eq!(c.database_busy_timeout, Duration::from_millis(250));
        assert_eq!(c.caches[0].name, DEFAULT_CACHE_NAME);
        assert_eq!(c.max_key_bytes, 64 * 1024);
        assert_eq!(c.max_frame_bytes, 64 * 1024 * 1024 + 2 * 64 * 1024);
        assert_eq!(c.idle_timeout, None);
        assert_eq!(c.max_iterations_per_connection, 64);
        assert_eq!(c.log, "info,rustls=error");
        let c = Config::load(&cli(&["--log", "debug"])).unwrap();
        assert_eq!(c.log, "debug");
    }

    #[test]
    fn limits_from_flags_and_file() {
        // The frame limit follows the value and key limits unless set.
        let c = Config::load(&cli(&[
            "--max-value-bytes",
            "1000",
            "--max-key-bytes",
            "100",
        ]))
        .unwrap();
        assert_eq!(c.max_frame_bytes, 1000 + 100 + 64 * 1024);
        let c = Config::load(&cli(&["--idle-timeout-s", "30"])).unwrap();
        assert_eq!(c.idle_timeout, Some(Duration::from_secs(30)));
        let c = Config::load(&cli(&[
            "--idle-timeout-s",
            "0",
            "--max-frame-bytes",
            "4096",
        ]))
        .unwrap();
        assert_eq!(c.idle_timeout, None);
        assert_eq!(c.max_frame_bytes, 4096);
        let e = Config::load(&cli(&["--max-frame-bytes", "100"])).unwrap_err();
        assert_eq!(e.key, "max_frame_bytes");
        let e = Config::load(&cli(&["--max-iterations-per-connection", "0"])).unwrap_err();
        assert_eq!(e.key, "max_iterations_per_connection");
        let e = Config::load(&cli(&["--max-key-bytes", "x"])).unwrap_err();
        assert_eq!(e.key, "max_key_bytes");
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.toml");
        std::fs::write(
            &p,
            "max_key_bytes = 10\nidle_timeout_s = 5\nmax_iterations_per_connection = 3\nmax_frame_bytes = 2048\n",
        )
        .unwrap();
        let c = Config::load(&cli(&["--config", p.to_str().unwrap()])).unwrap();
        assert_eq!(c.max_key_bytes, 10);
        assert_eq!(c.idle_timeout, Some(Duration::from_secs(5)));
        assert_eq!(c.max_iterations_per_connection, 3);
        assert_eq!(c.max_frame_bytes, 2048);
    }

    #[test]
    fn bad_values_name_their_key() {
        let e = Config::load(&cli(&["--listen", "nowhere"])).unwrap_err();
        assert_eq!(e.key, "listen");
        let e = Config::load(&cli(&["--max-connections=-3"])).unwrap_err();
        assert_eq!(e.key, "max_connections");
        let e = Config::load(&cli(&["--database-url", "mysql://x"])).unwrap_err();
        assert_eq!(e.key, "database_url");
    }

    #[test]
    fn sni_flag_entries() {
        let e = parse_sni_flag(
            "a.example.com|*.b.example.com=/c.pem,/k.pem; x.example.com = /x.pem , /y.pem ;",
        )
        .unwrap();
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].host_names, vec!["a.example.com", "*.b.example.com"]);
        assert_eq!(e[0].certificate, PathBuf::from("/c.pem"));
        assert_eq!(e[1].host_names, vec!["x.example.com"]);
        assert_eq!(e[1].private_key, PathBuf::from("/y.pem"));
        for bad in ["nohost", "=a,b", "h=a", "h=,b", "h=a,"] {
            assert_eq!(parse_sni_flag(bad).unwrap_err().key, "tls_sni", "{bad}");
        }
    }

    #[test]
    fn tls_is_off_and_rest_on_by_default() {
        let c = Config::load(&cli(&[])).unwrap();
        assert!(c.tls.is_none());
        assert!(c.rest);
        let c = Config::load(&cli(&["--tls-mode", "off", "--rest", "false"])).unwrap();
        assert!(c.tls.is_none());
        assert!(!c.rest);
    }

    #[test]
    fn file_caches_and_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.toml");
        std::fs::write(&p, "[[cache]]\nname = \"proto\"\nkey_media_type = \"application/x-protostream\"\nlifespan_ms = 2000\n").unwrap();
        let c = Config::load(&cli(&["--config", p.to_str().unwrap()])).unwrap();
        let proto = c.caches.iter().find(|d| d.name == "proto").unwrap();
        assert_eq!(proto.default_lifespan_ms, 2000);
        std::fs::write(
            &p,
            "[[cache]]\nname = \"x\"\nkey_media_type = \"nonsense\"\n",
        )
        .unwrap();
        let e = Config::load(&cli(&["--config", p.to_str().unwrap()])).unwrap_err();
        assert_eq!(e.key, "cache[0].key_media_type");
        std::fs::write(
            &p,
            "[[cache]]\nname = \"x\"\nroles = [\"admin\", \"wizard\"]\n",
        )
        .unwrap();
        let e = Config::load(&cli(&["--config", p.to_str().unwrap()])).unwrap_err();
        assert_eq!(e.key, "cache[0].roles");
        assert!(e.problem.contains("wizard"), "{}", e.problem);
        std::fs::write(&p, "auth_mechanisms = [\"SCRAM-SHA-512\", \"CRAM-MD5\"]\n").unwrap();
        let e = Config::load(&cli(&["--config", p.to_str().unwrap()])).unwrap_err();
        assert_eq!(e.key, "auth_mechanisms");
        assert!(e.problem.contains("CRAM-MD5"), "{}", e.problem);
        let c = Config::load(&cli(&["--auth-mechanisms", "PLAIN, SCRAM-SHA-256"])).unwrap();
        assert_eq!(
            c.auth_mechanisms,
            Some(vec!["PLAIN".to_string(), "SCRAM-SHA-256".to_string()])
        );
        assert!(
            c.credentials_file.is_none(),
            "authentication is off by default"
        );
        std::fs::write(&p, "lisen = \"1.2.3.4:5\"\n").unwrap();
        let e = Config::load(&cli(&["--config", p.to_str().unwrap()])).unwrap_err();
        assert!(e.problem.contains("lisen"), "{}", e.problem);
    }
}
