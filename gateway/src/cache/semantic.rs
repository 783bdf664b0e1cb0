//! The semantic cache's side of the store: which part of a request is
//! compared by meaning (its last user message), and the index of the vectors
//! of kept answers' prompts.
//!
//! A request is looked up by meaning only among entries of its own *scope*:
//! everything that decides the answer but the last user message's text (the
//! provider, the upstream URL, the credentials, the model and every
//! parameter, the system prompt and the earlier turns) must be the same. Two
//! requests that differ in their temperature, their model or their
//! conversation so far never share an answer, however close their last
//! questions are.
//!
//! Each scope has its own HNSW graph (the `hnsw_rs` crate) over the prompts'
//! embeddings, compared by cosine similarity (vectors are scaled to length 1
//! as they come in, so it is a dot product: [`UnitDot`]). The index holds at most
//! `max_entries` vectors; the oldest go first. HNSW graphs do not delete, so a
//! vector that goes leaves a hole that searches step over, and a scope whose
//! holes outnumber its vectors is rebuilt from the rest.

use std::collections::{HashMap, VecDeque};
use std::sync::RwLock;

use hnsw_rs::prelude::{Distance, Hnsw};
use serde_json::Value;

use super::Key;
use crate::providers::Endpoint;

/// `[cache.semantic]` in the server config.
#[derive(Debug, Clone, PartialEq)]
pub struct SemanticSettings {
    /// The named config (under `[configs]`) that embeddings are asked of.
    pub embedding_config: String,
    /// The embedding model, when that config does not set one.
    pub model: Option<String>,
    /// The cosine similarity a kept prompt needs to answer a new one.
    pub threshold: f32,
    /// The most vectors kept; the oldest go first.
    pub max_entries: usize,
    /// The longest prompt compared by meaning, in bytes; longer ones use
    /// the exact cache only.
    pub max_prompt_bytes: usize,
}

impl SemanticSettings {
    pub const DEFAULT_THRESHOLD: f32 = 0.95;
    pub const DEFAULT_MAX_ENTRIES: usize = 10_000;
    pub const DEFAULT_MAX_PROMPT_BYTES: usize = 8 << 10;
}

/// Takes the text of the request's last user message out of `body`, leaving
/// `null` in its place (what is left is the request's scope). `None` when the
/// endpoint has no such message or its content is not text.
///
/// Chat completions and Anthropic's messages: the last message whose role is
/// `user`, its content a string or text parts. Completions: a `prompt` that
/// is one string. The Responses API: an `input` string, or its last user
/// item. Text parts are joined with newlines.
pub fn take_prompt(endpoint: Endpoint, body: &mut Value) -> Option<String> {
    let content = match endpoint {
        Endpoint::Chat | Endpoint::Messages => last_user(body.get_mut("messages")?)?,
        Endpoint::Completions => body.get_mut("prompt").filter(|p| p.is_string())?,
        Endpoint::Responses => match body.get_mut("input")? {
            input @ Value::String(_) => input,
            input => last_user(input)?,
        },
        _ => return None,
    };
    let text = match content {
        Value::String(s) => std::mem::take(s),
        Value::Array(parts) => {
            let mut texts = Vec::with_capacity(parts.len());
            for part in parts.iter() {
                let kind = part.get("type").and_then(Value::as_str);
                match (kind, part.get("text").and_then(Value::as_str)) {
                    (Some("text" | "input_text"), Some(t)) => texts.push(t),
                    // An image or a file is not compared by meaning.
                    _ => return None,
                }
            }
            texts.join("\n")
        }
        _ => return None,
    };
    *content = Value::Null;
    (!text.trim().is_empty()).then_some(text)
}

/// The content of the last `user` item of a message list.
fn last_user(messages: &mut Value) -> Option<&mut Value> {
    messages
        .as_array_mut()?
        .iter_mut()
        .rev()
        .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))?
        .get_mut("content")
}

/// A neighbour found: the kept answer's key and how close its prompt is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Found {
    pub key: Key,
    pub similarity: f32,
}

/// One vector in a scope, under its id in the graph.
struct Slot {
    key: Key,
    vector: Vec<f32>,
}

/// The cosine distance of two vectors of length 1: one minus their dot
/// product, summed in eight lanes so the compiler makes it SIMD (hnsw_rs's
/// own cosine is a serial sum in f64, and asserts on rounding).
#[derive(Debug, Clone, Copy, Default)]
pub struct UnitDot;

impl Distance<f32> for UnitDot {
    fn eval(&self, a: &[f32], b: &[f32]) -> f32 {
        (1.0 - dot(a, b)).clamp(0.0, 2.0)
    }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            lanes[i] += x[i] * y[i];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// `vector` scaled to length 1; `None` when it has no direction or is not
/// finite.
fn unit(mut vector: Vec<f32>) -> Option<Vec<f32>> {
    let norm = dot(&vector, &vector).sqrt();
    if vector.is_empty() || !norm.is_finite() || norm == 0.0 {
        return None;
    }
    for x in &mut vector {
        *x /= norm;
    }
    Some(vector)
}

/// One scope's graph and the vectors in it.
struct Scope {
    graph: Hnsw<'static, f32, UnitDot>,
    dim: usize,
    slots: HashMap<usize, Slot>,
    next_id: usize,
}

// Graph parameters: 16 links per node and 100 candidates while building are
// the usual defaults for embeddings of a few hundred to a few thousand
// dimensions; 16 layers is hnsw_rs's most.
const LINKS: usize = 16;
const LAYERS: usize = 16;
const EF_BUILD: usize = 100;
const EF_SEARCH: usize = 64;
/// Neighbours asked for per search: the nearest may be gone from the store.
const NEIGHBOURS: usize = 4;

impl Scope {
    fn new(dim: usize) -> Self {
        Self {
            graph: Hnsw::new(LINKS, 64, LAYERS, EF_BUILD, UnitDot),
            dim,
            slots: HashMap::new(),
            next_id: 0,
        }
    }

    fn add(&mut self, id: usize, slot: Slot) {
        self.graph.insert_slice((&slot.vector, id));
        self.slots.insert(id, slot);
    }

    /// Builds the graph again from the vectors still here, once the holes
    /// outnumber them.
    fn compact(&mut self) {
        // The graph holds every id it was given, those gone included.
        let holes = self.graph.get_nb_point() - self.slots.len();
        if holes <= self.slots.len().max(32) {
            return;
        }
        let slots = std::mem::take(&mut self.slots);
        self.graph = Hnsw::new(LINKS, slots.len().max(64), LAYERS, EF_BUILD, UnitDot);
        for (id, slot) in slots {
            self.add(id, slot);
        }
    }

    fn nearest(&self, vector: &[f32]) -> Vec<Found> {
        // The holes are walked through but never returned.
        let live = |id: &usize| self.slots.contains_key(id);
        self.graph
            .search_filter(vector, NEIGHBOURS, EF_SEARCH, Some(&live))
            .into_iter()
            .filter_map(|n| {
                let slot = self.slots.get(&n.get_origin_id())?;
                Some(Found {
                    key: slot.key,
                    similarity: 1.0 - n.get_distance(),
                })
            })
            .collect()
    }
}

#[derive(Default)]
struct Inner {
    scopes: HashMap<Key, Scope>,
    /// Every vector kept, oldest first: its scope and id.
    order: VecDeque<(Key, usize)>,
}

/// The vectors of kept answers' prompts, by scope.
pub struct Index {
    max_entries: usize,
    inner: RwLock<Inner>,
}

impl std::fmt::Debug for Index {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Index")
            .field("max_entries", &self.max_entries)
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

impl Index {
    pub fn new(max_entries: usize) -> Self {
        Self {
            max_entries,
            inner: RwLock::default(),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    /// The vectors kept.
    pub fn len(&self) -> usize {
        self.read().order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The kept prompts of `scope` at least `threshold` similar to
    /// `vector`, the closest first.
    pub fn search(&self, scope: &Key, vector: &[f32], threshold: f32) -> Vec<Found> {
        let Some(vector) = unit(vector.to_vec()) else {
            return Vec::new();
        };
        let inner = self.read();
        let Some(s) = inner.scopes.get(scope) else {
            return Vec::new();
        };
        if s.dim != vector.len() {
            return Vec::new();
        }
        let mut found: Vec<Found> = s
            .nearest(&vector)
            .into_iter()
            .filter(|f| f.similarity >= threshold)
            .collect();
        found.sort_by(|a, b| b.similarity.total_cmp(&a.similarity));
        found
    }

    /// Keeps `vector` as the prompt of the answer under `key` in `scope`.
    /// A vector whose length differs from the scope's (the embedding model
    /// changed) starts the scope afresh; a vector with no direction, or the
    /// same prompt for the same answer again, is not kept.
    pub fn insert(&self, scope: Key, key: Key, vector: Vec<f32>) {
        if self.max_entries == 0 {
            return;
        }
        let Some(vector) = unit(vector) else {
            return;
        };
        let mut inner = self.write();
        let Inner { scopes, order } = &mut *inner;
        let s = scopes
            .entry(scope)
            .or_insert_with(|| Scope::new(vector.len()));
        if s.dim != vector.len() {
            *s = Scope::new(vector.len());
        }
        if s.nearest(&vector)
            .first()
            .is_some_and(|f| f.key == key && f.similarity > 0.9999)
        {
            return;
        }
        let id = s.next_id;
        s.next_id += 1;
        s.add(id, Slot { key, vector });
        order.push_back((scope, id));
        while order.len() > self.max_entries {
            let Some((scope, id)) = order.pop_front() else {
                break;
            };
            let Some(s) = scopes.get_mut(&scope) else {
                continue;
            };
            s.slots.remove(&id);
            if s.slots.is_empty() {
                scopes.remove(&scope);
            } else {
                s.compact();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_last_user_message_is_taken_and_the_rest_is_the_scope() {
        let mut chat = json!({"model": "m", "temperature": 0.2, "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": [{"type": "text", "text": "What is"}, {"type": "text", "text": "the capital?"}]},
        ]});
        assert_eq!(
            take_prompt(Endpoint::Chat, &mut chat).as_deref(),
            Some("What is\nthe capital?")
        );
        assert_eq!(chat["messages"][3]["content"], Value::Null);
        assert_eq!(chat["messages"][1]["content"], "first");
        assert_eq!(chat["temperature"], 0.2);

        let mut completion = json!({"model": "m", "prompt": "Once upon"});
        assert_eq!(
            take_prompt(Endpoint::Completions, &mut completion).as_deref(),
            Some("Once upon")
        );
        let mut responses = json!({"model": "m", "input": [
            {"role": "user", "content": [{"type": "input_text", "text": "hello"}]}]});
        assert_eq!(
            take_prompt(Endpoint::Responses, &mut responses).as_deref(),
            Some("hello")
        );
        let mut messages = json!({"model": "m", "max_tokens": 5,
            "messages": [{"role": "user", "content": "hi there"}]});
        assert_eq!(
            take_prompt(Endpoint::Messages, &mut messages).as_deref(),
            Some("hi there")
        );

        // Not compared by meaning: an image, a list of prompts, no user
        // message, an empty one, embeddings.
        let image = json!({"messages": [{"role": "user", "content": [
            {"type": "text", "text": "what is this"},
            {"type": "image_url", "image_url": {"url": "data:,"}}]}]});
        for (endpoint, mut body) in [
            (Endpoint::Chat, image),
            (Endpoint::Completions, json!({"prompt": ["a", "b"]})),
            (
                Endpoint::Chat,
                json!({"messages": [{"role": "system", "content": "x"}]}),
            ),
            (
                Endpoint::Chat,
                json!({"messages": [{"role": "user", "content": "  "}]}),
            ),
            (Endpoint::Embeddings, json!({"input": "x"})),
        ] {
            assert_eq!(take_prompt(endpoint, &mut body), None, "{body}");
        }
    }

    fn unit(angle: f32) -> Vec<f32> {
        vec![angle.cos(), angle.sin(), 0.0]
    }

    #[test]
    fn neighbours_above_the_threshold_in_the_same_scope_are_found() {
        let index = Index::new(100);
        let (a, b) = ([1u8; 32], [2u8; 32]);
        index.insert(a, [10; 32], unit(0.0));
        index.insert(a, [11; 32], unit(1.0));
        index.insert(b, [12; 32], unit(0.05));

        // cos(0.1) = 0.995: close to the first; the other scope's nearer
        // vector is not seen.
        let found = index.search(&a, &unit(0.1), 0.99);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].key, [10; 32]);
        assert!((found[0].similarity - 0.1f32.cos()).abs() < 1e-4);
        // Below the threshold: nothing.
        assert!(index.search(&a, &unit(0.5), 0.95).is_empty());
        // Lower the bar: both, the closest first.
        let both = index.search(&a, &unit(0.4), 0.5);
        assert_eq!(
            both.iter().map(|f| f.key).collect::<Vec<_>>(),
            [[10; 32], [11; 32]]
        );
        // Another length (the model changed) or no direction: no answer.
        assert!(index.search(&a, &[1.0, 0.0], 0.5).is_empty());
        assert!(index.search(&a, &[0.0, 0.0, 0.0], 0.5).is_empty());
        assert!(index.search(&[9; 32], &unit(0.0), 0.5).is_empty());
        // The same prompt for the same answer is kept once.
        index.insert(a, [10; 32], unit(0.0));
        assert_eq!(index.len(), 3);
    }

    #[test]
    fn the_oldest_vectors_go_first_and_a_scope_survives_its_holes() {
        let index = Index::new(50);
        let scope = [1u8; 32];
        // 200 vectors through an index of 50: 150 go, the graph is rebuilt
        // along the way, and the newest 50 are still found.
        for n in 0..200u32 {
            let mut key = [0u8; 32];
            key[..4].copy_from_slice(&n.to_le_bytes());
            index.insert(scope, key, unit(n as f32 * 0.007));
        }
        assert_eq!(index.len(), 50);
        let newest = index.search(&scope, &unit(199.0 * 0.007), 0.99999);
        assert_eq!(newest.first().map(|f| f.key[0]), Some(199));
        // The oldest is gone: the nearest left is number 150.
        let oldest = index.search(&scope, &unit(0.0), 0.0);
        assert_eq!(oldest.first().map(|f| f.key[0]), Some(150));
        // A scope whose vectors all went is dropped.
        let other = [2u8; 32];
        let small = Index::new(1);
        small.insert(other, [1; 32], unit(0.0));
        small.insert(scope, [2; 32], unit(0.0));
        assert!(small.search(&other, &unit(0.0), 0.0).is_empty());
        assert_eq!(small.read().scopes.len(), 1);
    }
}
