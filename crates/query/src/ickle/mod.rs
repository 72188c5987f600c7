//! The Ickle subset that Keycloak and the HotRod clients send with QUERY (0x1F), evaluated
//! over protobuf entities decoded with `prost_reflect`.
//!
//! Grammar (keywords case-insensitive):
//! ```text
//! statement  := [SELECT projection {, projection}] FROM entity [[AS] alias]
//!               [WHERE condition] [GROUP BY path {, path}] [ORDER BY path [ASC|DESC] {, ...}]
//!             | DELETE FROM entity [[AS] alias] [WHERE condition]
//! projection := path | count(path) | count(alias) | sum(path) | avg(path) | min(path) | max(path)
//! condition  := condition (OR | ||) condition | condition (AND | &&) condition
//!             | (NOT | !) condition | ( condition )
//!             | path (= | != | <> | < | <= | > | >=) operand
//!             | path [NOT] IN ( operand {, operand} ) | path [NOT] LIKE operand
//!             | path [NOT] BETWEEN operand AND operand | path IS [NOT] NULL
//! operand    := :name | 'string' | "string" | number | true | false
//! path       := [alias .] field {. field}
//! ```
//! Anything else (joins, HAVING, full-text `:`, functions other than the aggregates, field to
//! field comparisons, repeated/map fields) is rejected with an error naming the position.
//!
//! Semantics, following Infinispan:
//! * an unset field is null; every comparison with null is false and NOT negates plainly, so
//!   `x != 'a'` matches entries without x;
//! * ORDER BY puts nulls first ascending and last descending; ties and queries without ORDER
//!   BY come back in entry-key order (stable across pages);
//! * strings compare by UTF-8 bytes (Lucene term order, as on an indexed Infinispan cache);
//! * grouped queries without ORDER BY come back in group-key order;
//! * `count()` is an int64, sum of integers int64, sum of floats and avg double, min/max keep
//!   the field's type; hit counts are always exact.
//!
//! Use: [`parse`] the text, [`Statement::prepare`] it against the entity's descriptor
//! (an [`EntityResolver`] maps the entity name), [`PreparedQuery::bind`] the named parameters,
//! then run it on a [`QueryIndex`].

mod ast;
mod exec;
mod index;
mod lexer;
mod parser;
mod plan;
#[doc(hidden)]
pub mod testing;
#[cfg(test)]
mod tests;
mod value;

pub use ast::Statement;
pub use exec::{Paging, QueryOutput, QueryRows};
pub use index::{IndexedFields, QueryIndex};
pub use plan::{BoundQuery, PreparedQuery};
pub use value::Value;

use prost_reflect::MessageDescriptor;

/// Maps an Ickle entity name (`keycloak.RemoteUserSessionEntity`) to its message type.
pub trait EntityResolver {
    fn resolve(&self, entity: &str) -> Option<MessageDescriptor>;
}

impl<F: Fn(&str) -> Option<MessageDescriptor>> EntityResolver for F {
    fn resolve(&self, entity: &str) -> Option<MessageDescriptor> {
        self(entity)
    }
}

/// What went wrong with a query. `pos` is a byte offset into the query string.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IckleError {
    #[error("syntax error at column {}: {message}", pos + 1)]
    Syntax { pos: usize, message: String },
    #[error("not supported at column {}: {message}", pos + 1)]
    Unsupported { pos: usize, message: String },
    #[error("unknown entity '{name}' at column {}: no such message type in the registered schemas", pos + 1)]
    UnknownEntity { pos: usize, name: String },
    #[error("unknown field at column {}: {message}", pos + 1)]
    UnknownField { pos: usize, message: String },
    #[error("type error at column {}: {message}", pos + 1)]
    Type { pos: usize, message: String },
    #[error("{}{message}", pos.map(|p| format!("parameter error at column {}: ", p + 1)).unwrap_or_else(|| "parameter error: ".into()))]
    Parameter { pos: Option<usize>, message: String },
}

impl IckleError {
    pub(crate) fn syntax(pos: usize, message: impl Into<String>) -> Self {
        IckleError::Syntax {
            pos,
            message: message.into(),
        }
    }
    pub(crate) fn unsupported(pos: usize, message: impl Into<String>) -> Self {
        IckleError::Unsupported {
            pos,
            message: message.into(),
        }
    }
    pub(crate) fn unknown_field(pos: usize, message: impl Into<String>) -> Self {
        IckleError::UnknownField {
            pos,
            message: message.into(),
        }
    }
    pub(crate) fn type_error(pos: usize, message: impl Into<String>) -> Self {
        IckleError::Type {
            pos,
            message: message.into(),
        }
    }
    pub(crate) fn parameter(pos: Option<usize>, message: impl Into<String>) -> Self {
        IckleError::Parameter {
            pos,
            message: message.into(),
        }
    }
}

/// Parses an Ickle statement.
pub fn parse(text: &str) -> Result<Statement, IckleError> {
    parser::parse(text)
}

impl Statement {
    /// Resolves the entity and every field path, checking literal types.
    pub fn prepare(&self, resolver: &impl EntityResolver) -> Result<PreparedQuery, IckleError> {
        let entity = resolver
            .resolve(&self.entity)
            .ok_or_else(|| IckleError::UnknownEntity {
                pos: self.entity_pos,
                name: self.entity.clone(),
            })?;
        PreparedQuery::prepare(self, entity)
    }

    /// The entity name as written.
    pub fn entity_name(&self) -> &str {
        &self.entity
    }

    pub fn is_delete(&self) -> bool {
        matches!(self.kind, ast::StatementKind::Delete)
    }
}

/// Parses and prepares in one step.
pub fn prepare(text: &str, resolver: &impl EntityResolver) -> Result<PreparedQuery, IckleError> {
    parse(text)?.prepare(resolver)
}
