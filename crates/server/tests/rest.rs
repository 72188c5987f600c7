//! HTTP on the HotRod port: the Infinispan REST calls Keycloak's multi-site health check makes,
//! the health endpoints, clear 404/405 for the rest, malformed HTTP, the shared connection limit.

mod common;

use std::time::Duration;

use common::*;
use ferrod_codec::status;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends raw request bytes on a fresh connection and returns everything the server answers
/// until it closes the connection.
async fn http_raw(addr: &str, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let (out, closed) = raw_exchange(&mut s, request, false, CALL_TIMEOUT).await;
    assert!(
        closed,
        "the server did not close after answering: {:?}",
        String::from_utf8_lossy(&out)
    );
    String::from_utf8_lossy(&out).into_owned()
}

async fn http(addr: &str, method: &str, path: &str) -> (u16, String, String) {
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    let text = http_raw(addr, req.as_bytes()).await;
    parse(&text)
}

/// (status, head, body) of one HTTP/1.1 answer.
fn parse(text: &str) -> (u16, String, String) {
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((text, ""));
    let code = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {text:?}"));
    (code, head.to_string(), body.to_string())
}

#[tokio::test]
async fn keycloak_multi_site_calls_are_answered_as_by_an_infinispan_without_sites() {
    let mut server = Server::start().await;
    let addr = server.addr();

    let (code, head, body) = http(&addr, "GET", "/rest/v2/container").await;
    assert_eq!(code, 200, "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{head}"
    );
    let info: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(info["local_site"].is_null(), "{info}");
    assert_eq!(info["sites_view"], serde_json::json!([]));
    assert!(info["cache_configuration_names"]
        .as_array()
        .unwrap()
        .iter()
        .any(|n| n == "default"));

    let (code, _, body) = http(&addr, "GET", "/rest/v2/container/x-site/backups").await;
    assert_eq!((code, body.as_str()), (200, "{}"));
    let (code, _, body) = http(
        &addr,
        "POST",
        "/rest/v2/container/x-site/backups/site-b?action=take-offline",
    )
    .await;
    assert_eq!((code, body.as_str()), (200, "{}"));
    // The same through the older cache-manager paths.
    let (code, _, body) = http(
        &addr,
        "GET",
        "/rest/v2/cache-managers/default/x-site/backups/",
    )
    .await;
    assert_eq!((code, body.as_str()), (200, "{}"));
    let (code, _, _) = http(&addr, "GET", "/rest/v2/cache-managers/default").await;
    assert_eq!(code, 200);
    server.stop().await;
}

#[tokio::test]
async fn health_endpoints_report_healthy_when_the_store_is_ready() {
    let mut server = Server::start().await;
    let addr = server.addr();
    for path in [
        "/rest/v2/container/health/status",
        "/rest/v2/cache-managers/default/health/status",
    ] {
        let (code, head, body) = http(&addr, "GET", path).await;
        assert_eq!((code, body.as_str()), (200, "HEALTHY"), "{path}: {head}");
        let (code, _, body) = http(&addr, "HEAD", path).await;
        assert_eq!((code, body.as_str()), (200, ""), "HEAD {path}");
    }
    for path in [
        "/rest/v2/container/health",
        "/rest/v2/cache-managers/default/health",
    ] {
        let (code, _, body) = http(&addr, "GET", path).await;
        assert_eq!(code, 200, "{path}");
        let h: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(h["cluster_health"]["health_status"], "HEALTHY", "{h}");
        assert!(h["cache_health"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["cache_name"] == "default" && c["status"] == "HEALTHY"));
    }
    server.stop().await;
}

#[tokio::test]
async fn other_paths_and_methods_get_404_405_and_400() {
    let mut server = Server::start().await;
    let addr = server.addr();
    for path in [
        "/",
        "/rest/v2/caches/default",
        "/rest/v2/cache-managers/other/health/status",
        "/rest/v2/container/x-site/backups/site-b",
        "/rest/v2/containers",
        "/rest/v3/container",
    ] {
        let (code, _, _) = http(&addr, "GET", path).await;
        assert_eq!(code, 404, "{path}");
    }
    let (code, head, _) = http(&addr, "DELETE", "/rest/v2/container").await;
    assert_eq!(code, 405);
    assert!(head.to_ascii_lowercase().contains("allow: get"), "{head}");
    let (code, _, _) = http(&addr, "PUT", "/rest/v2/container/health/status").await;
    assert_eq!(code, 405);
    let (code, _, _) = http(&addr, "POST", "/rest/v2/container/x-site/backups/site-b").await;
    assert_eq!(code, 400);
    let (code, _, body) = http(
        &addr,
        "POST",
        "/rest/v2/container/x-site/backups/site-b?action=explode",
    )
    .await;
    assert_eq!(code, 400);
    assert!(body.contains("explode"), "{body}");
    server.stop().await;
}

#[tokio::test]
async fn malformed_http_gets_400_and_leaves_the_server_serving() {
    let mut server = Server::start().await;
    let addr = server.addr();
    let cases: Vec<Vec<u8>> = vec![
        b"GET / HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n".to_vec(),
        b"GARBAGE\r\n\r\n".to_vec(),
        b"GET /rest/v2/container HTTP/9.9\r\n\r\n".to_vec(),
        b"GET /\x00\x01 HTTP/1.1\r\n\r\n".to_vec(),
        b"POST /rest/v2/container HTTP/1.1\r\nContent-Length: nope\r\n\r\n".to_vec(),
    ];
    for req in cases {
        let text = http_raw(&addr, &req).await;
        let (code, _, _) = parse(&text);
        assert!(
            (400..500).contains(&code),
            "{:?} answered {text:?}",
            String::from_utf8_lossy(&req)
        );
    }
    // A request head larger than the server buffers is refused, not accumulated.
    let mut huge = b"GET /rest/v2/container HTTP/1.1\r\nX-Fill: ".to_vec();
    huge.extend(std::iter::repeat_n(b'a', 200 * 1024));
    huge.extend_from_slice(b"\r\n\r\n");
    let mut s = TcpStream::connect(&addr).await.unwrap();
    let _ = s.write_all(&huge).await;
    let (out, closed) = read_until_close(&mut s, CALL_TIMEOUT).await;
    assert!(closed);
    let text = String::from_utf8_lossy(&out);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 431"),
        "{text}"
    );

    // Keep-alive: two requests on one connection, both answered.
    let mut s = TcpStream::connect(&addr).await.unwrap();
    s.write_all(b"GET /rest/v2/container/health/status HTTP/1.1\r\nHost: x\r\n\r\nGET /rest/v2/container/x-site/backups HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut out = String::new();
    tokio::time::timeout(CALL_TIMEOUT, s.read_to_string(&mut out))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(out.matches("HTTP/1.1 200").count(), 2, "{out}");

    server.assert_running();
    let mut c = server.client().await;
    c.put("after-http", "ok").await;
    assert_eq!(c.get_str("after-http").await.as_deref(), Some("ok"));
    server.stop().await;
}

#[tokio::test]
async fn rest_can_be_switched_off() {
    let mut server = Server::start_with(ServerOpts::default().arg("--rest").arg("false")).await;
    // HTTP is then just bytes that cannot start a HotRod request: answered with a HotRod error.
    let mut s = TcpStream::connect(server.addr()).await.unwrap();
    let (out, _) = raw_exchange(
        &mut s,
        b"GET /rest/v2/container HTTP/1.1\r\n\r\n",
        true,
        CALL_TIMEOUT,
    )
    .await;
    assert!(
        !out.starts_with(b"HTTP/"),
        "{:?}",
        String::from_utf8_lossy(&out)
    );
    assert_eq!(out.first(), Some(&0xA1), "expected a HotRod response");
    server.stop().await;
}

#[tokio::test]
async fn http_and_hotrod_connections_share_max_connections() {
    let mut server =
        Server::start_with(ServerOpts::default().arg("--max-connections").arg("2")).await;
    let addr = server.addr();
    // The harness's readiness probe connection may still hold its slot for a moment: wait
    // until two HotRod connections are served.
    let mut held = Vec::new();
    while held.len() < 2 {
        let mut c = Client::connect(&addr).await;
        let f = c.frame(ferrod_codec::Request::Ping, 0);
        c.send(f).await;
        if let Some(Ok(ferrod_codec::Incoming::Response(r))) = c.try_recv().await {
            assert_eq!(r.header.status, status::SUCCESS);
            held.push(c);
        } else {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // Both slots taken: an HTTP connection is refused like a HotRod one.
    let mut s = TcpStream::connect(&addr).await.unwrap();
    let (out, closed) = raw_exchange(
        &mut s,
        b"GET /rest/v2/container/health/status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        false,
        CALL_TIMEOUT,
    )
    .await;
    assert!(
        closed && out.is_empty(),
        "{:?}",
        String::from_utf8_lossy(&out)
    );
    assert!(
        server.log().contains("limit of 2 connections"),
        "{}",
        server.log()
    );

    // One HotRod connection leaves: HTTP is served again.
    held.pop();
    let mut answered = None;
    for _ in 0..500 {
        let mut s = TcpStream::connect(&addr).await.unwrap();
        let (out, _) = raw_exchange(
            &mut s,
            b"GET /rest/v2/container/health/status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            false,
            CALL_TIMEOUT,
        )
        .await;
        if !out.is_empty() {
            answered = Some(String::from_utf8_lossy(&out).into_owned());
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let answered = answered.expect("HTTP never served after a slot was freed");
    assert!(answered.starts_with("HTTP/1.1 200"), "{answered}");
    server.stop().await;
}

/// (status, head, body) of one request with extra header lines (each ending in `\r\n`).
async fn http_with(addr: &str, method: &str, path: &str, headers: &str) -> (u16, String, String) {
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\n{headers}Content-Length: 0\r\nConnection: close\r\n\r\n"
    );
    parse(&http_raw(addr, req.as_bytes()).await)
}

fn basic(user: &str, password: &str) -> String {
    use base64::Engine;
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Authorization: Basic {token}\r\n")
}

/// A server with a credentials file: `admin` (admin), `app` (application), `cert` (certificate
/// only, no password).
async fn start_with_users() -> (Server, tempfile::TempDir) {
    use ferrod::auth::roles::Role;
    use ferrod::auth::users::{User, Users};
    let dir = tempfile::tempdir().unwrap();
    let mut users = Users::default();
    for (name, role) in [("admin", Role::Admin), ("app", Role::Application)] {
        let u = User::with_password(name, vec![role], "s3cret:pw", "default", 4096);
        users.users.insert(u.name.clone(), u);
    }
    {
        let u = User::with_password("latin", vec![Role::Monitor], "pässword", "default", 4096);
        users.users.insert(u.name.clone(), u);
    }
    let cert = User {
        name: "cert".into(),
        roles: vec![Role::Admin],
        scram: Default::default(),
        digest: Default::default(),
    };
    users.users.insert(cert.name.clone(), cert);
    let path = dir.path().join("users.txt");
    std::fs::write(&path, users.render()).unwrap();
    let server = Server::start_with(
        ServerOpts::default()
            .arg("--credentials-file")
            .arg(path.to_str().unwrap()),
    )
    .await;
    (server, dir)
}

#[tokio::test]
async fn with_credentials_rest_needs_basic_auth_and_the_role_except_the_probe_status() {
    let (server, _dir) = start_with_users().await;
    let addr = server.addr();
    let info = "/rest/v2/container";
    let offline = "/rest/v2/container/x-site/backups/site-b?action=take-offline";

    // Probes stay anonymous, as upstream's health/status.
    for path in [
        "/rest/v2/container/health/status",
        "/rest/v2/cache-managers/default/health/status",
    ] {
        let (code, head, body) = http(&addr, "GET", path).await;
        assert_eq!((code, body.as_str()), (200, "HEALTHY"), "{path}: {head}");
    }

    // No, malformed or wrong credentials: 401 with the Basic challenge, nothing of the answer.
    let no_colon = {
        use base64::Engine;
        let t = base64::engine::general_purpose::STANDARD.encode("adminnopassword");
        format!("Authorization: Basic {t}\r\n")
    };
    let refused = [
        String::new(),
        "Authorization: Basic\r\n".to_string(),
        "Authorization: Basic !!!not-base64\r\n".to_string(),
        "Authorization: Bearer abc\r\n".to_string(),
        "Authorization: Digest username=\"admin\"\r\n".to_string(),
        no_colon,
        basic("admin", "wrong"),
        basic("admin", "s3cret"),
        basic("nobody", "s3cret:pw"),
        basic("cert", ""),
    ];
    for headers in &refused {
        for (method, path) in [
            ("GET", info),
            ("GET", "/rest/v2/container/health"),
            ("GET", "/rest/v2/container/x-site/backups"),
            ("POST", offline),
        ] {
            let (code, head, body) = http_with(&addr, method, path, headers).await;
            assert_eq!(code, 401, "{method} {path} with {headers:?}: {head}");
            assert!(
                head.to_ascii_lowercase()
                    .contains("www-authenticate: basic realm=\"default\""),
                "{head}"
            );
            assert!(!body.contains("sites_view"), "{body}");
        }
    }

    // The password (with a ':' in it) of a user with the role.
    let admin = basic("admin", "s3cret:pw");
    let (code, head, body) = http_with(&addr, "GET", info, &admin).await;
    assert_eq!(code, 200, "{head}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(json["local_site"].is_null(), "{json}");
    let (code, head, body) = http_with(&addr, "POST", offline, &admin).await;
    assert_eq!((code, body.as_str()), (200, "{}"), "{head}");

    // A non-ASCII password in UTF-8 and in ISO-8859-1 (as Infinispan's REST client sends it).
    use base64::Engine;
    let latin1: Vec<u8> = "latin:pässword".chars().map(|c| c as u8).collect();
    let latin1 = format!(
        "Authorization: Basic {}\r\n",
        base64::engine::general_purpose::STANDARD.encode(latin1)
    );
    for headers in [basic("latin", "pässword"), latin1] {
        let (code, head, _) = http_with(&addr, "GET", info, &headers).await;
        assert_eq!(code, 200, "{headers:?}: {head}");
    }
    let (code, _, _) = http_with(&addr, "GET", info, &basic("latin", "passsword")).await;
    assert_eq!(code, 401);

    // Authenticated but without ADMIN: info yes, the site operations 403 (no challenge).
    let app = basic("app", "s3cret:pw");
    let (code, head, _) = http_with(&addr, "GET", info, &app).await;
    assert_eq!(code, 200, "{head}");
    let (code, head, _) = http_with(&addr, "GET", "/rest/v2/container/health", &app).await;
    assert_eq!(code, 200, "{head}");
    for (method, path) in [
        ("POST", offline),
        ("GET", "/rest/v2/container/x-site/backups"),
    ] {
        let (code, head, body) = http_with(&addr, method, path, &app).await;
        assert_eq!(code, 403, "{method} {path}: {head}");
        assert!(
            !head.to_ascii_lowercase().contains("www-authenticate"),
            "{head}"
        );
        assert!(body.contains("lacks 'ADMIN'"), "{body}");
    }

    // Unknown paths stay 404 whoever asks; HotRod on the same port still wants SASL.
    let (code, _, _) = http(&addr, "GET", "/rest/v2/caches").await;
    assert_eq!(code, 404);
    let mut c = server.client().await;
    let r = c.req(ferrod_codec::Request::Get { key: b("k") }).await;
    assert_eq!(r.header.status, status::SERVER_ERROR);
}
