//! The HTTP server: routes, the per-request context (id, span), the proxy
//! pipeline, and graceful shutdown.
//!
//! The order of stages for a proxied request is fixed in [`proxy`]; this module
//! may call every other stage and is the only one that knows about axum.

mod context;
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
use crate::guardrails::Guardrails;
use crate::providers::Endpoint;
use crate::routing::ConfigCache;
use crate::upstream::Upstream;

/// Everything a request handler shares.
#[derive(Debug)]
pub struct AppState {
    pub config: Arc<ServerConfig>,
    pub upstream: Upstream,
    pub guardrails: Guardrails,
    /// Parsed `x-portkey-config` headers.
    pub configs: ConfigCache,
    pub started: Instant,
}

impl AppState {
    /// State for a config, with no hooks.
    pub fn new(config: Arc<ServerConfig>) -> Result<Self, GatewayError> {
        let upstream = Upstream::new(&config.upstream, config.ssrf.clone())
            .map_err(|e| GatewayError::Internal(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            config,
            upstream,
            guardrails: Guardrails::default(),
            configs: ConfigCache::default(),
            started: Instant::now(),
        })
    }
}

/// The gateway's routes.
pub fn router(state: Arc<AppState>) -> Router {
    let post_route = |e: Endpoint| post(move |s, i, r| proxy::handle(s, e, i, r));
    Router::new()
        .route("/health", get(health))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guardrails::tests::TestHook;
    use axum::body::Body;
    use serde_json::Value;
    use tower::ServiceExt;

    /// An upstream that answers with the body it received.
    async fn echo_upstream() -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let app = Router::new().fallback(|body: axum::body::Bytes| async move {
            let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            axum::Json(json!({"received": json}))
        });
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        addr
    }

    async fn call(state: Arc<AppState>, content: &str) -> (http::StatusCode, Value) {
        let body = json!({"model": "m", "messages": [{"role": "user", "content": content}]});
        let req = http::Request::post("/v1/chat/completions")
            .header("x-portkey-provider", "echo")
            .header("content-type", "application/json")
            .body(Body::from(body.to_string()))
            .expect("request");
        let res = router(state).oneshot(req).await.expect("infallible");
        let status = res.status();
        let bytes = axum::body::to_bytes(res.into_body(), 1 << 20)
            .await
            .expect("body");
        (status, serde_json::from_slice(&bytes).expect("json"))
    }

    #[tokio::test]
    async fn hooks_run_between_routing_and_the_provider() {
        let addr = echo_upstream().await;
        let config = ServerConfig::parse(&format!(
            "[[providers]]\nslug = \"echo\"\nbase_url = \"http://{addr}/v1\"\n"
        ))
        .expect("config");
        let mut state = AppState::new(Arc::new(config)).expect("state");
        let (status, body) = call(
            Arc::new(AppState::new(state.config.clone()).expect("state")),
            "hi",
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(
            body["received"]["model"], "m",
            "no hooks: the body is untouched"
        );

        state.guardrails = Guardrails::new(vec![Arc::new(TestHook)]);
        let state = Arc::new(state);
        let (status, body) = call(state.clone(), "hi").await;
        assert_eq!(status, 200);
        assert_eq!(
            body["received"]["model"], "rewritten",
            "the hook's rewrite reaches the provider"
        );

        let (status, body) = call(state, "deny").await;
        assert_eq!(status.as_u16(), 446);
        assert_eq!(body["error"]["code"], "denied");
        assert!(
            body.get("received").is_none(),
            "a hook's answer means no upstream call"
        );
    }
}
