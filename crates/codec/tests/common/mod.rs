//! Shared proptest strategies: every request, response and event frame at every protocol version
//! where it exists, with only the field combinations that version can carry.
#![allow(dead_code)]

use bytes::{Bytes, BytesMut};
use ferrod_codec::header::{HashTopology, Topology};
use ferrod_codec::request::{control, CounterConfig, Factory, TxModification, Xid};
use ferrod_codec::*;
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use tokio_util::codec::{Decoder, Encoder};

/// Every protocol version a request may carry.
pub const VERSIONS: &[u8] = &[20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 40, 41];

/// The protocol version that introduced a request op code (reference §0, §8, §17).
pub fn since(opcode: u8) -> u8 {
    use op::*;
    match opcode {
        EXEC | PUT_ALL | GET_ALL => 21,
        ITERATION_START | ITERATION_NEXT | ITERATION_END => 23,
        GET_STREAM | PUT_STREAM => 26,
        PREPARE_TX | COMMIT_TX | ROLLBACK_TX => 27,
        COUNTER_CREATE..=COUNTER_GET_NAMES => 27,
        GET_MULTIMAP..=CONTAINS_VALUE_MULTIMAP => 27,
        FORGET_TX | FETCH_TX_RECOVERY | PREPARE_TX_2 => 29,
        ADD_BLOOM_FILTER_LISTENER | UPDATE_BLOOM_FILTER | COUNTER_GET_AND_SET => 31,
        0xE4..=0xEF => 41,
        _ => 20,
    }
}

/// The request op codes that exist at `version`.
pub fn ops_at(version: u8) -> Vec<u8> {
    op::ALL_REQUESTS
        .iter()
        .copied()
        .filter(|o| since(*o) <= version)
        .collect()
}

pub fn version() -> impl Strategy<Value = u8> {
    proptest::sample::select(VERSIONS)
}

pub fn bytes(max: usize) -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..max).prop_map(Bytes::from)
}

pub fn nonempty_bytes(max: usize) -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 1..max).prop_map(Bytes::from)
}

/// Short strings with some non-ASCII characters.
pub fn string() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9_.@-]{0,12}",
        "\\PC{0,6}",
        Just(String::new()),
        Just("org.infinispan.COUNTER".to_string()),
    ]
}

pub fn nonempty_string() -> impl Strategy<Value = String> {
    prop_oneof!["[a-zA-Z0-9_.@$-]{1,16}", "\\PC{1,6}"]
}

pub fn media_type() -> impl Strategy<Value = MediaType> {
    let params = || vec((string(), string()), 0..3);
    prop_oneof![
        Just(MediaType::Unspecified),
        (any::<u32>(), params()).prop_map(|(id, params)| MediaType::Predefined { id, params }),
        (1u32..18).prop_map(|id| MediaType::Predefined { id, params: vec![] }),
        (string(), params()).prop_map(|(name, params)| MediaType::Custom { name, params }),
    ]
}

pub fn header(version: u8, opcode: u8) -> impl Strategy<Value = RequestHeader> {
    let media = if version >= 28 {
        (media_type(), media_type()).boxed()
    } else {
        Just((MediaType::Unspecified, MediaType::Unspecified)).boxed()
    };
    let other = if version >= 40 {
        vec((string(), bytes(8)), 0..3).boxed()
    } else {
        Just(vec![]).boxed()
    };
    (
        any::<u64>(),
        string(),
        any::<u32>(),
        prop_oneof![Just(1u8), Just(2u8), Just(3u8), any::<u8>()],
        any::<u32>(),
        media,
        other,
    )
        .prop_map(
            move |(message_id, cache_name, flags, intelligence, topology_id, media, other)| {
                RequestHeader {
                    message_id,
                    version,
                    opcode,
                    cache_name,
                    flags,
                    intelligence,
                    topology_id,
                    key_type: media.0,
                    value_type: media.1,
                    other_params: other,
                }
            },
        )
}

pub fn time_unit() -> impl Strategy<Value = TimeUnit> {
    proptest::sample::select(vec![
        TimeUnit::Seconds,
        TimeUnit::Milliseconds,
        TimeUnit::Nanoseconds,
        TimeUnit::Microseconds,
        TimeUnit::Minutes,
        TimeUnit::Hours,
        TimeUnit::Days,
    ])
}

pub fn duration() -> impl Strategy<Value = Duration> {
    prop_oneof![
        Just(Duration::Default),
        Just(Duration::Infinite),
        (any::<u64>(), time_unit()).prop_map(|(a, u)| Duration::Amount(a, u)),
        (0u64..200, time_unit()).prop_map(|(a, u)| Duration::Amount(a, u)),
    ]
}

/// `Seconds` only before 2.2, `Units` only from 2.2.
pub fn expiration(version: u8) -> BoxedStrategy<Expiration> {
    if version < 22 {
        (any::<i32>(), any::<i32>())
            .prop_map(|(lifespan, max_idle)| Expiration::Seconds { lifespan, max_idle })
            .boxed()
    } else {
        (duration(), duration())
            .prop_map(|(lifespan, max_idle)| Expiration::Units { lifespan, max_idle })
            .boxed()
    }
}

/// Factory parameters travel with a one-byte count that the server reads signed: < 128.
pub fn factory() -> impl Strategy<Value = Factory> {
    (nonempty_string(), vec(bytes(6), 0..4)).prop_map(|(name, params)| Factory { name, params })
}

pub fn xid() -> impl Strategy<Value = Xid> {
    (any::<i32>(), bytes(65), bytes(65)).prop_map(|(format_id, g, b)| Xid {
        format_id,
        global_transaction_id: g,
        branch_qualifier: b,
    })
}

pub fn modification(version: u8) -> impl Strategy<Value = TxModification> {
    (
        bytes(8),
        any::<u8>(),
        any::<i64>(),
        expiration(version),
        bytes(8),
    )
        .prop_map(|(key, control, vr, exp, value)| TxModification {
            key,
            control,
            version_read: (control & (control::NOT_READ | control::NON_EXISTING) == 0)
                .then_some(vr),
            write: (control & control::REMOVE_OP == 0).then_some((exp, value)),
        })
}

pub fn counter_config() -> impl Strategy<Value = CounterConfig> {
    (any::<u8>(), any::<u32>(), any::<(i64, i64)>(), any::<i64>()).prop_map(
        |(flags, cl, bounds, initial_value)| CounterConfig {
            flags,
            concurrency_level: (flags & 1 != 0).then_some(cl),
            bounds: (flags & 2 != 0).then_some(bounds),
            initial_value,
        },
    )
}

/// A body for request `opcode` at `v`, respecting every version-dependent field.
pub fn request(opcode: u8, v: u8) -> BoxedStrategy<Request> {
    use op::*;
    use Request as R;
    let k = || bytes(12);
    let val = || bytes(24);
    let name = string;
    let dup = move || {
        if v >= 40 {
            any::<bool>().boxed()
        } else {
            Just(false).boxed()
        }
    };
    match opcode {
        PUT => (k(), expiration(v), val())
            .prop_map(|(key, expiration, value)| R::Put {
                key,
                expiration,
                value,
            })
            .boxed(),
        GET => k().prop_map(|key| R::Get { key }).boxed(),
        PUT_IF_ABSENT => (k(), expiration(v), val())
            .prop_map(|(key, expiration, value)| R::PutIfAbsent {
                key,
                expiration,
                value,
            })
            .boxed(),
        REPLACE => (k(), expiration(v), val())
            .prop_map(|(key, expiration, value)| R::Replace {
                key,
                expiration,
                value,
            })
            .boxed(),
        REPLACE_IF_UNMODIFIED => (k(), expiration(v), any::<i64>(), val())
            .prop_map(|(key, expiration, version, value)| R::ReplaceIfUnmodified {
                key,
                expiration,
                version,
                value,
            })
            .boxed(),
        REMOVE => k().prop_map(|key| R::Remove { key }).boxed(),
        REMOVE_IF_UNMODIFIED => (k(), any::<i64>())
            .prop_map(|(key, version)| R::RemoveIfUnmodified { key, version })
            .boxed(),
        CONTAINS_KEY => k().prop_map(|key| R::ContainsKey { key }).boxed(),
        GET_WITH_VERSION => k().prop_map(|key| R::GetWithVersion { key }).boxed(),
        CLEAR => Just(R::Clear).boxed(),
        STATS => Just(R::Stats).boxed(),
        PING => Just(R::Ping).boxed(),
        BULK_GET => any::<u32>().prop_map(|count| R::BulkGet { count }).boxed(),
        GET_WITH_METADATA => k().prop_map(|key| R::GetWithMetadata { key }).boxed(),
        BULK_GET_KEYS => any::<u32>()
            .prop_map(|scope| R::BulkGetKeys { scope })
            .boxed(),
        QUERY => val().prop_map(|query| R::Query { query }).boxed(),
        AUTH_MECH_LIST => Just(R::AuthMechList).boxed(),
        AUTH => (name(), val())
            .prop_map(|(mechanism, response)| R::Auth {
                mechanism,
                response,
            })
            .boxed(),
        ADD_CLIENT_LISTENER => (
            bytes(17),
            any::<bool>(),
            option::of(factory()),
            option::of(factory()),
            any::<bool>(),
            any::<u32>(),
        )
            .prop_map(
                move |(listener_id, ics, filter, converter, raw, interests)| R::AddClientListener {
                    listener_id,
                    include_current_state: ics,
                    filter,
                    converter,
                    use_raw_data: raw && v >= 21,
                    interests: if v >= 26 { interests } else { 0 },
                },
            )
            .boxed(),
        REMOVE_CLIENT_LISTENER => bytes(17)
            .prop_map(|listener_id| R::RemoveClientListener { listener_id })
            .boxed(),
        SIZE => Just(R::Size).boxed(),
        EXEC => (name(), vec((name(), val()), 0..4))
            .prop_map(|(task, params)| R::Exec { task, params })
            .boxed(),
        PUT_ALL => (expiration(v), vec((k(), val()), 0..4))
            .prop_map(|(expiration, entries)| R::PutAll {
                expiration,
                entries,
            })
            .boxed(),
        GET_ALL => vec(k(), 0..5).prop_map(|keys| R::GetAll { keys }).boxed(),
        ITERATION_START => (
            option::of(bytes(8)),
            // The name may be present and empty here (optional string).
            option::of((string(), vec(bytes(6), 0..4))),
            any::<u32>(),
            any::<bool>(),
        )
            .prop_map(move |(segments, fc, batch_size, meta)| R::IterationStart {
                segments,
                filter_converter: fc.map(|(name, params)| Factory { name, params }),
                batch_size,
                include_metadata: meta && v >= 24,
            })
            .boxed(),
        ITERATION_NEXT => name()
            .prop_map(|iteration_id| R::IterationNext { iteration_id })
            .boxed(),
        ITERATION_END => name()
            .prop_map(|iteration_id| R::IterationEnd { iteration_id })
            .boxed(),
        GET_STREAM => (k(), any::<u32>())
            .prop_map(|(key, offset)| R::GetStream { key, offset })
            .boxed(),
        PUT_STREAM => (
            k(),
            expiration(v),
            any::<i64>(),
            prop_oneof![bytes(40), bytes(70_000)],
        )
            .prop_map(|(key, expiration, version, value)| R::PutStream {
                key,
                expiration,
                version,
                value,
            })
            .boxed(),
        PREPARE_TX => (xid(), any::<bool>(), vec(modification(v), 0..4))
            .prop_map(|(xid, one_phase_commit, modifications)| R::PrepareTx {
                xid,
                one_phase_commit,
                modifications,
            })
            .boxed(),
        COMMIT_TX => xid().prop_map(|xid| R::CommitTx { xid }).boxed(),
        ROLLBACK_TX => xid().prop_map(|xid| R::RollbackTx { xid }).boxed(),
        ADD_BLOOM_FILTER_LISTENER => (bytes(17), any::<u32>())
            .prop_map(|(listener_id, bloom_bits)| R::AddBloomFilterListener {
                listener_id,
                bloom_bits,
            })
            .boxed(),
        UPDATE_BLOOM_FILTER => val().prop_map(|bits| R::UpdateBloomFilter { bits }).boxed(),
        COUNTER_CREATE => (name(), counter_config())
            .prop_map(|(name, config)| R::CounterCreate { name, config })
            .boxed(),
        COUNTER_GET_CONFIGURATION => name()
            .prop_map(|name| R::CounterGetConfiguration { name })
            .boxed(),
        COUNTER_IS_DEFINED => name().prop_map(|name| R::CounterIsDefined { name }).boxed(),
        COUNTER_ADD_AND_GET => (name(), any::<i64>())
            .prop_map(|(name, delta)| R::CounterAddAndGet { name, delta })
            .boxed(),
        COUNTER_RESET => name().prop_map(|name| R::CounterReset { name }).boxed(),
        COUNTER_GET => name().prop_map(|name| R::CounterGet { name }).boxed(),
        COUNTER_CAS => (name(), any::<i64>(), any::<i64>())
            .prop_map(|(name, expect, update)| R::CounterCas {
                name,
                expect,
                update,
            })
            .boxed(),
        COUNTER_ADD_LISTENER => (name(), bytes(17))
            .prop_map(|(name, listener_id)| R::CounterAddListener { name, listener_id })
            .boxed(),
        COUNTER_REMOVE_LISTENER => (name(), bytes(17))
            .prop_map(|(name, listener_id)| R::CounterRemoveListener { name, listener_id })
            .boxed(),
        COUNTER_REMOVE => name().prop_map(|name| R::CounterRemove { name }).boxed(),
        COUNTER_GET_NAMES => Just(R::CounterGetNames).boxed(),
        GET_MULTIMAP => (k(), dup())
            .prop_map(|(key, d)| R::GetMultimap {
                key,
                supports_duplicates: d,
            })
            .boxed(),
        GET_MULTIMAP_WITH_METADATA => (k(), dup())
            .prop_map(|(key, d)| R::GetMultimapWithMetadata {
                key,
                supports_duplicates: d,
            })
            .boxed(),
        PUT_MULTIMAP => (k(), expiration(v), val(), dup())
            .prop_map(|(key, expiration, value, d)| R::PutMultimap {
                key,
                expiration,
                value,
                supports_duplicates: d,
            })
            .boxed(),
        REMOVE_KEY_MULTIMAP => (k(), dup())
            .prop_map(|(key, d)| R::RemoveKeyMultimap {
                key,
                supports_duplicates: d,
            })
            .boxed(),
        REMOVE_ENTRY_MULTIMAP => (k(), expiration(v), val(), dup())
            .prop_map(|(key, expiration, value, d)| R::RemoveEntryMultimap {
                key,
                expiration,
                value,
                supports_duplicates: d,
            })
            .boxed(),
        SIZE_MULTIMAP => dup()
            .prop_map(|d| R::SizeMultimap {
                supports_duplicates: d,
            })
            .boxed(),
        CONTAINS_ENTRY_MULTIMAP => (k(), expiration(v), val(), dup())
            .prop_map(|(key, expiration, value, d)| R::ContainsEntryMultimap {
                key,
                expiration,
                value,
                supports_duplicates: d,
            })
            .boxed(),
        CONTAINS_KEY_MULTIMAP => (k(), dup())
            .prop_map(|(key, d)| R::ContainsKeyMultimap {
                key,
                supports_duplicates: d,
            })
            .boxed(),
        CONTAINS_VALUE_MULTIMAP => (expiration(v), val(), dup())
            .prop_map(|(expiration, value, d)| R::ContainsValueMultimap {
                expiration,
                value,
                supports_duplicates: d,
            })
            .boxed(),
        FORGET_TX => xid().prop_map(|xid| R::ForgetTx { xid }).boxed(),
        FETCH_TX_RECOVERY => Just(R::FetchTxRecovery).boxed(),
        PREPARE_TX_2 => (
            xid(),
            any::<bool>(),
            any::<bool>(),
            any::<i64>(),
            vec(modification(v), 0..4),
        )
            .prop_map(
                |(xid, one_phase_commit, recoverable, timeout_ms, modifications)| R::PrepareTx2 {
                    xid,
                    one_phase_commit,
                    recoverable,
                    timeout_ms,
                    modifications,
                },
            )
            .boxed(),
        COUNTER_GET_AND_SET => (name(), any::<i64>())
            .prop_map(|(name, value)| R::CounterGetAndSet { name, value })
            .boxed(),
        START_PUT_STREAM => (k(), expiration(v), any::<i64>())
            .prop_map(|(key, expiration, version)| R::StartPutStream {
                key,
                expiration,
                version,
            })
            .boxed(),
        NEXT_PUT_STREAM => (any::<i32>(), any::<bool>(), nonempty_bytes(40))
            .prop_map(|(stream_id, last_chunk, chunk)| R::NextPutStream {
                stream_id,
                last_chunk,
                chunk,
            })
            .boxed(),
        END_PUT_STREAM => any::<i32>()
            .prop_map(|stream_id| R::EndPutStream { stream_id })
            .boxed(),
        START_GET_STREAM => (k(), any::<u32>())
            .prop_map(|(key, batch_size)| R::StartGetStream { key, batch_size })
            .boxed(),
        NEXT_GET_STREAM => any::<i32>()
            .prop_map(|stream_id| R::NextGetStream { stream_id })
            .boxed(),
        END_GET_STREAM => any::<i32>()
            .prop_map(|stream_id| R::EndGetStream { stream_id })
            .boxed(),
        other => panic!("no strategy for op 0x{other:02X}"),
    }
}

/// A request frame for `opcode` at `version`.
pub fn frame_for(opcode: u8, version: u8) -> BoxedStrategy<RequestFrame> {
    (header(version, opcode), request(opcode, version))
        .prop_map(|(header, request)| RequestFrame { header, request })
        .boxed()
}

/// Any request frame: a version, then an op that exists at that version.
pub fn request_frame() -> BoxedStrategy<RequestFrame> {
    version()
        .prop_flat_map(|v| (Just(v), proptest::sample::select(ops_at(v))))
        .prop_flat_map(|(v, o)| frame_for(o, v))
        .boxed()
}

pub fn metadata() -> impl Strategy<Value = EntryMetadata> {
    (
        option::of((any::<i64>(), any::<u32>())),
        option::of((any::<i64>(), any::<u32>())),
        any::<i64>(),
    )
        .prop_map(|(lifespan, max_idle, version)| EntryMetadata {
            lifespan,
            max_idle,
            version,
        })
}

pub fn topology(intelligence: u8) -> BoxedStrategy<Option<Topology>> {
    let servers = vec((string(), any::<u16>()), 0..3);
    if intelligence == 3 {
        let hash = prop_oneof![
            (0usize..40).prop_map(|n| HashTopology {
                hash_function_version: 0,
                segments: vec![Vec::new(); n],
            }),
            (1u8..=255, vec(vec(any::<u32>(), 0..3), 0..6)).prop_map(|(hv, segments)| {
                HashTopology {
                    hash_function_version: hv,
                    segments,
                }
            }),
        ];
        option::of(
            (any::<u32>(), servers, hash).prop_map(|(topology_id, servers, hash)| Topology {
                topology_id,
                servers,
                hash: Some(hash),
            }),
        )
        .boxed()
    } else {
        option::of(
            (any::<u32>(), servers).prop_map(|(topology_id, servers)| Topology {
                topology_id,
                servers,
                hash: None,
            }),
        )
        .boxed()
    }
}

fn previous() -> impl Strategy<Value = ResponseBody> {
    option::of(
        (metadata(), bytes(16)).prop_map(|(metadata, value)| PreviousValue { metadata, value }),
    )
    .prop_map(ResponseBody::Previous)
}

/// `(status, body)` pairs a server may answer request `opcode` at `v` with (besides errors).
pub fn status_and_body(opcode: u8, v: u8) -> BoxedStrategy<(u8, ResponseBody)> {
    use op::*;
    use ResponseBody as B;
    let st = |s: u8, body: BoxedStrategy<ResponseBody>| body.prop_map(move |b| (s, b)).boxed();
    let empty = |s: u8| Just((s, B::Empty)).boxed();
    let k = || bytes(12);
    let values = || vec(bytes(10), 0..4);
    // Statuses whose body is empty for every op.
    let status_only = prop_oneof![
        Just(status::NOT_EXECUTED),
        Just(status::KEY_DOES_NOT_EXIST),
        Just(status::INVALID_ITERATION),
    ]
    .prop_map(|s| (s, B::Empty))
    .boxed();
    let success: BoxedStrategy<(u8, ResponseBody)> = match opcode {
        PUT
        | PUT_IF_ABSENT
        | REPLACE
        | REPLACE_IF_UNMODIFIED
        | REMOVE
        | REMOVE_IF_UNMODIFIED
        | PUT_STREAM
        | NEXT_PUT_STREAM => prop_oneof![
            empty(status::SUCCESS),
            st(status::SUCCESS_WITH_PREVIOUS, previous().boxed()),
            st(status::NOT_EXECUTED_WITH_PREVIOUS, previous().boxed()),
        ]
        .boxed(),
        COUNTER_ADD_AND_GET | COUNTER_CAS | COUNTER_GET_AND_SET => prop_oneof![
            st(
                status::SUCCESS,
                any::<i64>().prop_map(B::CounterValue).boxed()
            ),
            empty(status::NOT_EXECUTED_WITH_PREVIOUS),
        ]
        .boxed(),
        COUNTER_RESET => prop_oneof![
            empty(status::SUCCESS),
            empty(status::NOT_EXECUTED_WITH_PREVIOUS)
        ]
        .boxed(),
        COUNTER_GET => st(
            status::SUCCESS,
            any::<i64>().prop_map(B::CounterValue).boxed(),
        ),
        GET | EXEC | QUERY => st(status::SUCCESS, bytes(20).prop_map(B::Value).boxed()),
        PING => st(
            status::SUCCESS,
            (
                media_type(),
                media_type(),
                any::<u8>(),
                vec(any::<u8>(), 0..70),
            )
                .prop_map(|(key_type, value_type, server_version, operations)| {
                    B::Ping(PingInfo {
                        key_type,
                        value_type,
                        server_version,
                        operations,
                    })
                })
                .boxed(),
        ),
        GET_WITH_VERSION => st(
            status::SUCCESS,
            (any::<i64>(), bytes(20))
                .prop_map(|(version, value)| B::Versioned { version, value })
                .boxed(),
        ),
        GET_WITH_METADATA | GET_STREAM => st(
            status::SUCCESS,
            (metadata(), bytes(20))
                .prop_map(|(metadata, value)| B::WithMetadata { metadata, value })
                .boxed(),
        ),
        STATS => st(
            status::SUCCESS,
            vec((string(), string()), 0..5).prop_map(B::Stats).boxed(),
        ),
        BULK_GET => st(
            status::SUCCESS,
            vec((k(), bytes(10)), 0..4).prop_map(B::BulkGet).boxed(),
        ),
        BULK_GET_KEYS => st(
            status::SUCCESS,
            vec(k(), 0..4).prop_map(B::BulkGetKeys).boxed(),
        ),
        AUTH_MECH_LIST => st(
            status::SUCCESS,
            vec(string(), 0..4).prop_map(B::AuthMechs).boxed(),
        ),
        COUNTER_GET_NAMES => st(
            status::SUCCESS,
            vec(string(), 0..4).prop_map(B::Names).boxed(),
        ),
        AUTH => st(
            status::SUCCESS,
            (any::<bool>(), bytes(20))
                .prop_map(|(complete, challenge)| B::Auth {
                    complete,
                    challenge,
                })
                .boxed(),
        ),
        SIZE | SIZE_MULTIMAP => st(status::SUCCESS, any::<u64>().prop_map(B::Size).boxed()),
        GET_ALL => st(
            status::SUCCESS,
            vec((k(), bytes(10)), 0..4).prop_map(B::GetAll).boxed(),
        ),
        ITERATION_START => st(status::SUCCESS, string().prop_map(B::IterationId).boxed()),
        ITERATION_NEXT => st(status::SUCCESS, iteration_batch(v)),
        COUNTER_GET_CONFIGURATION => st(
            status::SUCCESS,
            counter_config().prop_map(B::CounterConfig).boxed(),
        ),
        GET_MULTIMAP => st(
            status::SUCCESS,
            values().prop_map(B::MultimapValues).boxed(),
        ),
        GET_MULTIMAP_WITH_METADATA => st(
            status::SUCCESS,
            (metadata(), values())
                .prop_map(|(metadata, values)| B::MultimapWithMetadata { metadata, values })
                .boxed(),
        ),
        REMOVE_KEY_MULTIMAP
        | REMOVE_ENTRY_MULTIMAP
        | CONTAINS_ENTRY_MULTIMAP
        | CONTAINS_KEY_MULTIMAP
        | CONTAINS_VALUE_MULTIMAP => st(status::SUCCESS, any::<bool>().prop_map(B::Bool).boxed()),
        PREPARE_TX | PREPARE_TX_2 | COMMIT_TX | ROLLBACK_TX => {
            st(status::SUCCESS, any::<i32>().prop_map(B::XaCode).boxed())
        }
        FETCH_TX_RECOVERY => st(status::SUCCESS, vec(xid(), 0..3).prop_map(B::Xids).boxed()),
        START_PUT_STREAM => st(status::SUCCESS, any::<i32>().prop_map(B::StreamId).boxed()),
        START_GET_STREAM | NEXT_GET_STREAM => {
            let with_meta = opcode == START_GET_STREAM;
            st(
                status::SUCCESS,
                (any::<i32>(), any::<bool>(), metadata(), bytes(20))
                    .prop_map(move |(stream_id, complete, m, chunk)| B::GetStreamChunk {
                        stream_id,
                        complete,
                        metadata: with_meta.then_some(m),
                        chunk,
                    })
                    .boxed(),
            )
        }
        _ => empty(status::SUCCESS),
    };
    prop_oneof![3 => success, 1 => status_only].boxed()
}

/// An ITERATION_NEXT batch valid at `v`: projection count only from 2.4 (else 1 value per
/// entry), per-entry metadata only from 2.5.
pub fn iteration_batch(v: u8) -> BoxedStrategy<ResponseBody> {
    let projection = if v >= 24 { 0u32..4 } else { 1u32..2 };
    (bytes(6), projection)
        .prop_flat_map(move |(finished_segments, projection_count)| {
            let entry = (
                option::of(metadata()),
                bytes(10),
                vec(bytes(8), projection_count as usize),
            )
                .prop_map(move |(m, key, values)| IterationEntry {
                    metadata: if v >= 25 { m } else { None },
                    key,
                    values,
                });
            vec(entry, 0..4).prop_map(move |entries| ResponseBody::IterationBatch {
                finished_segments: finished_segments.clone(),
                projection_count: if entries.is_empty() {
                    1
                } else {
                    projection_count
                },
                entries,
            })
        })
        .boxed()
}

/// A response to `frame`, error responses included.
pub fn response_to(frame: &RequestFrame) -> BoxedStrategy<Response> {
    let id = frame.header.message_id;
    let opcode = frame.header.opcode;
    let normal = (
        topology(frame.header.intelligence),
        status_and_body(opcode, frame.header.version),
    )
        .prop_map(move |(topology, (status, body))| {
            let mut r = Response::new(id, opcode, status, body);
            r.header.topology = topology;
            r
        });
    let error = (0x81u8..=0x88, string()).prop_map(move |(s, msg)| Response::error(id, s, msg));
    prop_oneof![4 => normal, 1 => error].boxed()
}

/// What a response decodes to at version `v`: the parts that version cannot carry are lost.
pub fn expected_response(mut r: Response, v: u8) -> Response {
    match &mut r.body {
        ResponseBody::Previous(prev) => {
            if let Some(p) = prev.take() {
                *prev = if v >= 40 {
                    // 4.x: "no previous entry" is version -1 with an empty value.
                    (!(p.metadata.version == -1 && p.value.is_empty())).then_some(p)
                } else {
                    // 2.x/3.x: only the value travels; empty means none.
                    (!p.value.is_empty()).then_some(PreviousValue {
                        metadata: EntryMetadata::ABSENT,
                        value: p.value,
                    })
                };
            }
        }
        ResponseBody::Ping(p) => {
            if v < 29 {
                p.key_type = MediaType::Unspecified;
                p.value_type = MediaType::Unspecified;
            }
            if v < 30 {
                p.server_version = 0;
                p.operations.clear();
            }
        }
        _ => {}
    }
    r
}

pub fn cache_event() -> impl Strategy<Value = CacheEvent> {
    let kind = proptest::sample::select(vec![
        EventKind::Created,
        EventKind::Modified,
        EventKind::Removed,
        EventKind::Expired,
    ]);
    (
        any::<u64>(),
        kind,
        bytes(17),
        any::<bool>(),
        any::<bool>(),
        bytes(12),
        any::<i64>(),
        any::<bool>(),
    )
        .prop_map(
            |(message_id, kind, listener_id, retried, plain, data, version, raw)| {
                let payload = if plain {
                    EventPayload::Plain {
                        key: data,
                        version: matches!(kind, EventKind::Created | EventKind::Modified)
                            .then_some(version),
                    }
                } else {
                    EventPayload::Custom { raw, data }
                };
                CacheEvent {
                    message_id,
                    kind,
                    listener_id,
                    retried,
                    payload,
                }
            },
        )
}

pub fn counter_event() -> impl Strategy<Value = CounterEvent> {
    (string(), bytes(17), any::<u8>(), any::<i64>(), any::<i64>()).prop_map(
        |(counter_name, listener_id, state, old_value, new_value)| CounterEvent {
            counter_name,
            listener_id,
            state,
            old_value,
            new_value,
        },
    )
}

pub fn encode_request(frame: &RequestFrame) -> BytesMut {
    let mut b = BytesMut::new();
    frame.write(&mut b);
    b
}

/// Decodes every frame in `buf` with a fresh ServerCodec; panics on error.
pub fn decode_all_requests(buf: &[u8]) -> Vec<RequestFrame> {
    let mut codec = ServerCodec::default();
    let mut src = BytesMut::from(buf);
    let mut out = Vec::new();
    while let Some(f) = codec.decode(&mut src).expect("decode") {
        out.push(f);
    }
    assert!(src.is_empty(), "{} bytes left over", src.len());
    out
}

/// Encodes `frames` through a ClientCodec, which then knows what each response answers.
pub fn client_with(frames: &[RequestFrame]) -> ClientCodec {
    let mut c = ClientCodec::new();
    let mut sink = BytesMut::new();
    for f in frames {
        c.encode(f.clone(), &mut sink).unwrap();
    }
    c
}
