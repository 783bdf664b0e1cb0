//! The simple cache end to end: Portkey's `cache: {mode, max_age}` in a
//! config (and its `x-portkey-cache` header), `x-portkey-cache-status`,
//! force refresh, keys that tell credentials and bodies apart but not the
//! order of members, streams kept and replayed as SSE, only 2xx kept, and
//! hits in the request log with the cost they saved.

use std::time::Duration;

use serde_json::{Value, json};
use sluice_tests::{MockUpstream, client, gateway_with_mock};

fn cached(max_age: u64) -> String {
    json!({"provider": "mock", "cache": {"mode": "simple", "max_age": max_age}}).to_string()
}

async fn send(
    gw: &sluice_tests::Gateway,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String, String, String) {
    let mut req = client()
        .post(gw.at("/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(body.to_owned());
    if !headers.iter().any(|(k, _)| *k == "authorization") {
        req = req.header("authorization", "Bearer sk-one");
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let res = req.send().await.expect("send");
    let status = res.status().as_u16();
    let header = |name: &str| sluice_tests::header(&res, name).to_owned();
    let (cache, ct) = (header("x-portkey-cache-status"), header("content-type"));
    (status, cache, ct, res.text().await.expect("body"))
}

const HELLO: &str = r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;

#[tokio::test]
async fn a_repeated_request_is_answered_from_the_cache() {
    let (mock, gw) = gateway_with_mock("").await;
    let config = cached(60);
    let with = [("x-portkey-config", config.as_str())];
    let (s, status, _, first) = send(&gw, &with, HELLO).await;
    assert_eq!((s, status.as_str()), (200, "MISS"));
    assert_eq!(mock.received().len(), 1);
    // The same request with its members in another order and other spacing.
    let reordered = r#"{ "messages": [ { "content": "hi", "role": "user" } ], "model": "m" }"#;
    let (s, status, ct, again) = send(&gw, &with, reordered).await;
    assert_eq!((s, status.as_str()), (200, "HIT"));
    assert!(ct.starts_with("application/json"), "{ct}");
    assert_eq!(again, first);
    assert_eq!(mock.received().len(), 1, "a hit reaches no upstream");

    // Force refresh: the upstream is asked, and its answer is kept.
    let refresh = [
        ("x-portkey-config", config.as_str()),
        ("x-portkey-cache-force-refresh", "true"),
    ];
    let (_, status, _, _) = send(&gw, &refresh, HELLO).await;
    assert_eq!(status, "REFRESH");
    assert_eq!(mock.received().len(), 2);

    // Another provider key, another body: their own entries.
    let (_, status, _, _) = send(
        &gw,
        &[
            ("x-portkey-config", config.as_str()),
            ("authorization", "Bearer sk-two"),
        ],
        HELLO,
    )
    .await;
    assert_eq!(status, "MISS", "a cached answer never crosses credentials");
    let other = r#"{"model":"m","messages":[{"role":"user","content":"hello"}]}"#;
    let (_, status, _, _) = send(&gw, &with, other).await;
    assert_eq!(status, "MISS");

    // Without a cache in the config: DISABLED, every time to the upstream.
    let before = mock.received().len();
    for _ in 0..2 {
        let (_, status, _, _) = send(&gw, &[("x-portkey-provider", "mock")], HELLO).await;
        assert_eq!(status, "DISABLED");
    }
    assert_eq!(mock.received().len(), before + 2);

    // Portkey's header asks for the simple cache when the config names none.
    // The key is the call, not the config: a request the config cached is a
    // hit here too.
    let legacy = [
        ("x-portkey-provider", "mock"),
        ("x-portkey-cache", "simple"),
    ];
    let (_, status, _, _) = send(&gw, &legacy, other).await;
    assert_eq!(status, "HIT");
    let fresh = r#"{"model":"m","messages":[{"role":"user","content":"legacy"}]}"#;
    let (_, status, _, _) = send(&gw, &legacy, fresh).await;
    assert_eq!(status, "MISS");
    let (_, status, _, _) = send(&gw, &legacy, fresh).await;
    assert_eq!(status, "HIT");
    let (s, _, _, body) = send(
        &gw,
        &[
            ("x-portkey-provider", "mock"),
            ("x-portkey-cache", "sometimes"),
        ],
        HELLO,
    )
    .await;
    assert_eq!(s, 400, "{body}");

    // Output guardrails judge a cached answer as they judge a fresh one.
    let guarded = json!({"provider": "mock", "cache": {"mode": "simple"},
        "output_guardrails": [{"deny": true,
            "default.contains": {"words": ["Hello"], "operator": "none"}}]})
    .to_string();
    let before = mock.received().len();
    let judged = r#"{"model":"m","messages":[{"role":"user","content":"judge me"}]}"#;
    for want in ["MISS", "HIT"] {
        let (s, status, _, body) =
            send(&gw, &[("x-portkey-config", guarded.as_str())], judged).await;
        assert_eq!((s, status.as_str()), (446, want), "{body}");
    }
    assert_eq!(mock.received().len(), before + 1);
}

#[tokio::test]
async fn streams_are_replayed_and_only_whole_2xx_answers_are_kept() {
    let (mock, gw) = gateway_with_mock("").await;
    let config = cached(60);
    let with = [("x-portkey-config", config.as_str())];
    let stream = r#"{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    let (_, status, _, first) = send(&gw, &with, stream).await;
    assert_eq!(status, "MISS");
    assert_eq!(first, sluice_tests::mock::stream_events("m", 4).concat());
    let (_, status, ct, again) = send(&gw, &with, stream).await;
    assert_eq!(status, "HIT");
    assert!(ct.starts_with("text/event-stream"), "{ct}");
    assert_eq!(again, first);
    assert_eq!(mock.received().len(), 1);

    // An error answer and a stream cut mid-way are not kept.
    for model in ["fault:status=500", "fault:cut"] {
        let body = json!({"model": model, "stream": model == "fault:cut",
            "messages": [{"role": "user", "content": "hi"}]})
        .to_string();
        let before = mock.received().len();
        for _ in 0..2 {
            let (_, status, _, _) = send(&gw, &with, &body).await;
            assert_eq!(status, "MISS", "{model}");
        }
        assert_eq!(mock.received().len(), before + 2, "{model}");
    }

    // An entry older than a request's max_age is not used.
    let short = cached(1);
    let fresh = [("x-portkey-config", short.as_str())];
    let other = r#"{"model":"m","messages":[{"role":"user","content":"later"}]}"#;
    let (_, status, _, _) = send(&gw, &fresh, other).await;
    assert_eq!(status, "MISS");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (_, status, _, _) = send(&gw, &fresh, other).await;
    assert_eq!(status, "MISS");
}

#[tokio::test]
async fn hits_are_logged_with_the_cost_they_saved() {
    let mock = MockUpstream::start().await.expect("mock");
    let gw = sluice_tests::Gateway::start(&sluice_tests::config_with_mock(
        &mock,
        "[[pricing]]\nmodel = \"m\"\ninput = 1000000.0\noutput = 1000000.0\n",
    ));
    let config = cached(60);
    let with = [("x-portkey-config", config.as_str())];
    for want in ["MISS", "HIT", "HIT"] {
        let (_, status, _, _) = send(&gw, &with, HELLO).await;
        assert_eq!(status, want);
    }
    let usage = async || -> Value {
        client()
            .get(gw.at("/admin/usage?group_by=cache"))
            .send()
            .await
            .expect("usage")
            .json()
            .await
            .expect("json")
    };
    let mut rows = Value::Null;
    for _ in 0..100 {
        rows = usage().await;
        let total: i64 = rows["data"]
            .as_array()
            .map(|r| r.iter().filter_map(|r| r["requests"].as_i64()).sum())
            .unwrap_or(0);
        if total == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let by = |status: &str| {
        rows["data"]
            .as_array()
            .and_then(|r| r.iter().find(|r| r["cache"] == status))
            .cloned()
            .unwrap_or(Value::Null)
    };
    let (hits, misses) = (by("HIT"), by("MISS"));
    assert_eq!(
        (
            &hits["requests"],
            &hits["cache_hits"],
            &hits["cost"],
            &hits["saved_cost"]
        ),
        (&json!(2), &json!(2), &json!(0.0), &json!(16.0)),
        "{rows}"
    );
    assert_eq!(
        (&misses["cost"], &misses["saved_cost"]),
        (&json!(8.0), &json!(0.0))
    );
    assert_eq!(mock.received().len(), 1);
}
