//! Configuration: every key can come from the TOML file, an environment variable or a flag
//! (flag > environment > file > default). A bad value stops startup with a message naming the key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use serde::Deserialize;

use ferrod_store::CacheDef;

/// Name the default cache (requests with an empty cache name) is stored under.
pub const DEFAULT_CACHE_NAME: &str = "default";

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
    /// Log filter, e.g. info or ferrod=debug [default: info].
    #[arg(long, env = "FERROD_LOG")]
    pub log: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    database_url: Option<String>,
    database_busy_timeout_ms: Option<u64>,
    max_value_bytes: Option<u64>,
    max_connections: Option<u64>,
    max_inflight_per_connection: Option<u64>,
    max_listener_queue: Option<u64>,
    writer_lanes: Option<u64>,
    reaper_interval_ms: Option<u64>,
    max_batch_ops: Option<u64>,
    log: Option<String>,
    #[serde(default, rename = "cache")]
    caches: Vec<FileCache>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileCache {
    name: String,
    key_media_type: Option<String>,
    value_media_type: Option<String>,
    lifespan_ms: Option<i64>,
    max_idle_ms: Option<i64>,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub database_url: String,
    pub database_busy_timeout: Duration,
    pub max_value_bytes: usize,
    pub max_connections: usize,
    pub max_inflight_per_connection: usize,
    pub max_listener_queue: usize,
    pub writer_lanes: usize,
    pub reaper_interval: Duration,
    pub max_batch_ops: usize,
    pub log: String,
    pub caches: Vec<CacheDef>,
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
        let file = match &cli.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
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
            .unwrap_or_else(|| "info".to_string());

        let mut caches = builtin_caches();
        for (i, c) in file.caches.into_iter().enumerate() {
            let def = cache_def(c, i)?;
            if caches.iter().any(|d| d.name == def.name) {
                return Err(err(
                    &format!("cache[{i}].name"),
                    format!("cache '{}' is declared twice", def.name),
                ));
            }
            caches.push(def);
        }
        Ok(Config {
            listen,
            database_url,
            database_busy_timeout: Duration::from_millis(busy_timeout),
            max_value_bytes: max_value_bytes as usize,
            max_connections: max_connections as usize,
            max_inflight_per_connection: max_inflight as usize,
            max_listener_queue: max_listener_queue as usize,
            writer_lanes: writer_lanes as usize,
            reaper_interval: Duration::from_millis(reaper),
            max_batch_ops: max_batch_ops as usize,
            log,
            caches,
        })
    }
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
        std::fs::write(&p, "lisen = \"1.2.3.4:5\"\n").unwrap();
        let e = Config::load(&cli(&["--config", p.to_str().unwrap()])).unwrap_err();
        assert!(e.problem.contains("lisen"), "{}", e.problem);
    }
}
