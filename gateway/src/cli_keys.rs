//! `sluice keys ...`: create, list, revoke and rotate gateway keys in the
//! state database a server config names (or `--state PATH`). A running
//! gateway on the same file sees the change within a second.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, UNIX_EPOCH};

use anyhow::Context;
use sluice::config::ServerConfig;
use sluice::keys::{KeyRecord, Role, Store};

use super::KeysCommand;

/// Where the state database is: `--state`, else the config's `[state] path`.
#[derive(clap::Args)]
pub struct StateArgs {
    /// Server config (for its `[state] path`).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// The state database itself (overrides the config's).
    #[arg(long)]
    state: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

impl StateArgs {
    fn open(&self) -> anyhow::Result<Store> {
        let path = match (&self.state, &self.config) {
            (Some(path), _) => path.clone(),
            (None, Some(config)) => {
                ServerConfig::load(config)
                    .map_err(|p| anyhow::anyhow!("invalid config: {p}"))?
                    .state_path
            }
            (None, None) => {
                ServerConfig::defaults()
                    .map_err(|p| anyhow::anyhow!("{p}"))?
                    .state_path
            }
        };
        Store::open(&path).with_context(|| format!("cannot open {}", path.display()))
    }
}

pub fn keys(command: KeysCommand) -> anyhow::Result<ExitCode> {
    match command {
        KeysCommand::Create {
            name,
            role,
            expires_in_days,
            at,
        } => {
            let role: Role = role.parse().map_err(anyhow::Error::msg)?;
            let expires = expires_in_days.map(|d| sluice::keys::now() + i64::from(d) * 86_400);
            let (key, secret) = at.open()?.create(&name, role, expires)?;
            show_secret(&key, &secret, at.json, "created");
        }
        KeysCommand::List { at } => list(&at.open()?.list()?, at.json),
        KeysCommand::Revoke { id, at } => {
            let key = at.open()?.revoke(&id)?;
            show(&key, at.json, "revoked");
        }
        KeysCommand::Rotate { id, at } => {
            let (key, secret) = at.open()?.rotate(&id)?;
            show_secret(&key, &secret, at.json, "rotated");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn date(t: Option<i64>) -> String {
    t.map_or_else(
        || "-".to_owned(),
        |t| httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(t.max(0) as u64)),
    )
}

#[expect(clippy::print_stdout, reason = "the command's output")]
fn show(key: &KeyRecord, as_json: bool, what: &str) {
    if as_json {
        println!("{}", key.to_json());
    } else {
        println!("{what} {} ({}, `{}`)", key.id, key.role, key.name);
    }
}

#[expect(clippy::print_stdout, reason = "the command's output: the key, once")]
fn show_secret(key: &KeyRecord, secret: &str, as_json: bool, what: &str) {
    if as_json {
        println!(
            "{}",
            serde_json::json!({"key": key.to_json(), "secret": secret})
        );
    } else {
        println!("{what} {} ({}, `{}`)", key.id, key.role, key.name);
        println!("{secret}");
        println!("Keep it now: it is stored hashed and will not be shown again.");
    }
}

#[expect(clippy::print_stdout, reason = "the command's output")]
fn list(keys: &[KeyRecord], as_json: bool) {
    if as_json {
        let all: Vec<_> = keys.iter().map(KeyRecord::to_json).collect();
        println!("{}", serde_json::Value::Array(all));
        return;
    }
    let now = sluice::keys::now();
    println!(
        "{:<16}  {:<20}  {:<6}  {:<13}  {:<7}  {:<29}  EXPIRES",
        "ID", "NAME", "ROLE", "KEY", "STATUS", "CREATED"
    );
    for k in keys {
        println!(
            "{:<16}  {:<20}  {:<6}  {:<13}  {:<7}  {:<29}  {}",
            k.id,
            k.name,
            k.role.as_str(),
            k.hint,
            k.status(now),
            date(Some(k.created_at)),
            date(k.expires_at)
        );
    }
}
