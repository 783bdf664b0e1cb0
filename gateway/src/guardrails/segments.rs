//! The text of a request's messages (or a response's choices) as ordered
//! segments, each with where it came from, so a guardrail's rewrite can be put
//! back in place. OpenAI's chat, completions and embeddings shapes, and
//! Anthropic's Messages API (its `system`, text blocks in `messages`, and an
//! answer's `content` blocks).

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::GatewayError;

/// A body's model and text, read straight from its bytes: strings are
/// borrowed where they need no unescaping, and every other field is skipped
/// unparsed. Yields the same segments, in the same order, as
/// [`Segments::of_request`] / [`Segments::of_response`] on the parsed body.
#[derive(Debug, Default)]
pub struct BodyText {
    pub model: Option<String>,
    pub segments: Vec<(String, String)>,
    /// A request's `stream`, read in the same pass (what
    /// [`crate::providers::body::peek`] reads, so a guarded request is read
    /// once, not twice).
    pub stream: Option<bool>,
    /// A request's `stream_options.include_usage`.
    pub include_usage: bool,
}

#[derive(Deserialize)]
struct Shape<'a> {
    #[serde(borrow, default)]
    model: Option<Cow<'a, str>>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<crate::providers::body::PeekStreamOptions>,
    /// Anthropic's system prompt.
    #[serde(default)]
    system: Option<Texts>,
    #[serde(default)]
    messages: Option<Vec<Message>>,
    #[serde(default)]
    prompt: Option<Texts>,
    #[serde(default)]
    input: Option<Texts>,
    /// An answer's choices.
    #[serde(default)]
    choices: Option<Vec<Choice>>,
    /// An Anthropic answer's content blocks.
    #[serde(default)]
    content: Option<Texts>,
}

#[derive(Deserialize)]
struct Choice {
    #[serde(default)]
    message: Option<Message>,
    #[serde(default)]
    text: Option<Texts>,
}

#[derive(Deserialize)]
struct Message {
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    content: Option<Texts>,
}

/// A string, or a list of strings and content parts; anything else is skipped.
/// Hand-written rather than `#[serde(untagged)]`, which buffers every value
/// before trying each variant.
enum Texts {
    One(String),
    Many(Vec<Item>),
    Other,
}

enum Item {
    Text(String),
    Part { text: Option<String> },
    Other,
}

struct TextsVisitor;

impl<'de> serde::de::Visitor<'de> for TextsVisitor {
    type Value = Texts;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("text or a list of content parts")
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Texts, E> {
        Ok(Texts::One(v.to_owned()))
    }
    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Texts, E> {
        Ok(Texts::One(v))
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Texts, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Item>()? {
            items.push(item);
        }
        Ok(Texts::Many(items))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Texts, A::Error> {
        while map
            .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
            .is_some()
        {}
        Ok(Texts::Other)
    }
    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Texts, E> {
        Ok(Texts::Other)
    }
    fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Texts, E> {
        Ok(Texts::Other)
    }
    fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Texts, E> {
        Ok(Texts::Other)
    }
    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Texts, E> {
        Ok(Texts::Other)
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<Texts, E> {
        Ok(Texts::Other)
    }
}

impl<'de> Deserialize<'de> for Texts {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(TextsVisitor)
    }
}

struct ItemVisitor;

impl<'de> serde::de::Visitor<'de> for ItemVisitor {
    type Value = Item;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a string or a content part")
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Item, E> {
        Ok(Item::Text(v.to_owned()))
    }
    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Item, E> {
        Ok(Item::Text(v))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Item, A::Error> {
        let mut text = None;
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            if key == "text" {
                text = map.next_value::<Option<Texts>>()?.and_then(|t| match t {
                    Texts::One(s) => Some(s),
                    _ => None,
                });
            } else {
                map.next_value::<serde::de::IgnoredAny>()?;
            }
        }
        Ok(Item::Part { text })
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Item, A::Error> {
        while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
        Ok(Item::Other)
    }
    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Item, E> {
        Ok(Item::Other)
    }
    fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Item, E> {
        Ok(Item::Other)
    }
    fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Item, E> {
        Ok(Item::Other)
    }
    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Item, E> {
        Ok(Item::Other)
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<Item, E> {
        Ok(Item::Other)
    }
}

impl<'de> Deserialize<'de> for Item {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ItemVisitor)
    }
}

fn shape(bytes: &[u8]) -> Result<Shape<'_>, serde_json::Error> {
    serde_json::from_slice(bytes)
}

impl BodyText {
    /// Reads a JSON request body.
    pub fn request(bytes: &[u8]) -> Result<Self, GatewayError> {
        let shape = shape(bytes).map_err(|e| {
            GatewayError::MalformedBody(format!(
                "the body is not a JSON object of the expected shape: {e}"
            ))
        })?;
        crate::providers::body::object_first(bytes)?;
        let mut out = Self {
            model: shape.model.map(Cow::into_owned),
            segments: Vec::new(),
            stream: shape.stream,
            include_usage: crate::providers::body::PeekStreamOptions::usage_wanted(
                shape.stream_options.as_ref(),
            ),
        };
        match shape.system {
            Some(Texts::One(t)) => out.segments.push(("system".to_owned(), t)),
            Some(Texts::Many(parts)) => {
                for part in parts {
                    if let Item::Part { text: Some(t) } = part {
                        out.segments.push(("system".to_owned(), t));
                    }
                }
            }
            _ => {}
        }
        for m in shape.messages.into_iter().flatten() {
            let role = m.role.as_deref().unwrap_or("user");
            match m.content {
                Some(Texts::One(t)) => out.segments.push((role.to_owned(), t)),
                Some(Texts::Many(parts)) => {
                    for part in parts {
                        if let Item::Part { text: Some(t) } = part {
                            out.segments.push((role.to_owned(), t));
                        }
                    }
                }
                _ => {}
            }
        }
        for texts in [shape.prompt, shape.input].into_iter().flatten() {
            match texts {
                Texts::One(t) => out.segments.push(("user".to_owned(), t)),
                Texts::Many(items) => {
                    for item in items {
                        if let Item::Text(t) = item {
                            out.segments.push(("user".to_owned(), t));
                        }
                    }
                }
                Texts::Other => {}
            }
        }
        Ok(out)
    }

    /// Reads a JSON answer: an Anthropic message's text blocks, then each
    /// choice's message content or text. `None` when it is not a JSON object.
    pub fn answer(bytes: &[u8]) -> Option<Self> {
        // serde reads a struct from an array too; an answer must be an object.
        if bytes.trim_ascii_start().first() != Some(&b'{') {
            return None;
        }
        let shape = shape(bytes).ok()?;
        let mut out = Self {
            model: shape.model.map(Cow::into_owned),
            ..Self::default()
        };
        let assistant = |t: String| ("assistant".to_owned(), t);
        if let Some(Texts::Many(blocks)) = shape.content {
            for block in blocks {
                if let Item::Part { text: Some(t) } = block {
                    out.segments.push(assistant(t));
                }
            }
        }
        for choice in shape.choices.into_iter().flatten() {
            let content = choice.message.and_then(|m| m.content);
            match (content, choice.text) {
                (Some(Texts::One(t)), _) | (_, Some(Texts::One(t))) => {
                    out.segments.push(assistant(t));
                }
                _ => {}
            }
        }
        Some(out)
    }
}

/// Where a segment's text lives in the body.
#[derive(Debug, Clone, PartialEq)]
enum Place {
    /// `body[key]` is the string (`prompt`, `input`).
    Field(&'static str),
    /// `body[key][i]` is the string.
    Item(&'static str, usize),
    /// `messages[i].content` is the string.
    Content(usize),
    /// `messages[i].content[j].text`.
    Part(usize, usize),
    /// `choices[i].message.content`.
    Choice(usize),
    /// `choices[i].text`.
    ChoiceText(usize),
    /// Anthropic's `system` is the string.
    System,
    /// Anthropic's `system[j].text`.
    SystemPart(usize),
    /// An Anthropic answer's `content[j].text`.
    Block(usize),
}

/// Segments of one body: (role, text) in order, and where each came from.
#[derive(Debug, Default)]
pub struct Segments {
    pub items: Vec<(String, String)>,
    places: Vec<Place>,
}

impl Segments {
    fn push(&mut self, role: &str, text: &str, place: Place) {
        self.items.push((role.to_owned(), text.to_owned()));
        self.places.push(place);
    }

    /// The text of a request: chat messages, a completion prompt, embeddings input.
    pub fn of_request(body: &Map<String, Value>) -> Self {
        let mut s = Self::default();
        match body.get("system") {
            Some(Value::String(t)) => s.push("system", t, Place::System),
            Some(Value::Array(parts)) => {
                for (j, part) in parts.iter().enumerate() {
                    if let Some(t) = part.get("text").and_then(Value::as_str) {
                        s.push("system", t, Place::SystemPart(j));
                    }
                }
            }
            _ => {}
        }
        if let Some(messages) = body.get("messages").and_then(Value::as_array) {
            for (i, m) in messages.iter().enumerate() {
                let role = m.get("role").and_then(Value::as_str).unwrap_or("user");
                match m.get("content") {
                    Some(Value::String(t)) => s.push(role, t, Place::Content(i)),
                    Some(Value::Array(parts)) => {
                        for (j, part) in parts.iter().enumerate() {
                            if let Some(t) = part.get("text").and_then(Value::as_str) {
                                s.push(role, t, Place::Part(i, j));
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
        for key in ["prompt", "input"] {
            match body.get(key) {
                Some(Value::String(t)) => s.push("user", t, Place::Field(key)),
                Some(Value::Array(items)) => {
                    for (i, item) in items.iter().enumerate() {
                        if let Some(t) = item.as_str() {
                            s.push("user", t, Place::Item(key, i));
                        }
                    }
                }
                _ => {}
            }
        }
        s
    }

    /// The text of a response: each choice's message content or text, or an
    /// Anthropic message's text blocks.
    pub fn of_response(body: &Map<String, Value>) -> Self {
        let mut s = Self::default();
        if let Some(Value::Array(blocks)) = body.get("content") {
            for (j, block) in blocks.iter().enumerate() {
                if let Some(t) = block.get("text").and_then(Value::as_str) {
                    s.push("assistant", t, Place::Block(j));
                }
            }
        }
        for (i, c) in body
            .get("choices")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            if let Some(t) = c.pointer("/message/content").and_then(Value::as_str) {
                s.push("assistant", t, Place::Choice(i));
            } else if let Some(t) = c.get("text").and_then(Value::as_str) {
                s.push("assistant", t, Place::ChoiceText(i));
            }
        }
        s
    }

    /// Writes new texts (one per segment, in order) back into `body`.
    pub fn apply(&self, body: &mut Map<String, Value>, texts: &[String]) {
        for (place, text) in self.places.iter().zip(texts) {
            let slot = match place {
                Place::Field(k) => body.get_mut(*k),
                Place::Item(k, i) => body.get_mut(*k).and_then(|v| v.get_mut(*i)),
                Place::Content(i) => body
                    .get_mut("messages")
                    .and_then(|m| m.get_mut(*i))
                    .and_then(|m| m.get_mut("content")),
                Place::Part(i, j) => body
                    .get_mut("messages")
                    .and_then(|m| m.get_mut(*i))
                    .and_then(|m| m.get_mut("content"))
                    .and_then(|c| c.get_mut(*j))
                    .and_then(|p| p.get_mut("text")),
                Place::Choice(i) => body
                    .get_mut("choices")
                    .and_then(|c| c.get_mut(*i))
                    .and_then(|c| c.get_mut("message"))
                    .and_then(|m| m.get_mut("content")),
                Place::ChoiceText(i) => body
                    .get_mut("choices")
                    .and_then(|c| c.get_mut(*i))
                    .and_then(|c| c.get_mut("text")),
                Place::System => body.get_mut("system"),
                Place::SystemPart(j) => body
                    .get_mut("system")
                    .and_then(|s| s.get_mut(*j))
                    .and_then(|p| p.get_mut("text")),
                Place::Block(j) => body
                    .get_mut("content")
                    .and_then(|c| c.get_mut(*j))
                    .and_then(|b| b.get_mut("text")),
            };
            if let Some(slot) = slot {
                *slot = Value::String(text.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn requests_and_responses_round_trip_through_rewrites() {
        let mut body = obj(json!({"messages": [
            {"role": "system", "content": "be nice"},
            {"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "image_url", "image_url": {"url": "x"}}, {"type": "text", "text": "there"}]}
        ]}));
        let s = Segments::of_request(&body);
        assert_eq!(
            s.items,
            [
                ("system".into(), "be nice".into()),
                ("user".into(), "hi".into()),
                ("user".into(), "there".into())
            ]
        );
        s.apply(&mut body, &["A".into(), "B".into(), "C".into()]);
        assert_eq!(body["messages"][0]["content"], "A");
        assert_eq!(body["messages"][1]["content"][2]["text"], "C");
        assert_eq!(body["messages"][1]["content"][1]["image_url"]["url"], "x");

        let mut emb = obj(json!({"input": ["a", "b"]}));
        let s = Segments::of_request(&emb);
        s.apply(&mut emb, &["x".into(), "y".into()]);
        assert_eq!(emb["input"], json!(["x", "y"]));

        let mut res =
            obj(json!({"choices": [{"message": {"role": "assistant", "content": "out"}}]}));
        let s = Segments::of_response(&res);
        assert_eq!(s.items, [("assistant".into(), "out".into())]);
        // The byte reader sees the same segments as the parsed answer.
        let answer = json!({"model": "m", "choices": [
            {"message": {"role": "assistant", "content": "o\n\"q\" \u{e9}"}},
            {"message": {"role": "assistant", "content": null, "tool_calls": []}},
            {"text": "completion"},
            {"message": {"content": [{"type": "text", "text": "x"}]}, "text": "fallback"}]});
        let read = BodyText::answer(answer.to_string().as_bytes()).expect("reads");
        assert_eq!(read.segments, Segments::of_response(&obj(answer)).items);
        assert_eq!(read.segments.len(), 3);
        assert_eq!(read.model.as_deref(), Some("m"));
        assert!(BodyText::answer(b"[1]").is_none());
        assert!(BodyText::answer(b" []").is_none());
        assert!(BodyText::answer(b" {}").is_some());
        s.apply(&mut res, &["OUT".into()]);
        assert_eq!(res["choices"][0]["message"]["content"], "OUT");
    }

    #[test]
    fn a_request_is_read_once_for_its_text_and_what_peek_reads() {
        let read = |body: Value| BodyText::request(body.to_string().as_bytes());
        let text = read(
            json!({"model": "m", "stream": true, "stream_options": {"include_usage": true},
            "messages": [{"role": "user", "content": "hi"}]}),
        )
        .expect("reads");
        assert_eq!(
            (text.model.as_deref(), text.stream, text.include_usage),
            (Some("m"), Some(true), true)
        );
        assert_eq!(text.segments, [("user".into(), "hi".into())]);
        let text = read(json!({"messages": [], "stream_options": {}})).expect("reads");
        assert_eq!(
            (text.model, text.stream, text.include_usage),
            (None, None, false)
        );
        // What `peek` refuses, this refuses too (the caller then asks `peek`
        // why).
        for bad in [
            json!({"stream": "yes"}),
            json!({"model": 4}),
            json!({"stream_options": {"include_usage": 1}}),
        ] {
            assert!(crate::providers::body::peek(bad.to_string().as_bytes()).is_err());
            assert!(read(bad.clone()).is_err(), "{bad}");
        }
        assert!(BodyText::request(br#"{"model":"a","model":"b"}"#).is_err());
        assert!(BodyText::request(b"[]").is_err());
    }

    #[test]
    fn anthropic_messages_and_answers_round_trip_through_rewrites() {
        let text = json!({"model": "claude", "system": [{"type": "text", "text": "be nice"}],
            "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AA"}}]},
                {"role": "assistant", "content": "hello"}]});
        let mut body = obj(text.clone());
        let s = Segments::of_request(&body);
        let expected: Vec<(String, String)> = vec![
            ("system".into(), "be nice".into()),
            ("user".into(), "hi".into()),
            ("assistant".into(), "hello".into()),
        ];
        assert_eq!(s.items, expected);
        // The byte reader sees the same segments.
        let read = BodyText::request(text.to_string().as_bytes()).expect("reads");
        assert_eq!(read.segments, expected);
        s.apply(&mut body, &["S".into(), "U".into(), "A".into()]);
        assert_eq!(body["system"][0]["text"], "S");
        assert_eq!(body["messages"][0]["content"][0]["text"], "U");
        assert_eq!(body["messages"][1]["content"], "A");
        let mut plain = obj(json!({"system": "be nice", "messages": []}));
        Segments::of_request(&plain).apply(&mut plain, &["S".into()]);
        assert_eq!(plain["system"], "S");

        let mut answer = obj(json!({"type": "message", "content": [
            {"type": "thinking", "thinking": "hm"}, {"type": "text", "text": "out"}]}));
        let s = Segments::of_response(&answer);
        assert_eq!(s.items, [("assistant".into(), "out".into())]);
        let read = BodyText::answer(Value::Object(answer.clone()).to_string().as_bytes());
        assert_eq!(read.expect("reads").segments, s.items);
        s.apply(&mut answer, &["OUT".into()]);
        assert_eq!(answer["content"][1]["text"], "OUT");
        assert_eq!(answer["content"][0]["thinking"], "hm");
    }
}
