//! The semantic cache end to end: `cache: {mode: "semantic"}` answers a
//! prompt close in meaning to one answered before (`SEMANTIC HIT`), within
//! the same scope only (model, parameters, earlier turns), above the
//! threshold only; exact repeats stay plain hits; the embedding is asked of a
//! named config through the gateway's own pipeline and recorded; hit rate
//! and saved cost are reported; an embedding that fails leaves the request a
//! plain miss.
//!
//! The mock upstream's `bag-of-words` embedding model makes "meaning"
//! something a test can reason about: texts with the same words (whatever
//! their case and punctuation) are identical vectors, texts that share most
//! words are close.

use std::time::Duration;

use serde_json::{Value, json};
use sluice_tests::mock::words_embedding;
use sluice_tests::{Gateway, MockUpstream, client, config_with_mock, metric_at_least};

/// A gateway whose semantic cache asks provider `embedder` for embeddings
/// (the mock, or `[[providers]]` entry `dead`: nothing listens there).
fn gateway(mock: &MockUpstream, embedder: &str) -> Gateway {
    Gateway::start(&config_with_mock(
        mock,
        &format!(
            r#"
[cache.semantic]
embedding_config = "embedder"
threshold = 0.9

[configs.embedder]
provider = "{embedder}"
api_key = "sk-embed"
override_params = {{ model = "bag-of-words" }}

[[pricing]]
model = "m"
input = 1000000.0
output = 1000000.0

[[providers]]
slug = "dead"
base_url = "http://127.0.0.1:9/v1"
"#
        ),
    ))
}

/// `sluice_cache_semantic_vectors` once it is at least `n`.
async fn vectors(gw: &Gateway, n: u64) -> u64 {
    metric_at_least(gw, "sluice_cache_semantic_vectors", n as f64).await as u64
}

const SEMANTIC: &str =
    r#"{"provider": "mock", "api_key": "sk-one", "cache": {"mode": "semantic", "max_age": 600}}"#;

/// A chat request with one user message (and `extra` members); the status,
/// `x-portkey-cache-status` and the body.
async fn ask(gw: &Gateway, config: &str, text: &str, extra: Value) -> (u16, String, String) {
    let mut body = json!({"model": "m", "messages": [
        {"role": "system", "content": "Answer in one word."},
        {"role": "user", "content": text}]});
    if let (Value::Object(b), Value::Object(e)) = (&mut body, extra) {
        b.extend(e);
    }
    let res = client()
        .post(gw.at("/v1/chat/completions"))
        .header("x-portkey-config", config)
        .json(&body)
        .send()
        .await
        .expect("send");
    let status = res.status().as_u16();
    let cache = sluice_tests::header(&res, "x-portkey-cache-status").to_owned();
    (status, cache, res.text().await.expect("body"))
}

fn cosine(a: &str, b: &str) -> f32 {
    let (a, b) = (words_embedding(a), words_embedding(b));
    let dot: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (norm(&a) * norm(&b))
}

/// The chat requests and embedding requests the mock has seen.
fn calls(mock: &MockUpstream) -> (usize, usize) {
    let received = mock.received();
    let embeddings = received
        .iter()
        .filter(|r| r.json()["model"] == "bag-of-words")
        .count();
    (received.len() - embeddings, embeddings)
}

/// `GET /admin/usage` (optionally grouped) once `n` requests are recorded.
async fn usage(gw: &Gateway, query: &str, n: i64) -> Value {
    let mut rows = Value::Null;
    for _ in 0..100 {
        rows = client()
            .get(gw.at(&format!("/admin/usage?{query}")))
            .send()
            .await
            .expect("usage")
            .json()
            .await
            .expect("json");
        let total: i64 = rows["data"]
            .as_array()
            .map(|r| r.iter().filter_map(|r| r["requests"].as_i64()).sum())
            .unwrap_or(0);
        if total >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    rows
}

#[tokio::test]
async fn a_prompt_close_in_meaning_is_answered_from_the_cache() {
    let mock = MockUpstream::start().await.expect("mock");
    let gw = gateway(&mock, "mock");
    let first = "What is the capital of France?";
    let close = "what is the capital of france";
    let other = "What is the capital of Spain?";
    // The premises, from the mock's embedding model.
    assert!(cosine(first, close) > 0.999);
    assert!(cosine(first, other) < 0.9, "{}", cosine(first, other));

    let (s, status, answer) = ask(&gw, SEMANTIC, first, json!({})).await;
    assert_eq!((s, status.as_str()), (200, "MISS"), "{answer}");
    assert_eq!(calls(&mock), (1, 1), "one answer, one embedding");
    // The new answer is indexed once it has passed: wait for it.
    assert_eq!(vectors(&gw, 1).await, 1);
    let (s, status, again) = ask(&gw, SEMANTIC, close, json!({})).await;
    assert_eq!((s, status.as_str()), (200, "SEMANTIC HIT"));
    assert_eq!(again, answer, "the kept answer, as it was");
    assert_eq!(
        calls(&mock),
        (1, 2),
        "a semantic hit reaches no chat upstream"
    );

    // An exact repeat is a plain hit: no embedding is asked for.
    let embeddings = calls(&mock).1;
    let (_, status, _) = ask(&gw, SEMANTIC, first, json!({})).await;
    assert_eq!(status, "HIT");
    assert_eq!(calls(&mock), (1, embeddings));

    // Below the threshold: a miss, answered by the upstream.
    let (_, status, _) = ask(&gw, SEMANTIC, other, json!({})).await;
    assert_eq!(status, "MISS");
    // The same prompt in another scope (a parameter, the model, the earlier
    // turns) is not answered by meaning.
    for extra in [
        json!({"temperature": 0.5}),
        json!({"model": "m2"}),
        json!({"messages": [{"role": "user", "content": close}]}),
    ] {
        let (_, status, _) = ask(&gw, SEMANTIC, close, extra.clone()).await;
        assert_eq!(status, "MISS", "{extra}");
    }
    // The simple cache never answers by meaning.
    let simple = r#"{"provider": "mock", "api_key": "sk-one", "cache": {"mode": "simple"}}"#;
    let (_, status, _) = ask(&gw, simple, "WHAT is the capital of France", json!({})).await;
    assert_eq!(status, "MISS");
    // Nor does another credential's entry.
    let other_key = SEMANTIC.replace("sk-one", "sk-two");
    let (_, status, _) = ask(&gw, &other_key, close, json!({})).await;
    assert_eq!(status, "MISS");
    let (chats, _) = calls(&mock);
    assert_eq!(chats, 7);

    // The usage report: hits (exact and semantic) over lookups, and what
    // they saved; the embeddings are requests of their own, marked.
    let report = usage(&gw, "", 16).await;
    let total = &report["data"][0];
    let embeddings = calls(&mock).1 as i64;
    assert_eq!(embeddings, 7, "one per exact miss in semantic mode");
    assert_eq!(total["requests"], 9 + embeddings, "{report}");
    assert_eq!(total["cache_hits"], 2, "{report}");
    assert_eq!(total["semantic_cache_hits"], 1, "{report}");
    assert_eq!(total["cache_hit_rate"], 2.0 / 9.0, "{report}");
    assert_eq!(total["saved_cost"], 16.0, "{report}");
    let marked = usage(&gw, "group_by=metadata.sluice_purpose,route", 1).await;
    let embedding_rows: Vec<&Value> = marked["data"]
        .as_array()
        .expect("rows")
        .iter()
        .filter(|r| r["metadata.sluice_purpose"] == "semantic-cache")
        .collect();
    assert_eq!(embedding_rows.len(), 1, "{marked}");
    assert_eq!(embedding_rows[0]["route"], "/v1/embeddings");
    assert_eq!(embedding_rows[0]["requests"], embeddings);

    let metrics = sluice_tests::metrics(&gw).await;
    assert!(
        metrics.contains("sluice_cache_lookups_total{result=\"semantic_hit\"} 1"),
        "{metrics}"
    );
    // Every answer kept in semantic mode with an embedding is indexed:
    // the first, and the five misses after the semantic hit.
    assert_eq!(vectors(&gw, 6).await, 6);
}

#[tokio::test]
async fn an_embedding_that_fails_leaves_a_plain_miss() {
    let mock = MockUpstream::start().await.expect("mock");
    let gw = gateway(&mock, "dead");
    for want in ["MISS", "HIT"] {
        let (s, status, body) = ask(&gw, SEMANTIC, "Name a colour", json!({})).await;
        assert_eq!((s, status.as_str()), (200, want), "{body}");
    }
    // Another wording finds nothing by meaning, and is still answered.
    let (s, status, _) = ask(&gw, SEMANTIC, "name a colour!", json!({})).await;
    assert_eq!((s, status.as_str()), (200, "MISS"));
    assert_eq!(calls(&mock), (2, 0));
}
