//! The simple cache: 2xx answers kept for requests asked again, JSON answers
//! and SSE streams alike (a stream is replayed as it was sent).
//!
//! A request's key is a SHA-256 over what decides its answer: the provider,
//! the upstream URL (host, deployment, region, model where the URL names
//! it), the credentials (the key itself, or the target's provider options
//! that hold them: two keys never share an entry), the values of headers
//! forwarded upstream, the endpoint, and the body with its members sorted
//! (so key order and whitespace do not matter). `max_age` is the age a
//! request accepts (seconds, as Portkey documents; default 7 days);
//! `x-portkey-cache-force-refresh: true` skips the lookup and stores the new
//! answer. The store is bounded in bytes (`[cache] max_bytes`) and evicts
//! the least recently used entries.
//!
//! `mode: "semantic"` looks up exact repeats first, then, for requests whose
//! last user message is text, answers kept for prompts close in meaning (see
//! [`semantic`]).
//!
//! This module calls nothing else in the pipeline ([`crate::json_text`]
//! only reads JSON text).

mod canonical;
pub mod semantic;

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use serde_json::Value;

/// Portkey's default `max_age`: seven days.
pub const DEFAULT_MAX_AGE_S: u64 = 7 * 86_400;

/// `[cache]` in the server config.
#[derive(Debug, Clone, PartialEq)]
pub struct CacheSettings {
    /// The most the entries may hold together; 0 turns caching off.
    pub max_bytes: usize,
    /// `[cache.semantic]`: without it, `mode: "semantic"` finds exact
    /// repeats only.
    pub semantic: Option<semantic::SemanticSettings>,
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self {
            max_bytes: 64 << 20,
            semantic: None,
        }
    }
}

/// What became of a request's cache lookup (`x-portkey-cache-status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Hit,
    /// Answered with an answer kept for a prompt close in meaning.
    SemanticHit,
    Miss,
    /// Asked to skip the lookup; the answer is stored anew.
    Refresh,
    /// No cache asked for (or the request is not one that is cached).
    Disabled,
}

impl Status {
    pub fn label(self) -> &'static str {
        match self {
            Self::Hit => "HIT",
            Self::SemanticHit => "SEMANTIC HIT",
            Self::Miss => "MISS",
            Self::Refresh => "REFRESH",
            Self::Disabled => "DISABLED",
        }
    }

    /// Answered from the cache: nothing reached the provider.
    pub fn is_hit(self) -> bool {
        matches!(self, Self::Hit | Self::SemanticHit)
    }
}

/// An entry's key.
pub type Key = [u8; 32];

/// Builds a [`Key`] from a request's parts, each length-prefixed so no two
/// different sequences of parts hash alike.
#[derive(Clone)]
pub struct KeyBuilder(ring::digest::Context);

impl Default for KeyBuilder {
    fn default() -> Self {
        let mut c = ring::digest::Context::new(&ring::digest::SHA256);
        c.update(b"sluice-cache-v1");
        Self(c)
    }
}

impl KeyBuilder {
    pub fn part(mut self, bytes: &[u8]) -> Self {
        self.0.update(&(bytes.len() as u64).to_le_bytes());
        self.0.update(bytes);
        self
    }

    /// A JSON body in canonical form (members sorted, no whitespace:
    /// [`canonical::text`]); a body that is not JSON, as it is.
    pub fn body(self, bytes: &[u8]) -> Self {
        match canonical::text(bytes) {
            Some(canonical) => self.part(b"json-raw").part(&canonical),
            None => self.part(b"raw").part(bytes),
        }
    }

    /// A JSON value with its object members sorted and no whitespace.
    pub fn json(self, value: &Value) -> Self {
        let mut out = Vec::with_capacity(256);
        canonical::value(value, &mut out);
        self.part(b"json").part(&out)
    }

    pub fn finish(self) -> Key {
        let digest = self.0.finish();
        let mut key = [0u8; 32];
        key.copy_from_slice(digest.as_ref());
        key
    }
}

/// A kept answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub status: u16,
    /// `application/json`, `text/event-stream`, ...
    pub content_type: String,
    pub body: Bytes,
    /// Unix milliseconds when it was stored.
    pub stored_at_ms: i64,
}

impl Entry {
    fn size(&self) -> usize {
        self.body.len() + self.content_type.len() + 96
    }

    /// The entry as bytes, for a store elsewhere (Redis): status (2 bytes),
    /// stored time (8), the content type's length (2) and text, the body.
    pub fn encode(&self) -> Vec<u8> {
        let ct = self.content_type.as_bytes();
        let mut out = Vec::with_capacity(12 + ct.len() + self.body.len());
        out.extend_from_slice(&self.status.to_be_bytes());
        out.extend_from_slice(&self.stored_at_ms.to_be_bytes());
        out.extend_from_slice(&(ct.len().min(u16::MAX as usize) as u16).to_be_bytes());
        out.extend_from_slice(&ct[..ct.len().min(u16::MAX as usize)]);
        out.extend_from_slice(&self.body);
        out
    }

    /// [`Entry::encode`]'s bytes back; `None` if they are not an entry.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let status = u16::from_be_bytes(bytes.get(0..2)?.try_into().ok()?);
        let stored_at_ms = i64::from_be_bytes(bytes.get(2..10)?.try_into().ok()?);
        let ct_len = usize::from(u16::from_be_bytes(bytes.get(10..12)?.try_into().ok()?));
        let content_type = std::str::from_utf8(bytes.get(12..12 + ct_len)?)
            .ok()?
            .to_owned();
        Some(Self {
            status,
            content_type,
            body: Bytes::copy_from_slice(bytes.get(12 + ct_len..)?),
            stored_at_ms,
        })
    }

    /// Whether a request that accepts `max_age_s` may use it at `now_ms`.
    pub fn fresh(&self, max_age_s: u64, now_ms: i64) -> bool {
        now_ms.saturating_sub(self.stored_at_ms) <= (max_age_s as i64).saturating_mul(1000)
    }
}

struct Inner {
    entries: lru::LruCache<Key, Entry>,
    bytes: usize,
}

/// The answers kept in memory.
pub struct Cache {
    settings: CacheSettings,
    inner: Mutex<Inner>,
    /// The prompts of kept answers by meaning, with `[cache.semantic]`.
    semantic: Option<semantic::Index>,
    hits: AtomicU64,
    semantic_hits: AtomicU64,
    misses: AtomicU64,
    stored: AtomicU64,
    evicted: AtomicU64,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Cache {
    pub fn new(settings: CacheSettings) -> Self {
        Self {
            semantic: settings
                .semantic
                .as_ref()
                .map(|s| semantic::Index::new(s.max_entries)),
            settings,
            inner: Mutex::new(Inner {
                entries: lru::LruCache::unbounded(),
                bytes: 0,
            }),
            hits: AtomicU64::new(0),
            semantic_hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            stored: AtomicU64::new(0),
            evicted: AtomicU64::new(0),
        }
    }

    pub fn enabled(&self) -> bool {
        self.settings.max_bytes > 0
    }

    /// The semantic cache's settings and index, when it is configured.
    pub fn semantic(&self) -> Option<(&semantic::SemanticSettings, &semantic::Index)> {
        Some((self.settings.semantic.as_ref()?, self.semantic.as_ref()?))
    }

    /// Counts a miss of the exact lookup answered by meaning.
    pub fn count_semantic_hit(&self) {
        self.semantic_hits.fetch_add(1, Ordering::Relaxed);
    }

    /// The largest answer kept: an eighth of the store.
    pub fn max_entry_bytes(&self) -> usize {
        self.settings.max_bytes / 8
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The entry for `key` if it is at most `max_age_s` old; an older one is
    /// dropped.
    pub fn get(&self, key: &Key, max_age_s: u64, now_ms: i64) -> Option<Entry> {
        let mut inner = self.inner();
        let fresh = match inner.entries.get(key) {
            Some(e) if e.fresh(max_age_s, now_ms) => Some(e.clone()),
            Some(_) => None,
            None => return None,
        };
        if fresh.is_none()
            && let Some(old) = inner.entries.pop(key)
        {
            inner.bytes -= old.size();
        }
        fresh
    }

    /// Counts a request's exact lookup (the caller's: [`Cache::get`] is
    /// also how a semantic neighbour's answer is fetched).
    pub fn count(&self, hit: bool) {
        let counter = if hit { &self.hits } else { &self.misses };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Keeps `entry`, evicting the least recently used entries to make room.
    pub fn put(&self, key: Key, entry: Entry) {
        let size = entry.size();
        if size > self.max_entry_bytes() {
            return;
        }
        let mut inner = self.inner();
        if let Some(old) = inner.entries.put(key, entry) {
            inner.bytes -= old.size();
        }
        inner.bytes += size;
        while inner.bytes > self.settings.max_bytes {
            match inner.entries.pop_lru() {
                Some((_, old)) => {
                    inner.bytes -= old.size();
                    self.evicted.fetch_add(1, Ordering::Relaxed);
                }
                None => break,
            }
        }
        self.stored.fetch_add(1, Ordering::Relaxed);
    }

    /// Prometheus text: lookups by outcome, entries, bytes, evictions.
    pub fn prometheus(&self, out: &mut String) {
        let (entries, bytes) = {
            let inner = self.inner();
            (inner.entries.len(), inner.bytes)
        };
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        // A semantic hit missed the exact lookup first.
        let semantic_hits = load(&self.semantic_hits);
        let vectors = self.semantic.as_ref().map_or(0, semantic::Index::len);
        out.push_str(&format!(
            "# HELP sluice_cache_lookups_total Cache lookups by result.\n\
             # TYPE sluice_cache_lookups_total counter\n\
             sluice_cache_lookups_total{{result=\"hit\"}} {}\n\
             sluice_cache_lookups_total{{result=\"semantic_hit\"}} {semantic_hits}\n\
             sluice_cache_lookups_total{{result=\"miss\"}} {}\n\
             # HELP sluice_cache_stores_total Answers stored in the simple cache.\n\
             # TYPE sluice_cache_stores_total counter\n\
             sluice_cache_stores_total {}\n\
             # HELP sluice_cache_evictions_total Entries evicted to make room.\n\
             # TYPE sluice_cache_evictions_total counter\n\
             sluice_cache_evictions_total {}\n\
             # HELP sluice_cache_entries Entries in the simple cache.\n\
             # TYPE sluice_cache_entries gauge\n\
             sluice_cache_entries {entries}\n\
             # HELP sluice_cache_bytes Bytes the simple cache holds.\n\
             # TYPE sluice_cache_bytes gauge\n\
             sluice_cache_bytes {bytes}\n\
             # HELP sluice_cache_semantic_vectors Prompts the semantic cache compares by meaning.\n\
             # TYPE sluice_cache_semantic_vectors gauge\n\
             sluice_cache_semantic_vectors {vectors}\n",
            load(&self.hits),
            load(&self.misses).saturating_sub(semantic_hits),
            load(&self.stored),
            load(&self.evicted),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(body: &str, at: i64) -> Entry {
        Entry {
            status: 200,
            content_type: "application/json".into(),
            body: Bytes::from(body.to_owned()),
            stored_at_ms: at,
        }
    }

    #[test]
    fn keys_ignore_member_order_and_whitespace_but_nothing_else() {
        let key = |provider: &str, body: &str| {
            KeyBuilder::default()
                .part(provider.as_bytes())
                .body(body.as_bytes())
                .finish()
        };
        let a = key(
            "openai",
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#,
        );
        let b = key(
            "openai",
            r#"{ "messages": [ {"content": "hi", "role": "user"} ], "model": "m" }"#,
        );
        assert_eq!(a, b);
        assert_ne!(
            a,
            key(
                "groq",
                r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#
            )
        );
        assert_ne!(
            a,
            key(
                "openai",
                r#"{"model":"m","messages":[{"role":"user","content":"Hi"}]}"#
            )
        );
        // Nested objects are sorted too.
        assert_eq!(
            key("p", r#"{"a":{"y":1,"x":[{"q":2,"p":3}]}}"#),
            key("p", r#"{"a": {"x": [ {"p":3, "q":2} ], "y": 1}}"#)
        );
        assert_eq!(
            key("p", r#"{"\u0061":1,"b":2}"#),
            key("p", r#"{"b":2,"\u0061":1}"#)
        );
        assert_ne!(key("p", r#"{"a":1}"#), key("p", r#"{"a":2}"#));
        // Not JSON: the bytes themselves.
        assert_eq!(key("p", "not json"), key("p", "not json"));
        assert_ne!(key("p", "not json"), key("p", "not json!"));
        // Array order is meaning, not layout.
        assert_ne!(
            key("p", r#"{"stop":["a","b"]}"#),
            key("p", r#"{"stop":["b","a"]}"#)
        );
        // Parts are length-prefixed: moving bytes between them changes the key.
        let split = |x: &str, y: &str| {
            KeyBuilder::default()
                .part(x.as_bytes())
                .part(y.as_bytes())
                .finish()
        };
        assert_ne!(split("ab", "c"), split("a", "bc"));
    }

    #[test]
    fn old_entries_miss_and_the_least_recently_used_go_first() {
        // An entry of 100 bytes takes 212 with its overhead: eight fit.
        let cache = Cache::new(CacheSettings {
            max_bytes: 1800,
            semantic: None,
        });
        cache.count(true);
        cache.count(true);
        cache.count(false);
        cache.count_semantic_hit();
        let k = |n: u8| [n; 32];
        cache.put(k(1), entry(&"a".repeat(100), 1_000));
        assert_eq!(cache.get(&k(1), 10, 5_000).map(|e| e.body.len()), Some(100));
        // Older than this request accepts: a miss, and dropped.
        assert_eq!(cache.get(&k(1), 10, 12_000), None);
        assert_eq!(cache.get(&k(1), 100, 12_000), None);

        // Room for about eight 100-byte entries: the ninth evicts the least
        // recently used, which is not the one just read.
        for n in 0..8 {
            cache.put(k(n), entry(&"b".repeat(100), 0));
        }
        assert!(cache.get(&k(0), 10, 0).is_some());
        cache.put(k(8), entry(&"c".repeat(100), 0));
        assert!(cache.get(&k(0), 10, 0).is_some(), "read recently: kept");
        assert!(
            cache.get(&k(1), 10, 0).is_none(),
            "least recently used: evicted"
        );
        // An entry over an eighth of the store is not kept.
        cache.put(k(9), entry(&"d".repeat(300), 0));
        assert!(cache.get(&k(9), 10, 0).is_none());
        let e = entry("{\"a\":1}", 42);
        assert_eq!(Entry::decode(&e.encode()), Some(e));
        assert_eq!(Entry::decode(b"short"), None);
        let mut text = String::new();
        cache.prometheus(&mut text);
        assert!(
            text.contains("sluice_cache_lookups_total{result=\"hit\"} 2")
                && text.contains("sluice_cache_lookups_total{result=\"semantic_hit\"} 1")
                && text.contains("sluice_cache_lookups_total{result=\"miss\"} 0"),
            "{text}"
        );
    }
}
