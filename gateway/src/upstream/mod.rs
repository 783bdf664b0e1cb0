//! Upstream: the pooled HTTP clients that carry provider calls, and the rules for
//! what crosses the boundary (SSRF policy, hop-by-hop headers, error mapping).
//!
//! Two `reqwest` clients share the settings: one for the providers' own and
//! operator-configured URLs, and one for client-chosen custom hosts whose DNS
//! answers pass the [`SsrfPolicy`]. Neither follows redirects (a 3xx is the
//! provider's answer, and a redirect must not sidestep the policy); the guarded one
//! ignores proxy environment variables so the policy sees the real address.

mod fetch;
mod ssrf;
mod tokens;

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, header};

pub use fetch::FetchCache;
pub use ssrf::{GuardedResolver, Refused, SsrfPolicy, find_refusal};
pub use tokens::{TokenSource, Tokens};

use crate::GatewayError;
use crate::config::{Secret, UpstreamSettings};
use crate::providers::UpstreamRequest;

/// The upstream clients.
#[derive(Debug, Clone)]
pub struct Upstream {
    trusted: reqwest::Client,
    guarded: reqwest::Client,
    policy: Arc<SsrfPolicy>,
    tokens: Arc<Tokens>,
    fetches: Arc<FetchCache>,
}

impl Upstream {
    /// Builds both clients.
    pub fn new(settings: &UpstreamSettings, policy: SsrfPolicy) -> Result<Self, reqwest::Error> {
        let policy = Arc::new(policy);
        let base = || {
            reqwest::Client::builder()
                .connect_timeout(settings.connect_timeout)
                .pool_idle_timeout(settings.pool_idle_timeout)
                .pool_max_idle_per_host(settings.pool_max_idle_per_host)
                .tcp_nodelay(true)
                .redirect(reqwest::redirect::Policy::none())
        };
        Ok(Self {
            trusted: base().build()?,
            guarded: base()
                .no_proxy()
                .dns_resolver(Arc::new(GuardedResolver::new(policy.clone())))
                .build()?,
            policy,
            tokens: Arc::default(),
            fetches: Arc::default(),
        })
    }

    /// Uses `tokens` as the token cache and `fetches` as the memory of
    /// plugins' GETs (one of each for every worker's clients).
    pub fn sharing(mut self, tokens: Arc<Tokens>, fetches: Arc<FetchCache>) -> Self {
        self.tokens = tokens;
        self.fetches = fetches;
        self
    }

    /// An access token for a provider's credentials: cached, or exchanged at
    /// the token endpoint the source names. The endpoint may come from the
    /// client (a service account's `token_uri`), so the guarded client and
    /// its policy carry the exchange.
    pub async fn token(
        &self,
        provider: &str,
        source: TokenSource,
    ) -> Result<Arc<Secret>, GatewayError> {
        self.tokens
            .get(provider, source, |req| async move {
                let response = self.send(provider, req, true).await?;
                tokens::read_body(provider, response).await
            })
            .await
    }

    /// Sends a request. `custom_host` selects the guarded client, after the
    /// checks that need no DNS.
    pub async fn send(
        &self,
        provider: &str,
        req: UpstreamRequest,
        custom_host: bool,
    ) -> Result<reqwest::Response, GatewayError> {
        let client = if custom_host {
            self.policy
                .check_url(&req.url)
                .map_err(|e| GatewayError::HostRefused(e.0))?;
            &self.guarded
        } else {
            &self.trusted
        };
        client
            .request(req.method, req.url)
            .headers(req.headers)
            .body(req.body)
            .send()
            .await
            .map_err(|e| map_error(provider, &e))
    }
}

/// Reads a whole answer, refusing one larger than `limit` (a client-chosen host
/// must not be able to make the gateway buffer without bound).
/// `setting` names the limit in the error.
pub async fn read_limited(
    upstream: reqwest::Response,
    limit: usize,
    provider: &str,
    setting: &str,
) -> Result<Bytes, GatewayError> {
    use futures_util::StreamExt;
    let too_large = || GatewayError::UpstreamGarbage {
        provider: provider.to_owned(),
        detail: format!("the answer is larger than {setting} ({limit} bytes)"),
    };
    if upstream.content_length().is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let mut chunks = upstream.bytes_stream();
    let mut first: Option<Bytes> = None;
    let mut rest = bytes::BytesMut::new();
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(|e| GatewayError::UpstreamGarbage {
            provider: provider.to_owned(),
            detail: format!("the body was cut off: {}", describe(&e)),
        })?;
        let held = first.as_ref().map_or(0, Bytes::len) + rest.len();
        if held + chunk.len() > limit {
            return Err(too_large());
        }
        // The usual single-chunk answer is kept without a copy.
        match first.take() {
            None if rest.is_empty() => first = Some(chunk),
            None => rest.extend_from_slice(&chunk),
            Some(f) => {
                rest.extend_from_slice(&f);
                rest.extend_from_slice(&chunk);
            }
        }
    }
    Ok(first.unwrap_or_else(|| rest.freeze()))
}

/// Maps a transport error; the URL is left out (a query may carry a key).
pub fn map_error(provider: &str, err: &reqwest::Error) -> GatewayError {
    if let Some(refused) = find_refusal(err) {
        return GatewayError::HostRefused(refused.0.clone());
    }
    GatewayError::UpstreamUnreachable {
        provider: provider.to_owned(),
        detail: describe(err),
    }
}

/// The innermost causes of an error, joined, without URLs.
pub fn describe(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut current = err.source();
    while let Some(e) = current {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        current = e.source();
    }
    if parts.is_empty() {
        "the connection failed".into()
    } else {
        parts.join(": ")
    }
}

/// Connection-level headers that a proxy must not pass on (RFC 9110 §7.6.1).
pub fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}

/// Removes hop-by-hop headers, including those the `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    let hop: Vec<HeaderName> = headers
        .keys()
        .filter(|n| is_hop_by_hop(n))
        .cloned()
        .collect();
    for name in hop {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn hop_by_hop_headers_are_stripped() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, x-private"),
        );
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key(header::CONTENT_TYPE));
    }

    #[tokio::test]
    async fn a_closed_port_is_unreachable_and_a_refused_host_is_a_400() {
        let settings = crate::config::ServerConfig::defaults()
            .expect("defaults")
            .upstream;
        let strict = SsrfPolicy {
            allow_loopback: false,
            ..SsrfPolicy::default()
        };
        let up = Upstream::new(&settings, strict).expect("client");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        drop(listener);
        let req = |host: &str| UpstreamRequest {
            method: http::Method::GET,
            url: url::Url::parse(&format!("http://{host}:{port}/v1/models")).expect("url"),
            headers: HeaderMap::new(),
            body: bytes::Bytes::new(),
        };
        let err = up
            .send("p", req("127.0.0.1"), false)
            .await
            .expect_err("closed port");
        assert_eq!(err.code(), "upstream_unreachable", "{err}");
        let err = up
            .send("p", req("127.0.0.1"), true)
            .await
            .expect_err("literal refused");
        assert_eq!(err.code(), "custom_host_refused");
        let err = up
            .send("p", req("localhost"), true)
            .await
            .expect_err("resolved refused");
        assert_eq!(err.code(), "custom_host_refused", "{err}");
    }
}
