//! Sluice's end-to-end test support: a mock upstream that speaks each provider's
//! wire format on loopback ([`mock`]) and a harness that runs the real `sluice`
//! binary against it ([`gateway`]). The tests are in `tests/tests/`; the load
//! harness is `src/bin/loadtest.rs`.

pub mod examples;
pub mod gateway;
pub mod mock;
pub mod redis;

/// Paths of the plugin components built for the tests (`tests/build.rs`).
pub mod fixtures {
    include!(concat!(env!("OUT_DIR"), "/fixtures.rs"));
}

/// What the load harness sends, shared with the benches that measure the
/// same work in-process.
pub mod load {
    /// The chat request every run sends (a user message of about 480 bytes).
    pub const BODY: &str = r#"{"model":"gpt-load","messages":[{"role":"system","content":"You are a helpful assistant that answers briefly and precisely."},{"role":"user","content":"Summarise the following text in one sentence: Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore et dolore magna aliqua. Ut enim ad minim veniam, quis nostrud exercitation ullamco laboris nisi ut aliquip ex ea commodo consequat. Duis aute irure dolor in reprehenderit in voluptate velit esse cillum dolore eu fugiat nulla pariatur. Excepteur sint occaecat cupidatat non proident, sunt in culpa qui officia deserunt mollit anim id est laborum."}],"temperature":0.2,"max_tokens":64}"#;

    /// [`BODY`] lengthened to `bytes` (never shortened): its user message
    /// goes on with its own prose, so every check passes on it as on
    /// [`BODY`]. The guardrail targets are stated for a 1 KB request.
    pub fn body_of(bytes: usize) -> String {
        let end = BODY
            .find(r#""}],"temperature""#)
            .unwrap_or_else(|| panic!("BODY ends its user message before `temperature`"));
        let start = BODY
            .find(" Lorem")
            .unwrap_or_else(|| panic!("BODY's user message quotes its prose"));
        let missing = bytes.saturating_sub(BODY.len());
        let pad: String = BODY[start..end].chars().cycle().take(missing).collect();
        format!("{}{pad}{}", &BODY[..end], &BODY[end..])
    }

    /// `--checks`: five of the `default` plugin's checks, three on the request
    /// and two on the answer, all passing on [`BODY`] and the mock's answer.
    pub fn checks_config(provider: &str) -> serde_json::Value {
        serde_json::json!({"provider": provider,
            "input_guardrails": [
                {"deny": true, "default.wordCount": {"maxWords": 500}},
                {"deny": true, "default.pii": {}},
                {"deny": true, "default.promptInjection": {}}],
            "output_guardrails": [
                {"deny": true, "default.bannedWords": {"words": ["darn"]}},
                {"deny": true, "default.contains": {"words": ["forbidden"], "operator": "none"}}]})
    }
}

pub use gateway::{Gateway, TempDir};
pub use mock::MockUpstream;

/// A server config: `extra` (which may start with top-level keys), then a
/// `[[providers]]` entry `mock` pointing at `mock`.
pub fn config_with_mock(mock: &MockUpstream, extra: &str) -> String {
    format!(
        "{extra}\n\n[[providers]]\nslug = \"mock\"\nbase_url = \"{}\"\n",
        mock.url("/v1")
    )
}

/// An admin API call with gateway key `key` (a JSON `body` when given);
/// returns the status and the JSON answer (`null` when it is not JSON).
pub async fn admin(
    gw: &Gateway,
    key: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> (u16, serde_json::Value) {
    let mut req = client()
        .request(
            method
                .parse()
                .unwrap_or_else(|e| panic!("method {method}: {e}")),
            gw.at(path),
        )
        .header("x-portkey-api-key", key);
    if let Some(body) = body {
        req = req
            .header("content-type", "application/json")
            .body(body.to_owned());
    }
    let res = req
        .send()
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(serde_json::Value::Null))
}

/// A gateway key made with `sluice keys create --name NAME ...` against the
/// server config at `config_file`: its id and its secret.
pub fn cli_key(config_file: &std::path::Path, name: &str, extra: &[&str]) -> (String, String) {
    let out = std::process::Command::new(gateway::binary())
        .args(["keys", "create", "--name", name, "--json", "--config"])
        .arg(config_file)
        .args(extra)
        .output()
        .unwrap_or_else(|e| panic!("sluice keys: {e}"));
    assert!(
        out.status.success(),
        "sluice keys create: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("keys json: {e}"));
    let field = |f: &serde_json::Value| {
        f.as_str()
            .unwrap_or_else(|| panic!("unexpected keys json {v}"))
            .to_owned()
    };
    (field(&v["key"]["id"]), field(&v["secret"]))
}

/// A reqwest client for tests: no proxy, bounded time.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .unwrap_or_else(|e| panic!("client: {e}"))
}

/// A mock upstream and a gateway whose provider `mock` points at it, with
/// `extra` server config (see [`config_with_mock`]).
pub async fn gateway_with_mock(extra: &str) -> (MockUpstream, Gateway) {
    let mock = MockUpstream::start()
        .await
        .unwrap_or_else(|e| panic!("mock upstream: {e}"));
    let gw = Gateway::start(&config_with_mock(&mock, extra));
    (mock, gw)
}

/// A chat request through `gw` with `config` as `x-portkey-config` and one user
/// message.
pub async fn chat_with_config(
    gw: &Gateway,
    config: &serde_json::Value,
    text: &str,
) -> reqwest::Response {
    client()
        .post(gw.at("/v1/chat/completions"))
        .header("x-portkey-config", config.to_string())
        .json(&serde_json::json!({"model": "m", "messages": [{"role": "user", "content": text}]}))
        .send()
        .await
        .unwrap_or_else(|e| panic!("send: {e}"))
}

/// `GET /admin/plugins` of `gw`.
pub async fn admin_plugins(gw: &Gateway) -> serde_json::Value {
    client()
        .get(gw.at("/admin/plugins"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("admin: {e}"))
        .json()
        .await
        .unwrap_or_else(|e| panic!("admin json: {e}"))
}

/// A header of `res` as text; empty when it is absent or not text.
pub fn header<'a>(res: &'a reqwest::Response, name: &str) -> &'a str {
    res.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// An OpenAI SSE answer's chunks, after checking it is an event stream that
/// ends with `data: [DONE]`; and the text its deltas carry.
pub async fn openai_stream(res: reqwest::Response) -> (Vec<serde_json::Value>, String) {
    let ct = header(&res, "content-type").to_owned();
    assert!(ct.starts_with("text/event-stream"), "content-type {ct}");
    let text = res.text().await.unwrap_or_else(|e| panic!("body: {e}"));
    let events: Vec<&str> = text
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .collect();
    assert_eq!(events.last(), Some(&"[DONE]"), "{text}");
    let chunks: Vec<serde_json::Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap_or_else(|err| panic!("chunk {e}: {err}")))
        .collect();
    let content = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    (chunks, content)
}

/// An Anthropic Messages SSE answer's events (name and data), after checking
/// that every event's name is its data's `type` and that it ends with
/// `message_stop`; and the text its `text_delta`s carry.
pub async fn anthropic_stream(res: reqwest::Response) -> (Vec<serde_json::Value>, String) {
    let text = res.text().await.unwrap_or_else(|e| panic!("body: {e}"));
    let mut events = Vec::new();
    for block in text.split("\n\n").filter(|b| !b.trim().is_empty()) {
        let name = block
            .lines()
            .find_map(|l| l.strip_prefix("event: "))
            .unwrap_or_else(|| panic!("an event without a name: {block}"));
        let data = block
            .lines()
            .find_map(|l| l.strip_prefix("data: "))
            .unwrap_or_else(|| panic!("an event without data: {block}"));
        let data: serde_json::Value =
            serde_json::from_str(data).unwrap_or_else(|e| panic!("event {data}: {e}"));
        assert_eq!(data["type"], name, "{block}");
        events.push(data);
    }
    assert_eq!(
        events.last().map(|e| e["type"].clone()),
        Some(serde_json::json!("message_stop")),
        "{text}"
    );
    let content = events
        .iter()
        .filter_map(|e| e["delta"]["text"].as_str())
        .collect();
    (events, content)
}

/// POSTs `body` as JSON to `path` of `gw` with `headers`.
pub async fn post_json(
    gw: &Gateway,
    path: &str,
    headers: &[(&str, String)],
    body: &serde_json::Value,
) -> reqwest::Response {
    let mut req = client().post(gw.at(path)).json(body);
    for (name, value) in headers {
        req = req.header(*name, value);
    }
    req.send().await.unwrap_or_else(|e| panic!("send: {e}"))
}

/// `GET /metrics` of `gw`, as text.
pub async fn metrics(gw: &Gateway) -> String {
    client()
        .get(gw.at("/metrics"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("metrics: {e}"))
        .text()
        .await
        .unwrap_or_else(|e| panic!("metrics text: {e}"))
}

/// The value of the unlabelled gauge or counter `name` in `gw`'s metrics once
/// it is at least `at_least` (polled for up to two seconds: some are set
/// just after an answer ends); the last value read otherwise.
pub async fn metric_at_least(gw: &Gateway, name: &str, at_least: f64) -> f64 {
    let mut value = 0.0;
    for _ in 0..100 {
        let text = metrics(gw).await;
        value = text
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0);
        if value >= at_least {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    value
}

#[cfg(test)]
mod tests {
    use super::load::{BODY, body_of};

    #[test]
    fn a_lengthened_request_is_as_long_as_asked_and_the_same_request() {
        assert_eq!(body_of(0), BODY);
        assert_eq!(body_of(BODY.len()), BODY);
        for bytes in [1024, 4096] {
            let body = body_of(bytes);
            assert_eq!(body.len(), bytes);
            let v: serde_json::Value = serde_json::from_str(&body).expect("JSON");
            let short: serde_json::Value = serde_json::from_str(BODY).expect("JSON");
            let user = v["messages"][1]["content"].as_str().expect("text");
            assert!(user.starts_with(short["messages"][1]["content"].as_str().expect("text")));
            assert_eq!(v["max_tokens"], short["max_tokens"]);
            assert_eq!(v["messages"][0], short["messages"][0]);
        }
    }
}
