//! The simple cache on the proxy's side ([`crate::cache`]): which requests
//! are looked up and under which key, a hit as an answer, and a miss's
//! answer kept as it passes to the client.

use std::sync::Arc;

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;

use super::observe;

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
        // A map of strings and values always serialises.
        None => k
            .part(b"options")
            .part(&serde_json::to_vec(&target.options).unwrap_or_default()),
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

/// The kept answer for a lookup: from Redis when the gateways share state
/// (a failure there is a miss), else from memory.
pub async fn get(state: &super::AppState, lookup: &Lookup) -> Option<Entry> {
    let now = crate::usage::now_ms();
    let Some(redis) = state.redis.as_deref() else {
        return state.cache.get(&lookup.key, lookup.max_age_s, now);
    };
    let found = crate::shared::ask(Some(redis), "cache lookup", async |r| {
        r.cache_get(&lookup.key, lookup.max_age_s, now).await
    })
    .await
    .flatten();
    state.cache.count(found.is_some());
    found
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
pub fn storing(response: Response, state: &super::AppState, lookup: &Lookup) -> Response {
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
    let keeper = Keeper {
        kept: observe::Kept::new(state.cache.max_entry_bytes()),
        max_age_s: lookup.max_age_s,
        redis: state.redis.clone(),
        broken: parts.extensions.get::<super::relay::Broken>().cloned(),
        key: lookup.key,
        status: parts.status.as_u16(),
        content_type,
        cache: state.cache.clone(),
    };
    Response::from_parts(parts, observe::observed(body, keeper))
}

/// Keeps an answer's frames and stores them when it ends whole.
struct Keeper {
    cache: Arc<Cache>,
    /// Where the entry goes instead, when the gateways share state.
    redis: Option<Arc<crate::shared::Redis>>,
    max_age_s: u64,
    key: crate::cache::Key,
    status: u16,
    content_type: String,
    /// A stream that was ended with an error event is not kept.
    broken: Option<super::relay::Broken>,
    /// An answer over the entry limit is not kept.
    kept: observe::Kept,
}

impl observe::Observer for Keeper {
    fn data(&mut self, data: &Bytes) -> Option<Bytes> {
        self.kept.push(data);
        None
    }

    fn end(self, how: observe::End) -> Option<Bytes> {
        let broken = self
            .broken
            .as_ref()
            .is_some_and(super::relay::Broken::is_set);
        if how != observe::End::Complete || broken || self.kept.overflowed() {
            return None;
        }
        // A copy of its own, which the entry does not share with a read buffer.
        let body = self.kept.copied();
        let entry = Entry {
            status: self.status,
            content_type: self.content_type,
            body,
            stored_at_ms: crate::usage::now_ms(),
        };
        match self.redis {
            Some(redis) => {
                let (key, max_age) = (self.key, self.max_age_s);
                crate::shared::tell(redis, "cache store", move |r| async move {
                    r.cache_put(&key, &entry, max_age).await
                });
            }
            None => self.cache.put(self.key, entry),
        }
        None
    }
}

/// `x-portkey-cache-status` on an answer.
pub fn status_header(response: &mut Response, status: Status) {
    response.headers_mut().insert(
        "x-portkey-cache-status",
        http::HeaderValue::from_static(status.label()),
    );
}
