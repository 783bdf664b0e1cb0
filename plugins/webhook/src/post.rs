//! What `webhook` and `log` share (`log` includes this file): their
//! parameters — the URL, `headers`, `timeout` — and the event they post,
//! shaped as Portkey's hook context, sent by the host (`host.fetch`).

use serde_json::{Map, Value, json};
use sluice_plugin_sdk::guardrail::*;

/// Where to post, read from a check's parameters.
#[derive(Debug)]
pub struct Target {
    pub url: String,
    pub headers: Vec<Pair>,
    pub timeout_ms: u32,
}

impl Target {
    /// Reads `url_key` (an http or https URL), `headers` (an object, or
    /// Portkey's JSON text of one) and `timeout` (milliseconds, default 3000).
    pub fn read(p: &Value, url_key: &str) -> Result<Target, String> {
        let url = p
            .get(url_key)
            .and_then(Value::as_str)
            .filter(|u| u.starts_with("https://") || u.starts_with("http://"))
            .ok_or(format!("`{url_key}` must be an http or https URL"))?
            .to_owned();
        let headers = match p.get("headers") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(h)) => h.clone(),
            Some(Value::String(s)) => match serde_json::from_str(s) {
                Ok(Value::Object(h)) => h,
                _ => return Err("`headers` must be an object of strings".into()),
            },
            Some(_) => return Err("`headers` must be an object of strings".into()),
        };
        let headers = headers
            .into_iter()
            .map(|(key, v)| match v {
                Value::String(value) => Ok(Pair { key, value }),
                _ => Err(format!("header `{key}` must be a string")),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let timeout_ms = match p.get("timeout") {
            None | Some(Value::Null) => 3000,
            Some(v) => v
                .as_u64()
                .filter(|t| (1..=10_000).contains(t))
                .ok_or("`timeout` must be 1 to 10000 milliseconds")? as u32,
        };
        Ok(Target {
            url,
            headers,
            timeout_ms,
        })
    }

    /// Posts `event` as JSON; the answer, or a plugin error naming the URL.
    pub fn post(&self, event: &Value) -> Result<HttpResponse, Error> {
        let mut headers = vec![Pair {
            key: "content-type".into(),
            value: "application/json".into(),
        }];
        headers.extend(self.headers.iter().cloned());
        fetch(&HttpRequest {
            method: "POST".into(),
            url: self.url.clone(),
            headers,
            body: event.to_string().into_bytes(),
            timeout_ms: self.timeout_ms,
            cache_seconds: 0,
        })
        .map_err(|e| Error::Internal(format!("{}: {e}", self.url)))
    }
}

/// Portkey's hook context for the input: the request (before) or the
/// response (after) as JSON and text, the provider, the request type, the
/// metadata and the event type.
pub fn event(input: &CheckInput) -> Value {
    let json = input
        .body
        .as_deref()
        .and_then(|b| serde_json::from_str::<Value>(b).ok())
        .unwrap_or(Value::Null);
    let after = input.stage == Stage::AfterResponse;
    let text = if after {
        input.texts().collect::<Vec<_>>().join("\n")
    } else {
        input
            .segments
            .last()
            .map(|s| s.text.clone())
            .unwrap_or_default()
    };
    let metadata: Map<String, Value> = input
        .metadata
        .iter()
        .map(|p| (p.key.clone(), Value::String(p.value.clone())))
        .collect();
    let side = json!({"json": json, "text": text});
    json!({
        "request": if after { json!({}) } else { side.clone() },
        "response": if after { side } else { json!({}) },
        "provider": input.provider,
        "model": input.model,
        "requestType": match input.endpoint {
            Endpoint::Chat => "chatComplete",
            Endpoint::Completions => "complete",
            Endpoint::Embeddings => "embed",
            Endpoint::Messages => "messages",
            Endpoint::Other => "proxy",
        },
        "metadata": metadata,
        "eventType": if after { "afterRequestHook" } else { "beforeRequestHook" },
    })
}
