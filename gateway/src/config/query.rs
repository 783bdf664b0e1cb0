//! The query language of `conditional` strategies, compiled once when a config
//! is loaded and evaluated per request.
//!
//! ```json
//! {"$or": [{"metadata.tier": {"$in": ["pro", "team"]}},
//!          {"params.max_tokens": {"$gt": 4000}, "url.pathname": {"$regex": "chat"}}]}
//! ```
//!
//! - A field is `metadata.KEY` (from `x-portkey-metadata`), `params.PATH` (the
//!   request body; `PATH` may go any depth, with array indices:
//!   `params.messages.0.role`) or `url.pathname`. Portkey reads only two levels.
//! - A field's condition is a literal (equality) or an object of operators, all
//!   of which must hold: `$eq $ne $gt $gte $lt $lte $in $nin $regex $length`.
//!   Several fields in one object must all hold; `$and` / `$or` take arrays of
//!   queries, nested to any depth.
//! - Comparisons (`$gt`...) are numeric, reading numbers written as strings too
//!   (metadata values are strings), as Portkey's `parseFloat` does. Equality is
//!   JSON equality, except that a number equals a string holding that number.
//! - `$regex` uses Rust's `regex` syntax (no look-around or back-references); a
//!   pattern that does not compile is a config error, not a silent `false`.
//! - A missing field satisfies only `$ne` and `$nin`.

use regex::Regex;
use serde_json::{Map, Value};

use super::reader::{Problems, join, kind};

/// A compiled query.
#[derive(Debug, Clone)]
pub struct Query {
    clauses: Vec<Clause>,
}

impl PartialEq for Query {
    fn eq(&self, other: &Self) -> bool {
        self.clauses == other.clauses
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Clause {
    And(Vec<Query>),
    Or(Vec<Query>),
    Field(Field, Vec<Op>),
}

#[derive(Debug, Clone, PartialEq)]
enum Field {
    Metadata(String),
    Params(Vec<String>),
    Pathname,
}

#[derive(Debug, Clone)]
enum Op {
    Eq(Value),
    Ne(Value),
    Cmp(std::cmp::Ordering, bool, f64),
    In(Vec<Value>),
    Nin(Vec<Value>),
    Regex(Regex),
    Length(Vec<Op>),
}

impl PartialEq for Op {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Op::Eq(a), Op::Eq(b)) | (Op::Ne(a), Op::Ne(b)) => a == b,
            (Op::Cmp(a, b, c), Op::Cmp(x, y, z)) => a == x && b == y && c == z,
            (Op::In(a), Op::In(b)) | (Op::Nin(a), Op::Nin(b)) => a == b,
            (Op::Regex(a), Op::Regex(b)) => a.as_str() == b.as_str(),
            (Op::Length(a), Op::Length(b)) => a == b,
            _ => false,
        }
    }
}

/// What a query is evaluated against.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    pub metadata: &'a Map<String, Value>,
    /// The request body, when it is a JSON object.
    pub params: Option<&'a Map<String, Value>>,
    pub pathname: &'a str,
}

impl Query {
    /// Compiles a query, reporting every problem under `path`.
    pub fn parse(p: &mut Problems, path: &str, query: &Map<String, Value>) -> Option<Self> {
        let before = p.0.len();
        let mut clauses = Vec::new();
        for (key, value) in query {
            let at = join(path, &quote(key));
            match key.as_str() {
                "$and" | "$or" => {
                    let Some(items) = value.as_array() else {
                        p.push(
                            &at,
                            format!("expected an array of queries, got {}", kind(value)),
                        );
                        continue;
                    };
                    let subs: Vec<Query> = items
                        .iter()
                        .enumerate()
                        .filter_map(|(i, q)| {
                            let sub = format!("{at}[{i}]");
                            match q.as_object() {
                                Some(q) => Query::parse(p, &sub, q),
                                None => {
                                    p.push(
                                        &sub,
                                        format!("expected a query object, got {}", kind(q)),
                                    );
                                    None
                                }
                            }
                        })
                        .collect();
                    clauses.push(if key == "$and" {
                        Clause::And(subs)
                    } else {
                        Clause::Or(subs)
                    });
                }
                k if k.starts_with('$') => p.push(
                    &at,
                    "only `$and` and `$or` may stand where a field is expected",
                ),
                _ => {
                    let Some(field) = field(key) else {
                        p.push(
                            &at,
                            "a field is `metadata.KEY`, `params.PATH` or `url.pathname`",
                        );
                        continue;
                    };
                    let ops = match value {
                        Value::Object(ops) if ops.keys().all(|k| k.starts_with('$')) => {
                            operators(p, &at, ops)
                        }
                        literal => vec![Op::Eq(literal.clone())],
                    };
                    clauses.push(Clause::Field(field, ops));
                }
            }
        }
        (p.0.len() == before).then_some(Self { clauses })
    }

    /// Whether the facts satisfy the query.
    pub fn matches(&self, facts: &Facts<'_>) -> bool {
        self.clauses.iter().all(|c| match c {
            Clause::And(qs) => qs.iter().all(|q| q.matches(facts)),
            Clause::Or(qs) => qs.iter().any(|q| q.matches(facts)),
            Clause::Field(field, ops) => {
                let value = lookup(field, facts);
                ops.iter().all(|op| holds(op, value.as_ref()))
            }
        })
    }
}

/// Keys with dots are quoted in paths so the path stays readable.
fn quote(key: &str) -> String {
    if key.contains('.') {
        format!("\"{key}\"")
    } else {
        key.to_owned()
    }
}

fn field(key: &str) -> Option<Field> {
    if key == "url.pathname" {
        return Some(Field::Pathname);
    }
    if let Some(k) = key.strip_prefix("metadata.")
        && !k.is_empty()
    {
        return Some(Field::Metadata(k.to_owned()));
    }
    let rest = key.strip_prefix("params.")?;
    let parts: Vec<String> = rest.split('.').map(str::to_owned).collect();
    (!parts.iter().any(String::is_empty)).then_some(Field::Params(parts))
}

fn operators(p: &mut Problems, path: &str, ops: &Map<String, Value>) -> Vec<Op> {
    use std::cmp::Ordering::{Greater, Less};
    let mut out = Vec::new();
    for (op, arg) in ops {
        let at = join(path, op);
        let number = |p: &mut Problems| match as_number(arg) {
            Some(n) => Some(n),
            None => {
                p.push(&at, format!("expected a number, got {}", kind(arg)));
                None
            }
        };
        let list = |p: &mut Problems| match arg {
            Value::Array(items) => Some(items.clone()),
            other => {
                p.push(&at, format!("expected an array, got {}", kind(other)));
                None
            }
        };
        let compiled = match op.as_str() {
            "$eq" => Some(Op::Eq(arg.clone())),
            "$ne" => Some(Op::Ne(arg.clone())),
            "$gt" => number(p).map(|n| Op::Cmp(Greater, false, n)),
            "$gte" => number(p).map(|n| Op::Cmp(Greater, true, n)),
            "$lt" => number(p).map(|n| Op::Cmp(Less, false, n)),
            "$lte" => number(p).map(|n| Op::Cmp(Less, true, n)),
            "$in" => list(p).map(Op::In),
            "$nin" => list(p).map(Op::Nin),
            "$regex" => match arg.as_str() {
                Some(pattern) => match Regex::new(pattern) {
                    Ok(re) => Some(Op::Regex(re)),
                    Err(e) => {
                        p.push(&at, format!("invalid regular expression: {e}"));
                        None
                    }
                },
                None => {
                    p.push(&at, format!("expected a string, got {}", kind(arg)));
                    None
                }
            },
            "$length" => match arg {
                Value::Object(inner) if inner.keys().all(|k| k.starts_with('$')) => {
                    Some(Op::Length(operators(p, &at, inner)))
                }
                other => number(p).map(|_| Op::Length(vec![Op::Eq(other.clone())])),
            },
            _ => {
                p.push(
                    &at,
                    "unknown operator; one of: $eq, $ne, $gt, $gte, $lt, $lte, $in, $nin, $regex, $length",
                );
                None
            }
        };
        out.extend(compiled);
    }
    out
}

fn lookup(field: &Field, facts: &Facts<'_>) -> Option<Value> {
    match field {
        Field::Pathname => Some(Value::String(facts.pathname.to_owned())),
        Field::Metadata(key) => facts.metadata.get(key).cloned(),
        Field::Params(path) => {
            let (first, rest) = path.split_first()?;
            let mut v = facts.params?.get(first)?;
            for part in rest {
                v = match v {
                    Value::Object(m) => m.get(part)?,
                    Value::Array(items) => items.get(part.parse::<usize>().ok()?)?,
                    _ => return None,
                };
            }
            Some(v.clone())
        }
    }
}

fn as_number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok().filter(|n| n.is_finite()),
        _ => None,
    }
}

fn equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(_), _) | (_, Value::Number(_)) => match (as_number(a), as_number(b)) {
            (Some(x), Some(y)) => x == y,
            _ => a == b,
        },
        _ => a == b,
    }
}

fn holds(op: &Op, value: Option<&Value>) -> bool {
    let Some(value) = value else {
        return matches!(op, Op::Ne(_) | Op::Nin(_));
    };
    match op {
        Op::Eq(x) => equal(value, x),
        Op::Ne(x) => !equal(value, x),
        Op::Cmp(side, inclusive, bound) => as_number(value).is_some_and(|v| {
            v.partial_cmp(bound)
                .is_some_and(|o| o == *side || (*inclusive && o.is_eq()))
        }),
        Op::In(items) => items.iter().any(|x| equal(value, x)),
        Op::Nin(items) => !items.iter().any(|x| equal(value, x)),
        Op::Regex(re) => value.as_str().is_some_and(|s| re.is_match(s)),
        Op::Length(ops) => {
            let len = match value {
                Value::Array(items) => items.len(),
                Value::String(s) => s.chars().count(),
                Value::Object(m) => m.len(),
                _ => return false,
            };
            let len = Value::from(len);
            ops.iter().all(|op| holds(op, Some(&len)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn compile(q: Value) -> Result<Query, Problems> {
        let mut p = Problems::default();
        let map = q.as_object().cloned().unwrap_or_default();
        match Query::parse(&mut p, "q", &map) {
            Some(q) if p.is_empty() => Ok(q),
            _ => Err(p),
        }
    }

    fn eval(q: Value, metadata: Value, params: Value, pathname: &str) -> bool {
        let q = compile(q).unwrap_or_else(|p| panic!("{p}"));
        let metadata = metadata.as_object().cloned().unwrap_or_default();
        q.matches(&Facts {
            metadata: &metadata,
            params: params.as_object(),
            pathname,
        })
    }

    #[test]
    fn every_operator() {
        let md = json!({"tier": "pro", "level": "3"});
        let params = json!({"model": "gpt-4o", "max_tokens": 500, "messages": [{"role": "system"}, {"role": "user"}], "meta": {"a": {"b": true}}});
        let cases = [
            (json!({"metadata.tier": "pro"}), true),
            (json!({"metadata.tier": {"$eq": "pro"}}), true),
            (json!({"metadata.tier": {"$ne": "pro"}}), false),
            (json!({"metadata.level": {"$gt": 2}}), true),
            (json!({"metadata.level": {"$gte": 3, "$lt": 4}}), true),
            (json!({"metadata.level": {"$lte": 2.5}}), false),
            (json!({"metadata.level": {"$eq": 3}}), true),
            (json!({"params.max_tokens": {"$in": [100, 500]}}), true),
            (json!({"params.model": {"$nin": ["gpt-4o"]}}), false),
            (json!({"params.model": {"$regex": "^gpt-4"}}), true),
            (json!({"params.messages": {"$length": 2}}), true),
            (json!({"params.messages": {"$length": {"$gt": 2}}}), false),
            (json!({"params.messages.1.role": "user"}), true),
            (json!({"params.meta.a.b": true}), true),
            (json!({"url.pathname": {"$regex": "/chat/"}}), true),
            (json!({"metadata.missing": {"$ne": "x"}}), true),
            (json!({"metadata.missing": {"$nin": ["x"]}}), true),
            (json!({"metadata.missing": {"$eq": "x"}}), false),
            (json!({"metadata.missing": {"$gt": 1}}), false),
            (
                json!({"metadata.tier": "pro", "params.model": "other"}),
                false,
            ),
            (
                json!({"$or": [{"metadata.tier": "free"}, {"$and": [{"params.max_tokens": {"$gt": 100}}, {"metadata.tier": "pro"}]}]}),
                true,
            ),
            (
                json!({"$and": [{"metadata.tier": "pro"}, {"$or": []}]}),
                false,
            ),
            (json!({}), true),
        ];
        for (q, want) in cases {
            assert_eq!(
                eval(
                    q.clone(),
                    md.clone(),
                    params.clone(),
                    "/v1/chat/completions"
                ),
                want,
                "{q}"
            );
        }
    }

    #[test]
    fn mistakes_are_reported_with_paths() {
        let err = compile(json!({
            "metadata.x": {"$gtx": 1},
            "params.y": {"$gt": "many", "$regex": "("},
            "nope.z": 1,
            "$or": {"a": 1},
            "$not": [],
            "$and": [1, {"params.": 1}]
        }))
        .expect_err("invalid")
        .to_string();
        for needle in [
            "q.\"metadata.x\".$gtx: unknown operator",
            "q.\"params.y\".$gt: expected a number",
            "q.\"params.y\".$regex: invalid regular expression",
            "q.\"nope.z\": a field is",
            "q.$or: expected an array",
            "q.$not: only `$and` and `$or`",
            "q.$and[0]: expected a query object",
            "q.$and[1].\"params.\": a field is",
        ] {
            assert!(err.contains(needle), "missing `{needle}` in {err}");
        }
    }
}
