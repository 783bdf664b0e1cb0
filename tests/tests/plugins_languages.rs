//! Guardrails written in Python, JavaScript and C, built by their own build
//! scripts (`plugins/examples/*/build.sh`), loaded by the real gateway and used
//! through Portkey's hooks like any other plugin.

use serde_json::{Value, json};
use sluice_tests::{
    Gateway, MockUpstream, admin_plugins, chat_with_config, config_with_mock, examples,
};

async fn chat(gw: &Gateway, config: &Value, text: &str) -> (u16, Value) {
    let res = chat_with_config(gw, config, text).await;
    let status = res.status().as_u16();
    (status, res.json().await.expect("json"))
}

#[tokio::test]
async fn python_javascript_and_c_guardrails_run_in_the_gateway() {
    let python = examples::build("python", "pii-email");
    let javascript = examples::build("javascript", "word-count");
    let c = examples::build("c", "char-limit");
    let mock = MockUpstream::start().await.expect("mock");
    let gw = Gateway::start_with_plugins(
        &config_with_mock(&mock, ""),
        &[
            ("pii-email.wasm", &python.display().to_string()),
            ("word-count.wasm", &javascript.display().to_string()),
            ("char-limit.wasm", &c.display().to_string()),
        ],
    );
    let admin = admin_plugins(&gw).await;
    let wasi = |name: &str| {
        admin["plugins"]
            .as_array()
            .and_then(|a| a.iter().find(|p| p["name"] == name))
            .map(|p| p["wasi"].clone())
    };
    assert_eq!(wasi("pii-email"), Some(json!(true)), "{admin}");
    assert_eq!(wasi("word-count"), Some(json!(true)));
    assert_eq!(
        wasi("char-limit"),
        Some(json!(false)),
        "C without stdio imports no WASI"
    );

    // Python: deny on an email address, and redact with a rewrite.
    let deny = json!({"provider": "mock", "input_guardrails": [{"deny": true, "pii-email": {}}]});
    assert_eq!(chat(&gw, &deny, "no address here").await.0, 200);
    let (status, body) = chat(&gw, &deny, "write to jane@example.com").await;
    assert_eq!(status, 446, "{body}");
    let check = &body["hook_results"]["before_request_hooks"][0]["checks"][0];
    assert_eq!(check["data"]["count"], 1, "{check}");
    let redact = json!({"provider": "mock", "input_guardrails": [{"pii-email": {"redact": true}}]});
    assert_eq!(chat(&gw, &redact, "mail jane@example.com now").await.0, 200);
    assert_eq!(
        mock.last().expect("upstream").json()["messages"][0]["content"],
        "mail [EMAIL] now"
    );

    // JavaScript: too many words fails without deny (246).
    let words = json!({"provider": "mock", "input_guardrails": [{"word-count": {"max": 3}}]});
    assert_eq!(chat(&gw, &words, "one two three").await.0, 200);
    let (status, body) = chat(&gw, &words, "one two three four").await;
    assert_eq!(status, 246);
    assert_eq!(
        body["hook_results"]["before_request_hooks"][0]["checks"][0]["data"]["words"],
        4
    );

    // C: a character limit, counted in code points.
    let chars =
        json!({"provider": "mock", "input_guardrails": [{"deny": true, "char-limit": {"max": 5}}]});
    assert_eq!(chat(&gw, &chars, "héllo").await.0, 200);
    assert_eq!(chat(&gw, &chars, "hello!").await.0, 446);

    // Each language's own configuration errors come back typed.
    for (plugin, bad) in [
        ("pii-email", json!({"redact": "yes"})),
        ("word-count", json!({"min": 5, "max": 1})),
        ("char-limit", json!({})),
    ] {
        let config = json!({"provider": "mock", "input_guardrails": [{"deny": true, plugin: bad}]});
        let (status, body) = chat(&gw, &config, "hi").await;
        assert_eq!(status, 446, "{plugin}");
        let error = body["hook_results"]["before_request_hooks"][0]["checks"][0]["error"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        assert!(
            error.contains(plugin) && error.contains("rejected its configuration"),
            "{plugin}: {error}"
        );
    }
}
