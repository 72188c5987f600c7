//! Streams: the 4.1 chunked ops (0xE4-0xEF) and the 2.6 GET_STREAM/PUT_STREAM (§8, §15.4).

mod common;

use bytes::{Bytes, BytesMut};
use common::*;
use ferrod_codec::{op, status, Request, ResponseBody};

fn big_value(n: usize, seed: u8) -> Bytes {
    Bytes::from(
        (0..n)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect::<Vec<u8>>(),
    )
}

/// START_PUT_STREAM, NEXT_PUT_STREAM for each chunk (the last one flagged), returning the
/// response to the last chunk.
async fn put_stream(
    c: &mut Client,
    key: &str,
    version: i64,
    value: &Bytes,
    chunk: usize,
) -> ferrod_codec::Response {
    let r = c
        .req(Request::StartPutStream {
            key: b(key),
            expiration: EXP_DEFAULT,
            version,
        })
        .await;
    assert_status(&r, status::SUCCESS);
    assert_eq!(r.header.opcode, op::response_for(op::START_PUT_STREAM));
    let ResponseBody::StreamId(id) = r.body else {
        panic!("{r:?}")
    };
    let chunks: Vec<Bytes> = value.chunks(chunk).map(Bytes::copy_from_slice).collect();
    let n = chunks.len();
    let mut last = None;
    for (i, ch) in chunks.into_iter().enumerate() {
        let r = c
            .req(Request::NextPutStream {
                stream_id: id,
                last_chunk: i + 1 == n,
                chunk: ch,
            })
            .await;
        assert_eq!(
            r.header.opcode,
            op::response_for(op::NEXT_PUT_STREAM),
            "{r:?}"
        );
        if i + 1 < n {
            assert_status(&r, status::SUCCESS);
        }
        last = Some(r);
    }
    let r = c.req(Request::EndPutStream { stream_id: id }).await;
    assert_status(&r, status::SUCCESS);
    last.unwrap()
}

/// START_GET_STREAM then NEXT_GET_STREAM until complete, END_GET_STREAM; returns the value, the
/// metadata version and the number of chunks.
async fn get_stream(c: &mut Client, key: &str, batch: u32) -> Option<(Bytes, i64, usize)> {
    let r = c
        .req(Request::StartGetStream {
            key: b(key),
            batch_size: batch,
        })
        .await;
    if r.header.status == status::KEY_DOES_NOT_EXIST {
        return None;
    }
    assert_status(&r, status::SUCCESS);
    assert_eq!(r.header.opcode, op::response_for(op::START_GET_STREAM));
    let ResponseBody::GetStreamChunk {
        stream_id,
        mut complete,
        metadata,
        chunk,
    } = r.body
    else {
        panic!("{r:?}")
    };
    assert!(chunk.len() <= batch as usize);
    let version = metadata.expect("first chunk carries metadata").version;
    let mut value = BytesMut::from(&chunk[..]);
    let mut chunks = 1;
    while !complete {
        let r = c.req(Request::NextGetStream { stream_id }).await;
        assert_status(&r, status::SUCCESS);
        let ResponseBody::GetStreamChunk {
            stream_id: sid,
            complete: done,
            chunk,
            ..
        } = r.body
        else {
            panic!("{r:?}")
        };
        assert_eq!(sid, stream_id);
        assert!(chunk.len() <= batch as usize);
        value.extend_from_slice(&chunk);
        complete = done;
        chunks += 1;
        assert!(chunks < 10_000, "stream never completes");
    }
    let r = c.req(Request::EndGetStream { stream_id }).await;
    assert_status(&r, status::SUCCESS);
    Some((value.freeze(), version, chunks))
}

#[tokio::test]
async fn v41_put_stream_versions_and_get_stream_chunks() {
    let server = Server::start().await;
    let mut c = server.client_v(41).await;
    let value = big_value(100_000, 1);

    // version 0: unconditional put.
    let r = put_stream(&mut c, "s", 0, &value, 30_000).await;
    assert_status(&r, status::SUCCESS);
    assert_eq!(c.get("s").await, Some(value.clone()));
    let ver = c.version_of("s").await.unwrap();
    let (got, gver, chunks) = get_stream(&mut c, "s", 16_384).await.unwrap();
    assert_eq!(got, value);
    assert_eq!(gver, ver);
    assert_eq!(chunks, 100_000usize.div_ceil(16_384));

    // version -1: putIfAbsent; present -> not executed, value unchanged.
    let other = big_value(5000, 2);
    let r = put_stream(&mut c, "s", -1, &other, 1000).await;
    assert_status(&r, status::NOT_EXECUTED);
    assert_eq!(c.get("s").await, Some(value.clone()));
    let r = put_stream(&mut c, "s-new", -1, &other, 1000).await;
    assert_status(&r, status::SUCCESS);
    assert_eq!(c.get("s-new").await, Some(other.clone()));

    // version N: replace if the version matches.
    let third = big_value(7000, 3);
    let r = put_stream(&mut c, "s", ver + 12345, &third, 4000).await;
    assert_status(&r, status::NOT_EXECUTED);
    assert_eq!(c.version_of("s").await, Some(ver));
    let r = put_stream(&mut c, "s", ver, &third, 4000).await;
    assert_status(&r, status::SUCCESS);
    let (v2, got) = c.get_with_version("s").await.unwrap();
    assert_eq!(got, third);
    assert_ne!(v2, ver);
    let r = put_stream(&mut c, "s-missing", 42, &third, 4000).await;
    assert_status(&r, status::KEY_DOES_NOT_EXIST);
    assert_eq!(c.get("s-missing").await, None);

    // A value smaller than one batch comes in a single, complete chunk.
    c.put("small", "tiny").await;
    let (got, _, chunks) = get_stream(&mut c, "small", 1024).await.unwrap();
    assert_eq!((got, chunks), (b("tiny"), 1));
    // Missing key.
    assert!(get_stream(&mut c, "nope", 1024).await.is_none());

    // A stream id belongs to its connection.
    let r = c
        .req(Request::StartPutStream {
            key: b("x"),
            expiration: EXP_DEFAULT,
            version: 0,
        })
        .await;
    let ResponseBody::StreamId(id) = r.body else {
        panic!()
    };
    let mut other_conn = server.client_v(41).await;
    let r = other_conn
        .req(Request::NextPutStream {
            stream_id: id,
            last_chunk: true,
            chunk: b("zzz"),
        })
        .await;
    assert!(status::is_error(r.header.status), "{r:?}");
    assert_eq!(c.get("x").await, None);
    // Abandoned with END: nothing is stored.
    assert_status(
        &c.req(Request::EndPutStream { stream_id: id }).await,
        status::SUCCESS,
    );
    assert_eq!(c.get("x").await, None);
}

#[tokio::test]
async fn v26_get_stream_and_put_stream() {
    let server = Server::start().await;
    let mut c = server.client_v(26).await;
    let value = big_value(50_000, 9);
    let put = |key: &str, version: i64, value: Bytes| Request::PutStream {
        key: b(key),
        expiration: EXP_DEFAULT,
        version,
        value,
    };
    let r = c.req(put("p", 0, value.clone())).await;
    assert_status(&r, status::SUCCESS);
    assert_eq!(r.header.opcode, op::response_for(op::PUT_STREAM));
    let ver = c.version_of("p").await.unwrap();
    let r = c
        .req(Request::GetStream {
            key: b("p"),
            offset: 0,
        })
        .await;
    assert_status(&r, status::SUCCESS);
    let ResponseBody::WithMetadata { metadata, value: v } = r.body else {
        panic!("{r:?}")
    };
    assert_eq!(v, value);
    assert_eq!(metadata.version, ver);
    // From an offset.
    let r = c
        .req(Request::GetStream {
            key: b("p"),
            offset: 49_000,
        })
        .await;
    let ResponseBody::WithMetadata { value: v, .. } = r.body else {
        panic!("{r:?}")
    };
    assert_eq!(v, value.slice(49_000..));
    let r = c
        .req(Request::GetStream {
            key: b("missing"),
            offset: 0,
        })
        .await;
    assert_status(&r, status::KEY_DOES_NOT_EXIST);

    // -1: putIfAbsent.
    assert_status(&c.req(put("p", -1, b("no"))).await, status::NOT_EXECUTED);
    assert_status(&c.req(put("q", -1, b("yes"))).await, status::SUCCESS);
    // N: replace if unmodified.
    assert_status(
        &c.req(put("p", ver + 1, b("no"))).await,
        status::NOT_EXECUTED,
    );
    assert_status(&c.req(put("p", ver, b("yes"))).await, status::SUCCESS);
    assert_eq!(c.get_str("p").await.as_deref(), Some("yes"));
    assert_eq!(c.get_str("q").await.as_deref(), Some("yes"));
}
