//! Unit tests over Keycloak's entity layouts (keycloak-contract.md §4) and exact query
//! strings (§3.5).

use std::collections::{HashMap, HashSet};

use bytes::Bytes;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, Value as RValue};

use super::*;

const KEYCLOAK_PROTO: &str = r#"
syntax = "proto3";
package keycloak;

enum State { ALIVE = 0; RESTARTING = 1; LOGGED_OUT = 2; }

message RemoteUserSessionEntity {
  string userSessionId = 1;
  string authMethod = 2;
  string brokerSessionId = 3;
  string brokerUserId = 4;
  string ipAddress = 5;
  int32 lastSessionRefresh = 6;
  string loginUsername = 7;
  map<string, string> notes = 8;
  string realmId = 9;
  bool rememberMe = 10;
  int32 started = 11;
  State state = 12;
  string userId = 13;
}

message RemoteAuthenticatedClientSessionEntity {
  string clientId = 1;
  string userId = 2;
  string userSessionId = 3;
  string realmId = 4;
  map<string, string> notes = 5;
  string action = 6;
  string protocol = 7;
  string redirectUri = 8;
  int32 timestamp = 9;
  int32 started = 10;
}

message LoginFailureEntity {
  string realmId = 1;
  string userId = 2;
  int64 failedLoginNotBefore = 3;
  int32 numFailures = 4;
  int32 numTemporaryLockouts = 5;
  int64 lastFailure = 6;
  string lastIPFailure = 7;
}

message Address { string city = 1; int32 zip = 2; }
message Person {
  optional string name = 1;
  optional int32 age = 2;
  optional double score = 3;
  optional Address address = 4;
  repeated string tags = 5;
  optional bytes blob = 6;
}
"#;

fn pool() -> DescriptorPool {
    testing::pool_from_source("keycloak.proto", KEYCLOAK_PROTO).expect("test schema compiles")
}

fn resolver(pool: &DescriptorPool) -> impl EntityResolver + '_ {
    move |name: &str| pool.get_message_by_name(name)
}

fn msg(desc: &MessageDescriptor, fields: &[(&str, RValue)]) -> DynamicMessage {
    let mut m = DynamicMessage::new(desc.clone());
    for (name, v) in fields {
        m.set_field_by_name(name, v.clone());
    }
    m
}

fn s(v: &str) -> RValue {
    RValue::String(v.to_string())
}

fn params(list: &[(&str, Value)]) -> HashMap<String, Value> {
    list.iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

fn sv(v: &str) -> Value {
    Value::String(v.to_string())
}

/// sessions: key us-N, realm r1 for even N else r2, user u(N%3), broker session bs-N for N<2.
fn sessions(indexed: bool) -> (DescriptorPool, QueryIndex<u32>) {
    let pool = pool();
    let desc = pool
        .get_message_by_name("keycloak.RemoteUserSessionEntity")
        .unwrap();
    let fields: IndexedFields = if indexed {
        [(
            "keycloak.RemoteUserSessionEntity".to_string(),
            [
                "realmId",
                "userId",
                "brokerSessionId",
                "brokerUserId",
                "userSessionId",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect::<HashSet<_>>(),
        )]
        .into_iter()
        .collect()
    } else {
        HashMap::new()
    };
    let mut index = QueryIndex::new(fields);
    for n in 0..10u32 {
        let mut f = vec![
            ("userSessionId", s(&format!("us-{n}"))),
            ("realmId", s(if n % 2 == 0 { "r1" } else { "r2" })),
            ("userId", s(&format!("u{}", n % 3))),
            ("started", RValue::I32(100 + n as i32)),
        ];
        if n < 2 {
            f.push(("brokerSessionId", s(&format!("bs-{n}"))));
        }
        index.upsert(Bytes::from(format!("us-{n}")), msg(&desc, &f), n);
    }
    (pool, index)
}

fn run_entities(
    index: &QueryIndex<u32>,
    pool: &DescriptorPool,
    q: &str,
    p: &[(&str, Value)],
    paging: Paging,
) -> (Vec<u32>, u64) {
    let prepared = prepare(q, &resolver(pool)).unwrap();
    let bound = prepared.bind(&params(p)).unwrap();
    let out = index.execute(&bound, paging);
    match out.rows {
        QueryRows::Entities(rows) => (rows.into_iter().map(|(_, p)| *p).collect(), out.hit_count),
        QueryRows::Projections(_) => panic!("expected entities"),
    }
}

fn run_rows(
    index: &QueryIndex<u32>,
    pool: &DescriptorPool,
    q: &str,
    p: &[(&str, Value)],
    paging: Paging,
) -> (Vec<Vec<Value>>, u64) {
    let prepared = prepare(q, &resolver(pool)).unwrap();
    let bound = prepared.bind(&params(p)).unwrap();
    let out = index.execute(&bound, paging);
    match out.rows {
        QueryRows::Projections(rows) => (rows, out.hit_count),
        QueryRows::Entities(_) => panic!("expected projections"),
    }
}

#[test]
fn keycloak_user_session_queries() {
    for indexed in [false, true] {
        let (pool, index) = sessions(indexed);
        let (rows, hits) = run_entities(
            &index,
            &pool,
            "FROM keycloak.RemoteUserSessionEntity as e WHERE e.realmId = :realmId && e.userId = :userId ORDER BY e.userSessionId",
            &[("realmId", sv("r1")), ("userId", sv("u0"))],
            Paging::default(),
        );
        assert_eq!(rows, vec![0, 6]);
        assert_eq!(hits, 2);
        let (rows, _) = run_entities(
            &index,
            &pool,
            "FROM keycloak.RemoteUserSessionEntity as e WHERE e.realmId = :realmId && e.brokerSessionId = :brokerSessionId ORDER BY e.userSessionId",
            &[("realmId", sv("r2")), ("brokerSessionId", sv("bs-1"))],
            Paging::default(),
        );
        assert_eq!(rows, vec![1]);
        // Paging as QueryHelper.streamAll does: hitCount stays the total.
        let q = "FROM keycloak.RemoteUserSessionEntity as e WHERE e.realmId = :realmId ORDER BY e.userSessionId";
        let (page1, hits) = run_entities(
            &index,
            &pool,
            q,
            &[("realmId", sv("r1"))],
            Paging {
                start_offset: 0,
                max_results: Some(2),
            },
        );
        let (page2, _) = run_entities(
            &index,
            &pool,
            q,
            &[("realmId", sv("r1"))],
            Paging {
                start_offset: 2,
                max_results: Some(2),
            },
        );
        let (page3, _) = run_entities(
            &index,
            &pool,
            q,
            &[("realmId", sv("r1"))],
            Paging {
                start_offset: 4,
                max_results: Some(2),
            },
        );
        assert_eq!(
            (page1, page2, page3, hits),
            (vec![0, 2], vec![4, 6], vec![8], 5)
        );
    }
}

#[test]
fn keycloak_delete_statement_with_bare_fields() {
    for indexed in [false, true] {
        let (pool, index) = sessions(indexed);
        let prepared = prepare(
            "DELETE FROM keycloak.RemoteUserSessionEntity WHERE (realmId = :p0) || (userId = :p1 && realmId = :p2)",
            &resolver(&pool),
        )
        .unwrap();
        assert!(prepared.is_delete());
        let bound = prepared
            .bind(&params(&[
                ("p0", sv("r-none")),
                ("p1", sv("u1")),
                ("p2", sv("r2")),
            ]))
            .unwrap();
        let keys: Vec<Bytes> = index.matching_keys(&bound);
        // u1 = n%3==1 -> 1,4,7; r2 = odd -> 1,7
        assert_eq!(keys, vec![Bytes::from("us-1"), Bytes::from("us-7")]);
    }
}

#[test]
fn delete_with_in_list() {
    let pool = pool();
    let desc = pool
        .get_message_by_name("keycloak.LoginFailureEntity")
        .unwrap();
    let mut index: QueryIndex<()> = QueryIndex::new(
        [(
            "keycloak.LoginFailureEntity".to_string(),
            ["realmId".to_string()].into_iter().collect(),
        )]
        .into_iter()
        .collect(),
    );
    for (k, realm) in [("a", "r1"), ("b", "r2"), ("c", "r3"), ("d", "r1")] {
        index.upsert(
            Bytes::from(k),
            msg(&desc, &[("realmId", s(realm)), ("userId", s(k))]),
            (),
        );
    }
    let bound = prepare(
        "DELETE FROM keycloak.LoginFailureEntity WHERE realmId IN (:p0, :p1)",
        &resolver(&pool),
    )
    .unwrap()
    .bind(&params(&[("p0", sv("r1")), ("p1", sv("r3"))]))
    .unwrap();
    assert_eq!(
        index.matching_keys(&bound),
        vec![Bytes::from("a"), Bytes::from("c"), Bytes::from("d")]
    );
}

#[test]
fn keycloak_client_session_projections_and_groups() {
    let pool = pool();
    let desc = pool
        .get_message_by_name("keycloak.RemoteAuthenticatedClientSessionEntity")
        .unwrap();
    for indexed in [false, true] {
        let fields: IndexedFields = if indexed {
            [(
                desc.full_name().to_string(),
                ["clientId", "userId", "userSessionId", "realmId"]
                    .iter()
                    .map(|s| s.to_string())
                    .collect(),
            )]
            .into_iter()
            .collect()
        } else {
            HashMap::new()
        };
        let mut index = QueryIndex::new(fields);
        // (userSessionId, clientId, realm)
        let data = [
            ("us1", "c2", "r1"),
            ("us1", "c1", "r1"),
            ("us2", "c1", "r1"),
            ("us3", "c3", "r2"),
            ("us4", "c1", "r1"),
        ];
        for (i, (us, c, r)) in data.iter().enumerate() {
            index.upsert(
                Bytes::from(format!("k{i}")),
                msg(
                    &desc,
                    &[
                        ("userSessionId", s(us)),
                        ("clientId", s(c)),
                        ("realmId", s(r)),
                        ("userId", s("u")),
                    ],
                ),
                i as u32,
            );
        }
        let (rows, hits) = run_rows(
            &index,
            &pool,
            "SELECT e.userSessionId FROM keycloak.RemoteAuthenticatedClientSessionEntity as e WHERE e.realmId = :realmId && e.clientId = :clientId ORDER BY e.userSessionId",
            &[("realmId", sv("r1")), ("clientId", sv("c1"))],
            Paging::default(),
        );
        assert_eq!(
            rows,
            vec![vec![sv("us1")], vec![sv("us2")], vec![sv("us4")]]
        );
        assert_eq!(hits, 3);
        let (rows, hits) = run_rows(
            &index,
            &pool,
            "SELECT e.clientId, count(e.clientId) FROM keycloak.RemoteAuthenticatedClientSessionEntity as e GROUP BY e.clientId ORDER BY e.clientId",
            &[],
            Paging::default(),
        );
        assert_eq!(
            rows,
            vec![
                vec![sv("c1"), Value::Int64(3)],
                vec![sv("c2"), Value::Int64(1)],
                vec![sv("c3"), Value::Int64(1)]
            ]
        );
        assert_eq!(hits, 3);
        let (rows, _) = run_rows(
            &index,
            &pool,
            "SELECT count(e) FROM keycloak.RemoteAuthenticatedClientSessionEntity as e WHERE e.realmId = :realmId && e.clientId = :clientId",
            &[("realmId", sv("r1")), ("clientId", sv("c1"))],
            Paging::default(),
        );
        assert_eq!(rows, vec![vec![Value::Int64(3)]]);
        let (rows, _) = run_rows(
            &index,
            &pool,
            "SELECT count(e) FROM keycloak.RemoteAuthenticatedClientSessionEntity as e WHERE e.realmId = :realmId && e.clientId = :clientId",
            &[("realmId", sv("nope")), ("clientId", sv("c1"))],
            Paging::default(),
        );
        assert_eq!(
            rows,
            vec![vec![Value::Int64(0)]],
            "count over no entries is one row with 0"
        );
        let (rows, _) = run_rows(
            &index,
            &pool,
            "SELECT e.clientId FROM keycloak.RemoteAuthenticatedClientSessionEntity as e WHERE e.userSessionId = :userSessionId ORDER BY e.clientId",
            &[("userSessionId", sv("us1"))],
            Paging::default(),
        );
        assert_eq!(rows, vec![vec![sv("c1")], vec![sv("c2")]]);
    }
}

#[test]
fn index_follows_updates_and_removals() {
    let (pool, mut index) = sessions(true);
    let desc = pool
        .get_message_by_name("keycloak.RemoteUserSessionEntity")
        .unwrap();
    let q = "FROM keycloak.RemoteUserSessionEntity e WHERE e.userId = :u";
    let (rows, _) = run_entities(&index, &pool, q, &[("u", sv("u0"))], Paging::default());
    assert_eq!(rows, vec![0, 3, 6, 9]);
    // us-3 moves to another user, us-6 is removed, a new one arrives.
    index.upsert(
        Bytes::from("us-3"),
        msg(&desc, &[("userId", s("u9")), ("realmId", s("r2"))]),
        33,
    );
    assert!(index.remove(b"us-6"));
    assert!(!index.remove(b"us-6"));
    index.upsert(Bytes::from("us-a"), msg(&desc, &[("userId", s("u0"))]), 100);
    let (rows, _) = run_entities(&index, &pool, q, &[("u", sv("u0"))], Paging::default());
    assert_eq!(rows, vec![0, 9, 100]);
    let (rows, _) = run_entities(&index, &pool, q, &[("u", sv("u9"))], Paging::default());
    assert_eq!(rows, vec![33]);
    // Rebuilding with no indexed fields gives the same answers by scanning.
    index.set_indexed_fields(HashMap::new());
    let (rows, _) = run_entities(&index, &pool, q, &[("u", sv("u0"))], Paging::default());
    assert_eq!(rows, vec![0, 9, 100]);
}

fn people() -> (DescriptorPool, QueryIndex<u32>) {
    let pool = pool();
    let desc = pool.get_message_by_name("keycloak.Person").unwrap();
    let addr = pool.get_message_by_name("keycloak.Address").unwrap();
    let mut index = QueryIndex::new(HashMap::new());
    type PersonRow<'a> = (
        u32,
        Option<&'a str>,
        Option<i32>,
        Option<f64>,
        Option<&'a str>,
    );
    let rows: Vec<PersonRow<'_>> = vec![
        (1, Some("alice"), Some(30), Some(1.5), Some("Paris")),
        (2, Some("bob"), None, Some(2.5), None),
        (3, None, Some(20), None, Some("Oslo")),
        (4, Some("alba"), Some(40), Some(0.5), Some("Paris")),
        (5, Some("c_d"), Some(30), None, None),
    ];
    for (n, name, age, score, city) in rows {
        let mut m = DynamicMessage::new(desc.clone());
        if let Some(v) = name {
            m.set_field_by_name("name", s(v));
        }
        if let Some(v) = age {
            m.set_field_by_name("age", RValue::I32(v));
        }
        if let Some(v) = score {
            m.set_field_by_name("score", RValue::F64(v));
        }
        if let Some(c) = city {
            m.set_field_by_name("address", RValue::Message(msg(&addr, &[("city", s(c))])));
        }
        index.upsert(Bytes::from(format!("p{n}")), m, n);
    }
    (pool, index)
}

#[test]
fn null_semantics_and_operators() {
    let (pool, index) = people();
    let ids = |q: &str| run_entities(&index, &pool, q, &[], Paging::default()).0;
    assert_eq!(
        ids("FROM keycloak.Person p WHERE p.name != 'bob'"),
        vec![1, 3, 4, 5],
        "!= matches null fields"
    );
    assert_eq!(
        ids("FROM keycloak.Person p WHERE p.age > 25"),
        vec![1, 4, 5]
    );
    assert_eq!(
        ids("FROM keycloak.Person p WHERE NOT p.age > 25"),
        vec![2, 3]
    );
    assert_eq!(ids("FROM keycloak.Person p WHERE p.age IS NULL"), vec![2]);
    assert_eq!(
        ids("FROM keycloak.Person p WHERE p.age IS NOT NULL AND p.age <= 30"),
        vec![1, 3, 5]
    );
    assert_eq!(
        ids("FROM keycloak.Person p WHERE p.age BETWEEN 20 AND 30"),
        vec![1, 3, 5]
    );
    assert_eq!(
        ids("FROM keycloak.Person p WHERE p.age NOT BETWEEN 21 AND 30"),
        vec![2, 3, 4]
    );
    assert_eq!(
        ids("FROM keycloak.Person p WHERE p.name LIKE 'al%'"),
        vec![1, 4]
    );
    assert_eq!(
        ids("FROM keycloak.Person p WHERE p.name LIKE '_ob'"),
        vec![2]
    );
    assert_eq!(
        ids("FROM keycloak.Person p WHERE p.name LIKE 'c_d'"),
        vec![5]
    );
    assert_eq!(
        ids("FROM keycloak.Person p WHERE p.name NOT LIKE '%a%'"),
        vec![2, 3, 5]
    );
    assert_eq!(
        ids("FROM keycloak.Person p WHERE p.name IN ('bob', 'alba', 'zed')"),
        vec![2, 4]
    );
    assert_eq!(ids("FROM keycloak.Person p WHERE p.score >= 1"), vec![1, 2]);
    assert_eq!(
        ids("FROM keycloak.Person p WHERE p.score < 2.0e0 and !(p.score < 1)"),
        vec![1]
    );
    assert_eq!(
        ids("FROM keycloak.Person p WHERE p.address.city = 'Paris'"),
        vec![1, 4]
    );
    assert_eq!(
        ids("FROM keycloak.Person WHERE address.city IS NULL"),
        vec![2, 5]
    );
    assert_eq!(
        ids("from keycloak.Person p where (p.age = 30 or p.age = 40) and p.name <> 'alice'"),
        vec![4, 5]
    );
    // ORDER BY: nulls first ascending, last descending; ties by key.
    assert_eq!(
        ids("FROM keycloak.Person p ORDER BY p.age"),
        vec![2, 3, 1, 5, 4]
    );
    assert_eq!(
        ids("FROM keycloak.Person p ORDER BY p.age DESC"),
        vec![4, 1, 5, 3, 2]
    );
    assert_eq!(
        ids("FROM keycloak.Person p ORDER BY p.age DESC, p.name DESC"),
        vec![4, 5, 1, 3, 2]
    );
    assert_eq!(
        ids("FROM keycloak.Person p ORDER BY p.address.city ASC, p.score desc"),
        vec![2, 5, 3, 1, 4]
    );
}

#[test]
fn aggregates() {
    let (pool, index) = people();
    let (rows, hits) = run_rows(
        &index,
        &pool,
        "SELECT p.age, count(p), count(p.score), sum(p.score), avg(p.score), min(p.name), max(p.name) FROM keycloak.Person p GROUP BY p.age ORDER BY p.age DESC",
        &[],
        Paging::default(),
    );
    assert_eq!(hits, 4);
    assert_eq!(
        rows,
        vec![
            vec![
                Value::Int32(40),
                Value::Int64(1),
                Value::Int64(1),
                Value::Double(0.5),
                Value::Double(0.5),
                sv("alba"),
                sv("alba")
            ],
            vec![
                Value::Int32(30),
                Value::Int64(2),
                Value::Int64(1),
                Value::Double(1.5),
                Value::Double(1.5),
                sv("alice"),
                sv("c_d")
            ],
            vec![
                Value::Int32(20),
                Value::Int64(1),
                Value::Int64(0),
                Value::Null,
                Value::Null,
                Value::Null,
                Value::Null
            ],
            vec![
                Value::Null,
                Value::Int64(1),
                Value::Int64(1),
                Value::Double(2.5),
                Value::Double(2.5),
                sv("bob"),
                sv("bob")
            ],
        ]
    );
    let (rows, _) = run_rows(
        &index,
        &pool,
        "SELECT sum(p.age), max(p.age) FROM keycloak.Person p",
        &[],
        Paging::default(),
    );
    assert_eq!(rows, vec![vec![Value::Int64(120), Value::Int32(40)]]);
    let (rows, hits) = run_rows(
        &index,
        &pool,
        "SELECT p.name, p.age FROM keycloak.Person p WHERE p.age = 30 ORDER BY p.name DESC",
        &[],
        Paging {
            start_offset: 1,
            max_results: Some(5),
        },
    );
    assert_eq!((rows, hits), (vec![vec![sv("alice"), Value::Int32(30)]], 2));
}

fn err(q: &str, p: &[(&str, Value)]) -> IckleError {
    let pool = pool();
    let result = match prepare(q, &resolver(&pool)) {
        Err(e) => e,
        Ok(prepared) => prepared.bind(&params(p)).expect_err("query should fail"),
    };
    result
}

#[test]
fn errors_are_clear_and_positioned() {
    let e = err("FROM keycloak.Nope e", &[]);
    assert_eq!(e.to_string(), "unknown entity 'keycloak.Nope' at column 6: no such message type in the registered schemas");
    let e = err("FROM keycloak.Person e WHERE e.nam = 'x'", &[]);
    assert!(matches!(e, IckleError::UnknownField { pos: 29, .. }), "{e}");
    assert!(e.to_string().contains("no field 'nam'"), "{e}");
    let e = err("FROM keycloak.Person e WHERE e.name = ", &[]);
    assert!(matches!(e, IckleError::Syntax { pos: 38, .. }), "{e}");
    let e = err("FROM keycloak.Person e WHERE e.name = 'x", &[]);
    assert!(e.to_string().contains("unterminated string"), "{e}");
    let e = err("FROM keycloak.Person e WHERE e.name : 'x'", &[]);
    assert_eq!(
        e.to_string(),
        "not supported at column 37: full-text queries (field : term) are not supported"
    );
    let e = err("FROM keycloak.Person e WHERE e.age:3", &[]);
    assert!(matches!(e, IckleError::Unsupported { pos: 34, .. }), "{e}");
    let e = err("FROM keycloak.Person e WHERE e.age = 'x'", &[]);
    assert!(matches!(e, IckleError::Type { pos: 37, .. }), "{e}");
    let e = err("FROM keycloak.Person e WHERE e.age = :a", &[("a", sv("x"))]);
    assert_eq!(
        e.to_string(),
        "parameter error at column 38: parameter ':a' is string but field age is integer"
    );
    let e = err("FROM keycloak.Person e WHERE e.age = :a", &[]);
    assert!(e.to_string().contains("':a' was not set"), "{e}");
    let e = err(
        "FROM keycloak.Person e WHERE e.age = :a",
        &[("a", Value::Int32(1)), ("b", Value::Int32(1))],
    );
    assert!(e.to_string().contains("no parameter named 'b'"), "{e}");
    let e = err("FROM keycloak.Person e WHERE e.tags = 'a'", &[]);
    assert!(matches!(e, IckleError::Unsupported { .. }), "{e}");
    let e = err("SELECT e.name FROM keycloak.Person e GROUP BY e.age", &[]);
    assert!(matches!(e, IckleError::Unsupported { .. }), "{e}");
    let e = err(
        "SELECT e.age, count(e) FROM keycloak.Person e GROUP BY e.age HAVING count(e) > 1",
        &[],
    );
    assert!(e.to_string().contains("HAVING"), "{e}");
    let e = err("FROM keycloak.Person e, keycloak.Address a", &[]);
    assert!(matches!(e, IckleError::Unsupported { .. }), "{e}");
    let e = err("FROM keycloak.Person e WHERE e.name = e.name", &[]);
    assert!(matches!(e, IckleError::Unsupported { .. }), "{e}");
    let e = err("FROM keycloak.Person e WHERE upper(e.name) = 'A'", &[]);
    assert!(matches!(e, IckleError::Syntax { .. }), "{e}");
    let e = err("FROM keycloak.Person e WHERE e.name = null", &[]);
    assert!(e.to_string().contains("IS NULL"), "{e}");
    let e = err("SELECT sum(e.name) FROM keycloak.Person e", &[]);
    assert!(matches!(e, IckleError::Type { .. }), "{e}");
    let e = err("UPDATE keycloak.Person SET name = 'x'", &[]);
    assert!(matches!(e, IckleError::Unsupported { .. }), "{e}");
    let e = err("FROM keycloak.Person e ORDER BY e.name LIMIT 5", &[]);
    assert!(matches!(e, IckleError::Syntax { .. }), "{e}");
    let e = err(
        "SELECT e.age FROM keycloak.Person e ORDER BY e.name GROUP BY e.age",
        &[],
    );
    assert!(matches!(e, IckleError::Syntax { .. }), "{e}");
    let e = err("FROM keycloak.Person e WHERE e.address = 'x'", &[]);
    assert!(matches!(e, IckleError::Unsupported { .. }), "{e}");
    let e = err("FROM keycloak.Person e WHERE e.blob = 'x'", &[]);
    assert!(matches!(e, IckleError::Unsupported { .. }), "{e}");
    let e = err(
        "FROM keycloak.RemoteUserSessionEntity e WHERE e.state = 'GONE'",
        &[],
    );
    assert!(matches!(e, IckleError::Type { .. }), "{e}");
}

#[test]
fn enums_compare_by_name_or_number() {
    let pool = pool();
    let desc = pool
        .get_message_by_name("keycloak.RemoteUserSessionEntity")
        .unwrap();
    let mut index = QueryIndex::new(HashMap::new());
    index.upsert(
        Bytes::from("a"),
        msg(
            &desc,
            &[("state", RValue::EnumNumber(2)), ("realmId", s("r"))],
        ),
        1u32,
    );
    index.upsert(
        Bytes::from("b"),
        msg(
            &desc,
            &[("state", RValue::EnumNumber(1)), ("realmId", s("r"))],
        ),
        2u32,
    );
    let ids = |q: &str, p: &[(&str, Value)]| run_entities(&index, &pool, q, p, Paging::default()).0;
    assert_eq!(
        ids(
            "FROM keycloak.RemoteUserSessionEntity e WHERE e.state = 'LOGGED_OUT'",
            &[]
        ),
        vec![1]
    );
    assert_eq!(
        ids(
            "FROM keycloak.RemoteUserSessionEntity e WHERE e.state = 1",
            &[]
        ),
        vec![2]
    );
    assert_eq!(
        ids(
            "FROM keycloak.RemoteUserSessionEntity e WHERE e.state = :s",
            &[("s", sv("RESTARTING"))]
        ),
        vec![2]
    );
    let (rows, _) = run_rows(
        &index,
        &pool,
        "SELECT e.state FROM keycloak.RemoteUserSessionEntity e ORDER BY e.state",
        &[],
        Paging::default(),
    );
    assert_eq!(
        rows[0],
        vec![Value::Enum {
            type_name: Some("keycloak.State".into()),
            name: Some("RESTARTING".into()),
            number: 1
        }]
    );
}

#[test]
fn other_entity_types_in_the_same_cache_are_not_results() {
    let (pool, mut index) = sessions(true);
    let lf = pool
        .get_message_by_name("keycloak.LoginFailureEntity")
        .unwrap();
    index.upsert(Bytes::from("lf"), msg(&lf, &[("realmId", s("r1"))]), 999);
    let (rows, hits) = run_entities(
        &index,
        &pool,
        "FROM keycloak.LoginFailureEntity e WHERE e.realmId = 'r1'",
        &[],
        Paging::default(),
    );
    assert_eq!((rows, hits), (vec![999], 1));
    let (_, hits) = run_entities(
        &index,
        &pool,
        "FROM keycloak.RemoteUserSessionEntity e WHERE e.realmId = 'r1'",
        &[],
        Paging::default(),
    );
    assert_eq!(hits, 5);
    // A key changing type leaves the old type's results.
    index.upsert(Bytes::from("us-0"), msg(&lf, &[("realmId", s("r1"))]), 1000);
    let (_, hits) = run_entities(
        &index,
        &pool,
        "FROM keycloak.RemoteUserSessionEntity e WHERE e.realmId = 'r1'",
        &[],
        Paging::default(),
    );
    assert_eq!(hits, 4);
}

#[test]
fn numbers_and_strings_convert_to_the_field_type_as_infinispan_does() {
    let (pool, index) = people();
    let ids = |q: &str, p: &[(&str, Value)]| {
        let mut v = run_entities(&index, &pool, q, p, Paging::default()).0;
        v.sort();
        v
    };
    let age = "FROM keycloak.Person p WHERE p.age = :a";
    // A double for an int field: truncated (the npm client wraps JS numbers as doubles).
    assert_eq!(ids(age, &[("a", Value::Double(30.0))]), vec![1, 5]);
    assert_eq!(ids(age, &[("a", Value::Double(30.9))]), vec![1, 5]);
    assert_eq!(ids(age, &[("a", Value::Float(20.0))]), vec![3]);
    assert_eq!(
        ids(
            "FROM keycloak.Person p WHERE p.age > :a",
            &[("a", Value::Double(29.5))]
        ),
        vec![1, 4, 5]
    );
    // A string for a number field: parsed.
    assert_eq!(ids(age, &[("a", sv("40"))]), vec![4]);
    assert_eq!(
        ids(
            "FROM keycloak.Person p WHERE p.score > :s",
            &[("s", sv("1.0"))]
        ),
        vec![1, 2]
    );
    // Quoted literals too.
    assert_eq!(
        ids("FROM keycloak.Person p WHERE p.age = '20'", &[]),
        vec![3]
    );
    assert_eq!(
        ids("FROM keycloak.Person p WHERE p.score < '1'", &[]),
        vec![4]
    );
    // A bool field takes 'true'/'false' in any case.
    let remember = "FROM keycloak.RemoteUserSessionEntity e WHERE e.rememberMe = :r";
    let prepared = prepare(remember, &resolver(&pool)).unwrap();
    assert!(prepared.bind(&params(&[("r", sv("TRUE"))])).is_ok());
    assert!(prepare(
        "FROM keycloak.RemoteUserSessionEntity e WHERE e.rememberMe = 'false'",
        &resolver(&pool)
    )
    .is_ok());
    // What is not a number (or boolean) stays an error.
    let e = err(age, &[("a", sv("x"))]);
    assert_eq!(
        e.to_string(),
        "parameter error at column 38: parameter ':a' is string but field age is integer"
    );
    let e = err(age, &[("a", sv("1.5"))]);
    assert!(matches!(e, IckleError::Parameter { .. }), "{e}");
    let e = err(age, &[("a", Value::Double(f64::NAN))]);
    assert!(matches!(e, IckleError::Parameter { .. }), "{e}");
    let e = err(remember, &[("r", sv("yes"))]);
    assert!(matches!(e, IckleError::Parameter { .. }), "{e}");
    let e = err(remember, &[("r", Value::Int32(1))]);
    assert!(matches!(e, IckleError::Parameter { .. }), "{e}");
    let e = err(
        "FROM keycloak.Person p WHERE p.name = :n",
        &[("n", Value::Int32(5))],
    );
    assert!(matches!(e, IckleError::Parameter { .. }), "{e}");
    let e = err("FROM keycloak.Person p WHERE p.age = 'abc'", &[]);
    assert!(matches!(e, IckleError::Type { pos: 37, .. }), "{e}");
}
