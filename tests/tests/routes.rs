//! Every route through the real binary to a mock upstream, and Portkey's headers.

use serde_json::{Value, json};
use sluice_tests::{Gateway, MockUpstream, client, config_with_mock, gateway_with_mock, mock};

#[tokio::test]
async fn chat_is_forwarded_byte_for_byte_with_unknown_fields() {
    let (mock, gw) = gateway_with_mock("").await;
    let body = r#"{"model":"gpt-x","messages":[{"role":"user","content":"hi"}],"future_param":{"nested":[1,2]},"temperature":0.2}"#;
    let res = client()
        .post(gw.at("/v1/chat/completions"))
        .header("x-portkey-provider", "mock")
        .header("authorization", "Bearer sk-test-key")
        .header("content-type", "application/json")
        .header("x-portkey-metadata", r#"{"team":"a"}"#)
        .body(body)
        .send()
        .await
        .expect("send");
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-portkey-provider"], "mock");
    assert!(res.headers().contains_key("x-portkey-trace-id"));
    assert_eq!(res.headers()["x-portkey-last-used-option-index"], "config");
    let json: Value = res.json().await.expect("json");
    assert_eq!(json, mock::chat_completion("gpt-x"));

    let got = mock.last().expect("received");
    assert_eq!(got.path, "/v1/chat/completions");
    assert_eq!(
        got.body,
        body.as_bytes(),
        "the body must reach the provider untouched"
    );
    assert_eq!(got.headers["authorization"], "Bearer sk-test-key");
    assert_eq!(got.headers["content-type"], "application/json");
    assert!(
        got.headers
            .keys()
            .all(|k| !k.as_str().starts_with("x-portkey")),
        "gateway headers leaked upstream: {:?}",
        got.headers
    );
}

#[tokio::test]
async fn every_json_route_reaches_its_upstream_path() {
    let (mock, gw) = gateway_with_mock("").await;
    let cases = [
        (
            "/v1/completions",
            json!({"model": "m", "prompt": "p"}),
            "text_completion",
        ),
        (
            "/v1/embeddings",
            json!({"model": "m", "input": ["a", "b"]}),
            "list",
        ),
        ("/v1/images/generations", json!({"prompt": "a cat"}), ""),
        ("/v1/moderations", json!({"input": "text"}), ""),
    ];
    for (path, body, object) in cases {
        let res = client()
            .post(gw.at(path))
            .header("x-portkey-provider", "mock")
            .json(&body)
            .send()
            .await
            .expect("send");
        assert_eq!(res.status(), 200, "{path}");
        let json: Value = res.json().await.expect("json");
        if !object.is_empty() {
            assert_eq!(json["object"], object, "{path}");
        }
        let got = mock.last().expect("received");
        assert_eq!(got.path, path);
        assert_eq!(got.json(), body);
    }
    let embeddings = mock
        .received()
        .into_iter()
        .find(|r| r.path == "/v1/embeddings")
        .expect("embeddings");
    assert_eq!(embeddings.json()["input"], json!(["a", "b"]));
}

#[tokio::test]
async fn speech_returns_the_binary_body_intact() {
    let (_mock, gw) = gateway_with_mock("").await;
    let res = client()
        .post(gw.at("/v1/audio/speech"))
        .header("x-portkey-provider", "mock")
        .json(&json!({"model": "tts-1", "input": "hello", "voice": "alloy"}))
        .send()
        .await
        .expect("send");
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "audio/mpeg");
    assert_eq!(
        res.bytes().await.expect("bytes").to_vec(),
        mock::speech_bytes()
    );
}

#[tokio::test]
async fn audio_uploads_are_forwarded_as_sent() {
    let (mock, gw) = gateway_with_mock("").await;
    for path in ["/v1/audio/transcriptions", "/v1/audio/translations"] {
        let audio: Vec<u8> = (0..20_000u32).map(|i| (i * 7 % 256) as u8).collect();
        let form = reqwest::multipart::Form::new()
            .text("model", "whisper-1")
            .part(
                "file",
                reqwest::multipart::Part::bytes(audio.clone()).file_name("a.mp3"),
            );
        let boundary = form.boundary().to_owned();
        let res = client()
            .post(gw.at(path))
            .header("x-portkey-provider", "mock")
            .multipart(form)
            .send()
            .await
            .expect("send");
        assert_eq!(res.status(), 200, "{path}");
        let got = mock.last().expect("received");
        assert_eq!(got.path, path);
        let ct = got.headers["content-type"].to_str().expect("ct");
        assert!(ct.contains(&boundary), "boundary lost: {ct}");
        let needle = b"a.mp3";
        assert!(got.body.windows(needle.len()).any(|w| w == needle));
        assert!(
            got.body.windows(audio.len()).any(|w| w == audio.as_slice()),
            "audio bytes changed"
        );
        let json: Value = res.json().await.expect("json");
        assert_eq!(json["text"], format!("received {} bytes", got.body.len()));
    }
}

#[tokio::test]
async fn a_json_body_on_an_upload_route_is_refused() {
    let (mock, gw) = gateway_with_mock("").await;
    let res = client()
        .post(gw.at("/v1/audio/transcriptions"))
        .header("x-portkey-provider", "mock")
        .json(&json!({"model": "whisper-1"}))
        .send()
        .await
        .expect("send");
    assert_eq!(res.status(), 400);
    let json: Value = res.json().await.expect("json");
    assert_eq!(json["error"]["code"], "malformed_body");
    assert!(mock.received().is_empty());
}

#[tokio::test]
async fn models_and_arbitrary_v1_paths_are_forwarded() {
    let (mock, gw) = gateway_with_mock("").await;
    let res = client()
        .get(gw.at("/v1/models"))
        .header("x-portkey-provider", "mock")
        .send()
        .await
        .expect("send");
    assert_eq!(res.status(), 200);
    let json: Value = res.json().await.expect("json");
    assert_eq!(json["data"][0]["id"], "mock-model");
    assert_eq!(mock.last().expect("received").method, "GET");

    let res = client()
        .post(gw.at("/v1/files/file-1/content?purpose=batch&x=1"))
        .header("x-portkey-provider", "mock")
        .header("content-type", "text/plain")
        .body("raw body")
        .send()
        .await
        .expect("send");
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-mock-echo"], "1");
    let json: Value = res.json().await.expect("json");
    assert_eq!(json["method"], "POST");
    assert_eq!(json["path"], "/v1/files/file-1/content");
    assert_eq!(json["query"], "purpose=batch&x=1");
    assert_eq!(json["body"], "raw body");
    assert_eq!(
        mock.last().expect("received").headers["content-type"],
        "text/plain"
    );

    let res = client()
        .delete(gw.at("/v1/files/file-2"))
        .header("x-sluice-provider", "mock")
        .send()
        .await
        .expect("send");
    let json: Value = res.json().await.expect("json");
    assert_eq!(
        (json["method"].as_str(), json["path"].as_str()),
        (Some("DELETE"), Some("/v1/files/file-2"))
    );
}

#[tokio::test]
async fn custom_hosts_and_sluice_aliases_work_without_a_config() {
    let mock = MockUpstream::start().await.expect("mock");
    let gw = Gateway::start("");
    let res = client()
        .post(gw.at("/v1/chat/completions"))
        .header("x-sluice-provider", "openai-compatible")
        .header("x-sluice-custom-host", mock.url("/custom/v1"))
        .header("x-portkey-forward-headers", "x-user-tag")
        .header("x-user-tag", "tagged")
        .header("x-not-forwarded", "no")
        .json(&json!({"model": "m", "messages": []}))
        .send()
        .await
        .expect("send");
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-portkey-provider"], "openai-compatible");
    let got = mock.last().expect("received");
    assert_eq!(got.path, "/custom/v1/chat/completions");
    assert_eq!(got.headers["x-user-tag"], "tagged");
    assert!(!got.headers.contains_key("x-not-forwarded"));
    assert!(!got.headers.contains_key("authorization"));
}

#[tokio::test]
async fn a_config_header_sets_target_overrides_and_forwarded_headers() {
    let (mock, gw) = gateway_with_mock("").await;
    let config = json!({
        "strategy": {"mode": "single"},
        "override_params": {"model": "from-parent", "max_tokens": 7},
        "targets": [{"provider": "mock", "api_key": "sk-from-config",
                     "override_params": {"model": "from-child"}, "forward_headers": ["x-trace-me"]}]
    });
    let res = client()
        .post(gw.at("/v1/chat/completions"))
        .header("x-portkey-config", config.to_string())
        .header("authorization", "Bearer sk-ignored")
        .header("x-trace-me", "yes")
        .json(&json!({"model": "client-model", "messages": [], "keep": true}))
        .send()
        .await
        .expect("send");
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()["x-portkey-last-used-option-index"],
        "config.targets[0]"
    );
    let got = mock.last().expect("received");
    let body = got.json();
    assert_eq!(body["model"], "from-child");
    assert_eq!(body["max_tokens"], 7);
    assert_eq!(body["keep"], true);
    assert_eq!(got.headers["authorization"], "Bearer sk-from-config");
    assert_eq!(got.headers["x-trace-me"], "yes");
}

#[tokio::test]
async fn named_and_default_configs_from_the_server_file() {
    let mock = MockUpstream::start().await.expect("mock");
    let extra = format!(
        "default_config = \"main\"\n[configs.main]\nprovider = \"openai-compatible\"\ncustom_host = \"{}\"\n[configs.main.override_params]\nmodel = \"pinned\"\n\n[configs.other]\nprovider = \"mock\"\n",
        mock.url("/named/v1")
    );
    let gw = Gateway::start(&config_with_mock(&mock, &extra));
    let res = client()
        .post(gw.at("/v1/chat/completions"))
        .json(&json!({"model": "x", "messages": []}))
        .send()
        .await
        .expect("send");
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-portkey-last-used-option-index"], "config");
    let got = mock.last().expect("received");
    assert_eq!(got.path, "/named/v1/chat/completions");
    assert_eq!(got.json()["model"], "pinned");

    let res = client()
        .post(gw.at("/v1/embeddings"))
        .header("x-portkey-config", "other")
        .json(&json!({"model": "e", "input": "x"}))
        .send()
        .await
        .expect("send");
    assert_eq!(res.status(), 200);
    assert_eq!(mock.last().expect("received").path, "/v1/embeddings");
}

#[tokio::test]
async fn azure_openai_uses_deployment_urls_and_the_api_key_header() {
    let (mock, gw) = gateway_with_mock("").await;
    let config = json!({"provider": "azure-openai", "api_key": "az-secret", "custom_host": mock.url("/openai"),
                        "resource_name": "res", "deployment_id": "gpt4o-dep", "api_version": "2024-06-01"});
    let res = client()
        .post(gw.at("/v1/chat/completions"))
        .header("x-portkey-config", config.to_string())
        .json(&json!({"messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .expect("send");
    assert_eq!(res.status(), 200);
    let got = mock.last().expect("received");
    assert_eq!(got.path, "/openai/deployments/gpt4o-dep/chat/completions");
    assert_eq!(got.query.as_deref(), Some("api-version=2024-06-01"));
    assert_eq!(got.headers["api-key"], "az-secret");
    assert!(!got.headers.contains_key("authorization"));

    // The same by Portkey's Azure headers.
    let res = client()
        .post(gw.at("/v1/embeddings"))
        .header("x-portkey-provider", "azure-openai")
        .header("x-portkey-custom-host", mock.url("/openai"))
        .header("x-portkey-azure-deployment-id", "emb")
        .header("authorization", "Bearer az-2")
        .json(&json!({"input": "x"}))
        .send()
        .await
        .expect("send");
    assert_eq!(res.status(), 200);
    let got = mock.last().expect("received");
    assert_eq!(got.path, "/openai/deployments/emb/embeddings");
    assert_eq!(got.query.as_deref(), Some("api-version=2024-10-21"));
    assert_eq!(got.headers["api-key"], "az-2");
}

#[tokio::test]
async fn trace_ids_are_echoed_or_generated() {
    let (_mock, gw) = gateway_with_mock("").await;
    let res = client()
        .get(gw.at("/health"))
        .header("x-portkey-trace-id", "trace-abc-123")
        .send()
        .await
        .expect("send");
    assert_eq!(res.headers()["x-portkey-trace-id"], "trace-abc-123");
    let a = client().get(gw.at("/health")).send().await.expect("send");
    let b = client().get(gw.at("/health")).send().await.expect("send");
    let (a, b) = (
        &a.headers()["x-portkey-trace-id"],
        &b.headers()["x-portkey-trace-id"],
    );
    assert_ne!(a, b);
    assert_eq!(a.len(), 36, "a UUID");
}
