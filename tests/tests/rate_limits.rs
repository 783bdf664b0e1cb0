//! Rate limits end to end: requests per minute by metadata value, gateway key
//! and virtual key; OpenAI's `x-ratelimit-*` headers; 429 with `Retry-After`
//! and nothing sent upstream when a bucket is full.

use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use sluice_tests::gateway::{TempDir, binary};
use sluice_tests::{Gateway, MockUpstream, client, config_with_mock};

/// Windows are whole minutes: start a burst early in one, so it does not
/// straddle two (waits at most 12 s).
async fn early_in_a_minute() {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    if now % 60 > 48 {
        tokio::time::sleep(Duration::from_secs(61 - now % 60)).await;
    }
}

async fn chat(gw: &Gateway, headers: &[(&str, &str)]) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut req = client()
        .post(gw.at("/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let res = req.send().await.expect("send");
    let (status, headers) = (res.status().as_u16(), res.headers().clone());
    (status, headers, res.json().await.unwrap_or(Value::Null))
}

fn header(h: &reqwest::header::HeaderMap, name: &str) -> String {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

#[tokio::test]
async fn a_metadata_value_gets_its_requests_per_minute_then_429() {
    let mock = MockUpstream::start().await.expect("mock");
    let gw = Gateway::start(&config_with_mock(
        &mock,
        "[[rate_limits]]\nscope = \"metadata.user\"\nrpm = 3\n",
    ));
    let alice = json!({"user": "alice"}).to_string();
    let as_alice = [
        ("x-portkey-provider", "mock"),
        ("x-portkey-metadata", alice.as_str()),
    ];
    early_in_a_minute().await;
    for remaining in ["2", "1", "0"] {
        let (s, h, body) = chat(&gw, &as_alice).await;
        assert_eq!(s, 200, "{body}");
        assert_eq!(header(&h, "x-ratelimit-limit-requests"), "3");
        assert_eq!(header(&h, "x-ratelimit-remaining-requests"), remaining);
        assert!(header(&h, "x-ratelimit-reset-requests").ends_with('s'));
    }
    let before = mock.received().len();
    let (s, h, body) = chat(&gw, &as_alice).await;
    assert_eq!(s, 429, "{body}");
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("metadata.user:alice")
    );
    let retry: u64 = header(&h, "retry-after")
        .parse()
        .expect("Retry-After seconds");
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(header(&h, "x-ratelimit-remaining-requests"), "0");
    assert_eq!(
        mock.received().len(),
        before,
        "a refused request never reaches the upstream"
    );

    // Another user has a bucket of their own; no user, no limit.
    let bob = json!({"user": "bob"}).to_string();
    let (s, h, _) = chat(
        &gw,
        &[
            ("x-portkey-provider", "mock"),
            ("x-portkey-metadata", bob.as_str()),
        ],
    )
    .await;
    assert_eq!(
        (s, header(&h, "x-ratelimit-remaining-requests")),
        (200, "2".to_owned())
    );
    let (s, h, _) = chat(&gw, &[("x-portkey-provider", "mock")]).await;
    assert_eq!(s, 200);
    assert!(h.get("x-ratelimit-limit-requests").is_none());
}

async fn as_key(gw: &Gateway, key: &str) -> (u16, reqwest::header::HeaderMap, Value) {
    chat(
        gw,
        &[("x-portkey-provider", "mock"), ("x-portkey-api-key", key)],
    )
    .await
}

const MASTER: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

#[tokio::test]
async fn a_keys_rpm_and_a_virtual_keys_rule_are_counted_apart() {
    let dir = TempDir::new();
    let db = dir.path.join("state.db");
    let mock = MockUpstream::start().await.expect("mock");
    let config = config_with_mock(
        &mock,
        &format!(
            "[auth]\nrequired = true\n[state]\npath = \"{}\"\n[[rate_limits]]\nscope = \"virtual_key\"\nrpm = 1\n",
            db.display()
        ),
    );
    let config_file = dir.path.join("sluice.toml");
    std::fs::write(&config_file, &config).expect("config");
    let key = |name: &str, extra: &[&str]| -> String {
        let out = Command::new(binary())
            .args(["keys", "create", "--name", name, "--json", "--config"])
            .arg(&config_file)
            .args(extra)
            .output()
            .expect("sluice keys");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).expect("json");
        v["secret"].as_str().expect("secret").to_owned()
    };
    let (limited, free) = (key("limited", &["--rpm", "2"]), key("free", &[]));
    let mut vk = Command::new(binary())
        .args([
            "virtual-keys",
            "create",
            "--name",
            "vk1",
            "--provider",
            "mock",
            "--config",
        ])
        .arg(&config_file)
        .env("SLUICE_MASTER_KEY", MASTER)
        .stdin(Stdio::piped())
        .spawn()
        .expect("sluice virtual-keys");
    std::io::Write::write_all(&mut vk.stdin.take().expect("stdin"), b"sk-up\n").expect("stdin");
    assert!(vk.wait().expect("wait").success());
    let gw = Gateway::start_with(&config, &[("SLUICE_MASTER_KEY", MASTER)]);

    early_in_a_minute().await;
    for _ in 0..2 {
        let (s, _, body) = as_key(&gw, &limited).await;
        assert_eq!(s, 200, "{body}");
    }
    let (s, _, body) = as_key(&gw, &limited).await;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (429, Some("rate_limit_exceeded")),
        "{body}"
    );
    let (s, _, _) = as_key(&gw, &free).await;
    assert_eq!(s, 200, "a key without rpm is not limited by another's");

    // One request a minute through the virtual key, whichever gateway key sends it.
    let (s, _, body) = chat(
        &gw,
        &[
            ("x-portkey-virtual-key", "vk1"),
            ("x-portkey-api-key", &free),
        ],
    )
    .await;
    assert_eq!(s, 200, "{body}");
    let (s, h, body) = chat(
        &gw,
        &[
            ("x-portkey-virtual-key", "vk1"),
            ("x-portkey-api-key", &free),
        ],
    )
    .await;
    assert_eq!(s, 429, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("virtual_key:vk1")
    );
    assert!(h.get("retry-after").is_some());
}

#[test]
fn a_bad_rule_is_a_config_error() {
    let dir = TempDir::new();
    let file = dir.path.join("sluice.toml");
    std::fs::write(&file, "[[rate_limits]]\nscope = \"ip\"\nrpm = 0\n").expect("write");
    let out = Command::new(binary())
        .args(["config", "check"])
        .arg(&file)
        .output()
        .expect("run");
    let said =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        said.contains("rate_limits[0].scope") && said.contains("rate_limits[0].rpm"),
        "{said}"
    );
}
