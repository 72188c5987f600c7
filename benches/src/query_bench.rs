//! `ferrod-query-bench`: Keycloak's Ickle query shapes on the in-memory query index, next to
//! one PostgreSQL `SELECT 1` round trip measured in the same run (the anchor: what a query
//! would cost at the very least if it had to ask the database).
//!
//! Data: 100 000 `RemoteUserSessionEntity` (10 realms, 50 000 users, a broker session on one in
//! ten) and 100 000 `RemoteAuthenticatedClientSessionEntity` (one per user session, 20
//! clients), indexed on the fields Keycloak marks `@Basic`. Each query is parsed, prepared,
//! bound and run every time, as a QUERY request would be.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use ferrod_query::ickle::{self, IndexedFields, Paging, QueryIndex, QueryRows, Value};
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, Value as RValue};
use sqlx::Connection;

const SCHEMA: &str = r#"
syntax = "proto3";
package keycloak;
message RemoteUserSessionEntity {
  string userSessionId = 1; string authMethod = 2; string brokerSessionId = 3; string brokerUserId = 4;
  string ipAddress = 5; int32 lastSessionRefresh = 6; string loginUsername = 7; map<string, string> notes = 8;
  string realmId = 9; bool rememberMe = 10; int32 started = 11; int32 state = 12; string userId = 13;
}
message RemoteAuthenticatedClientSessionEntity {
  string clientId = 1; string userId = 2; string userSessionId = 3; string realmId = 4; map<string, string> notes = 5;
  string action = 6; string protocol = 7; string redirectUri = 8; int32 timestamp = 9; int32 started = 10;
}
"#;

#[derive(Debug, Parser)]
#[command(
    name = "ferrod-query-bench",
    about = "Keycloak Ickle query shapes on ferrod's query index vs a PostgreSQL SELECT 1"
)]
struct Args {
    /// Entities per cache.
    #[arg(long, default_value_t = 100_000)]
    entries: usize,
    /// Measured runs per query shape (after 10% warmup).
    #[arg(long, default_value_t = 2000)]
    iterations: usize,
    /// PostgreSQL for the anchor (empty: skip the anchor).
    #[arg(
        long,
        env = "FERROD_BENCH_PG_URL",
        default_value = "postgres://ferrod:ferrod@127.0.0.1:5432/ferrod_test"
    )]
    pg_url: String,
    /// Print one JSON object per line instead of the table.
    #[arg(long)]
    json: bool,
}

struct Rng(u64);
impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

struct Stat {
    name: String,
    mean_us: f64,
    p50_us: f64,
    p99_us: f64,
    rows: f64,
}

fn summarize(name: &str, mut samples: Vec<Duration>, rows: f64) -> Stat {
    samples.sort();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let mean = samples.iter().map(|d| us(*d)).sum::<f64>() / samples.len() as f64;
    Stat {
        name: name.to_string(),
        mean_us: mean,
        p50_us: us(samples[samples.len() / 2]),
        p99_us: us(samples[(samples.len() * 99 / 100).min(samples.len() - 1)]),
        rows,
    }
}

fn s(v: String) -> RValue {
    RValue::String(v)
}

fn user_session(desc: &MessageDescriptor, n: usize) -> DynamicMessage {
    let mut m = DynamicMessage::new(desc.clone());
    m.set_field_by_name(
        "userSessionId",
        s(format!(
            "{:08x}-session-{n}",
            n.wrapping_mul(2654435761) as u32
        )),
    );
    m.set_field_by_name("realmId", s(format!("realm-{}", n % 10)));
    m.set_field_by_name("userId", s(format!("user-{}", n % 50_000)));
    m.set_field_by_name("brokerUserId", s(format!("broker-user-{}", n % 50_000)));
    if n.is_multiple_of(10) {
        m.set_field_by_name("brokerSessionId", s(format!("broker-session-{n}")));
    }
    m.set_field_by_name("loginUsername", s(format!("login-{}", n % 50_000)));
    m.set_field_by_name("ipAddress", s("10.0.0.1".into()));
    m.set_field_by_name("authMethod", s("openid-connect".into()));
    m.set_field_by_name("started", RValue::I32(1_700_000_000 + n as i32));
    m.set_field_by_name("lastSessionRefresh", RValue::I32(1_700_000_000 + n as i32));
    m
}

fn client_session(desc: &MessageDescriptor, n: usize) -> DynamicMessage {
    let mut m = DynamicMessage::new(desc.clone());
    m.set_field_by_name(
        "userSessionId",
        s(format!(
            "{:08x}-session-{n}",
            n.wrapping_mul(2654435761) as u32
        )),
    );
    m.set_field_by_name("clientId", s(format!("client-{}", n % 20)));
    m.set_field_by_name("realmId", s(format!("realm-{}", n % 10)));
    m.set_field_by_name("userId", s(format!("user-{}", n % 50_000)));
    m.set_field_by_name("protocol", s("openid-connect".into()));
    m.set_field_by_name("redirectUri", s("https://app.example/cb".into()));
    m.set_field_by_name("timestamp", RValue::I32(1_700_000_000 + n as i32));
    m
}

fn indexed(entity: &str, fields: &[&str]) -> IndexedFields {
    [(
        entity.to_string(),
        fields.iter().map(|f| f.to_string()).collect::<HashSet<_>>(),
    )]
    .into_iter()
    .collect()
}

type ParamGen = Box<dyn FnMut(&mut Rng) -> HashMap<String, Value>>;

fn sv(v: String) -> Value {
    Value::String(v)
}

fn measure(
    name: &str,
    index: &QueryIndex<()>,
    pool: &DescriptorPool,
    query: &str,
    paging: Paging,
    mut params: ParamGen,
    iterations: usize,
) -> Stat {
    let resolver = |n: &str| pool.get_message_by_name(n);
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut samples = Vec::with_capacity(iterations);
    let mut rows_total = 0usize;
    for i in 0..iterations + iterations / 10 {
        let p = params(&mut rng);
        let start = Instant::now();
        let bound = ickle::prepare(query, &resolver)
            .and_then(|q| q.bind(&p))
            .expect("bench query is valid");
        let out = index.execute(&bound, paging);
        let rows = match &out.rows {
            QueryRows::Entities(r) => r.len(),
            QueryRows::Projections(r) => r.len(),
        };
        let elapsed = start.elapsed();
        std::hint::black_box(&out);
        if i >= iterations / 10 {
            samples.push(elapsed);
            rows_total += rows;
        }
    }
    summarize(name, samples, rows_total as f64 / iterations as f64)
}

async fn pg_anchor(url: &str, iterations: usize) -> Result<Stat, String> {
    let mut conn = sqlx::PgConnection::connect(url)
        .await
        .map_err(|e| e.to_string())?;
    let mut samples = Vec::with_capacity(iterations);
    for i in 0..iterations + iterations / 10 {
        let start = Instant::now();
        let _: (i32,) = sqlx::query_as("SELECT 1")
            .fetch_one(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
        if i >= iterations / 10 {
            samples.push(start.elapsed());
        }
    }
    Ok(summarize(
        "PostgreSQL SELECT 1 round trip (anchor)",
        samples,
        1.0,
    ))
}

fn main() {
    let args = Args::parse();
    let pool = ickle::testing::pool_from_source("keycloak.proto", SCHEMA).expect("schema compiles");
    let us_desc = pool
        .get_message_by_name("keycloak.RemoteUserSessionEntity")
        .unwrap();
    let cs_desc = pool
        .get_message_by_name("keycloak.RemoteAuthenticatedClientSessionEntity")
        .unwrap();
    let n = args.entries;

    let us_fields = [
        "userSessionId",
        "brokerSessionId",
        "brokerUserId",
        "realmId",
        "userId",
    ];
    let cs_fields = ["clientId", "userId", "userSessionId", "realmId"];
    let mut sessions: QueryIndex<()> = QueryIndex::new(indexed(us_desc.full_name(), &us_fields));
    let start = Instant::now();
    for i in 0..n {
        sessions.upsert(
            Bytes::from(format!("us-{i}")),
            user_session(&us_desc, i),
            (),
        );
    }
    let load_sessions = start.elapsed();
    let mut clients: QueryIndex<()> = QueryIndex::new(indexed(cs_desc.full_name(), &cs_fields));
    for i in 0..n {
        clients.upsert(
            Bytes::from(format!("cs-{i}")),
            client_session(&cs_desc, i),
            (),
        );
    }
    let mut scan_sessions: QueryIndex<()> = QueryIndex::new(HashMap::new());
    for i in 0..n {
        scan_sessions.upsert(
            Bytes::from(format!("us-{i}")),
            user_session(&us_desc, i),
            (),
        );
    }

    // Index maintenance: replace an existing entry (what every cache write and feed event does).
    let mut samples = Vec::new();
    let mut rng = Rng(7);
    for _ in 0..args.iterations {
        let i = rng.below(n);
        let msg = user_session(&us_desc, i);
        let start = Instant::now();
        sessions.upsert(Bytes::from(format!("us-{i}")), msg, ());
        samples.push(start.elapsed());
    }
    let mut stats = vec![summarize(
        "index upsert (replace one RemoteUserSessionEntity)",
        samples,
        0.0,
    )];

    let it = args.iterations;
    let realm_user: fn(&mut Rng) -> HashMap<String, Value> = |r| {
        let u = r.below(50_000);
        // users live in realm n % 10 for their sessions n = u and u + 50 000
        [
            ("realmId".to_string(), sv(format!("realm-{}", u % 10))),
            ("userId".to_string(), sv(format!("user-{u}"))),
        ]
        .into()
    };
    stats.push(measure(
        "sessions by realmId && userId ORDER BY userSessionId",
        &sessions,
        &pool,
        "FROM keycloak.RemoteUserSessionEntity as e WHERE e.realmId = :realmId && e.userId = :userId ORDER BY e.userSessionId",
        Paging { start_offset: 0, max_results: Some(1024) },
        Box::new(realm_user),
        it,
    ));
    stats.push(measure(
        "sessions by realmId && brokerSessionId",
        &sessions,
        &pool,
        "FROM keycloak.RemoteUserSessionEntity as e WHERE e.realmId = :realmId && e.brokerSessionId = :brokerSessionId ORDER BY e.userSessionId",
        Paging { start_offset: 0, max_results: Some(1) },
        Box::new(move |r: &mut Rng| {
            let i = r.below(n / 10) * 10;
            [("realmId".to_string(), sv(format!("realm-{}", i % 10))), ("brokerSessionId".to_string(), sv(format!("broker-session-{i}")))].into()
        }),
        it,
    ));
    stats.push(measure(
        "client sessions by userSessionId ORDER BY clientId",
        &clients,
        &pool,
        "FROM keycloak.RemoteAuthenticatedClientSessionEntity as e WHERE e.userSessionId = :userSessionId ORDER BY e.clientId",
        Paging { start_offset: 0, max_results: Some(1024) },
        Box::new(move |r: &mut Rng| {
            let i = r.below(n);
            [("userSessionId".to_string(), sv(format!("{:08x}-session-{i}", i.wrapping_mul(2654435761) as u32)))].into()
        }),
        it,
    ));
    let realm_client = move |r: &mut Rng| -> HashMap<String, Value> {
        let c = r.below(20);
        // client c's sessions are n with n % 20 == c, so their realm is c % 10
        [
            ("realmId".to_string(), sv(format!("realm-{}", c % 10))),
            ("clientId".to_string(), sv(format!("client-{c}"))),
        ]
        .into()
    };
    stats.push(measure(
        "SELECT count(e) by realmId && clientId",
        &clients,
        &pool,
        "SELECT count(e) FROM keycloak.RemoteAuthenticatedClientSessionEntity as e WHERE e.realmId = :realmId && e.clientId = :clientId",
        Paging::default(),
        Box::new(realm_client),
        it / 10,
    ));
    stats.push(measure(
        "SELECT userSessionId by realmId && clientId, first page of 1024",
        &clients,
        &pool,
        "SELECT e.userSessionId FROM keycloak.RemoteAuthenticatedClientSessionEntity as e WHERE e.realmId = :realmId && e.clientId = :clientId ORDER BY e.userSessionId",
        Paging { start_offset: 0, max_results: Some(1024) },
        Box::new(realm_client),
        it / 10,
    ));
    stats.push(measure(
        "SELECT clientId, count(clientId) GROUP BY clientId (whole cache)",
        &clients,
        &pool,
        "SELECT e.clientId, count(e.clientId) FROM keycloak.RemoteAuthenticatedClientSessionEntity as e GROUP BY e.clientId ORDER BY e.clientId",
        Paging::default(),
        Box::new(|_: &mut Rng| HashMap::new()),
        (it / 100).max(5),
    ));
    stats.push(measure(
        "sessions by realmId && userId, no index (full scan)",
        &scan_sessions,
        &pool,
        "FROM keycloak.RemoteUserSessionEntity as e WHERE e.realmId = :realmId && e.userId = :userId ORDER BY e.userSessionId",
        Paging { start_offset: 0, max_results: Some(1024) },
        Box::new(realm_user),
        (it / 100).max(5),
    ));

    let anchor = if args.pg_url.is_empty() {
        None
    } else {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        match rt.block_on(pg_anchor(&args.pg_url, it)) {
            Ok(s) => Some(s),
            Err(e) => {
                eprintln!("PostgreSQL anchor skipped: {e}");
                None
            }
        }
    };

    if args.json {
        for st in stats.iter().chain(anchor.iter()) {
            println!(
                "{}",
                serde_json::json!({"name": st.name, "mean_us": st.mean_us, "p50_us": st.p50_us, "p99_us": st.p99_us, "rows": st.rows,
                    "ratio_to_pg_select1": anchor.as_ref().map(|a| st.mean_us / a.mean_us)})
            );
        }
        return;
    }
    println!(
        "{n} entities per cache; load of the sessions index: {:.2} s",
        load_sessions.as_secs_f64()
    );
    println!("| shape | rows | mean µs | p50 µs | p99 µs | mean / PG SELECT 1 |");
    println!("|---|---:|---:|---:|---:|---:|");
    for st in stats.iter().chain(anchor.iter()) {
        let ratio = anchor.as_ref().map_or("-".to_string(), |a| {
            format!("{:.3}", st.mean_us / a.mean_us)
        });
        println!(
            "| {} | {:.1} | {:.1} | {:.1} | {:.1} | {} |",
            st.name, st.rows, st.mean_us, st.p50_us, st.p99_us, ratio
        );
    }
}
