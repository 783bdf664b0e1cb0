//! Gateway keys end to end: `sluice keys ...` writes the state database, the
//! running gateway authenticates against it (401 / 403 in OpenAI's shape) and
//! sees revocations and rotations made by the CLI while it runs.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sluice_tests::gateway::{TempDir, binary};
use sluice_tests::{Gateway, MockUpstream, admin, client, config_with_mock};

/// Runs `sluice keys ARGS --state DB --json`; returns its JSON output.
fn keys(db: &Path, args: &[&str]) -> Value {
    let out = Command::new(binary())
        .arg("keys")
        .args(args)
        .arg("--state")
        .arg(db)
        .arg("--json")
        .output()
        .expect("run sluice keys");
    assert!(
        out.status.success(),
        "sluice keys {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON output")
}

/// A new key's secret.
fn create(db: &Path, name: &str, role: &str, extra: &[&str]) -> (String, String) {
    let mut args = vec!["create", "--name", name, "--role", role];
    args.extend_from_slice(extra);
    let out = keys(db, &args);
    (
        out["key"]["id"].as_str().expect("id").to_owned(),
        out["secret"].as_str().expect("secret").to_owned(),
    )
}

async fn call(gw: &Gateway, method: &str, path: &str, headers: &[(&str, &str)]) -> (u16, Value) {
    let mut req = client().request(method.parse().expect("method"), gw.at(path));
    if method == "POST" {
        req = req.header("content-type", "application/json").body(
            json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}).to_string(),
        );
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let res = req.send().await.expect("send");
    let status = res.status().as_u16();
    let body = res.json().await.unwrap_or(Value::Null);
    (status, body)
}

fn code(body: &Value) -> &str {
    let e = &body["error"];
    assert!(
        e["message"].is_string() && e["type"].is_string() && e.get("param").is_some(),
        "OpenAI's error shape: {body}"
    );
    e["code"].as_str().unwrap_or("")
}

/// Waits (bounded) until a chat with `secret` gets `status`.
async fn until_status(gw: &Gateway, secret: &str, status: u16) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (s, body) = call(gw, "POST", "/v1/chat/completions", &chat_headers(secret)).await;
        if s == status {
            return body;
        }
        assert!(Instant::now() < deadline, "still {s} after 10 s: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn chat_headers(secret: &str) -> [(&str, &str); 3] {
    [
        ("x-portkey-provider", "mock"),
        ("authorization", "Bearer sk-provider"),
        ("x-portkey-api-key", secret),
    ]
}

#[tokio::test]
async fn keys_made_by_the_cli_gate_the_running_gateway() {
    let dir = TempDir::new();
    let db = dir.path.join("state.db");
    let (admin_id, admin) = create(&db, "ops", "admin", &[]);
    let (member_id, member) = create(&db, "app", "member", &[]);
    let (_, viewer) = create(&db, "dash", "viewer", &[]);
    let (_, expired) = create(&db, "old", "member", &["--expires-in-days", "0"]);
    let listed = keys(&db, &["list"]);
    let statuses: Vec<&str> = listed
        .as_array()
        .expect("a list")
        .iter()
        .map(|k| k["status"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(statuses, ["active", "active", "active", "expired"]);
    assert!(
        !listed.to_string().contains(&admin[4..]),
        "list shows no secret"
    );

    let mock = MockUpstream::start().await.expect("mock");
    let config = format!(
        "[auth]\nrequired = true\n[state]\npath = \"{}\"\n",
        db.display()
    );
    let gw = Gateway::start(&config_with_mock(&mock, &config));

    // No key, a wrong key, an expired one: 401, and nothing reaches the upstream.
    let (s, body) = call(
        &gw,
        "POST",
        "/v1/chat/completions",
        &[("x-portkey-provider", "mock")],
    )
    .await;
    assert_eq!((s, code(&body)), (401, "missing_api_key"), "{body}");
    let (s, body) = call(
        &gw,
        "POST",
        "/v1/chat/completions",
        &chat_headers("slk_wrong"),
    )
    .await;
    assert_eq!((s, code(&body)), (401, "invalid_api_key"), "{body}");
    let (s, body) = call(&gw, "POST", "/v1/chat/completions", &chat_headers(&expired)).await;
    assert_eq!((s, code(&body)), (401, "expired_api_key"), "{body}");
    let (s, body) = call(&gw, "GET", "/v1/models", &[]).await;
    assert_eq!((s, code(&body)), (401, "missing_api_key"), "{body}");
    assert!(mock.received().is_empty());

    // A member key proxies; the provider key goes upstream, the gateway key
    // does not. `x-sluice-api-key` works too.
    let (s, body) = call(&gw, "POST", "/v1/chat/completions", &chat_headers(&member)).await;
    assert_eq!(s, 200, "{body}");
    let seen = mock.last().expect("upstream call");
    assert_eq!(seen.headers["authorization"], "Bearer sk-provider");
    assert!(
        !format!("{:?}", seen.headers).contains(&member[4..]),
        "the gateway key reached the upstream"
    );
    let (s, _) = call(
        &gw,
        "POST",
        "/v1/chat/completions",
        &[
            ("x-portkey-provider", "mock"),
            ("authorization", "Bearer sk-provider"),
            ("x-sluice-api-key", &member),
        ],
    )
    .await;
    assert_eq!(s, 200);

    // Roles: a viewer may not proxy; only an admin reads /admin and /metrics,
    // by header or as a bearer token there. /health needs nothing.
    let (s, body) = call(&gw, "POST", "/v1/chat/completions", &chat_headers(&viewer)).await;
    assert_eq!((s, code(&body)), (403, "forbidden"), "{body}");
    let (s, body) = call(
        &gw,
        "GET",
        "/admin/plugins",
        &[("x-portkey-api-key", &member)],
    )
    .await;
    assert_eq!((s, code(&body)), (403, "forbidden"), "{body}");
    let (s, _) = call(
        &gw,
        "GET",
        "/admin/plugins",
        &[("x-portkey-api-key", &admin)],
    )
    .await;
    assert_eq!(s, 200);
    let bearer = format!("Bearer {admin}");
    let (s, _) = call(&gw, "GET", "/admin/targets", &[("authorization", &bearer)]).await;
    assert_eq!(s, 200);
    let res = client()
        .get(gw.at("/metrics"))
        .send()
        .await
        .expect("metrics");
    assert_eq!(res.status().as_u16(), 401);
    let (s, _) = call(&gw, "GET", "/health", &[]).await;
    assert_eq!(s, 200);

    // The CLI revokes and rotates while the gateway runs: it follows.
    keys(&db, &["revoke", &member_id]);
    let body = until_status(&gw, &member, 401).await;
    assert_eq!(code(&body), "revoked_api_key");
    let rotated = keys(&db, &["rotate", &admin_id]);
    let new_admin = rotated["secret"].as_str().expect("new secret").to_owned();
    assert_ne!(new_admin, admin);
    until_status(&gw, &admin, 401).await;
    until_status(&gw, &new_admin, 200).await;

    // No secret is ever logged.
    let logs = gw.logs();
    for secret in [&admin, &new_admin, &member, &viewer, &expired] {
        assert!(!logs.contains(&secret[4..]), "a key is in the logs");
    }
}

#[tokio::test]
async fn a_bad_command_changes_nothing() {
    let dir = TempDir::new();
    let db = dir.path.join("state.db");
    let (id, _) = create(&db, "one", "member", &[]);
    for args in [
        vec!["create", "--name", "x", "--role", "root"],
        vec!["revoke", "key_000000000000"],
        vec!["rotate", "key_000000000000"],
    ] {
        let out = Command::new(binary())
            .arg("keys")
            .args(&args)
            .arg("--state")
            .arg(&db)
            .output()
            .expect("run");
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(!out.stderr.is_empty(), "{args:?} said nothing");
    }
    keys(&db, &["revoke", &id]);
    let out = Command::new(binary())
        .args(["keys", "rotate", &id, "--state"])
        .arg(&db)
        .output()
        .expect("run");
    assert!(!out.status.success(), "a revoked key cannot be rotated");
    let listed = keys(&db, &["list"]);
    assert_eq!(listed.as_array().map(Vec::len), Some(1));
    assert_eq!(listed[0]["status"], "revoked");
}

#[tokio::test]
async fn on_loopback_no_key_is_needed_by_default() {
    let mock = MockUpstream::start().await.expect("mock");
    let gw = Gateway::start(&config_with_mock(&mock, ""));
    let (s, body) = call(
        &gw,
        "POST",
        "/v1/chat/completions",
        &[
            ("x-portkey-provider", "mock"),
            ("x-portkey-api-key", "pk-portkey-cloud-key"),
        ],
    )
    .await;
    assert_eq!(s, 200, "a Portkey client's own key is ignored: {body}");
}

#[tokio::test]
async fn the_admin_api_creates_lists_rotates_and_revokes_keys() {
    let dir = TempDir::new();
    let db = dir.path.join("state.db");
    let (_, root) = create(&db, "root", "admin", &[]);
    let mock = MockUpstream::start().await.expect("mock");
    let config = format!(
        "[auth]\nrequired = true\n[state]\npath = \"{}\"\n",
        db.display()
    );
    let gw = Gateway::start(&config_with_mock(&mock, &config));

    let (s, made) = admin(
        &gw,
        &root,
        "POST",
        "/admin/keys",
        Some(r#"{"name": "svc", "expires_in_days": 30}"#),
    )
    .await;
    assert_eq!(s, 201, "{made}");
    assert_eq!(
        (made["key"]["role"].as_str(), made["key"]["status"].as_str()),
        (Some("member"), Some("active"))
    );
    assert!(made["key"]["expires_at"].as_i64().is_some());
    let id = made["key"]["id"].as_str().expect("id").to_owned();
    let secret = made["secret"].as_str().expect("secret").to_owned();
    // Made in this process: usable at once.
    let (s, body) = call(&gw, "POST", "/v1/chat/completions", &chat_headers(&secret)).await;
    assert_eq!(s, 200, "{body}");

    let (s, listed) = admin(&gw, &root, "GET", "/admin/keys", None).await;
    assert_eq!(s, 200);
    assert_eq!(listed["keys"].as_array().map(Vec::len), Some(2));
    assert!(
        !listed.to_string().contains(&secret[4..]),
        "a list shows no secret"
    );
    let (s, one) = admin(&gw, &root, "GET", &format!("/admin/keys/{id}"), None).await;
    assert_eq!((s, one["name"].as_str()), (200, Some("svc")));

    // Bad input: the right 4xx, and no key is made.
    for (body, want) in [
        ("not json", "malformed_body"),
        (r#"{"name": "x", "admin": true}"#, "malformed_body"),
        (r#"{"role": "member"}"#, "malformed_body"),
        (r#"{"name": "x", "role": "root"}"#, "invalid_request"),
        (r#"{"name": "  "}"#, "invalid_request"),
        (r#"{"name": "x", "expires_in_days": -1}"#, "malformed_body"),
    ] {
        let (s, err) = admin(&gw, &root, "POST", "/admin/keys", Some(body)).await;
        assert_eq!((s, code(&err)), (400, want), "{body}: {err}");
    }
    let (s, err) = admin(
        &gw,
        &secret,
        "POST",
        "/admin/keys",
        Some(r#"{"name": "sneaky", "role": "admin"}"#),
    )
    .await;
    assert_eq!(
        (s, code(&err)),
        (403, "forbidden"),
        "a member cannot make keys"
    );
    for path in [
        "/admin/keys/key_000000000000",
        "/admin/keys/key_000000000000/revoke",
    ] {
        let method = if path.ends_with("revoke") {
            "POST"
        } else {
            "GET"
        };
        let (s, err) = admin(&gw, &root, method, path, None).await;
        assert_eq!((s, code(&err)), (404, "key_not_found"), "{path}");
    }
    let (_, listed) = admin(&gw, &root, "GET", "/admin/keys", None).await;
    assert_eq!(
        listed["keys"].as_array().map(Vec::len),
        Some(2),
        "bad input made a key"
    );

    // PATCH changes a key's settings, not its secret; null clears one.
    let path = format!("/admin/keys/{id}");
    let (s, patched) = admin(
        &gw,
        &root,
        "PATCH",
        &path,
        Some(r#"{"name": "svc-2", "allowed_models": ["nope-*"]}"#),
    )
    .await;
    assert_eq!(s, 200, "{patched}");
    assert_eq!(
        (
            patched["name"].as_str(),
            patched["allowed_models"][0].as_str()
        ),
        (Some("svc-2"), Some("nope-*"))
    );
    assert!(
        patched["expires_at"].as_i64().is_some(),
        "untouched fields stay"
    );
    let (s, body) = call(&gw, "POST", "/v1/chat/completions", &chat_headers(&secret)).await;
    assert_eq!((s, code(&body)), (403, "forbidden"), "{body}");
    let (s, patched) = admin(
        &gw,
        &root,
        "PATCH",
        &path,
        Some(r#"{"allowed_models": null, "expires_in_days": null}"#),
    )
    .await;
    assert_eq!(s, 200, "{patched}");
    assert!(
        patched.get("allowed_models").is_none() && patched["expires_at"].is_null(),
        "{patched}"
    );
    let (s, _) = call(&gw, "POST", "/v1/chat/completions", &chat_headers(&secret)).await;
    assert_eq!(s, 200, "the same secret works again");
    for (body, want) in [
        (r#"{"role": "root"}"#, "invalid_request"),
        (r#"{"name": ""}"#, "invalid_request"),
        (r#"{"expires_in_days": "soon"}"#, "invalid_request"),
        (r#"{"allowed_models": []}"#, "invalid_request"),
        (r#"{"bogus": 1}"#, "malformed_body"),
        ("[1]", "malformed_body"),
    ] {
        let (s, err) = admin(&gw, &root, "PATCH", &path, Some(body)).await;
        assert_eq!((s, code(&err)), (400, want), "{body}: {err}");
    }
    let (_, unchanged) = admin(&gw, &root, "GET", &path, None).await;
    assert_eq!(
        unchanged["name"], "svc-2",
        "a refused patch changed nothing"
    );
    let (s, err) = admin(
        &gw,
        &root,
        "PATCH",
        "/admin/keys/key_000000000000",
        Some("{}"),
    )
    .await;
    assert_eq!((s, code(&err)), (404, "key_not_found"));

    // Rotation and revocation apply at once in the gateway that made them.
    let (s, rotated) = admin(
        &gw,
        &root,
        "POST",
        &format!("/admin/keys/{id}/rotate"),
        None,
    )
    .await;
    assert_eq!(s, 200, "{rotated}");
    let new_secret = rotated["secret"].as_str().expect("secret").to_owned();
    let (s, _) = call(&gw, "POST", "/v1/chat/completions", &chat_headers(&secret)).await;
    assert_eq!(s, 401, "the old secret stopped working");
    let (s, _) = call(
        &gw,
        "POST",
        "/v1/chat/completions",
        &chat_headers(&new_secret),
    )
    .await;
    assert_eq!(s, 200);
    let (s, revoked) = admin(
        &gw,
        &root,
        "POST",
        &format!("/admin/keys/{id}/revoke"),
        None,
    )
    .await;
    assert_eq!((s, revoked["status"].as_str()), (200, Some("revoked")));
    let (s, body) = call(
        &gw,
        "POST",
        "/v1/chat/completions",
        &chat_headers(&new_secret),
    )
    .await;
    assert_eq!((s, code(&body)), (401, "revoked_api_key"));
    let (s, err) = admin(
        &gw,
        &root,
        "POST",
        &format!("/admin/keys/{id}/rotate"),
        None,
    )
    .await;
    assert_eq!(
        (s, code(&err)),
        (400, "invalid_request"),
        "a revoked key is not rotated"
    );
    let logs = gw.logs();
    assert!(
        ![&root, &secret, &new_secret]
            .iter()
            .any(|k| logs.contains(&k[4..]))
    );
}

#[tokio::test]
async fn a_keys_limits_default_config_and_metadata_apply_to_its_requests() {
    let dir = TempDir::new();
    let db = dir.path.join("state.db");
    let mock = MockUpstream::start().await.expect("mock");
    // The key's default config routes on metadata the key sets.
    let routed = json!({
        "strategy": {"mode": "conditional",
            "conditions": [{"query": {"metadata.team": {"$eq": "checkout"}}, "then": "team"}],
            "default": "other"},
        "targets": [
            {"name": "team", "provider": "mock", "override_params": {"model": "team-model"}},
            {"name": "other", "provider": "mock"}
        ]
    })
    .to_string();
    let config = format!(
        "[auth]\nrequired = true\n[state]\npath = \"{}\"\n[configs.plain]\nprovider = \"mock\"\n",
        db.display()
    );
    let config_text = config_with_mock(&mock, &config);
    let config_file = dir.path.join("sluice.toml");
    std::fs::write(&config_file, &config_text).expect("config");
    let cli = |args: &[&str]| -> std::process::Output {
        Command::new(binary())
            .arg("keys")
            .args(args)
            .arg("--config")
            .arg(&config_file)
            .arg("--json")
            .output()
            .expect("run")
    };
    let made = cli(&[
        "create",
        "--name",
        "checkout",
        "--allow-provider",
        "mock",
        "--allow-model",
        "gpt-4o*",
        "--allow-model",
        "team-model",
        "--metadata",
        "team=checkout",
        "--default-config",
        &routed,
    ]);
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let made: Value = serde_json::from_slice(&made.stdout).expect("json");
    assert_eq!(made["key"]["metadata"]["team"], "checkout");
    let scoped = made["secret"].as_str().expect("secret").to_owned();
    let bad = cli(&["create", "--name", "x", "--default-config", "missing"]);
    assert!(
        !bad.status.success(),
        "an unknown default config is refused"
    );
    let bad = cli(&["create", "--name", "x", "--metadata", "novalue"]);
    assert!(!bad.status.success(), "metadata is KEY=VALUE");

    let (_, root) = create(&db, "root", "admin", &[]);
    let gw = Gateway::start(&config_text);
    let send = |model: &str, extra: &[(&'static str, String)]| {
        let mut req = client()
            .post(gw.at("/v1/chat/completions"))
            .header("content-type", "application/json")
            .header("x-portkey-api-key", scoped.as_str())
            .body(
                json!({"model": model, "messages": [{"role": "user", "content": "hi"}]})
                    .to_string(),
            );
        for (k, v) in extra {
            req = req.header(*k, v.as_str());
        }
        req.send()
    };
    // No config named: the key's, routed by the key's metadata, which wins
    // over the request's.
    let res = send(
        "gpt-4o-mini",
        &[("x-portkey-metadata", json!({"team": "other"}).to_string())],
    )
    .await
    .expect("send");
    assert_eq!(res.status().as_u16(), 200);
    let seen: Value = serde_json::from_slice(&mock.last().expect("upstream").body).expect("json");
    assert_eq!(seen["model"], "team-model", "routed by the key's metadata");

    // A named config in the request replaces the key's; its model is checked.
    let res = send("gpt-4o-mini", &[("x-portkey-config", "plain".into())])
        .await
        .expect("send");
    assert_eq!(res.status().as_u16(), 200);
    let before = mock.received().len();
    let res = send("claude-sonnet-4", &[("x-portkey-config", "plain".into())])
        .await
        .expect("send");
    assert_eq!(res.status().as_u16(), 403);
    let body: Value = res.json().await.expect("json");
    assert_eq!(code(&body), "forbidden");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("claude-sonnet-4")
    );
    assert_eq!(
        mock.received().len(),
        before,
        "a refused model never reaches the upstream"
    );

    // The admin API takes the same settings and checks them.
    let (s, err) = admin(
        &gw,
        &root,
        "POST",
        "/admin/keys",
        Some(r#"{"name": "x", "default_config": "missing"}"#),
    )
    .await;
    assert_eq!((s, code(&err)), (400, "invalid_request"), "{err}");
    let (s, made) = admin(
        &gw,
        &root,
        "POST",
        "/admin/keys",
        Some(r#"{"name": "openai-only", "allowed_providers": ["openai"], "default_config": "plain"}"#),
    )
    .await;
    assert_eq!(s, 201, "{made}");
    let only = made["secret"].as_str().expect("secret").to_owned();
    let (s, body) = call(&gw, "POST", "/v1/chat/completions", &chat_headers(&only)).await;
    assert_eq!(
        (s, code(&body)),
        (403, "forbidden"),
        "mock is not openai: {body}"
    );
}
