//! Output guardrails on a streamed answer: the text read from its events as
//! they pass (OpenAI chunks' `delta.content` per choice, or Anthropic's
//! `text_delta`s), and the after-response hooks run on it — once on the
//! whole text (buffer mode) or on a sliding window as it grows (window mode);
//! the server's relay decides what happens to the bytes
//! ([`crate::config::routing::StreamPolicy`]).

use std::sync::Arc;

use serde_json::Value;

use super::{Context, HookSpec, StageResult, input, run, spawn_detached};
use crate::providers::{Endpoint, SseData};

/// The text of a stream so far.
#[derive(Debug)]
pub struct StreamText {
    sse: SseData,
    anthropic: bool,
    /// Per choice.
    texts: Vec<String>,
    ended: bool,
}

impl StreamText {
    pub fn new(endpoint: Endpoint) -> Self {
        Self {
            sse: SseData::default(),
            anthropic: endpoint.anthropic_format(),
            texts: Vec::new(),
            ended: false,
        }
    }

    /// Reads the events `bytes` complete (split anywhere). Returns whether the
    /// stream's end marker (`[DONE]`, `message_stop`) is among them.
    pub fn push(&mut self, bytes: &[u8]) -> bool {
        let (anthropic, texts, ended) = (self.anthropic, &mut self.texts, &mut self.ended);
        let _ = self.sse.push::<()>(bytes, |data| {
            if data == b"[DONE]" {
                *ended = true;
                return Ok(());
            }
            let Ok(event) = serde_json::from_slice::<Value>(data) else {
                return Ok(());
            };
            if anthropic {
                match event["type"].as_str() {
                    Some("content_block_delta") => {
                        if let Some(t) = event["delta"]["text"].as_str() {
                            append(texts, 0, t);
                        }
                    }
                    Some("message_stop") => *ended = true,
                    _ => {}
                }
                return Ok(());
            }
            for choice in event["choices"].as_array().into_iter().flatten() {
                let index = choice["index"].as_u64().unwrap_or(0) as usize;
                if let Some(t) = choice["delta"]["content"].as_str() {
                    append(texts, index, t);
                }
            }
            Ok(())
        });
        self.ended
    }

    /// Characters read so far, over every choice.
    pub fn chars(&self) -> usize {
        self.texts.iter().map(|t| t.chars().count()).sum()
    }

    /// Each choice's text, or its last `window` characters.
    pub fn texts(&self, window: Option<usize>) -> Vec<String> {
        self.texts
            .iter()
            .map(|t| match window {
                Some(n) => {
                    let skip = t.chars().count().saturating_sub(n);
                    t.chars().skip(skip).collect()
                }
                None => t.clone(),
            })
            .collect()
    }
}

/// Choices beyond this index are not read (a stream names its own indices).
const MAX_CHOICES: usize = 128;

fn append(texts: &mut Vec<String>, index: usize, text: &str) {
    if index >= MAX_CHOICES {
        return;
    }
    if texts.len() <= index {
        texts.resize_with(index + 1, String::new);
    }
    texts[index].push_str(text);
}

/// What the hooks need from a request, owned: a stream's body outlives the
/// handler that borrowed them.
#[derive(Debug, Clone)]
pub struct Owned {
    endpoint: Endpoint,
    provider: String,
    metadata: serde_json::Map<String, Value>,
    plugins: Arc<crate::plugins::Registry>,
    stats: Arc<super::Stats>,
    grants: crate::plugins::Grants,
}

impl Owned {
    pub fn of(ctx: &Context<'_>) -> Self {
        Self {
            endpoint: ctx.endpoint,
            provider: ctx.provider.to_owned(),
            metadata: ctx.metadata.clone(),
            plugins: ctx.plugins.clone(),
            stats: ctx.stats.clone(),
            grants: ctx.grants.clone(),
        }
    }

    pub fn context(&self) -> Context<'_> {
        Context {
            endpoint: self.endpoint,
            provider: &self.provider,
            metadata: &self.metadata,
            plugins: &self.plugins,
            stats: &self.stats,
            grants: self.grants.clone(),
        }
    }
}

/// Runs the after-response hooks on a stream's text (each choice a segment).
/// Rewrites are not applied: the text has gone, or will go, as it came.
/// `last`: the whole text is in, so detached hooks start too.
pub async fn check(
    owned: &Owned,
    hooks: &Arc<[HookSpec]>,
    model: Option<String>,
    texts: Vec<String>,
    last: bool,
) -> StageResult {
    let ctx = owned.context();
    let segments = texts
        .into_iter()
        .map(|t| ("assistant".to_owned(), t))
        .collect();
    let input = input(&ctx, true, model, segments, None);
    if last {
        spawn_detached(&ctx, hooks, &input);
    }
    let (stage, _) = run(&ctx, hooks, &input).await;
    // The request's line has gone with the stream's start.
    if last || stage.failed {
        tracing::info!(hooks = %stage.summary(), last, "stream guardrails");
    }
    stage
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_read_from_either_format_split_anywhere() {
        let openai = "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n\
                      data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"}},{\"index\":1,\"delta\":{\"content\":\"B\"}}]}\n\n\
                      data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo ☃\"}}]}\n\n\
                      data: [DONE]\n\n";
        for split in [1, 5, openai.len()] {
            let mut t = StreamText::new(Endpoint::Chat);
            let mut ended = false;
            for piece in openai.as_bytes().chunks(split) {
                ended |= t.push(piece);
            }
            assert!(ended, "split {split}");
            assert_eq!(t.texts(None), ["Hello ☃", "B"]);
            assert_eq!(t.texts(Some(3)), ["o ☃", "B"]);
            assert_eq!(t.chars(), 8);
        }
        let anthropic = "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\n\
                         event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
        let mut t = StreamText::new(Endpoint::Messages);
        assert!(t.push(anthropic.as_bytes()));
        assert_eq!(t.texts(None), ["Hi"]);
    }
}
