//! Reference §7.3: the status of every key/value op in every outcome, with and without
//! FORCE_RETURN_VALUE, at protocol 2.5, 3.1, 4.0 and 4.1; previous values bare before 4.0 and with
//! a metadata block from 4.0; versions change on every write and the read ops report them.

mod common;

use bytes::Bytes;
use common::*;
use ferrod_codec::{op, status, EntryMetadata, Request, ResponseBody};
use tokio::io::AsyncWriteExt;

const VERSIONS: &[u8] = &[25, 31, 40, 41];

/// The value that came back with status 0x03/0x04, and its metadata when the version carries it.
fn prev_of(r: &ferrod_codec::Response) -> Option<(Option<EntryMetadata>, Bytes)> {
    match &r.body {
        ResponseBody::Previous(None) => None,
        ResponseBody::Previous(Some(p)) => Some((
            (p.metadata != EntryMetadata::ABSENT).then(|| p.metadata.clone()),
            p.value.clone(),
        )),
        other => panic!("expected a previous value, got {other:?} in {r:?}"),
    }
}

/// Asserts status `st`, the response op code, and that there is no body.
#[track_caller]
fn bare(r: &ferrod_codec::Response, req_op: u8, st: u8) {
    assert_status(r, st);
    assert_eq!(r.header.opcode, op::response_for(req_op), "{r:?}");
    assert_eq!(r.body, ResponseBody::Empty, "{r:?}");
}

/// Asserts status `st` with the previous/current value `value` whose version is `version`.
#[track_caller]
fn with_prev(r: &ferrod_codec::Response, v: u8, st: u8, value: &str, version: i64) {
    assert_status(r, st);
    let (meta, val) = prev_of(r).unwrap_or_else(|| panic!("no previous value in {r:?}"));
    assert_eq!(val, b(value), "{r:?}");
    if v >= 40 {
        let meta = meta.unwrap_or_else(|| panic!("4.x previous value without metadata: {r:?}"));
        assert_eq!(meta.version, version, "{r:?}");
    } else {
        assert!(meta.is_none(), "metadata before 4.0? {r:?}");
    }
}

async fn matrix_at(server: &Server, v: u8) {
    let mut c = server.client_v(v).await;
    let k = |s: &str| format!("v{v}-{s}");
    let kv = |s: &str, val: &str| (b(&k(s)), b(val));

    // ---- PUT ---------------------------------------------------------------------------------
    let (key, val) = kv("put", "a");
    let r = c
        .req(Request::Put {
            key: key.clone(),
            expiration: EXP_DEFAULT,
            value: val,
        })
        .await;
    bare(&r, op::PUT, status::SUCCESS);
    let v1 = c.version_of(&k("put")).await.expect("stored");
    // FRV on an existing key: 0x03 + the previous value (and, in 4.x, its metadata).
    let r = c
        .req_flags(
            Request::Put {
                key: key.clone(),
                expiration: EXP_DEFAULT,
                value: b("b"),
            },
            FRV,
        )
        .await;
    with_prev(&r, v, status::SUCCESS_WITH_PREVIOUS, "a", v1);
    let v2 = c.version_of(&k("put")).await.unwrap();
    assert_ne!(v1, v2, "a put must change the version");
    // FRV on a missing key: 0x03 with "no previous".
    let r = c
        .req_flags(
            Request::Put {
                key: b(&k("put-new")),
                expiration: EXP_DEFAULT,
                value: b("x"),
            },
            FRV,
        )
        .await;
    assert_status(&r, status::SUCCESS_WITH_PREVIOUS);
    assert!(prev_of(&r).is_none(), "{r:?}");
    // Without FRV on an existing key: status only.
    let r = c.put_exp(&k("put"), "c", EXP_DEFAULT).await;
    bare(&r, op::PUT, status::SUCCESS);
    let v3 = c.version_of(&k("put")).await.unwrap();
    assert!(v3 != v2 && v3 != v1);

    // ---- GET / GET_WITH_VERSION / GET_WITH_METADATA / CONTAINS_KEY -----------------------------
    let r = c.req(Request::Get { key: key.clone() }).await;
    assert_status(&r, status::SUCCESS);
    assert_eq!(r.header.opcode, op::response_for(op::GET));
    assert_eq!(
        r.body,
        ResponseBody::Value(b("c")),
        "GET is plain in every version"
    );
    let r = c.req(Request::Get { key: b(&k("nope")) }).await;
    bare(&r, op::GET, status::KEY_DOES_NOT_EXIST);
    let (ver, val) = c.get_with_version(&k("put")).await.unwrap();
    assert_eq!((ver, val), (v3, b("c")));
    let r = c.req(Request::GetWithVersion { key: b(&k("nope")) }).await;
    bare(&r, op::GET_WITH_VERSION, status::KEY_DOES_NOT_EXIST);
    let (meta, val) = c.get_with_metadata(&k("put")).await.unwrap();
    assert_eq!(val, b("c"));
    assert_eq!(
        meta.version, v3,
        "GET_WITH_METADATA reports the same version"
    );
    assert_eq!(meta.lifespan, None);
    assert_eq!(meta.max_idle, None);
    let r = c.req(Request::GetWithMetadata { key: b(&k("nope")) }).await;
    bare(&r, op::GET_WITH_METADATA, status::KEY_DOES_NOT_EXIST);
    let r = c.req(Request::ContainsKey { key: key.clone() }).await;
    bare(&r, op::CONTAINS_KEY, status::SUCCESS);
    let r = c.req(Request::ContainsKey { key: b(&k("nope")) }).await;
    bare(&r, op::CONTAINS_KEY, status::KEY_DOES_NOT_EXIST);

    // ---- PUT_IF_ABSENT -----------------------------------------------------------------------
    for frv in [0, FRV] {
        let pk = k(&format!("pia-{frv}"));
        let pia = |val: &str| Request::PutIfAbsent {
            key: b(&pk),
            expiration: EXP_DEFAULT,
            value: b(val),
        };
        // Absent: stored, never a body, even with FRV.
        let r = c.req_flags(pia("first"), frv).await;
        bare(&r, op::PUT_IF_ABSENT, status::SUCCESS);
        let ver = c.version_of(&pk).await.unwrap();
        // Present: not executed; with FRV 0x04 + the current value.
        let r = c.req_flags(pia("second"), frv).await;
        if frv == 0 {
            bare(&r, op::PUT_IF_ABSENT, status::NOT_EXECUTED);
        } else {
            with_prev(&r, v, status::NOT_EXECUTED_WITH_PREVIOUS, "first", ver);
        }
        assert_eq!(c.get_str(&pk).await.as_deref(), Some("first"));
        assert_eq!(
            c.version_of(&pk).await,
            Some(ver),
            "not executed: same version"
        );
    }

    // ---- REPLACE -----------------------------------------------------------------------------
    for frv in [0, FRV] {
        let rk = k(&format!("rep-{frv}"));
        let rep = |val: &str| Request::Replace {
            key: b(&rk),
            expiration: EXP_DEFAULT,
            value: b(val),
        };
        // Missing: 0x01, no body even with FRV.
        let r = c.req_flags(rep("x"), frv).await;
        bare(&r, op::REPLACE, status::NOT_EXECUTED);
        assert!(!c.contains(&rk).await);
        c.put(&rk, "old").await;
        let ver = c.version_of(&rk).await.unwrap();
        let r = c.req_flags(rep("new"), frv).await;
        if frv == 0 {
            bare(&r, op::REPLACE, status::SUCCESS);
        } else {
            with_prev(&r, v, status::SUCCESS_WITH_PREVIOUS, "old", ver);
        }
        let (ver2, val) = c.get_with_version(&rk).await.unwrap();
        assert_eq!(val, b("new"));
        assert_ne!(ver2, ver, "replace changes the version");
    }

    // ---- REPLACE_IF_UNMODIFIED ---------------------------------------------------------------
    for frv in [0, FRV] {
        let rk = k(&format!("riu-{frv}"));
        let riu = |version: i64, val: &str| Request::ReplaceIfUnmodified {
            key: b(&rk),
            expiration: EXP_DEFAULT,
            version,
            value: b(val),
        };
        let r = c.req_flags(riu(1, "x"), frv).await;
        bare(&r, op::REPLACE_IF_UNMODIFIED, status::KEY_DOES_NOT_EXIST);
        c.put(&rk, "old").await;
        let ver = c.version_of(&rk).await.unwrap();
        // Mismatch: 0x01, or 0x04 + current with FRV.
        let r = c.req_flags(riu(ver + 1000, "x"), frv).await;
        if frv == 0 {
            bare(&r, op::REPLACE_IF_UNMODIFIED, status::NOT_EXECUTED);
        } else {
            with_prev(&r, v, status::NOT_EXECUTED_WITH_PREVIOUS, "old", ver);
        }
        assert_eq!(c.get_with_version(&rk).await, Some((ver, b("old"))));
        // Match: 0x00, or 0x03 + previous.
        let r = c.req_flags(riu(ver, "new"), frv).await;
        if frv == 0 {
            bare(&r, op::REPLACE_IF_UNMODIFIED, status::SUCCESS);
        } else {
            with_prev(&r, v, status::SUCCESS_WITH_PREVIOUS, "old", ver);
        }
        let (ver2, val) = c.get_with_version(&rk).await.unwrap();
        assert_eq!(val, b("new"));
        assert_ne!(ver2, ver);
        // The old version no longer matches.
        let r = c.req(riu(ver, "again")).await;
        bare(&r, op::REPLACE_IF_UNMODIFIED, status::NOT_EXECUTED);
    }

    // ---- REMOVE ------------------------------------------------------------------------------
    for frv in [0, FRV] {
        let rk = k(&format!("rm-{frv}"));
        let r = c.req_flags(Request::Remove { key: b(&rk) }, frv).await;
        bare(&r, op::REMOVE, status::KEY_DOES_NOT_EXIST);
        c.put(&rk, "gone").await;
        let ver = c.version_of(&rk).await.unwrap();
        let r = c.req_flags(Request::Remove { key: b(&rk) }, frv).await;
        if frv == 0 {
            bare(&r, op::REMOVE, status::SUCCESS);
        } else {
            with_prev(&r, v, status::SUCCESS_WITH_PREVIOUS, "gone", ver);
        }
        assert_eq!(c.get(&rk).await, None);
    }

    // ---- REMOVE_IF_UNMODIFIED ----------------------------------------------------------------
    for frv in [0, FRV] {
        let rk = k(&format!("riu-rm-{frv}"));
        let rm = |version: i64| Request::RemoveIfUnmodified {
            key: b(&rk),
            version,
        };
        let r = c.req_flags(rm(7), frv).await;
        bare(&r, op::REMOVE_IF_UNMODIFIED, status::KEY_DOES_NOT_EXIST);
        c.put(&rk, "val").await;
        let ver = c.version_of(&rk).await.unwrap();
        let r = c.req_flags(rm(ver + 1), frv).await;
        if frv == 0 {
            bare(&r, op::REMOVE_IF_UNMODIFIED, status::NOT_EXECUTED);
        } else {
            with_prev(&r, v, status::NOT_EXECUTED_WITH_PREVIOUS, "val", ver);
        }
        assert!(c.contains(&rk).await);
        let r = c.req_flags(rm(ver), frv).await;
        if frv == 0 {
            bare(&r, op::REMOVE_IF_UNMODIFIED, status::SUCCESS);
        } else {
            with_prev(&r, v, status::SUCCESS_WITH_PREVIOUS, "val", ver);
        }
        assert!(!c.contains(&rk).await);
    }
}

#[tokio::test]
async fn status_matrix_of_key_value_ops_at_2_5_3_1_4_0_4_1() {
    let server = Server::start().await;
    for &v in VERSIONS {
        matrix_at(&server, v).await;
    }
    // SIZE and CLEAR on the whole cache (every version wrote into the default cache).
    let mut c = server.client_v(31).await;
    let n = c.size().await;
    assert!(n > 0);
    let r = c.req(Request::Clear).await;
    bare(&r, op::CLEAR, status::SUCCESS);
    assert_eq!(c.size().await, 0);
    let r = c.req(Request::Size).await;
    assert_eq!(r.header.opcode, op::response_for(op::SIZE));
    assert_eq!(r.body, ResponseBody::Size(0));
}

#[tokio::test]
async fn versions_are_fresh_on_every_write_kind() {
    let server = Server::start().await;
    let mut c = server.client().await;
    let mut seen = std::collections::HashSet::new();
    let mut record = |v: Option<i64>| {
        let v = v.expect("present");
        assert!(v > 0, "versions are positive: {v}");
        assert!(seen.insert(v), "version {v} reused");
    };
    c.put("k", "1").await;
    record(c.version_of("k").await);
    c.put("k", "2").await;
    record(c.version_of("k").await);
    let r = c
        .req(Request::Replace {
            key: b("k"),
            expiration: EXP_DEFAULT,
            value: b("3"),
        })
        .await;
    assert_status(&r, status::SUCCESS);
    record(c.version_of("k").await);
    let ver = c.version_of("k").await.unwrap();
    let r = c
        .req(Request::ReplaceIfUnmodified {
            key: b("k"),
            expiration: EXP_DEFAULT,
            version: ver,
            value: b("4"),
        })
        .await;
    assert_status(&r, status::SUCCESS);
    record(c.version_of("k").await);
    let r = c
        .req(Request::PutAll {
            expiration: EXP_DEFAULT,
            entries: vec![(b("k"), b("5")), (b("k2"), b("6"))],
        })
        .await;
    assert_status(&r, status::SUCCESS);
    record(c.version_of("k").await);
    record(c.version_of("k2").await);
    c.req(Request::Remove { key: b("k") }).await;
    let r = c
        .req(Request::PutIfAbsent {
            key: b("k"),
            expiration: EXP_DEFAULT,
            value: b("7"),
        })
        .await;
    assert_status(&r, status::SUCCESS);
    record(c.version_of("k").await);
}

/// The exact bytes of "no previous entry": `03 FF×8 00` after the header in 4.x, an empty array
/// before.
#[tokio::test]
async fn no_previous_value_bytes_per_version() {
    let server = Server::start().await;
    for (v, id, tail) in [
        (
            40u8,
            5u8,
            &[0x03u8, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x00][..],
        ),
        (
            41,
            6,
            &[0x03, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x00][..],
        ),
        (31, 7, &[0x00][..]),
        (25, 8, &[0x00][..]),
    ] {
        let mut h = ferrod_codec::RequestHeader::new(v, op::PUT, id as u64, "");
        h.flags = FRV;
        let frame = ferrod_codec::RequestFrame {
            header: h,
            request: Request::Put {
                key: b(&format!("fresh-{v}")),
                expiration: EXP_DEFAULT,
                value: b("v"),
            },
        };
        let mut s = server.raw().await;
        s.write_all(&encode(&frame)).await.unwrap();
        let mut expected = vec![0xA1, id, op::response_for(op::PUT), 0x03, 0x00];
        expected.extend_from_slice(tail);
        let mut got = vec![0u8; expected.len()];
        tokio::time::timeout(
            CALL_TIMEOUT,
            tokio::io::AsyncReadExt::read_exact(&mut s, &mut got),
        )
        .await
        .unwrap()
        .unwrap();
        assert_eq!(got, expected, "version {v}");
    }
}

/// In 4.x the previous value's metadata block carries its lifespan and creation time.
#[tokio::test]
async fn previous_value_metadata_in_4x_reports_lifespan() {
    let server = Server::start().await;
    let mut c = server.client_v(40).await;
    let before = now_ms();
    let r = c.put_exp("life", "v1", exp_secs(Some(100), None)).await;
    assert_status(&r, status::SUCCESS);
    let ver = c.version_of("life").await.unwrap();
    let r = c
        .req_flags(
            Request::Put {
                key: b("life"),
                expiration: EXP_DEFAULT,
                value: b("v2"),
            },
            FRV,
        )
        .await;
    let ResponseBody::Previous(Some(p)) = r.body else {
        panic!("{r:?}")
    };
    assert_eq!(p.value, b("v1"));
    assert_eq!(p.metadata.version, ver);
    let (created, secs) = p.metadata.lifespan.expect("finite lifespan");
    assert_eq!(secs, 100);
    assert!(
        created >= before - 1000 && created <= now_ms() + 1000,
        "{created}"
    );
    assert_eq!(p.metadata.max_idle, None);
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}
