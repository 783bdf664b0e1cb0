//! The binary itself: health, version, config check, graceful shutdown, logs.

use std::process::Command;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};
use sluice_tests::{Gateway, MockUpstream, TempDir, client, config_with_mock, gateway, mock};

#[tokio::test]
async fn health_answers_with_a_small_json_status() {
    let gw = Gateway::start("");
    let res = client().get(gw.at("/health")).send().await.expect("send");
    assert_eq!(res.status(), 200);
    let json: Value = res.json().await.expect("json");
    assert_eq!(json["status"], "ok");
    assert_eq!(json["version"], env!("CARGO_PKG_VERSION"));
    assert!(json["uptime_s"].is_u64());
}

#[test]
fn version_is_printed() {
    let out = Command::new(gateway::binary())
        .arg("--version")
        .output()
        .expect("run");
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("sluice {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn config_check_prints_every_problem_with_its_path() {
    let dir = TempDir::new();
    let good = dir.path.join("good.toml");
    std::fs::write(
        &good,
        "[server]\nport = 9999\n[configs.a]\nprovider = \"openai\"\n",
    )
    .expect("write");
    let out = Command::new(gateway::binary())
        .args(["config", "check"])
        .arg(&good)
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok"));

    let bad = dir.path.join("bad.toml");
    std::fs::write(
        &bad,
        concat!(
            "[server]\nport = \"x\"\nspeed = 1\n[configs.a]\nprovider = \"nope\"\n[configs.b]\nstrategy = { mode = \"fallback\" }\n",
            "[configs.c]\nstrategy = { mode = \"conditional\", conditions = [{ query = { \"metadata.x\" = { \"$gtt\" = 1 } }, then = \"t\" }] }\n",
            "targets = [{ name = \"t\", provider = \"openai\", retry = { attempts = 11 } }]\n",
            "[routing.circuit_breaker]\nerror_rate = 2\n",
        ),
    )
    .expect("write");
    let out = Command::new(gateway::binary())
        .args(["config", "check"])
        .arg(&bad)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "server.port: expected an integer",
        "server.speed: unknown field",
        "configs.a.provider: unknown provider `nope`",
        "configs.b.targets: a strategy needs a non-empty `targets` array",
        "configs.c.strategy.conditions[0].query.\"metadata.x\".$gtt: unknown operator",
        "configs.c.targets[0].retry.attempts: expected an integer from 0 to 10",
        "routing.circuit_breaker.error_rate: expected a fraction",
        "7 problem(s)",
    ] {
        assert!(text.contains(needle), "missing `{needle}` in:\n{text}");
    }
}

#[test]
fn serve_refuses_an_invalid_config() {
    let dir = TempDir::new();
    let bad = dir.path.join("bad.toml");
    std::fs::write(&bad, "[log]\nformat = \"xml\"\n").expect("write");
    let out = Command::new(gateway::binary())
        .args(["serve", "--port", "0", "--config"])
        .arg(&bad)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("log.format"));
}

#[tokio::test]
async fn sigterm_lets_an_in_flight_stream_finish_then_exits_zero() {
    let mock = MockUpstream::start().await.expect("mock");
    let mut gw = Gateway::start(&config_with_mock(
        &mock,
        "[server]\nshutdown_grace_ms = 10000\n",
    ));
    let res = client()
        .post(gw.at("/v1/chat/completions"))
        .header("x-portkey-provider", "mock")
        .json(&json!({"model": "fault:slow", "stream": true, "messages": []}))
        .send()
        .await
        .expect("send");
    let mut body = res.bytes_stream();
    let mut text =
        String::from_utf8_lossy(&body.next().await.expect("first").expect("chunk")).into_owned();
    gw.terminate();
    // New connections are refused once shutdown has begun.
    let mut refused = false;
    for _ in 0..50 {
        let fresh = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("client");
        if fresh.get(gw.at("/health")).send().await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(refused, "the listener must close on SIGTERM");
    while let Some(chunk) = body.next().await {
        text.push_str(&String::from_utf8_lossy(
            &chunk.expect("the stream must not break"),
        ));
    }
    assert_eq!(text, mock::stream_events("fault:slow", 5).concat());
    let status = gw.wait(Duration::from_secs(10)).expect("exited");
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn the_grace_period_bounds_shutdown() {
    let mock = MockUpstream::start().await.expect("mock");
    let mut gw = Gateway::start(&config_with_mock(
        &mock,
        "[server]\nshutdown_grace_ms = 300\n",
    ));
    let res = client()
        .post(gw.at("/v1/chat/completions"))
        .header("x-portkey-provider", "mock")
        .json(&json!({"model": "fault:endless", "stream": true, "messages": []}))
        .send()
        .await
        .expect("send");
    let mut body = res.bytes_stream();
    body.next().await.expect("first").expect("chunk");
    gw.terminate();
    let status = gw
        .wait(Duration::from_secs(10))
        .expect("exited within the grace period");
    assert_eq!(status.code(), Some(0));
    assert!(gw.logs().contains("shutdown grace passed"), "{}", gw.logs());
    // The endless stream ends when the process does.
    let rest = tokio::time::timeout(Duration::from_secs(10), async {
        while body.next().await.is_some() {}
    })
    .await;
    assert!(rest.is_ok());
}

#[tokio::test]
async fn secrets_never_reach_the_logs_even_at_trace_level() {
    let mock = MockUpstream::start().await.expect("mock");
    let gw = Gateway::start_with(&config_with_mock(&mock, ""), &[("SLUICE_LOG", "trace")]);
    let secret_header = "sk-header-SECRET-1234567890";
    let secret_config = "sk-config-SECRET-0987654321";
    for model in ["m", "fault:status=401", "fault:html=500", "fault:garbage"] {
        client()
            .post(gw.at("/v1/chat/completions"))
            .header("x-portkey-provider", "mock")
            .header("authorization", format!("Bearer {secret_header}"))
            .json(&json!({"model": model, "messages": []}))
            .send()
            .await
            .expect("send");
    }
    let config = json!({"provider": "openai-compatible", "api_key": secret_config, "custom_host": "http://127.0.0.1:1/v1"});
    let res = client()
        .post(gw.at("/v1/chat/completions?key=x"))
        .header("x-portkey-config", config.to_string())
        .json(&json!({"model": "m"}))
        .send()
        .await
        .expect("send");
    assert_eq!(res.status(), 502);
    let body = res.text().await.expect("body");
    assert!(!body.contains(secret_config));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let logs = gw.logs();
    assert!(logs.contains("response started"), "logging works: {logs}");
    assert!(!logs.contains(secret_header), "provider key in logs");
    assert!(!logs.contains(secret_config), "config key in logs");
    assert!(
        !logs.to_ascii_lowercase().contains("authorization: bearer"),
        "auth header in logs"
    );
}

#[tokio::test]
async fn json_logs_carry_the_request_id_and_provider() {
    let mock = MockUpstream::start().await.expect("mock");
    let gw = Gateway::start_with(&config_with_mock(&mock, "[log]\nformat = \"json\"\n"), &[]);
    client()
        .post(gw.at("/v1/chat/completions"))
        .header("x-portkey-provider", "mock")
        .header("x-portkey-trace-id", "req-json-1")
        .json(&json!({"model": "gpt-json", "messages": []}))
        .send()
        .await
        .expect("send");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let logs = gw.logs();
    let line = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["message"] == "response started")
        .unwrap_or_else(|| panic!("no JSON access line in:\n{logs}"));
    assert_eq!(line["span"]["request_id"], "req-json-1", "{line}");
    assert_eq!(line["span"]["gen_ai.provider.name"], "mock", "{line}");
    assert_eq!(line["span"]["gen_ai.request.model"], "gpt-json", "{line}");
    assert_eq!(line["status"], 200);
}

#[tokio::test]
async fn every_worker_serves_its_share_of_connections() {
    let mock = MockUpstream::start().await.expect("mock");
    let gw = Gateway::start(&config_with_mock(&mock, "[server]\nworkers = 3\n"));
    for i in 0..24 {
        // A fresh client per request: a new connection, which the kernel may
        // hand to any of the three listening sockets.
        let fresh = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("client");
        let res = fresh
            .post(gw.at("/v1/chat/completions"))
            .header("x-portkey-provider", "mock")
            .json(&json!({"model": format!("m{i}"), "messages": []}))
            .send()
            .await
            .expect("send");
        assert_eq!(res.status(), 200);
    }
    assert_eq!(mock.received().len(), 24);
    assert!(gw.logs().contains("workers=3"), "{}", gw.logs());
}
