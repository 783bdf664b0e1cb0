//! Virtual keys end to end: `sluice virtual-keys` seals a provider key in the
//! state database; clients name it (`x-portkey-virtual-key`, or `virtual_key`
//! in a config target) and never hold the secret; rotating it needs no client
//! change.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sluice_tests::gateway::{TempDir, binary};
use sluice_tests::{Gateway, MockUpstream, admin, client, config_with_mock};

const MASTER: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

/// Runs `sluice virtual-keys ARGS --config CONFIG` with `stdin`; returns
/// (success, stdout, stderr).
fn vk(config: &Path, master: Option<&str>, args: &[&str], stdin: &str) -> (bool, String, String) {
    let mut cmd = Command::new(binary());
    cmd.arg("virtual-keys")
        .args(args)
        .arg("--config")
        .arg(config)
        .env_remove("SLUICE_MASTER_KEY")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(m) = master {
        cmd.env("SLUICE_MASTER_KEY", m);
    }
    let mut child = cmd.spawn().expect("run sluice virtual-keys");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    let out = child.wait_with_output().expect("wait");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A state directory, the mock, and a config with its state there (then
/// `extra`) as text and as a file.
struct SetUp {
    dir: TempDir,
    mock: MockUpstream,
    text: String,
    file: std::path::PathBuf,
}

impl SetUp {
    async fn new(extra: &str) -> Self {
        let dir = TempDir::new();
        let mock = MockUpstream::start().await.expect("mock");
        let text = config_with_mock(
            &mock,
            &format!(
                "[state]\npath = \"{}\"\n{extra}",
                dir.path.join("state.db").display()
            ),
        );
        let file = dir.path.join("sluice.toml");
        std::fs::write(&file, &text).expect("config");
        Self {
            dir,
            mock,
            text,
            file,
        }
    }

    fn db(&self) -> std::path::PathBuf {
        self.dir.path.join("state.db")
    }
}

async fn chat(gw: &Gateway, headers: &[(&str, &str)]) -> (u16, Value) {
    let mut req = client()
        .post(gw.at("/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(
            json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}).to_string(),
        );
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let res = req.send().await.expect("send");
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

fn code(body: &Value) -> &str {
    assert!(
        body["error"]["message"].is_string(),
        "OpenAI's error shape: {body}"
    );
    body["error"]["code"].as_str().unwrap_or("")
}

#[tokio::test]
async fn clients_name_a_virtual_key_and_never_hold_the_provider_secret() {
    let set_up = SetUp::new("").await;
    let (mock, config_text, config, db) = (&set_up.mock, &set_up.text, &set_up.file, set_up.db());

    // The CLI: a master key is needed, the provider must exist, names are unique.
    let (ok, _, err) = vk(
        config,
        None,
        &["create", "--name", "mock-prod", "--provider", "mock"],
        "sk-up-1\n",
    );
    assert!(!ok && err.contains("master key"), "{err}");
    let (ok, _, err) = vk(
        config,
        Some(MASTER),
        &["create", "--name", "x", "--provider", "nope"],
        "sk\n",
    );
    assert!(!ok && err.contains("unknown provider"), "{err}");
    let (ok, out, err) = vk(
        config,
        Some(MASTER),
        &[
            "create",
            "--name",
            "mock-prod",
            "--provider",
            "mock",
            "--json",
        ],
        "sk-up-1\n",
    );
    assert!(ok, "{err}");
    let made: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(
        (made["provider"].as_str(), made["status"].as_str()),
        (Some("mock"), Some("active"))
    );
    assert!(!out.contains("sk-up-1"));
    let (ok, _, _) = vk(
        config,
        Some(MASTER),
        &["create", "--name", "mock-prod", "--provider", "mock"],
        "sk-other\n",
    );
    assert!(!ok, "a name is taken once");

    let gw = Gateway::start_with(config_text, &[("SLUICE_MASTER_KEY", MASTER)]);

    // By header: no provider header, no provider key from the client.
    let (s, body) = chat(&gw, &[("x-portkey-virtual-key", "mock-prod")]).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(
        mock.last().expect("upstream").headers["authorization"],
        "Bearer sk-up-1"
    );
    // In a config target; a client's bearer token does not replace it.
    let target = json!({"virtual_key": "mock-prod"}).to_string();
    let (s, body) = chat(
        &gw,
        &[
            ("x-portkey-config", &target),
            ("authorization", "Bearer sk-client"),
        ],
    )
    .await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(
        mock.last().expect("upstream").headers["authorization"],
        "Bearer sk-up-1"
    );

    // Bad names: 401 or 400, and nothing reaches the upstream.
    let before = mock.received().len();
    let (s, body) = chat(&gw, &[("x-portkey-virtual-key", "missing")]).await;
    assert_eq!((s, code(&body)), (401, "invalid_virtual_key"), "{body}");
    let wrong = json!({"provider": "openai", "virtual_key": "mock-prod"}).to_string();
    let (s, body) = chat(&gw, &[("x-portkey-config", &wrong)]).await;
    assert_eq!((s, code(&body)), (400, "invalid_request"), "{body}");
    assert_eq!(mock.received().len(), before);

    // Rotation by the CLI reaches the running gateway; the client is unchanged.
    let (ok, _, err) = vk(config, Some(MASTER), &["rotate", "mock-prod"], "sk-up-2\n");
    assert!(ok, "{err}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (s, body) = chat(&gw, &[("x-portkey-virtual-key", "mock-prod")]).await;
        assert_eq!(s, 200, "{body}");
        if mock.last().expect("upstream").headers["authorization"] == "Bearer sk-up-2" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the rotation was not seen in 10 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (ok, _, _) = vk(config, Some(MASTER), &["revoke", "mock-prod"], "");
    assert!(ok);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (s, body) = chat(&gw, &[("x-portkey-virtual-key", "mock-prod")]).await;
        if s == 401 {
            assert_eq!(code(&body), "revoked_virtual_key");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the revocation was not seen in 10 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The secrets are in neither the database nor the logs.
    let mut bytes = std::fs::read(&db).expect("db");
    bytes.extend(std::fs::read(db.with_extension("db-wal")).unwrap_or_default());
    let logs = gw.logs();
    for secret in ["sk-up-1", "sk-up-2"] {
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "{secret} in the db"
        );
        assert!(!logs.contains(secret), "{secret} in the logs");
    }
    let (ok, out, _) = vk(config, Some(MASTER), &["list", "--json"], "");
    assert!(ok);
    let listed: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(listed[0]["status"], "revoked");
}

#[tokio::test]
async fn a_gateway_without_the_master_key_says_so() {
    let set_up = SetUp::new("").await;
    let (mock, config_text, config) = (&set_up.mock, &set_up.text, &set_up.file);
    let (ok, _, err) = vk(
        config,
        Some(MASTER),
        &["create", "--name", "k", "--provider", "mock"],
        "sk-up\n",
    );
    assert!(ok, "{err}");
    let gw = Gateway::start(config_text);
    let (s, body) = chat(&gw, &[("x-portkey-virtual-key", "k")]).await;
    assert_eq!((s, code(&body)), (500, "virtual_key_sealed"), "{body}");
    assert!(mock.received().is_empty());
}

#[tokio::test]
async fn the_admin_api_manages_virtual_keys_and_never_returns_a_secret() {
    let set_up = SetUp::new("[auth]\nrequired = true\n").await;
    let (mock, config_text, db) = (&set_up.mock, &set_up.text, set_up.db());
    let make_key = |role: &str| -> String {
        let out = Command::new(binary())
            .args([
                "keys", "create", "--name", role, "--role", role, "--json", "--state",
            ])
            .arg(&db)
            .output()
            .expect("sluice keys");
        let v: Value = serde_json::from_slice(&out.stdout).expect("json");
        v["secret"].as_str().expect("secret").to_owned()
    };
    let (root, member) = (make_key("admin"), make_key("member"));
    let gw = Gateway::start_with(config_text, &[("SLUICE_MASTER_KEY", MASTER)]);

    let (s, made) = admin(
        &gw,
        &root,
        "POST",
        "/admin/virtual-keys",
        Some(r#"{"name": "m1", "provider": "mock", "key": "sk-api-1"}"#),
    )
    .await;
    assert_eq!(s, 201, "{made}");
    assert_eq!(made["name"], "m1");
    assert!(
        !made.to_string().contains("sk-api-1"),
        "the secret came back"
    );
    let vk_headers = [
        ("x-portkey-virtual-key", "m1"),
        ("x-portkey-api-key", member.as_str()),
    ];
    let (s, body) = chat(&gw, &vk_headers).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(
        mock.last().expect("upstream").headers["authorization"],
        "Bearer sk-api-1"
    );

    for (body, want) in [
        (r#"{"name": "m2", "provider": "mock"}"#, "malformed_body"),
        // The fields in order, as an array: not an object.
        (r#"["m2", "mock", "k"]"#, "malformed_body"),
        (
            r#"{"name": "m2", "provider": "mock", "key": "k", "extra": 1}"#,
            "malformed_body",
        ),
        (
            r#"{"name": "m2", "provider": "nope", "key": "k"}"#,
            "unknown_provider",
        ),
        (
            r#"{"name": "bad name", "provider": "mock", "key": "k"}"#,
            "invalid_request",
        ),
        (
            r#"{"name": "m1", "provider": "mock", "key": "k"}"#,
            "invalid_request",
        ),
        (
            r#"{"name": "m2", "provider": "mock", "key": ""}"#,
            "invalid_request",
        ),
    ] {
        let (s, err) = admin(&gw, &root, "POST", "/admin/virtual-keys", Some(body)).await;
        assert_eq!((s, code(&err)), (400, want), "{body}: {err}");
    }
    let (s, err) = admin(
        &gw,
        &member,
        "POST",
        "/admin/virtual-keys",
        Some(r#"{"name": "m3", "provider": "mock", "key": "k"}"#),
    )
    .await;
    assert_eq!((s, code(&err)), (403, "forbidden"));
    let (s, listed) = admin(&gw, &root, "GET", "/admin/virtual-keys", None).await;
    assert_eq!(s, 200);
    assert_eq!(
        listed["virtual_keys"].as_array().map(Vec::len),
        Some(1),
        "bad input made a key: {listed}"
    );
    assert!(!listed.to_string().contains("sk-api"));

    // Rotation and revocation apply at once here.
    let (s, _) = admin(
        &gw,
        &root,
        "POST",
        "/admin/virtual-keys/m1/rotate",
        Some(r#"{"key": "sk-api-2"}"#),
    )
    .await;
    assert_eq!(s, 200);
    let (s, _) = chat(&gw, &vk_headers).await;
    assert_eq!(s, 200);
    assert_eq!(
        mock.last().expect("upstream").headers["authorization"],
        "Bearer sk-api-2"
    );
    let (s, revoked) = admin(&gw, &root, "POST", "/admin/virtual-keys/m1/revoke", None).await;
    assert_eq!((s, revoked["status"].as_str()), (200, Some("revoked")));
    let (s, body) = chat(&gw, &vk_headers).await;
    assert_eq!((s, code(&body)), (401, "revoked_virtual_key"));
    let (s, err) = admin(&gw, &root, "GET", "/admin/virtual-keys/none", None).await;
    assert_eq!((s, code(&err)), (404, "key_not_found"));
    assert!(
        !gw.logs().contains("sk-api-"),
        "a provider key is in the logs"
    );
}

#[tokio::test]
async fn a_virtual_key_deeper_in_a_config_has_its_budget_checked_before_the_call() {
    // 10 cents a token: 80 cents a request (5 in, 3 out).
    let set_up = SetUp::new(
        "[[pricing]]\nmodel = \"gpt-4o\"\ninput = 100000.0\noutput = 100000.0\n\
         [[budgets]]\nscope = \"virtual_key\"\nname = \"spent\"\nusd = 0.5\n\
         [[budgets]]\nscope = \"virtual_key\"\nname = \"cheap\"\nusd = 1.2\n",
    )
    .await;
    let (mock, config_text, config) = (&set_up.mock, &set_up.text, &set_up.file);
    for (name, secret) in [("spent", "sk-spent\n"), ("cheap", "sk-cheap\n")] {
        let (ok, _, err) = vk(
            config,
            Some(MASTER),
            &["create", "--name", name, "--provider", "mock"],
            secret,
        );
        assert!(ok, "{err}");
    }
    let gw = Gateway::start_with(config_text, &[("SLUICE_MASTER_KEY", MASTER)]);
    // Spend answers are charged as they end: let each land.
    let settle = || tokio::time::sleep(Duration::from_millis(150));

    let (s, body) = chat(&gw, &[("x-portkey-virtual-key", "spent")]).await;
    assert_eq!(s, 200, "{body}");
    settle().await;
    let (s, body) = chat(&gw, &[("x-portkey-virtual-key", "spent")]).await;
    assert_eq!((s, code(&body)), (412, "budget_exceeded"), "{body}");
    let called = mock.received().len();

    // The spent key is a fallback's first target: it is passed over without
    // a call, and the next target's key answers and is charged.
    let fallback = json!({"strategy": {"mode": "fallback"},
        "targets": [{"virtual_key": "spent"}, {"virtual_key": "cheap"}]})
    .to_string();
    for _ in 0..2 {
        let (s, body) = chat(&gw, &[("x-portkey-config", &fallback)]).await;
        assert_eq!(s, 200, "{body}");
        assert_eq!(
            mock.last().expect("upstream").headers["authorization"],
            "Bearer sk-cheap"
        );
        settle().await;
    }
    assert_eq!(
        mock.received().len(),
        called + 2,
        "the spent key is not called"
    );
    // $1.60 spent on `cheap` through the config: both are spent now.
    let (s, body) = chat(&gw, &[("x-portkey-config", &fallback)]).await;
    assert_eq!((s, code(&body)), (412, "budget_exceeded"), "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("virtual_key:cheap")),
        "{body}"
    );
    assert_eq!(mock.received().len(), called + 2);
}
