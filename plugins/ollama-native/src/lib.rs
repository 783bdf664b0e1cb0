//! `ollama-native`: a provider adapter for Ollama's native API, which the core does not
//! speak (the core's `ollama` provider uses Ollama's OpenAI-compatible `/v1`).
//!
//! - chat → `POST {base}/api/chat`: messages (text, images from `data:` URLs,
//!   tool calls and tool results), `tools`, `response_format` → `format`,
//!   sampling settings → `options`; streaming is Ollama's NDJSON, translated to
//!   OpenAI chunks line by line.
//! - embeddings → `POST {base}/api/embed`.
//!
//! The base URL is the target's `custom_host` (default `http://127.0.0.1:11434`);
//! a trailing `/v1` or `/api` is dropped.

mod chat;
mod time;

use serde::Deserialize;
use serde_json::{Value, json};
use sluice_plugin_sdk::provider::*;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Config {
    /// Ollama's `keep_alive` (e.g. `"5m"`), passed through.
    #[serde(default)]
    keep_alive: Option<Value>,
}

struct Ollama;

const DEFAULT_BASE: &str = "http://127.0.0.1:11434";

fn base_url(call: &Call) -> String {
    let base = call
        .base_url
        .as_deref()
        .unwrap_or(DEFAULT_BASE)
        .trim_end_matches('/');
    let base = base
        .strip_suffix("/v1")
        .or_else(|| base.strip_suffix("/api"))
        .unwrap_or(base);
    base.to_owned()
}

impl Provider for Ollama {
    type Config = Config;
    type Stream = chat::Stream;
    const DESCRIPTION: &'static str =
        "Ollama's native API (/api/chat with NDJSON streaming, /api/embed)";
    const CONFIG_SCHEMA: &'static str =
        r#"{"type":"object","additionalProperties":false,"properties":{"keep_alive":{}}}"#;
    const ENDPOINTS: &'static [Endpoint] = &[Endpoint::Chat, Endpoint::Embeddings];

    fn build_request(config: &Config, call: &Call) -> Result<HttpRequest, Error> {
        let body = call.json()?;
        let base = base_url(call);
        let mut out = match call.endpoint {
            Endpoint::Chat => chat::request(&body, call.streaming)?,
            Endpoint::Embeddings => json!({
                "model": body.get("model").cloned().unwrap_or(Value::Null),
                "input": body.get("input").cloned().unwrap_or(Value::Null),
            }),
            _ => {
                return Err(Error::Unsupported(
                    "ollama serves chat and embeddings".into(),
                ));
            }
        };
        if let Some(keep_alive) = &config.keep_alive {
            out["keep_alive"] = keep_alive.clone();
        }
        let path = if call.endpoint == Endpoint::Chat {
            "/api/chat"
        } else {
            "/api/embed"
        };
        let mut req = HttpRequest::post_json(format!("{base}{path}"), &out);
        if let Some(key) = &call.api_key {
            req = req.header("authorization", format!("Bearer {key}"));
        }
        Ok(req)
    }

    fn parse_response(
        endpoint: Endpoint,
        status: u16,
        _headers: &[Pair],
        body: &[u8],
    ) -> Result<String, Error> {
        let value: Value = serde_json::from_slice(body).map_err(|e| {
            if (200..300).contains(&status) {
                Error::InvalidInput(format!("ollama answered with a body that is not JSON: {e}"))
            } else {
                upstream_error(status, &String::from_utf8_lossy(body))
            }
        })?;
        if !(200..300).contains(&status) {
            let message = value
                .get("error")
                .and_then(Value::as_str)
                .unwrap_or("ollama answered with an error");
            return Err(upstream_error(status, message));
        }
        let out = match endpoint {
            Endpoint::Chat => chat::response(&value),
            Endpoint::Embeddings => embeddings(&value),
            _ => {
                return Err(Error::Unsupported(
                    "ollama serves chat and embeddings".into(),
                ));
            }
        };
        Ok(out.to_string())
    }

    fn stream(_endpoint: Endpoint, model: Option<String>) -> chat::Stream {
        chat::Stream::new(model)
    }
}

fn upstream_error(status: u16, message: &str) -> Error {
    Error::Upstream(UpstreamError {
        status,
        message: message.to_owned(),
        code: None,
    })
}

fn embeddings(v: &Value) -> Value {
    let data: Vec<Value> = v
        .get("embeddings")
        .and_then(Value::as_array)
        .map(|all| {
            all.iter()
                .enumerate()
                .map(|(i, e)| json!({"object": "embedding", "index": i, "embedding": e}))
                .collect()
        })
        .unwrap_or_default();
    let prompt = v
        .get("prompt_eval_count")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    json!({
        "object": "list",
        "data": data,
        "model": v.get("model").cloned().unwrap_or(Value::Null),
        "usage": {"prompt_tokens": prompt, "total_tokens": prompt},
    })
}

sluice_plugin_sdk::export_provider!(Ollama);
