use super::*;

fn temp_db(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sluice-keys-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir.join("state.db")
}

use std::path::PathBuf;

#[test]
fn a_created_key_authenticates_until_it_is_revoked() {
    let store = Store::open(&temp_db("revoke")).expect("open");
    assert!(!store.any_active());
    let (key, secret) = store
        .create("ci", Role::Member, None, KeySettings::default())
        .expect("create");
    assert!(
        secret.starts_with("slk_") && secret.len() == 4 + 43,
        "{secret}"
    );
    assert!(key.id.starts_with("key_") && key.id.len() == 16);
    assert_eq!(key.hint, format!("{}…", &secret[..12]));
    assert!(store.any_active());
    assert_eq!(store.authenticate(&secret).expect("valid").id, key.id);
    assert_eq!(store.authenticate("slk_nope"), Err(AuthError::Unknown));
    let revoked = store.revoke(&key.id).expect("revoke");
    assert!(revoked.revoked_at.is_some());
    assert_eq!(store.authenticate(&secret), Err(AuthError::Revoked));
    // Revoking again keeps the first time; an unknown id is an error.
    assert_eq!(
        store.revoke(&key.id).expect("again").revoked_at,
        revoked.revoked_at
    );
    assert!(matches!(
        store.revoke("key_000000000000"),
        Err(StoreError::NoSuchKey(_))
    ));
    assert!(matches!(store.rotate(&key.id), Err(StoreError::Revoked(_))));
}

#[test]
fn rotating_replaces_the_secret_and_keeps_the_key() {
    let store = Store::open(&temp_db("rotate")).expect("open");
    let (key, old) = store
        .create("app", Role::Admin, None, KeySettings::default())
        .expect("create");
    let (rotated, new) = store.rotate(&key.id).expect("rotate");
    assert_ne!(old, new);
    assert_eq!(
        (rotated.id.as_str(), rotated.role),
        (key.id.as_str(), Role::Admin)
    );
    assert_eq!(store.authenticate(&old), Err(AuthError::Unknown));
    assert_eq!(store.authenticate(&new).expect("new").id, key.id);
}

#[test]
fn an_expired_key_is_refused() {
    let store = Store::open(&temp_db("expiry")).expect("open");
    let (_, past) = store
        .create("old", Role::Member, Some(now() - 1), KeySettings::default())
        .expect("create");
    let (_, future) = store
        .create(
            "new",
            Role::Member,
            Some(now() + 3600),
            KeySettings::default(),
        )
        .expect("create");
    assert_eq!(store.authenticate(&past), Err(AuthError::Expired));
    assert!(store.authenticate(&future).is_ok());
    let statuses: Vec<_> = store
        .list()
        .expect("list")
        .iter()
        .map(|k| k.status(now()))
        .collect();
    assert_eq!(statuses, ["expired", "active"]);
}

#[test]
fn another_connections_changes_are_seen_on_refresh_and_secrets_are_not_stored() {
    let path = temp_db("shared");
    let gateway = Store::open(&path).expect("open");
    let cli = Store::open(&path).expect("open again: the schema is not re-created");
    let (key, secret) = cli
        .create("shared", Role::Member, None, KeySettings::default())
        .expect("create");
    assert_eq!(
        gateway.authenticate(&secret),
        Err(AuthError::Unknown),
        "not yet seen"
    );
    gateway.refresh().expect("refresh");
    assert_eq!(gateway.authenticate(&secret).expect("seen").id, key.id);
    cli.revoke(&key.id).expect("revoke");
    gateway.refresh().expect("refresh");
    assert_eq!(gateway.authenticate(&secret), Err(AuthError::Revoked));
    drop((gateway, cli));
    let mut bytes = std::fs::read(&path).expect("db");
    bytes.extend(std::fs::read(path.with_extension("db-wal")).unwrap_or_default());
    let needle = &secret.as_bytes()[4..];
    assert!(
        !bytes.windows(needle.len()).any(|w| w == needle),
        "the secret is in the database file"
    );
}

#[test]
fn roles_parse_and_gate_the_proxy() {
    assert_eq!("viewer".parse::<Role>(), Ok(Role::Viewer));
    assert!("root".parse::<Role>().is_err());
    assert!(Role::Admin.may_proxy() && Role::Member.may_proxy() && !Role::Viewer.may_proxy());
}

const MASTER: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="; // 32 bytes
const OTHER: &str = "ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA=";

fn vkeys(path: &std::path::Path, master: Option<&str>) -> VirtualKeys {
    let db = std::sync::Arc::new(crate::state::Db::open(path).expect("db"));
    let master = master.map(|m| MasterKey::from_base64(m).expect("master"));
    VirtualKeys::new(db, master).expect("virtual keys")
}

#[test]
fn a_virtual_key_is_sealed_at_rest_and_resolves_to_its_provider_and_secret() {
    let path = temp_db("vk");
    let vk = vkeys(&path, Some(MASTER));
    let info = vk
        .create("openai-prod", "openai", "sk-live-abcdef123456")
        .expect("create");
    assert_eq!((info.provider.as_str(), info.status), ("openai", "active"));
    let r = vk.resolve("openai-prod").expect("resolve");
    assert_eq!(
        (r.provider.as_str(), r.secret.expose()),
        ("openai", "sk-live-abcdef123456")
    );
    assert_eq!(
        vk.resolve("nope").err(),
        Some(VirtualKeyError::Unknown("nope".into()))
    );
    assert!(
        matches!(
            vk.create("openai-prod", "openai", "sk-2"),
            Err(StoreError::Invalid(_))
        ),
        "names are unique"
    );
    assert!(matches!(
        vk.create("bad name", "openai", "sk"),
        Err(StoreError::Invalid(_))
    ));

    // Rotating changes the secret behind the same name.
    vk.rotate("openai-prod", "sk-live-rotated").expect("rotate");
    assert_eq!(
        vk.resolve("openai-prod").expect("resolve").secret.expose(),
        "sk-live-rotated"
    );
    drop(vk);
    let mut bytes = std::fs::read(&path).expect("db");
    bytes.extend(std::fs::read(path.with_extension("db-wal")).unwrap_or_default());
    for plain in ["sk-live-abcdef123456", "sk-live-rotated"] {
        assert!(
            !bytes.windows(plain.len()).any(|w| w == plain.as_bytes()),
            "{plain} is in the file"
        );
    }

    // Another master key, or none, cannot open it; creating needs one.
    let wrong = vkeys(&path, Some(OTHER));
    assert_eq!(
        wrong.resolve("openai-prod").err(),
        Some(VirtualKeyError::Sealed("openai-prod".into()))
    );
    let none = vkeys(&path, None);
    assert_eq!(
        none.resolve("openai-prod").err(),
        Some(VirtualKeyError::Sealed("openai-prod".into()))
    );
    assert!(matches!(
        none.create("x", "openai", "sk"),
        Err(StoreError::NoMasterKey)
    ));

    let vk = vkeys(&path, Some(MASTER));
    vk.revoke("openai-prod").expect("revoke");
    assert_eq!(
        vk.resolve("openai-prod").err(),
        Some(VirtualKeyError::Revoked("openai-prod".into()))
    );
    assert!(matches!(
        vk.rotate("openai-prod", "sk-3"),
        Err(StoreError::Revoked(_))
    ));
    assert!(matches!(
        vk.revoke("missing"),
        Err(StoreError::NoSuchKey(_))
    ));
}

#[test]
fn a_sealed_secret_moved_to_another_name_does_not_open() {
    let path = temp_db("vk-swap");
    let vk = vkeys(&path, Some(MASTER));
    vk.create("a", "openai", "sk-a").expect("a");
    vk.create("b", "anthropic", "sk-b").expect("b");
    let db = crate::state::Db::open(&path).expect("db");
    db.with(|c| {
        c.execute(
            "UPDATE virtual_keys SET (nonce, secret) = (SELECT nonce, secret FROM virtual_keys WHERE name = 'a') WHERE name = 'b'",
            [],
        )
    })
    .expect("swap");
    vk.refresh().expect("refresh");
    assert_eq!(
        vk.resolve("b").err(),
        Some(VirtualKeyError::Sealed("b".into()))
    );
    assert_eq!(vk.resolve("a").expect("a").secret.expose(), "sk-a");
}

#[test]
fn a_master_key_is_32_bytes_of_base64() {
    assert!(MasterKey::from_base64(MASTER).is_ok());
    assert!(
        MasterKey::from_base64(" MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY\n").is_ok(),
        "unpadded, spaces"
    );
    for bad in ["", "c2hvcnQ=", "not base64 at all!"] {
        assert!(
            matches!(MasterKey::from_base64(bad), Err(StoreError::Invalid(_))),
            "{bad}"
        );
    }
}

#[test]
fn a_keys_settings_are_kept_checked_and_applied() {
    let store = Store::open(&temp_db("settings")).expect("open");
    let settings: KeySettings = serde_json::from_value(serde_json::json!({
        "allowed_providers": ["openai", "anthropic"],
        "allowed_models": ["gpt-4o-mini", "claude-*"],
        "metadata": {"team": "checkout"},
    }))
    .expect("settings");
    let (key, _) = store
        .create("scoped", Role::Member, None, settings.clone())
        .expect("create");
    assert_eq!(store.get(&key.id).expect("get").settings, settings);
    let json = key.to_json();
    assert_eq!(json["allowed_models"][1], "claude-*");
    assert_eq!(json["metadata"]["team"], "checkout");

    assert!(settings.allows("openai", Some("gpt-4o-mini")));
    assert!(settings.allows("anthropic", Some("claude-sonnet-4")));
    assert!(
        !settings.allows("openai", Some("gpt-4o")),
        "an exact name is not a prefix"
    );
    assert!(
        !settings.allows("groq", Some("gpt-4o-mini")),
        "provider not allowed"
    );
    assert!(
        settings.allows("openai", None),
        "no model: judged by the provider"
    );
    assert!(KeySettings::default().allows("any", Some("thing")));

    let config = crate::config::ServerConfig::parse("[configs.prod]\nprovider = \"openai\"")
        .expect("config");
    let check = |v: serde_json::Value| {
        serde_json::from_value::<KeySettings>(v)
            .expect("shape")
            .check(&config)
    };
    assert!(check(serde_json::json!({"default_config": "prod"})).is_ok());
    assert!(check(serde_json::json!({"default_config": "{\"provider\": \"openai\"}"})).is_ok());
    for bad in [
        serde_json::json!({"default_config": "nope"}),
        serde_json::json!({"default_config": "{\"provider\": \"nope\"}"}),
        serde_json::json!({"allowed_models": []}),
        serde_json::json!({"allowed_providers": [" "]}),
        serde_json::json!({"metadata": {"n": 1}}),
    ] {
        assert!(check(bad.clone()).is_err(), "{bad}");
    }
    assert!(
        serde_json::from_value::<KeySettings>(serde_json::json!({"budget": 5})).is_err(),
        "unknown fields"
    );
}
