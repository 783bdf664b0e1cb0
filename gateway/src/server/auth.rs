//! Who may call which route, when authentication is on (`[auth] required`, on
//! by default beyond loopback): every route but `/health` needs a gateway key
//! ([`crate::keys`]). The proxy routes (`/v1/...`) take admin and member keys;
//! `GET /admin/usage` and `GET /admin/logs` admin and viewer keys; everything
//! else (`/admin/...`, `/metrics`) admin keys. A key comes in
//! `x-portkey-api-key` / `x-sluice-api-key`; off the proxy routes, where
//! `Authorization` is not the provider's key, also as `Authorization: Bearer`.
//! The caller's key is put in the request's extensions ([`Caller`]).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;
use crate::GatewayError;
use crate::keys::{AuthError, Caller, Role};
use crate::routing::{PortkeyHeader, header_str};

/// What a viewer key may read.
const VIEWER_ROUTES: &[&str] = &["/admin/usage", "/admin/logs"];

/// Middleware: authenticates and authorises the request, or answers 401/403.
pub async fn authenticate(
    State(state): State<Arc<AppState>>,
    mut req: Request,
    next: Next,
) -> Response {
    if !state.auth_required || req.uri().path() == "/health" {
        return next.run(req).await;
    }
    match caller(&state, &req) {
        Ok(caller) => {
            req.extensions_mut().insert(caller);
            next.run(req).await
        }
        Err(e) => e.into_response(),
    }
}

fn caller(state: &AppState, req: &Request) -> Result<Caller, GatewayError> {
    let path = req.uri().path();
    let proxy = path.starts_with("/v1/");
    let mut secret = header_str(req.headers(), PortkeyHeader::ApiKey)?;
    if secret.is_none() && !proxy {
        secret = req
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
    }
    let key = state.keys.authenticate(secret.ok_or(AuthError::Missing)?)?;
    let allowed = if proxy {
        key.role.may_proxy()
    } else {
        key.role == Role::Admin
            || (key.role == Role::Viewer
                && req.method() == http::Method::GET
                && VIEWER_ROUTES.contains(&path))
    };
    if !allowed {
        return Err(GatewayError::Forbidden(format!(
            "a {} key may not use {path}",
            key.role
        )));
    }
    Ok(Caller { key })
}
