//! Reading the request log: pages of records (`GET /admin/logs`) and sums
//! grouped by key, model, provider, metadata value or time bucket
//! (`GET /admin/usage`). Parameters come from the query string; a bad one is
//! a message for a 400, never SQL: every column and expression used is from
//! a fixed list, and values are bound.

use std::collections::HashMap;

use rusqlite::types::Value as Sql;
use serde_json::{Map, Value, json};

/// Filters both queries take.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Filter {
    /// Unix seconds, inclusive.
    pub from: Option<i64>,
    /// Unix seconds, exclusive.
    pub to: Option<i64>,
    /// Exact matches on these columns.
    pub equal: Vec<(&'static str, String)>,
    /// `200`, `4xx`, `5xx` or `error` (400 and up).
    pub status: Option<(u16, u16)>,
    /// `metadata.NAME=value`.
    pub metadata: Vec<(String, String)>,
}

const EQUAL: &[&str] = &[
    "key_id",
    "virtual_key",
    "provider",
    "model",
    "trace_id",
    "route",
    "cache",
];

/// A time bucket's width.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bucket {
    Minute,
    Hour,
    Day,
}

/// What `/admin/usage` groups by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Group {
    Column(&'static str),
    Metadata(String),
    Time(BucketName),
}

/// A time bucket, by the name the query string gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BucketName(Bucket);

impl Group {
    fn parse(text: &str) -> Result<Self, String> {
        let column = match text {
            "key" | "key_id" => "key_id",
            "virtual_key" => "virtual_key",
            "provider" => "provider",
            "model" => "model",
            "status" => "status",
            "route" => "route",
            "cache" => "cache",
            "minute" => return Ok(Self::Time(BucketName(Bucket::Minute))),
            "hour" => return Ok(Self::Time(BucketName(Bucket::Hour))),
            "day" => return Ok(Self::Time(BucketName(Bucket::Day))),
            _ => match text.strip_prefix("metadata.") {
                Some(name) if !name.is_empty() => return Ok(Self::Metadata(name.to_owned())),
                _ => {
                    return Err(format!(
                        "cannot group by `{text}`: expected key, virtual_key, provider, model, \
                         status, route, cache, metadata.NAME, minute, hour or day"
                    ));
                }
            },
        };
        Ok(Self::Column(column))
    }

    fn name(&self) -> String {
        match self {
            Self::Column("key_id") => "key".into(),
            Self::Column(c) => (*c).into(),
            Self::Metadata(name) => format!("metadata.{name}"),
            Self::Time(BucketName(Bucket::Minute)) => "minute".into(),
            Self::Time(BucketName(Bucket::Hour)) => "hour".into(),
            Self::Time(BucketName(Bucket::Day)) => "day".into(),
        }
    }

    /// The SQL expression, with its bound values.
    fn expr(&self, args: &mut Vec<Sql>) -> String {
        match self {
            Self::Column(c) => (*c).into(),
            Self::Metadata(name) => {
                args.push(Sql::Text(json_path(name)));
                format!("json_extract(metadata, ?{})", args.len())
            }
            Self::Time(BucketName(b)) => {
                let format = match b {
                    Bucket::Minute => "%Y-%m-%dT%H:%M:00Z",
                    Bucket::Hour => "%Y-%m-%dT%H:00:00Z",
                    Bucket::Day => "%Y-%m-%dT00:00:00Z",
                };
                format!("strftime('{format}', ts / 1000, 'unixepoch')")
            }
        }
    }
}

/// A JSON path naming one member, quoted (names may hold dots).
fn json_path(name: &str) -> String {
    format!("$.\"{}\"", name.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The query string's parameters, each once.
pub type Params = HashMap<String, String>;

fn int(params: &Params, name: &str) -> Result<Option<i64>, String> {
    params
        .get(name)
        .map(|v| {
            v.parse::<i64>()
                .map_err(|_| format!("`{name}` must be an integer, found `{v}`"))
        })
        .transpose()
}

impl Filter {
    /// Reads `from`, `to` (Unix seconds), `key`, `virtual_key`, `provider`,
    /// `model`, `trace_id`, `route`, `cache`, `status` and `metadata.NAME`.
    pub fn parse(params: &Params, also: &[&str]) -> Result<Self, String> {
        let mut f = Self {
            from: int(params, "from")?,
            to: int(params, "to")?,
            ..Self::default()
        };
        for (name, value) in params {
            let column = if name == "key" {
                "key_id"
            } else {
                name.as_str()
            };
            if let Some(c) = EQUAL.iter().find(|c| **c == column) {
                f.equal.push((c, value.clone()));
            } else if let Some(meta) = name.strip_prefix("metadata.") {
                f.metadata.push((meta.to_owned(), value.clone()));
            } else if name == "status" {
                f.status = Some(match value.as_str() {
                    "error" => (400, 999),
                    "2xx" | "3xx" | "4xx" | "5xx" => {
                        let hundred = u16::from(value.as_bytes()[0] - b'0') * 100;
                        (hundred, hundred + 99)
                    }
                    code => match code.parse::<u16>() {
                        Ok(n) => (n, n),
                        Err(_) => {
                            return Err(format!(
                                "`status` must be a code, 2xx..5xx or error, found `{value}`"
                            ));
                        }
                    },
                });
            } else if !["from", "to"].contains(&name.as_str()) && !also.contains(&name.as_str()) {
                return Err(format!("unknown parameter `{name}`"));
            }
        }
        f.equal.sort();
        f.metadata.sort();
        Ok(f)
    }

    /// `WHERE ...` (or nothing), binding into `args`.
    fn sql(&self, args: &mut Vec<Sql>) -> String {
        let mut terms = Vec::new();
        let bind = |args: &mut Vec<Sql>, v: Sql| {
            args.push(v);
            format!("?{}", args.len())
        };
        if let Some(from) = self.from {
            terms.push(format!("ts >= {}", bind(args, Sql::Integer(from * 1000))));
        }
        if let Some(to) = self.to {
            terms.push(format!("ts < {}", bind(args, Sql::Integer(to * 1000))));
        }
        for (column, value) in &self.equal {
            terms.push(format!(
                "{column} = {}",
                bind(args, Sql::Text(value.clone()))
            ));
        }
        if let Some((lo, hi)) = self.status {
            let lo = bind(args, Sql::Integer(lo.into()));
            let hi = bind(args, Sql::Integer(hi.into()));
            terms.push(format!("status BETWEEN {lo} AND {hi}"));
        }
        for (name, value) in &self.metadata {
            let path = bind(args, Sql::Text(json_path(name)));
            let value = bind(args, Sql::Text(value.clone()));
            terms.push(format!("json_extract(metadata, {path}) = {value}"));
        }
        if terms.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", terms.join(" AND "))
        }
    }
}

/// What [`LogQuery`] and [`UsageQuery`] have in common: checked first (a bad
/// parameter is the client's error, found before any I/O), run later on
/// the blocking pool.
pub trait Query: Send + 'static {
    fn run(&self, c: &rusqlite::Connection) -> rusqlite::Result<Value>;
}

/// `GET /admin/logs`: the newest records first, `limit` (default 50, at most
/// 1000) at a time; `before` (a record id, the last page's `next`) pages on.
#[derive(Debug, Clone, PartialEq)]
pub struct LogQuery {
    filter: Filter,
    limit: i64,
    before: Option<i64>,
}

impl LogQuery {
    pub fn parse(params: &Params) -> Result<Self, String> {
        let filter = Filter::parse(params, &["limit", "before"])?;
        let limit = int(params, "limit")?.unwrap_or(50);
        if !(1..=1000).contains(&limit) {
            return Err(format!("`limit` must be from 1 to 1000, found {limit}"));
        }
        Ok(Self {
            filter,
            limit,
            before: int(params, "before")?,
        })
    }
}

impl Query for LogQuery {
    fn run(&self, c: &rusqlite::Connection) -> rusqlite::Result<Value> {
        let Self {
            filter,
            limit,
            before,
        } = self;
        let limit = *limit;
        let mut args = Vec::new();
        let mut filter_sql = filter.sql(&mut args);
        if let Some(before) = *before {
            args.push(Sql::Integer(before));
            let term = format!("id < ?{}", args.len());
            filter_sql = if filter_sql.is_empty() {
                format!("WHERE {term}")
            } else {
                format!("{filter_sql} AND {term}")
            };
        }
        args.push(Sql::Integer(limit));
        let sql = format!(
            "SELECT id, ts, trace_id, key_id, virtual_key, provider, model, route, status,
                    latency_ms, ttft_ms, input_tokens, output_tokens, cached_tokens, cost, cache,
                    retries, target, stream, hook_results, metadata, request_body, response_body,
                    saved_cost
             FROM requests {filter_sql} ORDER BY id DESC LIMIT ?{}",
            args.len()
        );
        let mut stmt = c.prepare(&sql)?;
        let rows = stmt.query_map(rusqlite::params_from_iter(args), |r| {
            let json_text = |i: usize| -> rusqlite::Result<Value> {
                Ok(r.get::<_, Option<String>>(i)?
                    .map(|t| serde_json::from_str(&t).unwrap_or(Value::String(t)))
                    .unwrap_or(Value::Null))
            };
            let ts: i64 = r.get(1)?;
            Ok(json!({
                "id": r.get::<_, i64>(0)?,
                "time": ts,
                "trace_id": r.get::<_, String>(2)?,
                "key_id": r.get::<_, Option<String>>(3)?,
                "virtual_key": r.get::<_, Option<String>>(4)?,
                "provider": r.get::<_, Option<String>>(5)?,
                "model": r.get::<_, Option<String>>(6)?,
                "route": r.get::<_, String>(7)?,
                "status": r.get::<_, i64>(8)?,
                "latency_ms": r.get::<_, i64>(9)?,
                "ttft_ms": r.get::<_, Option<i64>>(10)?,
                "input_tokens": r.get::<_, Option<i64>>(11)?,
                "output_tokens": r.get::<_, Option<i64>>(12)?,
                "cached_tokens": r.get::<_, Option<i64>>(13)?,
                "cost": r.get::<_, Option<f64>>(14)?,
                "cache": r.get::<_, Option<String>>(15)?,
                "retries": r.get::<_, i64>(16)?,
                "target": r.get::<_, Option<String>>(17)?,
                "stream": r.get::<_, bool>(18)?,
                "hook_results": json_text(19)?,
                "metadata": json_text(20)?,
                "request_body": r.get::<_, Option<String>>(21)?,
                "response_body": r.get::<_, Option<String>>(22)?,
                "saved_cost": r.get::<_, Option<f64>>(23)?,
            }))
        })?;
        let data = rows.collect::<Result<Vec<_>, _>>()?;
        let next = if data.len() as i64 == limit {
            data.last().and_then(|r| r["id"].as_i64())
        } else {
            None
        };
        Ok(json!({"object": "list", "data": data, "next": next}))
    }
}

/// `GET /admin/usage`: sums of requests, errors, tokens, cost and latency,
/// grouped by `group_by` (a comma-separated list; none: one total row).
#[derive(Debug, Clone, PartialEq)]
pub struct UsageQuery {
    filter: Filter,
    groups: Vec<Group>,
}

impl UsageQuery {
    pub fn parse(params: &Params) -> Result<Self, String> {
        let filter = Filter::parse(params, &["group_by"])?;
        let groups = params
            .get("group_by")
            .map(|g| {
                g.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(Group::parse)
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?
            .unwrap_or_default();
        if groups.len() > 4 {
            return Err("`group_by` takes at most 4 fields".into());
        }
        Ok(Self { filter, groups })
    }
}

impl Query for UsageQuery {
    fn run(&self, c: &rusqlite::Connection) -> rusqlite::Result<Value> {
        let Self { filter, groups } = self;
        let mut args = Vec::new();
        let exprs: Vec<String> = groups.iter().map(|g| g.expr(&mut args)).collect();
        let filter_sql = filter.sql(&mut args);
        let select: String = exprs.iter().map(|e| format!("{e}, ")).collect();
        let group_sql = if exprs.is_empty() {
            String::new()
        } else {
            let positions: Vec<String> = (1..=exprs.len()).map(|i| i.to_string()).collect();
            format!(
                "GROUP BY {} ORDER BY {}",
                positions.join(", "),
                positions.join(", ")
            )
        };
        let sql = format!(
            "SELECT {select} COUNT(*), SUM(status >= 400), SUM(input_tokens), SUM(output_tokens),
                    SUM(cached_tokens), SUM(cost), AVG(latency_ms),
                    SUM(cache IN ('HIT', 'SEMANTIC HIT')),
                    SUM(cost IS NULL AND input_tokens IS NOT NULL), SUM(saved_cost),
                    SUM(cache = 'SEMANTIC HIT'), SUM(cache IN ('HIT', 'SEMANTIC HIT', 'MISS'))
             FROM requests {filter_sql} {group_sql}"
        );
        let mut stmt = c.prepare(&sql)?;
        let n = groups.len();
        let rows = stmt.query_map(rusqlite::params_from_iter(args), |r| {
            let mut row = Map::new();
            for (i, g) in groups.iter().enumerate() {
                let v: Sql = r.get(i)?;
                row.insert(
                    g.name(),
                    match v {
                        Sql::Null => Value::Null,
                        Sql::Integer(i) => json!(i),
                        Sql::Real(f) => json!(f),
                        Sql::Text(t) => Value::String(t),
                        Sql::Blob(_) => Value::Null,
                    },
                );
            }
            let count = |i: usize| -> rusqlite::Result<i64> {
                Ok(r.get::<_, Option<i64>>(n + i)?.unwrap_or(0))
            };
            row.insert("requests".into(), json!(count(0)?));
            row.insert("errors".into(), json!(count(1)?));
            row.insert("input_tokens".into(), json!(count(2)?));
            row.insert("output_tokens".into(), json!(count(3)?));
            row.insert("cached_tokens".into(), json!(count(4)?));
            row.insert(
                "cost".into(),
                json!(r.get::<_, Option<f64>>(n + 5)?.unwrap_or(0.0)),
            );
            row.insert(
                "avg_latency_ms".into(),
                json!(r.get::<_, Option<f64>>(n + 6)?.map(|l| l.round() as i64)),
            );
            row.insert("cache_hits".into(), json!(count(7)?));
            row.insert("unpriced_requests".into(), json!(count(8)?));
            row.insert(
                "saved_cost".into(),
                json!(r.get::<_, Option<f64>>(n + 9)?.unwrap_or(0.0)),
            );
            row.insert("semantic_cache_hits".into(), json!(count(10)?));
            // Hits over lookups (forced refreshes are not lookups); null
            // when nothing was looked up.
            let (hits, lookups) = (count(7)?, count(11)?);
            row.insert(
                "cache_hit_rate".into(),
                json!((lookups > 0).then(|| hits as f64 / lookups as f64)),
            );
            Ok(Value::Object(row))
        })?;
        let data = rows.collect::<Result<Vec<_>, _>>()?;
        let group_by: Vec<String> = groups.iter().map(Group::name).collect();
        Ok(json!({"object": "list", "group_by": group_by, "data": data}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Db;
    use crate::usage::{Record, Tokens};

    fn params(pairs: &[(&str, &str)]) -> Params {
        pairs
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect()
    }

    fn seeded() -> (Db, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("sluice-query-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("s.db");
        // Records from 2024: kept whatever their age.
        let settings = crate::usage::UsageSettings {
            retention_days: 0,
            ..Default::default()
        };
        let recorder = crate::usage::Recorder::start(&path, settings).expect("start");
        let day = 86_400_000;
        for (i, (key, model, status, user)) in [
            ("k1", "gpt-4o", 200, "alice"),
            ("k1", "gpt-4o", 200, "bob"),
            ("k1", "gpt-4o-mini", 429, "alice"),
            ("k2", "gpt-4o", 200, "alice"),
        ]
        .into_iter()
        .enumerate()
        {
            recorder.record(Record {
                ts_ms: day * 20_000 + i as i64 * day,
                trace_id: format!("t{i}"),
                key_id: Some(key.into()),
                model: Some(model.into()),
                provider: Some("openai".into()),
                route: "/v1/chat/completions".into(),
                status,
                latency_ms: 10 * (i as u64 + 1),
                tokens: (status == 200).then_some(Tokens {
                    input: 10,
                    output: 5,
                    cached: 2,
                }),
                cost: (status == 200).then_some(0.25),
                metadata: Some(json!({"user": user}).to_string()),
                cache: ["MISS", "SEMANTIC HIT", "DISABLED", "HIT"]
                    .get(i)
                    .map(|c| (*c).to_owned()),
                ..Record::default()
            });
        }
        recorder.close();
        (Db::open(&path).expect("open"), dir)
    }

    #[test]
    fn usage_groups_and_filters() {
        let (db, dir) = seeded();
        let run = |p: &[(&str, &str)]| {
            let q = UsageQuery::parse(&params(p)).expect("valid");
            db.with(|c| q.run(c)).expect("query")
        };
        let by_key = run(&[("group_by", "key")]);
        assert_eq!(by_key["data"][0]["key"], "k1");
        assert_eq!(by_key["data"][0]["requests"], 3);
        assert_eq!(by_key["data"][0]["errors"], 1);
        assert_eq!(by_key["data"][0]["input_tokens"], 20);
        assert_eq!(by_key["data"][0]["cost"], 0.5);
        // k1: a miss and a semantic hit (the third was not looked up).
        assert_eq!(by_key["data"][0]["cache_hits"], 1);
        assert_eq!(by_key["data"][0]["semantic_cache_hits"], 1);
        assert_eq!(by_key["data"][0]["cache_hit_rate"], 0.5);
        assert_eq!(by_key["data"][1]["key"], "k2");
        assert_eq!(by_key["data"][1]["cache_hit_rate"], 1.0);
        let by_user = run(&[("group_by", "metadata.user,model"), ("status", "2xx")]);
        let rows: Vec<(String, String, i64)> = by_user["data"]
            .as_array()
            .expect("rows")
            .iter()
            .map(|r| {
                (
                    r["metadata.user"].as_str().unwrap_or_default().to_owned(),
                    r["model"].as_str().unwrap_or_default().to_owned(),
                    r["requests"].as_i64().unwrap_or_default(),
                )
            })
            .collect();
        assert_eq!(
            rows,
            vec![
                ("alice".into(), "gpt-4o".into(), 2),
                ("bob".into(), "gpt-4o".into(), 1)
            ]
        );
        let by_day = run(&[
            ("group_by", "day"),
            ("from", &(20_001 * 86_400).to_string()),
        ]);
        assert_eq!(by_day["data"].as_array().map(Vec::len), Some(3));
        assert_eq!(by_day["data"][0]["day"], "2024-10-05T00:00:00Z");
        let total = run(&[("metadata.user", "alice")]);
        assert_eq!(total["data"][0]["requests"], 3);
        for bad in [
            &[("group_by", "password")][..],
            &[("status", "teapot")],
            &[("from", "yesterday")],
            &[("color", "red")],
        ] {
            assert!(UsageQuery::parse(&params(bad)).is_err());
        }
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn logs_page_newest_first() {
        let (db, dir) = seeded();
        let page = |p: &[(&str, &str)]| {
            let q = LogQuery::parse(&params(p)).expect("valid");
            db.with(|c| q.run(c)).expect("query")
        };
        let first = page(&[("limit", "3")]);
        let ids: Vec<&str> = first["data"]
            .as_array()
            .expect("rows")
            .iter()
            .filter_map(|r| r["trace_id"].as_str())
            .collect();
        assert_eq!(ids, ["t3", "t2", "t1"]);
        assert_eq!(first["data"][0]["metadata"]["user"], "alice");
        let next = first["next"].as_i64().expect("a next page").to_string();
        let second = page(&[("limit", "3"), ("before", &next)]);
        assert_eq!(second["data"].as_array().map(Vec::len), Some(1));
        assert_eq!(second["next"], Value::Null);
        let errors = page(&[("status", "error")]);
        assert_eq!(errors["data"][0]["status"], 429);
        assert_eq!(errors["data"].as_array().map(Vec::len), Some(1));
        assert!(LogQuery::parse(&params(&[("limit", "0")])).is_err());
        let _ = std::fs::remove_dir_all(dir);
    }
}
