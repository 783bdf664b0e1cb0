//! What a call may reach beyond its arguments — WIT 0.1.1's
//! `host.request-header` and `host.fetch`: the request's headers (never the
//! gateway's own credentials), and an HTTP client the pipeline lends for the
//! call. A plugin opens no sockets: the host makes the call, with a timeout, a
//! size limit and the SSRF policy of client-chosen hosts.
//!
//! This module defines the seam ([`Outbound`]); `upstream` implements it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// Longest a `host.fetch` may wait.
pub const MAX_FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest answer a `host.fetch` returns.
pub const MAX_FETCH_BODY: usize = 1 << 20;
/// `host.fetch` calls one plugin call may make.
pub const MAX_FETCHES_PER_CALL: u32 = 4;

/// An HTTP call a plugin asked for.
#[derive(Debug, Clone)]
pub struct FetchRequest {
    pub method: http::Method,
    pub url: url::Url,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub timeout: Duration,
    /// For a GET: how long a 2xx may be answered again from memory.
    pub cache_for: Duration,
}

/// Its answer.
#[derive(Debug, Clone)]
pub struct FetchResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// The future [`Outbound::fetch`] returns.
pub type FetchFuture<'a> = Pin<Box<dyn Future<Output = Result<FetchResponse, String>> + Send + 'a>>;

/// Makes plugins' HTTP calls. The error is a sentence for the plugin.
pub trait Outbound: Send + Sync + std::fmt::Debug + 'static {
    fn fetch(&self, request: FetchRequest) -> FetchFuture<'_>;
}

/// What one request grants the plugin calls made for it. Cloning is two
/// reference counts.
#[derive(Clone, Default)]
pub struct Grants {
    pub headers: Option<Arc<http::HeaderMap>>,
    pub outbound: Option<Arc<dyn Outbound>>,
}

impl std::fmt::Debug for Grants {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grants")
            .field("headers", &self.headers.as_ref().map(|h| h.len()))
            .field("outbound", &self.outbound.is_some())
            .finish()
    }
}

impl Grants {
    /// One request header for a plugin, unless it is one of the gateway's own
    /// credentials or carries a config (which may hold provider keys).
    pub fn header(&self, name: &str) -> Option<String> {
        let name = name.to_ascii_lowercase();
        if withheld(&name) {
            return None;
        }
        let values: Vec<&str> = self
            .headers
            .as_ref()?
            .get_all(name.as_str())
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        (!values.is_empty()).then(|| values.join(", "))
    }
}

/// The gateway's settings headers that carry secrets: gateway and virtual
/// keys, provider credentials (AWS, Vertex, Azure), and configs.
fn withheld(name: &str) -> bool {
    let Some(setting) = name
        .strip_prefix("x-portkey-")
        .or_else(|| name.strip_prefix("x-sluice-"))
    else {
        return false;
    };
    const SECRET: [&str; 7] = [
        "key",
        "secret",
        "token",
        "service-account",
        "credential",
        "password",
        "config",
    ];
    SECRET.iter().any(|s| setting.contains(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_given_but_not_the_gateways_credentials() {
        let mut headers = http::HeaderMap::new();
        for (k, v) in [
            ("authorization", "Bearer eyJ.client.jwt"),
            ("x-team", "red"),
            ("x-portkey-api-key", "sk-gateway"),
            ("x-sluice-virtual-key", "vk"),
            ("x-portkey-aws-secret-access-key", "aws"),
            ("x-portkey-vertex-service-account-json", "{}"),
            ("x-portkey-config", "{\"api_key\":\"sk\"}"),
            ("x-portkey-trace-id", "t-1"),
        ] {
            headers.append(k, v.parse().expect("value"));
        }
        headers.append("x-team", "blue".parse().expect("value"));
        let grants = Grants {
            headers: Some(Arc::new(headers)),
            outbound: None,
        };
        assert_eq!(
            grants.header("Authorization").as_deref(),
            Some("Bearer eyJ.client.jwt")
        );
        assert_eq!(grants.header("x-team").as_deref(), Some("red, blue"));
        assert_eq!(grants.header("x-portkey-trace-id").as_deref(), Some("t-1"));
        for secret in [
            "x-portkey-api-key",
            "x-sluice-virtual-key",
            "x-portkey-aws-secret-access-key",
            "x-portkey-vertex-service-account-json",
            "X-Portkey-Config",
        ] {
            assert_eq!(grants.header(secret), None, "{secret}");
        }
        assert_eq!(grants.header("x-missing"), None);
    }
}
