//! Routing end to end: Portkey's strategy tree, retries, timeouts, streaming
//! fallback, idle timeouts, circuit breakers and named configs, through the real
//! binary against mock upstreams with injected faults.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{Value, json};
use sluice_tests::{Gateway, MockUpstream, client, config_with_mock, gateway_with_mock, header};

/// A target on the mock provider answering as `model` (a fault name, or a tag
/// that shows in the answer).
fn to(model: &str) -> Value {
    json!({"provider": "mock", "override_params": {"model": model}})
}

async fn chat(gw: &Gateway, config: &Value, body: Value) -> reqwest::Response {
    client()
        .post(gw.at("/v1/chat/completions"))
        .header("x-portkey-config", config.to_string())
        .json(&body)
        .send()
        .await
        .expect("send")
}

fn hi() -> Value {
    json!({"model": "client-model", "messages": [{"role": "user", "content": "hi"}]})
}

async fn model_of(res: reqwest::Response) -> String {
    let body: Value = res.json().await.expect("json");
    body["model"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn fallback_tries_targets_in_order_and_says_which_answered() {
    let (mock, gw) = gateway_with_mock("").await;
    let config = json!({"strategy": {"mode": "fallback"},
        "targets": [to("fault:status=500"), to("fault:html=502"), to("second-ok"), to("never")]});
    let res = chat(&gw, &config, hi()).await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        header(&res, "x-portkey-last-used-option-index"),
        "config.targets[2]"
    );
    assert_eq!(header(&res, "x-portkey-provider"), "mock");
    assert_eq!(header(&res, "x-portkey-retry-attempt-count"), "0");
    assert_eq!(model_of(res).await, "second-ok");
    assert_eq!(mock.count_model("never"), 0);

    // on_status_codes: a 500 not in the list is the answer, in OpenAI's shape.
    let config = json!({"strategy": {"mode": "fallback", "on_status_codes": [429]},
        "targets": [to("fault:status=500"), to("ok")]});
    let res = chat(&gw, &config, hi()).await;
    assert_eq!(res.status(), 500);
    assert_eq!(
        header(&res, "x-portkey-last-used-option-index"),
        "config.targets[0]"
    );
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["error"]["code"], "mock");

    // Every target fails: the last answer is returned.
    let config = json!({"strategy": {"mode": "fallback"},
        "targets": [to("fault:status=503"), to("fault:status=429")]});
    let res = chat(&gw, &config, hi()).await;
    assert_eq!(res.status(), 429);
    assert_eq!(
        header(&res, "x-portkey-last-used-option-index"),
        "config.targets[1]"
    );
}

#[tokio::test]
async fn an_unreachable_target_falls_back() {
    let (_mock, gw) = gateway_with_mock("").await;
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let config = json!({"strategy": {"mode": "fallback", "on_status_codes": [503]},
        "targets": [
            {"provider": "openai", "api_key": "sk-x", "custom_host": format!("http://127.0.0.1:{closed}/v1")},
            to("after-outage")]});
    let res = chat(&gw, &config, hi()).await;
    assert_eq!(res.status(), 200);
    assert_eq!(model_of(res).await, "after-outage");
}

#[tokio::test]
async fn loadbalance_spreads_by_weight() {
    let (mock, gw) = gateway_with_mock("").await;
    let config = json!({"strategy": {"mode": "loadbalance"},
        "targets": [{"provider": "mock", "weight": 1, "override_params": {"model": "lb-a"}},
                    {"provider": "mock", "weight": 1, "override_params": {"model": "lb-b"}},
                    {"provider": "mock", "weight": 0, "override_params": {"model": "lb-never"}}]});
    for _ in 0..40 {
        let res = chat(&gw, &config, hi()).await;
        assert_eq!(res.status(), 200);
        let path = header(&res, "x-portkey-last-used-option-index").to_owned();
        let model = model_of(res).await;
        let want = if model == "lb-a" {
            "config.targets[0]"
        } else {
            "config.targets[1]"
        };
        assert_eq!(path, want);
    }
    let (a, b) = (mock.count_model("lb-a"), mock.count_model("lb-b"));
    assert_eq!(a + b, 40);
    assert!(
        a >= 8 && b >= 8,
        "a {a}, b {b}: both weights 1 should see traffic"
    );
    assert_eq!(mock.count_model("lb-never"), 0);
}

#[tokio::test]
async fn conditional_routes_on_metadata_params_and_path_and_names_the_config_when_nothing_matches()
{
    let (_mock, gw) = gateway_with_mock(
        r#"[configs.tiers]
strategy = { mode = "conditional", conditions = [
  { query = { "metadata.tier" = { "$eq" = "pro" }, "params.max_tokens" = { "$gte" = 1000 } }, then = "pro" },
  { query = { "$or" = [{ "params.messages.0.content" = { "$regex" = "^urgent" } }, { "url.pathname" = { "$regex" = "embeddings" } }] }, then = "fast" },
] }
targets = [
  { name = "pro", provider = "mock", override_params = { model = "pro-model" } },
  { name = "fast", provider = "mock", override_params = { model = "fast-model" } },
]
"#,
    )
    .await;
    let send = |metadata: &'static str, body: Value| {
        let gw = &gw;
        async move {
            client()
                .post(gw.at("/v1/chat/completions"))
                .header("x-portkey-config", "tiers")
                .header("x-portkey-metadata", metadata)
                .json(&body)
                .send()
                .await
                .expect("send")
        }
    };
    let res = send(
        r#"{"tier":"pro"}"#,
        json!({"model": "m", "max_tokens": 2000, "messages": [{"role": "user", "content": "x"}]}),
    )
    .await;
    assert_eq!(
        header(&res, "x-portkey-last-used-option-index"),
        "config.targets[0]"
    );
    assert_eq!(model_of(res).await, "pro-model");
    let res = send(
        r#"{"tier":"free"}"#,
        json!({"model": "m", "messages": [{"role": "user", "content": "urgent: x"}]}),
    )
    .await;
    assert_eq!(model_of(res).await, "fast-model");
    // No match and no default: a 400 naming the config.
    let res = send(
        r#"{"tier":"free"}"#,
        json!({"model": "m", "messages": [{"role": "user", "content": "x"}]}),
    )
    .await;
    assert_eq!(res.status(), 400);
    let body: Value = res.json().await.expect("json");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("config `tiers`"), "{message}");
    assert_eq!(body["error"]["type"], "invalid_request_error");
}

#[tokio::test]
async fn nested_trees_inherit_settings_but_not_credentials() {
    let (mock, gw) = gateway_with_mock("").await;
    // The parent sets the host, overrides, headers to forward and a key; the
    // leaves are OpenAI targets that inherit the host, and one keeps its own key.
    let config = json!({
    "strategy": {"mode": "fallback"},
    "custom_host": mock.url("/v1"),
    "api_key": "sk-parent-never-sent",
    "forward_headers": ["x-team"],
    "override_params": {"model": "parent-model", "temperature": 0.5},
    "targets": [
        {"provider": "openai", "api_key": "sk-first", "override_params": {"model": "fault:status=503"}},
        {"strategy": {"mode": "loadbalance"}, "override_params": {"max_tokens": 7},
         "targets": [{"provider": "openai", "api_key": "sk-leaf"}]}
    ]});
    let res = client()
        .post(gw.at("/v1/chat/completions"))
        .header("x-portkey-config", config.to_string())
        .header("x-team", "blue")
        .header("authorization", "Bearer sk-client")
        .json(&hi())
        .send()
        .await
        .expect("send");
    assert_eq!(res.status(), 200);
    assert_eq!(
        header(&res, "x-portkey-last-used-option-index"),
        "config.targets[1].targets[0]"
    );
    assert_eq!(header(&res, "x-portkey-provider"), "openai");
    let got = mock.received();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].headers["authorization"], "Bearer sk-first");
    let last = &got[1];
    assert_eq!(last.headers["authorization"], "Bearer sk-leaf");
    assert_eq!(last.headers["x-team"], "blue");
    let body = last.json();
    assert_eq!(body["model"], "parent-model");
    assert_eq!(body["temperature"], 0.5);
    assert_eq!(body["max_tokens"], 7);
}

#[tokio::test]
async fn retries_recover_flaky_upstreams_and_report_their_count() {
    let (mock, gw) = gateway_with_mock("").await;
    let retry = json!({"attempts": 3, "backoff_base_ms": 5, "backoff_max_ms": 20});
    let config = json!({"provider": "mock", "retry": retry, "override_params": {"model": "fault:flaky=2:503:a"}});
    let res = chat(&gw, &config, hi()).await;
    assert_eq!(res.status(), 200);
    assert_eq!(header(&res, "x-portkey-retry-attempt-count"), "2");
    assert_eq!(mock.count_model("fault:flaky=2:503:a"), 3);

    // Attempts ran out: Portkey's -1.
    let config = json!({"provider": "mock", "retry": retry, "override_params": {"model": "fault:flaky=9:502:b"}});
    let res = chat(&gw, &config, hi()).await;
    assert_eq!(res.status(), 502);
    assert_eq!(header(&res, "x-portkey-retry-attempt-count"), "-1");
    assert_eq!(mock.count_model("fault:flaky=9:502:b"), 4);

    // Retry-After from a 429, when asked for.
    let config = json!({"provider": "mock", "override_params": {"model": "fault:flaky=1:429:c"},
        "retry": {"attempts": 1, "use_retry_after_header": true}});
    let res = chat(&gw, &config, hi()).await;
    assert_eq!(res.status(), 200);
    assert_eq!(header(&res, "x-portkey-retry-attempt-count"), "1");

    // The plain-header form: x-portkey-retry-count.
    let res = client()
        .post(gw.at("/v1/chat/completions"))
        .header("x-portkey-provider", "mock")
        .header("x-portkey-retry-count", "2")
        .json(&json!({"model": "fault:flaky=1:500:d", "messages": []}))
        .send()
        .await
        .expect("send");
    assert_eq!(res.status(), 200);
    assert_eq!(header(&res, "x-portkey-retry-attempt-count"), "1");
}

#[tokio::test]
async fn request_timeout_is_a_408_and_fallback_moves_on() {
    let (_mock, gw) = gateway_with_mock("").await;
    let config = json!({"provider": "mock", "request_timeout": 200, "override_params": {"model": "fault:delay=5000"}});
    let started = Instant::now();
    let res = chat(&gw, &config, hi()).await;
    assert_eq!(res.status(), 408);
    assert!(started.elapsed() < Duration::from_secs(4));
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["error"]["type"], "timeout_error");
    assert_eq!(body["error"]["code"], "request_timeout");

    let config = json!({"strategy": {"mode": "fallback", "on_status_codes": [500]}, "request_timeout": 200,
        "targets": [to("fault:delay=5000"), to("in-time")]});
    let res = chat(&gw, &config, hi()).await;
    assert_eq!(res.status(), 200);
    assert_eq!(model_of(res).await, "in-time");

    // The whole request's deadline, across retries.
    let config = json!({"provider": "mock", "request_timeout": 150, "total_timeout": 400,
        "retry": {"attempts": 10, "on_status_codes": [408], "backoff_base_ms": 1},
        "override_params": {"model": "fault:delay=5000"}});
    let started = Instant::now();
    let res = chat(&gw, &config, hi()).await;
    assert_eq!(res.status(), 408);
    assert!(started.elapsed() < Duration::from_secs(3));
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["error"]["code"], "total_timeout");
}

async fn stream_text(res: reqwest::Response) -> String {
    let mut out = String::new();
    let mut body = res.bytes_stream();
    while let Some(chunk) = body.next().await {
        match chunk {
            Ok(c) => out.push_str(&String::from_utf8_lossy(&c)),
            Err(_) => break,
        }
    }
    out
}

#[tokio::test]
async fn a_stream_that_fails_before_its_first_byte_falls_back() {
    let (_mock, gw) = gateway_with_mock("").await;
    let config = json!({"strategy": {"mode": "fallback"},
        "targets": [to("fault:cutfirst"), to("fault:status=503"), to("streamed")]});
    let body =
        json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    let res = chat(&gw, &config, body).await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        header(&res, "x-portkey-last-used-option-index"),
        "config.targets[2]"
    );
    let text = stream_text(res).await;
    assert_eq!(
        text,
        sluice_tests::mock::stream_events("streamed", 4).concat()
    );
}

#[tokio::test]
async fn a_stalled_stream_ends_with_an_error_event() {
    let (_mock, gw) = gateway_with_mock("").await;
    let config = json!({"provider": "mock", "stream_idle_timeout": 300, "override_params": {"model": "fault:stall"}});
    let body =
        json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    let started = Instant::now();
    let res = chat(&gw, &config, body).await;
    assert_eq!(res.status(), 200);
    let text = tokio::time::timeout(Duration::from_secs(10), stream_text(res))
        .await
        .expect("the stream ends instead of hanging");
    assert!(started.elapsed() < Duration::from_secs(5));
    let first = sluice_tests::mock::stream_events("fault:stall", 2).swap_remove(0);
    assert!(text.starts_with(&first), "{text}");
    let last = text
        .trim_end()
        .rsplit("data: ")
        .next()
        .unwrap_or_default()
        .to_owned();
    let event: Value = serde_json::from_str(&last).expect("an error event");
    assert_eq!(event["error"]["code"], "stream_idle_timeout");
}

#[tokio::test]
async fn a_failing_target_trips_its_breaker_and_is_skipped_until_the_cool_down() {
    let (mock, gw) = gateway_with_mock(
        "[routing.circuit_breaker]\nconsecutive_failures = 2\ncool_down_ms = 600000\n",
    )
    .await;
    let config = json!({"strategy": {"mode": "fallback"},
        "targets": [to("fault:status=500"), to("backup")]});
    for _ in 0..6 {
        let res = chat(&gw, &config, hi()).await;
        assert_eq!(res.status(), 200);
        assert_eq!(model_of(res).await, "backup");
    }
    assert_eq!(mock.count_model("fault:status=500"), 2, "skipped once open");
    let admin: Value = client()
        .get(gw.at("/admin/targets"))
        .send()
        .await
        .expect("admin")
        .json()
        .await
        .expect("json");
    let targets = admin["targets"].as_array().cloned().unwrap_or_default();
    let failing = targets
        .iter()
        .find(|t| t["target"] == "mock fault:status=500")
        .unwrap_or_else(|| panic!("{admin}"));
    assert_eq!(failing["circuit"], "open");
    assert_eq!(failing["times_opened"], 1);
    assert!(failing["retry_in_ms"].as_u64().is_some_and(|ms| ms > 0));
    let backup = targets.iter().find(|t| t["target"] == "mock backup");
    assert_eq!(backup.map(|t| t["circuit"].clone()), Some(json!("closed")));
    let metrics = sluice_tests::metrics(&gw).await;
    for line in [
        "sluice_circuit_state{target=\"mock fault:status=500\"} 2",
        "sluice_circuit_state{target=\"mock backup\"} 0",
        "sluice_circuit_opened_total{target=\"mock fault:status=500\"} 1",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "missing `{line}` in\n{metrics}"
        );
    }

    // Alone, an open target is a 503 with Retry-After, without calling it.
    let res = chat(&gw, &to("fault:status=500"), hi()).await;
    assert_eq!(res.status(), 503);
    assert!(
        header(&res, "retry-after")
            .parse::<u64>()
            .is_ok_and(|s| s > 0)
    );
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["error"]["code"], "circuit_open");
    assert_eq!(mock.count_model("fault:status=500"), 2);
}

/// Two upstreams behind a load balancer with fallbacks; one goes down in the
/// middle of the load. Every request still succeeds.
#[tokio::test]
async fn a_provider_outage_mid_load_loses_no_request() {
    let a = MockUpstream::start().await.expect("mock a");
    let b = MockUpstream::start().await.expect("mock b");
    let config = format!(
        "{}\n[[providers]]\nslug = \"b\"\nbase_url = \"{}\"\n",
        config_with_mock(
            &a,
            "[routing.circuit_breaker]\nconsecutive_failures = 3\ncool_down_ms = 600000\n"
        ),
        b.url("/v1")
    );
    let gw = Gateway::start(&config);
    let tree = json!({"strategy": {"mode": "loadbalance"}, "targets": [
        {"strategy": {"mode": "fallback"}, "targets": [{"provider": "mock"}, {"provider": "b"}]},
        {"strategy": {"mode": "fallback"}, "targets": [{"provider": "b"}, {"provider": "mock"}]}]});
    let total = 400;
    let ok = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (gw_url, tree, ok, sent, a) = (
            gw.url.clone(),
            tree.to_string(),
            ok.clone(),
            sent.clone(),
            a.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let http = client();
            loop {
                let n = sent.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if n >= total {
                    break;
                }
                if n == total / 2 {
                    a.set_down(true);
                }
                let res = http
                    .post(format!("{gw_url}/v1/chat/completions"))
                    .header("x-portkey-config", &tree)
                    .json(&hi())
                    .send()
                    .await;
                if res.is_ok_and(|r| r.status() == 200) {
                    ok.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    assert_eq!(ok.load(std::sync::atomic::Ordering::SeqCst), total);
    // The breaker opened: after the outage began, `a` saw only a few calls.
    let a_calls = a.received().len();
    assert!(a_calls < total / 2 + 40, "a was called {a_calls} times");
}

#[tokio::test]
async fn named_configs_and_the_default_config() {
    let (mock, gw) = gateway_with_mock(
        r#"default_config = "main"

[configs.main]
provider = "mock"
override_params = { model = "from-default" }

[configs.resilient]
strategy = { mode = "fallback" }
retry = { attempts = 1, backoff_base_ms = 1 }
targets = [
  { provider = "mock", override_params = { model = "fault:status=500" } },
  { provider = "mock", override_params = { model = "from-named" } },
]
"#,
    )
    .await;
    let res = client()
        .post(gw.at("/v1/chat/completions"))
        .json(&hi())
        .send()
        .await
        .expect("send");
    assert_eq!(model_of(res).await, "from-default");
    let res = client()
        .post(gw.at("/v1/chat/completions"))
        .header("x-portkey-config", "resilient")
        .json(&hi())
        .send()
        .await
        .expect("send");
    assert_eq!(
        header(&res, "x-portkey-last-used-option-index"),
        "config.targets[1]"
    );
    assert_eq!(model_of(res).await, "from-named");
    // The first target was retried once before the fallback.
    assert_eq!(mock.count_model("fault:status=500"), 2);
}

#[tokio::test]
async fn a_router_plugins_order_is_tried_as_a_fallback() {
    let (mock, gw) = gateway_with_mock("").await;
    let config = json!({
        "strategy": {"mode": "router", "router": "latency-router", "parameters": {"max_error_rate": 0.1}},
        "targets": [to("fault:status=500"), to("routed-second")]});
    for _ in 0..3 {
        let res = chat(&gw, &config, hi()).await;
        assert_eq!(res.status(), 200);
        assert_eq!(
            header(&res, "x-portkey-last-used-option-index"),
            "config.targets[1]"
        );
        assert_eq!(model_of(res).await, "routed-second");
    }
    // Untried first, then ordered by health: the failing target was tried once
    // and then ranked last (its error rate is over the router's limit).
    assert_eq!(mock.count_model("fault:status=500"), 1);
}

#[tokio::test]
async fn a_deny_guardrail_inherited_by_every_fallback_target_never_reaches_an_upstream() {
    let (mock, gw) = gateway_with_mock("").await;
    let config = json!({"strategy": {"mode": "fallback"},
        "input_guardrails": [{"deny": true, "blocklist": {"words": ["forbidden"]}}],
        "targets": [to("first"), to("second")]});
    let res = chat(
        &gw,
        &config,
        json!({"model": "m", "messages": [{"role": "user", "content": "a forbidden word"}]}),
    )
    .await;
    assert_eq!(res.status(), 446);
    assert_eq!(
        header(&res, "x-portkey-last-used-option-index"),
        "config.targets[1]"
    );
    assert!(mock.received().is_empty());
    // A target with its own (passing) hooks answers instead.
    let config = json!({"strategy": {"mode": "fallback"},
        "input_guardrails": [{"deny": true, "blocklist": {"words": ["forbidden"]}}],
        "targets": [to("first"), {"provider": "mock", "override_params": {"model": "lenient"},
                                  "input_guardrails": [{"deny": true, "blocklist": {"words": ["other"]}}]}]});
    let res = chat(
        &gw,
        &config,
        json!({"model": "m", "messages": [{"role": "user", "content": "a forbidden word"}]}),
    )
    .await;
    assert_eq!(res.status(), 200);
    assert_eq!(model_of(res).await, "lenient");
}
