//! Gateway keys: who is calling.
//!
//! A key is `slk_` and 43 base64url characters (32 random bytes). It is shown
//! once, when created or rotated; the store keeps only its SHA-256 (a key is
//! random, so a fast hash is as strong as a slow one) and its first characters,
//! to recognise it in a list. Clients send it as `x-portkey-api-key` (or
//! `x-sluice-api-key`).
//!
//! Each key has a role: `admin` (everything), `member` (the proxy routes),
//! `viewer` (reading: usage and logs). Keys live in the state database
//! ([`Store`], SQLite); the gateway answers lookups from a snapshot in memory,
//! reloaded after its own changes and, for changes made by another process
//! (`sluice keys ...` on the same file), within [`RELOAD_EVERY`].
//!
//! This module calls nothing else in the pipeline.

mod store;
mod virtual_keys;

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use ring::digest;

pub use store::{RELOAD_EVERY, Store, StoreError};
pub use virtual_keys::{MasterKey, Resolved, VirtualKeyError, VirtualKeyInfo, VirtualKeys};

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    Member,
    Viewer,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Member => "member",
            Self::Viewer => "viewer",
        }
    }

    /// Whether the proxy routes (`/v1/...`) are open to this role.
    pub fn may_proxy(self) -> bool {
        matches!(self, Self::Admin | Self::Member)
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "admin" => Ok(Self::Admin),
            "member" => Ok(Self::Member),
            "viewer" => Ok(Self::Viewer),
            _ => Err(format!(
                "unknown role `{s}`: expected admin, member or viewer"
            )),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a gateway key limits and adds to each request it makes.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeySettings {
    /// Provider slugs the key may call (all when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_providers: Option<Vec<String>>,
    /// Models the key may ask for: exact names, or prefixes ending in `*`
    /// (all when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_models: Option<Vec<String>>,
    /// The config used when a request names none: a name under `[configs]`,
    /// or a config's JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_config: Option<String>,
    /// Merged into every request's metadata; the key's values win.
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub metadata: serde_json::Map<String, serde_json::Value>,
    /// Requests per minute for this key, in place of a `[[rate_limits]]`
    /// rule with `scope = "key"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpm: Option<u64>,
    /// Tokens per minute for this key, likewise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm: Option<u64>,
    /// Dollars this key may spend, in place of a `[[budgets]]` rule with
    /// `scope = "key"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<crate::limits::budget::Budget>,
}

impl KeySettings {
    /// Checks the settings against the server config: lists non-empty,
    /// metadata values strings, the default config a known name or a valid
    /// config.
    pub fn check(&self, config: &crate::config::ServerConfig) -> Result<(), String> {
        for (field, list) in [
            ("allowed_providers", &self.allowed_providers),
            ("allowed_models", &self.allowed_models),
        ] {
            if let Some(list) = list
                && (list.is_empty() || list.iter().any(|s| s.trim().is_empty()))
            {
                return Err(format!("`{field}` must list at least one non-empty name"));
            }
        }
        if self.rpm == Some(0) {
            return Err("`rpm` must be at least 1".into());
        }
        if self.tpm == Some(0) {
            return Err("`tpm` must be at least 1".into());
        }
        if let Some(b) = &self.budget {
            b.check()?;
        }
        if let Some((k, _)) = self.metadata.iter().find(|(_, v)| !v.is_string()) {
            return Err(format!("`metadata` values must be strings; `{k}` is not"));
        }
        if let Some(c) = &self.default_config {
            if c.trim_start().starts_with('{') {
                crate::config::routing::parse_json(c, &|slug| {
                    config.providers.contains(slug)
                        || crate::plugins::builtin::BUILTINS
                            .iter()
                            .any(|(n, _)| *n == slug)
                })
                .map_err(|p| format!("`default_config` is not a valid config: {p}"))?;
            } else if !config.configs.contains_key(c) {
                return Err(format!(
                    "`default_config`: no config named `{c}` under [configs]"
                ));
            }
        }
        Ok(())
    }

    /// Whether the key may call `provider` for `model` (a request whose model
    /// is not known, such as listing models, is judged by its provider alone).
    pub fn allows(&self, provider: &str, model: Option<&str>) -> bool {
        let provider_ok = self
            .allowed_providers
            .as_ref()
            .is_none_or(|list| list.iter().any(|p| p == provider));
        let model_ok = match (&self.allowed_models, model) {
            (Some(list), Some(model)) => {
                list.iter().any(|pattern| match pattern.strip_suffix('*') {
                    Some(prefix) => model.starts_with(prefix),
                    None => pattern == model,
                })
            }
            _ => true,
        };
        provider_ok && model_ok
    }
}

/// A key as the store keeps it (never the secret).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct KeyRecord {
    /// Public id, `key_` and 12 hex digits: what the CLI and admin API name.
    pub id: String,
    pub name: String,
    pub role: Role,
    /// The key's first characters (`slk_AbCd…`), to recognise it.
    pub hint: String,
    /// Unix seconds.
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    #[serde(flatten)]
    pub settings: KeySettings,
}

impl KeyRecord {
    /// The record as the CLI and the admin API show it, with its status.
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).unwrap_or_default();
        v["status"] = self.status(now()).into();
        v
    }

    pub fn status(&self, now: i64) -> &'static str {
        if self.revoked_at.is_some() {
            "revoked"
        } else if self.expires_at.is_some_and(|t| t <= now) {
            "expired"
        } else {
            "active"
        }
    }
}

/// Why a request was not authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error(
        "a gateway key is required: send it in the `x-portkey-api-key` header (or `x-sluice-api-key`)"
    )]
    Missing,
    #[error("the gateway key is not valid")]
    Unknown,
    #[error("the gateway key has been revoked")]
    Revoked,
    #[error("the gateway key has expired")]
    Expired,
}

impl AuthError {
    pub fn code(self) -> &'static str {
        match self {
            Self::Missing => "missing_api_key",
            Self::Unknown => "invalid_api_key",
            Self::Revoked => "revoked_api_key",
            Self::Expired => "expired_api_key",
        }
    }
}

/// The caller of an authenticated request, in its extensions.
#[derive(Debug, Clone)]
pub struct Caller {
    pub key: std::sync::Arc<KeyRecord>,
}

/// A new secret: `slk_` and 32 random bytes in base64url.
pub fn generate() -> Result<String, StoreError> {
    let mut bytes = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .map_err(|_| StoreError::Random)?;
    Ok(format!(
        "slk_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    ))
}

/// What the store keeps of a secret.
pub fn hash(secret: &str) -> [u8; 32] {
    let d = digest::digest(&digest::SHA256, secret.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// The first characters of a secret, shown in lists.
pub fn hint(secret: &str) -> String {
    let head: String = secret.chars().take(12).collect();
    format!("{head}…")
}

/// Seconds since the Unix epoch.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

#[cfg(test)]
mod tests;
