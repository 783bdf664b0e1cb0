//! The admin API for gateway keys (admin keys only when authentication is on):
//!
//! - `POST /admin/keys` `{"name", "role"?, "expires_in_days"?}` → 201 with the
//!   key and its secret (the only time it is shown);
//! - `GET /admin/keys` → `{"keys": [...]}`; `GET /admin/keys/{id}`;
//! - `POST /admin/keys/{id}/revoke`; `POST /admin/keys/{id}/rotate` (→ the new
//!   secret).
//!
//! SQLite writes wait on the disk, so they run on the blocking pool, never on
//! a request worker.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::StatusCode;
use serde_json::json;

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
}

fn store_error(e: StoreError) -> GatewayError {
    match e {
        StoreError::NoSuchKey(id) => GatewayError::UnknownKey(id),
        StoreError::Revoked(id) => {
            GatewayError::invalid(format!("key `{id}` is revoked: create a new one"), None)
        }
        e => GatewayError::Internal(e.to_string()),
    }
}

/// Runs a store operation on the blocking pool.
async fn with_store<T: Send + 'static>(
    state: &AppState,
    op: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, GatewayError> {
    let store = state.keys.clone();
    tokio::task::spawn_blocking(move || op(&store))
        .await
        .map_err(|e| GatewayError::Internal(format!("the key store task failed: {e}")))?
        .map_err(store_error)
}

pub async fn create(State(state): State<Arc<AppState>>, body: Bytes) -> Response {
    let result = async {
        let new: NewKey = serde_json::from_slice(&body).map_err(|e| {
            GatewayError::MalformedBody(format!(
                "expected {{\"name\", \"role\"?, \"expires_in_days\"?}}: {e}"
            ))
        })?;
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
        with_store(&state, move |s| s.create(&new.name, role, expires)).await
    }
    .await;
    match result {
        Ok((key, secret)) => (
            StatusCode::CREATED,
            axum::Json(json!({"key": key.to_json(), "secret": secret})),
        )
            .into_response(),
        Err(e) => e.into_response(),
    }
}

pub async fn list(State(state): State<Arc<AppState>>) -> Response {
    match with_store(&state, Store::list).await {
        Ok(keys) => {
            axum::Json(json!({"keys": keys.iter().map(KeyRecord::to_json).collect::<Vec<_>>()}))
                .into_response()
        }
        Err(e) => e.into_response(),
    }
}

pub async fn get(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    match with_store(&state, move |s| s.get(&id)).await {
        Ok(key) => axum::Json(key.to_json()).into_response(),
        Err(e) => e.into_response(),
    }
}

pub async fn revoke(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    match with_store(&state, move |s| s.revoke(&id)).await {
        Ok(key) => axum::Json(key.to_json()).into_response(),
        Err(e) => e.into_response(),
    }
}

pub async fn rotate(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    match with_store(&state, move |s| s.rotate(&id)).await {
        Ok((key, secret)) => {
            axum::Json(json!({"key": key.to_json(), "secret": secret})).into_response()
        }
        Err(e) => e.into_response(),
    }
}
