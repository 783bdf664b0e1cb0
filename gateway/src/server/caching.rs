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
    /// The semantic cache's side, for a request in `mode: "semantic"`
    /// whose last user message is text.
    pub semantic: Option<Semantic>,
}

/// A request's prompt, to be compared by meaning within its scope (the
/// request with that prompt taken out: [`crate::cache::semantic`]).
pub struct Semantic {
    pub scope: crate::cache::Key,
    pub prompt: String,
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
    let (mode, max_age_s) = match (&target.cache, header_mode) {
        (Some(c), _) => (
            c.mode,
            c.max_age_s.unwrap_or(crate::cache::DEFAULT_MAX_AGE_S),
        ),
        (None, Some(mode)) => (mode, crate::cache::DEFAULT_MAX_AGE_S),
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
    // The same key in both modes: they share exact entries.
    let key = k.clone().body(body).finish();
    let semantic = cache
        .semantic()
        .filter(|_| mode == "semantic")
        .and_then(|(settings, _)| {
            let mut value = serde_json::from_slice::<serde_json::Value>(body).ok()?;
            let prompt = crate::cache::semantic::take_prompt(endpoint, &mut value)
                .filter(|prompt| prompt.len() <= settings.max_prompt_bytes)?;
            Some(Semantic {
                scope: k.part(b"scope").json(&value).finish(),
                prompt,
            })
        });
    Some(Lookup {
        key,
        max_age_s,
        refresh,
        semantic,
    })
}

/// The kept answer under `key` at most `max_age_s` old: from Redis when the
/// gateways share state (a failure there is a miss), else from memory.
pub async fn get(
    state: &super::AppState,
    key: &crate::cache::Key,
    max_age_s: u64,
) -> Option<Entry> {
    let now = crate::usage::now_ms();
    let Some(redis) = state.redis.as_deref() else {
        return state.cache.get(key, max_age_s, now);
    };
    crate::shared::ask(Some(redis), "cache lookup", async |r| {
        r.cache_get(key, max_age_s, now).await
    })
    .await
    .flatten()
}

/// What a request's lookup found: the status for its answer, the kept
/// answer on a hit, and the prompt's embedding to keep with a new answer
/// when the request is in `mode: "semantic"`.
pub struct Found {
    pub status: Status,
    pub entry: Option<Entry>,
    pub vector: Option<Vec<f32>>,
}

/// Looks a request up: an exact repeat first; then, in `mode: "semantic"`,
/// the answers kept for prompts of its scope close enough in meaning (each
/// neighbour's answer fetched until one is still kept). The prompt's
/// embedding is asked for on every exact miss, and on a refresh, so the new
/// answer can be found by meaning.
pub async fn find(
    state: &super::AppState,
    lookup: &Lookup,
    embed: impl AsyncFnOnce(&str) -> Option<Vec<f32>>,
) -> Found {
    let mut found = Found {
        status: Status::Refresh,
        entry: None,
        vector: None,
    };
    if !lookup.refresh {
        found.entry = get(state, &lookup.key, lookup.max_age_s).await;
        state.cache.count(found.entry.is_some());
        if found.entry.is_some() {
            found.status = Status::Hit;
            return found;
        }
        found.status = Status::Miss;
    }
    let (Some(semantic), Some((settings, index))) = (&lookup.semantic, state.cache.semantic())
    else {
        return found;
    };
    found.vector = embed(&semantic.prompt).await;
    if lookup.refresh {
        return found;
    }
    let Some(vector) = &found.vector else {
        return found;
    };
    for near in index.search(&semantic.scope, vector, settings.threshold) {
        if let Some(entry) = get(state, &near.key, lookup.max_age_s).await {
            state.cache.count_semantic_hit();
            found.status = Status::SemanticHit;
            found.entry = Some(entry);
            break;
        }
    }
    found
}

/// The embedding in an OpenAI embeddings answer (the shape every provider's
/// answer is given in): `data[0].embedding`.
pub fn embedding_of(body: &[u8]) -> Option<Vec<f32>> {
    #[derive(serde::Deserialize)]
    struct Answer {
        data: Vec<Item>,
    }
    #[derive(serde::Deserialize)]
    struct Item {
        embedding: Vec<f32>,
    }
    let answer: Answer = serde_json::from_slice(body).ok()?;
    answer.data.into_iter().next().map(|i| i.embedding)
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
/// not), with its prompt's embedding when it is to be found by meaning.
pub fn storing(
    response: Response,
    state: &super::AppState,
    lookup: &Lookup,
    vector: Option<Vec<f32>>,
) -> Response {
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
        semantic: lookup
            .semantic
            .as_ref()
            .zip(vector)
            .map(|(s, v)| (s.scope, v)),
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
    /// The scope and the prompt's embedding, for the semantic index.
    semantic: Option<(crate::cache::Key, Vec<f32>)>,
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
        let (key, max_age) = (self.key, self.max_age_s);
        let max_entries = self.cache.semantic().map_or(0, |(s, _)| s.max_entries);
        match (self.redis, self.semantic) {
            // Every gateway indexes the vector from Redis, this one too.
            (Some(redis), Some((scope, vector))) => {
                crate::shared::tell(redis, "cache store", move |r| async move {
                    r.cache_put_semantic(&key, &entry, max_age, &scope, &vector, max_entries)
                        .await
                });
            }
            (Some(redis), None) => {
                crate::shared::tell(redis, "cache store", move |r| async move {
                    r.cache_put(&key, &entry, max_age).await
                });
            }
            (None, semantic) => {
                self.cache.put(key, entry);
                if let Some((scope, vector)) = semantic {
                    index_later(self.cache, scope, key, vector);
                }
            }
        }
        None
    }
}

/// Indexes a kept answer's prompt off the worker (a graph insert is a
/// search and some linking).
fn index_later(
    cache: Arc<Cache>,
    scope: crate::cache::Key,
    key: crate::cache::Key,
    vector: Vec<f32>,
) {
    tokio::task::spawn_blocking(move || {
        if let Some((_, index)) = cache.semantic() {
            index.insert(scope, key, vector);
        }
    });
}

/// `x-portkey-cache-status` on an answer.
pub fn status_header(response: &mut Response, status: Status) {
    response.headers_mut().insert(
        "x-portkey-cache-status",
        http::HeaderValue::from_static(status.label()),
    );
}
