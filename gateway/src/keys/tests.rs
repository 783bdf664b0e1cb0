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
    let (key, secret) = store.create("ci", Role::Member, None).expect("create");
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
    let (key, old) = store.create("app", Role::Admin, None).expect("create");
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
        .create("old", Role::Member, Some(now() - 1))
        .expect("create");
    let (_, future) = store
        .create("new", Role::Member, Some(now() + 3600))
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
    let (key, secret) = cli.create("shared", Role::Member, None).expect("create");
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
