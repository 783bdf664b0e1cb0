//! The HTTP server: routes, the per-request context (id, span), the proxy
//! pipeline, and graceful shutdown.
//!
//! The order of stages for a proxied request is fixed in [`proxy`]; this module
//! may call every other stage and is the only one that knows about axum.

mod admin_keys;
mod admin_usage;
mod auth;
mod caching;
mod context;
mod meter;
mod observe;
mod proxy;
mod relay;
mod workers;

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use serde_json::json;

pub use context::RequestInfo;
pub use workers::{Workers, bind};

use crate::GatewayError;
use crate::config::ServerConfig;
use crate::providers::Endpoint;
use crate::routing::ConfigCache;
use crate::upstream::Upstream;

/// What every worker shares.
#[derive(Debug, Clone)]
pub struct Shared {
    pub plugins: Arc<crate::plugins::Registry>,
    pub targets: Arc<crate::routing::Targets>,
    /// Providers' access tokens (Vertex AI's), exchanged once for every worker.
    pub tokens: Arc<crate::upstream::Tokens>,
    /// Answers plugins' `host.fetch` GETs may reuse (JWKS), for every worker.
    pub fetches: Arc<crate::upstream::FetchCache>,
    /// Guardrail checks' outcomes and latency.
    pub guardrails: Arc<crate::guardrails::Stats>,
    /// Gateway keys.
    pub keys: Arc<crate::keys::Store>,
    /// Provider credentials, encrypted at rest.
    pub vkeys: Arc<crate::keys::VirtualKeys>,
    /// Rate-limit counters.
    pub rate: Arc<crate::limits::RateLimiter>,
    /// Budgets' spend.
    pub budgets: Arc<crate::limits::budget::Budgets>,
    /// The request log's writer.
    pub usage: Arc<crate::usage::Recorder>,
    /// Prices, for cost.
    pub pricing: Arc<crate::usage::Pricing>,
    /// The simple cache.
    pub cache: Arc<crate::cache::Cache>,
}

/// Everything a request handler shares.
#[derive(Debug)]
pub struct AppState {
    pub config: Arc<ServerConfig>,
    pub upstream: Upstream,
    /// The upstream client as plugins' `host.fetch` sees it.
    pub outbound: Arc<dyn crate::plugins::Outbound>,
    /// Plugins, shared by every worker.
    pub plugins: Arc<crate::plugins::Registry>,
    /// Targets' recent health and circuits, shared by every worker.
    pub targets: Arc<crate::routing::Targets>,
    /// Guardrail checks' outcomes and latency, shared by every worker.
    pub guardrails: Arc<crate::guardrails::Stats>,
    /// Parsed `x-portkey-config` headers.
    pub configs: ConfigCache,
    /// Gateway keys, and whether every request needs one.
    pub keys: Arc<crate::keys::Store>,
    pub auth_required: bool,
    pub vkeys: Arc<crate::keys::VirtualKeys>,
    pub rate: Arc<crate::limits::RateLimiter>,
    pub budgets: Arc<crate::limits::budget::Budgets>,
    pub usage: Arc<crate::usage::Recorder>,
    pub pricing: Arc<crate::usage::Pricing>,
    pub cache: Arc<crate::cache::Cache>,
    /// This worker's connection to shared state, when `[redis]` is set.
    pub redis: Option<Arc<crate::shared::Redis>>,
    pub started: Instant,
}

impl AppState {
    /// State for one worker.
    pub fn new(config: Arc<ServerConfig>, shared: &Shared) -> Result<Self, GatewayError> {
        let upstream = Upstream::new(&config.upstream, config.ssrf.clone())
            .map_err(|e| GatewayError::Internal(format!("cannot build the HTTP client: {e}")))?
            .sharing(shared.tokens.clone(), shared.fetches.clone());
        let auth_required = config.auth_required();
        let redis = match &config.redis {
            Some(settings) => Some(Arc::new(
                crate::shared::Redis::new(settings).map_err(GatewayError::Internal)?,
            )),
            None => None,
        };
        Ok(Self {
            config,
            outbound: Arc::new(upstream.clone()),
            upstream,
            plugins: shared.plugins.clone(),
            targets: shared.targets.clone(),
            guardrails: shared.guardrails.clone(),
            configs: ConfigCache::default(),
            keys: shared.keys.clone(),
            vkeys: shared.vkeys.clone(),
            rate: shared.rate.clone(),
            budgets: shared.budgets.clone(),
            usage: shared.usage.clone(),
            pricing: shared.pricing.clone(),
            cache: shared.cache.clone(),
            redis,
            auth_required,
            started: Instant::now(),
        })
    }
}

/// The gateway's routes.
pub fn router(state: Arc<AppState>) -> Router {
    let post_route = |e: Endpoint| post(move |s, i, r| proxy::handle(s, e, i, r));
    Router::new()
        .route("/health", get(health))
        .route("/admin/plugins", get(admin_plugins))
        .route("/admin/targets", get(admin_targets))
        .route(
            "/admin/keys",
            get(admin_keys::list).post(admin_keys::create),
        )
        .route(
            "/admin/keys/{id}",
            get(admin_keys::get).patch(admin_keys::update),
        )
        .route("/admin/keys/{id}/revoke", post(admin_keys::revoke))
        .route("/admin/keys/{id}/rotate", post(admin_keys::rotate))
        .route(
            "/admin/virtual-keys",
            get(admin_keys::list_virtual).post(admin_keys::create_virtual),
        )
        .route("/admin/virtual-keys/{name}", get(admin_keys::get_virtual))
        .route(
            "/admin/virtual-keys/{name}/rotate",
            post(admin_keys::rotate_virtual),
        )
        .route(
            "/admin/virtual-keys/{name}/revoke",
            post(admin_keys::revoke_virtual),
        )
        .route("/admin/logs", get(admin_usage::logs))
        .route("/admin/usage", get(admin_usage::usage))
        .route("/metrics", get(metrics))
        .route("/v1/chat/completions", post_route(Endpoint::Chat))
        .route("/v1/completions", post_route(Endpoint::Completions))
        .route("/v1/embeddings", post_route(Endpoint::Embeddings))
        .route("/v1/images/generations", post_route(Endpoint::Images))
        .route("/v1/audio/speech", post_route(Endpoint::Speech))
        .route(
            "/v1/audio/transcriptions",
            post_route(Endpoint::Transcriptions),
        )
        .route("/v1/audio/translations", post_route(Endpoint::Translations))
        .route("/v1/moderations", post_route(Endpoint::Moderations))
        .route("/v1/messages", post_route(Endpoint::Messages))
        .route("/v1/responses", post_route(Endpoint::Responses))
        .route(
            "/v1/messages/count_tokens",
            post_route(Endpoint::CountTokens),
        )
        .route(
            "/v1/models",
            get(move |s, i, r| proxy::handle(s, Endpoint::Models, i, r)),
        )
        .route(
            "/v1/{*rest}",
            any(move |s, i, r| proxy::handle(s, Endpoint::Proxy, i, r)),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ))
        .layer(axum::middleware::from_fn(context::request_context))
        .with_state(state)
}

async fn health(State(state): State<Arc<AppState>>) -> Response {
    axum::Json(json!({
        "status": "ok",
        "version": crate::VERSION,
        "uptime_s": state.started.elapsed().as_secs(),
    }))
    .into_response()
}

/// Loaded plugins with their limits and call counters, and the last load status
/// of each file in the plugins directory. Admin keys only, when
/// authentication is on ([`auth`]).
async fn admin_plugins(State(state): State<Arc<AppState>>) -> Response {
    let plugins: Vec<serde_json::Value> =
        state.plugins.list().iter().map(|p| p.summary()).collect();
    let files: serde_json::Map<String, serde_json::Value> = state
        .plugins
        .statuses()
        .into_iter()
        .map(|(name, status)| {
            let v = match status {
                crate::plugins::Status::Loaded => json!({"status": "loaded"}),
                crate::plugins::Status::Failed(why) => json!({"status": "failed", "error": why}),
            };
            (name, v)
        })
        .collect();
    axum::Json(json!({
        "directory": state.plugins.dir().display().to_string(),
        "reloads": state.plugins.reloads(),
        "plugins": plugins,
        "files": files,
    }))
    .into_response()
}

/// Every upstream target seen since start: its circuit (closed, open with the
/// time left, half-open), failures in the breaker's window, calls in flight,
/// smoothed error rate and latency. Keys appear only as fingerprints.
async fn admin_targets(State(state): State<Arc<AppState>>) -> Response {
    let b = state.targets.settings();
    axum::Json(json!({
        "circuit_breaker": {
            "enabled": b.enabled,
            "consecutive_failures": b.consecutive_failures,
            "error_rate": b.error_rate,
            "min_requests": b.min_requests,
            "window_ms": b.window.as_millis() as u64,
            "cool_down_ms": b.cool_down.as_millis() as u64,
        },
        "targets": state.targets.snapshot(),
    }))
    .into_response()
}

/// Prometheus text: for now the routing engine's view of each upstream target
/// (circuit state, times opened, calls in flight, calls and failures).
async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let mut out = String::new();
    state.targets.prometheus(&mut out);
    state.guardrails.prometheus(&mut out);
    state.cache.prometheus(&mut out);
    let (written, dropped) = state.usage.counts();
    out.push_str(&format!(
        "# HELP sluice_usage_records_written_total Request records written to the log.\n\
         # TYPE sluice_usage_records_written_total counter\n\
         sluice_usage_records_written_total {written}\n\
         # HELP sluice_usage_records_dropped_total Request records dropped (the log's queue was full).\n\
         # TYPE sluice_usage_records_dropped_total counter\n\
         sluice_usage_records_dropped_total {dropped}\n"
    ));
    (
        [(
            http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
        .into_response()
}

async fn not_found(req: Request) -> Response {
    GatewayError::NotFound {
        method: req.method().to_string(),
        path: req.uri().path().to_owned(),
    }
    .into_response()
}

async fn method_not_allowed(req: Request) -> Response {
    GatewayError::MethodNotAllowed {
        method: req.method().to_string(),
        path: req.uri().path().to_owned(),
    }
    .into_response()
}

/// Serves until `shutdown` resolves, then stops accepting, lets in-flight
/// requests and streams finish for up to `server.shutdown_grace`, and returns.
pub async fn serve(
    state: Arc<AppState>,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let grace = state.config.shutdown_grace;
    let (tx, mut rx) = tokio::sync::watch::channel(false);
    use axum::serve::ListenerExt;
    // Small SSE events must not wait for Nagle's algorithm.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let server = axum::serve(listener, router(state)).with_graceful_shutdown(async move {
        shutdown.await;
        tracing::info!("shutting down: no new connections; waiting for in-flight requests");
        let _ = tx.send(true);
    });
    let grace_passed = async move {
        if rx.wait_for(|started| *started).await.is_ok() {
            tokio::time::sleep(grace).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        result = server.into_future() => result,
        () = grace_passed => {
            tracing::warn!(grace_ms = grace.as_millis() as u64, "shutdown grace passed; dropping remaining connections");
            Ok(())
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
