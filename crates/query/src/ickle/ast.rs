//! The parsed form of an Ickle statement, before any field is resolved against a schema.

/// A dotted property path as written (`e.realmId`, `realmId`, `e.address.city`).
#[derive(Debug, Clone, PartialEq)]
pub struct Path {
    pub segments: Vec<String>,
    /// Byte offset of the path in the query string.
    pub pos: usize,
}

impl std::fmt::Display for Path {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.segments.join("."))
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    Str(String),
    Int(i128),
    Float(f64),
    Bool(bool),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Operand {
    Literal(Literal, usize),
    Param(String, usize),
}

impl Operand {
    pub fn pos(&self) -> usize {
        match self {
            Operand::Literal(_, pos) | Operand::Param(_, pos) => *pos,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    Cmp {
        path: Path,
        op: CmpOp,
        value: Operand,
    },
    In {
        path: Path,
        values: Vec<Operand>,
    },
    Like {
        path: Path,
        pattern: Operand,
    },
    IsNull {
        path: Path,
    },
    Between {
        path: Path,
        low: Operand,
        high: Operand,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggregateFn {
    Count,
    Sum,
    Avg,
    Min,
    Max,
}

impl AggregateFn {
    pub fn name(self) -> &'static str {
        match self {
            AggregateFn::Count => "count",
            AggregateFn::Sum => "sum",
            AggregateFn::Avg => "avg",
            AggregateFn::Min => "min",
            AggregateFn::Max => "max",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Projection {
    Path(Path),
    /// `count(e)`: counts rows rather than non-null values.
    CountEntity {
        pos: usize,
    },
    Aggregate {
        func: AggregateFn,
        path: Path,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct OrderKey {
    pub path: Path,
    pub descending: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum StatementKind {
    /// `FROM ...` (projections empty: whole entities) or `SELECT a, b FROM ...`.
    Select {
        projections: Vec<Projection>,
    },
    Delete,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Statement {
    pub kind: StatementKind,
    pub entity: String,
    pub entity_pos: usize,
    pub alias: Option<String>,
    pub filter: Option<Expr>,
    pub group_by: Vec<Path>,
    pub order_by: Vec<OrderKey>,
}
