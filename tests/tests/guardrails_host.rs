//! The checks that need the plugin host (WIT 0.1.1): `jwt` reading a request
//! header and verifying against a JWK Set the gateway fetches and keeps,
//! `webhook` and `log` posting Portkey's hook context through the gateway's
//! client — under the custom-host SSRF policy, with the hook's `on_error`
//! deciding what an unreachable endpoint means.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use sluice_tests::mock::{jwks, sign_jwt};
use sluice_tests::{MockUpstream, chat_with_config, client, gateway_with_mock};

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A chat request with `config` and `headers`.
async fn chat(
    gw: &sluice_tests::Gateway,
    config: &Value,
    headers: &[(&str, String)],
    text: &str,
) -> (u16, Value) {
    let mut req = client()
        .post(gw.at("/v1/chat/completions"))
        .header("x-portkey-config", config.to_string());
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let res = req
        .json(&json!({"model": "m", "messages": [{"role": "user", "content": text}]}))
        .send()
        .await
        .expect("send");
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

/// The first check result of the first before-request hook.
fn first_check(body: &Value, stage: &str) -> Value {
    body["hook_results"][stage][0]["checks"][0].clone()
}

fn calls_to(mock: &MockUpstream, path: &str) -> Vec<sluice_tests::mock::Received> {
    mock.received()
        .into_iter()
        .filter(|r| r.path == path)
        .collect()
}

/// A loopback port nothing listens on.
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

fn jwt_config(parameters: Value) -> Value {
    json!({"provider": "mock", "api_key": "sk-upstream", "before_request_hooks": [
        {"id": "auth", "deny": true, "checks": [{"id": "default.jwt", "parameters": parameters}]}]})
}

#[tokio::test]
async fn jwt_tokens_are_verified_against_a_jwk_set_the_gateway_fetches_once() {
    let (mock, gw) = gateway_with_mock("").await;
    let config = jwt_config(json!({"jwksUri": mock.url("/jwks.json")}));
    let t = now();
    let valid = sign_jwt(&json!({"sub": "user-1", "iat": t, "exp": t + 600}));
    let bearer = |token: &str| vec![("authorization", format!("Bearer {token}"))];

    for _ in 0..3 {
        let (status, body) = chat(&gw, &config, &bearer(&valid), "hi").await;
        assert_eq!(status, 200, "{body}");
        let check = first_check(&body, "before_request_hooks");
        assert_eq!(check["verdict"], true, "{check}");
        assert_eq!(check["data"]["sub"], "user-1");
    }
    assert_eq!(
        calls_to(&mock, "/jwks.json").len(),
        1,
        "the host keeps the JWK Set for cacheMaxAge"
    );
    let upstream_calls = calls_to(&mock, "/v1/chat/completions");
    assert_eq!(upstream_calls.len(), 3);
    assert_eq!(
        upstream_calls[0].headers["authorization"], "Bearer sk-upstream",
        "the client's token is not the provider's key"
    );

    let expired = sign_jwt(&json!({"sub": "user-1", "iat": t - 7200, "exp": t - 3600}));
    let (h, p, _) = {
        let mut parts = valid.split('.');
        (
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default(),
            (),
        )
    };
    let other = sign_jwt(&json!({"sub": "admin", "iat": t, "exp": t + 600}));
    let forged = format!("{h}.{p}.{}", other.rsplit('.').next().unwrap_or_default());
    for (headers, why) in [
        (vec![], "no token in the `Authorization` header"),
        (bearer(&expired), "expired"),
        (bearer(&forged), "does not verify"),
        (bearer("not-a-jwt"), "not a JWT"),
    ] {
        let (status, body) = chat(&gw, &config, &headers, "hi").await;
        assert_eq!(status, 446, "{why}: {body}");
        let check = first_check(&body, "before_request_hooks");
        assert!(
            check["explanation"]
                .as_str()
                .unwrap_or_default()
                .contains(why),
            "{why}: {check}"
        );
    }
    assert_eq!(
        calls_to(&mock, "/v1/chat/completions").len(),
        3,
        "a denied request never reaches the upstream"
    );

    // Inline keys and another header; the gateway's own credential headers are
    // never given to a plugin, whatever its config names.
    let inline = jwt_config(json!({"jwks": jwks(), "headerKey": "x-user-jwt"}));
    let (status, body) = chat(&gw, &inline, &[("x-user-jwt", valid.clone())], "hi").await;
    assert_eq!(status, 200, "{body}");
    let withheld = jwt_config(json!({"jwks": jwks(), "headerKey": "x-portkey-api-key"}));
    let (status, body) = chat(
        &gw,
        &withheld,
        &[("x-portkey-api-key", valid.clone())],
        "hi",
    )
    .await;
    assert_eq!(status, 446, "{body}");

    // A JWK Set that cannot be fetched is a plugin error: a deny hook fails closed.
    let down =
        jwt_config(json!({"jwksUri": format!("http://127.0.0.1:{}/jwks.json", closed_port())}));
    let (status, body) = chat(&gw, &down, &bearer(&valid), "hi").await;
    assert_eq!(status, 446, "{body}");
    let check = first_check(&body, "before_request_hooks");
    assert!(
        check["error"]
            .as_str()
            .unwrap_or_default()
            .contains("cannot fetch the JWK Set"),
        "{check}"
    );
}

#[tokio::test]
async fn a_webhook_decides_on_portkeys_hook_context_sent_by_the_gateway() {
    let (mock, gw) = gateway_with_mock("").await;
    let hook = |url: String, deny: bool| {
        json!({"provider": "mock", "before_request_hooks": [{"id": "wh", "deny": deny, "checks": [
            {"id": "default.webhook", "parameters": {"webhookURL": url, "headers": {"x-hook-key": "k1"}}}]}]})
    };
    let config = hook(mock.url("/hooks/verdict"), true);
    let res = client()
        .post(gw.at("/v1/chat/completions"))
        .header("x-portkey-config", config.to_string())
        .header("x-portkey-metadata", json!({"team": "red"}).to_string())
        .json(&json!({"model": "m", "messages": [{"role": "user", "content": "hello"}]}))
        .send()
        .await
        .expect("send");
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.expect("json");
    assert_eq!(
        first_check(&body, "before_request_hooks")["data"]["event"],
        "beforeRequestHook"
    );
    let posted = calls_to(&mock, "/hooks/verdict");
    assert_eq!(posted.len(), 1);
    assert_eq!(posted[0].headers["x-hook-key"], "k1");
    let event = posted[0].json();
    assert_eq!(event["eventType"], "beforeRequestHook");
    assert_eq!(event["requestType"], "chatComplete");
    assert_eq!(event["request"]["text"], "hello");
    assert_eq!(
        event["request"]["json"]["model"], "m",
        "the whole body goes"
    );
    assert_eq!(event["metadata"]["team"], "red");

    let (status, body) = chat(&gw, &config, &[], "the secret plan").await;
    assert_eq!(status, 446, "{body}");
    assert_eq!(
        first_check(&body, "before_request_hooks")["explanation"],
        "the text mentions a secret"
    );
    assert_eq!(calls_to(&mock, "/v1/chat/completions").len(), 1);

    // After the response, the webhook sees the answer.
    let after = json!({"provider": "mock", "after_request_hooks": [{"id": "wh", "checks": [
        {"id": "default.webhook", "parameters": {"webhookURL": mock.url("/hooks/verdict")}}]}]});
    let (status, body) = chat(&gw, &after, &[], "hello").await;
    assert_eq!(status, 200, "{body}");
    let event = calls_to(&mock, "/hooks/verdict")
        .pop()
        .expect("posted")
        .json();
    assert_eq!(event["eventType"], "afterRequestHook");
    assert_eq!(event["response"]["json"]["object"], "chat.completion");

    // Waiting for the webhook is not the plugin's CPU time: 250 ms is past the
    // 100 ms budget of a call, and the check still passes.
    let slow = hook(mock.url("/hooks/verdict?delay=250"), true);
    let (status, body) = chat(&gw, &slow, &[], "hello").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(first_check(&body, "before_request_hooks")["verdict"], true);

    // Cloud metadata is refused as for a client-chosen custom host; a hook
    // without deny fails open and says why.
    let metadata = hook("http://169.254.169.254/latest/meta-data".into(), false);
    let (status, body) = chat(&gw, &metadata, &[], "hello").await;
    assert_eq!(status, 200, "{body}");
    let check = first_check(&body, "before_request_hooks");
    assert_eq!(check["verdict"], true);
    assert!(
        check["error"]
            .as_str()
            .unwrap_or_default()
            .contains("refused"),
        "{check}"
    );
    // An unreachable webhook behind a deny hook fails closed.
    let down = hook(format!("http://127.0.0.1:{}/hook", closed_port()), true);
    let (status, body) = chat(&gw, &down, &[], "hello").await;
    assert_eq!(status, 446, "{body}");
}

#[tokio::test]
async fn log_posts_each_request_and_an_async_log_hook_never_holds_it() {
    let (mock, gw) = gateway_with_mock("").await;
    let log = json!({"logURL": mock.url("/hooks/log")});
    let config = json!({"provider": "mock", "output_guardrails": [{"default.log": log}]});
    let res = chat_with_config(&gw, &config, "hello").await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.expect("json");
    assert_eq!(
        first_check(&body, "after_request_hooks")["data"]["logged"],
        true
    );
    let event = calls_to(&mock, "/hooks/log").pop().expect("logged").json();
    assert_eq!(event["eventType"], "afterRequestHook");
    assert_eq!(event["response"]["text"], "Hello from mock");

    let detached = json!({"provider": "mock", "before_request_hooks": [
        {"id": "audit", "async": true, "checks": [{"id": "default.log", "parameters": log}]}]});
    let res = chat_with_config(&gw, &detached, "audit me").await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.expect("json");
    assert!(body.get("hook_results").is_none(), "{body}");
    let mut seen = None;
    for _ in 0..40 {
        seen = calls_to(&mock, "/hooks/log")
            .into_iter()
            .map(|r| r.json())
            .find(|e| e["request"]["text"] == "audit me");
        if seen.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let event = seen.expect("the async hook posted its log");
    assert_eq!(event["eventType"], "beforeRequestHook");
}
