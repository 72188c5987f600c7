//! Running a bound query over candidate entries: filter, project, group, order, page.

use std::cmp::Ordering;
use std::collections::HashMap;

use bytes::Bytes;
use prost_reflect::DynamicMessage;

use super::ast::{AggregateFn, CmpOp};
use super::plan::{BoundQuery, Column, Cond, FieldRef, Shape};
use super::value::{field_value, reflect_scalar, IndexKey, OwnedScalar, Scalar, Value};

/// Which slice of the ordered results to return.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Paging {
    pub start_offset: u64,
    /// None: every row from `start_offset` on.
    pub max_results: Option<u64>,
}

/// What a query returns.
#[derive(Debug)]
pub enum QueryRows<'a, P> {
    /// `FROM X ...`: the matching entries' keys and payloads, in order.
    Entities(Vec<(&'a Bytes, &'a P)>),
    /// `SELECT ...`: rows of `projection_size` values.
    Projections(Vec<Vec<Value>>),
}

#[derive(Debug)]
pub struct QueryOutput<'a, P> {
    pub rows: QueryRows<'a, P>,
    /// Rows matched before paging (groups for grouped queries). Always exact.
    pub hit_count: u64,
    pub projection_size: usize,
}

pub(crate) type Candidate<'a, P> = (&'a Bytes, &'a DynamicMessage, &'a P);

fn scalar_of<'m>(msg: &'m DynamicMessage, field: &FieldRef) -> Option<Scalar<'m>> {
    field_value(msg, &field.path).and_then(reflect_scalar)
}

fn value_of(msg: &DynamicMessage, field: &FieldRef) -> Value {
    match field_value(msg, &field.path) {
        Some(v) => Value::from_reflect(v, field.leaf()),
        None => Value::Null,
    }
}

/// Two-valued logic as Infinispan evaluates it: a condition on a null (unset) field is false,
/// and NOT simply negates, so `x != 'a'` (NOT `x = 'a'`) holds for entries where x is unset.
pub(crate) fn matches(cond: &Cond<OwnedScalar>, msg: &DynamicMessage) -> bool {
    match cond {
        Cond::And(a, b) => matches(a, msg) && matches(b, msg),
        Cond::Or(a, b) => matches(a, msg) || matches(b, msg),
        Cond::Not(a) => !matches(a, msg),
        Cond::IsNull { field } => scalar_of(msg, field).is_none(),
        Cond::Cmp { field, op, value } => {
            let Some(v) = scalar_of(msg, field) else {
                return *op == CmpOp::Ne;
            };
            let Some(ord) = v.compare(&value.as_scalar()) else {
                return false;
            };
            match op {
                CmpOp::Eq => ord == Ordering::Equal,
                CmpOp::Ne => ord != Ordering::Equal,
                CmpOp::Lt => ord == Ordering::Less,
                CmpOp::Le => ord != Ordering::Greater,
                CmpOp::Gt => ord == Ordering::Greater,
                CmpOp::Ge => ord != Ordering::Less,
            }
        }
        Cond::In { field, values } => {
            let Some(v) = scalar_of(msg, field) else {
                return false;
            };
            values
                .iter()
                .any(|x| v.compare(&x.as_scalar()) == Some(Ordering::Equal))
        }
        Cond::Between { field, low, high } => {
            let Some(v) = scalar_of(msg, field) else {
                return false;
            };
            v.compare(&low.as_scalar())
                .is_some_and(|o| o != Ordering::Less)
                && v.compare(&high.as_scalar())
                    .is_some_and(|o| o != Ordering::Greater)
        }
        Cond::Like { field, pattern } => {
            let (Some(Scalar::Str(s)), OwnedScalar::Str(p)) = (scalar_of(msg, field), pattern)
            else {
                return false;
            };
            like(s, p)
        }
    }
}

/// SQL LIKE: `%` any run of characters, `_` exactly one character, everything else literal.
pub(crate) fn like(text: &str, pattern: &str) -> bool {
    let t: Vec<char> = text.chars().collect();
    let p: Vec<char> = pattern.chars().collect();
    let (mut ti, mut pi) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '_' || (p[pi] != '%' && p[pi] == t[ti])) {
            ti += 1;
            pi += 1;
        } else if pi < p.len() && p[pi] == '%' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '%' {
        pi += 1;
    }
    pi == p.len()
}

/// Ascending order puts nulls first and descending puts them last, as Infinispan's
/// `ComparableArrayComparator` does.
fn compare_keys(
    a: &[Option<Scalar<'_>>],
    b: &[Option<Scalar<'_>>],
    descending: &[bool],
) -> Ordering {
    for ((x, y), desc) in a.iter().zip(b).zip(descending) {
        let ord = match (x, y) {
            (None, None) => Ordering::Equal,
            (None, Some(_)) => Ordering::Less,
            (Some(_), None) => Ordering::Greater,
            (Some(x), Some(y)) => x.compare(y).unwrap_or(Ordering::Equal),
        };
        let ord = if *desc { ord.reverse() } else { ord };
        if ord != Ordering::Equal {
            return ord;
        }
    }
    Ordering::Equal
}

fn page<T>(rows: Vec<T>, paging: Paging) -> Vec<T> {
    let start = usize::try_from(paging.start_offset).unwrap_or(usize::MAX);
    let take = paging
        .max_results
        .map_or(usize::MAX, |m| usize::try_from(m).unwrap_or(usize::MAX));
    rows.into_iter().skip(start).take(take).collect()
}

/// The matching candidates, in query order: ORDER BY keys, then entry key bytes so that ties
/// (and queries without ORDER BY) come back in one stable order, which paging relies on.
pub(crate) fn ordered_matches<'a, P>(
    query: &BoundQuery,
    candidates: Vec<Candidate<'a, P>>,
) -> Vec<Candidate<'a, P>> {
    let mut matched: Vec<Candidate<'a, P>> = match &query.filter {
        Some(f) => candidates
            .into_iter()
            .filter(|(_, m, _)| matches(f, m))
            .collect(),
        None => candidates,
    };
    let order = &query.prepared.order_by;
    if matches!(query.prepared.shape, Shape::Groups { .. }) {
        // Groups are ordered by their keys afterwards; row order does not matter.
    } else if order.is_empty() {
        matched.sort_unstable_by(|a, b| a.0.cmp(b.0));
    } else {
        let descending: Vec<bool> = order.iter().map(|(_, d)| *d).collect();
        let mut keyed: Vec<(Vec<Option<Scalar<'a>>>, Candidate<'a, P>)> = matched
            .into_iter()
            .map(|c| (order.iter().map(|(f, _)| scalar_of(c.1, f)).collect(), c))
            .collect();
        keyed.sort_unstable_by(|a, b| {
            compare_keys(&a.0, &b.0, &descending).then_with(|| a.1 .0.cmp(b.1 .0))
        });
        matched = keyed.into_iter().map(|(_, c)| c).collect();
    }
    matched
}

pub(crate) fn run<'a, P>(
    query: &BoundQuery,
    candidates: Vec<Candidate<'a, P>>,
    paging: Paging,
) -> QueryOutput<'a, P> {
    let matched = ordered_matches(query, candidates);
    let prepared = &query.prepared;
    match &prepared.shape {
        Shape::Entities | Shape::Delete => {
            let hit_count = matched.len() as u64;
            let rows = page(matched, paging)
                .into_iter()
                .map(|(k, _, p)| (k, p))
                .collect();
            QueryOutput {
                rows: QueryRows::Entities(rows),
                hit_count,
                projection_size: 0,
            }
        }
        Shape::Rows(columns) => {
            let hit_count = matched.len() as u64;
            let rows = page(matched, paging)
                .into_iter()
                .map(|(_, m, _)| {
                    columns
                        .iter()
                        .map(|c| match c {
                            Column::Field(f) => value_of(m, f),
                            // Only Groups shapes hold aggregates.
                            Column::CountRows | Column::Aggregate { .. } => Value::Null,
                        })
                        .collect()
                })
                .collect();
            QueryOutput {
                rows: QueryRows::Projections(rows),
                hit_count,
                projection_size: columns.len(),
            }
        }
        Shape::Groups { columns, group_by } => {
            let rows = group(columns, group_by, &prepared.order_by, &matched);
            let hit_count = rows.len() as u64;
            QueryOutput {
                rows: QueryRows::Projections(page(rows, paging)),
                hit_count,
                projection_size: columns.len(),
            }
        }
    }
}

#[derive(Debug, Clone)]
enum Acc {
    Count(i64),
    SumInt(i128, bool),
    SumFloat(f64, bool),
    Avg(f64, u64),
    MinMax(Value, bool),
}

struct Group<'a> {
    keys: Vec<Option<Scalar<'a>>>,
    values: Vec<Value>,
    accs: Vec<Option<Acc>>,
}

fn group<P>(
    columns: &[Column],
    group_by: &[FieldRef],
    order_by: &[(FieldRef, bool)],
    rows: &[Candidate<'_, P>],
) -> Vec<Vec<Value>> {
    let mut groups: Vec<Group<'_>> = Vec::new();
    let mut by_key: HashMap<Vec<Option<IndexKey>>, usize> = HashMap::new();
    let fresh_accs = || -> Vec<Option<Acc>> {
        columns
            .iter()
            .map(|c| match c {
                Column::Field(_) => None,
                Column::CountRows => Some(Acc::Count(0)),
                Column::Aggregate { func, field } => Some(match func {
                    AggregateFn::Count => Acc::Count(0),
                    AggregateFn::Sum if matches!(field.class, super::plan::FieldClass::Float) => {
                        Acc::SumFloat(0.0, false)
                    }
                    AggregateFn::Sum => Acc::SumInt(0, false),
                    AggregateFn::Avg => Acc::Avg(0.0, 0),
                    AggregateFn::Min | AggregateFn::Max => Acc::MinMax(Value::Null, false),
                }),
            })
            .collect()
    };
    if group_by.is_empty() {
        // Aggregates without GROUP BY: exactly one row, even over no entries.
        groups.push(Group {
            keys: Vec::new(),
            values: Vec::new(),
            accs: fresh_accs(),
        });
        by_key.insert(Vec::new(), 0);
    }
    for (_, msg, _) in rows {
        let keys: Vec<Option<Scalar<'_>>> = group_by.iter().map(|f| scalar_of(msg, f)).collect();
        let hash_key: Vec<Option<IndexKey>> =
            keys.iter().map(|k| k.map(|s| s.index_key())).collect();
        let idx = *by_key.entry(hash_key).or_insert_with(|| {
            groups.push(Group {
                values: group_by.iter().map(|f| value_of(msg, f)).collect(),
                keys,
                accs: fresh_accs(),
            });
            groups.len() - 1
        });
        let g = &mut groups[idx];
        for (c, acc) in columns.iter().zip(g.accs.iter_mut()) {
            let Some(acc) = acc else { continue };
            match (c, acc) {
                (Column::CountRows, Acc::Count(n)) => *n += 1,
                (Column::Aggregate { field, func }, acc) => {
                    let Some(v) = field_value(msg, &field.path) else {
                        continue;
                    };
                    let s = reflect_scalar(v);
                    match acc {
                        Acc::Count(n) => *n += 1,
                        Acc::SumInt(sum, any) => {
                            if let Some(Scalar::Int(x)) = s {
                                *sum += x;
                                *any = true;
                            }
                        }
                        Acc::SumFloat(sum, any) => {
                            if let Some(Scalar::Float(x)) = s {
                                *sum += x;
                                *any = true;
                            }
                        }
                        Acc::Avg(sum, n) => match s {
                            Some(Scalar::Float(x)) => {
                                *sum += x;
                                *n += 1;
                            }
                            Some(Scalar::Int(x)) => {
                                *sum += x as f64;
                                *n += 1;
                            }
                            _ => {}
                        },
                        Acc::MinMax(best, any) => {
                            let candidate = Value::from_reflect(v, field.leaf());
                            let replace = !*any || {
                                let ord = candidate
                                    .to_scalar()
                                    .and_then(|c| best.to_scalar().and_then(|b| c.compare(&b)))
                                    .unwrap_or(Ordering::Equal);
                                (*func == AggregateFn::Min && ord == Ordering::Less)
                                    || (*func == AggregateFn::Max && ord == Ordering::Greater)
                            };
                            if replace {
                                *best = candidate;
                                *any = true;
                            }
                        }
                    }
                }
                _ => {}
            }
        }
    }
    // Order: the ORDER BY keys (all GROUP BY fields), then the group key itself so the output
    // order never depends on hashing.
    let order_positions: Vec<(usize, bool)> = order_by
        .iter()
        .filter_map(|(f, desc)| {
            group_by
                .iter()
                .position(|g| g.name == f.name)
                .map(|i| (i, *desc))
        })
        .collect();
    let mut ordered: Vec<&Group<'_>> = groups.iter().collect();
    ordered.sort_by(|a, b| {
        let ka: Vec<Option<Scalar<'_>>> = order_positions.iter().map(|(i, _)| a.keys[*i]).collect();
        let kb: Vec<Option<Scalar<'_>>> = order_positions.iter().map(|(i, _)| b.keys[*i]).collect();
        let desc: Vec<bool> = order_positions.iter().map(|(_, d)| *d).collect();
        compare_keys(&ka, &kb, &desc)
            .then_with(|| compare_keys(&a.keys, &b.keys, &vec![false; a.keys.len()]))
    });
    ordered
        .into_iter()
        .map(|g| {
            columns
                .iter()
                .zip(&g.accs)
                .map(|(c, acc)| match (c, acc) {
                    (Column::Field(f), _) => {
                        let i = group_by
                            .iter()
                            .position(|gf| gf.name == f.name)
                            .unwrap_or(0);
                        g.values.get(i).cloned().unwrap_or(Value::Null)
                    }
                    (_, Some(Acc::Count(n))) => Value::Int64(*n),
                    (_, Some(Acc::SumInt(s, true))) => Value::Int64(*s as i64),
                    (_, Some(Acc::SumFloat(s, true))) => Value::Double(*s),
                    (_, Some(Acc::Avg(s, n))) if *n > 0 => Value::Double(*s / *n as f64),
                    (_, Some(Acc::MinMax(v, true))) => v.clone(),
                    _ => Value::Null,
                })
                .collect()
        })
        .collect()
}
