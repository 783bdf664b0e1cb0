//! State shared through a real Redis server by two gateway processes: a rate
//! limit of requests and one of tokens hold across both, a budget spent on
//! one refuses on the other, and an answer cached by one is a hit on the
//! other, and one found by meaning too (the semantic cache's vectors go
//! through Redis, so a gateway started later finds them). With Redis
//! unreachable, each gateway goes on with its own state.

use std::time::Duration;

use serde_json::{Value, json};
use sluice_tests::redis::RedisServer;
use sluice_tests::{Gateway, MockUpstream, client, config_with_mock};

async fn chat(gw: &Gateway, headers: &[(&str, String)], text: &str) -> (u16, String, Value) {
    let mut req = client()
        .post(gw.at("/v1/chat/completions"))
        .header("x-portkey-provider", "mock")
        .json(&json!({"model": "m", "messages": [{"role": "user", "content": text}]}));
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let res = req.send().await.expect("send");
    let status = res.status().as_u16();
    let cache = sluice_tests::header(&res, "x-portkey-cache-status").to_owned();
    (status, cache, res.json().await.unwrap_or(Value::Null))
}

fn meta(pairs: Value) -> Vec<(&'static str, String)> {
    vec![("x-portkey-metadata", pairs.to_string())]
}

/// Tokens, spend and cache entries reach Redis just after an answer ends.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(150)).await;
}

/// Windows are whole minutes: start early in one.
async fn early_in_a_minute() {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    if now % 60 > 45 {
        tokio::time::sleep(Duration::from_secs(61 - now % 60)).await;
    }
}

#[tokio::test]
async fn two_gateways_share_limits_budgets_and_the_cache() {
    let redis = RedisServer::start();
    let mock = MockUpstream::start().await.expect("mock");
    let config = config_with_mock(
        &mock,
        &format!(
            "[redis]\nurl = \"{}\"\nprefix = \"t1:\"\n\
             [[pricing]]\nmodel = \"m\"\ninput = 100000.0\noutput = 100000.0\n\
             [[rate_limits]]\nscope = \"metadata.user\"\nrpm = 3\n\
             [[rate_limits]]\nscope = \"metadata.team\"\ntpm = 10\n\
             [[budgets]]\nscope = \"metadata.project\"\nusd = 1.0\nperiod = \"day\"\n",
            redis.url()
        ),
    );
    let (a, b) = (Gateway::start(&config), Gateway::start(&config));
    early_in_a_minute().await;

    // Three requests a minute for alice, whichever gateway takes them.
    let alice = meta(json!({"user": "alice"}));
    for (gw, text) in [(&a, "1"), (&b, "2"), (&a, "3")] {
        let (s, _, body) = chat(gw, &alice, text).await;
        assert_eq!(s, 200, "{body}");
    }
    let (s, _, body) = chat(&b, &alice, "4").await;
    assert_eq!(
        (s, &body["error"]["type"]),
        (429, &json!("requests")),
        "{body}"
    );

    // Ten tokens a minute for team red: 8 on one, 8 more on the other, then
    // refused on the first.
    for (i, gw) in [&a, &b].into_iter().enumerate() {
        let (s, _, body) = chat(
            gw,
            &meta(json!({"team": "red", "user": format!("t{i}")})),
            "x",
        )
        .await;
        assert_eq!(s, 200, "{body}");
        settle().await;
    }
    let (s, _, body) = chat(&a, &meta(json!({"team": "red", "user": "t9"})), "x").await;
    assert_eq!(
        (s, &body["error"]["type"]),
        (429, &json!("tokens")),
        "{body}"
    );

    // A dollar a day for project p: 80 cents on each, then 412 on either.
    for (i, gw) in [&a, &b].into_iter().enumerate() {
        let (s, _, body) = chat(
            gw,
            &meta(json!({"project": "p", "user": format!("p{i}")})),
            "y",
        )
        .await;
        assert_eq!(s, 200, "{body}");
        settle().await;
    }
    for gw in [&a, &b] {
        let (s, _, body) = chat(gw, &meta(json!({"project": "p", "user": "p9"})), "y").await;
        assert_eq!(
            (s, &body["error"]["code"]),
            (412, &json!("budget_exceeded")),
            "{body}"
        );
    }

    // An answer cached by one gateway is a hit on the other.
    let cached = vec![(
        "x-portkey-config",
        json!({"provider": "mock", "cache": {"mode": "simple", "max_age": 60}}).to_string(),
    )];
    let sent = mock.received().len();
    let (s, status, first) = chat(&a, &cached, "shared answer").await;
    assert_eq!((s, status.as_str()), (200, "MISS"));
    settle().await;
    let (s, status, again) = chat(&b, &cached, "shared answer").await;
    assert_eq!((s, status.as_str()), (200, "HIT"));
    assert_eq!(again, first);
    assert_eq!(mock.received().len(), sent + 1);
}

#[tokio::test]
async fn an_answer_kept_by_one_gateway_is_found_by_meaning_on_every_other() {
    let redis = RedisServer::start();
    let mock = MockUpstream::start().await.expect("mock");
    let config = config_with_mock(
        &mock,
        &format!(
            "[redis]\nurl = \"{}\"\nprefix = \"t3:\"\n\
             [cache.semantic]\nembedding_config = \"embedder\"\nthreshold = 0.9\n\
             [configs.embedder]\nprovider = \"mock\"\n\
             override_params = {{ model = \"bag-of-words\" }}\n",
            redis.url()
        ),
    );
    let (a, b) = (Gateway::start(&config), Gateway::start(&config));
    let semantic = vec![("x-portkey-cache", "semantic".to_owned())];
    let chats = || mock.count_model("m");

    let (s, status, first) = chat(&a, &semantic, "What is the capital of France?").await;
    assert_eq!((s, status.as_str()), (200, "MISS"), "{first}");
    // Both gateways index the vector from Redis.
    for gw in [&a, &b] {
        let n = sluice_tests::metric_at_least(gw, "sluice_cache_semantic_vectors", 1.0).await;
        assert_eq!(n, 1.0);
    }
    let (_, status, answer) = chat(&b, &semantic, "what is the capital of france").await;
    assert_eq!(status, "SEMANTIC HIT");
    assert_eq!(answer, first);
    assert_eq!(chats(), 1);

    // A gateway started later reads the vectors kept before it.
    let c = Gateway::start(&config);
    let n = sluice_tests::metric_at_least(&c, "sluice_cache_semantic_vectors", 1.0).await;
    assert_eq!(n, 1.0);
    let (_, status, _) = chat(&c, &semantic, "WHAT is the capital of France").await;
    assert_eq!(status, "SEMANTIC HIT");
    assert_eq!(chats(), 1);
}

#[tokio::test]
async fn without_redis_each_gateway_goes_on_with_its_own_state() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port");
    let mock = MockUpstream::start().await.expect("mock");
    let config = config_with_mock(
        &mock,
        &format!(
            "[redis]\nurl = \"redis://127.0.0.1:{port}/0\"\ntimeout_ms = 200\n\
             [[rate_limits]]\nscope = \"metadata.user\"\nrpm = 1\n"
        ),
    );
    let gw = Gateway::start(&config);
    early_in_a_minute().await;
    let bob = meta(json!({"user": "bob"}));
    let (s, _, body) = chat(&gw, &bob, "1").await;
    assert_eq!(s, 200, "{body}");
    let (s, _, body) = chat(&gw, &bob, "2").await;
    assert_eq!(s, 429, "this gateway's own counters still hold: {body}");
    assert!(gw.logs().contains("Redis failed"), "{}", gw.logs());
}
