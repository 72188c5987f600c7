//! Schema migrations.
//!
//! Our own numbered list instead of `sqlx::migrate!`: we need two dialects side by side and a
//! lock that makes five processes starting at the same instant on an empty database safe
//! (PostgreSQL `CREATE TABLE IF NOT EXISTS` is not safe under concurrency on its own, it can fail
//! with a unique violation on the catalog). Every migration runs inside the same transaction as
//! the bookkeeping row that records it, so a crash mid-migration leaves nothing half-applied.

use sqlx::{Connection, Row as _};

use super::Backend;
use crate::{now_ms, StoreError};

pub(crate) struct Migration {
    pub version: i64,
    pub description: &'static str,
    pub sqlite: &'static str,
    pub postgres: &'static str,
}

/// Append only. Never edit a released migration: add a new one.
pub(crate) const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "caches, entries, meta, change log",
        sqlite: r#"
CREATE TABLE ferrod_caches (
    name TEXT PRIMARY KEY NOT NULL,
    key_media_type TEXT NOT NULL,
    value_media_type TEXT NOT NULL,
    default_lifespan_ms INTEGER NOT NULL,
    default_max_idle_ms INTEGER NOT NULL,
    configuration TEXT NOT NULL,
    created_ms INTEGER NOT NULL
);
CREATE TABLE ferrod_entries (
    cache TEXT NOT NULL,
    key BLOB NOT NULL,
    value BLOB NOT NULL,
    version INTEGER NOT NULL,
    created_ms INTEGER NOT NULL,
    lifespan_ms INTEGER NOT NULL,
    last_used_ms INTEGER NOT NULL,
    max_idle_ms INTEGER NOT NULL,
    expires_ms INTEGER,
    PRIMARY KEY (cache, key)
);
CREATE INDEX ferrod_entries_expires ON ferrod_entries (expires_ms) WHERE expires_ms IS NOT NULL;
CREATE TABLE ferrod_meta (
    name TEXT PRIMARY KEY NOT NULL,
    value INTEGER NOT NULL
);
INSERT INTO ferrod_meta (name, value) VALUES ('version_seq', 0);
CREATE TABLE ferrod_changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    cache TEXT NOT NULL,
    key BLOB,
    kind TEXT NOT NULL CHECK (kind IN ('put', 'remove', 'expired', 'clear')),
    version INTEGER,
    committed_ms INTEGER NOT NULL
);
CREATE INDEX ferrod_changes_committed ON ferrod_changes (committed_ms);
"#,
        postgres: r#"
CREATE TABLE ferrod_caches (
    name TEXT PRIMARY KEY,
    key_media_type TEXT NOT NULL,
    value_media_type TEXT NOT NULL,
    default_lifespan_ms BIGINT NOT NULL,
    default_max_idle_ms BIGINT NOT NULL,
    configuration TEXT NOT NULL,
    created_ms BIGINT NOT NULL
);
CREATE TABLE ferrod_entries (
    cache TEXT NOT NULL,
    key BYTEA NOT NULL,
    value BYTEA NOT NULL,
    version BIGINT NOT NULL,
    created_ms BIGINT NOT NULL,
    lifespan_ms BIGINT NOT NULL,
    last_used_ms BIGINT NOT NULL,
    max_idle_ms BIGINT NOT NULL,
    expires_ms BIGINT,
    PRIMARY KEY (cache, key)
);
CREATE INDEX ferrod_entries_expires ON ferrod_entries (expires_ms) WHERE expires_ms IS NOT NULL;
CREATE TABLE ferrod_meta (
    name TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);
CREATE SEQUENCE ferrod_version_seq AS BIGINT START WITH 1 MINVALUE 1;
CREATE TABLE ferrod_changes (
    seq BIGSERIAL PRIMARY KEY,
    cache TEXT NOT NULL,
    key BYTEA,
    kind TEXT NOT NULL CHECK (kind IN ('put', 'remove', 'expired', 'clear')),
    version BIGINT,
    committed_ms BIGINT NOT NULL
);
CREATE INDEX ferrod_changes_committed ON ferrod_changes (committed_ms);
"#,
    },
    Migration {
        version: 2,
        description: "change feed: event kinds, origin, previous version, expired value; leases",
        // Kinds are no longer constrained in SQL: a reader skips (and logs) a kind it does not know,
        // which also keeps rows of a newer ferrod readable during a rolling upgrade. SQLite cannot
        // drop a CHECK, so the table is rebuilt (keeping seqs).
        sqlite: r#"
CREATE TABLE ferrod_changes_v2 (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    cache TEXT NOT NULL,
    key BLOB,
    kind TEXT NOT NULL,
    version INTEGER,
    committed_ms INTEGER NOT NULL,
    origin TEXT,
    prev_version INTEGER,
    value BLOB
);
INSERT INTO ferrod_changes_v2 (seq, cache, key, kind, version, committed_ms)
    SELECT seq, cache, key, kind, version, committed_ms FROM ferrod_changes;
DROP TABLE ferrod_changes;
ALTER TABLE ferrod_changes_v2 RENAME TO ferrod_changes;
CREATE INDEX ferrod_changes_committed ON ferrod_changes (committed_ms);
CREATE TABLE ferrod_leases (
    name TEXT PRIMARY KEY NOT NULL,
    holder TEXT NOT NULL,
    expires_ms INTEGER NOT NULL
);
INSERT INTO ferrod_leases (name, holder, expires_ms) VALUES ('expiration', '', 0);
INSERT INTO ferrod_meta (name, value) VALUES ('changes_pruned_through', 0);
"#,
        postgres: r#"
ALTER TABLE ferrod_changes DROP CONSTRAINT IF EXISTS ferrod_changes_kind_check;
ALTER TABLE ferrod_changes
    ADD COLUMN origin TEXT,
    ADD COLUMN prev_version BIGINT,
    ADD COLUMN value BYTEA;
CREATE TABLE ferrod_leases (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    expires_ms BIGINT NOT NULL
);
INSERT INTO ferrod_leases (name, holder, expires_ms) VALUES ('expiration', '', 0);
INSERT INTO ferrod_meta (name, value) VALUES ('changes_pruned_through', 0);
"#,
    },
    Migration {
        version: 3,
        description: "change feed: per-change listener notification flag",
        // False for writes that asked not to raise client-listener events (HotRod
        // SKIP_LISTENER_NOTIFICATION): followers apply them to memory and publish nothing.
        sqlite: r#"
ALTER TABLE ferrod_changes ADD COLUMN notify BOOLEAN NOT NULL DEFAULT TRUE;
"#,
        postgres: r#"
ALTER TABLE ferrod_changes ADD COLUMN notify BOOLEAN NOT NULL DEFAULT TRUE;
"#,
    },
    Migration {
        version: 4,
        description: "entries: long keys (PostgreSQL stores a hash in the key column)",
        // A PostgreSQL btree row holds at most 2704 bytes, so the primary key (cache, key)
        // cannot take a long key: such a key is stored as a tag and its SHA-256 in `key` and
        // in full in `long_key` (see db::PG_INLINE_KEY_MAX). Additive: a ferrod from before
        // this column reads and writes every other key exactly as before, so both run side by
        // side during an upgrade (the older one cannot store long keys, as before, and sees a
        // long key's row under its stored form). SQLite stores every key as is; the column is
        // added there too so both schemas have the same tables.
        sqlite: r#"
ALTER TABLE ferrod_entries ADD COLUMN long_key BLOB;
"#,
        postgres: r#"
ALTER TABLE ferrod_entries ADD COLUMN long_key BYTEA;
"#,
    },
];

/// Arbitrary constant naming ferrod's migration lock among other applications' advisory locks.
const PG_MIGRATION_LOCK: i64 = 0x6665_7272_6f64_0001;

const CREATE_BOOKKEEPING_SQLITE: &str = "CREATE TABLE IF NOT EXISTS ferrod_schema_migrations (
    version INTEGER PRIMARY KEY NOT NULL, description TEXT NOT NULL, applied_ms INTEGER NOT NULL)";
const CREATE_BOOKKEEPING_PG: &str = "CREATE TABLE IF NOT EXISTS ferrod_schema_migrations (
    version BIGINT PRIMARY KEY, description TEXT NOT NULL, applied_ms BIGINT NOT NULL)";

pub(crate) async fn run(backend: &Backend) -> Result<(), StoreError> {
    match backend {
        Backend::Sqlite(pool) => {
            let mut conn = pool.acquire().await?;
            // BEGIN IMMEDIATE takes the database's write lock up front, so concurrent starters
            // queue on busy_timeout instead of racing to create the same tables.
            let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
            sqlx::query(CREATE_BOOKKEEPING_SQLITE)
                .execute(&mut *tx)
                .await?;
            let applied: Vec<i64> =
                sqlx::query("SELECT version FROM ferrod_schema_migrations ORDER BY version")
                    .fetch_all(&mut *tx)
                    .await?
                    .iter()
                    .map(|r| r.get::<i64, _>(0))
                    .collect();
            let min_reader: Option<i64> = if applied.is_empty() {
                None
            } else {
                sqlx::query_scalar("SELECT value FROM ferrod_meta WHERE name = 'schema_min_reader'")
                    .fetch_optional(&mut *tx)
                    .await?
            };
            check_known(&applied, min_reader)?;
            for m in MIGRATIONS.iter().filter(|m| !applied.contains(&m.version)) {
                tracing::info!(version = m.version, "applying migration: {}", m.description);
                sqlx::Executor::execute(&mut *tx, sqlx::raw_sql(m.sqlite)).await?;
                sqlx::query(
                    "INSERT INTO ferrod_schema_migrations (version, description, applied_ms) VALUES (?, ?, ?)",
                )
                .bind(m.version)
                .bind(m.description)
                .bind(now_ms())
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
        }
        Backend::Postgres(pool, _) => {
            let mut conn = pool.acquire().await?;
            let mut tx = conn.begin().await?;
            // Transaction-scoped advisory lock: released by COMMIT/ROLLBACK, so no code path can
            // leak it onto a pooled connection.
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(PG_MIGRATION_LOCK)
                .execute(&mut *tx)
                .await?;
            sqlx::query(CREATE_BOOKKEEPING_PG).execute(&mut *tx).await?;
            let applied: Vec<i64> =
                sqlx::query("SELECT version FROM ferrod_schema_migrations ORDER BY version")
                    .fetch_all(&mut *tx)
                    .await?
                    .iter()
                    .map(|r| r.get::<i64, _>(0))
                    .collect();
            let min_reader: Option<i64> = if applied.is_empty() {
                None
            } else {
                sqlx::query_scalar("SELECT value FROM ferrod_meta WHERE name = 'schema_min_reader'")
                    .fetch_optional(&mut *tx)
                    .await?
            };
            check_known(&applied, min_reader)?;
            for m in MIGRATIONS.iter().filter(|m| !applied.contains(&m.version)) {
                tracing::info!(version = m.version, "applying migration: {}", m.description);
                sqlx::Executor::execute(&mut *tx, sqlx::raw_sql(m.postgres)).await?;
                sqlx::query(
                    "INSERT INTO ferrod_schema_migrations (version, description, applied_ms) VALUES ($1, $2, $3)",
                )
                .bind(m.version)
                .bind(m.description)
                .bind(now_ms())
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
        }
    }
    Ok(())
}

/// A database migrated by a newer ferrod is fine as long as the newer migrations were additive:
/// replicas of two versions must run side by side during a rolling upgrade. Migrations are
/// additive by rule (new tables, new columns with defaults, relaxed constraints); one that is not
/// must raise `ferrod_meta.schema_min_reader` to its own version, and binaries whose newest
/// migration is below that refuse to start instead of writing rows the newer version would
/// misread.
fn check_known(applied: &[i64], min_reader: Option<i64>) -> Result<(), StoreError> {
    let latest = MIGRATIONS.iter().map(|m| m.version).max().unwrap_or(0);
    let newest = applied.iter().copied().max().unwrap_or(0);
    if newest <= latest {
        return Ok(());
    }
    match min_reader {
        Some(min) if min > latest => Err(StoreError::Database(format!(
            "database schema version {newest} requires ferrod schema {min} or newer; this ferrod has {latest}"
        ))),
        _ => {
            tracing::warn!(
                "database schema version {newest} is newer than this ferrod's ({latest}); its additions are compatible, continuing"
            );
            Ok(())
        }
    }
}
