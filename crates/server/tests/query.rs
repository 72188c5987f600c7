//! QUERY (0x1F) end to end on the real binary: a schema registered through
//! `___protobuf_metadata`, entities written as WrappedMessages, Keycloak's exact query strings
//! and DELETE statements, the index following every write, and bad input.

mod common;

use bytes::Bytes;
use common::*;
use ferrod::cmd::query::{NamedParameter, QueryRequest, QueryResponse};
use ferrod_codec::{status, Request, Response, ResponseBody};
use ferrod_query::schema::{SchemaRegistry, Schemas};
use ferrod_query::wrapped::{self, WrappedValue};
use prost::Message;
use prost_reflect::{DynamicMessage, Value as RValue};

const CONFIG: &str = r#"
[[cache]]
name = "sessions"
key_media_type = "application/x-protostream"
value_media_type = "application/x-protostream"
[[cache]]
name = "clientSessions"
key_media_type = "application/x-protostream"
value_media_type = "application/x-protostream"
"#;

const SCHEMA: &str = r#"
syntax = "proto3";
package keycloak;

/**
 * @TypeId(65605)
 * @Indexed
 */
message RemoteUserSessionEntity {
  /** @Basic(sortable = true) */
  string userSessionId = 1;
  string authMethod = 2;
  /** @Basic */
  string brokerSessionId = 3;
  /** @Basic */
  string brokerUserId = 4;
  /** @Basic */
  string realmId = 9;
  int32 started = 11;
  /** @Basic */
  string userId = 13;
}

/**
 * @TypeId(65607)
 * @Indexed
 */
message RemoteAuthenticatedClientSessionEntity {
  /** @Basic(projectable = true, sortable = true) */
  string clientId = 1;
  /** @Basic */
  string userId = 2;
  /** @Basic(projectable = true, sortable = true) */
  string userSessionId = 3;
  /** @Basic */
  string realmId = 4;
  int32 timestamp = 9;
}
"#;

fn schemas() -> std::sync::Arc<Schemas> {
    let mut r = SchemaRegistry::new();
    r.put_file("keycloak-test.proto", SCHEMA);
    let s = r.schemas();
    assert!(s.errors().is_empty(), "{:?}", s.errors());
    s
}

fn ws(s: &str) -> Bytes {
    Bytes::from(wrapped::encode_string(s))
}

async fn register_schema(server: &Server) {
    let mut c = server.client().await.with_cache("___protobuf_metadata");
    let r = c.put_bytes(ws("keycloak-test.proto"), ws(SCHEMA)).await;
    assert_status(&r, status::SUCCESS);
}

fn session(s: &Schemas, id: &str, realm: &str, user: &str, broker: Option<&str>) -> Bytes {
    let mut m = DynamicMessage::new(s.message("keycloak.RemoteUserSessionEntity").unwrap());
    m.set_field_by_name("userSessionId", RValue::String(id.into()));
    m.set_field_by_name("realmId", RValue::String(realm.into()));
    m.set_field_by_name("userId", RValue::String(user.into()));
    if let Some(b) = broker {
        m.set_field_by_name("brokerSessionId", RValue::String(b.into()));
    }
    Bytes::from(WrappedValue::Message(m).encode(s))
}

fn client_session(s: &Schemas, us: &str, client: &str, realm: &str) -> Bytes {
    let mut m = DynamicMessage::new(
        s.message("keycloak.RemoteAuthenticatedClientSessionEntity")
            .unwrap(),
    );
    m.set_field_by_name("userSessionId", RValue::String(us.into()));
    m.set_field_by_name("clientId", RValue::String(client.into()));
    m.set_field_by_name("realmId", RValue::String(realm.into()));
    m.set_field_by_name("userId", RValue::String("u".into()));
    Bytes::from(WrappedValue::Message(m).encode(s))
}

fn request(q: &str, params: &[(&str, &str)], offset: Option<i64>, max: Option<i32>) -> Request {
    let req = QueryRequest {
        query_string: Some(q.to_string()),
        start_offset: offset,
        max_results: max,
        named_parameters: params
            .iter()
            .map(|(n, v)| NamedParameter {
                name: Some(n.to_string()),
                value: Some(ws(v)),
            })
            .collect(),
        local: Some(false),
        hit_count_accuracy: None,
    };
    Request::Query {
        query: Bytes::from(req.encode_to_vec()),
    }
}

fn response(r: &Response) -> QueryResponse {
    assert_status(r, status::SUCCESS);
    match &r.body {
        ResponseBody::Value(v) => QueryResponse::decode(&v[..]).expect("QueryResponse"),
        other => panic!("QUERY body {other:?}"),
    }
}

fn error_text(r: &Response) -> String {
    assert_ne!(r.header.status, status::SUCCESS, "expected an error: {r:?}");
    match &r.body {
        ResponseBody::Error(m) => m.clone(),
        other => panic!("error body {other:?}"),
    }
}

/// The entity results: each result is WrappedMessage{wrappedBytes = the stored value}.
fn entity_ids(s: &Schemas, resp: &QueryResponse) -> Vec<String> {
    resp.results
        .iter()
        .map(|r| match wrapped::decode(r, s).unwrap() {
            WrappedValue::Bytes(stored) => match wrapped::decode(&stored, s).unwrap() {
                WrappedValue::Message(m) => m
                    .get_field_by_name("userSessionId")
                    .unwrap()
                    .as_str()
                    .unwrap()
                    .to_string(),
                other => panic!("stored value {other:?}"),
            },
            other => panic!("result {other:?}"),
        })
        .collect()
}

fn scalars(s: &Schemas, resp: &QueryResponse) -> Vec<WrappedValue> {
    resp.results
        .iter()
        .map(|r| wrapped::decode(r, s).unwrap())
        .collect()
}

async fn seed(server: &Server, s: &Schemas) {
    let mut c = server.client().await.with_cache("sessions");
    for (i, (realm, user)) in [
        ("r1", "alice"),
        ("r1", "bob"),
        ("r2", "alice"),
        ("r1", "alice"),
        ("r1", "carol"),
    ]
    .iter()
    .enumerate()
    {
        let broker = (i == 1).then_some("broker-1");
        let r = c
            .put_bytes(
                ws(&format!("key-{i}")),
                session(s, &format!("us-{i}"), realm, user, broker),
            )
            .await;
        assert_status(&r, status::SUCCESS);
    }
    let mut c = server.client().await.with_cache("clientSessions");
    for (i, (us, client, realm)) in [
        ("us-0", "app-b", "r1"),
        ("us-0", "app-a", "r1"),
        ("us-1", "app-a", "r1"),
        ("us-2", "app-c", "r2"),
        ("us-3", "app-a", "r1"),
    ]
    .iter()
    .enumerate()
    {
        let r = c
            .put_bytes(ws(&format!("ck-{i}")), client_session(s, us, client, realm))
            .await;
        assert_status(&r, status::SUCCESS);
    }
}

#[tokio::test]
async fn keycloak_queries_and_paging() {
    let server = Server::start_with(ServerOpts::with_config(CONFIG)).await;
    register_schema(&server).await;
    let s = schemas();
    seed(&server, &s).await;
    let mut c = server.client().await.with_cache("sessions");

    let q = "FROM keycloak.RemoteUserSessionEntity as e WHERE e.realmId = :realmId && e.userId = :userId ORDER BY e.userSessionId";
    let resp = response(
        &c.req(request(
            q,
            &[("realmId", "r1"), ("userId", "alice")],
            None,
            None,
        ))
        .await,
    );
    assert_eq!(entity_ids(&s, &resp), vec!["us-0", "us-3"]);
    assert_eq!(
        (
            resp.num_results,
            resp.projection_size,
            resp.hit_count,
            resp.hit_count_exact
        ),
        (2, 0, 2, true)
    );

    let q = "FROM keycloak.RemoteUserSessionEntity as e WHERE e.realmId = :realmId && e.brokerSessionId = :brokerSessionId ORDER BY e.userSessionId";
    let resp = response(
        &c.req(request(
            q,
            &[("realmId", "r1"), ("brokerSessionId", "broker-1")],
            Some(0),
            Some(1),
        ))
        .await,
    );
    assert_eq!(entity_ids(&s, &resp), vec!["us-1"]);

    // Paging as Keycloak's QueryHelper.streamAll: hitCount is the total on every page.
    let q = "FROM keycloak.RemoteUserSessionEntity as e WHERE e.realmId = :realmId ORDER BY e.userSessionId";
    let p1 = response(
        &c.req(request(q, &[("realmId", "r1")], Some(0), Some(3)))
            .await,
    );
    let p2 = response(
        &c.req(request(q, &[("realmId", "r1")], Some(3), Some(3)))
            .await,
    );
    assert_eq!(entity_ids(&s, &p1), vec!["us-0", "us-1", "us-3"]);
    assert_eq!(entity_ids(&s, &p2), vec!["us-4"]);
    assert_eq!((p1.hit_count, p2.hit_count), (4, 4));

    let mut c = server.client().await.with_cache("clientSessions");
    let q = "SELECT e.userSessionId FROM keycloak.RemoteAuthenticatedClientSessionEntity as e WHERE e.realmId = :realmId && e.clientId = :clientId ORDER BY e.userSessionId";
    let resp = response(
        &c.req(request(
            q,
            &[("realmId", "r1"), ("clientId", "app-a")],
            Some(0),
            Some(1024),
        ))
        .await,
    );
    assert_eq!(resp.projection_size, 1);
    assert_eq!(
        scalars(&s, &resp),
        ["us-0", "us-1", "us-3"]
            .iter()
            .map(|v| WrappedValue::String(v.to_string()))
            .collect::<Vec<_>>()
    );
    let q = "SELECT e.clientId, count(e.clientId) FROM keycloak.RemoteAuthenticatedClientSessionEntity as e GROUP BY e.clientId ORDER BY e.clientId";
    let resp = response(&c.req(request(q, &[], Some(0), Some(1024))).await);
    assert_eq!(
        (resp.num_results, resp.projection_size, resp.hit_count),
        (3, 2, 3)
    );
    assert_eq!(
        scalars(&s, &resp),
        vec![
            WrappedValue::String("app-a".into()),
            WrappedValue::Int64(3),
            WrappedValue::String("app-b".into()),
            WrappedValue::Int64(1),
            WrappedValue::String("app-c".into()),
            WrappedValue::Int64(1),
        ]
    );
    let q = "SELECT count(e) FROM keycloak.RemoteAuthenticatedClientSessionEntity as e WHERE e.realmId = :realmId && e.clientId = :clientId";
    let resp = response(
        &c.req(request(
            q,
            &[("realmId", "r1"), ("clientId", "app-a")],
            None,
            None,
        ))
        .await,
    );
    assert_eq!(scalars(&s, &resp), vec![WrappedValue::Int64(3)]);
    let q = "SELECT e.clientId FROM keycloak.RemoteAuthenticatedClientSessionEntity as e WHERE e.userSessionId = :userSessionId ORDER BY e.clientId";
    let resp = response(
        &c.req(request(q, &[("userSessionId", "us-0")], None, None))
            .await,
    );
    assert_eq!(
        scalars(&s, &resp),
        vec![
            WrappedValue::String("app-a".into()),
            WrappedValue::String("app-b".into())
        ]
    );
}

#[tokio::test]
async fn index_follows_writes() {
    let server = Server::start_with(ServerOpts::with_config(CONFIG)).await;
    register_schema(&server).await;
    let s = schemas();
    seed(&server, &s).await;
    let mut c = server.client().await.with_cache("sessions");
    let q = "FROM keycloak.RemoteUserSessionEntity e WHERE e.userId = :u";
    let ids = |r: &Response| entity_ids(&s, &response(r));
    assert_eq!(
        ids(&c.req(request(q, &[("u", "alice")], None, None)).await),
        vec!["us-0", "us-2", "us-3"]
    );
    // A new entity, a changed one, a removed one: each visible to the very next query.
    c.put_bytes(ws("key-9"), session(&s, "us-9", "r3", "alice", None))
        .await;
    c.put_bytes(ws("key-0"), session(&s, "us-0", "r1", "dave", None))
        .await;
    let r = c.req(Request::Remove { key: ws("key-3") }).await;
    assert_status(&r, status::SUCCESS);
    assert_eq!(
        ids(&c.req(request(q, &[("u", "alice")], None, None)).await),
        vec!["us-2", "us-9"]
    );
    // Writes without listener notification are indexed all the same.
    let quiet = ferrod_codec::flags::SKIP_LISTENER_NOTIFICATION;
    let r = c
        .req_flags(
            Request::Put {
                key: ws("key-8"),
                expiration: EXP_DEFAULT,
                value: session(&s, "us-8", "r3", "alice", None),
            },
            quiet,
        )
        .await;
    assert_status(&r, status::SUCCESS);
    let mut got = ids(&c.req(request(q, &[("u", "alice")], None, None)).await);
    got.sort();
    assert_eq!(got, vec!["us-2", "us-8", "us-9"]);
    let r = c
        .req_flags(Request::Remove { key: ws("key-8") }, quiet)
        .await;
    assert_status(&r, status::SUCCESS);
    assert_eq!(
        ids(&c.req(request(q, &[("u", "alice")], None, None)).await),
        vec!["us-2", "us-9"]
    );
    // A non-entity value under a key is not a result.
    c.put_bytes(ws("key-2"), ws("just a string")).await;
    assert_eq!(
        ids(&c.req(request(q, &[("u", "alice")], None, None)).await),
        vec!["us-9"]
    );
    assert_eq!(indexed_entities(&mut c).await, 4);
    let r = c.req(Request::Clear).await;
    assert_status(&r, status::SUCCESS);
    assert_eq!(
        ids(&c.req(request(q, &[("u", "alice")], None, None)).await),
        Vec::<String>::new()
    );
    assert_eq!(indexed_entities(&mut c).await, 0, "CLEAR empties the index");
    // The admin tasks Keycloak runs after a schema change rebuild the index.
    c.put_bytes(ws("key-5"), session(&s, "us-5", "r1", "alice", None))
        .await;
    for task in ["@@cache@updateindexschema", "@@cache@reindex"] {
        let r = c
            .req(Request::Exec {
                task: task.into(),
                params: vec![("name".into(), Bytes::from_static(b"sessions"))],
            })
            .await;
        assert_status(&r, status::SUCCESS);
    }
    assert_eq!(
        ids(&c.req(request(q, &[("u", "alice")], None, None)).await),
        vec!["us-5"]
    );
}

#[tokio::test]
async fn delete_statements_remove_durably() {
    let mut server = Server::start_with(ServerOpts::with_config(CONFIG)).await;
    register_schema(&server).await;
    let s = schemas();
    seed(&server, &s).await;
    let mut c = server.client().await.with_cache("sessions");
    let q = "DELETE FROM keycloak.RemoteUserSessionEntity WHERE (realmId = :p0) || (userId = :p1 && realmId = :p2)";
    let resp = response(
        &c.req(request(
            q,
            &[("p0", "r9"), ("p1", "alice"), ("p2", "r1")],
            None,
            None,
        ))
        .await,
    );
    assert_eq!((resp.hit_count, resp.num_results), (2, 0));
    assert_eq!(c.get_bytes(ws("key-0")).await, None);
    assert_eq!(c.get_bytes(ws("key-3")).await, None);
    assert!(c.get_bytes(ws("key-1")).await.is_some());
    let mut cs = server.client().await.with_cache("clientSessions");
    let q = "DELETE FROM keycloak.RemoteAuthenticatedClientSessionEntity WHERE (userSessionId = :p0) || (realmId = :p1) || (userId = :p2 && realmId = :p3)";
    let resp = response(
        &cs.req(request(
            q,
            &[("p0", "us-0"), ("p1", "r2"), ("p2", "nobody"), ("p3", "r1")],
            None,
            None,
        ))
        .await,
    );
    assert_eq!(resp.hit_count, 3);
    // Committed: still gone after a restart.
    server.stop().await;
    server.restart().await;
    let mut c = server.client().await.with_cache("sessions");
    assert_eq!(c.get_bytes(ws("key-0")).await, None);
    assert!(c.get_bytes(ws("key-4")).await.is_some());
    let q = "FROM keycloak.RemoteUserSessionEntity e ORDER BY e.userSessionId";
    assert_eq!(
        entity_ids(&s, &response(&c.req(request(q, &[], None, None)).await)),
        vec!["us-1", "us-2", "us-4"]
    );
}

#[tokio::test]
async fn bad_queries_are_clear_errors_and_change_nothing() {
    let server = Server::start_with(ServerOpts::with_config(CONFIG)).await;
    let s = schemas();
    // No schema registered yet: a DELETE names an unknown entity and removes nothing.
    let mut c = server.client().await.with_cache("sessions");
    c.put_bytes(ws("key-0"), session(&s, "us-0", "r1", "alice", None))
        .await;
    let q = "DELETE FROM keycloak.RemoteUserSessionEntity WHERE realmId = :p0";
    let msg = error_text(&c.req(request(q, &[("p0", "r1")], None, None)).await);
    assert!(
        msg.contains("unknown entity 'keycloak.RemoteUserSessionEntity'"),
        "{msg}"
    );
    assert!(c.get_bytes(ws("key-0")).await.is_some());

    register_schema(&server).await;
    seed(&server, &s).await;
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
    let cases: &[Case<'_>] = &[
        ("FROM keycloak.Nope e", &[], "unknown entity 'keycloak.Nope'"),
        ("FROM keycloak.RemoteUserSessionEntity e WHERE e.started = :n", &[("n", "x")], "parameter ':n' is string but field started is integer"),
        ("FROM keycloak.RemoteUserSessionEntity e WHERE e.realmId = :r", &[], "parameter ':r' was not set"),
        ("FROM keycloak.RemoteUserSessionEntity e WHERE e.realmId : 'x'", &[], "full-text queries (field : term) are not supported"),
        ("SELECT e.realmId FROM keycloak.RemoteUserSessionEntity e GROUP BY e.realmId HAVING count(e) > 1", &[], "HAVING is not supported"),
        ("DELETE FROM keycloak.RemoteUserSessionEntity WHERE nope = 'x'", &[], "has no field 'nope'"),
    ];
    for (q, p, expected) in cases {
        let msg = error_text(&c.req(request(q, p, None, None)).await);
        assert!(msg.contains(expected), "{q}: {msg}");
    }
    // Not a QueryRequest at all.
    let msg = error_text(
        &c.req(Request::Query {
            query: Bytes::from_static(&[0x0A, 0xFF]),
        })
        .await,
    );
    assert!(msg.contains("malformed QueryRequest"), "{msg}");
    // A JSON QueryRequest (value media type application/json) is refused, not misread.
    let mut f = c.frame(
        request("FROM keycloak.RemoteUserSessionEntity", &[], None, None),
        0,
    );
    f.header.value_type = ferrod_codec::MediaType::from_name("application/json");
    let msg = error_text(&c.call(f).await);
    assert!(msg.contains("application/json"), "{msg}");
    // An unknown cache.
    let mut nc = server.client().await.with_cache("no-such-cache");
    let r = nc
        .req(request(
            "FROM keycloak.RemoteUserSessionEntity",
            &[],
            None,
            None,
        ))
        .await;
    assert!(error_text(&r).contains("CacheNotFoundException"));
    // Nothing was removed by any of it, and the connection still works.
    let q = "FROM keycloak.RemoteUserSessionEntity e";
    assert_eq!(
        response(&c.req(request(q, &[], None, None)).await).hit_count,
        5
    );
}

#[tokio::test]
async fn default_max_results_is_100() {
    let server = Server::start_with(ServerOpts::with_config(CONFIG)).await;
    register_schema(&server).await;
    let s = schemas();
    let mut c = server.client().await.with_cache("sessions");
    for i in 0..150 {
        c.put_bytes(
            ws(&format!("k{i:03}")),
            session(&s, &format!("us-{i:03}"), "r1", "u", None),
        )
        .await;
    }
    let q = "FROM keycloak.RemoteUserSessionEntity e WHERE e.realmId = 'r1'";
    let resp = response(&c.req(request(q, &[], None, None)).await);
    assert_eq!((resp.num_results, resp.hit_count), (100, 150));
    let resp = response(&c.req(request(q, &[], Some(140), Some(-1))).await);
    assert_eq!((resp.num_results, resp.hit_count), (10, 150));
}

/// Two replicas of the test config on one fresh PostgreSQL database, the Keycloak schema
/// registered through A; None without PostgreSQL.
async fn two_pg_replicas(name: &str) -> Option<(PgDb, Server, Server)> {
    let db = PgDb::create(name).await?;
    let opts = ServerOpts::with_config(CONFIG).database(&db.url);
    let a = Server::start_with(opts.clone()).await;
    let b = Server::start_with(opts).await;
    register_schema(&a).await;
    Some((db, a, b))
}

/// On PostgreSQL (change feed between replicas): a replica's query sees its own acknowledged
/// writes at once, and another replica's once the feed delivers them; a DELETE on one replica
/// removes the entries everywhere.
#[tokio::test]
async fn two_postgres_replicas() {
    let Some((_db, a, b_)) = two_pg_replicas("ickle_query").await else {
        return;
    };
    let s = schemas();
    let mut ca = a.client().await.with_cache("sessions");
    let mut cb = b_.client().await.with_cache("sessions");
    let q = "FROM keycloak.RemoteUserSessionEntity e WHERE e.realmId = :r ORDER BY e.userSessionId";
    for i in 0..5 {
        ca.put_bytes(
            ws(&format!("k{i}")),
            session(&s, &format!("us-{i}"), "r1", "u", None),
        )
        .await;
        let resp = response(&ca.req(request(q, &[("r", "r1")], None, None)).await);
        assert_eq!(
            resp.hit_count,
            i + 1,
            "replica A sees its own write {i} at once"
        );
    }
    let mut seen = 0;
    for _ in 0..200 {
        let r = cb.req(request(q, &[("r", "r1")], None, None)).await;
        if r.header.status == status::SUCCESS {
            seen = response(&r).hit_count;
            if seen == 5 {
                break;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(seen, 5, "replica B learns A's writes from the feed");
    let resp = response(
        &cb.req(request(
            "DELETE FROM keycloak.RemoteUserSessionEntity WHERE realmId = :p0",
            &[("p0", "r1")],
            None,
            None,
        ))
        .await,
    );
    assert_eq!(resp.hit_count, 5);
    let mut left = 5;
    for _ in 0..200 {
        left = response(&ca.req(request(q, &[("r", "r1")], None, None)).await).hit_count;
        if left == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(left, 0, "B's DELETE reaches A");
    assert_eq!(ca.get_bytes(ws("k0")).await, None);
}

/// The number of entities in the server's query index of the client's cache (STATS).
async fn indexed_entities(c: &mut Client) -> u64 {
    let stats = c.stats().await;
    let (_, n) = stats
        .iter()
        .find(|(k, _)| k == "queryIndexEntities")
        .expect("STATS has queryIndexEntities");
    n.parse().expect("a count")
}

/// Queries `c` (bounded) until the query succeeds with `hits` hits.
async fn until_hits(c: &mut Client, q: &str, params: &[(&str, &str)], hits: i32, what: &str) {
    let mut seen = None;
    for _ in 0..200 {
        let r = c.req(request(q, params, None, None)).await;
        if r.header.status == status::SUCCESS {
            seen = Some(response(&r).hit_count);
            if seen == Some(hits) {
                return;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("{what}: never got {hits} hits (last: {seen:?})");
}

/// A CLEAR on replica A reaches replica B's query index (not only B's memory): B's index
/// holds only what was written after the CLEAR.
#[tokio::test]
async fn clear_on_one_replica_empties_the_other_replicas_index() {
    let Some((db, a, b_)) = two_pg_replicas("ickle_clear").await else {
        return;
    };
    let s = schemas();
    let mut ca = a.client().await.with_cache("sessions");
    let mut cb = b_.client().await.with_cache("sessions");
    let q = "FROM keycloak.RemoteUserSessionEntity e WHERE e.realmId = :r";
    for i in 0..5 {
        ca.put_bytes(
            ws(&format!("k{i}")),
            session(&s, &format!("us-{i}"), "r1", "u", None),
        )
        .await;
    }
    until_hits(&mut cb, q, &[("r", "r1")], 5, "B indexes A's writes").await;
    assert_eq!(indexed_entities(&mut cb).await, 5);
    until_hits(&mut ca, q, &[("r", "r1")], 5, "A indexes its writes").await;
    assert_eq!(indexed_entities(&mut ca).await, 5);

    assert_status(&ca.req(Request::Clear).await, status::SUCCESS);
    ca.put_bytes(ws("after"), session(&s, "us-after", "r1", "u", None))
        .await;
    // B's feed applies the CLEAR before the later write: once B finds that write, its index
    // must have dropped the cleared entities.
    until_hits(
        &mut cb,
        q,
        &[("r", "r1")],
        1,
        "B sees only the write after the CLEAR",
    )
    .await;
    assert_eq!(
        indexed_entities(&mut cb).await,
        1,
        "B's index keeps no entity of the cleared cache"
    );
    until_hits(
        &mut ca,
        q,
        &[("r", "r1")],
        1,
        "A sees only the write after its CLEAR",
    )
    .await;
    assert_eq!(indexed_entities(&mut ca).await, 1, "nor does A's");
    drop(db);
}

/// A schema cleared from `___protobuf_metadata` on replica A is forgotten by replica B's
/// registry (its entity becomes unknown to B's queries), without any periodic re-check.
#[tokio::test]
async fn schemas_cleared_on_one_replica_are_forgotten_by_the_other() {
    let Some((db, a, b_)) = two_pg_replicas("schema_clear").await else {
        return;
    };
    let mut cb = b_.client().await.with_cache("sessions");
    let q = "FROM keycloak.RemoteUserSessionEntity e";
    until_hits(&mut cb, q, &[], 0, "B learns the schema").await;

    let mut meta = a.client().await.with_cache("___protobuf_metadata");
    assert_status(&meta.req(Request::Clear).await, status::SUCCESS);
    let mut last = String::new();
    for _ in 0..200 {
        let r = cb.req(request(q, &[], None, None)).await;
        if r.header.status != status::SUCCESS {
            last = error_text(&r);
            if last.contains("unknown entity 'keycloak.RemoteUserSessionEntity'") {
                break;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        last.contains("unknown entity 'keycloak.RemoteUserSessionEntity'"),
        "B still knows the cleared schema (last error: {last:?})"
    );
    // Registered again on A, B knows it again.
    register_schema(&a).await;
    until_hits(&mut cb, q, &[], 0, "B learns the schema again").await;
    drop(db);
}

/// Authenticates `c` as `user` with PLAIN (`authzid NUL authcid NUL password`).
async fn login(c: &mut Client, user: &str, password: &str) {
    let r = c
        .req(Request::Auth {
            mechanism: "PLAIN".into(),
            response: Bytes::from(format!("\0{user}\0{password}")),
        })
        .await;
    assert_status(&r, status::SUCCESS);
}

/// With authentication on, a query needs BULK_READ and an Ickle DELETE also BULK_WRITE, as
/// upstream's query engine checks: an `observer` may query but its DELETE is refused and removes
/// nothing, while an `application` user's DELETE removes.
#[tokio::test]
async fn delete_statements_need_bulk_write() {
    use ferrod::auth::roles::Role;
    use ferrod::auth::users::{User, Users};
    let dir = tempfile::tempdir().unwrap();
    let mut users = Users::default();
    for (name, role) in [
        ("obs", Role::Observer),
        ("app", Role::Application),
        ("dep", Role::Deployer),
    ] {
        let u = User::with_password(name, vec![role], "pw", "default", 4096);
        users.users.insert(u.name.clone(), u);
    }
    let creds = dir.path().join("users.txt");
    std::fs::write(&creds, users.render()).unwrap();
    let server = Server::start_with(
        ServerOpts::with_config(CONFIG)
            .arg("--credentials-file")
            .arg(creds.to_str().unwrap()),
    )
    .await;
    let s = schemas();
    {
        // Registering a schema needs CREATE (deployer), as on Infinispan.
        let mut c = server.client().await.with_cache("___protobuf_metadata");
        login(&mut c, "dep", "pw").await;
        assert_status(
            &c.put_bytes(ws("keycloak-test.proto"), ws(SCHEMA)).await,
            status::SUCCESS,
        );
        let mut c = server.client().await.with_cache("sessions");
        login(&mut c, "app", "pw").await;
        for i in 0..3 {
            let v = session(&s, &format!("us-{i}"), "r1", "alice", None);
            assert_status(
                &c.put_bytes(ws(&format!("key-{i}")), v).await,
                status::SUCCESS,
            );
        }
    }
    let delete = "DELETE FROM keycloak.RemoteUserSessionEntity WHERE realmId IN (:p0)";
    let mut obs = server.client().await.with_cache("sessions");
    login(&mut obs, "obs", "pw").await;
    let q = "FROM keycloak.RemoteUserSessionEntity e WHERE e.realmId = :realmId";
    let found = response(&obs.req(request(q, &[("realmId", "r1")], None, None)).await);
    assert_eq!(found.hit_count, 3);
    let refused = obs.req(request(delete, &[("p0", "r1")], None, None)).await;
    assert_status(&refused, status::SERVER_ERROR);
    assert!(
        error_text(&refused).contains("BULK_WRITE"),
        "{}",
        error_text(&refused)
    );
    assert!(
        obs.get_bytes(ws("key-0")).await.is_some(),
        "nothing removed"
    );
    let mut app = server.client().await.with_cache("sessions");
    login(&mut app, "app", "pw").await;
    let done = response(&app.req(request(delete, &[("p0", "r1")], None, None)).await);
    assert_eq!(done.hit_count, 3);
    assert_eq!(app.get_bytes(ws("key-0")).await, None);
}
