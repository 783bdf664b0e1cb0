//! Usage and cost end to end: every proxied request is logged with its key,
//! provider, model, status, timings, tokens (from JSON answers and streams,
//! asked for when the client did not), cost and metadata; `/admin/logs`
//! and `/admin/usage` read the log (admin and viewer keys); tokens per
//! minute and budgets refuse before any upstream call; spend and records
//! survive a graceful restart.

use std::time::Duration;

use serde_json::{Value, json};
use sluice_tests::{Gateway, MockUpstream, TempDir, admin, cli_key, client, config_with_mock};

/// A config with auth on, its state in `dir`, and `extra`; the mock twice:
/// as `mock`, and as `mock-usage`, which takes `stream_options`.
fn config(mock: &MockUpstream, dir: &TempDir, extra: &str) -> (String, std::path::PathBuf) {
    let config = config_with_mock(
        mock,
        &format!(
            "[auth]\nrequired = true\n[state]\npath = \"{}\"\n{extra}\n\
             [[providers]]\nslug = \"mock-usage\"\nbase_url = \"{}\"\nstream_usage = true\n",
            dir.path.join("state.db").display(),
            mock.url("/v1"),
        ),
    );
    let file = dir.path.join("sluice.toml");
    std::fs::write(&file, &config).expect("config");
    (config, file)
}

async fn chat(
    gw: &Gateway,
    key: &str,
    provider: &str,
    body: Value,
    metadata: Option<Value>,
) -> reqwest::Response {
    let mut req = client()
        .post(gw.at("/v1/chat/completions"))
        .header("x-portkey-api-key", key)
        .header("x-portkey-provider", provider)
        .json(&body);
    if let Some(m) = metadata {
        req = req.header("x-portkey-metadata", m.to_string());
    }
    req.send().await.expect("send")
}

fn hello(stream: Option<Value>) -> Value {
    let mut body = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
    if let Some(s) = stream {
        body["stream"] = json!(true);
        if !s.is_null() {
            body["stream_options"] = s;
        }
    }
    body
}

/// The log's records once it holds `n` (records are written in the
/// background; waits up to 10 s).
async fn records(gw: &Gateway, key: &str, n: usize) -> Vec<Value> {
    for _ in 0..200 {
        let (s, page) = admin(gw, key, "GET", "/admin/logs?limit=100", None).await;
        assert_eq!(s, 200, "{page}");
        let data = page["data"].as_array().cloned().unwrap_or_default();
        if data.len() >= n {
            return data;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the log did not reach {n} records");
}

#[tokio::test]
async fn every_request_is_logged_with_tokens_cost_and_who_sent_it() {
    let dir = TempDir::new();
    let mock = MockUpstream::start().await.expect("mock");
    // A dollar a token, to read costs at a glance.
    let (config, file) = config(
        &mock,
        &dir,
        "[[pricing]]\nmodel = \"m\"\ninput = 1000000.0\noutput = 1000000.0\n",
    );
    let (_, admin_key) = cli_key(&file, "ops", &["--role", "admin"]);
    let (member_id, member) = cli_key(&file, "app", &[]);
    let (_, viewer) = cli_key(&file, "finance", &["--role", "viewer"]);
    let gw = Gateway::start(&config);

    let res = chat(
        &gw,
        &member,
        "mock",
        hello(None),
        Some(json!({"user": "alice"})),
    )
    .await;
    assert_eq!(res.status(), 200);
    let trace_id = res.headers()["x-portkey-trace-id"]
        .to_str()
        .expect("trace id")
        .to_owned();
    res.bytes().await.expect("body");

    // A stream whose client did not ask for usage: the gateway asks, counts,
    // and takes the usage chunk out again.
    let res = chat(&gw, &member, "mock-usage", hello(Some(Value::Null)), None).await;
    let (chunks, text) = sluice_tests::openai_stream(res).await;
    assert_eq!(text, "tok1 tok2 tok3 ");
    assert!(
        chunks.iter().all(|c| c.get("usage").is_none()),
        "{chunks:?}"
    );
    let asked_upstream = mock
        .received()
        .last()
        .map(|r| r.json()["stream_options"].clone());
    assert_eq!(asked_upstream, Some(json!({"include_usage": true})));

    // A client that asked gets its usage chunk.
    let res = chat(
        &gw,
        &member,
        "mock-usage",
        hello(Some(json!({"include_usage": true}))),
        None,
    )
    .await;
    let (chunks, _) = sluice_tests::openai_stream(res).await;
    assert_eq!(
        chunks.last().map(|c| c["usage"]["total_tokens"].clone()),
        Some(json!(8))
    );

    let res = client()
        .post(gw.at("/v1/chat/completions"))
        .header("x-portkey-api-key", &member)
        .header("x-portkey-provider", "mock")
        .body("{not json")
        .send()
        .await
        .expect("send");
    assert_eq!(res.status(), 400);

    let log = records(&gw, &admin_key, 4).await;
    let (bad, asked, hidden, plain) = (&log[0], &log[1], &log[2], &log[3]);
    assert_eq!(plain["trace_id"], trace_id.as_str());
    for (field, want) in [
        ("key_id", json!(member_id)),
        ("provider", json!("mock")),
        ("model", json!("m")),
        ("route", json!("/v1/chat/completions")),
        ("status", json!(200)),
        ("input_tokens", json!(5)),
        ("output_tokens", json!(3)),
        ("cost", json!(8.0)),
        ("retries", json!(0)),
        ("stream", json!(false)),
        ("metadata", json!({"user": "alice"})),
        ("request_body", Value::Null),
    ] {
        assert_eq!(plain[field], want, "{field}: {plain}");
    }
    assert!(
        plain["ttft_ms"].is_u64() && plain["latency_ms"].is_u64(),
        "{plain}"
    );
    for streamed in [hidden, asked] {
        assert_eq!(
            (
                &streamed["stream"],
                &streamed["provider"],
                &streamed["output_tokens"]
            ),
            (&json!(true), &json!("mock-usage"), &json!(3)),
            "{streamed}"
        );
    }
    assert_eq!(
        (&bad["status"], &bad["input_tokens"]),
        (&json!(400), &Value::Null)
    );

    // Sums by key and by metadata value; the viewer may read them.
    let (s, usage) = admin(&gw, &viewer, "GET", "/admin/usage?group_by=key", None).await;
    assert_eq!(s, 200, "{usage}");
    let row = &usage["data"][0];
    assert_eq!(
        (&row["key"], &row["requests"], &row["errors"], &row["cost"]),
        (&json!(member_id), &json!(4), &json!(1), &json!(24.0)),
        "{usage}"
    );
    let (_, by_user) = admin(
        &gw,
        &viewer,
        "GET",
        "/admin/usage?group_by=metadata.user&status=2xx",
        None,
    )
    .await;
    let users: Vec<(Value, Value)> = by_user["data"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| (r["metadata.user"].clone(), r["requests"].clone()))
        .collect();
    assert_eq!(
        users,
        vec![(Value::Null, json!(2)), (json!("alice"), json!(1))]
    );
    let (s, one) = admin(
        &gw,
        &viewer,
        "GET",
        &format!("/admin/logs?trace_id={trace_id}"),
        None,
    )
    .await;
    assert_eq!((s, one["data"].as_array().map(Vec::len)), (200, Some(1)));

    // Roles: a viewer reads usage and logs only; a member neither.
    let (s, _) = admin(&gw, &viewer, "GET", "/admin/keys", None).await;
    assert_eq!(s, 403);
    let (s, body) = admin(&gw, &member, "GET", "/admin/logs", None).await;
    assert_eq!((s, &body["error"]["code"]), (403, &json!("forbidden")));
    // Bad parameters are the client's error, in OpenAI's shape.
    for bad in [
        "/admin/usage?group_by=password",
        "/admin/logs?limit=5000",
        "/admin/logs?status=teapot",
        "/admin/usage?since=yesterday",
    ] {
        let (s, body) = admin(&gw, &admin_key, "GET", bad, None).await;
        assert_eq!(s, 400, "{bad}: {body}");
        assert_eq!(body["error"]["type"], "invalid_request_error", "{bad}");
    }
}

#[tokio::test]
async fn tokens_per_minute_and_budgets_refuse_before_the_upstream() {
    let dir = TempDir::new();
    let mock = MockUpstream::start().await.expect("mock");
    // 10 cents a token: 80 cents a request (5 in, 3 out).
    let (config, file) = config(
        &mock,
        &dir,
        "[[pricing]]\nmodel = \"m\"\ninput = 100000.0\noutput = 100000.0\n\
         [[rate_limits]]\nscope = \"metadata.user\"\ntpm = 10\n\
         [[budgets]]\nscope = \"metadata.team\"\nname = \"red\"\nusd = 2.0\nperiod = \"day\"\n",
    );
    let (_, member) = cli_key(&file, "app", &[]);
    let (_, capped) = cli_key(
        &file,
        "capped",
        &["--budget-usd", "1", "--budget-period", "day"],
    );
    let mut gw = Gateway::start(&config);

    // Tokens: 8 a request against 10 a minute. The second request is let
    // through (2 left), the third is refused. Windows are whole minutes:
    // start early in one.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    if now % 60 > 50 {
        tokio::time::sleep(Duration::from_secs(61 - now % 60)).await;
    }
    let alice = Some(json!({"user": "alice"}));
    for remaining in ["10", "2"] {
        let res = chat(&gw, &member, "mock", hello(None), alice.clone()).await;
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["x-ratelimit-limit-tokens"], "10");
        assert_eq!(res.headers()["x-ratelimit-remaining-tokens"], remaining);
        res.bytes().await.expect("body");
    }
    let sent = mock.received().len();
    let res = chat(&gw, &member, "mock", hello(None), alice).await;
    assert_eq!(res.status(), 429);
    assert!(res.headers().contains_key("retry-after"));
    let body: Value = res.json().await.expect("json");
    assert_eq!(
        (&body["error"]["type"], &body["error"]["code"]),
        (&json!("tokens"), &json!("rate_limit_exceeded")),
        "{body}"
    );
    assert_eq!(mock.received().len(), sent, "refused before the upstream");

    // Budgets: team red has $2 a day, so three requests ($2.40) and then
    // 412; team blue has no budget. A key's own budget ($1) likewise.
    let team = |t: &str, u: usize| Some(json!({"team": t, "user": format!("u{u}")}));
    for i in 0..3 {
        let res = chat(&gw, &member, "mock", hello(None), team("red", i)).await;
        assert_eq!(res.status(), 200, "request {i}");
        res.bytes().await.expect("body");
    }
    let refused = |res: reqwest::Response| async move {
        assert_eq!(res.status(), 412);
        let body: Value = res.json().await.expect("json");
        assert_eq!(body["error"]["code"], "budget_exceeded", "{body}");
        body["error"]["message"].as_str().unwrap_or("").to_owned()
    };
    let message = refused(chat(&gw, &member, "mock", hello(None), team("red", 9)).await).await;
    assert!(message.contains("metadata.team:red"), "{message}");
    let res = chat(&gw, &member, "mock", hello(None), team("blue", 10)).await;
    assert_eq!(res.status(), 200);
    for _ in 0..2 {
        let res = chat(&gw, &capped, "mock", hello(None), None).await;
        assert_eq!(res.status(), 200);
        res.bytes().await.expect("body");
    }
    refused(chat(&gw, &capped, "mock", hello(None), None).await).await;
    assert_eq!(mock.received().len(), sent + 6);

    // What was spent is kept: after a restart, still refused.
    gw.terminate();
    assert!(
        gw.wait(Duration::from_secs(30))
            .is_some_and(|s| s.success())
    );
    let gw = Gateway::start(&config);
    refused(chat(&gw, &member, "mock", hello(None), team("red", 11)).await).await;
    refused(chat(&gw, &capped, "mock", hello(None), None).await).await;
}

#[tokio::test]
async fn records_survive_a_graceful_shutdown_and_bodies_lose_their_secrets() {
    let dir = TempDir::new();
    let mock = MockUpstream::start().await.expect("mock");
    let (config, file) = config(&mock, &dir, "[usage]\nlog_bodies = true\n");
    let (_, admin_key) = cli_key(&file, "ops", &["--role", "admin"]);
    let mut gw = Gateway::start(&config);
    let secret = "sk-proj-0123456789abcdefghijklmnop";
    let body = json!({"model": "m", "api_key": "hunter2",
        "messages": [{"role": "user", "content": format!("my key is {secret}")}]});
    let requests = (0..40).map(|_| chat(&gw, &admin_key, "mock", body.clone(), None));
    for res in futures_util::future::join_all(requests).await {
        assert_eq!(res.status(), 200);
        res.bytes().await.expect("body");
    }
    // Straight away: the records may still be queued.
    gw.terminate();
    assert!(
        gw.wait(Duration::from_secs(30))
            .is_some_and(|s| s.success())
    );
    assert!(gw.logs().contains("records_written=40"), "{}", gw.logs());

    let gw = Gateway::start(&config);
    let (_, usage) = admin(&gw, &admin_key, "GET", "/admin/usage", None).await;
    assert_eq!(usage["data"][0]["requests"], 40, "{usage}");
    let log = records(&gw, &admin_key, 40).await;
    let kept = log[0]["request_body"].as_str().expect("the body is kept");
    assert!(kept.contains("my key is [REDACTED]"), "{kept}");
    assert!(
        !kept.contains(secret) && !kept.contains("hunter2"),
        "{kept}"
    );
    let answer = log[0]["response_body"]
        .as_str()
        .expect("the answer is kept");
    assert!(answer.contains("Hello from mock"), "{answer}");
}

#[tokio::test]
async fn anthropic_streams_are_counted_in_either_client_format() {
    let dir = TempDir::new();
    let mock = MockUpstream::start().await.expect("mock");
    let (config, file) = config(&mock, &dir, "");
    let (_, key) = cli_key(&file, "ops", &["--role", "admin"]);
    let gw = Gateway::start(&config);
    let send = |path: &'static str, body: Value| {
        client()
            .post(gw.at(path))
            .header("x-portkey-api-key", &key)
            .header("x-portkey-provider", "anthropic")
            .header("x-portkey-custom-host", mock.url("/v1"))
            .header("authorization", "Bearer sk-ant-e2e")
            .json(&body)
            .send()
    };
    // Anthropic's own format, passed through: usage in message_start and
    // message_delta.
    let res = send(
        "/v1/messages",
        json!({"model": "claude-x", "max_tokens": 10, "stream": true,
               "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await
    .expect("send");
    let (_, text) = sluice_tests::anthropic_stream(res).await;
    assert_eq!(text, "Hello Claude");
    // OpenAI's format from the adapter, usage not asked for: counted, hidden.
    let res = send(
        "/v1/chat/completions",
        json!({"model": "claude-x", "stream": true,
               "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await
    .expect("send");
    let (chunks, text) = sluice_tests::openai_stream(res).await;
    assert_eq!(text, "Hello Claude");
    assert!(
        chunks.iter().all(|c| c.get("usage").is_none()),
        "{chunks:?}"
    );

    let log = records(&gw, &key, 2).await;
    for (record, route) in log.iter().zip(["/v1/chat/completions", "/v1/messages"]) {
        assert_eq!(record["route"], route);
        assert_eq!(
            (&record["input_tokens"], &record["output_tokens"]),
            (&json!(12), &json!(2)),
            "{record}"
        );
    }
}
