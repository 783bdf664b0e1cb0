//! Plugins' HTTP calls (`host.fetch`, WIT 0.1.1): sent as a client-chosen
//! custom host is ([`Upstream::send`]: the guarded client and the SSRF policy;
//! a config, which a client may send, names the URL), bounded by the plugin
//! host with the plugin's timeout, answers read up to
//! [`MAX_FETCH_BODY`](crate::plugins::grants) and, for GETs that ask for it, a
//! shared memory of recent 2xx answers (a JWKS is fetched once, not per
//! request).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use crate::plugins::{FetchFuture, FetchRequest, FetchResponse, Outbound};

use super::{Upstream, read_limited};
use crate::providers::UpstreamRequest;

/// Answers kept at most; past it, expired ones go, then all.
const MAX_ENTRIES: usize = 256;

/// Recent GET answers, by method, URL and headers.
#[derive(Debug, Default)]
pub struct FetchCache {
    entries: Mutex<HashMap<String, (Instant, FetchResponse)>>,
}

impl FetchCache {
    fn get(&self, key: &str) -> Option<FetchResponse> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .get(key)
            .filter(|(until, _)| *until > Instant::now())
            .map(|(_, r)| r.clone())
    }

    fn put(&self, key: String, until: Instant, response: FetchResponse) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= MAX_ENTRIES {
            let now = Instant::now();
            entries.retain(|_, (until, _)| *until > now);
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
        }
        entries.insert(key, (until, response));
    }
}

fn cache_key(request: &FetchRequest) -> String {
    let mut key = format!("{} {}", request.method, request.url);
    for (k, v) in &request.headers {
        key.push('\n');
        key.push_str(k);
        key.push(':');
        key.push_str(v);
    }
    key
}

impl Outbound for Upstream {
    fn fetch(&self, request: FetchRequest) -> FetchFuture<'_> {
        Box::pin(async move {
            const WHO: &str = "plugin fetch";
            let cacheable = request.method == http::Method::GET && !request.cache_for.is_zero();
            let key = cacheable.then(|| cache_key(&request));
            if let Some(hit) = key.as_deref().and_then(|k| self.fetches.get(k)) {
                return Ok(hit);
            }
            let mut headers = http::HeaderMap::new();
            for (k, v) in &request.headers {
                let name = http::HeaderName::from_bytes(k.as_bytes())
                    .map_err(|_| format!("bad header name `{k}`"))?;
                let value = http::HeaderValue::from_str(v)
                    .map_err(|_| format!("bad value for header `{k}`"))?;
                headers.append(name, value);
            }
            // As a client-chosen custom host: the same policy and client. The
            // host bounds the whole call with the plugin's timeout.
            let call = UpstreamRequest {
                method: request.method,
                url: request.url,
                headers,
                body: request.body.into(),
            };
            let answer = self
                .send(WHO, call, true)
                .await
                .map_err(|e| e.to_string())?;
            let status = answer.status().as_u16();
            let headers = answer
                .headers()
                .iter()
                .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
                .collect();
            let body = read_limited(
                answer,
                crate::plugins::grants::MAX_FETCH_BODY,
                WHO,
                "the limit of host.fetch",
            )
            .await
            .map_err(|e| e.to_string())?;
            let response = FetchResponse {
                status,
                headers,
                body: body.to_vec(),
            };
            if let Some(key) = key
                && (200..300).contains(&status)
            {
                let until = Instant::now() + request.cache_for;
                self.fetches.put(key, until, response.clone());
            }
            Ok(response)
        })
    }
}
