//! Resolving a parsed statement against the entity's protobuf descriptor (prepare), then
//! binding named parameters (bind). Every type error is found here, before any entry is read.

use std::collections::HashMap;

use prost_reflect::{Cardinality, EnumDescriptor, FieldDescriptor, Kind, MessageDescriptor};

use super::ast::{
    self, AggregateFn, CmpOp, Literal, Operand, Projection, Statement, StatementKind,
};
use super::value::{OwnedScalar, Value};
use super::IckleError;

/// The comparison class of a scalar field: what literals and parameters it accepts.
#[derive(Debug, Clone)]
pub(crate) enum FieldClass {
    Bool,
    Int,
    Float,
    Str,
    Bytes,
    Enum(EnumDescriptor),
}

impl FieldClass {
    fn name(&self) -> &'static str {
        match self {
            FieldClass::Bool => "boolean",
            FieldClass::Int => "integer",
            FieldClass::Float => "floating point",
            FieldClass::Str => "string",
            FieldClass::Bytes => "bytes",
            FieldClass::Enum(_) => "enum",
        }
    }
}

/// A resolved scalar field path.
#[derive(Debug, Clone)]
pub(crate) struct FieldRef {
    pub path: Vec<FieldDescriptor>,
    /// The path as the schema names it (without the alias), e.g. `realmId`.
    pub name: String,
    pub class: FieldClass,
}

impl FieldRef {
    pub(crate) fn leaf(&self) -> &FieldDescriptor {
        self.path
            .last()
            .expect("a resolved path has at least one field")
    }
}

#[derive(Debug, Clone)]
pub(crate) enum PreparedOperand {
    Const(OwnedScalar),
    Param { name: String, pos: usize },
}

#[derive(Debug, Clone)]
pub(crate) enum Cond<O> {
    And(Box<Cond<O>>, Box<Cond<O>>),
    Or(Box<Cond<O>>, Box<Cond<O>>),
    Not(Box<Cond<O>>),
    Cmp {
        field: FieldRef,
        op: CmpOp,
        value: O,
    },
    In {
        field: FieldRef,
        values: Vec<O>,
    },
    Like {
        field: FieldRef,
        pattern: O,
    },
    IsNull {
        field: FieldRef,
    },
    Between {
        field: FieldRef,
        low: O,
        high: O,
    },
}

#[derive(Debug, Clone)]
pub(crate) enum Column {
    Field(FieldRef),
    CountRows,
    Aggregate { func: AggregateFn, field: FieldRef },
}

#[derive(Debug, Clone)]
pub(crate) enum Shape {
    /// `FROM X`: whole entities.
    Entities,
    /// `SELECT a, b FROM X`: one row per matching entity.
    Rows(Vec<Column>),
    /// Aggregates and/or GROUP BY: one row per group (one row in all without GROUP BY).
    Groups {
        columns: Vec<Column>,
        group_by: Vec<FieldRef>,
    },
    Delete,
}

/// A statement resolved against its entity's descriptor, parameters not yet bound. Cacheable
/// per query string and schema.
#[derive(Debug, Clone)]
pub struct PreparedQuery {
    pub(crate) entity: MessageDescriptor,
    pub(crate) shape: Shape,
    pub(crate) filter: Option<Cond<PreparedOperand>>,
    /// For `Groups`, indexes into `group_by`; otherwise fields.
    pub(crate) order_by: Vec<(FieldRef, bool)>,
    pub(crate) params: Vec<(String, FieldClass, usize)>,
}

/// A query with every operand a constant: ready to run.
#[derive(Debug, Clone)]
pub struct BoundQuery {
    pub(crate) prepared: PreparedQuery,
    pub(crate) filter: Option<Cond<OwnedScalar>>,
}

impl PreparedQuery {
    /// The entity's message type.
    pub fn entity(&self) -> &MessageDescriptor {
        &self.entity
    }

    pub fn is_delete(&self) -> bool {
        matches!(self.shape, Shape::Delete)
    }

    /// Number of columns per row: 0 for whole entities (and DELETE).
    pub fn projection_size(&self) -> usize {
        match &self.shape {
            Shape::Entities | Shape::Delete => 0,
            Shape::Rows(c) | Shape::Groups { columns: c, .. } => c.len(),
        }
    }

    /// Names of the named parameters the query uses.
    pub fn parameter_names(&self) -> impl Iterator<Item = &str> {
        self.params.iter().map(|(n, _, _)| n.as_str())
    }

    pub(crate) fn prepare(
        stmt: &Statement,
        entity: MessageDescriptor,
    ) -> Result<PreparedQuery, IckleError> {
        let mut ctx = Resolver {
            entity: &entity,
            alias: stmt.alias.as_deref(),
            params: Vec::new(),
        };
        let filter = match &stmt.filter {
            Some(e) => Some(ctx.cond(e)?),
            None => None,
        };
        let group_by = stmt
            .group_by
            .iter()
            .map(|p| ctx.field(p))
            .collect::<Result<Vec<_>, _>>()?;
        let shape = match &stmt.kind {
            StatementKind::Delete => Shape::Delete,
            StatementKind::Select { projections } if projections.is_empty() => {
                if let Some(p) = stmt.group_by.first() {
                    return Err(IckleError::unsupported(
                        p.pos,
                        "GROUP BY needs a SELECT clause",
                    ));
                }
                Shape::Entities
            }
            StatementKind::Select { projections } => {
                let mut columns = Vec::with_capacity(projections.len());
                let mut has_aggregate = false;
                for p in projections {
                    columns.push(match p {
                        Projection::Path(path) => {
                            if path.segments.len() == 1 && Some(path.segments[0].as_str()) == stmt.alias.as_deref() {
                                return Err(IckleError::unsupported(path.pos, "selecting the whole entity in a SELECT list is not supported; use FROM without SELECT"));
                            }
                            Column::Field(ctx.field(path)?)
                        }
                        Projection::CountEntity { .. } => {
                            has_aggregate = true;
                            Column::CountRows
                        }
                        Projection::Aggregate { func, path } => {
                            has_aggregate = true;
                            let field = ctx.field(path)?;
                            if matches!(func, AggregateFn::Sum | AggregateFn::Avg)
                                && !matches!(field.class, FieldClass::Int | FieldClass::Float)
                            {
                                return Err(IckleError::type_error(path.pos, format!("{}({}) needs a numeric field, {} is {}", func.name(), path, field.name, field.class.name())));
                            }
                            if matches!(func, AggregateFn::Min | AggregateFn::Max) && matches!(field.class, FieldClass::Bytes) {
                                return Err(IckleError::type_error(path.pos, format!("{}({}) cannot order bytes", func.name(), path)));
                            }
                            Column::Aggregate { func: *func, field }
                        }
                    });
                }
                if has_aggregate || !group_by.is_empty() {
                    for (column, projection) in columns.iter().zip(projections) {
                        if let (Column::Field(f), Projection::Path(path)) = (column, projection) {
                            if !group_by.iter().any(|g| g.name == f.name) {
                                return Err(IckleError::unsupported(path.pos, format!("{path} must appear in GROUP BY or be used in an aggregate function")));
                            }
                        }
                    }
                    Shape::Groups {
                        columns,
                        group_by: group_by.clone(),
                    }
                } else {
                    Shape::Rows(columns)
                }
            }
        };
        let mut order_by = Vec::with_capacity(stmt.order_by.len());
        for key in &stmt.order_by {
            let field = ctx.field(&key.path)?;
            if matches!(field.class, FieldClass::Bytes) {
                return Err(IckleError::type_error(
                    key.path.pos,
                    format!("cannot ORDER BY the bytes field {}", field.name),
                ));
            }
            if let Shape::Groups { group_by, .. } = &shape {
                if !group_by.iter().any(|g| g.name == field.name) {
                    return Err(IckleError::unsupported(key.path.pos, format!("ORDER BY {} in a grouped query: only GROUP BY fields can be ordered on", key.path)));
                }
            }
            order_by.push((field, key.descending));
        }
        Ok(PreparedQuery {
            entity: entity.clone(),
            shape,
            filter,
            order_by,
            params: ctx.params,
        })
    }

    /// Binds the named parameters. Every parameter the query names must be given, with a value
    /// the field accepts; a name the query does not use is an error too (as in Infinispan).
    pub fn bind(&self, params: &HashMap<String, Value>) -> Result<BoundQuery, IckleError> {
        for name in params.keys() {
            if !self.params.iter().any(|(n, _, _)| n == name) {
                return Err(IckleError::parameter(
                    None,
                    format!("the query has no parameter named '{name}'"),
                ));
            }
        }
        let filter = match &self.filter {
            Some(c) => Some(bind_cond(c, params)?),
            None => None,
        };
        Ok(BoundQuery {
            prepared: self.clone(),
            filter,
        })
    }
}

impl BoundQuery {
    pub fn prepared(&self) -> &PreparedQuery {
        &self.prepared
    }
}

fn bind_cond(
    c: &Cond<PreparedOperand>,
    params: &HashMap<String, Value>,
) -> Result<Cond<OwnedScalar>, IckleError> {
    let op = |o: &PreparedOperand, field: &FieldRef| -> Result<OwnedScalar, IckleError> {
        match o {
            PreparedOperand::Const(s) => Ok(s.clone()),
            PreparedOperand::Param { name, pos } => {
                let value = params.get(name).ok_or_else(|| {
                    IckleError::parameter(Some(*pos), format!("parameter ':{name}' was not set"))
                })?;
                convert_param(value, field, name, *pos)
            }
        }
    };
    Ok(match c {
        Cond::And(a, b) => Cond::And(
            Box::new(bind_cond(a, params)?),
            Box::new(bind_cond(b, params)?),
        ),
        Cond::Or(a, b) => Cond::Or(
            Box::new(bind_cond(a, params)?),
            Box::new(bind_cond(b, params)?),
        ),
        Cond::Not(a) => Cond::Not(Box::new(bind_cond(a, params)?)),
        Cond::Cmp {
            field,
            op: cmp,
            value,
        } => Cond::Cmp {
            field: field.clone(),
            op: *cmp,
            value: op(value, field)?,
        },
        Cond::In { field, values } => Cond::In {
            field: field.clone(),
            values: values
                .iter()
                .map(|v| op(v, field))
                .collect::<Result<_, _>>()?,
        },
        Cond::Like { field, pattern } => {
            let bound = op(pattern, field)?;
            if let OwnedScalar::Str(p) = &bound {
                if p.contains('\\') {
                    // Escapes in LIKE patterns are not implemented; refusing beats guessing.
                    return Err(IckleError::parameter(
                        None,
                        "LIKE patterns with a backslash (escape) are not supported",
                    ));
                }
            }
            Cond::Like {
                field: field.clone(),
                pattern: bound,
            }
        }
        Cond::IsNull { field } => Cond::IsNull {
            field: field.clone(),
        },
        Cond::Between { field, low, high } => Cond::Between {
            field: field.clone(),
            low: op(low, field)?,
            high: op(high, field)?,
        },
    })
}

fn convert_param(
    value: &Value,
    field: &FieldRef,
    name: &str,
    pos: usize,
) -> Result<OwnedScalar, IckleError> {
    let wrong = || {
        IckleError::parameter(
            Some(pos),
            format!(
                "parameter ':{name}' is {} but field {} is {}",
                value.type_name(),
                field.name,
                field.class.name()
            ),
        )
    };
    Ok(match (&field.class, value) {
        (FieldClass::Str, Value::String(s)) => OwnedScalar::Str(s.clone()),
        (FieldClass::Bool, Value::Bool(b)) => OwnedScalar::Bool(*b),
        (
            FieldClass::Int,
            Value::Int32(_) | Value::Int64(_) | Value::UInt32(_) | Value::UInt64(_),
        ) => OwnedScalar::Int(int_of(value)),
        // Infinispan converts a numeric parameter to the field's type (Java's
        // Number.longValue: truncation). It matters to JavaScript clients, which have one
        // number type: the npm client's natural wrapper for a number is wrappedDouble.
        (FieldClass::Int, Value::Double(f)) if f.is_finite() => OwnedScalar::Int(f.trunc() as i128),
        (FieldClass::Int, Value::Float(f)) if f.is_finite() => OwnedScalar::Int(f.trunc() as i128),
        // ...and parses a string parameter as the field's type (failing if it is not one).
        (FieldClass::Int | FieldClass::Float | FieldClass::Bool, Value::String(s)) => {
            parse_as(&field.class, s).ok_or_else(wrong)?
        }
        (FieldClass::Float, Value::Float(f)) => OwnedScalar::Float(*f as f64),
        (FieldClass::Float, Value::Double(f)) => OwnedScalar::Float(*f),
        (
            FieldClass::Float,
            Value::Int32(_) | Value::Int64(_) | Value::UInt32(_) | Value::UInt64(_),
        ) => OwnedScalar::Float(int_of(value) as f64),
        (FieldClass::Enum(e), Value::String(s)) => {
            OwnedScalar::Int(enum_number(e, s, &field.name, pos)? as i128)
        }
        (FieldClass::Enum(e), Value::Enum { name: Some(s), .. }) => {
            OwnedScalar::Int(enum_number(e, s, &field.name, pos)? as i128)
        }
        (
            FieldClass::Enum(_),
            Value::Enum {
                name: None, number, ..
            },
        ) => OwnedScalar::Int(*number as i128),
        (FieldClass::Enum(_), Value::Int32(_) | Value::Int64(_)) => OwnedScalar::Int(int_of(value)),
        _ => return Err(wrong()),
    })
}

/// A string as a number or boolean field's value, as Infinispan reads a quoted literal or a
/// string parameter compared with such a field: `'1965'` for an int, `'9.5'` for a double,
/// `'true'`/`'false'` (any case) for a bool. None if the text is not one.
fn parse_as(class: &FieldClass, s: &str) -> Option<OwnedScalar> {
    match class {
        FieldClass::Int => s.parse::<i64>().ok().map(|n| OwnedScalar::Int(n as i128)),
        FieldClass::Float => s
            .parse::<f64>()
            .ok()
            .filter(|f| f.is_finite())
            .map(OwnedScalar::Float),
        FieldClass::Bool if s.eq_ignore_ascii_case("true") => Some(OwnedScalar::Bool(true)),
        FieldClass::Bool if s.eq_ignore_ascii_case("false") => Some(OwnedScalar::Bool(false)),
        _ => None,
    }
}

fn int_of(v: &Value) -> i128 {
    match v {
        Value::Int32(n) => *n as i128,
        Value::Int64(n) => *n as i128,
        Value::UInt32(n) => *n as i128,
        Value::UInt64(n) => *n as i128,
        _ => 0,
    }
}

fn enum_number(e: &EnumDescriptor, name: &str, field: &str, pos: usize) -> Result<i32, IckleError> {
    e.get_value_by_name(name)
        .map(|v| v.number())
        .ok_or_else(|| {
            IckleError::type_error(
                pos,
                format!(
                    "'{name}' is not a value of enum {} (field {field})",
                    e.full_name()
                ),
            )
        })
}

struct Resolver<'a> {
    entity: &'a MessageDescriptor,
    alias: Option<&'a str>,
    params: Vec<(String, FieldClass, usize)>,
}

impl Resolver<'_> {
    fn field(&self, path: &ast::Path) -> Result<FieldRef, IckleError> {
        let mut segments: &[String] = &path.segments;
        if segments.len() > 1 && Some(segments[0].as_str()) == self.alias {
            segments = &segments[1..];
        } else if segments.len() == 1 && Some(segments[0].as_str()) == self.alias {
            return Err(IckleError::unsupported(
                path.pos,
                format!("'{path}' is the entity alias, not a field"),
            ));
        }
        let mut message = self.entity.clone();
        let mut resolved = Vec::with_capacity(segments.len());
        for (i, seg) in segments.iter().enumerate() {
            let field = message.get_field_by_name(seg).ok_or_else(|| {
                IckleError::unknown_field(
                    path.pos,
                    format!("{} has no field '{}' (in {path})", message.full_name(), seg),
                )
            })?;
            if field.is_map() || field.cardinality() == Cardinality::Repeated {
                return Err(IckleError::unsupported(
                    path.pos,
                    format!("{path}: repeated and map fields are not supported in queries"),
                ));
            }
            let last = i + 1 == segments.len();
            match field.kind() {
                Kind::Message(m) if !last => {
                    message = m;
                    resolved.push(field);
                }
                Kind::Message(_) => {
                    return Err(IckleError::unsupported(
                        path.pos,
                        format!("{path} is an embedded message; name one of its scalar fields"),
                    ));
                }
                _ if !last => {
                    return Err(IckleError::unknown_field(
                        path.pos,
                        format!(
                            "{path}: '{seg}' is not a message, it has no field '{}'",
                            segments[i + 1]
                        ),
                    ));
                }
                kind => {
                    let class = match kind {
                        Kind::Bool => FieldClass::Bool,
                        Kind::Int32
                        | Kind::Int64
                        | Kind::Uint32
                        | Kind::Uint64
                        | Kind::Sint32
                        | Kind::Sint64
                        | Kind::Fixed32
                        | Kind::Fixed64
                        | Kind::Sfixed32
                        | Kind::Sfixed64 => FieldClass::Int,
                        Kind::Float | Kind::Double => FieldClass::Float,
                        Kind::String => FieldClass::Str,
                        Kind::Bytes => FieldClass::Bytes,
                        Kind::Enum(e) => FieldClass::Enum(e),
                        Kind::Message(_) => unreachable!("handled above"),
                    };
                    resolved.push(field);
                    return Ok(FieldRef {
                        path: resolved,
                        name: segments.join("."),
                        class,
                    });
                }
            }
        }
        Err(IckleError::unknown_field(
            path.pos,
            format!("{path} names no field"),
        ))
    }

    fn operand(&mut self, o: &Operand, field: &FieldRef) -> Result<PreparedOperand, IckleError> {
        match o {
            Operand::Param(name, pos) => {
                if let Some((_, class, _)) = self.params.iter().find(|(n, _, _)| n == name) {
                    if std::mem::discriminant(class) != std::mem::discriminant(&field.class) {
                        return Err(IckleError::type_error(
                            *pos,
                            format!(
                                "parameter ':{name}' is used for a {} field and a {} field",
                                class.name(),
                                field.class.name()
                            ),
                        ));
                    }
                } else {
                    self.params.push((name.clone(), field.class.clone(), *pos));
                }
                Ok(PreparedOperand::Param {
                    name: name.clone(),
                    pos: *pos,
                })
            }
            Operand::Literal(lit, pos) => {
                let wrong = |what: &str| {
                    IckleError::type_error(
                        *pos,
                        format!(
                            "{what} cannot be compared with {} ({} field)",
                            field.name,
                            field.class.name()
                        ),
                    )
                };
                Ok(PreparedOperand::Const(match (&field.class, lit) {
                    (FieldClass::Str, Literal::Str(s)) => OwnedScalar::Str(s.clone()),
                    (FieldClass::Bool, Literal::Bool(b)) => OwnedScalar::Bool(*b),
                    (FieldClass::Int, Literal::Int(n)) => OwnedScalar::Int(*n),
                    (FieldClass::Float, Literal::Int(n)) => OwnedScalar::Float(*n as f64),
                    (FieldClass::Float, Literal::Float(f)) => OwnedScalar::Float(*f),
                    (FieldClass::Enum(e), Literal::Str(s)) => {
                        OwnedScalar::Int(enum_number(e, s, &field.name, *pos)? as i128)
                    }
                    (FieldClass::Enum(_), Literal::Int(n)) => OwnedScalar::Int(*n),
                    (FieldClass::Int | FieldClass::Float | FieldClass::Bool, Literal::Str(s)) => {
                        parse_as(&field.class, s).ok_or_else(|| wrong("a string"))?
                    }
                    (_, Literal::Str(_)) => return Err(wrong("a string")),
                    (_, Literal::Int(_)) => return Err(wrong("an integer")),
                    (_, Literal::Float(_)) => return Err(wrong("a decimal number")),
                    (_, Literal::Bool(_)) => return Err(wrong("a boolean")),
                }))
            }
        }
    }

    fn comparable(&self, path: &ast::Path) -> Result<FieldRef, IckleError> {
        let f = self.field(path)?;
        if matches!(f.class, FieldClass::Bytes) {
            return Err(IckleError::unsupported(
                path.pos,
                format!("conditions on the bytes field {} are not supported", f.name),
            ));
        }
        Ok(f)
    }

    fn cond(&mut self, e: &ast::Expr) -> Result<Cond<PreparedOperand>, IckleError> {
        use ast::Expr as E;
        Ok(match e {
            E::And(a, b) => Cond::And(Box::new(self.cond(a)?), Box::new(self.cond(b)?)),
            E::Or(a, b) => Cond::Or(Box::new(self.cond(a)?), Box::new(self.cond(b)?)),
            E::Not(a) => Cond::Not(Box::new(self.cond(a)?)),
            E::Cmp { path, op, value } => {
                let field = self.comparable(path)?;
                let value = self.operand(value, &field)?;
                Cond::Cmp {
                    field,
                    op: *op,
                    value,
                }
            }
            E::In { path, values } => {
                let field = self.comparable(path)?;
                let values = values
                    .iter()
                    .map(|v| self.operand(v, &field))
                    .collect::<Result<_, _>>()?;
                Cond::In { field, values }
            }
            E::Like { path, pattern } => {
                let field = self.comparable(path)?;
                if !matches!(field.class, FieldClass::Str) {
                    return Err(IckleError::type_error(
                        path.pos,
                        format!(
                            "LIKE needs a string field, {} is {}",
                            field.name,
                            field.class.name()
                        ),
                    ));
                }
                let pattern = self.operand(pattern, &field)?;
                Cond::Like { field, pattern }
            }
            E::IsNull { path } => Cond::IsNull {
                field: self.field(path)?,
            },
            E::Between { path, low, high } => {
                let field = self.comparable(path)?;
                let low = self.operand(low, &field)?;
                let high = self.operand(high, &field)?;
                Cond::Between { field, low, high }
            }
        })
    }
}
