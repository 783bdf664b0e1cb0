//! The simple cache on the proxy's side ([`crate::cache`]): which requests
//! are looked up and under which key, a hit as an answer, and a miss's
//! answer kept as it passes to the client.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http_body::{Frame, SizeHint};

use crate::GatewayError;
use crate::cache::{Cache, Entry, KeyBuilder, Status};
use crate::providers::{Endpoint, UpstreamRequest};
use crate::routing::{self, PortkeyHeader, Target};

/// One request's cache lookup: its key, the age it accepts, and whether it
/// skips the lookup (`x-portkey-cache-force-refresh`).
pub struct Lookup {
    pub key: crate::cache::Key,
    pub max_age_s: u64,
    pub refresh: bool,
}

/// The cache a request asks for when its config names none: Portkey's
/// `x-portkey-cache: simple`.
pub fn header_mode(headers: &http::HeaderMap) -> Result<Option<&'static str>, GatewayError> {
    match routing::header_str(headers, PortkeyHeader::Cache)?.map(str::trim) {
        None | Some("" | "false" | "disabled") => Ok(None),
        Some("simple" | "true") => Ok(Some("simple")),
        Some("semantic") => Ok(Some("semantic")),
        Some(other) => Err(GatewayError::invalid(
            format!("`x-portkey-cache` must be simple or semantic, found `{other}`"),
            Some("x-portkey-cache"),
        )),
    }
}

/// Whether answers of `endpoint` are cached: the JSON generation routes.
fn cacheable(endpoint: Endpoint) -> bool {
    matches!(
        endpoint,
        Endpoint::Chat
            | Endpoint::Completions
            | Endpoint::Embeddings
            | Endpoint::Messages
            | Endpoint::Responses
    )
}

/// The lookup for a call about to be sent, if its target asks for a cache
/// (its config's `cache`, else `header_mode`).
pub fn lookup(
    cache: &Cache,
    target: &Target,
    header_mode: Option<&'static str>,
    endpoint: Endpoint,
    headers: &http::HeaderMap,
    body: &[u8],
    upstream: &UpstreamRequest,
) -> Option<Lookup> {
    if !cache.enabled() || !cacheable(endpoint) {
        return None;
    }
    let max_age_s = match (&target.cache, header_mode) {
        (Some(c), _) => c.max_age_s.unwrap_or(crate::cache::DEFAULT_MAX_AGE_S),
        (None, Some(_)) => crate::cache::DEFAULT_MAX_AGE_S,
        (None, None) => return None,
    };
    let refresh = routing::header_str(headers, PortkeyHeader::CacheForceRefresh)
        .ok()
        .flatten()
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
    let mut k = KeyBuilder::default()
        .part(target.provider.slug().as_bytes())
        .part(upstream.url.as_str().as_bytes())
        .part(endpoint.name().as_bytes());
    // The credentials: the key itself, or the provider options that hold
    // them (AWS keys, a service account).
    k = match &target.api_key {
        Some(secret) => k.part(b"key").part(secret.expose().as_bytes()),
        None => k.part(b"options").part(
            serde_json::Value::Object(target.options.clone())
                .to_string()
                .as_bytes(),
        ),
    };
    for name in &target.forward_headers {
        for value in headers.get_all(name) {
            k = k.part(name.as_str().as_bytes()).part(value.as_bytes());
        }
    }
    Some(Lookup {
        key: k.body(body).finish(),
        max_age_s,
        refresh,
    })
}

/// A kept answer, marked as the gateway's own (not the target's health).
pub fn hit(entry: Entry) -> Response {
    let mut response = Response::new(Body::from(entry.body));
    *response.status_mut() =
        http::StatusCode::from_u16(entry.status).unwrap_or(http::StatusCode::OK);
    if let Ok(ct) = http::HeaderValue::from_str(&entry.content_type) {
        response
            .headers_mut()
            .insert(http::header::CONTENT_TYPE, ct);
    }
    response.extensions_mut().insert(routing::Local);
    response
}

/// A 2xx answer that is kept once it has passed whole (a stream the relay
/// ended with an error event, a cut body, or one over the entry limit, is
/// not).
pub fn storing(response: Response, cache: Arc<Cache>, lookup: &Lookup) -> Response {
    if !response.status().is_success() {
        return response;
    }
    let (parts, body) = response.into_parts();
    let content_type = parts
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_owned();
    let limit = cache.max_entry_bytes();
    let broken = parts.extensions.get::<super::relay::Broken>().cloned();
    let body = Teed {
        broken,
        inner: body,
        kept: Vec::new(),
        len: 0,
        limit,
        store: Some(Pending {
            cache,
            key: lookup.key,
            status: parts.status.as_u16(),
            content_type,
        }),
    };
    Response::from_parts(parts, Body::new(body))
}

struct Pending {
    cache: Arc<Cache>,
    key: crate::cache::Key,
    status: u16,
    content_type: String,
}

struct Teed {
    inner: Body,
    /// A stream that was ended with an error event is not kept.
    broken: Option<super::relay::Broken>,
    kept: Vec<Bytes>,
    len: usize,
    limit: usize,
    /// Dropped when the answer cannot be kept.
    store: Option<Pending>,
}

impl Teed {
    fn store(&mut self) {
        if self
            .broken
            .as_ref()
            .is_some_and(super::relay::Broken::is_set)
        {
            self.store = None;
        }
        if let Some(p) = self.store.take() {
            // A copy of its own: a frame may be a slice of a much larger read
            // buffer, which a kept slice would pin for as long as the entry
            // lives.
            let body = Bytes::from(self.kept.concat());
            p.cache.put(
                p.key,
                Entry {
                    status: p.status,
                    content_type: p.content_type,
                    body,
                    stored_at_ms: crate::usage::now_ms(),
                },
            );
        }
    }
}

impl http_body::Body for Teed {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref()
                    && this.store.is_some()
                {
                    this.len += data.len();
                    if this.len > this.limit {
                        this.store = None;
                        this.kept.clear();
                    } else {
                        this.kept.push(data.clone());
                    }
                }
                if this.inner.is_end_stream() {
                    this.store();
                }
            }
            Poll::Ready(None) => this.store(),
            Poll::Ready(Some(Err(_))) => this.store = None,
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// `x-portkey-cache-status` on an answer.
pub fn status_header(response: &mut Response, status: Status) {
    response.headers_mut().insert(
        "x-portkey-cache-status",
        http::HeaderValue::from_static(status.label()),
    );
}
