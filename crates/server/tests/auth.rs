//! SASL authentication and role-based authorization, driven over the wire with the mechanisms'
//! client sides (`ferrod::auth::{scram, digest}`) against the real binary.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use bytes::Bytes;
use common::*;
use ferrod::auth::hash::HashAlg;
use ferrod::auth::roles::Role;
use ferrod::auth::users::{User, Users};
use ferrod::auth::{digest, scram};
use ferrod_codec::{status, Request, Response, ResponseBody};

const PASSWORD: &str = "pencil-😀-ü";

/// A credentials file with one user per role (named after the role) plus `nobody` (no roles).
/// Deriving the hashes is deliberately slow, so the text is made once per test binary.
fn credentials(dir: &Path) -> PathBuf {
    static TEXT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let text = TEXT.get_or_init(|| {
        let mut users = Users::default();
        for role in Role::ALL {
            let u = User::with_password(role.name(), vec![role], PASSWORD, "default", 4096);
            users.users.insert(u.name.clone(), u);
        }
        let u = User::with_password("nobody", vec![], PASSWORD, "default", 4096);
        users.users.insert(u.name.clone(), u);
        users.render()
    });
    let path = dir.join("users.txt");
    std::fs::write(&path, text).unwrap();
    path
}

struct AuthServer {
    server: Server,
    _creds: tempfile::TempDir,
}

async fn start(config_toml: Option<&str>) -> AuthServer {
    let creds = tempfile::tempdir().unwrap();
    let path = credentials(creds.path());
    let mut opts = match config_toml {
        Some(t) => ServerOpts::with_config(t),
        None => ServerOpts::default(),
    };
    opts = opts.arg("--credentials-file").arg(path.to_str().unwrap());
    AuthServer {
        server: Server::start_with(opts).await,
        _creds: creds,
    }
}

async fn auth_step(c: &mut Client, mech: &str, data: &[u8]) -> Response {
    c.req(Request::Auth {
        mechanism: mech.to_string(),
        response: Bytes::copy_from_slice(data),
    })
    .await
}

fn auth_body(r: &Response) -> (bool, Bytes) {
    match &r.body {
        ResponseBody::Auth {
            complete,
            challenge,
        } => (*complete, challenge.clone()),
        other => panic!("not an AUTH response: {other:?} ({:?})", r.header),
    }
}

fn scram_hash(mech: &str) -> HashAlg {
    match mech {
        "SCRAM-SHA-1" => HashAlg::Sha1,
        "SCRAM-SHA-256" => HashAlg::Sha256,
        "SCRAM-SHA-384" => HashAlg::Sha384,
        "SCRAM-SHA-512" => HashAlg::Sha512,
        "DIGEST-MD5" => HashAlg::Md5,
        "DIGEST-SHA" => HashAlg::Sha1,
        "DIGEST-SHA-256" => HashAlg::Sha256,
        "DIGEST-SHA-384" => HashAlg::Sha384,
        "DIGEST-SHA-512" => HashAlg::Sha512,
        _ => unreachable!(),
    }
}

/// Runs a whole exchange the way the Java client does and returns the last response: the
/// final server data (SCRAM `v=`, DIGEST `rspauth`) is checked, so a server that skipped it
/// or sent a wrong one fails here.
async fn authenticate(c: &mut Client, mech: &str, user: &str, password: &str) -> Response {
    if mech == "PLAIN" {
        let msg = format!("\0{user}\0{password}");
        return auth_step(c, mech, msg.as_bytes()).await;
    }
    if mech.starts_with("SCRAM-") {
        let (mut client, first) =
            scram::Client::new(scram_hash(mech), user, password, "fyko+d2lbbFgONRv9qkxdawL");
        let r = auth_step(c, mech, &first).await;
        if r.header.status != status::SUCCESS {
            return r;
        }
        let (complete, server_first) = auth_body(&r);
        assert!(!complete, "server-first must come with complete=0");
        let cf = client.client_final(&server_first).unwrap();
        let r = auth_step(c, mech, &cf).await;
        if r.header.status == status::SUCCESS {
            let (complete, server_final) = auth_body(&r);
            assert!(!complete, "server-final has data, so complete=0 (upstream)");
            client.verify_server(&server_final).unwrap();
        }
        return r;
    }
    // DIGEST-*: no initial response; challenge, response, rspauth.
    let r = auth_step(c, mech, b"").await;
    assert_status(&r, status::SUCCESS);
    let (complete, challenge) = auth_body(&r);
    assert!(!complete);
    let text = String::from_utf8(challenge.to_vec()).unwrap();
    assert!(
        text.contains("realm=\"default\"") && text.contains("qop=\"auth\""),
        "{text}"
    );
    let (resp, rspauth) = digest::client_response(
        scram_hash(mech),
        &challenge,
        user,
        password,
        "hotrod/infinispan",
        "OA6MHXh6VqTrRk",
    )
    .unwrap();
    let r = auth_step(c, mech, &resp).await;
    if r.header.status == status::SUCCESS {
        let (complete, fin) = auth_body(&r);
        assert!(!complete, "rspauth has data, so complete=0 (upstream)");
        assert_eq!(String::from_utf8_lossy(&fin), rspauth);
    }
    r
}

const ALL_MECHS: &[&str] = &[
    "SCRAM-SHA-512",
    "SCRAM-SHA-384",
    "SCRAM-SHA-256",
    "SCRAM-SHA-1",
    "DIGEST-SHA-512",
    "DIGEST-SHA-384",
    "DIGEST-SHA-256",
    "DIGEST-SHA",
    "DIGEST-MD5",
    "PLAIN",
];

#[tokio::test]
async fn every_mechanism_authenticates_and_then_serves() {
    let s = start(None).await;
    let mut c = s.server.client_v(31).await;
    let r = c.req(Request::AuthMechList).await;
    let ResponseBody::AuthMechs(mechs) = &r.body else {
        panic!("{r:?}")
    };
    assert_eq!(
        mechs, ALL_MECHS,
        "EXTERNAL is offered only with a client certificate"
    );
    for mech in ALL_MECHS {
        let mut c = s.server.client_v(31).await;
        let r = authenticate(&mut c, mech, "application", PASSWORD).await;
        assert_status(&r, status::SUCCESS);
        if *mech == "PLAIN" {
            assert_eq!(
                auth_body(&r),
                (true, Bytes::new()),
                "PLAIN completes with no data"
            );
        }
        c.version = 41;
        let key = format!("k-{mech}");
        c.put(&key, mech).await;
        assert_eq!(c.get_str(&key).await.as_deref(), Some(*mech));
    }
}

#[tokio::test]
async fn wrong_password_and_unknown_user_are_refused_alike_and_the_connection_stays_usable() {
    let s = start(None).await;
    for mech in ["SCRAM-SHA-512", "DIGEST-MD5", "DIGEST-SHA-256", "PLAIN"] {
        let mut c = s.server.client_v(31).await;
        let wrong = authenticate(&mut c, mech, "application", "pencil").await;
        assert_error(&wrong, status::SERVER_ERROR, "authentication failed");
        let unknown = authenticate(&mut c, mech, "ghost", PASSWORD).await;
        assert_error(&unknown, status::SERVER_ERROR, "authentication failed");
        assert_eq!(
            wrong.body, unknown.body,
            "{mech}: the client cannot tell them apart"
        );
        let r = c.req(Request::Get { key: b("k") }).await;
        assert_error(&r, status::SERVER_ERROR, "requires authentication");
        let r = authenticate(&mut c, mech, "application", PASSWORD).await;
        assert_status(&r, status::SUCCESS);
        assert!(c.get(&format!("absent-{mech}")).await.is_none());
    }
    assert!(
        s.server.log().contains("wrong password"),
        "the log says why"
    );
}

#[tokio::test]
async fn operations_before_authentication_are_refused_except_ping() {
    let s = start(None).await;
    let mut c = s.server.client_v(31).await;
    assert_status(&c.ping().await, status::SUCCESS);
    for req in [
        Request::Get { key: b("k") },
        Request::Size,
        Request::Stats,
        Request::Clear,
        Request::Exec {
            task: "@@cache@names".into(),
            params: vec![],
        },
    ] {
        let r = c.req(req).await;
        assert_error(&r, status::SERVER_ERROR, "requires authentication");
    }
    let r = c
        .req(Request::Put {
            key: b("k"),
            expiration: EXP_DEFAULT,
            value: b("v"),
        })
        .await;
    assert_error(&r, status::SERVER_ERROR, "'PUT' requires authentication");
    // Mechanisms not offered, or a mechanism switched half-way, fail cleanly too.
    let r = auth_step(&mut c, "EXTERNAL", b"").await;
    assert_error(&r, status::SERVER_ERROR, "authentication failed");
    let r = auth_step(&mut c, "CRAM-MD5", b"").await;
    assert_error(&r, status::SERVER_ERROR, "authentication failed");
    let r = auth_step(&mut c, "DIGEST-MD5", b"").await;
    assert_status(&r, status::SUCCESS);
    let r = auth_step(&mut c, "PLAIN", format!("\0admin\0{PASSWORD}").as_bytes()).await;
    assert_error(&r, status::SERVER_ERROR, "authentication failed");
    assert!(s.server.log().contains("mechanism changed"));
    let r = authenticate(&mut c, "SCRAM-SHA-256", "admin", PASSWORD).await;
    assert_status(&r, status::SUCCESS);
    c.version = 41;
    assert_eq!(c.size().await, 0);
}

#[tokio::test]
async fn roles_decide_what_a_user_may_do() {
    let toml = "[[cache]]\nname = \"secret\"\nroles = [\"admin\"]\n";
    let s = start(Some(toml)).await;
    let login = |user: &'static str| {
        let addr = s.server.addr();
        async move {
            let mut c = Client::connect(&addr).await;
            c.version = 31;
            let r = authenticate(&mut c, "SCRAM-SHA-512", user, PASSWORD).await;
            assert_status(&r, status::SUCCESS);
            c.version = 41;
            c
        }
    };
    let mut app = login("application").await;
    app.put("k", "v").await;
    let r = app
        .exec("@@cache@getorcreate", &[("name", "made-by-app")])
        .await;
    assert_error(&r, status::SERVER_ERROR, "lacks 'CREATE' permission");
    let r = app.exec("@@cache@names", &[]).await;
    assert_status(&r, status::SUCCESS);
    let mut secret = login("application").await.with_cache("secret");
    let r = secret.req(Request::Get { key: b("k") }).await;
    assert_error(
        &r,
        status::SERVER_ERROR,
        "lacks 'READ' permission on cache 'secret'",
    );

    let mut observer = login("observer").await;
    assert_eq!(observer.get_str("k").await.as_deref(), Some("v"));
    let r = observer
        .req(Request::Put {
            key: b("k"),
            expiration: EXP_DEFAULT,
            value: b("w"),
        })
        .await;
    assert_error(&r, status::SERVER_ERROR, "lacks 'WRITE' permission");
    let r = observer.req(Request::Clear).await;
    assert_error(&r, status::SERVER_ERROR, "lacks 'BULK_WRITE' permission");
    // Refused, and still usable.
    assert_eq!(observer.size().await, 1);
    assert!(!observer.stats().await.is_empty());

    let mut monitor = login("monitor").await;
    assert!(!monitor.stats().await.is_empty());
    let r = monitor.req(Request::Get { key: b("k") }).await;
    assert_error(&r, status::SERVER_ERROR, "lacks 'READ' permission");

    let mut nobody = login("nobody").await;
    let r = nobody.req(Request::Get { key: b("k") }).await;
    assert_error(&r, status::SERVER_ERROR, "lacks 'READ' permission");

    let mut deployer = login("deployer").await;
    let r = deployer
        .exec("@@cache@getorcreate", &[("name", "made-by-deployer")])
        .await;
    assert_status(&r, status::SUCCESS);
    let r = deployer
        .exec("@@cache@reindex", &[("name", "made-by-deployer")])
        .await;
    assert_error(&r, status::SERVER_ERROR, "lacks 'ADMIN' permission");

    let mut admin = login("admin").await.with_cache("secret");
    admin.put("s", "1").await;
    assert_eq!(admin.get_str("s").await.as_deref(), Some("1"));
    admin.cache = String::new();
    let r = admin
        .exec("@@cache@reindex", &[("name", "made-by-deployer")])
        .await;
    assert_status(&r, status::SUCCESS);
}

/// As on Infinispan (`___protobuf_metadata` carries `CreatePermissionConfiguration`), changing
/// the schemas needs CREATE: an application user may read them and clear the cache (BULK_WRITE)
/// but not put, replace or remove one; a deployer (Keycloak's role) may.
#[tokio::test]
async fn schema_writes_need_create() {
    use ferrod_query::schema::PROTOBUF_METADATA_CACHE_NAME as META;
    let s = start(None).await;
    let login = |user: &'static str| {
        let addr = s.server.addr();
        async move {
            let mut c = Client::connect(&addr).await;
            c.version = 31;
            let r = authenticate(&mut c, "SCRAM-SHA-512", user, PASSWORD).await;
            assert_status(&r, status::SUCCESS);
            c.version = 41;
            c.with_cache(META)
        }
    };
    const SCHEMA: &str = "message P { optional string s = 1; }";

    let mut deployer = login("deployer").await;
    deployer.put("p.proto", SCHEMA).await;
    assert_eq!(deployer.get_str("p.proto").await.as_deref(), Some(SCHEMA));

    let mut app = login("application").await;
    let refusals = [
        Request::Put {
            key: b("q.proto"),
            expiration: EXP_DEFAULT,
            value: b(SCHEMA),
        },
        Request::PutIfAbsent {
            key: b("q.proto"),
            expiration: EXP_DEFAULT,
            value: b(SCHEMA),
        },
        Request::Replace {
            key: b("p.proto"),
            expiration: EXP_DEFAULT,
            value: b(SCHEMA),
        },
        Request::Remove { key: b("p.proto") },
        Request::PutAll {
            expiration: EXP_DEFAULT,
            entries: vec![(b("q.proto"), b(SCHEMA))],
        },
    ];
    for request in refusals {
        let r = app.req(request).await;
        assert_error(
            &r,
            status::SERVER_ERROR,
            "user 'application' lacks 'CREATE' permission on cache '___protobuf_metadata'",
        );
    }
    // Refused, nothing changed, and the connection still serves reads of the schemas.
    assert_eq!(app.get_str("p.proto").await.as_deref(), Some(SCHEMA));
    assert_eq!(app.get_str("q.proto").await, None);
    assert_eq!(app.size().await, 1);
    // Other caches keep asking WRITE, which the application role has.
    let mut elsewhere = login("application").await;
    elsewhere.cache = String::new();
    elsewhere.put("k", "v").await;
    // CLEAR is BULK_WRITE on every cache upstream, this one included.
    app.clear().await;
    assert_eq!(deployer.get_str("p.proto").await, None);

    let r = deployer.req(Request::Remove { key: b("p.proto") }).await;
    assert_status(&r, status::KEY_DOES_NOT_EXIST);
    deployer.put("p.proto", SCHEMA).await;
    let r = deployer.req(Request::Remove { key: b("p.proto") }).await;
    assert_status(&r, status::SUCCESS);
}

fn ferrod(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ferrod"))
        .args(args)
        .env_remove("FERROD_CONFIG")
        .env_remove("FERROD_CREDENTIALS_FILE")
        .output()
        .expect("run ferrod")
}

#[tokio::test]
async fn user_add_and_remove_edit_the_file_the_server_reads() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("creds");
    let f = file.to_str().unwrap();
    let out = ferrod(&[
        "user",
        "add",
        "kc",
        "--password",
        "s3cret",
        "--roles",
        "deployer",
        "--file",
        f,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = ferrod(&["user", "add", "gone", "--password", "x", "--file", f]);
    assert!(out.status.success());
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(
        !text.contains("s3cret"),
        "no clear-text password in the file"
    );
    assert!(text.contains("kc roles=deployer scram-sha-1="), "{text}");
    let out = ferrod(&["user", "remove", "gone", "--file", f]);
    assert!(out.status.success());
    let out = ferrod(&["user", "remove", "gone", "--file", f]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no user 'gone'"));
    let out = ferrod(&[
        "user",
        "add",
        "x",
        "--password",
        "p",
        "--roles",
        "wizard",
        "--file",
        f,
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown role 'wizard'"));
    let out = ferrod(&["user", "list", "--file", f]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "kc roles=deployer"
    );

    let server = Server::start_with(ServerOpts::default().arg("--credentials-file").arg(f)).await;
    let mut c = server.client_v(31).await;
    let r = authenticate(&mut c, "SCRAM-SHA-512", "kc", "s3cret").await;
    assert_status(&r, status::SUCCESS);
    let mut c = server.client_v(31).await;
    let r = authenticate(&mut c, "SCRAM-SHA-512", "gone", "x").await;
    assert_error(&r, status::SERVER_ERROR, "authentication failed");
}

#[test]
fn a_bad_credentials_line_stops_startup_naming_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("creds");
    std::fs::write(
        &file,
        "# users\nok roles=admin\nbroken roles=admin scram-sha-256=zzz\n",
    )
    .unwrap();
    let db = format!("sqlite://{}", dir.path().join("db.sqlite").display());
    let out = ferrod(&[
        "--listen",
        "127.0.0.1:0",
        "--database-url",
        &db,
        "--credentials-file",
        file.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("credentials file {} line 3", file.display())),
        "{err}"
    );
    let out = ferrod(&[
        "--listen",
        "127.0.0.1:0",
        "--database-url",
        &db,
        "--credentials-file",
        dir.path().join("missing").to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read"));
}

#[tokio::test]
async fn without_credentials_auth_is_off() {
    let server = Server::start().await;
    let mut c = server.client_v(31).await;
    let r = c.req(Request::AuthMechList).await;
    assert_eq!(r.body, ResponseBody::AuthMechs(vec![]));
    let r = auth_step(&mut c, "PLAIN", b"\0a\0b").await;
    assert_error(&r, status::SERVER_ERROR, "not enabled");
    c.version = 41;
    c.put("k", "v").await;
}
