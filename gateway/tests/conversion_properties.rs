//! Property tests of the request conversions (a stable-toolchain stand-in for a
//! fuzz target): random but well-formed OpenAI chat requests, and random
//! mutations of them, go through every native adapter.
//!
//! - No input panics; every refusal is a client error (4xx) with a message.
//! - Nothing the provider can express is lost: every message text, tool name,
//!   tool-call id and argument, and the sampling settings appear in the wire
//!   request; and OpenAI → Anthropic → OpenAI (the Messages ingress) gives back
//!   the same conversation.

#![expect(
    clippy::expect_used,
    reason = "test helpers: a failed expectation is a failed test"
)]

use bytes::Bytes;
use futures_util::FutureExt;
use http::{HeaderMap, Method};
use serde_json::{Value, json};
use sluice::config::Secret;
use sluice::providers::{Call, Endpoint, Registry, messages};

/// xorshift64*: deterministic, so a failure reproduces from its round.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, in_ten: usize) -> bool {
        self.below(10) < in_ten
    }
}

const WORDS: &[&str] = &[
    "hello",
    "wörld",
    "emoji 🦀",
    "quote \" inside",
    "back\\slash",
    "line\nbreak",
    "",
    "tab\t",
    "{\"json\": 1}",
    "日本語",
];

fn text(rng: &mut Rng) -> String {
    (0..1 + rng.below(3))
        .map(|_| WORDS[rng.below(WORDS.len())])
        .collect::<Vec<_>>()
        .join(" ")
}

/// A random, valid chat request and the texts it carries.
fn request(rng: &mut Rng) -> Value {
    let mut messages = Vec::new();
    if rng.chance(5) {
        messages.push(json!({"role": "system", "content": text(rng)}));
    }
    let mut call_n = 0;
    for _ in 0..1 + rng.below(4) {
        if rng.chance(5) {
            messages.push(json!({"role": "user", "content": format!("u {}", text(rng))}));
        } else {
            messages.push(json!({"role": "user", "content": [{"type": "text", "text": format!("p {}", text(rng))}]}));
        }
        if rng.chance(4) {
            call_n += 1;
            let id = format!("call_{call_n}");
            let args = json!({"q": text(rng), "n": rng.below(100)}).to_string();
            messages.push(json!({"role": "assistant", "content": format!("a {}", text(rng)),
                "tool_calls": [{"id": id, "type": "function", "function": {"name": "lookup", "arguments": args}}]}));
            messages.push(
                json!({"role": "tool", "tool_call_id": id, "content": format!("r {}", text(rng))}),
            );
        } else if rng.chance(5) {
            messages.push(json!({"role": "assistant", "content": format!("a {}", text(rng))}));
        }
    }
    let mut req =
        json!({"model": "model-1", "messages": messages, "max_tokens": 1 + rng.below(1000)});
    if rng.chance(5) {
        req["temperature"] = json!(rng.below(20) as f64 / 10.0);
    }
    if rng.chance(5) {
        req["top_p"] = json!(rng.below(10) as f64 / 10.0);
    }
    if rng.chance(3) {
        req["stop"] = json!(["STOP", text(rng)]);
    }
    if rng.chance(5) {
        req["tools"] = json!([{"type": "function", "function": {"name": "lookup", "description": text(rng),
            "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}}]);
        req["tool_choice"] = json!(["auto", "required"][rng.below(2)]);
    }
    if rng.chance(3) {
        req["stream"] = json!(true);
    }
    req
}

/// Every string leaf of a JSON value.
fn strings(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Array(items) => items.iter().for_each(|i| strings(i, out)),
        Value::Object(m) => m.values().for_each(|i| strings(i, out)),
        _ => {}
    }
}

/// The message texts (and tool-call ids) a request carries.
fn carried(req: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for m in req["messages"].as_array().into_iter().flatten() {
        strings(&m["content"], &mut out);
        for c in m["tool_calls"].as_array().into_iter().flatten() {
            out.push(c["id"].as_str().unwrap_or_default().to_owned());
        }
    }
    out.retain(|s| !s.is_empty() && s != "text");
    out
}

fn wire(registry: &Registry, slug: &str, body: &[u8]) -> Result<Value, sluice::GatewayError> {
    let key = Secret::new("k".into());
    let mut options = serde_json::Map::new();
    options.insert("vertex_project_id".into(), json!("p"));
    let headers = HeaderMap::new();
    let call = Call {
        endpoint: Endpoint::Chat,
        method: Method::POST,
        api_key: Some(&key),
        custom_host: None,
        options: &options,
        client_headers: &headers,
        forward_headers: &[],
        query: None,
        proxy_path: "",
        body: Bytes::copy_from_slice(body),
        token: None,
    };
    let provider = registry.get(slug).expect("registered");
    let req = provider
        .build_request(&call)
        .now_or_never()
        .expect("native adapters build without waiting")?;
    Ok(serde_json::from_slice(&req.body).expect("the wire body is JSON"))
}

const NATIVE: &[&str] = &["anthropic", "google", "vertex-ai", "cohere", "bedrock"];

#[test]
fn every_expressible_field_reaches_every_native_provider() {
    let registry = Registry::new(&[]).expect("registry");
    let mut rng = Rng(0x5eed_cafe);
    for round in 0..300 {
        let req = request(&mut rng);
        let body = req.to_string();
        for slug in NATIVE {
            let out = wire(&registry, slug, body.as_bytes()).unwrap_or_else(|e| {
                panic!("round {round}, {slug}: a valid request was refused: {e}\n{body}")
            });
            let mut sent = Vec::new();
            strings(&out, &mut sent);
            let sent_text = out.to_string();
            for t in carried(&req) {
                let found = sent.iter().any(|s| s.contains(&t))
                    || serde_json::from_str::<Value>(&t)
                        .is_ok_and(|_| sent_text.contains(&t.replace(' ', "")));
                assert!(
                    found,
                    "round {round}, {slug}: `{t}` was lost\nin:  {body}\nout: {out}"
                );
            }
            let max = req["max_tokens"].as_u64();
            assert!(
                sent_text.contains(&format!("{}", max.unwrap_or(0))),
                "round {round}, {slug}: max_tokens lost: {out}"
            );
            if let Some(t) = req.get("temperature") {
                assert!(
                    sent_text.contains(&format!(":{t}")),
                    "round {round}, {slug}: temperature lost: {out}"
                );
            }
            if req.get("tools").is_some() {
                assert!(
                    sent_text.contains("lookup"),
                    "round {round}, {slug}: tools lost: {out}"
                );
            }
        }
    }
}

#[test]
fn openai_to_anthropic_and_back_keeps_the_conversation() {
    let registry = Registry::new(&[]).expect("registry");
    let mut rng = Rng(0xfeed_f00d);
    for round in 0..300 {
        let req = request(&mut rng);
        let anthropic = wire(&registry, "anthropic", req.to_string().as_bytes()).expect("converts");
        let back: Value = serde_json::from_slice(
            &messages::messages_to_chat(anthropic.to_string().as_bytes()).expect("converts back"),
        )
        .expect("json");
        for key in ["model", "max_tokens", "temperature", "top_p", "stream"] {
            assert_eq!(
                back.get(key),
                req.get(key),
                "round {round}: `{key}` changed"
            );
        }
        let mut before = carried(&req);
        let mut after = carried(&back);
        before.sort();
        after.sort();
        assert_eq!(
            before, after,
            "round {round}: the texts changed\nin:  {req}\nout: {back}"
        );
        let calls = |v: &Value| -> Vec<(Value, Value)> {
            v["messages"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|m| m["tool_calls"].as_array().cloned().unwrap_or_default())
                .map(|c| {
                    let args: Value =
                        serde_json::from_str(c["function"]["arguments"].as_str().unwrap_or("{}"))
                            .unwrap_or(Value::Null);
                    (c["id"].clone(), args)
                })
                .collect()
        };
        assert_eq!(
            calls(&back),
            calls(&req),
            "round {round}: tool calls changed"
        );
        assert_eq!(
            back.get("tool_choice").is_some(),
            req.get("tool_choice").is_some(),
            "round {round}: tool_choice"
        );
    }
}

#[test]
fn mutated_requests_never_panic_and_are_refused_as_client_errors() {
    let registry = Registry::new(&[]).expect("registry");
    let mut rng = Rng(0xbad_5eed);
    let junk: &[&str] = &[
        "null",
        "1",
        "\"s\"",
        "[]",
        "{}",
        "[1]",
        "{\"type\":\"x\"}",
        "-1",
        "1e309",
    ];
    let mut refused = 0;
    for round in 0..1500 {
        let mut req = request(&mut rng);
        // Replace one value somewhere with junk.
        let keys = [
            "messages",
            "tools",
            "tool_choice",
            "stop",
            "max_tokens",
            "model",
            "n",
            "response_format",
        ];
        let key = keys[rng.below(keys.len())];
        let value: Value = serde_json::from_str(junk[rng.below(junk.len())]).unwrap_or(Value::Null);
        if key == "messages" && rng.chance(7) {
            let i = rng.below(req["messages"].as_array().map_or(1, Vec::len).max(1));
            let field = ["role", "content", "tool_calls", "tool_call_id"][rng.below(4)];
            req["messages"][i][field] = value;
        } else {
            req[key] = value;
        }
        let body = req.to_string();
        for slug in NATIVE {
            if let Err(e) = wire(&registry, slug, body.as_bytes()) {
                refused += 1;
                assert!(
                    e.status().is_client_error(),
                    "round {round}, {slug}: {e} is not a client error\n{body}"
                );
                assert!(!e.to_string().is_empty());
            }
        }
        let _ = messages::messages_to_chat(body.as_bytes());
    }
    assert!(refused > 0, "some mutations must be refused");
}
