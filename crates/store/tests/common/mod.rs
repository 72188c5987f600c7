//! Shared test harness: every backend test runs against SQLite (a fresh temp dir) and, when
//! `FERROD_TEST_PG_URL` is set, against PostgreSQL in a fresh database created for that test
//! (`ferrod_t_<uuid>`, dropped afterwards). The role in the URL needs CREATEDB.
//!
//! Providing PostgreSQL locally (Debian):
//! ```text
//! pg_ctlcluster 15 main start
//! su postgres -c "psql -c \"CREATE ROLE ferrod LOGIN PASSWORD 'ferrod' CREATEDB\""
//! su postgres -c "psql -c 'CREATE DATABASE ferrod_test OWNER ferrod'"
//! FERROD_TEST_PG_URL=postgres://ferrod:ferrod@127.0.0.1:5432/ferrod_test cargo test -p ferrod-store
//! ```
//! Without the variable the PostgreSQL variants print "skipped" and pass.
#![allow(dead_code)]

use std::time::Duration;

use ferrod_store::{CacheDef, StoreConfig};
use sqlx::Connection;

pub enum TestDb {
    Sqlite {
        _dir: tempfile::TempDir,
        url: String,
    },
    Postgres {
        admin_url: String,
        name: String,
        url: String,
    },
}

impl TestDb {
    pub fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().expect("tempdir");
        // A nested path checks that open() creates parent directories.
        let url = format!("sqlite://{}/nested/dir/ferrod.db", dir.path().display());
        TestDb::Sqlite { _dir: dir, url }
    }

    pub async fn postgres() -> Option<TestDb> {
        let admin_url = std::env::var("FERROD_TEST_PG_URL").ok()?;
        let name = format!("ferrod_t_{}", uuid::Uuid::new_v4().simple());
        let mut conn = sqlx::PgConnection::connect(&admin_url)
            .await
            .expect("connect FERROD_TEST_PG_URL");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .expect("create test database");
        conn.close().await.ok();
        let url = replace_db(&admin_url, &name);
        Some(TestDb::Postgres {
            admin_url,
            name,
            url,
        })
    }

    pub fn url(&self) -> &str {
        match self {
            TestDb::Sqlite { url, .. } | TestDb::Postgres { url, .. } => url,
        }
    }

    pub fn is_sqlite(&self) -> bool {
        matches!(self, TestDb::Sqlite { .. })
    }

    pub fn config(&self) -> StoreConfig {
        StoreConfig {
            caches: vec![CacheDef::new("default")],
            ..StoreConfig::new(self.url())
        }
    }

    pub async fn cleanup(self) {
        if let TestDb::Postgres {
            admin_url, name, ..
        } = self
        {
            if let Ok(mut conn) = sqlx::PgConnection::connect(&admin_url).await {
                let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut conn)
                    .await;
            }
        }
    }

    /// `bytes` as a blob literal of this database's SQL.
    pub fn bytes_literal(&self, bytes: &[u8]) -> String {
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        if self.is_sqlite() {
            format!("X'{hex}'")
        } else {
            format!("'\\x{hex}'::bytea")
        }
    }

    /// Counts rows with a raw SQL query (the test's view of what is committed).
    pub async fn count(&self, sql: &str) -> i64 {
        match self {
            TestDb::Sqlite { url, .. } => {
                let mut c = sqlx::SqliteConnection::connect(url).await.expect("connect");
                let n: i64 = sqlx::query_scalar(sql).fetch_one(&mut c).await.expect(sql);
                c.close().await.ok();
                n
            }
            TestDb::Postgres { url, .. } => {
                let mut c = sqlx::PgConnection::connect(url).await.expect("connect");
                let n: i64 = sqlx::query_scalar(sql).fetch_one(&mut c).await.expect(sql);
                c.close().await.ok();
                n
            }
        }
    }

    /// Runs a raw statement (DDL such as triggers) against the test database.
    pub async fn exec(&self, sql: &str) {
        match self {
            TestDb::Sqlite { url, .. } => {
                let mut c = sqlx::SqliteConnection::connect(url).await.expect("connect");
                sqlx::raw_sql(sql).execute(&mut c).await.expect(sql);
                c.close().await.ok();
            }
            TestDb::Postgres { url, .. } => {
                let mut c = sqlx::PgConnection::connect(url).await.expect("connect");
                sqlx::raw_sql(sql).execute(&mut c).await.expect(sql);
                c.close().await.ok();
            }
        }
    }
}

fn replace_db(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    // postgres://user:pw@host:port/db -> keep everything up to the last '/' after the host.
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let base = match base[scheme_end..].find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}

pub async fn sleep_ms(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

/// Runs an `async fn(&TestDb)` on SQLite and, if configured, on PostgreSQL.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let db = $crate::common::TestDb::sqlite();
                super::$name(&db).await;
                db.cleanup().await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let Some(db) = $crate::common::TestDb::postgres().await else {
                    eprintln!("skipped: FERROD_TEST_PG_URL not set");
                    return;
                };
                super::$name(&db).await;
                db.cleanup().await;
            }
        }
    )*};
}
