//! PING per version (§9.1), the cache-not-found contract (§4) and the admin EXEC tasks (§14).

mod common;

use common::*;
use ferrod_codec::{op, status, MediaType, PingInfo, Request, ResponseBody};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PROTO_CACHE: &str = r#"
[[cache]]
name = "proto"
key_media_type = "application/x-protostream"
value_media_type = "application/x-protostream"
"#;

const KEYCLOAK_XML: &str = r#"<distributed-cache mode="SYNC" owners="2"><encoding media-type="application/x-protostream"/></distributed-cache>"#;

fn ping_info(r: &ferrod_codec::Response) -> PingInfo {
    assert_status(r, status::SUCCESS);
    assert_eq!(r.header.opcode, op::response_for(op::PING));
    match &r.body {
        ResponseBody::Ping(p) => p.clone(),
        other => panic!("PING body {other:?}"),
    }
}

/// The raw bytes of a PING response to `version` on `cache` with message id 9.
async fn raw_ping(server: &Server, version: u8, cache: &str) -> Vec<u8> {
    let frame = ferrod_codec::RequestFrame {
        header: ferrod_codec::RequestHeader::new(version, op::PING, 9, cache),
        request: Request::Ping,
    };
    let mut s = server.raw().await;
    s.write_all(&encode(&frame)).await.unwrap();
    // Give the server time to write everything, then read what is there.
    let mut out = vec![0u8; 4096];
    let mut len = 0;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(500);
    while let Ok(Ok(n)) = tokio::time::timeout_at(deadline, s.read(&mut out[len..])).await {
        if n == 0 {
            break;
        }
        len += n;
    }
    out.truncate(len);
    out
}

#[tokio::test]
async fn ping_tails_per_version() {
    let server = Server::start_with(ServerOpts::with_config(PROTO_CACHE)).await;
    // 2.8: header only.
    let raw = raw_ping(&server, 28, "proto").await;
    assert_eq!(
        raw,
        vec![0xA1, 9, 0x18, 0x00, 0x00],
        "2.8 PING is header only"
    );
    // 2.9: media types, no version/op list. Protostream is predefined id 12 with no params.
    let raw = raw_ping(&server, 29, "proto").await;
    assert_eq!(
        raw,
        vec![0xA1, 9, 0x18, 0x00, 0x00, 0x01, 12, 0x00, 0x01, 12, 0x00],
        "2.9 PING: key and value media type"
    );
    // 3.0+: media types, server version 41, op list (shorts, 0xEF as 00 EF).
    for v in [30u8, 31, 40, 41] {
        let raw = raw_ping(&server, v, "proto").await;
        assert_eq!(
            &raw[..11],
            &[0xA1, 9, 0x18, 0x00, 0x00, 0x01, 12, 0x00, 0x01, 12, 0x00]
        );
        assert_eq!(raw[11], 41, "server version at {v}");
        let mut c = server.client_v(v).await.with_cache("proto");
        let p = ping_info(&c.ping().await);
        assert_eq!(p.server_version, 41);
        for o in [
            op::PUT,
            op::GET,
            op::PUT_IF_ABSENT,
            op::REPLACE,
            op::REPLACE_IF_UNMODIFIED,
            op::REMOVE,
            op::REMOVE_IF_UNMODIFIED,
            op::CONTAINS_KEY,
            op::GET_WITH_VERSION,
            op::GET_WITH_METADATA,
            op::PING,
            op::SIZE,
            op::CLEAR,
            op::EXEC,
            op::ITERATION_START,
            op::START_PUT_STREAM,
            op::END_GET_STREAM,
        ] {
            assert!(p.operations.contains(&o), "op 0x{o:02X} missing at {v}");
        }
        let n = p.operations.len();
        assert_eq!(
            raw.len(),
            11 + 1 + 1 + 2 * n,
            "op count {n} fits in one vInt byte"
        );
        assert!(
            raw.windows(2).any(|w| w == [0x00, 0xEF]),
            "0xEF written as a short"
        );
        // QUERY is served (and advertised); ops that are not served must not be.
        assert!(p.operations.contains(&op::QUERY));
        assert!(!p.operations.contains(&op::PREPARE_TX));
    }
}

#[tokio::test]
async fn ping_of_empty_name_succeeds_and_missing_cache_is_cache_not_found() {
    let server = Server::start().await;
    for v in [20u8, 28, 29, 31, 40, 41] {
        let mut c = server.client_v(v).await;
        let p = ping_info(&c.ping().await);
        if v >= 30 {
            assert_eq!(p.server_version, 41);
        }
        let mut c = c.with_cache("no-such-cache");
        let r = c.ping().await;
        assert_error(&r, status::PARSE_ERROR, "CacheNotFoundException");
        assert_error(&r, status::PARSE_ERROR, "no-such-cache");
        // Every other op on it answers the same, and the connection keeps working.
        let reqs = vec![
            Request::Get { key: b("k") },
            Request::Put {
                key: b("k"),
                expiration: EXP_DEFAULT,
                value: b("v"),
            },
            Request::ContainsKey { key: b("k") },
            Request::GetWithMetadata { key: b("k") },
            Request::Remove { key: b("k") },
            Request::Size,
            Request::Clear,
            Request::Stats,
            Request::BulkGetKeys { scope: 0 },
        ];
        for req in reqs {
            let what = format!("{req:?}");
            let r = c.req(req).await;
            assert_eq!(r.header.status, status::PARSE_ERROR, "{what} at {v}: {r:?}");
            assert_error(&r, status::PARSE_ERROR, "CacheNotFoundException");
        }
        if v >= 23 {
            let r = c
                .req(Request::IterationStart {
                    segments: None,
                    filter_converter: None,
                    batch_size: 10,
                    include_metadata: false,
                })
                .await;
            assert_error(&r, status::PARSE_ERROR, "CacheNotFoundException");
        }
        c.cache = String::new();
        c.put("still", "works").await;
        assert_eq!(c.get_str("still").await.as_deref(), Some("works"));
    }
}

#[tokio::test]
async fn configured_protostream_cache_reports_media_type_12() {
    let server = Server::start_with(ServerOpts::with_config(PROTO_CACHE)).await;
    let mut c = server.client_v(31).await.with_cache("proto");
    let p = ping_info(&c.ping().await);
    let twelve = MediaType::Predefined {
        id: 12,
        params: vec![],
    };
    assert_eq!(p.key_type, twelve);
    assert_eq!(p.value_type, twelve);
    // The default cache stores raw bytes: application/unknown, id 17.
    let mut c = server.client_v(31).await;
    let p = ping_info(&c.ping().await);
    assert_eq!(media_id(&p.key_type), Some(17), "{p:?}");
}

fn names(r: &ferrod_codec::Response) -> Vec<String> {
    assert_status(r, status::SUCCESS);
    match &r.body {
        ResponseBody::Value(v) => serde_json::from_slice(v).expect("JSON array of names"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn admin_getorcreate_with_keycloak_xml_survives_restart_then_remove() {
    let mut server = Server::start().await;
    let mut admin = server.client_v(40).await;
    let r = admin
        .exec(
            "@@cache@getorcreate",
            &[("name", "sessions"), ("configuration", KEYCLOAK_XML)],
        )
        .await;
    assert_status(&r, status::SUCCESS);
    assert_eq!(r.header.opcode, op::response_for(op::EXEC));
    // Idempotent.
    let r = admin
        .exec(
            "@@cache@getorcreate",
            &[("name", "sessions"), ("configuration", KEYCLOAK_XML)],
        )
        .await;
    assert_status(&r, status::SUCCESS);

    let mut c = server.client_v(31).await.with_cache("sessions");
    let p = ping_info(&c.ping().await);
    assert_eq!(media_id(&p.key_type), Some(12));
    assert_eq!(media_id(&p.value_type), Some(12));
    c.version = 40;
    c.put("s1", "session-data").await;
    let listed = names(&admin.exec("@@cache@names", &[]).await);
    assert!(listed.contains(&"sessions".to_string()), "{listed:?}");

    server.stop().await;
    server.restart().await;

    let mut c = server.client_v(31).await.with_cache("sessions");
    let p = ping_info(&c.ping().await);
    assert_eq!(media_id(&p.key_type), Some(12), "media type after restart");
    assert_eq!(media_id(&p.value_type), Some(12));
    assert_eq!(c.get_str("s1").await.as_deref(), Some("session-data"));
    let mut admin = server.client_v(40).await;
    assert!(names(&admin.exec("@@cache@names", &[]).await).contains(&"sessions".to_string()));

    let r = admin.exec("@@cache@remove", &[("name", "sessions")]).await;
    assert_status(&r, status::SUCCESS);
    let r = c.ping().await;
    assert_error(&r, status::PARSE_ERROR, "CacheNotFoundException");
    assert!(!names(&admin.exec("@@cache@names", &[]).await).contains(&"sessions".to_string()));

    // Removal is durable too.
    server.stop().await;
    server.restart().await;
    let mut c = server.client_v(31).await.with_cache("sessions");
    assert_error(
        &c.ping().await,
        status::PARSE_ERROR,
        "CacheNotFoundException",
    );
    // Re-creating it gives an empty cache.
    let mut admin = server.client_v(40).await;
    let r = admin
        .exec(
            "@@cache@getorcreate",
            &[("name", "sessions"), ("configuration", KEYCLOAK_XML)],
        )
        .await;
    assert_status(&r, status::SUCCESS);
    c.version = 40;
    assert_eq!(
        c.get("s1").await,
        None,
        "a removed cache's data does not come back"
    );
}

#[tokio::test]
async fn admin_unknown_task_and_missing_name_are_errors() {
    let server = Server::start().await;
    let mut c = server.client_v(40).await;
    let r = c.exec("@@cache@frobnicate", &[("name", "x")]).await;
    assert_error(&r, status::SERVER_ERROR, "frobnicate");
    let r = c.exec("no-such-script", &[]).await;
    assert!(status::is_error(r.header.status), "{r:?}");
    let r = c.exec("@@cache@getorcreate", &[]).await;
    assert_error(&r, status::SERVER_ERROR, "name");
    // The connection is still usable.
    c.put("k", "v").await;
    assert_eq!(c.get_str("k").await.as_deref(), Some("v"));
}
