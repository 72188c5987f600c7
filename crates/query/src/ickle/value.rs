//! Values: what a field holds, what a parameter carries, what a projection returns.

use std::cmp::Ordering;

use prost_reflect::{DynamicMessage, FieldDescriptor, Kind};

/// A typed value as it crosses the engine's boundary: named parameters come in as these
/// (decoded from WrappedMessage by the caller) and projections go out as these, keeping the
/// protobuf type of the field so the caller can wrap it the way Infinispan does (an int32
/// field comes back as a Java Integer, `count()` as a Long).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int32(i32),
    Int64(i64),
    UInt32(u32),
    UInt64(u64),
    Float(f32),
    Double(f64),
    String(String),
    Bytes(Vec<u8>),
    /// An enum field's value: its name in the schema (when known) and its number.
    Enum {
        /// The enum type's full name, when known.
        type_name: Option<String>,
        name: Option<String>,
        number: i32,
    },
}

impl Value {
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Int32(_) => "int32",
            Value::Int64(_) => "int64",
            Value::UInt32(_) => "uint32",
            Value::UInt64(_) => "uint64",
            Value::Float(_) => "float",
            Value::Double(_) => "double",
            Value::String(_) => "string",
            Value::Bytes(_) => "bytes",
            Value::Enum { .. } => "enum",
        }
    }

    /// Reads a scalar protobuf value (a field's stored value) into a typed value.
    pub(crate) fn from_reflect(v: &prost_reflect::Value, field: &FieldDescriptor) -> Value {
        use prost_reflect::Value as R;
        match v {
            R::Bool(b) => Value::Bool(*b),
            R::I32(n) => Value::Int32(*n),
            R::I64(n) => Value::Int64(*n),
            R::U32(n) => Value::UInt32(*n),
            R::U64(n) => Value::UInt64(*n),
            R::F32(f) => Value::Float(*f),
            R::F64(f) => Value::Double(*f),
            R::String(s) => Value::String(s.clone()),
            R::Bytes(b) => Value::Bytes(b.to_vec()),
            R::EnumNumber(n) => {
                let (type_name, name) = match field.kind() {
                    Kind::Enum(e) => (
                        Some(e.full_name().to_string()),
                        e.get_value(*n).map(|v| v.name().to_string()),
                    ),
                    _ => (None, None),
                };
                Value::Enum {
                    type_name,
                    name,
                    number: *n,
                }
            }
            R::Message(_) | R::List(_) | R::Map(_) => Value::Null,
        }
    }

    pub(crate) fn to_scalar(&self) -> Option<Scalar<'_>> {
        Some(match self {
            Value::Null => return None,
            Value::Bool(b) => Scalar::Bool(*b),
            Value::Int32(n) => Scalar::Int(*n as i128),
            Value::Int64(n) => Scalar::Int(*n as i128),
            Value::UInt32(n) => Scalar::Int(*n as i128),
            Value::UInt64(n) => Scalar::Int(*n as i128),
            Value::Float(f) => Scalar::Float(*f as f64),
            Value::Double(f) => Scalar::Float(*f),
            Value::String(s) => Scalar::Str(s),
            Value::Bytes(b) => Scalar::Bytes(b),
            Value::Enum { number, .. } => Scalar::Int(*number as i128),
        })
    }
}

/// The comparable form of a field value: every integer width (and enum numbers) as one
/// integer domain, both float widths as f64. Operands are converted to the field's class when
/// the query is bound, so comparisons only meet mixed Int/Float when a float field meets an
/// integer operand, which compares numerically.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Scalar<'a> {
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(&'a str),
    Bytes(&'a [u8]),
}

impl Scalar<'_> {
    pub(crate) fn compare(&self, other: &Scalar<'_>) -> Option<Ordering> {
        match (self, other) {
            (Scalar::Bool(a), Scalar::Bool(b)) => Some(a.cmp(b)),
            (Scalar::Int(a), Scalar::Int(b)) => Some(a.cmp(b)),
            (Scalar::Float(a), Scalar::Float(b)) => Some(a.total_cmp(b)),
            (Scalar::Int(a), Scalar::Float(b)) => Some((*a as f64).total_cmp(b)),
            (Scalar::Float(a), Scalar::Int(b)) => Some(a.total_cmp(&(*b as f64))),
            // Strings order by their UTF-8 bytes, as Lucene's sorted terms do on an indexed
            // Infinispan cache (Keycloak's caches are indexed).
            (Scalar::Str(a), Scalar::Str(b)) => Some(a.cmp(b)),
            (Scalar::Bytes(a), Scalar::Bytes(b)) => Some(a.cmp(b)),
            _ => None,
        }
    }

    pub(crate) fn index_key(&self) -> IndexKey {
        match self {
            Scalar::Bool(b) => IndexKey::Bool(*b),
            Scalar::Int(n) => IndexKey::Int(*n),
            // -0.0 and 0.0 compare equal, so they share a key.
            Scalar::Float(f) => IndexKey::Float(if *f == 0.0 { 0 } else { f.to_bits() }),
            Scalar::Str(s) => IndexKey::Str(s.to_string()),
            Scalar::Bytes(b) => IndexKey::Bytes(b.to_vec()),
        }
    }
}

/// An owned scalar, used where a value outlives the message it came from (bound operands).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum OwnedScalar {
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
}

impl OwnedScalar {
    pub(crate) fn as_scalar(&self) -> Scalar<'_> {
        match self {
            OwnedScalar::Bool(b) => Scalar::Bool(*b),
            OwnedScalar::Int(n) => Scalar::Int(*n),
            OwnedScalar::Float(f) => Scalar::Float(*f),
            OwnedScalar::Str(s) => Scalar::Str(s),
        }
    }
}

/// Hashable key of an indexed field value (exact equality as [`Scalar::compare`] defines it,
/// given that operands are converted to the field's class first).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum IndexKey {
    Bool(bool),
    Int(i128),
    Float(u64),
    Str(String),
    Bytes(Vec<u8>),
}

/// Follows `path` (nested singular message fields) and returns the leaf's stored value, or
/// None when any step is unset: a missing field is null, as in Infinispan (proto3 fields
/// without explicit presence read as null when they hold their default).
pub(crate) fn field_value<'m>(
    msg: &'m DynamicMessage,
    path: &[FieldDescriptor],
) -> Option<&'m prost_reflect::Value> {
    let (last, parents) = path.split_last()?;
    let mut current = msg;
    for f in parents {
        if !current.has_field(f) {
            return None;
        }
        match current.get_field(f) {
            std::borrow::Cow::Borrowed(prost_reflect::Value::Message(m)) => current = m,
            _ => return None,
        }
    }
    if !current.has_field(last) {
        return None;
    }
    match current.get_field(last) {
        std::borrow::Cow::Borrowed(v) => Some(v),
        std::borrow::Cow::Owned(_) => None,
    }
}

pub(crate) fn reflect_scalar(v: &prost_reflect::Value) -> Option<Scalar<'_>> {
    use prost_reflect::Value as R;
    Some(match v {
        R::Bool(b) => Scalar::Bool(*b),
        R::I32(n) => Scalar::Int(*n as i128),
        R::I64(n) => Scalar::Int(*n as i128),
        R::U32(n) => Scalar::Int(*n as i128),
        R::U64(n) => Scalar::Int(*n as i128),
        R::F32(f) => Scalar::Float(*f as f64),
        R::F64(f) => Scalar::Float(*f),
        R::String(s) => Scalar::Str(s),
        R::Bytes(b) => Scalar::Bytes(b),
        R::EnumNumber(n) => Scalar::Int(*n as i128),
        R::Message(_) | R::List(_) | R::Map(_) => return None,
    })
}
