//! The text of a request's messages (or a response's choices) as ordered
//! segments, each with where it came from, so a guardrail's rewrite can be put
//! back in place.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::GatewayError;

/// A request's model and text, read straight from its bytes: strings are
/// borrowed where they need no unescaping, and every other field is skipped
/// unparsed. Yields the same segments, in the same order, as
/// [`Segments::of_request`] on the parsed body.
#[derive(Debug, Default)]
pub struct RequestText {
    pub model: Option<String>,
    pub segments: Vec<(String, String)>,
}

#[derive(Deserialize)]
struct Shape<'a> {
    #[serde(borrow, default)]
    model: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    messages: Option<Vec<Message<'a>>>,
    #[serde(borrow, default)]
    prompt: Option<Texts<'a>>,
    #[serde(borrow, default)]
    input: Option<Texts<'a>>,
}

#[derive(Deserialize)]
struct Message<'a> {
    #[serde(borrow, default)]
    role: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    content: Option<Texts<'a>>,
}

/// A string, or a list of strings and content parts (anything else is skipped).
#[derive(Deserialize)]
#[serde(untagged)]
enum Texts<'a> {
    One(#[serde(borrow)] Cow<'a, str>),
    Many(#[serde(borrow)] Vec<Item<'a>>),
    Other(serde::de::IgnoredAny),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Item<'a> {
    Text(#[serde(borrow)] Cow<'a, str>),
    Part {
        #[serde(borrow, default)]
        text: Option<Cow<'a, str>>,
    },
    Other(serde::de::IgnoredAny),
}

impl RequestText {
    /// Reads a JSON request body.
    pub fn read(bytes: &[u8]) -> Result<Self, GatewayError> {
        let shape: Shape<'_> = serde_json::from_slice(bytes).map_err(|e| {
            GatewayError::MalformedBody(format!(
                "the body is not a JSON object of the expected shape: {e}"
            ))
        })?;
        let mut out = Self {
            model: shape.model.map(Cow::into_owned),
            segments: Vec::new(),
        };
        for m in shape.messages.into_iter().flatten() {
            let role = m.role.as_deref().unwrap_or("user");
            match m.content {
                Some(Texts::One(t)) => out.segments.push((role.to_owned(), t.into_owned())),
                Some(Texts::Many(parts)) => {
                    for part in parts {
                        if let Item::Part { text: Some(t) } = part {
                            out.segments.push((role.to_owned(), t.into_owned()));
                        }
                    }
                }
                _ => {}
            }
        }
        for texts in [shape.prompt, shape.input].into_iter().flatten() {
            match texts {
                Texts::One(t) => out.segments.push(("user".to_owned(), t.into_owned())),
                Texts::Many(items) => {
                    for item in items {
                        if let Item::Text(t) = item {
                            out.segments.push(("user".to_owned(), t.into_owned()));
                        }
                    }
                }
                Texts::Other(_) => {}
            }
        }
        Ok(out)
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

    /// The text of a response: each choice's message content or text.
    pub fn of_response(body: &Map<String, Value>) -> Self {
        let mut s = Self::default();
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
        s.apply(&mut res, &["OUT".into()]);
        assert_eq!(res["choices"][0]["message"]["content"], "OUT");
    }
}
