//! `sluice keys ...` and `sluice virtual-keys ...`: create, list, revoke and
//! rotate gateway keys and virtual keys in the state database a server config
//! names (or `--state PATH`). A running gateway on the same file sees the
//! change within a second.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use anyhow::Context;
use sluice::config::ServerConfig;
use sluice::keys::{KeyRecord, KeySettings, MasterKey, Role, Store, VirtualKeyInfo, VirtualKeys};
use sluice::state::Db;

use super::{KeysCommand, VirtualKeysCommand};

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
    /// The server config the arguments name (the defaults without one).
    fn config(&self) -> anyhow::Result<ServerConfig> {
        match &self.config {
            Some(path) => {
                ServerConfig::load(path).map_err(|p| anyhow::anyhow!("invalid config: {p}"))
            }
            None => ServerConfig::defaults().map_err(|p| anyhow::anyhow!("{p}")),
        }
    }

    fn db(&self) -> anyhow::Result<(Arc<Db>, ServerConfig)> {
        let config = self.config()?;
        let path = self
            .state
            .clone()
            .unwrap_or_else(|| config.state_path.clone());
        let db = Db::open(&path).with_context(|| format!("cannot open {}", path.display()))?;
        Ok((Arc::new(db), config))
    }

    fn open(&self) -> anyhow::Result<Store> {
        Ok(Store::new(self.db()?.0)?)
    }

    fn open_virtual(&self) -> anyhow::Result<(VirtualKeys, ServerConfig)> {
        let (db, config) = self.db()?;
        let master = MasterKey::from_env_or_file(config.master_key_file.as_deref())?;
        Ok((VirtualKeys::new(db, master)?, config))
    }
}

/// A provider key from stdin (never an argument: those reach shell history and
/// `ps`).
fn secret_from_stdin() -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .context("cannot read the provider key from stdin")?;
    let secret = line.trim().to_owned();
    anyhow::ensure!(!secret.is_empty(), "give the provider key on stdin");
    Ok(secret)
}

pub fn virtual_keys(command: VirtualKeysCommand) -> anyhow::Result<ExitCode> {
    match command {
        VirtualKeysCommand::Create { name, provider, at } => {
            let (vkeys, config) = at.open_virtual()?;
            anyhow::ensure!(
                config.knows_provider(&provider),
                "unknown provider `{provider}`: see the provider list in README.md"
            );
            let info = vkeys.create(&name, &provider, &secret_from_stdin()?)?;
            show_virtual(&info, at.json, "created");
        }
        VirtualKeysCommand::List { at } => {
            let all = at.open_virtual()?.0.list()?;
            list_virtual(&all, at.json);
        }
        VirtualKeysCommand::Rotate { name, at } => {
            let info = at.open_virtual()?.0.rotate(&name, &secret_from_stdin()?)?;
            show_virtual(&info, at.json, "rotated");
        }
        VirtualKeysCommand::Revoke { name, at } => {
            let info = at.open_virtual()?.0.revoke(&name)?;
            show_virtual(&info, at.json, "revoked");
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[expect(clippy::print_stdout, reason = "the command's output")]
fn show_virtual(info: &VirtualKeyInfo, as_json: bool, what: &str) {
    if as_json {
        println!("{}", serde_json::to_value(info).unwrap_or_default());
    } else {
        println!("{what} virtual key `{}` ({})", info.name, info.provider);
    }
}

#[expect(clippy::print_stdout, reason = "the command's output")]
fn list_virtual(all: &[VirtualKeyInfo], as_json: bool) {
    if as_json {
        println!("{}", serde_json::to_value(all).unwrap_or_default());
        return;
    }
    println!(
        "{:<24}  {:<16}  {:<7}  {:<29}  UPDATED",
        "NAME", "PROVIDER", "STATUS", "CREATED"
    );
    for k in all {
        println!(
            "{:<24}  {:<16}  {:<7}  {:<29}  {}",
            k.name,
            k.provider,
            k.status,
            date(Some(k.created_at)),
            date(Some(k.updated_at))
        );
    }
}

pub fn keys(command: KeysCommand) -> anyhow::Result<ExitCode> {
    match command {
        KeysCommand::Create {
            name,
            role,
            expires_in_days,
            allow_providers,
            allow_models,
            default_config,
            metadata,
            rpm,
            tpm,
            budget_usd,
            budget_period,
            at,
        } => {
            let budget = match budget_usd {
                Some(usd) => Some(sluice::limits::budget::Budget {
                    usd,
                    period: sluice::limits::budget::Period::parse(&budget_period)
                        .map_err(anyhow::Error::msg)?,
                }),
                None => None,
            };
            let role: Role = role.parse().map_err(anyhow::Error::msg)?;
            let expires = expires_in_days.map(|d| sluice::keys::now() + i64::from(d) * 86_400);
            let mut settings = KeySettings {
                allowed_providers: (!allow_providers.is_empty()).then_some(allow_providers),
                allowed_models: (!allow_models.is_empty()).then_some(allow_models),
                default_config,
                metadata: serde_json::Map::new(),
                rpm,
                tpm,
                budget,
            };
            for pair in metadata {
                let (k, v) = pair
                    .split_once('=')
                    .with_context(|| format!("--metadata `{pair}`: expected KEY=VALUE"))?;
                settings.metadata.insert(k.to_owned(), v.into());
            }
            settings.check(&at.config()?).map_err(anyhow::Error::msg)?;
            let (key, secret) = at.open()?.create(&name, role, expires, settings)?;
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
