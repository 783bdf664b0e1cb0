//! The admin API for gateway keys and virtual keys (admin keys only when
//! authentication is on):
//!
//! - `POST /admin/keys` `{"name", "role"?, "expires_in_days"?}` → 201 with the
//!   key and its secret (the only time it is shown);
//! - `GET /admin/keys` → `{"keys": [...]}`; `GET /admin/keys/{id}`;
//! - `PATCH /admin/keys/{id}` with any of `name`, `role`, `expires_in_days`
//!   and the settings (`null` clears one): the key's secret stays;
//! - `POST /admin/keys/{id}/revoke`; `POST /admin/keys/{id}/rotate` (→ the new
//!   secret);
//! - `POST /admin/virtual-keys` `{"name", "provider", "key"}` → 201;
//!   `GET /admin/virtual-keys`, `GET /admin/virtual-keys/{name}`;
//!   `POST /admin/virtual-keys/{name}/rotate` `{"key"}`;
//!   `POST /admin/virtual-keys/{name}/revoke`. Provider keys go in, never out.
//!
//! SQLite writes wait on the disk, so they run on the blocking pool, never on
//! a request worker.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::StatusCode;
use serde_json::{Value, json};

use super::AppState;
use crate::GatewayError;
use crate::keys::{KeyRecord, Role, Store, StoreError};

/// `POST /admin/keys`'s body.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct NewKey {
    name: String,
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    expires_in_days: Option<u32>,
    #[serde(flatten)]
    settings: crate::keys::KeySettings,
}

fn store_error(e: StoreError) -> GatewayError {
    match e {
        StoreError::NoSuchKey(id) => GatewayError::UnknownKey(id),
        StoreError::Revoked(id) => {
            GatewayError::invalid(format!("key `{id}` is revoked: create a new one"), None)
        }
        StoreError::Invalid(why) => GatewayError::invalid(why, None),
        StoreError::NoMasterKey => GatewayError::invalid(StoreError::NoMasterKey.to_string(), None),
        e => GatewayError::Internal(e.to_string()),
    }
}

/// Runs a store operation on the blocking pool.
async fn blocking<S: Send + Sync + 'static, T: Send + 'static>(
    store: &Arc<S>,
    op: impl FnOnce(&S) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, GatewayError> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || op(&store))
        .await
        .map_err(|e| GatewayError::Internal(format!("the key store task failed: {e}")))?
        .map_err(store_error)
}

/// A JSON object's body, or 400 saying what was expected. (serde would read
/// a struct from an array too, its elements in field order.)
fn body<T: serde::de::DeserializeOwned>(bytes: &[u8], expected: &str) -> Result<T, GatewayError> {
    let malformed =
        |why: String| GatewayError::MalformedBody(format!("expected {expected}: {why}"));
    let value = serde_json::from_slice(bytes).map_err(|e| malformed(e.to_string()))?;
    match crate::providers::body::not_an_object(bytes) {
        Some(why) => Err(malformed(why)),
        None => Ok(value),
    }
}

/// Answers 200 (or `status`) with `value`, or the error.
fn reply(result: Result<Value, GatewayError>, status: StatusCode) -> Response {
    match result {
        Ok(value) => (status, axum::Json(value)).into_response(),
        Err(e) => e.into_response(),
    }
}

pub async fn create(State(state): State<Arc<AppState>>, bytes: Bytes) -> Response {
    let result = async {
        let new: NewKey = body(
            &bytes,
            r#"{"name", "role"?, "expires_in_days"?, "allowed_providers"?, "allowed_models"?, "default_config"?, "metadata"?, "rpm"?, "tpm"?, "budget"?: {"usd", "period"}}"#,
        )?;
        new.settings
            .check(&state.config)
            .map_err(|why| GatewayError::invalid(why, None))?;
        if new.name.trim().is_empty() || new.name.len() > 200 {
            return Err(GatewayError::invalid(
                "`name` must be 1 to 200 characters",
                Some("name"),
            ));
        }
        let role: Role = match &new.role {
            Some(r) => r
                .parse()
                .map_err(|e: String| GatewayError::invalid(e, Some("role")))?,
            None => Role::Member,
        };
        let expires = new
            .expires_in_days
            .map(|d| crate::keys::now() + i64::from(d) * 86_400);
        let (key, secret) =
            blocking(&state.keys, move |s| s.create(&new.name, role, expires, new.settings))
                .await?;
        Ok(json!({"key": key.to_json(), "secret": secret}))
    }
    .await;
    reply(result, StatusCode::CREATED)
}

pub async fn list(State(state): State<Arc<AppState>>) -> Response {
    let result = async {
        let keys = blocking(&state.keys, Store::list).await?;
        Ok(json!({"keys": keys.iter().map(KeyRecord::to_json).collect::<Vec<_>>()}))
    }
    .await;
    reply(result, StatusCode::OK)
}

pub async fn get(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    let result = blocking(&state.keys, move |s| s.get(&id)).await;
    reply(result.map(|k| k.to_json()), StatusCode::OK)
}

/// The fields `PATCH /admin/keys/{id}` may change, besides the settings'.
const PATCHABLE: &[&str] = &["name", "role", "expires_in_days"];

pub async fn update(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Response {
    let result = async {
        let patch: serde_json::Map<String, Value> =
            body(&bytes, "a JSON object of the fields to change")?;
        let id2 = id.clone();
        let mut key = blocking(&state.keys, move |s| s.get(&id2)).await?;
        // The settings as JSON, with the patch's settings fields laid over
        // (null clears one), read back: unknown fields are refused there.
        let mut settings = match serde_json::to_value(&key.settings) {
            Ok(Value::Object(m)) => m,
            _ => serde_json::Map::new(),
        };
        for (field, value) in &patch {
            match (field.as_str(), value) {
                ("name", Value::String(n)) if !n.trim().is_empty() && n.len() <= 200 => {
                    key.name = n.clone();
                }
                ("role", Value::String(r)) => {
                    key.role = r
                        .parse()
                        .map_err(|e: String| GatewayError::invalid(e, Some("role")))?;
                }
                ("expires_in_days", Value::Null) => key.expires_at = None,
                ("expires_in_days", v) => {
                    let days = v
                        .as_u64()
                        .filter(|d| *d <= u64::from(u32::MAX))
                        .ok_or_else(|| {
                            GatewayError::invalid(
                                "`expires_in_days` must be a whole number of days or null",
                                Some("expires_in_days"),
                            )
                        })?;
                    key.expires_at = Some(crate::keys::now() + days as i64 * 86_400);
                }
                (f, _) if PATCHABLE.contains(&f) => {
                    return Err(GatewayError::invalid(
                        format!("`{f}` cannot take that value"),
                        Some(f),
                    ));
                }
                (_, Value::Null) => {
                    settings.remove(field);
                }
                _ => {
                    settings.insert(field.clone(), value.clone());
                }
            }
        }
        key.settings = serde_json::from_value(Value::Object(settings))
            .map_err(|e| GatewayError::MalformedBody(format!("cannot change the key: {e}")))?;
        key.settings
            .check(&state.config)
            .map_err(|why| GatewayError::invalid(why, None))?;
        let updated = blocking(&state.keys, move |s| s.update(&key)).await?;
        Ok(updated.to_json())
    }
    .await;
    reply(result, StatusCode::OK)
}

pub async fn revoke(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    let result = blocking(&state.keys, move |s| s.revoke(&id)).await;
    reply(result.map(|k| k.to_json()), StatusCode::OK)
}

pub async fn rotate(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    let result = blocking(&state.keys, move |s| s.rotate(&id)).await;
    reply(
        result.map(|(key, secret)| json!({"key": key.to_json(), "secret": secret})),
        StatusCode::OK,
    )
}

/// `POST /admin/virtual-keys`'s body.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct NewVirtualKey {
    name: String,
    provider: String,
    key: String,
}

/// `POST /admin/virtual-keys/{name}/rotate`'s body.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct NewSecret {
    key: String,
}

fn info(v: crate::keys::VirtualKeyInfo) -> Result<Value, GatewayError> {
    serde_json::to_value(v).map_err(|e| GatewayError::Internal(e.to_string()))
}

pub async fn create_virtual(State(state): State<Arc<AppState>>, bytes: Bytes) -> Response {
    let result = async {
        let new: NewVirtualKey = body(&bytes, r#"{"name", "provider", "key"}"#)?;
        if !state.config.providers.contains(&new.provider)
            && !state.plugins.has_provider(&new.provider)
        {
            return Err(GatewayError::UnknownProvider(new.provider));
        }
        let made = blocking(&state.vkeys, move |v| {
            v.create(&new.name, &new.provider, &new.key)
        })
        .await?;
        info(made)
    }
    .await;
    reply(result, StatusCode::CREATED)
}

pub async fn list_virtual(State(state): State<Arc<AppState>>) -> Response {
    let result = async {
        let all = blocking(&state.vkeys, crate::keys::VirtualKeys::list).await?;
        Ok(json!({"virtual_keys": all}))
    }
    .await;
    reply(result, StatusCode::OK)
}

pub async fn get_virtual(State(state): State<Arc<AppState>>, Path(name): Path<String>) -> Response {
    let result = async { info(blocking(&state.vkeys, move |v| v.get(&name)).await?) }.await;
    reply(result, StatusCode::OK)
}

pub async fn rotate_virtual(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    bytes: Bytes,
) -> Response {
    let result = async {
        let new: NewSecret = body(&bytes, r#"{"key"}"#)?;
        info(blocking(&state.vkeys, move |v| v.rotate(&name, &new.key)).await?)
    }
    .await;
    reply(result, StatusCode::OK)
}

pub async fn revoke_virtual(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Response {
    let result = async { info(blocking(&state.vkeys, move |v| v.revoke(&name)).await?) }.await;
    reply(result, StatusCode::OK)
}
