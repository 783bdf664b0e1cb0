//! The plugin platform end to end: the real binary, real components (the
//! built-ins, the test fixtures from `plugins/fixtures/`), mock upstreams.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sluice_tests::{
    Gateway, MockUpstream, admin_plugins, chat_with_config, client, config_with_mock, fixtures,
};

async fn chat(gw: &Gateway, config: &Value, text: &str) -> reqwest::Response {
    chat_with_config(gw, config, text).await
}

async fn admin(gw: &Gateway) -> Value {
    admin_plugins(gw).await
}

fn plugin<'a>(admin: &'a Value, name: &str) -> Option<&'a Value> {
    admin["plugins"]
        .as_array()?
        .iter()
        .find(|p| p["name"] == name)
}

/// Polls the admin API until `pred` holds (bounded: 20 s).
async fn wait_for(gw: &Gateway, what: &str, pred: impl Fn(&Value) -> bool) -> Duration {
    let started = Instant::now();
    loop {
        let a = admin(gw).await;
        if pred(&a) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{what} did not happen; admin says {a}\nlogs:\n{}",
            gw.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Writes `bytes` as `dir/name` the recommended way: a temp name, then rename.
fn install(dir: &std::path::Path, name: &str, from: &str) {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::copy(from, &tmp).expect("copy");
    std::fs::rename(&tmp, dir.join(name)).expect("rename");
}

#[tokio::test]
async fn a_guardrail_plugin_denies_passes_flags_and_redacts() {
    let mock = MockUpstream::start().await.expect("mock");
    let gw = Gateway::start(&config_with_mock(&mock, ""));
    let deny = json!({"provider": "mock", "input_guardrails": [
        {"id": "no-x", "deny": true, "blocklist": {"words": ["project x"]}}
    ]});

    let res = chat(&gw, &deny, "hello").await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.expect("json");
    let hook = &body["hook_results"]["before_request_hooks"][0];
    assert_eq!(hook["id"], "no-x");
    assert_eq!(hook["verdict"], true);
    assert_eq!(hook["checks"][0]["id"], "blocklist");
    let upstream_calls = mock.received().len();

    let res = chat(&gw, &deny, "tell me about Project X").await;
    assert_eq!(res.status(), 446);
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["error"]["type"], "hooks_failed");
    let check = &body["hook_results"]["before_request_hooks"][0]["checks"][0];
    assert_eq!(check["verdict"], false);
    assert!(
        check["explanation"]
            .as_str()
            .is_some_and(|e| e.contains("project x")),
        "{check}"
    );
    assert_eq!(
        mock.received().len(),
        upstream_calls,
        "a denied request never leaves"
    );

    // Failed without deny: the request goes through, and the status says 246.
    let flag = json!({"provider": "mock", "input_guardrails": [{"blocklist": {"words": ["x"]}}]});
    let res = chat(&gw, &flag, "x marks the spot").await;
    assert_eq!(res.status(), 246);
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["choices"][0]["message"]["role"], "assistant");
    assert_eq!(
        body["hook_results"]["before_request_hooks"][0]["verdict"],
        false
    );

    // A rewrite reaches the provider.
    let redact = json!({"provider": "mock", "before_request_hooks": [{"type": "mutator", "id": "r",
        "checks": [{"id": "blocklist", "parameters": {"words": ["secret"], "redact": true}}]}]});
    let res = chat(&gw, &redact, "my secret is safe").await;
    assert_eq!(res.status(), 200);
    let sent = mock.last().expect("upstream").json();
    assert_eq!(sent["messages"][0]["content"], "my [REDACTED] is safe");

    // Output guardrails see the answer.
    let out = json!({"provider": "mock", "output_guardrails": [{"deny": true, "blocklist": {"words": ["mock"]}}]});
    let res = chat(&gw, &out, "hi").await;
    assert_eq!(res.status(), 446);
    let body: Value = res.json().await.expect("json");
    assert_eq!(
        body["hook_results"]["after_request_hooks"][0]["verdict"],
        false
    );

    // Bad parameters are a config error the plugin explains, not a crash.
    let bad = json!({"provider": "mock", "input_guardrails": [{"deny": true, "blocklist": {"words": []}}]});
    let res = chat(&gw, &bad, "hi").await;
    assert_eq!(res.status(), 446);
    let body: Value = res.json().await.expect("json");
    let error = body["hook_results"]["before_request_hooks"][0]["checks"][0]["error"]
        .as_str()
        .unwrap_or("");
    assert!(
        error.contains("blocklist") && error.contains("configuration"),
        "{error}"
    );
}

#[tokio::test]
async fn a_provider_plugin_serves_chat_streams_embeddings_and_errors() {
    let mock = MockUpstream::start().await.expect("mock");
    let gw = Gateway::start("");
    let target = json!({"provider": "ollama-native", "custom_host": mock.url("")});

    let res = chat(&gw, &target, "hi").await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-portkey-provider"], "ollama-native");
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "Hello from Ollama"
    );
    assert_eq!(body["usage"]["total_tokens"], 10);
    let sent = mock.last().expect("upstream");
    assert_eq!(sent.path, "/api/chat");
    assert_eq!(sent.json()["stream"], false);

    let res = client()
        .post(gw.at("/v1/chat/completions"))
        .header("x-portkey-config", target.to_string())
        .json(&json!({"model": "llama3", "stream": true, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .expect("send");
    assert_eq!(res.status(), 200);
    let (chunks, content) = sluice_tests::openai_stream(res).await;
    assert_eq!(content, "Hello from Ollama");
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(
        chunks
            .last()
            .map(|c| c["choices"][0]["finish_reason"].clone()),
        Some(json!("stop"))
    );

    let res = client()
        .post(gw.at("/v1/embeddings"))
        .header("x-portkey-config", target.to_string())
        .json(&json!({"model": "nomic", "input": ["a", "b"]}))
        .send()
        .await
        .expect("send");
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["data"][1]["embedding"], json!([0.5, -0.5]));

    // The upstream's own error shape becomes OpenAI's, with its status.
    let res = client()
        .post(gw.at("/v1/chat/completions"))
        .header("x-portkey-config", target.to_string())
        .json(
            &json!({"model": "fault:status=404", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .send()
        .await
        .expect("send");
    assert_eq!(res.status(), 404);
    let body: Value = res.json().await.expect("json");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("mock ollama error 404")),
        "{body}"
    );

    // An endpoint the plugin does not serve is a clear 400 before any upload.
    let res = client()
        .post(gw.at("/v1/images/generations"))
        .header("x-portkey-config", target.to_string())
        .json(&json!({"prompt": "a cat"}))
        .send()
        .await
        .expect("send");
    assert_eq!(res.status(), 400);
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["error"]["code"], "unsupported_endpoint");
}

#[tokio::test]
async fn a_router_plugin_sends_traffic_to_the_fastest_target() {
    let mock = MockUpstream::start().await.expect("mock");
    let gw = Gateway::start(&config_with_mock(&mock, ""));
    let config = json!({
        "strategy": {"mode": "router", "router": "latency-router", "parameters": {"max_error_rate": 0.5}},
        "targets": [
            {"provider": "mock", "override_params": {"model": "fault:delay=150"}},
            {"provider": "mock", "override_params": {"model": "fast"}}
        ]
    });
    let mut chosen = Vec::new();
    for _ in 0..6 {
        let res = chat(&gw, &config, "hi").await;
        assert_eq!(res.status(), 200);
        chosen.push(
            res.headers()["x-portkey-last-used-option-index"]
                .to_str()
                .unwrap_or("")
                .to_owned(),
        );
    }
    // Untried targets are measured first, then the fast one keeps the traffic.
    assert_eq!(chosen[..2], ["config.targets[0]", "config.targets[1]"]);
    assert!(
        chosen[2..].iter().all(|c| c == "config.targets[1]"),
        "{chosen:?}"
    );

    let missing = json!({"strategy": {"mode": "router", "router": "nope"}, "targets": [{"provider": "mock"}]});
    let res = chat(&gw, &missing, "hi").await;
    assert_eq!(res.status(), 400);
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["error"]["code"], "unknown_plugin");
}

#[tokio::test]
async fn plugins_are_hot_loaded_replaced_under_load_and_unloaded() {
    let mock = MockUpstream::start().await.expect("mock");
    let gw = Gateway::start(&config_with_mock(&mock, ""));
    let dir = gw.plugins_dir();

    // Drop in a new plugin: it is usable within moments.
    install(&dir, "words.wasm", fixtures::BLOCKLIST);
    let took = wait_for(&gw, "words loaded", |a| plugin(a, "words").is_some()).await;
    eprintln!("hot load took {took:?}");
    let config = json!({"provider": "mock", "input_guardrails": [{"deny": true, "words": {"words": ["forbidden"]}}]});
    assert_eq!(chat(&gw, &config, "forbidden fruit").await.status(), 446);

    // Replace it again and again while requests run: none may fail.
    let load = {
        let url = gw.at("/v1/chat/completions");
        let config = config.to_string();
        tokio::spawn(async move {
            let client = client();
            let mut statuses = Vec::new();
            let until = Instant::now() + Duration::from_millis(1500);
            while Instant::now() < until {
                let res = client
                    .post(&url)
                    .header("x-portkey-config", &config)
                    .json(&json!({"model": "m", "messages": [{"role": "user", "content": "fine"}]}))
                    .send()
                    .await;
                statuses.push(res.map(|r| r.status().as_u16()).unwrap_or(0));
            }
            statuses
        })
    };
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        install(&dir, "words.wasm", fixtures::BLOCKLIST);
    }
    let statuses = load.await.expect("load");
    assert!(statuses.len() > 10, "{}", statuses.len());
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let reloads = admin(&gw).await["reloads"].as_u64().unwrap_or(0);
    assert!(reloads >= 2, "{reloads}");

    // A corrupt file is reported and the loaded version stays.
    std::fs::write(dir.join(".bad"), b"\0asm\x0d\0\x01\0garbage").expect("write");
    std::fs::rename(dir.join(".bad"), dir.join("words.wasm")).expect("rename");
    wait_for(&gw, "corrupt file reported", |a| {
        a["files"]["words"]["status"] == "failed"
    })
    .await;
    assert_eq!(
        chat(&gw, &config, "forbidden").await.status(),
        446,
        "the previous version still serves"
    );

    // A provider plugin under a new name; deleting it makes configs that use
    // it answer a clear error.
    install(&dir, "my-ollama.wasm", fixtures::OLLAMA_NATIVE);
    wait_for(&gw, "my-ollama loaded", |a| {
        plugin(a, "my-ollama").is_some()
    })
    .await;
    let target = json!({"provider": "my-ollama", "custom_host": mock.url("")});
    assert_eq!(chat(&gw, &target, "hi").await.status(), 200);
    std::fs::remove_file(dir.join("my-ollama.wasm")).expect("rm");
    wait_for(&gw, "my-ollama unloaded", |a| {
        plugin(a, "my-ollama").is_none()
    })
    .await;
    let res = chat(&gw, &target, "hi").await;
    assert_eq!(res.status(), 400);
    let body: Value = res.json().await.expect("json");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("my-ollama")),
        "{body}"
    );
}

#[tokio::test]
async fn looping_exploding_and_panicking_plugins_are_contained() {
    let mock = MockUpstream::start().await.expect("mock");
    let config = config_with_mock(
        &mock,
        "[plugins.limits.chaos]\ncpu_budget_ms = 200\nmax_memory_mb = 16\n",
    );
    let gw = Gateway::start_with_plugins(&config, &[("chaos.wasm", fixtures::CHAOS)]);
    let hook = |mode: &str| {
        json!({"provider": "mock", "input_guardrails": [
            {"id": "chaos", "deny": true, "on_error": "fail-closed", "chaos": {"mode": mode}}
        ]})
    };

    // The epoch ticker slows down once no plugin code has run for half a
    // second: the looping call below must wake it to be stopped in time.
    tokio::time::sleep(Duration::from_millis(800)).await;
    // While one request spins in a loop, others on the same gateway are served.
    let looping = {
        let url = gw.at("/v1/chat/completions");
        let config = hook("loop").to_string();
        tokio::spawn(async move {
            let started = Instant::now();
            let res = client()
                .post(url)
                .header("x-portkey-config", config)
                .json(&json!({"model": "m", "messages": [{"role": "user", "content": "chaos"}]}))
                .send()
                .await
                .expect("send");
            (
                res.status().as_u16(),
                res.json::<Value>().await.expect("json"),
                started.elapsed(),
            )
        })
    };
    for _ in 0..5 {
        assert_eq!(chat(&gw, &hook("loop"), "calm").await.status(), 200);
    }
    let (status, body, took) = looping.await.expect("join");
    assert_eq!(status, 446);
    let error = body["hook_results"]["before_request_hooks"][0]["checks"][0]["error"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    assert!(
        error.contains("chaos") && error.contains("CPU budget of 200 ms"),
        "{error}"
    );
    assert!(
        took < Duration::from_secs(10),
        "the loop was stopped ({took:?})"
    );

    for (mode, expect) in [("oom", "16 MiB"), ("panic", "trap")] {
        let res = chat(&gw, &hook(mode), "chaos").await;
        assert_eq!(res.status(), 446, "{mode}");
        let body: Value = res.json().await.expect("json");
        let error = body["hook_results"]["before_request_hooks"][0]["checks"][0]["error"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        assert!(
            error.contains("plugin `chaos`") && error.contains(expect),
            "{mode}: {error}"
        );
    }
    // fail-open lets the request through when the plugin fails.
    let open = json!({"provider": "mock", "input_guardrails": [{"deny": true, "on_error": "fail-open", "chaos": {"mode": "panic"}}]});
    assert_eq!(chat(&gw, &open, "chaos").await.status(), 200);

    // The gateway and the plugin still work.
    assert_eq!(chat(&gw, &hook("loop"), "calm").await.status(), 200);
    let stats = &plugin(&admin(&gw).await, "chaos").expect("listed")["stats"].clone();
    assert!(stats["timeouts"].as_u64() >= Some(1), "{stats}");
    assert!(stats["traps"].as_u64() >= Some(2), "{stats}");
}

#[tokio::test]
async fn a_plugin_cannot_reach_files_the_environment_or_the_network() {
    let mock = MockUpstream::start().await.expect("mock");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let target = listener.local_addr().expect("addr");
    let gw = Gateway::start_with_plugins(
        &config_with_mock(&mock, ""),
        &[("probe.wasm", fixtures::WASI_PROBE)],
    );
    let a = admin(&gw).await;
    assert_eq!(
        plugin(&a, "probe").map(|p| p["wasi"].clone()),
        Some(json!(true))
    );
    assert_eq!(
        plugin(&a, "blocklist").map(|p| p["wasi"].clone()),
        Some(json!(false))
    );

    let secret_file = gw.plugins_dir().join("probe.wasm");
    let config = json!({"provider": "mock", "input_guardrails": [{"probe": {
        "connect": target.to_string(), "read": secret_file.display().to_string()
    }}]});
    let res = client()
        .post(gw.at("/v1/chat/completions"))
        .header("x-portkey-config", config.to_string())
        .json(&json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .expect("send");
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.expect("json");
    let data = &body["hook_results"]["before_request_hooks"][0]["checks"][0]["data"];
    for probe in ["root", "cwd", "read", "connect"] {
        let got = data[probe].as_str().unwrap_or("");
        assert!(got.starts_with("error"), "{probe}: {got} ({data})");
    }
    assert_eq!(data["env"], json!([]), "no environment variables");
    assert!(
        matches!(listener.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "nothing connected"
    );
}
