use proptest::prelude::*;
use prost_reflect::{DynamicMessage, Value};

use super::*;
use crate::schema::SchemaRegistry;

const KEYCLOAK: &str = include_str!("../../tests/fixtures/KeycloakModelSchema-26.4.7.proto");

fn keycloak() -> std::sync::Arc<Schemas> {
    let mut r = SchemaRegistry::new();
    r.put_file("KeycloakModelSchema.proto", KEYCLOAK);
    assert!(
        r.schemas().errors().is_empty(),
        "{:?}",
        r.schemas().errors()
    );
    r.schemas()
}

#[test]
fn string_layout_is_protostreams() {
    // Key "abc" as Keycloak's client writes it.
    assert_eq!(encode_string("abc"), [0x4A, 0x03, 0x61, 0x62, 0x63]);
    assert_eq!(
        decode_string(&[0x4A, 0x03, 0x61, 0x62, 0x63]).as_deref(),
        Some("abc")
    );
    let s = SchemaRegistry::new().schemas();
    assert_eq!(
        decode(&[0x4A, 0x03, 0x61, 0x62, 0x63], &s),
        Ok(WrappedValue::String("abc".into()))
    );
    // Not a wrapped string: raw text, an int, a truncated string.
    assert_eq!(decode_string(b"abc.proto"), None);
    assert_eq!(decode_string(&[0x28, 0x05]), None);
    assert_eq!(decode_string(&[0x4A, 0x05, 0x61]), None);
}

#[test]
fn scalar_layouts() {
    let s = SchemaRegistry::new().schemas();
    // Integer 5 -> wrappedInt32 (field 5); Long 5 -> wrappedInt64 (field 3).
    assert_eq!(WrappedValue::Int32(5).encode(&s), [0x28, 0x05]);
    assert_eq!(WrappedValue::Int64(5).encode(&s), [0x18, 0x05]);
    // Negative ints are sign-extended to ten bytes, as Java's protobuf writer does.
    assert_eq!(
        WrappedValue::Int32(-1).encode(&s),
        [0x28, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]
    );
    assert_eq!(WrappedValue::Bool(true).encode(&s), [0x40, 0x01]);
    assert_eq!(
        WrappedValue::Char(b'x' as u16).encode(&s),
        [0xA0, 0x01, 0x78]
    );
    assert_eq!(
        WrappedValue::Instant {
            seconds: 1,
            nanos: 2
        }
        .encode(&s),
        [0xC0, 0x01, 0x01, 0xC8, 0x01, 0x02]
    );
    assert_eq!(WrappedValue::Null.encode(&s), [] as [u8; 0]);
    assert_eq!(decode(&[], &s), Ok(WrappedValue::Null));
    assert_eq!(decode(&[0xD0, 0x01, 0x01], &s), Ok(WrappedValue::Null));
}

#[test]
fn keycloak_message_key_by_type_id() {
    let s = keycloak();
    let desc = s
        .message_by_type_id(65606)
        .expect("ClientSessionKey has @TypeId(65606)");
    assert_eq!(desc.full_name(), "keycloak.ClientSessionKey");
    let mut m = DynamicMessage::new(desc);
    m.set_field_by_name("userSessionId", Value::String("u".into()));
    m.set_field_by_name("clientId", Value::String("c".into()));
    let bytes = WrappedValue::Message(m.clone()).encode(&s);
    // 19:varint 65606, then 17:bytes {1:"u", 2:"c"} -- the order ProtoStream writes.
    assert_eq!(
        bytes,
        [0x98, 0x01, 0xC6, 0x80, 0x04, 0x8A, 0x01, 0x06, 0x0A, 0x01, b'u', 0x12, 0x01, b'c']
    );
    assert_eq!(decode(&bytes, &s), Ok(WrappedValue::Message(m)));
}

#[test]
fn message_by_name_and_enum() {
    let s = keycloak();
    let desc = s.message("keycloak.RemoteUserSessionEntity").unwrap();
    let mut m = DynamicMessage::new(desc);
    m.set_field_by_name("realmId", Value::String("r".into()));
    m.set_field_by_name("started", Value::I32(7));
    // Field 16 (type name) instead of a type id.
    let mut bytes = Vec::new();
    put_bytes(
        &mut bytes,
        WRAPPED_TYPE_NAME,
        b"keycloak.RemoteUserSessionEntity",
    );
    put_bytes(&mut bytes, WRAPPED_MESSAGE, &m.encode_to_vec());
    assert_eq!(decode(&bytes, &s), Ok(WrappedValue::Message(m.clone())));
    // Fields may come in any order.
    let mut reversed = Vec::new();
    put_bytes(&mut reversed, WRAPPED_MESSAGE, &m.encode_to_vec());
    put_bytes(
        &mut reversed,
        WRAPPED_TYPE_NAME,
        b"keycloak.RemoteUserSessionEntity",
    );
    assert_eq!(decode(&reversed, &s), Ok(WrappedValue::Message(m)));

    let state = s
        .enumeration("keycloak.RemoteUserSessionEntity.State")
        .or_else(|| s.pool().all_enums().find(|e| e.name() == "State"))
        .expect("an enum State");
    let v = WrappedValue::Enum {
        descriptor: state,
        number: 1,
    };
    assert_eq!(decode(&v.encode(&s), &s), Ok(v));
}

#[test]
fn projections_wrap_the_java_type() {
    let s = keycloak();
    let desc = s.message("keycloak.RemoteUserSessionEntity").unwrap();
    let mut m = DynamicMessage::new(desc.clone());
    m.set_field_by_name("started", Value::I32(7));
    m.set_field_by_name("realmId", Value::String("r".into()));
    let field = |n: &str| desc.get_field_by_name(n).unwrap();
    let started =
        WrappedValue::from_field(&m.get_field(&field("started")), &field("started").kind());
    assert_eq!(started.unwrap().encode(&s), [0x28, 0x07]);
    let realm = WrappedValue::from_field(&m.get_field(&field("realmId")), &field("realmId").kind());
    assert_eq!(realm.unwrap().encode(&s), encode_string("r"));
    let state = WrappedValue::from_field(&m.get_field(&field("state")), &field("state").kind());
    assert!(matches!(state, Some(WrappedValue::Enum { number: 0, .. })));
    let notes = WrappedValue::from_field(&m.get_field(&field("notes")), &field("notes").kind());
    assert_eq!(notes, None);
    // Unsigned 64-bit values are Java longs.
    assert_eq!(
        WrappedValue::from_field(&Value::U64(u64::MAX), &prost_reflect::Kind::Uint64),
        Some(WrappedValue::Int64(-1))
    );
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    let s = keycloak();
    assert_eq!(
        decode(&[0x98, 0x01, 0x01, 0x8A, 0x01, 0x00], &s),
        Err(WrappedError::UnknownTypeId(1))
    );
    assert!(matches!(
        decode(&[0x8A, 0x01, 0x00], &s),
        Err(WrappedError::MissingType("message"))
    ));
    assert!(matches!(
        decode(&[0x4A, 0x02, 0xFF, 0xFE], &s),
        Err(WrappedError::Malformed(_))
    ));
    assert!(matches!(
        decode(&[0xFF], &s),
        Err(WrappedError::Malformed(_))
    ));
    assert!(matches!(
        decode(&[0x4A], &s),
        Err(WrappedError::Malformed(_))
    ));
    // A wrong wire type for a known field.
    assert!(matches!(
        decode(&[0x4D, 0, 0, 0, 0], &s),
        Err(WrappedError::Malformed(_))
    ));
    // Message bytes that are not the type's encoding.
    assert!(matches!(
        decode(
            &[0x98, 0x01, 0xC6, 0x80, 0x04, 0x8A, 0x01, 0x02, 0x0A, 0x05],
            &s
        ),
        Err(WrappedError::BadMessage { .. })
    ));
    assert_eq!(
        decode(&[0xD8, 0x01, 0x00, 0xE2, 0x01, 0x00], &s),
        Err(WrappedError::Container)
    );
}

fn scalar() -> impl Strategy<Value = WrappedValue> {
    prop_oneof![
        Just(WrappedValue::Null),
        any::<f64>()
            .prop_filter("NaN != NaN", |v| !v.is_nan())
            .prop_map(WrappedValue::Double),
        any::<f32>()
            .prop_filter("NaN != NaN", |v| !v.is_nan())
            .prop_map(WrappedValue::Float),
        any::<i64>().prop_map(WrappedValue::Int64),
        any::<u64>().prop_map(WrappedValue::UInt64),
        any::<i32>().prop_map(WrappedValue::Int32),
        any::<u64>().prop_map(WrappedValue::Fixed64),
        any::<u32>().prop_map(WrappedValue::Fixed32),
        any::<bool>().prop_map(WrappedValue::Bool),
        ".*".prop_map(WrappedValue::String),
        proptest::collection::vec(any::<u8>(), 0..64)
            .prop_map(|b| WrappedValue::Bytes(Bytes::from(b))),
        any::<u32>().prop_map(WrappedValue::UInt32),
        any::<i32>().prop_map(WrappedValue::SFixed32),
        any::<i64>().prop_map(WrappedValue::SFixed64),
        any::<i32>().prop_map(WrappedValue::SInt32),
        any::<i64>().prop_map(WrappedValue::SInt64),
        any::<u16>().prop_map(WrappedValue::Char),
        any::<i16>().prop_map(WrappedValue::Short),
        any::<i8>().prop_map(WrappedValue::Byte),
        any::<i64>().prop_map(WrappedValue::DateMillis),
        (any::<i64>(), 0..1_000_000_000i32)
            .prop_map(|(seconds, nanos)| WrappedValue::Instant { seconds, nanos }),
    ]
}

proptest! {
    #[test]
    fn scalars_round_trip(v in scalar()) {
        let s = keycloak();
        prop_assert_eq!(decode(&v.encode(&s), &s), Ok(v));
    }

    #[test]
    fn keycloak_entities_round_trip(
        realm in ".*", user in ".*", started in any::<i32>(), remember in any::<bool>(),
        notes in proptest::collection::btree_map(".*", ".*", 0..4),
    ) {
        let s = keycloak();
        let mut m = DynamicMessage::new(s.message_by_type_id(65605).unwrap());
        m.set_field_by_name("realmId", Value::String(realm));
        m.set_field_by_name("userId", Value::String(user));
        m.set_field_by_name("started", Value::I32(started));
        m.set_field_by_name("rememberMe", Value::Bool(remember));
        m.set_field_by_name("notes", Value::Map(notes.into_iter()
            .map(|(k, v)| (prost_reflect::MapKey::String(k), Value::String(v))).collect()));
        let v = WrappedValue::Message(m);
        let bytes = v.encode(&s);
        // Type id 65605 = C5 80 04 after the 19 tag.
        prop_assert_eq!(&bytes[..5], &[0x98, 0x01, 0xC5, 0x80, 0x04]);
        // proto3 decoding marks default-valued fields present and map order is free, so the
        // round trip is checked as decode(encode(decode(b))) == decode(b).
        let back = decode(&bytes, &s);
        prop_assert!(matches!(back, Ok(WrappedValue::Message(_))), "{:?}", back);
        let back = back.unwrap();
        prop_assert_eq!(decode(&back.encode(&s), &s), Ok(back));
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        let s = keycloak();
        let _ = decode(&bytes, &s);
        let _ = decode_string(&bytes);
    }
}
