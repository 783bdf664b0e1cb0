//! JSON Schema (draft 2020-12) validation for `jsonSchema`.
//!
//! Written here rather than taken from a crate: the maintained validators pull
//! `getrandom` (through `ahash`), whose wasm32-unknown-unknown backend needs
//! JavaScript glue, so the module could not be a component that imports only
//! the WIT.
//!
//! Covered: boolean schemas, `type`, `enum`, `const`, the numeric, string,
//! array and object keywords (`prefixItems`, `items`, `contains` with
//! `minContains`/`maxContains`, `uniqueItems`, `properties`,
//! `patternProperties`, `additionalProperties`, `propertyNames`, `required`,
//! `dependentRequired`, `dependentSchemas`), `allOf`/`anyOf`/`oneOf`/`not`,
//! `if`/`then`/`else`, and `$ref` to a JSON pointer (`#/$defs/x`) or a
//! `$anchor` in the same schema. `format` is an annotation, as 2020-12 has it
//! by default. Refused when the configuration is read, so nothing is silently
//! skipped: remote `$ref`s, `$dynamicRef`, `unevaluatedProperties`,
//! `unevaluatedItems`.

use std::collections::HashMap;

use regex::Regex;
use serde_json::{Map, Value};

/// Errors reported at most per validation.
const MAX_ERRORS: usize = 10;
/// `$ref`s followed at most in one branch (a schema may refer to itself).
const MAX_DEPTH: usize = 64;

/// Keywords whose values are one schema.
const ONE: [&str; 8] = [
    "additionalProperties",
    "items",
    "contains",
    "propertyNames",
    "not",
    "if",
    "then",
    "else",
];
/// Keywords whose values are lists of schemas.
const LISTS: [&str; 4] = ["allOf", "anyOf", "oneOf", "prefixItems"];
/// Keywords whose values are maps of schemas.
const MAPS: [&str; 5] = [
    "properties",
    "patternProperties",
    "dependentSchemas",
    "$defs",
    "definitions",
];

/// A schema, checked and with its patterns compiled.
#[derive(Debug)]
pub struct Schema {
    root: Value,
    patterns: HashMap<String, Regex>,
    anchors: HashMap<String, String>,
}

impl Schema {
    pub fn compile(root: Value) -> Result<Schema, String> {
        if !root.is_object() && !root.is_boolean() {
            return Err("`schema` must be a JSON Schema (an object or a boolean)".into());
        }
        let mut schema = Schema {
            root,
            patterns: HashMap::new(),
            anchors: HashMap::new(),
        };
        let mut refs = Vec::new();
        let root = schema.root.clone();
        schema.scan(&root, "", &mut refs)?;
        for r in refs {
            if schema.resolve(&r).is_none() {
                return Err(format!("`$ref` `{r}` points at nothing in the schema"));
            }
        }
        Ok(schema)
    }

    /// Compiles patterns, records anchors and refs, refuses what is not covered.
    fn scan(&mut self, s: &Value, at: &str, refs: &mut Vec<String>) -> Result<(), String> {
        let Some(o) = s.as_object() else {
            return match s {
                Value::Bool(_) => Ok(()),
                _ => Err(format!("`{at}` must be a schema (an object or a boolean)")),
            };
        };
        for unsupported in [
            "$dynamicRef",
            "$recursiveRef",
            "unevaluatedProperties",
            "unevaluatedItems",
        ] {
            if o.contains_key(unsupported) {
                return Err(format!("`{unsupported}` (at `{at}`) is not supported"));
            }
        }
        if let Some(r) = o.get("$ref") {
            let r = r.as_str().ok_or(format!("`{at}/$ref` must be a string"))?;
            if !r.starts_with('#') {
                return Err(format!(
                    "`$ref` `{r}`: only references inside the schema (`#...`) are supported"
                ));
            }
            refs.push(r.to_owned());
        }
        if let Some(a) = o.get("$anchor").and_then(Value::as_str) {
            self.anchors.insert(a.to_owned(), at.to_owned());
        }
        if let Some(p) = o.get("pattern") {
            let p = p
                .as_str()
                .ok_or(format!("`{at}/pattern` must be a string"))?;
            self.pattern(p, at)?;
        }
        for key in ONE {
            if let Some(sub) = o.get(key) {
                self.scan(sub, &format!("{at}/{key}"), refs)?;
            }
        }
        for key in LISTS {
            if let Some(list) = o.get(key) {
                let list = list
                    .as_array()
                    .ok_or(format!("`{at}/{key}` must be a list of schemas"))?;
                for (i, sub) in list.iter().enumerate() {
                    self.scan(sub, &format!("{at}/{key}/{i}"), refs)?;
                }
            }
        }
        for key in MAPS {
            if let Some(map) = o.get(key) {
                let map = map
                    .as_object()
                    .ok_or(format!("`{at}/{key}` must be an object of schemas"))?;
                for (name, sub) in map {
                    if key == "patternProperties" {
                        self.pattern(name, at)?;
                    }
                    self.scan(sub, &format!("{at}/{key}/{}", escape(name)), refs)?;
                }
            }
        }
        Ok(())
    }

    fn pattern(&mut self, p: &str, at: &str) -> Result<(), String> {
        if !self.patterns.contains_key(p) {
            let re = regex::RegexBuilder::new(p)
                .size_limit(1 << 20)
                .build()
                .map_err(|e| format!("pattern `{p}` at `{at}` is not a valid regex: {e}"))?;
            self.patterns.insert(p.to_owned(), re);
        }
        Ok(())
    }

    fn resolve(&self, r: &str) -> Option<&Value> {
        let fragment = r.strip_prefix('#')?;
        if fragment.is_empty() {
            return Some(&self.root);
        }
        if fragment.starts_with('/') {
            return self.root.pointer(&percent_decode(fragment));
        }
        let at = self.anchors.get(fragment)?;
        if at.is_empty() {
            Some(&self.root)
        } else {
            self.root.pointer(at)
        }
    }

    /// Why `instance` does not validate (empty when it does), each with the
    /// instance location.
    pub fn validate(&self, instance: &Value) -> Vec<String> {
        let mut errors = Vec::new();
        self.check(&self.root, instance, "", &mut errors, 0);
        errors.truncate(MAX_ERRORS);
        errors
    }

    fn valid(&self, s: &Value, v: &Value, depth: usize) -> bool {
        let mut errors = Vec::new();
        self.check(s, v, "", &mut errors, depth);
        errors.is_empty()
    }

    fn check(&self, s: &Value, v: &Value, at: &str, errors: &mut Vec<String>, depth: usize) {
        if errors.len() >= MAX_ERRORS {
            return;
        }
        let mut fail = |why: String| errors.push(format!("`{}`: {why}", or_root(at)));
        let o = match s {
            Value::Bool(true) => return,
            Value::Bool(false) => return fail("no value is allowed here".into()),
            Value::Object(o) => o,
            _ => return,
        };
        if let Some(r) = o.get("$ref").and_then(Value::as_str) {
            match self.resolve(r) {
                Some(target) if depth < MAX_DEPTH => self.check(target, v, at, errors, depth + 1),
                Some(_) => errors.push(format!("`{}`: `$ref`s nest too deep", or_root(at))),
                None => errors.push(format!("`{}`: `$ref` `{r}` points at nothing", or_root(at))),
            }
        }
        let mut fail = |why: String| errors.push(format!("`{}`: {why}", or_root(at)));
        if let Some(t) = o.get("type") {
            let ok = match t {
                Value::String(t) => is_type(v, t),
                Value::Array(ts) => ts.iter().filter_map(Value::as_str).any(|t| is_type(v, t)),
                _ => true,
            };
            if !ok {
                fail(format!("{} is not of type {t}", kind(v)));
            }
        }
        if let Some(Value::Array(options)) = o.get("enum")
            && !options.iter().any(|e| equal(e, v))
        {
            fail(format!(
                "{} is not one of {}",
                short(v),
                Value::Array(options.clone())
            ));
        }
        if let Some(c) = o.get("const")
            && !equal(c, v)
        {
            fail(format!("{} is not {c}", short(v)));
        }
        match v {
            Value::Number(n) => number(o, n.as_f64().unwrap_or(f64::NAN), &mut fail),
            Value::String(text) => self.string(o, text, &mut fail),
            Value::Array(items) => self.array(o, items, at, errors, depth),
            Value::Object(map) => self.object(o, map, at, errors, depth),
            _ => {}
        }
        self.combinators(o, v, at, errors, depth);
    }

    fn string(&self, o: &Map<String, Value>, text: &str, fail: &mut impl FnMut(String)) {
        let len = || text.chars().count() as u64;
        if let Some(min) = o.get("minLength").and_then(Value::as_u64)
            && len() < min
        {
            fail(format!("shorter than {min} characters"));
        }
        if let Some(max) = o.get("maxLength").and_then(Value::as_u64)
            && len() > max
        {
            fail(format!("longer than {max} characters"));
        }
        if let Some(p) = o.get("pattern").and_then(Value::as_str)
            && let Some(re) = self.patterns.get(p)
            && !re.is_match(text)
        {
            fail(format!("does not match `{p}`"));
        }
    }

    fn array(
        &self,
        o: &Map<String, Value>,
        items: &[Value],
        at: &str,
        errors: &mut Vec<String>,
        depth: usize,
    ) {
        let n = items.len() as u64;
        let here = or_root(at).to_owned();
        if let Some(min) = o.get("minItems").and_then(Value::as_u64)
            && n < min
        {
            errors.push(format!("`{here}`: fewer than {min} items"));
        }
        if let Some(max) = o.get("maxItems").and_then(Value::as_u64)
            && n > max
        {
            errors.push(format!("`{here}`: more than {max} items"));
        }
        if o.get("uniqueItems") == Some(&Value::Bool(true)) {
            let dup =
                (0..items.len()).any(|i| (i + 1..items.len()).any(|j| equal(&items[i], &items[j])));
            if dup {
                errors.push(format!("`{here}`: items are not unique"));
            }
        }
        let prefix = o.get("prefixItems").and_then(Value::as_array);
        let skip = prefix.map_or(0, Vec::len);
        for (i, item) in items.iter().enumerate() {
            let sub = match prefix.and_then(|p| p.get(i)) {
                Some(s) => Some(s),
                None if i >= skip => o.get("items"),
                None => None,
            };
            if let Some(sub) = sub {
                self.check(sub, item, &format!("{at}/{i}"), errors, depth);
            }
        }
        if let Some(contains) = o.get("contains") {
            let matched = items
                .iter()
                .filter(|i| self.valid(contains, i, depth))
                .count() as u64;
            let min = o.get("minContains").and_then(Value::as_u64).unwrap_or(1);
            if matched < min {
                errors.push(format!(
                    "`{here}`: {matched} items match `contains`, fewer than {min}"
                ));
            }
            if let Some(max) = o.get("maxContains").and_then(Value::as_u64)
                && matched > max
            {
                errors.push(format!(
                    "`{here}`: {matched} items match `contains`, more than {max}"
                ));
            }
        }
    }

    fn object(
        &self,
        o: &Map<String, Value>,
        map: &Map<String, Value>,
        at: &str,
        errors: &mut Vec<String>,
        depth: usize,
    ) {
        let here = or_root(at).to_owned();
        let n = map.len() as u64;
        if let Some(min) = o.get("minProperties").and_then(Value::as_u64)
            && n < min
        {
            errors.push(format!("`{here}`: fewer than {min} properties"));
        }
        if let Some(max) = o.get("maxProperties").and_then(Value::as_u64)
            && n > max
        {
            errors.push(format!("`{here}`: more than {max} properties"));
        }
        for key in o
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            if !map.contains_key(key) {
                errors.push(format!("`{here}`: `{key}` is required"));
            }
        }
        if let Some(Value::Object(deps)) = o.get("dependentRequired") {
            for (key, needs) in deps.iter().filter(|(k, _)| map.contains_key(*k)) {
                for need in needs
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                {
                    if !map.contains_key(need) {
                        errors.push(format!("`{here}`: `{need}` is required with `{key}`"));
                    }
                }
            }
        }
        if let Some(Value::Object(deps)) = o.get("dependentSchemas") {
            for (_, sub) in deps.iter().filter(|(k, _)| map.contains_key(*k)) {
                self.check(sub, &Value::Object(map.clone()), at, errors, depth);
            }
        }
        let properties = o.get("properties").and_then(Value::as_object);
        let patterns = o.get("patternProperties").and_then(Value::as_object);
        for (key, value) in map {
            let path = format!("{at}/{}", escape(key));
            let mut evaluated = false;
            if let Some(sub) = properties.and_then(|p| p.get(key)) {
                evaluated = true;
                self.check(sub, value, &path, errors, depth);
            }
            for (p, sub) in patterns.into_iter().flatten() {
                if self.patterns.get(p).is_some_and(|re| re.is_match(key)) {
                    evaluated = true;
                    self.check(sub, value, &path, errors, depth);
                }
            }
            if !evaluated && let Some(extra) = o.get("additionalProperties") {
                if extra == &Value::Bool(false) {
                    errors.push(format!("`{here}`: `{key}` is not allowed"));
                } else {
                    self.check(extra, value, &path, errors, depth);
                }
            }
            if let Some(names) = o.get("propertyNames")
                && !self.valid(names, &Value::String(key.clone()), depth)
            {
                errors.push(format!(
                    "`{here}`: the property name `{key}` is not allowed"
                ));
            }
        }
    }

    fn combinators(
        &self,
        o: &Map<String, Value>,
        v: &Value,
        at: &str,
        errors: &mut Vec<String>,
        depth: usize,
    ) {
        let here = or_root(at).to_owned();
        let list = |key: &str| o.get(key).and_then(Value::as_array);
        if let Some(all) = list("allOf") {
            for sub in all {
                self.check(sub, v, at, errors, depth);
            }
        }
        if let Some(any) = list("anyOf")
            && !any.iter().any(|sub| self.valid(sub, v, depth))
        {
            errors.push(format!("`{here}`: matches none of `anyOf`"));
        }
        if let Some(one) = list("oneOf") {
            let n = one.iter().filter(|sub| self.valid(sub, v, depth)).count();
            if n != 1 {
                errors.push(format!("`{here}`: matches {n} of `oneOf`, not exactly one"));
            }
        }
        if let Some(not) = o.get("not")
            && self.valid(not, v, depth)
        {
            errors.push(format!("`{here}`: matches the schema under `not`"));
        }
        if let Some(cond) = o.get("if") {
            let branch = if self.valid(cond, v, depth) {
                o.get("then")
            } else {
                o.get("else")
            };
            if let Some(branch) = branch {
                self.check(branch, v, at, errors, depth);
            }
        }
    }
}

fn number(o: &Map<String, Value>, n: f64, fail: &mut impl FnMut(String)) {
    let bound = |key: &str| o.get(key).and_then(Value::as_f64);
    if let Some(m) = bound("minimum")
        && n < m
    {
        fail(format!("{n} is less than {m}"));
    }
    if let Some(m) = bound("maximum")
        && n > m
    {
        fail(format!("{n} is more than {m}"));
    }
    if let Some(m) = bound("exclusiveMinimum")
        && n <= m
    {
        fail(format!("{n} is not more than {m}"));
    }
    if let Some(m) = bound("exclusiveMaximum")
        && n >= m
    {
        fail(format!("{n} is not less than {m}"));
    }
    if let Some(m) = bound("multipleOf").filter(|m| *m > 0.0) {
        let q = n / m;
        if (q - q.round()).abs() > 1e-9 * q.abs().max(1.0) {
            fail(format!("{n} is not a multiple of {m}"));
        }
    }
}

fn is_type(v: &Value, t: &str) -> bool {
    match t {
        "null" => v.is_null(),
        "boolean" => v.is_boolean(),
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "number" => v.is_number(),
        "integer" => v.as_f64().is_some_and(|f| f.fract() == 0.0),
        _ => false,
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// JSON equality, numbers by value (`1` equals `1.0`).
fn equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| equal(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, a)| y.get(k).is_some_and(|b| equal(a, b)))
        }
        _ => a == b,
    }
}

/// A value for a message, cut short.
fn short(v: &Value) -> String {
    let s = v.to_string();
    match s.char_indices().nth(60) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s,
    }
}

fn or_root(at: &str) -> &str {
    if at.is_empty() { "/" } else { at }
}

/// A property name as a JSON pointer token.
fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(h) = s.get(i + 1..i + 3)
            && let Ok(b) = u8::from_str_radix(h, 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
