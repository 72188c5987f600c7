//! Recursive-descent parser for the Ickle subset (see the module docs for the grammar).

use super::ast::*;
use super::lexer::{tokenize, Tok, Token};
use super::IckleError;

/// Words that end an entity name or alias, so `FROM X WHERE ...` never takes WHERE as an alias.
const RESERVED: &[&str] = &[
    "select", "from", "where", "group", "order", "by", "having", "as", "and", "or", "not", "in",
    "like", "is", "null", "between", "asc", "desc", "delete", "true", "false",
];

pub fn parse(text: &str) -> Result<Statement, IckleError> {
    let tokens = tokenize(text)?;
    let mut p = Parser { tokens, at: 0 };
    let stmt = p.statement()?;
    Ok(stmt)
}

struct Parser {
    tokens: Vec<Token>,
    at: usize,
}

impl Parser {
    fn peek(&self) -> &Token {
        &self.tokens[self.at.min(self.tokens.len() - 1)]
    }

    fn peek_at(&self, n: usize) -> &Tok {
        &self.tokens[(self.at + n).min(self.tokens.len() - 1)].tok
    }

    fn next(&mut self) -> Token {
        let t = self.peek().clone();
        if self.at < self.tokens.len() - 1 {
            self.at += 1;
        }
        t
    }

    fn is_keyword(&self, kw: &str) -> bool {
        matches!(&self.peek().tok, Tok::Ident(s) if s.eq_ignore_ascii_case(kw))
    }

    fn eat_keyword(&mut self, kw: &str) -> bool {
        if self.is_keyword(kw) {
            self.next();
            true
        } else {
            false
        }
    }

    fn expect_keyword(&mut self, kw: &str) -> Result<(), IckleError> {
        if self.eat_keyword(kw) {
            Ok(())
        } else {
            Err(self.unexpected(&format!("'{}'", kw.to_ascii_uppercase())))
        }
    }

    fn eat(&mut self, tok: &Tok) -> bool {
        if &self.peek().tok == tok {
            self.next();
            true
        } else {
            false
        }
    }

    fn expect(&mut self, tok: &Tok, what: &str) -> Result<(), IckleError> {
        if self.eat(tok) {
            Ok(())
        } else {
            Err(self.unexpected(what))
        }
    }

    fn unexpected(&self, expected: &str) -> IckleError {
        let t = self.peek();
        IckleError::syntax(
            t.pos,
            format!("expected {expected}, found {}", describe(&t.tok)),
        )
    }

    fn statement(&mut self) -> Result<Statement, IckleError> {
        let kind_pos = self.peek().pos;
        let mut stmt = if self.eat_keyword("delete") {
            self.expect_keyword("from")?;
            self.after_from(StatementKind::Delete)?
        } else if self.eat_keyword("select") {
            if self.is_keyword("distinct") {
                return Err(IckleError::unsupported(
                    self.peek().pos,
                    "SELECT DISTINCT is not supported",
                ));
            }
            let mut projections = vec![self.projection()?];
            while self.eat(&Tok::Comma) {
                projections.push(self.projection()?);
            }
            self.expect_keyword("from")?;
            self.after_from(StatementKind::Select { projections })?
        } else if self.eat_keyword("from") {
            self.after_from(StatementKind::Select {
                projections: Vec::new(),
            })?
        } else if self.is_keyword("update") || self.is_keyword("insert") {
            return Err(IckleError::unsupported(
                kind_pos,
                "only SELECT/FROM queries and DELETE statements are supported",
            ));
        } else {
            return Err(self.unexpected("SELECT, FROM or DELETE"));
        };
        if let Tok::Ident(word) = &self.peek().tok {
            let lower = word.to_ascii_lowercase();
            if lower == "having" {
                return Err(IckleError::unsupported(
                    self.peek().pos,
                    "HAVING is not supported",
                ));
            }
        }
        if self.peek().tok != Tok::Eof {
            return Err(self.unexpected("end of query"));
        }
        // `count(e)` with the alias counts rows.
        if let (StatementKind::Select { projections }, Some(alias)) = (&mut stmt.kind, &stmt.alias)
        {
            for p in projections.iter_mut() {
                if let Projection::Aggregate {
                    func: AggregateFn::Count,
                    path,
                } = p
                {
                    if path.segments.len() == 1 && &path.segments[0] == alias {
                        *p = Projection::CountEntity { pos: path.pos };
                    }
                }
            }
        }
        Ok(stmt)
    }

    fn after_from(&mut self, kind: StatementKind) -> Result<Statement, IckleError> {
        let entity_pos = self.peek().pos;
        let entity = self.dotted_name("an entity name")?;
        let mut alias = None;
        if self.eat_keyword("as") {
            alias = Some(self.alias()?);
        } else if let Tok::Ident(word) = &self.peek().tok {
            if !RESERVED.contains(&word.to_ascii_lowercase().as_str()) {
                alias = Some(self.alias()?);
            }
        }
        if self.eat(&Tok::Comma)
            || self.is_keyword("join")
            || self.is_keyword("inner")
            || self.is_keyword("left")
        {
            return Err(IckleError::unsupported(
                self.tokens[self.at - 1].pos,
                "joins and several entities are not supported",
            ));
        }
        let filter = if self.eat_keyword("where") {
            Some(self.expr()?)
        } else {
            None
        };
        let mut group_by = Vec::new();
        let mut order_by = Vec::new();
        if matches!(kind, StatementKind::Select { .. }) {
            if self.eat_keyword("group") {
                self.expect_keyword("by")?;
                group_by.push(self.path()?);
                while self.eat(&Tok::Comma) {
                    group_by.push(self.path()?);
                }
            }
            if self.is_keyword("having") {
                return Err(IckleError::unsupported(
                    self.peek().pos,
                    "HAVING is not supported",
                ));
            }
            if self.eat_keyword("order") {
                self.expect_keyword("by")?;
                loop {
                    let path = self.path()?;
                    if self.peek().tok == Tok::LParen {
                        return Err(IckleError::unsupported(
                            path.pos,
                            format!("ORDER BY {path}(...) is not supported"),
                        ));
                    }
                    let descending = if self.eat_keyword("desc") {
                        true
                    } else {
                        self.eat_keyword("asc");
                        false
                    };
                    order_by.push(OrderKey { path, descending });
                    if !self.eat(&Tok::Comma) {
                        break;
                    }
                }
            }
        }
        Ok(Statement {
            kind,
            entity,
            entity_pos,
            alias,
            filter,
            group_by,
            order_by,
        })
    }

    fn alias(&mut self) -> Result<String, IckleError> {
        match self.next() {
            Token {
                tok: Tok::Ident(s), ..
            } if !RESERVED.contains(&s.to_ascii_lowercase().as_str()) => Ok(s),
            t => Err(IckleError::syntax(
                t.pos,
                format!("expected an alias, found {}", describe(&t.tok)),
            )),
        }
    }

    fn dotted_name(&mut self, what: &str) -> Result<String, IckleError> {
        let mut name = match self.next() {
            Token {
                tok: Tok::Ident(s), ..
            } => s,
            t => {
                return Err(IckleError::syntax(
                    t.pos,
                    format!("expected {what}, found {}", describe(&t.tok)),
                ))
            }
        };
        while self.peek().tok == Tok::Dot {
            self.next();
            match self.next() {
                Token {
                    tok: Tok::Ident(s), ..
                } => {
                    name.push('.');
                    name.push_str(&s);
                }
                t => {
                    return Err(IckleError::syntax(
                        t.pos,
                        format!("expected a name after '.', found {}", describe(&t.tok)),
                    ))
                }
            }
        }
        Ok(name)
    }

    fn path(&mut self) -> Result<Path, IckleError> {
        let pos = self.peek().pos;
        if let Tok::Ident(s) = &self.peek().tok {
            if RESERVED.contains(&s.to_ascii_lowercase().as_str()) {
                return Err(self.unexpected("a field path"));
            }
        }
        let name = self.dotted_name("a field path")?;
        Ok(Path {
            segments: name.split('.').map(str::to_string).collect(),
            pos,
        })
    }

    fn projection(&mut self) -> Result<Projection, IckleError> {
        let t = self.peek().clone();
        if let (Tok::Ident(word), Tok::LParen) = (&t.tok, self.peek_at(1)) {
            let func = match word.to_ascii_lowercase().as_str() {
                "count" => AggregateFn::Count,
                "sum" => AggregateFn::Sum,
                "avg" => AggregateFn::Avg,
                "min" => AggregateFn::Min,
                "max" => AggregateFn::Max,
                other => {
                    return Err(IckleError::unsupported(
                        t.pos,
                        format!("function '{other}' is not supported"),
                    ));
                }
            };
            self.next();
            self.next();
            if self.is_keyword("distinct") {
                return Err(IckleError::unsupported(
                    self.peek().pos,
                    "DISTINCT in aggregates is not supported",
                ));
            }
            if self.peek().tok == Tok::Star {
                return Err(IckleError::unsupported(
                    self.peek().pos,
                    "count(*) is not supported; use count(alias)",
                ));
            }
            let path = self.path()?;
            self.expect(&Tok::RParen, "')'")?;
            return Ok(Projection::Aggregate { func, path });
        }
        Ok(Projection::Path(self.path()?))
    }

    fn expr(&mut self) -> Result<Expr, IckleError> {
        let mut left = self.and_expr()?;
        while self.eat(&Tok::OrOr) || self.eat_keyword("or") {
            let right = self.and_expr()?;
            left = Expr::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and_expr(&mut self) -> Result<Expr, IckleError> {
        let mut left = self.unary()?;
        while self.eat(&Tok::AndAnd) || self.eat_keyword("and") {
            let right = self.unary()?;
            left = Expr::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Expr, IckleError> {
        if self.eat(&Tok::Bang) || self.eat_keyword("not") {
            return Ok(Expr::Not(Box::new(self.unary()?)));
        }
        if self.eat(&Tok::LParen) {
            let e = self.expr()?;
            self.expect(&Tok::RParen, "')'")?;
            return Ok(e);
        }
        self.predicate()
    }

    fn predicate(&mut self) -> Result<Expr, IckleError> {
        let t = self.peek().clone();
        match &t.tok {
            Tok::Param(_) | Tok::Str(_) | Tok::Int(_) | Tok::Float(_) | Tok::Minus => {
                return Err(IckleError::unsupported(
                    t.pos,
                    "the left side of a condition must be a field path",
                ));
            }
            Tok::Ident(s) if s.eq_ignore_ascii_case("true") || s.eq_ignore_ascii_case("false") => {
                return Err(IckleError::unsupported(
                    t.pos,
                    "the left side of a condition must be a field path",
                ));
            }
            _ => {}
        }
        let path = self.path()?;
        let t = self.peek().clone();
        let op = match t.tok {
            Tok::Eq => Some(CmpOp::Eq),
            Tok::Ne => Some(CmpOp::Ne),
            Tok::Lt => Some(CmpOp::Lt),
            Tok::Le => Some(CmpOp::Le),
            Tok::Gt => Some(CmpOp::Gt),
            Tok::Ge => Some(CmpOp::Ge),
            _ => None,
        };
        if let Some(op) = op {
            self.next();
            if let Tok::Ident(s) = &self.peek().tok {
                if s.eq_ignore_ascii_case("null") {
                    return Err(IckleError::unsupported(
                        self.peek().pos,
                        "comparison with NULL: use IS NULL / IS NOT NULL",
                    ));
                }
            }
            let value = self.operand()?;
            return Ok(Expr::Cmp { path, op, value });
        }
        if self.eat_keyword("is") {
            let negated = self.eat_keyword("not");
            self.expect_keyword("null")?;
            let e = Expr::IsNull { path };
            return Ok(if negated { Expr::Not(Box::new(e)) } else { e });
        }
        let negated = self.eat_keyword("not");
        let e = if self.eat_keyword("in") {
            self.expect(&Tok::LParen, "'(' after IN")?;
            let mut values = vec![self.operand()?];
            while self.eat(&Tok::Comma) {
                values.push(self.operand()?);
            }
            self.expect(&Tok::RParen, "')' closing the IN list")?;
            Expr::In { path, values }
        } else if self.eat_keyword("like") {
            let pattern = self.operand()?;
            if self.is_keyword("escape") {
                return Err(IckleError::unsupported(
                    self.peek().pos,
                    "LIKE ... ESCAPE is not supported",
                ));
            }
            Expr::Like { path, pattern }
        } else if self.eat_keyword("between") {
            let low = self.operand()?;
            self.expect_keyword("and")?;
            let high = self.operand()?;
            Expr::Between { path, low, high }
        } else {
            return Err(
                self.unexpected("a comparison operator, IN, LIKE, BETWEEN or IS [NOT] NULL")
            );
        };
        Ok(if negated { Expr::Not(Box::new(e)) } else { e })
    }

    fn operand(&mut self) -> Result<Operand, IckleError> {
        let t = self.next();
        let pos = t.pos;
        Ok(match t.tok {
            Tok::Param(name) => Operand::Param(name, pos),
            Tok::Str(s) => Operand::Literal(Literal::Str(s), pos),
            Tok::Int(n) => Operand::Literal(Literal::Int(n), pos),
            Tok::Float(f) => Operand::Literal(Literal::Float(f), pos),
            Tok::Minus => match self.next().tok {
                Tok::Int(n) => Operand::Literal(Literal::Int(-n), pos),
                Tok::Float(f) => Operand::Literal(Literal::Float(-f), pos),
                other => {
                    return Err(IckleError::syntax(
                        pos,
                        format!("expected a number after '-', found {}", describe(&other)),
                    ))
                }
            },
            Tok::Ident(s) if s.eq_ignore_ascii_case("true") => {
                Operand::Literal(Literal::Bool(true), pos)
            }
            Tok::Ident(s) if s.eq_ignore_ascii_case("false") => {
                Operand::Literal(Literal::Bool(false), pos)
            }
            Tok::Ident(_) => {
                return Err(IckleError::unsupported(pos, "comparing two fields is not supported; the right side must be a literal or a :parameter"));
            }
            other => {
                return Err(IckleError::syntax(
                    pos,
                    format!(
                        "expected a literal or a :parameter, found {}",
                        describe(&other)
                    ),
                ))
            }
        })
    }
}

fn describe(tok: &Tok) -> String {
    match tok {
        Tok::Ident(s) => format!("'{s}'"),
        Tok::Param(s) => format!("':{s}'"),
        Tok::Str(s) => format!("string '{s}'"),
        Tok::Int(n) => format!("number {n}"),
        Tok::Float(f) => format!("number {f}"),
        Tok::LParen => "'('".into(),
        Tok::RParen => "')'".into(),
        Tok::Comma => "','".into(),
        Tok::Dot => "'.'".into(),
        Tok::Star => "'*'".into(),
        Tok::Minus => "'-'".into(),
        Tok::Eq => "'='".into(),
        Tok::Ne => "'!='".into(),
        Tok::Lt => "'<'".into(),
        Tok::Le => "'<='".into(),
        Tok::Gt => "'>'".into(),
        Tok::Ge => "'>='".into(),
        Tok::AndAnd => "'&&'".into(),
        Tok::OrOr => "'||'".into(),
        Tok::Bang => "'!'".into(),
        Tok::Eof => "end of query".into(),
    }
}
