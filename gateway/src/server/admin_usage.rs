//! The admin API's reading of the request log (admin and viewer keys when
//! authentication is on): `GET /admin/logs` pages and filters records,
//! `GET /admin/usage` sums them by key, model, provider, metadata value or
//! time bucket. Parameters are listed in [`crate::usage::query`].

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};

use super::AppState;
use crate::GatewayError;
use crate::usage::query::{LogQuery, Params, Query, UsageQuery};

/// Checks the query string, then runs the query on the blocking pool.
async fn read<Q: Query>(
    state: Arc<AppState>,
    raw: Option<String>,
    parse: fn(&Params) -> Result<Q, String>,
) -> Response {
    let params: Params = url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
        .into_owned()
        .collect();
    let query = match parse(&params) {
        Ok(q) => q,
        Err(why) => return GatewayError::invalid(why, None).into_response(),
    };
    let usage = state.usage.clone();
    let result = tokio::task::spawn_blocking(move || usage.read(|c| query.run(c))).await;
    match result {
        Ok(Some(Ok(value))) => axum::Json(value).into_response(),
        Ok(None) => {
            GatewayError::Unsupported("the request log is off ([usage] enabled = false)".into())
                .into_response()
        }
        Ok(Some(Err(e))) => GatewayError::Internal(e.to_string()).into_response(),
        Err(e) => GatewayError::Internal(format!("the log query failed: {e}")).into_response(),
    }
}

pub async fn logs(State(state): State<Arc<AppState>>, RawQuery(raw): RawQuery) -> Response {
    read(state, raw, LogQuery::parse).await
}

pub async fn usage(State(state): State<Arc<AppState>>, RawQuery(raw): RawQuery) -> Response {
    read(state, raw, UsageQuery::parse).await
}
