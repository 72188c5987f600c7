//! The `___protobuf_metadata` cache: schemas registered the way Keycloak does it (wrapped
//! strings, getWithMetadata -> putIfAbsent -> GET `.errors` / `<file>.errors`), error keys
//! maintained as Infinispan does, bad input refused, and the registry kept in step across
//! restarts, CLEAR and replicas (observed through the error keys a later upload gets).

mod common;

use bytes::Bytes;
use common::*;
use ferrod_codec::{status, Request, ResponseBody};
use ferrod_query::schema::PROTOBUF_METADATA_CACHE_NAME;
use ferrod_query::wrapped::{decode_string, encode_string};

const KEYCLOAK: &str = include_str!("../../query/tests/fixtures/KeycloakModelSchema-26.4.7.proto");
const KC: &str = "KeycloakModelSchema.proto";

/// A string as the Java client's ProtoStream marshaller writes it.
fn w(s: &str) -> Bytes {
    Bytes::from(encode_string(s))
}

async fn metadata_client(server: &Server) -> Client {
    server
        .client()
        .await
        .with_cache(PROTOBUF_METADATA_CACHE_NAME)
}

/// GET of a wrapped key, decoded back to a string.
async fn get_w(c: &mut Client, key: &str) -> Option<String> {
    c.get_bytes(w(key))
        .await
        .map(|v| decode_string(&v).unwrap_or_else(|| panic!("{key}: not a wrapped string: {v:?}")))
}

async fn put_w(c: &mut Client, key: &str, value: &str) {
    let r = c.put_bytes(w(key), w(value)).await;
    assert_status(&r, status::SUCCESS);
}

#[tokio::test]
async fn keycloak_upload_flow() {
    let server = Server::start().await;
    let mut c = metadata_client(&server).await;

    // The cache exists out of the box and announces Java-object storage, as Infinispan's does.
    let r = c.ping().await;
    assert_status(&r, status::SUCCESS);
    match &r.body {
        ResponseBody::Ping(p) => {
            assert_eq!(media_id(&p.key_type), Some(1), "{:?}", p.key_type);
            assert_eq!(media_id(&p.value_type), Some(1));
        }
        other => panic!("{other:?}"),
    }

    // getWithMetadata: absent; putIfAbsent; then the two error keys are absent.
    let r = c.req(Request::GetWithMetadata { key: w(KC) }).await;
    assert_status(&r, status::KEY_DOES_NOT_EXIST);
    let r = c
        .req(Request::PutIfAbsent {
            key: w(KC),
            expiration: EXP_DEFAULT,
            value: w(KEYCLOAK),
        })
        .await;
    assert_status(&r, status::SUCCESS);
    assert_eq!(get_w(&mut c, ".errors").await, None);
    assert_eq!(get_w(&mut c, &format!("{KC}.errors")).await, None);
    assert_eq!(get_w(&mut c, KC).await.as_deref(), Some(KEYCLOAK));

    // A new Keycloak version replaces it with its version (replaceWithVersion).
    let r = c.req(Request::GetWithMetadata { key: w(KC) }).await;
    let version = match r.body {
        ResponseBody::WithMetadata { metadata, .. } => metadata.version,
        other => panic!("{other:?}"),
    };
    let newer = KEYCLOAK.replace(
        "string ipAddress = 5;",
        "string ipAddress = 5;\n   string extra = 99;",
    );
    let r = c
        .req(Request::ReplaceIfUnmodified {
            key: w(KC),
            expiration: EXP_DEFAULT,
            version,
            value: w(&newer),
        })
        .await;
    assert_status(&r, status::SUCCESS);
    assert_eq!(get_w(&mut c, ".errors").await, None);
}

#[tokio::test]
async fn broken_schema_gets_error_keys_and_changes_nothing_else() {
    let server = Server::start().await;
    let mut c = metadata_client(&server).await;
    put_w(&mut c, KC, KEYCLOAK).await;
    put_w(
        &mut c,
        "broken.proto",
        "package broken;\nmessage B { optional string s = ; }\n",
    )
    .await;

    assert_eq!(
        get_w(&mut c, ".errors").await.as_deref(),
        Some("broken.proto")
    );
    let e = get_w(&mut c, "broken.proto.errors")
        .await
        .expect("broken.proto.errors");
    assert!(e.starts_with("Syntax error in broken.proto at 2:"), "{e}");
    assert_eq!(get_w(&mut c, &format!("{KC}.errors")).await, None);
    // The broken file itself is stored, as Infinispan stores it.
    assert!(get_w(&mut c, "broken.proto").await.is_some());

    // Other caches are untouched and the server is up.
    let mut d = server.client().await;
    d.put("k", "v").await;
    assert_eq!(d.get_str("k").await.as_deref(), Some("v"));

    // A file importing the broken one fails too; importing the good one works.
    put_w(
        &mut c,
        "uses-broken.proto",
        "import \"broken.proto\";\npackage u;\nmessage U {}\n",
    )
    .await;
    put_w(
        &mut c,
        "uses-keycloak.proto",
        "syntax = \"proto3\";\nimport \"KeycloakModelSchema.proto\";\npackage k2;\nmessage K { keycloak.ClientSessionKey key = 1; }\n",
    )
    .await;
    assert_eq!(
        get_w(&mut c, ".errors").await.as_deref(),
        Some("broken.proto\nuses-broken.proto")
    );
    assert_eq!(
        get_w(&mut c, "uses-broken.proto.errors").await.as_deref(),
        Some("File uses-broken.proto imports a file (broken.proto) that has errors")
    );
    assert_eq!(get_w(&mut c, "uses-keycloak.proto.errors").await, None);

    // Fixing the file clears every error key.
    put_w(
        &mut c,
        "broken.proto",
        "package broken;\nmessage B { optional string s = 1; }\n",
    )
    .await;
    assert_eq!(get_w(&mut c, ".errors").await, None);
    assert_eq!(get_w(&mut c, "broken.proto.errors").await, None);
    assert_eq!(get_w(&mut c, "uses-broken.proto.errors").await, None);

    // Removing it breaks its dependent again; removing that clears everything.
    let r = c
        .req(Request::Remove {
            key: w("broken.proto"),
        })
        .await;
    assert_status(&r, status::SUCCESS);
    assert_eq!(
        get_w(&mut c, "uses-broken.proto.errors").await.as_deref(),
        Some("Import 'broken.proto' not found")
    );
    assert_eq!(
        get_w(&mut c, ".errors").await.as_deref(),
        Some("uses-broken.proto")
    );
    let r = c
        .req(Request::Remove {
            key: w("uses-broken.proto"),
        })
        .await;
    assert_status(&r, status::SUCCESS);
    assert_eq!(get_w(&mut c, ".errors").await, None);
    assert_eq!(get_w(&mut c, "uses-broken.proto.errors").await, None);
}

#[tokio::test]
async fn unknown_import_and_unknown_type() {
    let server = Server::start().await;
    let mut c = metadata_client(&server).await;
    put_w(
        &mut c,
        "needs.proto",
        "import \"missing.proto\";\npackage n;\nmessage N {}\n",
    )
    .await;
    assert_eq!(
        get_w(&mut c, "needs.proto.errors").await.as_deref(),
        Some("Import 'missing.proto' not found")
    );
    put_w(
        &mut c,
        "types.proto",
        "package t;\nmessage T { optional Nope n = 1; }\n",
    )
    .await;
    assert!(get_w(&mut c, "types.proto.errors")
        .await
        .unwrap()
        .contains("Nope"));
    assert_eq!(
        get_w(&mut c, ".errors").await.as_deref(),
        Some("needs.proto\ntypes.proto")
    );
    // Supplying the missing import resolves the file that needed it.
    put_w(&mut c, "missing.proto", "package m;\nmessage M {}\n").await;
    assert_eq!(get_w(&mut c, "needs.proto.errors").await, None);
    assert_eq!(
        get_w(&mut c, ".errors").await.as_deref(),
        Some("types.proto")
    );
}

#[tokio::test]
async fn invalid_keys_and_values_are_refused() {
    let server = Server::start().await;
    let mut c = metadata_client(&server).await;
    let r = c.put_bytes(w("not-a-schema"), w("x")).await;
    assert_error(
        &r,
        status::SERVER_ERROR,
        "ending with \".proto\" : not-a-schema",
    );
    let r = c
        .put_bytes(w("a.proto"), Bytes::from_static(&[0xFF, 0xFE]))
        .await;
    assert_error(&r, status::SERVER_ERROR, "The value must be a String");
    let r = c.put_bytes(Bytes::from_static(&[0xFF]), w("x")).await;
    assert_error(&r, status::SERVER_ERROR, "The key must be a String");
    let r = c
        .req(Request::PutAll {
            expiration: EXP_DEFAULT,
            entries: vec![(w("ok.proto"), w("message O {}")), (w("bad"), w("x"))],
        })
        .await;
    assert_error(&r, status::SERVER_ERROR, "ending with \".proto\"");
    // Nothing was stored.
    assert_eq!(c.size().await, 0);
}

#[tokio::test]
async fn plain_text_clients_get_plain_error_keys() {
    let server = Server::start().await;
    let mut c = metadata_client(&server).await;
    c.put("p.proto", "message P { optional string s = 1 }")
        .await;
    assert_eq!(c.get_str(".errors").await.as_deref(), Some("p.proto"));
    assert!(c
        .get_str("p.proto.errors")
        .await
        .unwrap()
        .starts_with("Syntax error in p.proto"));
    c.put("p.proto", "message P { optional string s = 1; }")
        .await;
    assert_eq!(c.get_str(".errors").await, None);
}

#[tokio::test]
async fn clear_unregisters_everything() {
    let server = Server::start().await;
    let mut c = metadata_client(&server).await;
    put_w(&mut c, "base.proto", "package base;\nmessage Base {}\n").await;
    c.clear().await;
    put_w(
        &mut c,
        "user.proto",
        "import \"base.proto\";\npackage user;\nmessage U { optional base.Base b = 1; }\n",
    )
    .await;
    assert_eq!(
        get_w(&mut c, "user.proto.errors").await.as_deref(),
        Some("Import 'base.proto' not found")
    );
}

#[tokio::test]
async fn registry_survives_restart() {
    let mut a = Server::start().await;
    let mut c = metadata_client(&a).await;
    put_w(&mut c, "base.proto", "package base;\nmessage Base {}\n").await;
    put_w(&mut c, "broken.proto", "message {").await;

    // After a restart the registry is rebuilt from the persisted schemas.
    a.stop().await;
    a.restart().await;
    let mut c = metadata_client(&a).await;
    put_w(
        &mut c,
        "user.proto",
        "import \"base.proto\";\npackage user;\nmessage U { optional base.Base b = 1; }\n",
    )
    .await;
    assert_eq!(get_w(&mut c, "user.proto.errors").await, None);
    assert_eq!(
        get_w(&mut c, ".errors").await.as_deref(),
        Some("broken.proto")
    );
}

#[tokio::test]
async fn registry_follows_other_replicas() {
    let Some(db) = PgDb::create("schema_replicas").await else {
        return;
    };
    let a = Server::start_with(ServerOpts::default().database(&db.url)).await;
    let b = Server::start_with(ServerOpts::default().database(&db.url)).await;
    let mut c = metadata_client(&a).await;
    let mut cb = metadata_client(&b).await;
    put_w(&mut c, "broken.proto", "message {").await;
    put_w(&mut c, "late.proto", "package late;\nmessage L {}\n").await;
    // Wait (bounded) until B has the entry in memory, then let B handle an upload importing it.
    let mut seen = false;
    for _ in 0..100 {
        if get_w(&mut cb, "late.proto").await.is_some() {
            seen = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(seen, "replica B never saw late.proto");
    put_w(
        &mut cb,
        "uses-late.proto",
        "import \"late.proto\";\npackage ul;\nmessage UL { optional late.L l = 1; }\n",
    )
    .await;
    assert_eq!(get_w(&mut cb, "uses-late.proto.errors").await, None);
    // B's registry knows A's broken file too, so `.errors` still names it.
    assert_eq!(
        get_w(&mut cb, ".errors").await.as_deref(),
        Some("broken.proto")
    );
    // And A learns of B's upload: a file importing it resolves on A.
    let mut seen = false;
    for _ in 0..100 {
        if get_w(&mut c, "uses-late.proto").await.is_some() {
            seen = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(seen, "replica A never saw uses-late.proto");
    put_w(
        &mut c,
        "top.proto",
        "import \"uses-late.proto\";\npackage top;\nmessage T { optional ul.UL x = 1; }\n",
    )
    .await;
    assert_eq!(get_w(&mut c, "top.proto.errors").await, None);
    drop(db);
}

#[tokio::test]
async fn put_all_and_remove_with_version_keep_the_registry_in_step() {
    let server = Server::start().await;
    let mut c = metadata_client(&server).await;
    // Both files in one PUT_ALL: the importer resolves although it comes first by key order.
    let r = c
        .req(Request::PutAll {
            expiration: EXP_DEFAULT,
            entries: vec![
                (
                    w("a-user.proto"),
                    w("import \"z-base.proto\";\npackage u;\nmessage U { optional b.B b = 1; }\n"),
                ),
                (w("z-base.proto"), w("package b;\nmessage B {}\n")),
            ],
        })
        .await;
    assert_status(&r, status::SUCCESS);
    assert_eq!(get_w(&mut c, ".errors").await, None);

    // REMOVE_IF_UNMODIFIED of the imported file: its importer now fails.
    let r = c
        .req(Request::GetWithMetadata {
            key: w("z-base.proto"),
        })
        .await;
    let version = match r.body {
        ResponseBody::WithMetadata { metadata, .. } => metadata.version,
        other => panic!("{other:?}"),
    };
    let r = c
        .req(Request::RemoveIfUnmodified {
            key: w("z-base.proto"),
            version,
        })
        .await;
    assert_status(&r, status::SUCCESS);
    assert_eq!(
        get_w(&mut c, "a-user.proto.errors").await.as_deref(),
        Some("Import 'z-base.proto' not found")
    );
    // REPLACE brings it back.
    let r = c
        .req(Request::Replace {
            key: w("a-user.proto"),
            expiration: EXP_DEFAULT,
            value: w("package u;\nmessage U {}\n"),
        })
        .await;
    assert_status(&r, status::SUCCESS);
    assert_eq!(get_w(&mut c, ".errors").await, None);
    assert_eq!(get_w(&mut c, "a-user.proto.errors").await, None);
}
