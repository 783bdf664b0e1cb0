//! Every error a client or an upstream can cause: OpenAI's shape, the right status,
//! nothing sent upstream when the request itself is wrong.

use serde_json::{Value, json};
use sluice_tests::{Gateway, client, gateway_with_mock};

/// Sends a chat request and returns (status, error object).
async fn chat(
    gw: &Gateway,
    headers: &[(&str, &str)],
    body: impl Into<reqwest::Body>,
) -> (u16, Value) {
    let mut req = client()
        .post(gw.at("/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let res = req.send().await.expect("send");
    let status = res.status().as_u16();
    let json: Value = res.json().await.expect("an OpenAI-shaped JSON body");
    (status, json)
}

fn assert_shape(json: &Value) {
    let e = &json["error"];
    assert!(e["message"].is_string(), "{json}");
    assert!(e["type"].is_string(), "{json}");
    assert!(
        e.get("param").is_some() && e.get("code").is_some(),
        "{json}"
    );
}

const MOCK: &[(&str, &str)] = &[("x-portkey-provider", "mock")];

#[tokio::test]
async fn request_errors_are_400s_and_never_reach_the_upstream() {
    let (mock, gw) = gateway_with_mock("").await;
    // (headers, body, expected code, a phrase the message must contain)
    type Case<'a> = (Vec<(&'a str, &'a str)>, &'a str, &'a str, &'a str);
    let cases: Vec<Case<'_>> = vec![
        (
            MOCK.to_vec(),
            "{\"model\": ",
            "malformed_body",
            "invalid JSON",
        ),
        (
            MOCK.to_vec(),
            "[1, 2]",
            "malformed_body",
            "expected a JSON object, found an array",
        ),
        (
            MOCK.to_vec(),
            "[]",
            "malformed_body",
            "expected a JSON object, found an array",
        ),
        (MOCK.to_vec(), "", "malformed_body", "empty"),
        (vec![], "{}", "missing_provider", "x-portkey-provider"),
        (
            vec![("x-portkey-provider", "no-such-ai")],
            "{}",
            "unknown_provider",
            "`no-such-ai`",
        ),
        (
            vec![(
                "x-portkey-config",
                r#"{"targets":[{"provider":"mock","weight":-2}],"strategy":{"mode":"loadbalance"},"retry":{"attempts":"x"}}"#,
            )],
            "{}",
            "invalid_config",
            "targets[0].weight",
        ),
        (
            vec![("x-portkey-config", "not-a-config")],
            "{}",
            "invalid_request",
            "not-a-config",
        ),
        (
            vec![
                ("x-portkey-provider", "mock"),
                ("x-portkey-metadata", "[1]"),
            ],
            "{}",
            "invalid_request",
            "x-portkey-metadata",
        ),
        (
            vec![
                ("x-portkey-provider", "mock"),
                ("x-portkey-request-timeout", "-5"),
            ],
            "{}",
            "invalid_request",
            "x-portkey-request-timeout",
        ),
        (
            vec![
                ("x-portkey-provider", "azure-openai"),
                ("authorization", "Bearer k"),
            ],
            "{}",
            "missing_provider_setting",
            "azure-resource-name",
        ),
        (
            vec![("x-portkey-provider", "openai-compatible")],
            "{}",
            "missing_provider_setting",
            "custom host",
        ),
    ];
    for (headers, body, code, needle) in cases {
        let (status, json) = chat(&gw, &headers, body).await;
        assert_eq!(status, 400, "{headers:?} {body}: {json}");
        assert_shape(&json);
        assert_eq!(json["error"]["code"], code, "{json}");
        let message = json["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(needle), "`{message}` lacks `{needle}`");
    }
    let (_, json) = chat(
        &gw,
        &[(
            "x-portkey-config",
            r#"{"provider":"mock","retry":{"attempts":99}}"#,
        )],
        "{}",
    )
    .await;
    assert_eq!(
        json["error"]["param"], "retry.attempts",
        "the param names the path: {json}"
    );
    assert!(mock.received().is_empty(), "nothing may reach the upstream");
}

#[tokio::test]
async fn unsupported_endpoints_name_the_provider() {
    let gw = Gateway::start("");
    let res = client()
        .post(gw.at("/v1/embeddings"))
        .header("x-portkey-provider", "perplexity-ai")
        .json(&json!({"input": "x"}))
        .send()
        .await
        .expect("send");
    assert_eq!(res.status(), 400);
    let json: Value = res.json().await.expect("json");
    assert_eq!(json["error"]["code"], "unsupported_endpoint");
    assert!(
        json["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("perplexity-ai")
    );
}

#[tokio::test]
async fn oversized_bodies_get_413_whether_declared_or_streamed() {
    let (mock, gw) = gateway_with_mock("[server]\nmax_body_bytes = 2048\n").await;
    let big = format!(
        r#"{{"model":"m","messages":[{{"role":"user","content":"{}"}}]}}"#,
        "x".repeat(4096)
    );
    let (status, json) = chat(&gw, MOCK, big.clone()).await;
    assert_eq!(status, 413, "{json}");
    assert_eq!(json["error"]["code"], "body_too_large");

    // Chunked: no content-length, so the limit is enforced while reading.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = big
        .into_bytes()
        .chunks(512)
        .map(|c| Ok(c.to_vec()))
        .collect();
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
    let (status, json) = chat(&gw, MOCK, body).await;
    assert_eq!(status, 413, "{json}");
    assert_shape(&json);
    assert!(mock.received().is_empty());

    let (status, _) = chat(&gw, MOCK, r#"{"model":"m","messages":[]}"#).await;
    assert_eq!(status, 200, "a body under the limit passes");
}

#[tokio::test]
async fn an_unreachable_upstream_is_a_502() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = closed.local_addr().expect("addr").port();
    drop(closed);
    let gw = Gateway::start(&format!(
        "[[providers]]\nslug = \"down\"\nbase_url = \"http://127.0.0.1:{port}/v1\"\n"
    ));
    let (status, json) = chat(&gw, &[("x-portkey-provider", "down")], r#"{"model":"m"}"#).await;
    assert_eq!(status, 502, "{json}");
    assert_eq!(json["error"]["code"], "upstream_unreachable");
    assert!(
        json["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("`down`")
    );
}

#[tokio::test]
async fn timeouts_are_408_for_the_callers_limit_and_504_for_the_servers() {
    let (_mock, gw) = gateway_with_mock("[upstream]\ntimeout_ms = 400\n").await;
    let (status, json) = chat(
        &gw,
        &[
            ("x-portkey-provider", "mock"),
            ("x-portkey-request-timeout", "150"),
        ],
        r#"{"model":"fault:delay=3000"}"#,
    )
    .await;
    assert_eq!(status, 408, "{json}");
    assert_eq!(json["error"]["code"], "request_timeout");
    assert_eq!(json["error"]["type"], "timeout_error");

    let (status, json) = chat(
        &gw,
        &[(
            "x-portkey-config",
            r#"{"provider":"mock","request_timeout":100}"#,
        )],
        r#"{"model":"fault:delay=3000"}"#,
    )
    .await;
    assert_eq!(status, 408, "config request_timeout: {json}");

    let (status, json) = chat(&gw, MOCK, r#"{"model":"fault:delay=3000"}"#).await;
    assert_eq!(status, 504, "{json}");
    assert_eq!(json["error"]["code"], "upstream_timeout");

    let (status, _) = chat(&gw, MOCK, r#"{"model":"fault:delay=10"}"#).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn upstream_errors_pass_through_and_garbage_is_a_502() {
    let (_mock, gw) = gateway_with_mock("").await;
    for code in [400u16, 401, 429, 500, 503] {
        let (status, json) = chat(&gw, MOCK, format!(r#"{{"model":"fault:status={code}"}}"#)).await;
        assert_eq!(status, code);
        assert_eq!(
            json["error"]["message"],
            format!("mock error {code}"),
            "the provider's body as it was"
        );
    }
    let (status, json) = chat(&gw, MOCK, r#"{"model":"fault:html=502"}"#).await;
    assert_eq!(status, 502);
    assert_eq!(json["error"]["code"], "upstream_error");
    assert!(
        json["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("502 Bad Gateway")
    );

    let (status, json) = chat(&gw, MOCK, r#"{"model":"fault:garbage"}"#).await;
    assert_eq!(status, 502, "{json}");
    assert_eq!(json["error"]["code"], "upstream_invalid_response");
}

#[tokio::test]
async fn custom_hosts_are_checked_against_ssrf() {
    let (mock, gw) = gateway_with_mock("").await;
    for host in [
        "http://10.0.0.1/v1",
        "http://169.254.169.254/latest",
        "http://[fd00:ec2::254]/",
        "http://metadata.google.internal/v1",
        "http://user:pass@127.0.0.1:1/v1",
        "file:///etc/passwd",
    ] {
        let (status, json) = chat(
            &gw,
            &[
                ("x-portkey-provider", "openai-compatible"),
                ("x-portkey-custom-host", host),
            ],
            r#"{"model":"m"}"#,
        )
        .await;
        assert_eq!(status, 400, "{host}: {json}");
        assert_eq!(
            json["error"]["code"], "custom_host_refused",
            "{host}: {json}"
        );
    }
    // Config custom hosts too, including a passthrough path.
    let config = json!({"provider": "openai-compatible", "custom_host": "http://192.168.0.10/v1"})
        .to_string();
    let res = client()
        .get(gw.at("/v1/files"))
        .header("x-portkey-config", config)
        .send()
        .await
        .expect("send");
    assert_eq!(res.status(), 400);
    assert!(mock.received().is_empty());
}

#[tokio::test]
async fn loopback_can_be_refused_and_names_are_checked_after_resolution() {
    let (mock, gw) = gateway_with_mock("[ssrf]\nallow_loopback = false\n").await;
    for host in [
        mock.url("/v1"),
        format!("http://localhost:{}/v1", mock.addr.port()),
    ] {
        let (status, json) = chat(
            &gw,
            &[
                ("x-portkey-provider", "openai-compatible"),
                ("x-portkey-custom-host", &host),
            ],
            r#"{"model":"m"}"#,
        )
        .await;
        assert_eq!(status, 400, "{host}: {json}");
        assert_eq!(json["error"]["code"], "custom_host_refused");
    }
    // The operator's own providers are trusted.
    let (status, _) = chat(&gw, MOCK, r#"{"model":"m"}"#).await;
    assert_eq!(status, 200);
    assert_eq!(mock.received().len(), 1);
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_in_openai_shape() {
    let gw = Gateway::start("");
    let res = client().get(gw.at("/nope")).send().await.expect("send");
    assert_eq!(res.status(), 404);
    let json: Value = res.json().await.expect("json");
    assert_eq!(json["error"]["code"], "not_found");

    let res = client()
        .get(gw.at("/v1/chat/completions"))
        .send()
        .await
        .expect("send");
    assert_eq!(res.status(), 405);
    let json: Value = res.json().await.expect("json");
    assert_eq!(json["error"]["code"], "method_not_allowed");
}

#[tokio::test]
async fn oversized_upstream_answers_are_refused_not_buffered() {
    let (_mock, gw) = gateway_with_mock("[upstream]\nmax_response_bytes = 100000\n").await;
    for (model, status) in [
        ("fault:big=50000", 200),
        ("fault:bigchunked=50000", 200),
        ("fault:big=200000", 502),
        ("fault:bigchunked=200000", 502),
    ] {
        let (got, json) = chat(&gw, MOCK, format!(r#"{{"model":"{model}"}}"#)).await;
        assert_eq!(got, status, "{model}: {}", json["error"]);
        if status == 200 {
            assert_eq!(
                json["pad"].as_str().map(str::len),
                Some(50000),
                "{model}: reassembled intact"
            );
        } else {
            assert_eq!(json["error"]["code"], "upstream_invalid_response");
            assert!(
                json["error"]["message"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("max_response_bytes")
            );
        }
    }
}
