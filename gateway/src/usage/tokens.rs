//! Token counts read from answers as the client gets them: OpenAI's chat,
//! completions and embeddings (`usage.prompt_tokens`), its Responses API
//! (`usage.input_tokens`, `response.usage` in a stream), and Anthropic's
//! Messages API (`usage.input_tokens` plus cache reads; `message.usage` and
//! `message_delta` in a stream).

use serde::Deserialize;

use crate::providers::SseData;
use crate::providers::sse;

/// What one answer used. `input` counts every prompt token, cached ones
/// included; `cached` is the part read from the provider's prompt cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tokens {
    pub input: u64,
    pub output: u64,
    pub cached: u64,
}

impl Tokens {
    pub fn total(&self) -> u64 {
        self.input + self.output
    }

    /// Streams report counts more than once (Anthropic: input at the start,
    /// output at the end); every count is cumulative, so the largest wins.
    fn merge(&mut self, other: Self) {
        self.input = self.input.max(other.input);
        self.output = self.output.max(other.output);
        self.cached = self.cached.max(other.cached);
    }
}

#[derive(Debug, Default, Deserialize)]
struct Details {
    cached_tokens: Option<u64>,
}

/// A `usage` object in any of the shapes above.
#[derive(Debug, Default, Deserialize)]
struct Usage {
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    prompt_tokens_details: Option<Details>,
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    input_tokens_details: Option<Details>,
    cache_read_input_tokens: Option<u64>,
    cache_creation_input_tokens: Option<u64>,
}

impl Usage {
    fn tokens(&self) -> Tokens {
        if self.prompt_tokens.is_some() || self.completion_tokens.is_some() {
            return Tokens {
                input: self.prompt_tokens.unwrap_or(0),
                output: self.completion_tokens.unwrap_or(0),
                cached: cached(&self.prompt_tokens_details),
            };
        }
        let input = self.input_tokens.unwrap_or(0);
        let output = self.output_tokens.unwrap_or(0);
        if self.cache_read_input_tokens.is_some() || self.cache_creation_input_tokens.is_some() {
            // Anthropic counts cache reads and writes apart from input_tokens.
            let read = self.cache_read_input_tokens.unwrap_or(0);
            let written = self.cache_creation_input_tokens.unwrap_or(0);
            return Tokens {
                input: input + read + written,
                output,
                cached: read,
            };
        }
        Tokens {
            input,
            output,
            cached: cached(&self.input_tokens_details),
        }
    }
}

fn cached(details: &Option<Details>) -> u64 {
    details.as_ref().and_then(|d| d.cached_tokens).unwrap_or(0)
}

#[derive(Debug, Default, Deserialize)]
struct Inner {
    usage: Option<Usage>,
}

/// The places an answer or an event keeps its usage: at the top (answers,
/// OpenAI chunks, Anthropic's `message_delta`), in `message` (Anthropic's
/// `message_start`) or in `response` (the Responses API's last event).
#[derive(Debug, Default, Deserialize)]
struct Answer {
    usage: Option<Usage>,
    message: Option<Inner>,
    response: Option<Inner>,
}

/// The usage a JSON answer (or one event's data) reports, if any.
pub fn from_json(bytes: &[u8]) -> Option<Tokens> {
    let at = memchr::memmem::find(bytes, b"\"usage\"")?;
    if let Some(usage) = outermost_usage(bytes, at) {
        return usage.map(|u| u.tokens());
    }
    let answer: Answer = serde_json::from_slice(bytes).ok()?;
    [
        answer.usage,
        answer.message.and_then(|m| m.usage),
        answer.response.and_then(|r| r.usage),
    ]
    .into_iter()
    .flatten()
    .map(|u| u.tokens())
    .reduce(|mut a, b| {
        a.merge(b);
        a
    })
}

/// The answer's `usage` read where it stands, the rest of the answer only
/// skimmed: when `"usage"` (found at `at`) occurs once, as a member name of
/// the outermost object, which is how every answer that is not a stream
/// event reports it. `None` when that is not so (the caller parses the
/// whole answer).
///
/// A string's quotes are escaped inside JSON text, so `"usage"` preceded
/// by `{` or `,` is a member name; it belongs to the outermost object when
/// the text after its value closes exactly one object.
fn outermost_usage(bytes: &[u8], at: usize) -> Option<Option<Usage>> {
    const NAME: &[u8] = b"\"usage\"";
    let after_name = &bytes[at + NAME.len()..];
    if memchr::memmem::find(after_name, NAME).is_some()
        || !matches!(bytes[..at].trim_ascii_end().last(), Some(b'{' | b','))
    {
        return None;
    }
    let value = after_name.trim_ascii_start().strip_prefix(b":")?;
    let mut values = serde_json::Deserializer::from_slice(value).into_iter::<Option<Usage>>();
    let usage = values.next()?.ok()?;
    closes_one_object(&value[values.byte_offset()..]).then_some(usage)
}

/// Whether `tail`, JSON text that follows a member's value, closes the
/// member's object and nothing more: its brackets outside strings balance
/// but for one last `}`.
fn closes_one_object(tail: &[u8]) -> bool {
    let mut depth = 0usize;
    let mut i = 0;
    while let Some(&b) = tail.get(i) {
        match b {
            b'"' => {
                let Some(end) = crate::json_text::string_end(tail, i) else {
                    return false;
                };
                i = end;
                continue;
            }
            b'{' | b'[' => depth += 1,
            b'}' if depth == 0 => return tail[i + 1..].trim_ascii().is_empty(),
            b'}' | b']' => match depth.checked_sub(1) {
                Some(d) => depth = d,
                None => return false,
            },
            _ => {}
        }
        i += 1;
    }
    false
}

/// Whether an event's data is a usage-only chat chunk: the one OpenAI sends
/// last when asked for `stream_options.include_usage` (`choices` empty).
fn is_usage_chunk(data: &[u8]) -> bool {
    #[derive(Deserialize)]
    struct Chunk {
        choices: Option<Vec<serde::de::IgnoredAny>>,
        usage: Option<serde::de::IgnoredAny>,
    }
    serde_json::from_slice::<Chunk>(data)
        .is_ok_and(|c| c.usage.is_some() && c.choices.is_some_and(|c| c.is_empty()))
}

/// Reads the usage of an SSE stream as it passes, split anywhere. With
/// `hide_usage_chunk`, the usage-only chunk is taken out of the stream (the
/// gateway asked for it; the client did not) and the stream is passed on in
/// whole events.
#[derive(Debug)]
pub struct StreamMeter {
    hide_usage_chunk: bool,
    /// Passing through: the data lines, as they complete.
    lines: SseData,
    /// Hiding: the bytes of an unfinished event.
    pending: Vec<u8>,
    tokens: Option<Tokens>,
}

/// A line this long is not an event the usage is read from.
const MAX_LINE: usize = 1 << 20;

impl StreamMeter {
    pub fn new(hide_usage_chunk: bool) -> Self {
        Self {
            hide_usage_chunk,
            lines: SseData::with_max_line(MAX_LINE),
            pending: Vec::new(),
            tokens: None,
        }
    }

    pub fn tokens(&self) -> Option<Tokens> {
        self.tokens
    }

    /// Reads `bytes`; returns what is passed on (`None`: `bytes` as they
    /// are).
    pub fn push(&mut self, bytes: &[u8]) -> Option<Vec<u8>> {
        if !self.hide_usage_chunk {
            let tokens = &mut self.tokens;
            let _ = self.lines.push::<()>(bytes, |data| {
                read(tokens, data.trim_ascii());
                Ok(())
            });
            return None;
        }
        let mut pending = std::mem::take(&mut self.pending);
        pending.extend_from_slice(bytes);
        let mut out = Vec::with_capacity(pending.len());
        let mut start = 0;
        let mut event_start = 0;
        let mut hidden = false;
        while let Some(n) = memchr::memchr(b'\n', &pending[start..]) {
            let line = &pending[start..start + n];
            if let Some(data) = sse::data_of(line).map(<[u8]>::trim_ascii)
                && memchr::memmem::find(data, b"\"usage\"").is_some()
            {
                read(&mut self.tokens, data);
                hidden |= is_usage_chunk(data);
            }
            start += n + 1;
            if line.strip_suffix(b"\r").unwrap_or(line).is_empty() {
                if !hidden {
                    out.extend_from_slice(&pending[event_start..start]);
                }
                event_start = start;
                hidden = false;
            }
        }
        // Lines of the unfinished event are read again once it is whole.
        pending.drain(..event_start);
        self.pending = pending;
        Some(out)
    }

    /// The stream ended: whatever is left, as it is.
    pub fn finish(&mut self) -> Vec<u8> {
        if !self.hide_usage_chunk {
            let tokens = &mut self.tokens;
            let _ = self.lines.finish::<()>(|data| {
                read(tokens, data.trim_ascii());
                Ok(())
            });
            return Vec::new();
        }
        std::mem::take(&mut self.pending)
    }
}

/// Adds the usage an event's data reports, if any, to `tokens`.
fn read(tokens: &mut Option<Tokens>, data: &[u8]) {
    if let Some(t) = from_json(data) {
        match tokens {
            Some(tokens) => tokens.merge(t),
            None => *tokens = Some(t),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(input: u64, output: u64, cached: u64) -> Option<Tokens> {
        Some(Tokens {
            input,
            output,
            cached,
        })
    }

    #[test]
    fn answers_in_every_client_format() {
        let chat = br#"{"id":"c","choices":[{"message":{"content":"say \"usage\": 99"}}],
            "usage":{"prompt_tokens":10,"completion_tokens":4,"total_tokens":14,
                     "prompt_tokens_details":{"cached_tokens":6}}}"#;
        assert_eq!(from_json(chat), t(10, 4, 6));
        let embeddings = br#"{"data":[],"usage":{"prompt_tokens":2,"total_tokens":2}}"#;
        assert_eq!(from_json(embeddings), t(2, 0, 0));
        let responses = br#"{"output":[],"usage":{"input_tokens":9,"output_tokens":3,
            "input_tokens_details":{"cached_tokens":4}}}"#;
        assert_eq!(from_json(responses), t(9, 3, 4));
        // Anthropic's input_tokens leave out cache reads and writes.
        let message = br#"{"type":"message","usage":{"input_tokens":5,"output_tokens":7,
            "cache_read_input_tokens":20,"cache_creation_input_tokens":3}}"#;
        assert_eq!(from_json(message), t(28, 7, 20));
        assert_eq!(from_json(br#"{"choices":[]}"#), None);
        assert_eq!(from_json(br#"{"usage":null}"#), None);
        assert_eq!(from_json(b"not json \"usage\""), None);
    }

    #[test]
    fn usage_read_in_place_only_where_the_answer_keeps_it() {
        // Not the last member; strings with brackets and escapes after it.
        let chat = br#"{"id":"c","choices":[{"message":{"content":"{[\"usage\"]}"}}],
            "usage" : {"prompt_tokens":10,"completion_tokens":4,
                       "prompt_tokens_details":{"cached_tokens":6}},
            "system_fingerprint":"fp_}]\\","service_tier":"default"} "#;
        assert_eq!(
            outermost_usage(chat, find(chat)).map(|u| u.map(|u| u.tokens())),
            Some(t(10, 4, 6))
        );
        assert_eq!(from_json(chat), t(10, 4, 6));
        let null = br#"{"choices":[],"usage":null}"#;
        assert!(matches!(outermost_usage(null, find(null)), Some(None)));
        assert_eq!(from_json(null), None);
        // Nested deeper: the whole answer is parsed, and a `usage` that is
        // not where answers keep it is not read.
        for (nested, expected) in [
            (
                &br#"{"type":"message_start","message":{"usage":{"input_tokens":12}}}"#[..],
                t(12, 0, 0),
            ),
            (
                br#"{"response":{"id":"r","usage":{"input_tokens":3,"output_tokens":2}},"x":[1]}"#,
                t(3, 2, 0),
            ),
            (br#"{"choices":[{"usage":{"prompt_tokens":99}}]}"#, None),
            (br#"{"a":{"b":1},"x":{"usage":{"prompt_tokens":99}}}"#, None),
        ] {
            assert!(
                outermost_usage(nested, find(nested)).is_none(),
                "{}",
                String::from_utf8_lossy(nested)
            );
            assert_eq!(
                from_json(nested),
                expected,
                "{}",
                String::from_utf8_lossy(nested)
            );
        }
        // Twice (top and nested): merged by the whole parse, as before.
        let twice = br#"{"message":{"usage":{"input_tokens":7}},"usage":{"output_tokens":5}}"#;
        assert!(outermost_usage(twice, find(twice)).is_none());
        assert_eq!(from_json(twice), t(7, 5, 0));
        // Text that is not an answer's end: left to the parse, which refuses it.
        for bad in [
            &br#"{"usage":{"prompt_tokens":1}}}"#[..],
            br#"{"usage":{"prompt_tokens":1}"#,
            br#""x","usage":{"prompt_tokens":1}]"#,
        ] {
            assert!(
                outermost_usage(bad, find(bad)).is_none(),
                "{}",
                String::from_utf8_lossy(bad)
            );
            assert_eq!(from_json(bad), None);
        }
    }

    fn find(bytes: &[u8]) -> usize {
        memchr::memmem::find(bytes, b"\"usage\"").expect("usage")
    }

    #[test]
    fn streams_split_anywhere() {
        let anthropic = concat!(
            "event: message_start\r\n",
            "data: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":12,\"output_tokens\":1}}}\r\n\r\n",
            "event: content_block_delta\r\n",
            "data: {\"type\":\"content_block_delta\",\"delta\":{\"text\":\"hi\"}}\r\n\r\n",
            "event: message_delta\r\n",
            "data: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":9}}\r\n\r\n",
        )
        .as_bytes();
        for split in [1, 7, 50, anthropic.len()] {
            let mut s = StreamMeter::new(false);
            for piece in anthropic.chunks(split) {
                assert_eq!(s.push(piece), None);
            }
            s.finish();
            assert_eq!(s.tokens(), t(12, 9, 0), "split {split}");
        }
        let responses = b"event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"usage\":{\"input_tokens\":3,\"output_tokens\":2}}}";
        let mut s = StreamMeter::new(false);
        s.push(responses);
        // The last line had no newline: read at the end.
        assert_eq!(s.tokens(), None);
        s.finish();
        assert_eq!(s.tokens(), t(3, 2, 0));
    }

    #[test]
    fn the_usage_chunk_is_hidden_when_only_the_gateway_asked() {
        let text = concat!(
            "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}],\"usage\":null}\n\n",
            "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":4,\"completion_tokens\":2}}\n\n",
            "data: [DONE]\n\n",
        );
        let expected = concat!(
            "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}],\"usage\":null}\n\n",
            "data: [DONE]\n\n",
        );
        for split in [1, 3, 40, text.len()] {
            let mut s = StreamMeter::new(true);
            let mut out = Vec::new();
            for piece in text.as_bytes().chunks(split) {
                out.extend(s.push(piece).expect("hiding passes whole events"));
            }
            out.extend(s.finish());
            assert_eq!(String::from_utf8_lossy(&out), expected, "split {split}");
            assert_eq!(s.tokens(), t(4, 2, 0));
        }
        // Not hiding: the bytes are not touched.
        let mut s = StreamMeter::new(false);
        assert_eq!(s.push(text.as_bytes()), None);
        assert_eq!(s.tokens(), t(4, 2, 0));
    }
}
