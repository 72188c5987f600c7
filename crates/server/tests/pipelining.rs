//! Pipelining (§10.3, DESIGN "pipelined connections"): many requests written in one burst on one
//! connection; each response carries its own message id, and reads see the writes sent before
//! them on that connection.

mod common;

use std::collections::HashMap;

use bytes::{Bytes, BytesMut};
use common::*;
use ferrod_codec::{status, Incoming, Request, RequestFrame, RequestHeader, ResponseBody};
use futures::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio_util::codec::Encoder;

/// A small deterministic generator (xorshift64*), so failures reproduce.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[derive(Debug)]
enum Expect {
    Status(u8),
    Value(Option<Bytes>),
    Contains(bool),
}

async fn burst(server: &Server, seed: u64, n: usize, prefix: &str) {
    let mut c = server.client().await;
    let mut rng = Rng(seed);
    let versions = [25u8, 31, 40, 41];
    let mut model: HashMap<Bytes, Bytes> = HashMap::new();
    let mut expected: HashMap<u64, Expect> = HashMap::new();
    let mut buf = BytesMut::new();
    for i in 0..n {
        // Distinct ids including 0 and ids that need a 9-10 byte vLong.
        let id = if i == 0 {
            0
        } else {
            (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        };
        let key = b(&format!("{prefix}pk{}", rng.below(16)));
        let version = versions[rng.below(4) as usize];
        let (request, expect) = match rng.below(10) {
            0..=3 => {
                let value = b(&format!("v{i}"));
                model.insert(key.clone(), value.clone());
                (
                    Request::Put {
                        key,
                        expiration: EXP_DEFAULT,
                        value,
                    },
                    Expect::Status(status::SUCCESS),
                )
            }
            4..=6 => {
                let cur = model.get(&key).cloned();
                (Request::Get { key }, Expect::Value(cur))
            }
            7 => {
                let had = model.remove(&key).is_some();
                (
                    Request::Remove { key },
                    Expect::Status(if had {
                        status::SUCCESS
                    } else {
                        status::KEY_DOES_NOT_EXIST
                    }),
                )
            }
            8 => {
                let value = b(&format!("pia{i}"));
                let had = model.contains_key(&key);
                if !had {
                    model.insert(key.clone(), value.clone());
                }
                (
                    Request::PutIfAbsent {
                        key,
                        expiration: EXP_DEFAULT,
                        value,
                    },
                    Expect::Status(if had {
                        status::NOT_EXECUTED
                    } else {
                        status::SUCCESS
                    }),
                )
            }
            _ => {
                let has = model.contains_key(&key);
                (Request::ContainsKey { key }, Expect::Contains(has))
            }
        };
        let frame = RequestFrame {
            header: RequestHeader::new(version, request.opcode(), id, ""),
            request,
        };
        // Through the client codec, so it knows how to read each response.
        c.framed.codec_mut().encode(frame, &mut buf).unwrap();
        expected.insert(id, expect);
    }
    // One burst.
    c.framed.get_mut().write_all(&buf).await.unwrap();
    let mut seen = 0;
    while seen < n {
        let item = tokio::time::timeout(CALL_TIMEOUT, c.framed.next())
            .await
            .expect("responses stopped coming")
            .expect("connection closed")
            .expect("undecodable response");
        let Incoming::Response(r) = item else {
            panic!("{item:?}")
        };
        let id = r.header.message_id;
        let expect = expected
            .remove(&id)
            .unwrap_or_else(|| panic!("response for unknown or repeated id {id}: {r:?}"));
        match expect {
            Expect::Status(st) => assert_status(&r, st),
            Expect::Contains(has) => assert_status(
                &r,
                if has {
                    status::SUCCESS
                } else {
                    status::KEY_DOES_NOT_EXIST
                },
            ),
            Expect::Value(None) => assert_status(&r, status::KEY_DOES_NOT_EXIST),
            Expect::Value(Some(v)) => {
                assert_status(&r, status::SUCCESS);
                assert_eq!(
                    r.body,
                    ResponseBody::Value(v),
                    "request {id} read an older or newer value"
                );
            }
        }
        seen += 1;
    }
    assert!(expected.is_empty());
    // Nothing more arrives and the final state matches the model.
    let mut check = server.client().await;
    for (k, v) in &model {
        assert_eq!(check.get_bytes(k.clone()).await.as_ref(), Some(v));
    }
    if prefix.is_empty() {
        assert_eq!(check.size().await, model.len() as u64);
    }
}

#[tokio::test]
async fn burst_of_500_mixed_requests_on_one_connection() {
    let server = Server::start().await;
    burst(&server, 0x1234_5678_9abc_def1, 500, "").await;
}

#[tokio::test]
async fn concurrent_bursts_on_four_connections() {
    let server = std::sync::Arc::new(Server::start().await);
    let mut tasks = Vec::new();
    for t in 0..4u64 {
        let s = server.clone();
        // Disjoint key prefixes: each connection's model is exact for its own keys.
        tasks.push(tokio::spawn(async move {
            burst(&s, 7919 * (t + 1), 400, &format!("c{t}-")).await
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}
