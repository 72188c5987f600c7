//! Property test: random entities (built by random upserts/removals, so the index is
//! maintained incrementally) and random queries from the subset give the same rows, order
//! and hit counts as a naive evaluator written here independently over plain structs, with
//! the index on and off.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap, HashSet};

use bytes::Bytes;
use ferrod_query::ickle::{self, IndexedFields, Paging, QueryIndex, QueryRows, Value};
use proptest::prelude::*;
use prost_reflect::{DescriptorPool, DynamicMessage, Value as RValue};

const PROTO: &str = r#"
syntax = "proto3";
package t;
message Item {
  optional string realm = 1;
  optional string user = 2;
  optional int32 n = 3;
  optional double f = 4;
  optional bool b = 5;
}
"#;

#[derive(Debug, Clone, PartialEq)]
struct Item {
    realm: Option<String>,
    user: Option<String>,
    n: Option<i32>,
    f: Option<f64>,
    b: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum F {
    Realm,
    User,
    N,
    Fl,
    B,
}

const FIELDS: [F; 5] = [F::Realm, F::User, F::N, F::Fl, F::B];

impl F {
    fn name(self) -> &'static str {
        match self {
            F::Realm => "realm",
            F::User => "user",
            F::N => "n",
            F::Fl => "f",
            F::B => "b",
        }
    }
}

/// A plain value of the model.
#[derive(Debug, Clone, PartialEq)]
enum V {
    S(String),
    I(i64),
    D(f64),
    B(bool),
}

impl V {
    fn cmp(&self, o: &V) -> Ordering {
        match (self, o) {
            (V::S(a), V::S(b)) => a.as_bytes().cmp(b.as_bytes()),
            (V::I(a), V::I(b)) => a.cmp(b),
            (V::D(a), V::D(b)) => a.partial_cmp(b).unwrap(),
            (V::B(a), V::B(b)) => a.cmp(b),
            _ => panic!("mixed types in the model"),
        }
    }
    fn literal(&self) -> String {
        match self {
            V::S(s) => format!("'{s}'"),
            V::I(n) => n.to_string(),
            V::D(d) => format!("{d:?}"),
            V::B(b) => b.to_string(),
        }
    }
    fn param(&self) -> Value {
        match self {
            V::S(s) => Value::String(s.clone()),
            V::I(n) => Value::Int64(*n),
            V::D(d) => Value::Double(*d),
            V::B(b) => Value::Bool(*b),
        }
    }
    fn out(&self, f: F) -> Value {
        match (self, f) {
            (V::S(s), _) => Value::String(s.clone()),
            (V::I(n), _) => Value::Int32(*n as i32),
            (V::D(d), _) => Value::Double(*d),
            (V::B(b), _) => Value::Bool(*b),
        }
    }
}

fn get(item: &Item, f: F) -> Option<V> {
    match f {
        F::Realm => item.realm.clone().map(V::S),
        F::User => item.user.clone().map(V::S),
        F::N => item.n.map(|n| V::I(n as i64)),
        F::Fl => item.f.map(V::D),
        F::B => item.b.map(V::B),
    }
}

#[derive(Debug, Clone)]
enum Pred {
    Cmp(F, &'static str, V, bool),
    In(F, Vec<V>),
    Like(F, String),
    IsNull(F, bool),
    Between(F, V, V),
    And(Box<Pred>, Box<Pred>),
    Or(Box<Pred>, Box<Pred>),
    Not(Box<Pred>),
}

fn eval(p: &Pred, item: &Item) -> bool {
    match p {
        Pred::Cmp(f, op, v, _) => match get(item, *f) {
            None => *op == "!=",
            Some(x) => {
                let o = x.cmp(v);
                match *op {
                    "=" => o == Ordering::Equal,
                    "!=" => o != Ordering::Equal,
                    "<" => o == Ordering::Less,
                    "<=" => o != Ordering::Greater,
                    ">" => o == Ordering::Greater,
                    ">=" => o != Ordering::Less,
                    _ => unreachable!(),
                }
            }
        },
        Pred::In(f, vs) => {
            get(item, *f).is_some_and(|x| vs.iter().any(|v| x.cmp(v) == Ordering::Equal))
        }
        Pred::Like(f, pat) => match get(item, *f) {
            Some(V::S(s)) => like_regex(pat).is_match(&s),
            _ => false,
        },
        Pred::IsNull(f, neg) => get(item, *f).is_none() != *neg,
        Pred::Between(f, lo, hi) => get(item, *f)
            .is_some_and(|x| x.cmp(lo) != Ordering::Less && x.cmp(hi) != Ordering::Greater),
        Pred::And(a, b) => eval(a, item) && eval(b, item),
        Pred::Or(a, b) => eval(a, item) || eval(b, item),
        Pred::Not(a) => !eval(a, item),
    }
}

/// LIKE by a different route than the engine: translate to an anchored regex-like matcher
/// built on std only (recursive).
struct Like(Vec<char>);
impl Like {
    fn is_match(&self, s: &str) -> bool {
        fn go(p: &[char], t: &[char]) -> bool {
            match p.first() {
                None => t.is_empty(),
                Some('%') => (0..=t.len()).any(|i| go(&p[1..], &t[i..])),
                Some('_') => !t.is_empty() && go(&p[1..], &t[1..]),
                Some(c) => t.first() == Some(c) && go(&p[1..], &t[1..]),
            }
        }
        let t: Vec<char> = s.chars().collect();
        go(&self.0, &t)
    }
}
fn like_regex(p: &str) -> Like {
    Like(p.chars().collect())
}

fn render(p: &Pred, params: &mut HashMap<String, Value>, alias: bool) -> String {
    let path = |f: F| {
        if alias {
            format!("e.{}", f.name())
        } else {
            f.name().to_string()
        }
    };
    match p {
        Pred::Cmp(f, op, v, as_param) => {
            if *as_param {
                let name = format!("p{}", params.len());
                params.insert(name.clone(), v.param());
                format!("{} {op} :{name}", path(*f))
            } else {
                format!("{} {op} {}", path(*f), v.literal())
            }
        }
        Pred::In(f, vs) => format!(
            "{} IN ({})",
            path(*f),
            vs.iter().map(V::literal).collect::<Vec<_>>().join(", ")
        ),
        Pred::Like(f, pat) => format!("{} LIKE '{pat}'", path(*f)),
        Pred::IsNull(f, neg) => format!("{} IS {}NULL", path(*f), if *neg { "NOT " } else { "" }),
        Pred::Between(f, lo, hi) => {
            format!("{} BETWEEN {} AND {}", path(*f), lo.literal(), hi.literal())
        }
        Pred::And(a, b) => format!(
            "({} && {})",
            render(a, params, alias),
            render(b, params, alias)
        ),
        Pred::Or(a, b) => format!(
            "({} OR {})",
            render(a, params, alias),
            render(b, params, alias)
        ),
        Pred::Not(a) => format!("NOT ({})", render(a, params, alias)),
    }
}

fn value_for(f: F) -> BoxedStrategy<V> {
    match f {
        F::Realm => prop::sample::select(vec!["r0", "r1", "r2"])
            .prop_map(|s| V::S(s.into()))
            .boxed(),
        F::User => prop::sample::select(vec!["u0", "u1", "ux", "u_2"])
            .prop_map(|s| V::S(s.into()))
            .boxed(),
        F::N => (-3i64..4).prop_map(V::I).boxed(),
        F::Fl => prop::sample::select(vec![-1.5, 0.0, 0.5, 2.0])
            .prop_map(V::D)
            .boxed(),
        F::B => any::<bool>().prop_map(V::B).boxed(),
    }
}

fn field() -> impl Strategy<Value = F> {
    prop::sample::select(FIELDS.to_vec())
}

fn leaf() -> BoxedStrategy<Pred> {
    let ops = prop::sample::select(vec!["=", "=", "=", "!=", "<", "<=", ">", ">="]);
    prop_oneof![
        4 => (field(), ops, any::<bool>()).prop_flat_map(|(f, op, p)| value_for(f).prop_map(move |v| Pred::Cmp(f, op, v, p))),
        1 => field().prop_flat_map(|f| prop::collection::vec(value_for(f), 1..4).prop_map(move |vs| Pred::In(f, vs))),
        1 => (prop::sample::select(vec![F::Realm, F::User]), prop::sample::select(vec!["r%", "u_", "%1", "u\\_%", "%", "_0", "u%2"]))
            .prop_filter("no escapes", |(_, p)| !p.contains('\\'))
            .prop_map(|(f, p)| Pred::Like(f, p.to_string())),
        1 => (field(), any::<bool>()).prop_map(|(f, n)| Pred::IsNull(f, n)),
        1 => field().prop_flat_map(|f| (value_for(f), value_for(f)).prop_map(move |(a, b)| Pred::Between(f, a, b))),
    ]
    .boxed()
}

fn pred() -> impl Strategy<Value = Pred> {
    leaf().prop_recursive(3, 12, 2, |inner| {
        prop_oneof![
            (inner.clone(), inner.clone()).prop_map(|(a, b)| Pred::And(Box::new(a), Box::new(b))),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| Pred::Or(Box::new(a), Box::new(b))),
            inner.prop_map(|a| Pred::Not(Box::new(a))),
        ]
    })
}

fn item() -> impl Strategy<Value = Item> {
    (
        prop::option::weighted(0.9, prop::sample::select(vec!["r0", "r1", "r2"])),
        prop::option::weighted(0.8, prop::sample::select(vec!["u0", "u1", "ux", "u_2"])),
        prop::option::weighted(0.8, -3i32..4),
        prop::option::weighted(0.7, prop::sample::select(vec![-1.5, 0.0, 0.5, 2.0])),
        prop::option::of(any::<bool>()),
    )
        .prop_map(|(r, u, n, f, b)| Item {
            realm: r.map(Into::into),
            user: u.map(Into::into),
            n,
            f,
            b,
        })
}

#[derive(Debug, Clone)]
enum Op {
    Upsert(u8, Item),
    Remove(u8),
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(
        prop_oneof![4 => (0u8..40, item()).prop_map(|(k, i)| Op::Upsert(k, i)), 1 => (0u8..40).prop_map(Op::Remove)],
        0..80,
    )
}

#[derive(Debug, Clone)]
enum Shape {
    Entities,
    Project(Vec<F>),
    CountAll,
    GroupCount(F, Option<bool>),
    Delete,
}

fn shape() -> impl Strategy<Value = Shape> {
    prop_oneof![
        3 => Just(Shape::Entities),
        2 => prop::collection::vec(field(), 1..3).prop_map(Shape::Project),
        1 => Just(Shape::CountAll),
        1 => (field(), prop::option::of(any::<bool>())).prop_map(|(f, d)| Shape::GroupCount(f, d)),
        1 => Just(Shape::Delete),
    ]
}

fn to_message(desc: &prost_reflect::MessageDescriptor, item: &Item) -> DynamicMessage {
    let mut m = DynamicMessage::new(desc.clone());
    if let Some(v) = &item.realm {
        m.set_field_by_name("realm", RValue::String(v.clone()));
    }
    if let Some(v) = &item.user {
        m.set_field_by_name("user", RValue::String(v.clone()));
    }
    if let Some(v) = item.n {
        m.set_field_by_name("n", RValue::I32(v));
    }
    if let Some(v) = item.f {
        m.set_field_by_name("f", RValue::F64(v));
    }
    if let Some(v) = item.b {
        m.set_field_by_name("b", RValue::Bool(v));
    }
    m
}

fn key(k: u8) -> String {
    format!("k{k:03}")
}

/// Nulls first ascending, last descending; then the key.
fn order_cmp(a: &Option<V>, b: &Option<V>, desc: bool) -> Ordering {
    let o = match (a, b) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (Some(x), Some(y)) => x.cmp(y),
    };
    if desc {
        o.reverse()
    } else {
        o
    }
}

#[derive(Debug, PartialEq)]
enum Outcome {
    Entities(Vec<String>, u64),
    Rows(Vec<Vec<Value>>, u64),
    Deleted(Vec<String>),
}

#[allow(clippy::too_many_arguments)]
fn naive(
    model: &BTreeMap<String, Item>,
    shape: &Shape,
    filter: &Option<Pred>,
    order: &[(F, bool)],
    offset: u64,
    max: Option<u64>,
) -> Outcome {
    let mut rows: Vec<(&String, &Item)> = model
        .iter()
        .filter(|(_, i)| filter.as_ref().is_none_or(|p| eval(p, i)))
        .collect();
    let page = |n: usize| -> (usize, usize) {
        let start = (offset as usize).min(n);
        let end = max.map_or(n, |m| (start + m as usize).min(n));
        (start, end)
    };
    match shape {
        Shape::Delete => Outcome::Deleted(rows.iter().map(|(k, _)| (*k).clone()).collect()),
        Shape::CountAll => {
            let (s, e) = page(1);
            Outcome::Rows(
                vec![vec![Value::Int64(rows.len() as i64)]][s..e].to_vec(),
                1,
            )
        }
        Shape::GroupCount(f, desc) => {
            let mut groups: Vec<(Option<V>, i64)> = Vec::new();
            for (_, i) in &rows {
                let g = get(i, *f);
                match groups.iter_mut().find(|(k, _)| *k == g) {
                    Some((_, n)) => *n += 1,
                    None => groups.push((g, 1)),
                }
            }
            groups.sort_by(|a, b| order_cmp(&a.0, &b.0, desc.unwrap_or(false)));
            let total = groups.len();
            let (s, e) = page(total);
            let out = groups[s..e]
                .iter()
                .map(|(g, n)| {
                    vec![
                        g.as_ref().map_or(Value::Null, |v| v.out(*f)),
                        Value::Int64(*n),
                    ]
                })
                .collect();
            Outcome::Rows(out, total as u64)
        }
        Shape::Entities | Shape::Project(_) => {
            rows.sort_by(|(ka, a), (kb, b)| {
                for (f, desc) in order {
                    let o = order_cmp(&get(a, *f), &get(b, *f), *desc);
                    if o != Ordering::Equal {
                        return o;
                    }
                }
                ka.cmp(kb)
            });
            let total = rows.len();
            let (s, e) = page(total);
            let rows = &rows[s..e];
            match shape {
                Shape::Entities => Outcome::Entities(
                    rows.iter().map(|(k, _)| (*k).clone()).collect(),
                    total as u64,
                ),
                Shape::Project(fs) => Outcome::Rows(
                    rows.iter()
                        .map(|(_, i)| {
                            fs.iter()
                                .map(|f| get(i, *f).map_or(Value::Null, |v| v.out(*f)))
                                .collect()
                        })
                        .collect(),
                    total as u64,
                ),
                _ => unreachable!(),
            }
        }
    }
}

fn query_text(
    shape: &Shape,
    filter: &Option<Pred>,
    order: &[(F, bool)],
    alias: bool,
    params: &mut HashMap<String, Value>,
) -> String {
    let p = |f: F| {
        if alias {
            format!("e.{}", f.name())
        } else {
            f.name().to_string()
        }
    };
    let from = if alias { "t.Item as e" } else { "t.Item" };
    let mut q = match shape {
        Shape::Entities => format!("FROM {from}"),
        Shape::Project(fs) => format!(
            "SELECT {} FROM {from}",
            fs.iter().map(|f| p(*f)).collect::<Vec<_>>().join(", ")
        ),
        Shape::CountAll => format!(
            "SELECT count({}) FROM {from}",
            if alias {
                "e".to_string()
            } else {
                "n".to_string()
            }
        ),
        Shape::GroupCount(f, _) => format!(
            "SELECT {}, count({}) FROM {from}",
            p(*f),
            if alias { "e" } else { "realm" }
        ),
        Shape::Delete => format!("DELETE FROM {from}"),
    };
    if let Some(pr) = filter {
        q.push_str(" WHERE ");
        q.push_str(&render(pr, params, alias));
    }
    match shape {
        Shape::GroupCount(f, desc) => {
            q.push_str(&format!(" GROUP BY {}", p(*f)));
            if let Some(d) = desc {
                q.push_str(&format!(
                    " ORDER BY {} {}",
                    p(*f),
                    if *d { "DESC" } else { "ASC" }
                ));
            }
        }
        Shape::Entities | Shape::Project(_) if !order.is_empty() => {
            let keys: Vec<String> = order
                .iter()
                .map(|(f, d)| format!("{}{}", p(*f), if *d { " desc" } else { "" }))
                .collect();
            q.push_str(&format!(" ORDER BY {}", keys.join(", ")));
        }
        _ => {}
    }
    q
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn engine_matches_naive_evaluator(
        ops in ops(),
        shape in shape(),
        filter in prop::option::weighted(0.85, pred()),
        order in prop::collection::vec((field(), any::<bool>()), 0..3),
        offset in prop_oneof![3 => Just(0u64), 1 => 0u64..12],
        max in prop::option::of(0u64..10),
        alias in any::<bool>(),
        indexed in prop::collection::hash_set(field(), 0..5),
    ) {
        let pool: DescriptorPool = ickle::testing::pool_from_source("t.proto", PROTO).unwrap();
        let desc = pool.get_message_by_name("t.Item").unwrap();
        let indexed_fields: IndexedFields =
            [("t.Item".to_string(), indexed.iter().map(|f| f.name().to_string()).collect::<HashSet<_>>())].into_iter().collect();
        let mut index: QueryIndex<String> = QueryIndex::new(indexed_fields);
        let mut plain: QueryIndex<String> = QueryIndex::new(HashMap::new());
        let mut model = BTreeMap::new();
        for op in &ops {
            match op {
                Op::Upsert(k, item) => {
                    index.upsert(Bytes::from(key(*k)), to_message(&desc, item), key(*k));
                    plain.upsert(Bytes::from(key(*k)), to_message(&desc, item), key(*k));
                    model.insert(key(*k), item.clone());
                }
                Op::Remove(k) => {
                    prop_assert_eq!(index.remove(key(*k).as_bytes()), model.remove(&key(*k)).is_some());
                    plain.remove(key(*k).as_bytes());
                }
            }
        }
        // count(e) needs the alias to count rows (count(field) counts non-null values).
        let alias = alias || matches!(shape, Shape::CountAll | Shape::GroupCount(..));
        let mut params = HashMap::new();
        let text = query_text(&shape, &filter, &order, alias, &mut params);
        let resolver = |name: &str| pool.get_message_by_name(name);
        let bound = ickle::prepare(&text, &resolver).and_then(|p| p.bind(&params));
        let bound = match bound {
            Ok(b) => b,
            Err(e) => return Err(TestCaseError::fail(format!("{text}: {e}"))),
        };
        let order_used: Vec<(F, bool)> = match shape { Shape::Entities | Shape::Project(_) => order.clone(), _ => vec![] };
        let expected = naive(&model, &shape, &filter, &order_used, offset, max);
        let paging = Paging { start_offset: offset, max_results: max };
        for engine in [&index, &plain] {
            let got = match shape {
                Shape::Delete => Outcome::Deleted(
                    engine.matching_keys(&bound).iter().map(|k| String::from_utf8(k.to_vec()).unwrap()).collect(),
                ),
                _ => {
                    let out = engine.execute(&bound, paging);
                    match out.rows {
                        QueryRows::Entities(rows) => Outcome::Entities(rows.into_iter().map(|(_, p)| p.clone()).collect(), out.hit_count),
                        QueryRows::Projections(rows) => Outcome::Rows(rows, out.hit_count),
                    }
                }
            };
            prop_assert_eq!(&got, &expected, "query: {}", text);
        }
    }
}
