//! The unified (OpenAI-shaped) JSON request body: what the pipeline reads from it
//! and how it is changed. Fields Sluice does not know are never dropped.

use std::borrow::Cow;

use serde_json::{Map, Value};

use crate::GatewayError;
use crate::config::reader::kind;

/// The two fields the pipeline needs. Reading them also checks that the whole
/// body is one well-formed JSON object, without building it in memory.
#[derive(Debug, serde::Deserialize)]
pub struct Peek<'a> {
    #[serde(borrow, default)]
    pub model: Option<Cow<'a, str>>,
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    pub stream_options: Option<PeekStreamOptions>,
}

/// `stream_options`, as far as the pipeline reads it.
#[derive(Debug, Default, serde::Deserialize)]
pub struct PeekStreamOptions {
    #[serde(default)]
    pub include_usage: Option<bool>,
}

impl PeekStreamOptions {
    /// A body's `stream_options.include_usage`: `false` when either is
    /// absent.
    pub fn usage_wanted(options: Option<&Self>) -> bool {
        options.and_then(|o| o.include_usage).unwrap_or(false)
    }
}

impl Peek<'_> {
    /// `stream_options.include_usage`.
    pub fn include_usage(&self) -> bool {
        PeekStreamOptions::usage_wanted(self.stream_options.as_ref())
    }
}

/// The translator's options from a parsed body.
pub fn stream_options(map: &Map<String, Value>) -> super::AnswerOptions {
    super::AnswerOptions {
        model: map.get("model").and_then(Value::as_str).map(str::to_owned),
        include_usage: map
            .get("stream_options")
            .and_then(|o| o.get("include_usage"))
            .and_then(Value::as_bool)
            .unwrap_or(false),
        ..Default::default()
    }
}

/// Checks a JSON body and reads `model` and `stream` from it.
pub fn peek(bytes: &[u8]) -> Result<Peek<'_>, GatewayError> {
    let peek = serde_json::from_slice(bytes).map_err(|e| malformed(bytes, &e))?;
    object_first(bytes)?;
    Ok(peek)
}

/// Refuses a body that is not an object. serde reads a struct from an array
/// too (its members in field order), so a reader of a body's fields that
/// took `[]` would pass it on: call this after such a reader succeeded.
pub fn object_first(bytes: &[u8]) -> Result<(), GatewayError> {
    not_an_object(bytes).map_or(Ok(()), |why| Err(GatewayError::MalformedBody(why)))
}

/// Why a body is not a JSON object ("expected a JSON object, found an
/// array"), judged by its first token; `None` when it starts as one.
pub fn not_an_object(bytes: &[u8]) -> Option<String> {
    if bytes.trim_ascii_start().first() == Some(&b'{') {
        return None;
    }
    let found = serde_json::from_slice::<Value>(bytes).map_or("something else", |v| kind(&v));
    Some(not_an_object_but(found))
}

/// The one wording of every "not an object" refusal.
fn not_an_object_but(found: &str) -> String {
    format!("expected a JSON object, found {found}")
}

/// Parses a JSON body into an object that keeps every field, in order.
pub fn parse_object(bytes: &[u8]) -> Result<Map<String, Value>, GatewayError> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(GatewayError::MalformedBody(not_an_object_but(kind(&other)))),
        Err(e) => Err(malformed(bytes, &e)),
    }
}

/// Portkey's `override_params`: each key replaces the request's.
pub fn apply_overrides(body: &mut Map<String, Value>, overrides: &Map<String, Value>) {
    for (k, v) in overrides {
        body.insert(k.clone(), v.clone());
    }
}

fn malformed(bytes: &[u8], e: &serde_json::Error) -> GatewayError {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return GatewayError::MalformedBody("expected a JSON object, the body is empty".into());
    }
    match serde_json::from_slice::<Value>(bytes) {
        Ok(other) if !other.is_object() => {
            GatewayError::MalformedBody(not_an_object_but(kind(&other)))
        }
        _ => GatewayError::MalformedBody(format!("invalid JSON: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn peek_reads_model_and_stream_and_checks_the_whole_body() {
        let p = peek(br#"{"messages":[],"model":"gpt\u00e9","stream":true,"x":{"y":[1]}}"#)
            .expect("ok");
        assert_eq!(p.model.as_deref(), Some("gpt\u{e9}"));
        assert_eq!(p.stream, Some(true));
        let p = peek(br#"{"input":"x"}"#).expect("ok");
        assert_eq!((p.model, p.stream), (None, None));
        for (bad, needle) in [
            (&b""[..], "empty"),
            (b"  \n", "empty"),
            (b"[1]", "found an array"),
            // Read field by field, an empty array would pass.
            (b" []", "found an array"),
            (b"[null, true]", "found an array"),
            (b"\"s\"", "found a string"),
            (b"{\"model\": \"m\",", "invalid JSON"),
            (b"{\"a\":1} trailing", "invalid JSON"),
            (b"{\"stream\": \"yes\"}", "invalid JSON"),
        ] {
            let err = peek(bad).expect_err("malformed").to_string();
            assert!(
                err.contains(needle),
                "{:?}: {err}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn overrides_replace_keys_and_keep_the_rest_in_order() {
        let mut body = parse_object(br#"{"model":"a","z_unknown":1,"temperature":1}"#).expect("ok");
        let overrides = json!({"model": "b", "max_tokens": 5});
        apply_overrides(&mut body, overrides.as_object().expect("object"));
        assert_eq!(
            serde_json::to_string(&body).expect("json"),
            r#"{"model":"b","z_unknown":1,"temperature":1,"max_tokens":5}"#
        );
        assert!(parse_object(b"[]").is_err());
    }
}
