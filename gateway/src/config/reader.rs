//! A small, strict reader over a parsed document (JSON, or TOML turned into JSON)
//! that collects every problem with its path instead of stopping at the first.
//!
//! Both the server's TOML file and Portkey's JSON config go through it, so both
//! report problems the same way: `targets[1].weight: must be a number >= 0`.

use std::fmt;

use serde_json::{Map, Value};

/// One problem found while validating, with the path to the offending value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted path with `[i]` indices; empty for the document itself.
    pub path: String,
    /// What is wrong and, where it helps, what would be right.
    pub message: String,
}

/// Every problem found in one document.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Problems(pub Vec<Problem>);

impl Problems {
    /// A single problem.
    pub fn one(path: &str, message: impl Into<String>) -> Self {
        let mut p = Self::default();
        p.push(path, message);
        p
    }

    /// Records a problem at `path`.
    pub fn push(&mut self, path: &str, message: impl Into<String>) {
        self.0.push(Problem {
            path: path.to_owned(),
            message: message.into(),
        });
    }

    /// True when nothing was found.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The path of the first problem, for OpenAI's `error.param`.
    pub fn first_path(&self) -> Option<&str> {
        self.0
            .first()
            .map(|p| p.path.as_str())
            .filter(|p| !p.is_empty())
    }

    /// Prefixes every path with `prefix` (e.g. `configs.prod`).
    pub fn prefixed(self, prefix: &str) -> Self {
        Self(
            self.0
                .into_iter()
                .map(|p| Problem {
                    path: join(prefix, &p.path),
                    message: p.message,
                })
                .collect(),
        )
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

/// Parses TOML text into the JSON document the reader walks.
pub fn toml_document(text: &str, path: &str) -> Result<Value, Problems> {
    let table: toml::Table =
        toml::from_str(text).map_err(|e| Problems::one(path, format!("not valid TOML: {e}")))?;
    serde_json::to_value(table).map_err(|e| Problems::one(path, e.to_string()))
}

/// `a.b` (or `b` when `a` is empty; `a[0]` when `b` starts with `[`).
pub fn join(a: &str, b: &str) -> String {
    if a.is_empty() {
        b.to_owned()
    } else if b.is_empty() {
        a.to_owned()
    } else if b.starts_with('[') {
        format!("{a}{b}")
    } else {
        format!("{a}.{b}")
    }
}

/// A JSON object being read at `path`; remembers nothing but where it is.
#[derive(Clone, Copy)]
pub struct Obj<'v, 'p> {
    pub path: &'p str,
    pub map: &'v Map<String, Value>,
}

impl<'v, 'p> Obj<'v, 'p> {
    /// Reads `value` as an object, or records that it is not one.
    pub fn new(problems: &mut Problems, path: &'p str, value: &'v Value) -> Option<Self> {
        match value {
            Value::Object(map) => Some(Self { path, map }),
            other => {
                problems.push(path, format!("expected an object, found {}", kind(other)));
                None
            }
        }
    }

    /// Records every key not in `allowed` (and not accepted by `also`).
    pub fn deny_unknown(
        &self,
        problems: &mut Problems,
        allowed: &[&str],
        also: impl Fn(&str) -> bool,
    ) {
        for key in self.map.keys() {
            if !allowed.contains(&key.as_str()) && !also(key) {
                problems.push(
                    &join(self.path, key),
                    format!("unknown field; expected one of: {}", allowed.join(", ")),
                );
            }
        }
    }

    /// The raw value of `key`, if present and not null.
    pub fn get(&self, key: &str) -> Option<&'v Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    /// The path of `key` inside this object.
    pub fn path_of(&self, key: &str) -> String {
        join(self.path, key)
    }

    /// A string field.
    pub fn str(&self, problems: &mut Problems, key: &str) -> Option<String> {
        match self.get(key)? {
            Value::String(s) => Some(s.clone()),
            other => {
                problems.push(
                    &self.path_of(key),
                    format!("expected a string, found {}", kind(other)),
                );
                None
            }
        }
    }

    /// A boolean field.
    pub fn bool(&self, problems: &mut Problems, key: &str) -> Option<bool> {
        match self.get(key)? {
            Value::Bool(b) => Some(*b),
            other => {
                problems.push(
                    &self.path_of(key),
                    format!("expected true or false, found {}", kind(other)),
                );
                None
            }
        }
    }

    /// An unsigned integer field within `min..=max`.
    pub fn uint(&self, problems: &mut Problems, key: &str, min: u64, max: u64) -> Option<u64> {
        let value = self.get(key)?;
        match value.as_u64() {
            Some(n) if (min..=max).contains(&n) => Some(n),
            _ => {
                problems.push(
                    &self.path_of(key),
                    format!(
                        "expected an integer from {min} to {max}, found {}",
                        show(value)
                    ),
                );
                None
            }
        }
    }

    /// A finite number field `>= min`.
    pub fn number(&self, problems: &mut Problems, key: &str, min: f64) -> Option<f64> {
        let value = self.get(key)?;
        match value.as_f64() {
            Some(n) if n.is_finite() && n >= min => Some(n),
            _ => {
                problems.push(
                    &self.path_of(key),
                    format!("expected a number >= {min}, found {}", show(value)),
                );
                None
            }
        }
    }

    /// An array field, returned with its path.
    pub fn array(&self, problems: &mut Problems, key: &str) -> Option<&'v Vec<Value>> {
        match self.get(key)? {
            Value::Array(items) => Some(items),
            other => {
                problems.push(
                    &self.path_of(key),
                    format!("expected an array, found {}", kind(other)),
                );
                None
            }
        }
    }

    /// An array of strings.
    pub fn str_list(&self, problems: &mut Problems, key: &str) -> Option<Vec<String>> {
        let items = self.array(problems, key)?;
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            match item {
                Value::String(s) => out.push(s.clone()),
                other => problems.push(
                    &join(&self.path_of(key), &format!("[{i}]")),
                    format!("expected a string, found {}", kind(other)),
                ),
            }
        }
        Some(out)
    }

    /// An array of HTTP status codes.
    pub fn status_list(&self, problems: &mut Problems, key: &str) -> Option<Vec<u16>> {
        let items = self.array(problems, key)?;
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            match item.as_u64() {
                Some(n @ 100..=599) => out.push(n as u16),
                _ => problems.push(
                    &join(&self.path_of(key), &format!("[{i}]")),
                    format!(
                        "expected an HTTP status code (100-599), found {}",
                        show(item)
                    ),
                ),
            }
        }
        Some(out)
    }

    /// An object field, returned as a clone of its map.
    pub fn object(&self, problems: &mut Problems, key: &str) -> Option<Map<String, Value>> {
        match self.get(key)? {
            Value::Object(m) => Some(m.clone()),
            other => {
                problems.push(
                    &self.path_of(key),
                    format!("expected an object, found {}", kind(other)),
                );
                None
            }
        }
    }

    /// A field restricted to one of `choices`.
    pub fn choice(
        &self,
        problems: &mut Problems,
        key: &str,
        choices: &[&'static str],
    ) -> Option<&'static str> {
        let s = self.str(problems, key)?;
        let found = choices.iter().find(|c| **c == s).copied();
        if found.is_none() {
            problems.push(
                &self.path_of(key),
                format!("`{s}` is not one of: {}", choices.join(", ")),
            );
        }
        found
    }
}

/// The JSON kind of a value, for messages.
pub fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn show(v: &Value) -> String {
    match v {
        Value::Number(n) => n.to_string(),
        other => kind(other).to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn collects_every_problem_with_its_path() {
        let doc = json!({"a": "x", "n": 0, "codes": [200, 99, "x"], "extra": 1});
        let mut p = Problems::default();
        let obj = Obj::new(&mut p, "root", &doc).expect("object");
        obj.deny_unknown(&mut p, &["a", "n", "codes"], |_| false);
        assert_eq!(obj.uint(&mut p, "a", 0, 1), None);
        assert_eq!(obj.uint(&mut p, "n", 1, 5), None);
        assert_eq!(obj.status_list(&mut p, "codes"), Some(vec![200]));
        let paths: Vec<_> = p.0.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "root.extra",
                "root.a",
                "root.n",
                "root.codes[1]",
                "root.codes[2]"
            ]
        );
        assert!(
            p.to_string()
                .contains("root.n: expected an integer from 1 to 5, found 0")
        );
    }

    #[test]
    fn join_handles_indices_and_empty_roots() {
        assert_eq!(join("", "a"), "a");
        assert_eq!(join("a", "[2]"), "a[2]");
        assert_eq!(join("a", "b"), "a.b");
        assert_eq!(
            Problems(vec![Problem {
                path: "x".into(),
                message: "m".into()
            }])
            .prefixed("configs.p")
            .0[0]
                .path,
            "configs.p.x"
        );
    }
}
