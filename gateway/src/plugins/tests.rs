//! The host against the real built-in components: every world's calls, typed
//! errors, instance reuse and per-request isolation.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use super::*;
use crate::providers::Endpoint;

async fn builtin(name: &str, limits: Limits) -> Plugin {
    let (_, bytes) = builtin::BUILTINS
        .iter()
        .find(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("no built-in {name}"));
    load(&engine::test_engine(), name, bytes, Source::Builtin, limits)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

fn input(texts: &[&str]) -> CheckInput {
    CheckInput {
        after_response: false,
        endpoint: Endpoint::Chat,
        provider: "openai".into(),
        model: Some("m".into()),
        metadata: vec![("user".into(), "u1".into())],
        segments: texts
            .iter()
            .map(|t| ("user".to_owned(), (*t).to_owned()))
            .collect(),
        body: None,
        grants: Default::default(),
    }
}

#[tokio::test]
async fn the_blocklist_guardrail_passes_fails_and_redacts() {
    let p = builtin("blocklist", Limits::default()).await;
    assert_eq!(p.kind(), Kind::Guardrail);
    assert_eq!(p.info.name, "blocklist");
    assert!(
        !p.wasi,
        "a Rust plugin built for wasm32-unknown-unknown imports no WASI"
    );
    assert_eq!(p.sdk_version.as_deref(), Some(SDK_VERSION));

    let cfg = r#"{"words": ["project x"]}"#;
    p.ensure_valid(cfg).await.expect("valid");
    let pass = p.check(cfg, &input(&["hello"])).await.expect("check");
    assert_eq!(pass.outcome, Outcome::Pass);
    let fail = p
        .check(cfg, &input(&["about Project X today"]))
        .await
        .expect("check");
    assert!(
        matches!(&fail.outcome, Outcome::Fail { reason, deny: false } if reason.contains("project x")),
        "{fail:?}"
    );
    let redact = r#"{"words": ["secret"], "redact": true, "mask": "***"}"#;
    let out = p
        .check(redact, &input(&["a secret here", "clean"]))
        .await
        .expect("check");
    assert_eq!(
        out.outcome,
        Outcome::Rewrite(vec!["a *** here".into(), "clean".into()])
    );

    let bad = p
        .ensure_valid(r#"{"words": []}"#)
        .await
        .expect_err("empty list");
    assert!(
        matches!(&bad, PluginError::InvalidConfig { plugin, detail } if plugin == "blocklist" && detail.contains("at least one")),
        "{bad}"
    );
    let bad = p
        .ensure_valid(r#"{"wordz": ["a"]}"#)
        .await
        .expect_err("unknown field");
    assert!(matches!(bad, PluginError::InvalidConfig { .. }), "{bad}");
    // Asking with the wrong kind names both kinds.
    let wrong = p
        .route("{}", Endpoint::Chat, None, &[], &[], None)
        .await
        .expect_err("not a router");
    assert!(wrong.to_string().contains("not a router"), "{wrong}");
}

#[tokio::test]
async fn warm_instances_are_reused_and_per_request_isolation_is_fresh_each_call() {
    let pooled = builtin("blocklist", Limits::default()).await;
    let cfg = r#"{"words": ["x"]}"#;
    for _ in 0..20 {
        pooled.check(cfg, &input(&["a"])).await.expect("check");
    }
    assert_eq!(pooled.stats()["instances_created"], 1, "{}", pooled.stats());

    let fresh = builtin(
        "blocklist",
        Limits {
            isolation: Isolation::PerRequest,
            ..Limits::default()
        },
    )
    .await;
    let before = fresh.stats()["instances_created"].as_u64().unwrap_or(0);
    for _ in 0..5 {
        fresh.check(cfg, &input(&["a"])).await.expect("check");
    }
    assert_eq!(
        fresh.stats()["instances_created"].as_u64(),
        Some(before + 5)
    );

    let recycled = builtin(
        "blocklist",
        Limits {
            max_calls_per_instance: 3,
            ..Limits::default()
        },
    )
    .await;
    for _ in 0..9 {
        recycled.check(cfg, &input(&["a"])).await.expect("check");
    }
    // describe() at load took one call from the first instance.
    assert_eq!(
        recycled.stats()["instances_created"],
        4,
        "{}",
        recycled.stats()
    );
}

#[tokio::test]
async fn the_latency_router_puts_fast_healthy_targets_first() {
    let p = builtin("latency-router", Limits::default()).await;
    let c = |index: u32, latency: Option<f64>, error_rate: f64, open: bool| RouteCandidate {
        index,
        provider: "openai".into(),
        model: None,
        weight: 1.0,
        circuit_open: open,
        error_rate,
        latency_ms: latency,
        in_flight: 0,
        requests: 10,
    };
    let candidates = [
        c(0, Some(300.0), 0.0, false),
        c(1, Some(50.0), 0.0, false),
        c(2, Some(10.0), 0.0, true),
        c(3, Some(20.0), 0.9, false),
        c(4, None, 0.0, false),
    ];
    let order = p
        .route("{}", Endpoint::Chat, None, &[], &candidates, None)
        .await
        .expect("route");
    assert_eq!(order, [4, 1, 0, 3, 2]);
    let bad = p
        .ensure_valid(r#"{"max_error_rate": 2}"#)
        .await
        .expect_err("out of range");
    assert!(matches!(bad, PluginError::InvalidConfig { .. }));
}

#[tokio::test]
async fn the_ollama_adapter_builds_parses_and_translates_streams() {
    let p = Arc::new(builtin("ollama-native", Limits::default()).await);
    let provider = p.as_provider().expect("provider");
    assert_eq!(provider.endpoints, [Endpoint::Chat, Endpoint::Embeddings]);
    let body = serde_json::json!({
        "model": "llama3", "stream": true, "max_tokens": 7, "stop": "END",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}],
        "response_format": {"type": "json_object"}
    })
    .to_string();
    let req = provider
        .build_request(calls::ProviderCall {
            endpoint: Endpoint::Chat,
            body: body.as_bytes(),
            model: Some("llama3".into()),
            streaming: true,
            base_url: Some("http://127.0.0.1:1/v1".into()),
            api_key: None,
            options: r#"{"keep_alive": "5m"}"#.into(),
        })
        .await
        .expect("build");
    assert_eq!(req.url, "http://127.0.0.1:1/api/chat");
    let sent: serde_json::Value = serde_json::from_slice(&req.body).expect("json");
    assert_eq!(sent["options"]["num_predict"], 7);
    assert_eq!(sent["options"]["stop"], serde_json::json!(["END"]));
    assert_eq!(sent["messages"][0]["images"], serde_json::json!(["AAAA"]));
    assert_eq!(sent["format"], "json");
    assert_eq!(sent["keep_alive"], "5m");

    let whole = r#"{"model":"llama3","created_at":"2024-05-01T12:34:56Z","message":{"role":"assistant","content":"Hi!"},"done":true,"done_reason":"stop","prompt_eval_count":3,"eval_count":2}"#;
    let out = provider
        .parse_response(Endpoint::Chat, 200, Vec::new(), whole.as_bytes())
        .await
        .expect("parse");
    let out: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(out["choices"][0]["message"]["content"], "Hi!");
    assert_eq!(out["usage"]["total_tokens"], 5);
    assert_eq!(out["created"], 1_714_566_896);

    let err = provider
        .parse_response(
            Endpoint::Chat,
            404,
            Vec::new(),
            br#"{"error":"model 'x' not found"}"#,
        )
        .await
        .expect_err("upstream error");
    assert!(
        matches!(&err, PluginError::Upstream { status: 404, message, .. } if message.contains("not found")),
        "{err}"
    );

    let mut stream = p
        .stream(Endpoint::Chat, Some("llama3".into()))
        .await
        .expect("stream");
    let lines = "{\"model\":\"llama3\",\"message\":{\"role\":\"assistant\",\"content\":\"Hel\"},\"done\":false}\n{\"model\":\"llama3\",\"message\":{\"content\":\"lo\"},\"done\":false}\n{\"model\":\"llama3\",\"message\":{\"content\":\"\"},\"done\":true,\"done_reason\":\"length\",\"prompt_eval_count\":1,\"eval_count\":2}\n";
    // Split mid-line: the translator must join the pieces.
    let (a, b) = lines.split_at(40);
    let mut chunks = stream.push(a.as_bytes()).await.expect("push");
    chunks.extend(stream.push(b.as_bytes()).await.expect("push"));
    chunks.extend(stream.finish().await.expect("finish"));
    let chunks: Vec<serde_json::Value> = chunks
        .iter()
        .map(|c| serde_json::from_str(c).expect("chunk json"))
        .collect();
    assert_eq!(chunks.len(), 3, "{chunks:?}");
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(chunks[0]["choices"][0]["delta"]["content"], "Hel");
    assert_eq!(chunks[1]["choices"][0]["delta"]["content"], "lo");
    assert_eq!(chunks[2]["choices"][0]["finish_reason"], "length");
    assert_eq!(chunks[2]["usage"]["completion_tokens"], 2);
    // The stream's instance went back to the pool.
    assert_eq!(p.stats()["idle_instances"], 1, "{}", p.stats());
}

#[tokio::test]
async fn a_registry_prefers_the_directory_and_falls_back_to_the_builtin() {
    let dir = std::env::temp_dir().join(format!("sluice-reg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let registry = Registry::new(
        engine::test_engine(),
        dir.clone(),
        Limits::default(),
        BTreeMap::new(),
    );
    assert!(registry.load_builtins().await.is_empty());
    assert!(matches!(
        registry.get("blocklist").map(|p| p.source.clone()),
        Some(Source::Builtin)
    ));
    let (_, bytes) = builtin::BUILTINS
        .iter()
        .find(|(n, _)| *n == "blocklist")
        .expect("b");
    let file: PathBuf = dir.join("blocklist.wasm");
    std::fs::write(&file, bytes).expect("write");
    registry.load_file(&file).await.expect("load");
    assert!(matches!(
        registry.get("blocklist").map(|p| p.source.clone()),
        Some(Source::File(_))
    ));
    // A broken replacement keeps the loaded version and records why.
    std::fs::write(&file, b"\0asm garbage").expect("write");
    let err = registry.load_file(&file).await.expect_err("corrupt");
    assert!(err.to_string().contains("blocklist"), "{err}");
    assert!(matches!(
        registry.get("blocklist").map(|p| p.source.clone()),
        Some(Source::File(_))
    ));
    assert!(matches!(
        registry.statuses().get("blocklist"),
        Some(Status::Failed(_))
    ));
    assert!(registry.unload_file(&file));
    assert!(matches!(
        registry.get("blocklist").map(|p| p.source.clone()),
        Some(Source::Builtin)
    ));
    let _ = std::fs::remove_dir_all(&dir);
}
