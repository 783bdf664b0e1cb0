//! The one place where a gateway error becomes an HTTP status and an OpenAI-shaped
//! body: `{"error":{"message","type","param","code"}}`.
//!
//! Every module returns its own `thiserror` enum; they all convert into
//! [`GatewayError`], which knows its status, OpenAI error type, machine code and
//! whether another attempt could help. Messages name what to fix and never carry a
//! secret.

use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde_json::json;

use crate::config::Problems;
use crate::plugins::PluginError;

/// An error that ends a request with an answer from the gateway itself.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The body is not the JSON the route needs.
    #[error("malformed request body: {0}")]
    MalformedBody(String),
    /// A request field or header has a value the gateway cannot use.
    #[error("{message}")]
    InvalidRequest {
        message: String,
        param: Option<String>,
    },
    /// The routing config (header or named) failed validation.
    #[error("invalid config: {0}")]
    InvalidConfig(Problems),
    /// No provider was named by header or config.
    #[error(
        "no provider given: set the `x-portkey-provider` header (or `x-sluice-provider`), or pass a config with a `provider`"
    )]
    MissingProvider,
    /// The named provider is not in the catalog.
    #[error(
        "unknown provider `{0}`: see the provider list in README.md or add it under [[providers]] in the server config"
    )]
    UnknownProvider(String),
    /// The provider exists but does not offer this endpoint.
    #[error("provider `{provider}` does not support {endpoint}")]
    UnsupportedEndpoint { provider: String, endpoint: String },
    /// A provider needs a value (custom host, Azure resource, ...) the request lacks.
    #[error("provider `{provider}` needs {what}")]
    MissingProviderSetting { provider: String, what: String },
    /// A strategy this build cannot execute yet.
    #[error("{0}")]
    Unsupported(String),
    /// The custom host failed the SSRF policy.
    #[error("custom host refused: {0}")]
    HostRefused(String),
    /// The body is larger than `server.max_body_bytes`.
    #[error("request body exceeds the limit of {limit} bytes")]
    BodyTooLarge { limit: usize },
    /// No such route.
    #[error("unknown route {method} {path}")]
    NotFound { method: String, path: String },
    /// The route exists but not for this method.
    #[error("method {method} is not allowed on {path}")]
    MethodNotAllowed { method: String, path: String },
    /// The upstream could not be reached (DNS, connect, TLS, reset before an answer).
    #[error("upstream `{provider}` unreachable: {detail}")]
    UpstreamUnreachable { provider: String, detail: String },
    /// The caller's `request_timeout` passed (Portkey answers 408).
    #[error("request exceeded the timeout of {timeout_ms} ms set for provider `{provider}`")]
    RequestTimeout { provider: String, timeout_ms: u64 },
    /// The server's own upstream deadline passed.
    #[error("upstream `{provider}` did not answer within {timeout_ms} ms")]
    UpstreamTimeout { provider: String, timeout_ms: u64 },
    /// The request's deadline across every attempt passed: the config's
    /// `total_timeout` (408) or the server's `upstream.total_timeout_ms` (504).
    #[error(
        "the request did not complete within its total deadline of {timeout_ms} ms (retries and fallbacks included)"
    )]
    DeadlinePassed { timeout_ms: u64, client: bool },
    /// Every target that could answer has an open circuit.
    #[error("target `{target}` is failing and its circuit is open; retry after {} s", retry_after.as_secs().max(1))]
    CircuitOpen {
        target: String,
        retry_after: std::time::Duration,
    },
    /// The upstream answered with something that is not what its API promises.
    #[error("upstream `{provider}` returned an invalid response: {detail}")]
    UpstreamGarbage { provider: String, detail: String },
    /// Exchanging the provider's credentials for an access token failed
    /// (`status` is the token endpoint's, 0 when it gave no answer).
    #[error("`{provider}` credentials could not be exchanged for an access token: {detail}")]
    CredentialExchange {
        provider: String,
        status: u16,
        detail: String,
    },
    /// No usable gateway key (missing, unknown, revoked, expired).
    #[error(transparent)]
    Unauthenticated(#[from] crate::keys::AuthError),
    /// A virtual key that cannot be used (unknown, revoked, not decryptable).
    #[error(transparent)]
    VirtualKey(#[from] crate::keys::VirtualKeyError),
    /// A rate limit's bucket is full for this minute.
    #[error(
        "rate limit reached for {bucket}: {limit} {} per minute; retry in {retry_after} s",
        unit.label()
    )]
    RateLimited {
        bucket: String,
        unit: crate::limits::Unit,
        limit: u64,
        retry_after: u64,
    },
    /// A budget the request counts against is spent.
    #[error(
        "budget exhausted for {bucket}: ${spent:.4} spent of ${:.4} per {}",
        budget.usd, budget.period.label()
    )]
    BudgetExhausted {
        bucket: String,
        budget: crate::limits::budget::Budget,
        spent: f64,
    },
    /// The admin API was asked for a gateway key that does not exist.
    #[error("no key named `{0}`")]
    UnknownKey(String),
    /// The gateway key's role does not allow the route.
    #[error("{0}")]
    Forbidden(String),
    /// A bug or an impossible state; the message is safe to show.
    #[error(transparent)]
    Plugin(#[from] crate::plugins::PluginError),
    #[error("internal error: {0}")]
    Internal(String),
}

impl GatewayError {
    /// Shorthand for [`GatewayError::InvalidRequest`].
    pub fn invalid(message: impl Into<String>, param: Option<&str>) -> Self {
        Self::InvalidRequest {
            message: message.into(),
            param: param.map(str::to_owned),
        }
    }

    /// The HTTP status the client sees.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::MalformedBody(_)
            | Self::InvalidRequest { .. }
            | Self::InvalidConfig(_)
            | Self::MissingProvider
            | Self::UnknownProvider(_)
            | Self::UnsupportedEndpoint { .. }
            | Self::MissingProviderSetting { .. }
            | Self::Unsupported(_)
            | Self::HostRefused(_) => StatusCode::BAD_REQUEST,
            Self::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            // Portkey's status for an exhausted budget.
            Self::BudgetExhausted { .. } => StatusCode::PRECONDITION_FAILED,
            Self::VirtualKey(crate::keys::VirtualKeyError::Sealed(_)) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
            Self::VirtualKey(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound { .. } | Self::UnknownKey(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Self::UpstreamUnreachable { .. } | Self::UpstreamGarbage { .. } => {
                StatusCode::BAD_GATEWAY
            }
            Self::RequestTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            Self::DeadlinePassed { client: true, .. } => StatusCode::REQUEST_TIMEOUT,
            Self::DeadlinePassed { client: false, .. } => StatusCode::GATEWAY_TIMEOUT,
            Self::CircuitOpen { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::CredentialExchange { status, .. } => match status {
                400 | 401 | 403 => StatusCode::UNAUTHORIZED,
                _ => StatusCode::BAD_GATEWAY,
            },
            Self::UpstreamTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Plugin(e) => plugin_status(e),
        }
    }

    /// OpenAI's `error.type`.
    pub fn error_type(&self) -> &'static str {
        match self {
            Self::RequestTimeout { .. }
            | Self::UpstreamTimeout { .. }
            | Self::DeadlinePassed { .. } => "timeout_error",
            Self::CircuitOpen { .. } => "api_error",
            // OpenAI's types for its per-minute limits.
            Self::RateLimited { unit, .. } => unit.label(),
            Self::BudgetExhausted { .. } => "budget_exceeded",
            Self::CredentialExchange {
                status: 400 | 401 | 403,
                ..
            } => "authentication_error",
            Self::CredentialExchange { .. } => "api_error",
            Self::UpstreamUnreachable { .. } | Self::UpstreamGarbage { .. } | Self::Internal(_) => {
                "api_error"
            }
            Self::Plugin(PluginError::Upstream { .. }) => "api_error",
            Self::Plugin(PluginError::Timeout { .. }) => "timeout_error",
            Self::Plugin(
                PluginError::NotLoaded(_)
                | PluginError::WrongKind { .. }
                | PluginError::InvalidConfig { .. },
            ) => "invalid_request_error",
            Self::Plugin(_) => "api_error",
            // The gateway lacks its master key: not the client's doing.
            Self::VirtualKey(crate::keys::VirtualKeyError::Sealed(_)) => "api_error",
            _ => "invalid_request_error",
        }
    }

    /// A stable machine-readable `error.code`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::MalformedBody(_) => "malformed_body",
            Self::InvalidRequest { .. } => "invalid_request",
            Self::InvalidConfig(_) => "invalid_config",
            Self::MissingProvider => "missing_provider",
            Self::UnknownProvider(_) => "unknown_provider",
            Self::UnsupportedEndpoint { .. } => "unsupported_endpoint",
            Self::MissingProviderSetting { .. } => "missing_provider_setting",
            Self::Unsupported(_) => "unsupported",
            Self::HostRefused(_) => "custom_host_refused",
            Self::BodyTooLarge { .. } => "body_too_large",
            Self::NotFound { .. } => "not_found",
            Self::MethodNotAllowed { .. } => "method_not_allowed",
            Self::UpstreamUnreachable { .. } => "upstream_unreachable",
            Self::RequestTimeout { .. } => "request_timeout",
            Self::UpstreamTimeout { .. } => "upstream_timeout",
            Self::DeadlinePassed { .. } => "total_timeout",
            Self::CircuitOpen { .. } => "circuit_open",
            Self::UpstreamGarbage { .. } => "upstream_invalid_response",
            Self::CredentialExchange { .. } => "credential_exchange_failed",
            Self::Internal(_) => "internal_error",
            Self::Unauthenticated(e) => e.code(),
            Self::Forbidden(_) => "forbidden",
            Self::UnknownKey(_) => "key_not_found",
            Self::RateLimited { .. } => "rate_limit_exceeded",
            Self::BudgetExhausted { .. } => "budget_exceeded",
            Self::VirtualKey(e) => match e {
                crate::keys::VirtualKeyError::Unknown(_) => "invalid_virtual_key",
                crate::keys::VirtualKeyError::Revoked(_) => "revoked_virtual_key",
                crate::keys::VirtualKeyError::Sealed(_) => "virtual_key_sealed",
            },
            Self::Plugin(e) => match e {
                PluginError::Load { .. }
                | PluginError::Instantiate { .. }
                | PluginError::Unavailable(_) => "plugin_unavailable",
                PluginError::Trap { .. } | PluginError::Failed { .. } => "plugin_failed",
                PluginError::Timeout { .. } => "plugin_timeout",
                PluginError::InvalidConfig { .. } => "invalid_config",
                PluginError::Upstream { .. } => "upstream_error",
                PluginError::NotLoaded(_) => "unknown_plugin",
                PluginError::WrongKind { .. } => "wrong_plugin_kind",
            },
        }
    }

    /// Whether another attempt (retry or fallback target) could succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::UpstreamUnreachable { .. }
                | Self::RequestTimeout { .. }
                | Self::UpstreamTimeout { .. }
                | Self::UpstreamGarbage { .. }
        ) || matches!(self, Self::CredentialExchange { status, .. } if *status == 0 || *status >= 500)
    }

    fn param(&self) -> Option<&str> {
        match self {
            Self::InvalidRequest { param, .. } => param.as_deref(),
            Self::InvalidConfig(p) => p.first_path(),
            _ => None,
        }
    }

    /// The OpenAI-shaped body.
    pub fn body(&self) -> serde_json::Value {
        openai_error(
            &self.to_string(),
            self.error_type(),
            self.param(),
            self.code(),
        )
    }
}

/// Builds `{"error":{"message","type","param","code"}}`.
fn plugin_status(e: &PluginError) -> StatusCode {
    match e {
        PluginError::NotLoaded(_)
        | PluginError::WrongKind { .. }
        | PluginError::InvalidConfig { .. } => StatusCode::BAD_REQUEST,
        PluginError::Upstream { status, .. } => {
            StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_GATEWAY)
        }
        PluginError::Load { .. }
        | PluginError::Instantiate { .. }
        | PluginError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        PluginError::Trap { .. } | PluginError::Failed { .. } | PluginError::Timeout { .. } => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
    }
}

pub fn openai_error(
    message: &str,
    error_type: &str,
    param: Option<&str>,
    code: &str,
) -> serde_json::Value {
    json!({"error": {"message": message, "type": error_type, "param": param, "code": code}})
}

impl IntoResponse for GatewayError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut response = (status, axum::Json(self.body())).into_response();
        if let Self::CircuitOpen { retry_after, .. } = &self {
            let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
            response.headers_mut().insert(
                http::header::RETRY_AFTER,
                http::HeaderValue::from(secs.max(1)),
            );
        }
        if let Self::RateLimited {
            limit,
            retry_after,
            unit,
            ..
        } = &self
        {
            let quota = crate::limits::Quota {
                limit: *limit,
                remaining: 0,
                reset: *retry_after,
            };
            crate::limits::headers(response.headers_mut(), *unit, quota);
            response.headers_mut().insert(
                http::header::RETRY_AFTER,
                http::HeaderValue::from((*retry_after).max(1)),
            );
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_has_the_openai_shape() {
        let err = GatewayError::UnknownProvider("nope".into());
        let body = err.body();
        assert_eq!(err.status(), StatusCode::BAD_REQUEST);
        assert_eq!(body["error"]["code"], "unknown_provider");
        assert_eq!(body["error"]["type"], "invalid_request_error");
        assert!(body["error"]["param"].is_null());
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("`nope`"))
        );
    }

    #[test]
    fn key_errors_have_their_statuses_types_and_headers() {
        use crate::keys::{AuthError, VirtualKeyError};
        let cases = [
            (
                GatewayError::from(AuthError::Missing),
                401,
                "invalid_request_error",
                "missing_api_key",
            ),
            (
                GatewayError::Forbidden("no".into()),
                403,
                "invalid_request_error",
                "forbidden",
            ),
            (
                VirtualKeyError::Unknown("v".into()).into(),
                401,
                "invalid_request_error",
                "invalid_virtual_key",
            ),
            (
                VirtualKeyError::Sealed("v".into()).into(),
                500,
                "api_error",
                "virtual_key_sealed",
            ),
            (
                GatewayError::UnknownKey("k".into()),
                404,
                "invalid_request_error",
                "key_not_found",
            ),
        ];
        for (err, status, ty, code) in cases {
            assert_eq!(
                (err.status().as_u16(), err.error_type(), err.code()),
                (status, ty, code),
                "{err}"
            );
        }
        let limited = GatewayError::RateLimited {
            bucket: "key:key_1".into(),
            unit: crate::limits::Unit::Requests,
            limit: 5,
            retry_after: 7,
        };
        assert_eq!(
            (limited.status().as_u16(), limited.error_type()),
            (429, "requests")
        );
        let response = limited.into_response();
        let h = response.headers();
        assert_eq!(h["retry-after"], "7");
        assert_eq!(h["x-ratelimit-limit-requests"], "5");
        assert_eq!(h["x-ratelimit-remaining-requests"], "0");
        assert_eq!(h["x-ratelimit-reset-requests"], "7s");
        let tokens = GatewayError::RateLimited {
            bucket: "key:key_1".into(),
            unit: crate::limits::Unit::Tokens,
            limit: 1000,
            retry_after: 3,
        };
        assert_eq!(tokens.error_type(), "tokens");
        let response = tokens.into_response();
        assert_eq!(response.headers()["x-ratelimit-limit-tokens"], "1000");
        assert_eq!(response.headers()["x-ratelimit-remaining-tokens"], "0");
        let budget = GatewayError::BudgetExhausted {
            bucket: "virtual_key:team".into(),
            budget: crate::limits::budget::Budget {
                usd: 5.0,
                period: crate::limits::budget::Period::Month,
            },
            spent: 5.25,
        };
        assert_eq!(
            (budget.status().as_u16(), budget.code()),
            (412, "budget_exceeded")
        );
        assert_eq!(
            budget.to_string(),
            "budget exhausted for virtual_key:team: $5.2500 spent of $5.0000 per month"
        );
    }

    #[test]
    fn timeouts_are_retryable_and_client_errors_are_not() {
        let t = GatewayError::RequestTimeout {
            provider: "openai".into(),
            timeout_ms: 5,
        };
        assert_eq!(t.status(), StatusCode::REQUEST_TIMEOUT);
        assert!(t.is_retryable());
        assert!(!GatewayError::MissingProvider.is_retryable());
        assert_eq!(
            GatewayError::BodyTooLarge { limit: 1 }.status(),
            StatusCode::PAYLOAD_TOO_LARGE
        );
    }
}
