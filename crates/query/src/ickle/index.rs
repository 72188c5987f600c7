//! Per-cache in-memory query index: the decoded entities of one cache, with equality
//! postings on the fields the schema marks as indexed, maintained entry by entry.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

use bytes::Bytes;
use prost_reflect::{DynamicMessage, FieldDescriptor, ReflectMessage};

use super::ast::CmpOp;
use super::exec::{self, Candidate, Paging, QueryOutput};
use super::plan::{BoundQuery, Cond};
use super::value::{field_value, reflect_scalar, IndexKey, OwnedScalar};

/// Indexed field names per message full name (`keycloak.RemoteUserSessionEntity` ->
/// {`realmId`, `userId`, ...}). Only top-level scalar fields are indexed.
pub type IndexedFields = HashMap<String, HashSet<String>>;

struct Entry<P> {
    message: DynamicMessage,
    payload: P,
}

#[derive(Default)]
struct TypeTable {
    keys: HashSet<Bytes>,
    /// field name -> (descriptor, value -> keys). Entries where the field is null are not
    /// posted: equality and IN never match null.
    postings: HashMap<String, (FieldDescriptor, HashMap<IndexKey, HashSet<Bytes>>)>,
}

/// The queryable view of one cache. `P` is what the caller wants back for entity results
/// (ferrod keeps the stored value bytes there so results go out exactly as stored).
pub struct QueryIndex<P> {
    indexed: IndexedFields,
    entries: HashMap<Bytes, Entry<P>>,
    types: HashMap<String, TypeTable>,
}

impl<P> Default for QueryIndex<P> {
    fn default() -> Self {
        QueryIndex {
            indexed: HashMap::new(),
            entries: HashMap::new(),
            types: HashMap::new(),
        }
    }
}

impl<P> QueryIndex<P> {
    pub fn new(indexed: IndexedFields) -> Self {
        QueryIndex {
            indexed,
            ..Default::default()
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn indexed_fields(&self) -> &IndexedFields {
        &self.indexed
    }

    /// Inserts or replaces the entity stored under `key`.
    pub fn upsert(&mut self, key: Bytes, message: DynamicMessage, payload: P) {
        self.remove(&key);
        let type_name = message.descriptor().full_name().to_string();
        let table = self.types.entry(type_name.clone()).or_default();
        if table.postings.is_empty() {
            if let Some(fields) = self.indexed.get(&type_name) {
                table.postings = postings_for(&message.descriptor(), fields);
            }
        }
        for (field, postings) in table.postings.values_mut() {
            if let Some(k) = index_key(&message, field) {
                postings.entry(k).or_default().insert(key.clone());
            }
        }
        table.keys.insert(key.clone());
        self.entries.insert(key, Entry { message, payload });
    }

    /// Drops the entry under `key` (a removal, an expiration, or a value that is no longer an
    /// entity of a known type). Returns whether there was one.
    pub fn remove(&mut self, key: &[u8]) -> bool {
        let Some((key, old)) = self.entries.remove_entry(key) else {
            return false;
        };
        let type_name = old.message.descriptor().full_name().to_string();
        if let Some(table) = self.types.get_mut(&type_name) {
            for (field, postings) in table.postings.values_mut() {
                if let Some(k) = index_key(&old.message, field) {
                    if let Some(set) = postings.get_mut(&k) {
                        set.remove(&key);
                        if set.is_empty() {
                            postings.remove(&k);
                        }
                    }
                }
            }
            table.keys.remove(&key);
        }
        true
    }

    pub fn clear(&mut self) {
        self.entries.clear();
        self.types.clear();
    }

    /// Replaces the indexed field set and rebuilds every posting list from the entries held.
    pub fn set_indexed_fields(&mut self, indexed: IndexedFields) {
        self.indexed = indexed;
        let entries = std::mem::take(&mut self.entries);
        self.types.clear();
        for (key, e) in entries {
            self.upsert(key, e.message, e.payload);
        }
    }

    /// The decoded entity and payload under `key`.
    pub fn get(&self, key: &[u8]) -> Option<(&DynamicMessage, &P)> {
        self.entries.get(key).map(|e| (&e.message, &e.payload))
    }

    /// Runs a SELECT/FROM query.
    pub fn execute(&self, query: &BoundQuery, paging: Paging) -> QueryOutput<'_, P> {
        self.execute_where(query, paging, &|_, _| true)
    }

    /// Runs a query over the entries `keep` accepts only (the caller's liveness check, e.g.
    /// "still in the cache, not expired"), as if the others were not indexed.
    pub fn execute_where(
        &self,
        query: &BoundQuery,
        paging: Paging,
        keep: &dyn Fn(&Bytes, &P) -> bool,
    ) -> QueryOutput<'_, P> {
        exec::run(query, self.candidates(query, keep), paging)
    }

    /// The keys a DELETE statement (or any query's WHERE) matches, in key order.
    pub fn matching_keys(&self, query: &BoundQuery) -> Vec<Bytes> {
        self.matching_keys_where(query, &|_, _| true)
    }

    /// [`Self::matching_keys`] over the entries `keep` accepts.
    pub fn matching_keys_where(
        &self,
        query: &BoundQuery,
        keep: &dyn Fn(&Bytes, &P) -> bool,
    ) -> Vec<Bytes> {
        exec::ordered_matches(query, self.candidates(query, keep))
            .into_iter()
            .map(|(k, _, _)| k.clone())
            .collect()
    }

    /// A superset of the matching entries of the query's entity type: the posting lists when
    /// the condition pins indexed fields, every entry of the type otherwise. The full
    /// condition is evaluated on each candidate afterwards, so the index only ever narrows.
    fn candidates(
        &self,
        query: &BoundQuery,
        keep: &dyn Fn(&Bytes, &P) -> bool,
    ) -> Vec<Candidate<'_, P>> {
        let type_name = query.prepared.entity.full_name();
        let Some(table) = self.types.get(type_name) else {
            return Vec::new();
        };
        let keys: Cow<'_, HashSet<Bytes>> =
            match query.filter.as_ref().and_then(|f| narrow(f, table)) {
                Some(set) => set,
                None => Cow::Borrowed(&table.keys),
            };
        keys.iter()
            .filter_map(|k| {
                self.entries
                    .get_key_value(k)
                    .map(|(k, e)| (k, &e.message, &e.payload))
            })
            // Tables are per type (an upsert moves a key between them), so no type check here.
            .filter(|(k, _, p)| keep(k, p))
            .collect()
    }
}

fn postings_for(
    descriptor: &prost_reflect::MessageDescriptor,
    fields: &HashSet<String>,
) -> HashMap<String, (FieldDescriptor, HashMap<IndexKey, HashSet<Bytes>>)> {
    fields
        .iter()
        .filter_map(|name| descriptor.get_field_by_name(name))
        .filter(|f| {
            !f.is_list() && !f.is_map() && !matches!(f.kind(), prost_reflect::Kind::Message(_))
        })
        .map(|f| (f.name().to_string(), (f, HashMap::new())))
        .collect()
}

fn index_key(message: &DynamicMessage, field: &FieldDescriptor) -> Option<IndexKey> {
    field_value(message, std::slice::from_ref(field))
        .and_then(reflect_scalar)
        .map(|s| s.index_key())
}

fn posting<'t>(
    table: &'t TypeTable,
    field: &super::plan::FieldRef,
    value: &OwnedScalar,
) -> Option<Cow<'t, HashSet<Bytes>>> {
    if field.path.len() != 1 {
        return None;
    }
    let (_, postings) = table.postings.get(field.leaf().name())?;
    static EMPTY: std::sync::OnceLock<HashSet<Bytes>> = std::sync::OnceLock::new();
    Some(match postings.get(&value.as_scalar().index_key()) {
        Some(set) => Cow::Borrowed(set),
        None => Cow::Borrowed(EMPTY.get_or_init(HashSet::new)),
    })
}

/// Candidate keys for a condition from the posting lists, or None when the condition does not
/// restrict an indexed field (then every entry must be scanned).
fn narrow<'t>(cond: &Cond<OwnedScalar>, table: &'t TypeTable) -> Option<Cow<'t, HashSet<Bytes>>> {
    match cond {
        Cond::Cmp {
            field,
            op: CmpOp::Eq,
            value,
        } => posting(table, field, value),
        Cond::In { field, values } => {
            let mut union: Option<HashSet<Bytes>> = None;
            for v in values {
                let set = posting(table, field, v)?;
                union
                    .get_or_insert_with(HashSet::new)
                    .extend(set.iter().cloned());
            }
            union.map(Cow::Owned)
        }
        Cond::And(a, b) => match (narrow(a, table), narrow(b, table)) {
            (Some(x), Some(y)) => {
                let (small, large) = if x.len() <= y.len() { (x, y) } else { (y, x) };
                if small.is_empty() {
                    return Some(small);
                }
                Some(Cow::Owned(
                    small
                        .iter()
                        .filter(|k| large.contains(*k))
                        .cloned()
                        .collect(),
                ))
            }
            (Some(x), None) | (None, Some(x)) => Some(x),
            (None, None) => None,
        },
        Cond::Or(a, b) => {
            let x = narrow(a, table)?;
            let y = narrow(b, table)?;
            let mut u = x.into_owned();
            u.extend(y.iter().cloned());
            Some(Cow::Owned(u))
        }
        _ => None,
    }
}
