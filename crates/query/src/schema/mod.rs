//! The schema registry behind the `___protobuf_metadata` cache.
//!
//! Clients register `.proto` files by writing them into that cache (key = file name, value =
//! the file's text). ferrod parses them together with the schemas every Infinispan server has
//! built in (ProtoStream's `message-wrapping.proto`, `common-java-types.proto`,
//! `common-java-container-types.proto` and remote query's `query.proto`) and reports files that
//! do not resolve the way Infinispan does: `<file>.errors` holds the file's error message and
//! `.errors` the names of all failing files, one per line.
//!
//! # API (for the query engine)
//! - [`SchemaRegistry`] is the mutable side: [`SchemaRegistry::put_file`],
//!   [`SchemaRegistry::remove_file`], [`SchemaRegistry::clear`]. Each change re-resolves every
//!   file, so a file that imports a broken or missing file gets an error too, and recovers when
//!   its import is fixed.
//! - [`SchemaRegistry::schemas`] hands out an immutable [`Schemas`] snapshot (`Arc`, cheap to
//!   clone, never blocks writers): [`Schemas::pool`] is a `prost_reflect::DescriptorPool` of
//!   every file that resolved, [`Schemas::message`] looks a message up by full name,
//!   [`Schemas::message_by_type_id`] / [`Schemas::type_id`] map ProtoStream `@TypeId`s,
//!   [`Schemas::annotations`] gives the `@Indexed` / `@Basic(...)` etc. of a message and its
//!   fields, [`Schemas::errors`] the per-file errors.
//! - [`crate::wrapped`] decodes and encodes the `WrappedMessage` envelope with a snapshot.

pub mod annotations;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use prost_reflect::{DescriptorPool, EnumDescriptor, MessageDescriptor};
use prost_types::FileDescriptorProto;

pub use annotations::{Annotation, FieldAnnotations, FieldIndex, IndexKind, MessageAnnotations};

/// The cache that holds the registered `.proto` files.
pub const PROTOBUF_METADATA_CACHE_NAME: &str = "___protobuf_metadata";
/// Every key of a registered file ends with this.
pub const PROTO_KEY_SUFFIX: &str = ".proto";
/// Error keys end with this; the key `.errors` alone lists the failing files.
pub const ERRORS_KEY_SUFFIX: &str = ".errors";

/// Schemas every Infinispan server knows without a client registering them (name, text).
pub const BUILTIN_FILES: &[(&str, &str)] = &[
    (
        "org/infinispan/protostream/message-wrapping.proto",
        include_str!("builtin/message-wrapping.proto"),
    ),
    (
        "common-java-types.proto",
        include_str!("builtin/common-java-types.proto"),
    ),
    (
        "common-java-container-types.proto",
        include_str!("builtin/common-java-container-types.proto"),
    ),
    (
        "org/infinispan/query/remote/client/query.proto",
        include_str!("builtin/query.proto"),
    ),
];

/// Full name of the WrappedMessage envelope.
pub const WRAPPED_MESSAGE: &str = "org.infinispan.protostream.WrappedMessage";

pub fn is_builtin(name: &str) -> bool {
    BUILTIN_FILES.iter().any(|(n, _)| *n == name)
}

/// A message or an enum, as `@TypeId` may name either.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TypeDescriptor {
    Message(MessageDescriptor),
    Enum(EnumDescriptor),
}

impl TypeDescriptor {
    pub fn full_name(&self) -> &str {
        match self {
            TypeDescriptor::Message(m) => m.full_name(),
            TypeDescriptor::Enum(e) => e.full_name(),
        }
    }
}

/// An immutable view of the registry after one change.
#[derive(Debug)]
pub struct Schemas {
    /// Grows by one with every change of the registry that produced this snapshot.
    generation: u64,
    pool: DescriptorPool,
    /// Error message per failing user file.
    errors: BTreeMap<String, String>,
    by_type_id: HashMap<u32, String>,
    type_ids: HashMap<String, u32>,
    /// Per message full name (enums carry only their type id, in `type_ids`).
    annotations: HashMap<String, MessageAnnotations>,
}

impl Schemas {
    /// Distinguishes snapshots of one registry: a cache of anything derived from the schemas
    /// (compiled queries, index layouts) is stale once this differs.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Every file that resolved, built-ins included.
    pub fn pool(&self) -> &DescriptorPool {
        &self.pool
    }

    pub fn message(&self, full_name: &str) -> Option<MessageDescriptor> {
        self.pool.get_message_by_name(full_name)
    }

    pub fn enumeration(&self, full_name: &str) -> Option<EnumDescriptor> {
        self.pool.get_enum_by_name(full_name)
    }

    /// The message or enum declared with `@TypeId(id)`.
    pub fn type_by_id(&self, id: u32) -> Option<TypeDescriptor> {
        let name = self.by_type_id.get(&id)?;
        self.message(name)
            .map(TypeDescriptor::Message)
            .or_else(|| self.enumeration(name).map(TypeDescriptor::Enum))
    }

    pub fn message_by_type_id(&self, id: u32) -> Option<MessageDescriptor> {
        match self.type_by_id(id)? {
            TypeDescriptor::Message(m) => Some(m),
            TypeDescriptor::Enum(_) => None,
        }
    }

    /// The `@TypeId` of a message or enum.
    pub fn type_id(&self, full_name: &str) -> Option<u32> {
        self.type_ids.get(full_name).copied()
    }

    /// The annotations of a message and its fields (every resolved message has an entry).
    pub fn annotations(&self, full_name: &str) -> Option<&MessageAnnotations> {
        self.annotations.get(full_name)
    }

    /// The index definition of one field, `None` if the field is not indexed.
    pub fn field_index(&self, message: &str, field: &str) -> Option<&FieldIndex> {
        self.annotations
            .get(message)?
            .fields
            .get(field)?
            .index
            .as_ref()
    }

    /// Error message per failing file, in file name order.
    pub fn errors(&self) -> &BTreeMap<String, String> {
        &self.errors
    }

    pub fn file_error(&self, name: &str) -> Option<&str> {
        self.errors.get(name).map(String::as_str)
    }

    /// The value of the `.errors` key: failing file names, one per line; `None` if all resolve.
    pub fn errors_summary(&self) -> Option<String> {
        if self.errors.is_empty() {
            None
        } else {
            Some(self.errors.keys().cloned().collect::<Vec<_>>().join("\n"))
        }
    }
}

/// The registered files and the snapshot derived from them. One per replica; the server keeps
/// it in step with the `___protobuf_metadata` cache.
#[derive(Debug)]
pub struct SchemaRegistry {
    files: BTreeMap<String, String>,
    builtin_pool: DescriptorPool,
    current: Arc<Schemas>,
}

impl Default for SchemaRegistry {
    fn default() -> Self {
        Self::new()
    }
}

impl SchemaRegistry {
    /// A registry holding only the built-in schemas.
    pub fn new() -> Self {
        let mut pool = DescriptorPool::new();
        for (name, text) in BUILTIN_FILES {
            // The built-ins are part of this binary; the unit tests prove they resolve.
            match protox_parse::parse(name, text) {
                Ok(fdp) => {
                    if let Err(e) = pool.add_file_descriptor_proto(fdp) {
                        tracing::error!("built-in schema {name} does not resolve: {e}");
                    }
                }
                Err(e) => tracing::error!("built-in schema {name} does not parse: {e}"),
            }
        }
        let mut registry = SchemaRegistry {
            files: BTreeMap::new(),
            builtin_pool: pool,
            current: Arc::new(Schemas {
                generation: 0,
                pool: DescriptorPool::new(),
                errors: BTreeMap::new(),
                by_type_id: HashMap::new(),
                type_ids: HashMap::new(),
                annotations: HashMap::new(),
            }),
        };
        registry.rebuild();
        registry
    }

    /// Registers (or replaces) a file. Returns false when the text is unchanged (no rebuild).
    pub fn put_file(&mut self, name: &str, text: &str) -> bool {
        if self.files.get(name).is_some_and(|t| t == text) {
            return false;
        }
        self.files.insert(name.to_string(), text.to_string());
        self.rebuild();
        true
    }

    /// Unregisters a file; files importing it get an error. Returns false if it was not there.
    pub fn remove_file(&mut self, name: &str) -> bool {
        if self.files.remove(name).is_none() {
            return false;
        }
        self.rebuild();
        true
    }

    /// Unregisters every file (the built-ins stay).
    pub fn clear(&mut self) {
        if !self.files.is_empty() {
            self.files.clear();
            self.rebuild();
        }
    }

    /// Makes the registered files exactly `files` (one rebuild). Returns false if nothing changed.
    pub fn replace_all(&mut self, files: BTreeMap<String, String>) -> bool {
        if self.files == files {
            return false;
        }
        self.files = files;
        self.rebuild();
        true
    }

    /// The registered (user) files and their text.
    pub fn files(&self) -> &BTreeMap<String, String> {
        &self.files
    }

    /// The current snapshot.
    pub fn schemas(&self) -> Arc<Schemas> {
        self.current.clone()
    }

    fn rebuild(&mut self) {
        let mut resolver = Resolver {
            parsed: self
                .files
                .iter()
                .map(|(name, text)| (name.as_str(), parse(name, text)))
                .collect(),
            pool: self.builtin_pool.clone(),
            status: BTreeMap::new(),
            stack: Vec::new(),
        };
        let names: Vec<&str> = self.files.keys().map(String::as_str).collect();
        for name in names {
            resolver.resolve(name);
        }
        let errors = resolver
            .status
            .into_iter()
            .filter_map(|(n, s)| s.err().map(|e| (n.to_string(), e)))
            .collect();
        let generation = self.current.generation + 1;
        self.current = Arc::new(index(generation, resolver.pool, errors));
    }
}

fn parse(name: &str, text: &str) -> Result<FileDescriptorProto, String> {
    protox_parse::parse(name, text).map_err(|e| match e.span() {
        Some(span) => {
            let (line, col) = line_col(text, span.start);
            format!("Syntax error in {name} at {line}:{col}: {e}")
        }
        None => format!("Syntax error in {name}: {e}"),
    })
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

struct Resolver<'a> {
    parsed: BTreeMap<&'a str, Result<FileDescriptorProto, String>>,
    pool: DescriptorPool,
    status: BTreeMap<&'a str, Result<(), String>>,
    stack: Vec<&'a str>,
}

impl<'a> Resolver<'a> {
    /// Resolves `name` after its imports (depth first), adding it to the pool if it and every
    /// file it imports resolve. Error texts follow ProtoStream's.
    fn resolve(&mut self, name: &'a str) -> bool {
        if let Some(s) = self.status.get(name) {
            return s.is_ok();
        }
        let fdp = match self.parsed.get(name) {
            Some(Ok(f)) => f.clone(),
            Some(Err(e)) => {
                self.status.insert(name, Err(e.clone()));
                return false;
            }
            None => return false,
        };
        if is_builtin(name) {
            // A client uploading a copy of a built-in schema changes nothing: the built-in stays.
            self.status.insert(name, Ok(()));
            return true;
        }
        self.stack.push(name);
        let mut error = None;
        let mut seen = HashSet::new();
        for declared in &fdp.dependency {
            if !seen.insert(declared.as_str()) {
                error.get_or_insert(format!("Duplicate import : {declared}"));
                continue;
            }
            if is_builtin(declared) {
                continue;
            }
            let Some(dep) = self
                .parsed
                .get_key_value(declared.as_str())
                .map(|(k, _)| *k)
            else {
                error.get_or_insert(format!("Import '{declared}' not found"));
                continue;
            };
            if self.stack.contains(&dep) {
                error.get_or_insert(format!(
                    "Cyclic import detected at {name}, import {declared}"
                ));
                continue;
            }
            if !self.resolve(dep) {
                error.get_or_insert(format!(
                    "File {name} imports a file ({declared}) that has errors"
                ));
            }
        }
        self.stack.pop();
        if error.is_none() {
            let mut candidate = self.pool.clone();
            match candidate.add_file_descriptor_proto(fdp) {
                Ok(()) => self.pool = candidate,
                Err(e) => error = Some(format!("Error in {name}: {e}")),
            }
        }
        let ok = error.is_none();
        self.status.insert(name, error.map_or(Ok(()), Err));
        ok
    }
}

/// Builds the lookup tables of a snapshot from the doc comments of every resolved file.
fn index(generation: u64, pool: DescriptorPool, errors: BTreeMap<String, String>) -> Schemas {
    let mut by_type_id = HashMap::new();
    let mut type_ids = HashMap::new();
    let mut annotations = HashMap::new();
    for message in pool.all_messages() {
        let file = message.parent_file_descriptor_proto();
        let own = annotations::parse_annotations(&comment(file, message.path()));
        let mut ann = MessageAnnotations {
            type_id: annotations::type_id(&own),
            indexed: annotations::is_indexed(&own),
            annotations: own,
            fields: BTreeMap::new(),
        };
        for field in message.fields() {
            let list = annotations::parse_annotations(&comment(file, field.path()));
            if list.is_empty() {
                continue;
            }
            ann.fields.insert(
                field.name().to_string(),
                FieldAnnotations {
                    index: annotations::field_index(&list),
                    annotations: list,
                },
            );
        }
        if let Some(id) = ann.type_id {
            register_id(&mut by_type_id, &mut type_ids, id, message.full_name());
        }
        annotations.insert(message.full_name().to_string(), ann);
    }
    for e in pool.all_enums() {
        let own =
            annotations::parse_annotations(&comment(e.parent_file_descriptor_proto(), e.path()));
        if let Some(id) = annotations::type_id(&own) {
            register_id(&mut by_type_id, &mut type_ids, id, e.full_name());
        }
    }
    Schemas {
        generation,
        pool,
        errors,
        by_type_id,
        type_ids,
        annotations,
    }
}

fn register_id(
    by_type_id: &mut HashMap<u32, String>,
    type_ids: &mut HashMap<String, u32>,
    id: u32,
    name: &str,
) {
    // Two types claiming one id: the first (pool order: built-ins, then files by name) keeps it.
    if let Some(other) = by_type_id.get(&id) {
        tracing::warn!("@TypeId({id}) of {name} is already used by {other}; ignored");
        return;
    }
    by_type_id.insert(id, name.to_string());
    type_ids.insert(name.to_string(), id);
}

/// The leading (documentation) comment of the element at `path`.
fn comment(file: &FileDescriptorProto, path: &[i32]) -> String {
    file.source_code_info
        .as_ref()
        .and_then(|info| info.location.iter().find(|l| l.path == path))
        .and_then(|l| l.leading_comments.clone())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests;
