//! JSON in one canonical form for cache keys: every object's members sorted
//! by name, no whitespace between tokens, everything else as written.
//!
//! [`text`] reads JSON text in one pass, copying strings and scalars as
//! they are (no tree, no string decoded): a governed gateway's profile had
//! the key's parse among its largest costs. A member name is compared as
//! written, escapes and all, so `"\u0061"` and `"a"` are different names
//! here: two bodies that differ only so get different keys (a miss, never
//! a wrong answer). [`value`] writes an already parsed [`Value`].

use serde_json::Value;

/// Nesting deeper than this is not read (`serde_json`'s own limit).
const MAX_DEPTH: usize = 128;

/// `json` in canonical form; `None` when it is not JSON text.
pub fn text(json: &[u8]) -> Option<Vec<u8>> {
    let mut reader = Reader {
        s: json,
        i: 0,
        out: Vec::with_capacity(json.len()),
        scratch: Vec::new(),
    };
    reader.value(0)?;
    reader.skip_ws();
    (reader.i == json.len()).then_some(reader.out)
}

struct Reader<'a> {
    s: &'a [u8],
    i: usize,
    out: Vec<u8>,
    /// Where an object's members are moved while they are put in order.
    scratch: Vec<u8>,
}

/// A member written to `out`: its name (inside the quotes, as written) and
/// where `"name":value` lies.
struct Member<'a> {
    name: &'a [u8],
    start: usize,
    end: usize,
}

impl<'a> Reader<'a> {
    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.s.get(self.i) {
            self.i += 1;
        }
    }

    /// The next byte after whitespace, not consumed.
    fn peek(&mut self) -> Option<u8> {
        self.skip_ws();
        self.s.get(self.i).copied()
    }

    fn value(&mut self, depth: usize) -> Option<()> {
        match self.peek()? {
            b'{' if depth < MAX_DEPTH => self.object(depth + 1),
            b'[' if depth < MAX_DEPTH => self.array(depth + 1),
            b'"' => {
                let s = self.string()?;
                self.out.extend_from_slice(s);
                Some(())
            }
            _ => self.scalar(),
        }
    }

    /// A string at `i`, quotes and escapes included.
    fn string(&mut self) -> Option<&'a [u8]> {
        let start = self.i;
        self.i = crate::json_text::string_end(self.s, start)?;
        Some(&self.s[start..self.i])
    }

    /// A number, `true`, `false` or `null`, as written.
    fn scalar(&mut self) -> Option<()> {
        let start = self.i;
        while self
            .s
            .get(self.i)
            .is_some_and(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'+' | b'.'))
        {
            self.i += 1;
        }
        let token = &self.s[start..self.i];
        let number = token
            .first()
            .is_some_and(|b| *b == b'-' || b.is_ascii_digit());
        if !(number || matches!(token, b"true" | b"false" | b"null")) {
            return None;
        }
        self.out.extend_from_slice(token);
        Some(())
    }

    /// After a value in an array or object: `,` (true) or `close` (false).
    fn next_or(&mut self, close: u8) -> Option<bool> {
        let b = self.peek()?;
        self.i += 1;
        match b {
            b',' => Some(true),
            b if b == close => Some(false),
            _ => None,
        }
    }

    fn array(&mut self, depth: usize) -> Option<()> {
        self.i += 1;
        self.out.push(b'[');
        if self.peek()? == b']' {
            self.i += 1;
        } else {
            loop {
                self.value(depth)?;
                if !self.next_or(b']')? {
                    break;
                }
                self.out.push(b',');
            }
        }
        self.out.push(b']');
        Some(())
    }

    fn object(&mut self, depth: usize) -> Option<()> {
        self.i += 1;
        self.out.push(b'{');
        let first = self.out.len();
        let mut members: Vec<Member<'a>> = Vec::new();
        if self.peek()? == b'}' {
            self.i += 1;
        } else {
            loop {
                if self.peek()? != b'"' {
                    return None;
                }
                let start = self.out.len();
                let name = self.string()?;
                self.out.extend_from_slice(name);
                if self.peek()? != b':' {
                    return None;
                }
                self.i += 1;
                self.out.push(b':');
                self.value(depth)?;
                members.push(Member {
                    name: &name[1..name.len() - 1],
                    start,
                    end: self.out.len(),
                });
                if !self.next_or(b'}')? {
                    break;
                }
                self.out.push(b',');
            }
        }
        // Members already in order (no name twice) stay where they are.
        if !members.is_sorted_by(|a, b| a.name < b.name) {
            self.reorder(first, &mut members);
        }
        self.out.push(b'}');
        Some(())
    }

    /// Rewrites the members written from `first` in name order; of a name
    /// given twice the last value stays (as a parse into a map keeps it).
    fn reorder(&mut self, first: usize, members: &mut [Member<'a>]) {
        self.scratch.clear();
        self.scratch.extend_from_slice(&self.out[first..]);
        self.out.truncate(first);
        // Stable: of equal names, the one written last ends its run.
        members.sort_by(|a, b| a.name.cmp(b.name));
        let mut written = 0;
        for (i, m) in members.iter().enumerate() {
            if members.get(i + 1).is_some_and(|next| next.name == m.name) {
                continue;
            }
            if written > 0 {
                self.out.push(b',');
            }
            self.out
                .extend_from_slice(&self.scratch[m.start - first..m.end - first]);
            written += 1;
        }
    }
}

/// `value` as JSON text with every object's members sorted by name.
pub fn value(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Object(map) => {
            let mut members: Vec<(&String, &Value)> = map.iter().collect();
            members.sort_by(|a, b| a.0.cmp(b.0));
            out.push(b'{');
            for (i, (k, v)) in members.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                // A string always serialises.
                let _ = serde_json::to_writer(&mut *out, k);
                out.push(b':');
                self::value(v, out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                self::value(v, out);
            }
            out.push(b']');
        }
        other => {
            let _ = serde_json::to_writer(&mut *out, other);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(json: &str) -> Option<String> {
        text(json.as_bytes()).map(|t| String::from_utf8(t).expect("utf-8"))
    }

    #[test]
    fn members_are_sorted_at_every_depth_and_whitespace_goes() {
        assert_eq!(
            canon(
                " {\"b\" : [ {\"z\":1, \"y\": {\"q\":true,\"p\":null}} , 2.5e-3 ],\n\"a\":\"x\"} "
            )
            .as_deref(),
            Some(r#"{"a":"x","b":[{"y":{"p":null,"q":true},"z":1},2.5e-3]}"#)
        );
        // Strings as written: escapes and whitespace inside them kept.
        assert_eq!(
            canon(r#"{"k":"a \"b\" \\ c }","\u0061":[]}"#).as_deref(),
            Some(r#"{"\u0061":[],"k":"a \"b\" \\ c }"}"#)
        );
        // A name given twice keeps its last value, wherever it sorts.
        assert_eq!(
            canon(r#"{"b":1,"a":2,"b":3}"#).as_deref(),
            Some(r#"{"a":2,"b":3}"#)
        );
        assert_eq!(canon(r#"{"a":1,"a":2}"#).as_deref(), Some(r#"{"a":2}"#));
        assert_eq!(canon("{}").as_deref(), Some("{}"));
        assert_eq!(canon("[ ]").as_deref(), Some("[]"));
        assert_eq!(canon(" 7 ").as_deref(), Some("7"));
    }

    #[test]
    fn the_same_form_as_a_parsed_value_for_plain_names() {
        let body = r#"{"model":"m","temperature":0.2,"messages":[{"role":"user",
            "content":[{"type":"text","text":"hi é"}]}],"stop":["a","b"],"n":1,"stream":false}"#;
        let mut parsed = Vec::new();
        value(&serde_json::from_str(body).expect("json"), &mut parsed);
        assert_eq!(text(body.as_bytes()), Some(parsed));
    }

    #[test]
    fn text_that_is_not_json_is_refused() {
        for bad in [
            "",
            "{",
            "}",
            "[1,]",
            "[1 2]",
            r#"{"a" 1}"#,
            r#"{"a":1,}"#,
            r#"{a:1}"#,
            r#"{"a":"unterminated}"#,
            r#""ends in an escape\"#,
            "tru",
            "{} {}",
            "'x'",
        ] {
            assert_eq!(canon(bad), None, "{bad}");
        }
        let deep = "[".repeat(200) + &"]".repeat(200);
        assert_eq!(canon(&deep), None);
    }
}
