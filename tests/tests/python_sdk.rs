//! A real client: OpenAI's Python SDK (installed into `tests/.venv` by the test
//! set-up, see README.md) calls the gateway for chat, streaming chat, embeddings
//! and models, and sees errors as its own exception types; then the same SDK
//! talks to every native adapter's wire format (Anthropic, Gemini, Cohere,
//! Bedrock, Vertex AI's Gemini and Claude): chat, streams with usage, tools.

use std::path::PathBuf;
use std::process::Command;

use sluice_tests::{Gateway, MockUpstream, config_with_mock};

fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("SLUICE_TEST_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    assert!(
        venv.exists(),
        "{} is missing: run the test command from README.md (it creates the venv), or set SLUICE_TEST_PYTHON",
        venv.display()
    );
    venv
}

#[tokio::test]
async fn the_openai_python_sdk_works_unchanged() {
    let mock = MockUpstream::start().await.expect("mock");
    let gw = Gateway::start(&config_with_mock(&mock, ""));
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("py/openai_client.py");
    let url = gw.url.clone();
    let upstream = mock.url("");
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python())
            .arg(script)
            .arg(url)
            .arg(upstream)
            .env("NO_PROXY", "127.0.0.1,localhost")
            .output()
            .expect("run python")
    })
    .await
    .expect("join");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "python failed:\n{stdout}\n{stderr}\ngateway:\n{}",
        gw.logs()
    );
    assert_eq!(stdout.trim(), "ok");
    let sdk_requests = mock.received();
    assert!(
        sdk_requests
            .iter()
            .any(|r| r.json()["future_param"]["a"] == 1),
        "extra_body fields reach the provider"
    );
    // (The OpenAI-format provider's calls; the native ones carry their own auth.)
    assert!(
        sdk_requests
            .iter()
            .filter(|r| r.path.starts_with("/v1/")
                && !r.path.ends_with("/messages")
                && !r.path.contains("/projects/"))
            .all(|r| {
                r.headers
                    .get("authorization")
                    .is_none_or(|v| v == "Bearer sk-python-sdk")
            }),
    );
}

#[tokio::test]
async fn the_anthropic_python_sdk_works_through_v1_messages() {
    let mock = MockUpstream::start().await.expect("mock");
    let gw = Gateway::start(&config_with_mock(&mock, ""));
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("py/anthropic_client.py");
    let (url, upstream) = (gw.url.clone(), mock.url(""));
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python())
            .arg(script)
            .arg(url)
            .arg(upstream)
            .env("NO_PROXY", "127.0.0.1,localhost")
            .output()
            .expect("run python")
    })
    .await
    .expect("join");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "python failed:\n{stdout}\n{stderr}\ngateway:\n{}",
        gw.logs()
    );
    assert_eq!(stdout.trim(), "ok");
    // The SDK's key reached Anthropic as its own header, and nowhere else.
    let to_anthropic: Vec<_> = mock
        .received()
        .into_iter()
        .filter(|r| r.path == "/v1/messages")
        .collect();
    assert!(!to_anthropic.is_empty());
    assert!(
        to_anthropic
            .iter()
            .all(|r| r.headers["x-api-key"] == "sk-ant-sdk")
    );
    assert!(
        to_anthropic
            .iter()
            .all(|r| r.headers.contains_key("anthropic-version"))
    );
    let translated: Vec<_> = mock
        .received()
        .into_iter()
        .filter(|r| r.path == "/v1/chat/completions")
        .collect();
    assert!(
        translated
            .iter()
            .all(|r| r.headers["authorization"] == "Bearer sk-ant-sdk")
    );
    assert!(
        translated
            .iter()
            .any(|r| r.json()["messages"][0]["role"] == "system")
    );
}
