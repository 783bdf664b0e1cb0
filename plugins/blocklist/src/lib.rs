//! `blocklist`: a guardrail that fails a request (or response) whose text contains
//! any of the configured words or phrases, matched as whole words, case-insensitive
//! by default. With `"redact": true` it rewrites the matches to `mask` instead.
//!
//! ```json
//! {"id": "blocklist", "parameters": {"words": ["secret project"], "redact": false}}
//! ```

use serde::Deserialize;
use sluice_plugin_sdk::guardrail::*;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    words: Vec<String>,
    #[serde(default)]
    case_sensitive: bool,
    #[serde(default)]
    redact: bool,
    #[serde(default = "default_mask")]
    mask: String,
}

fn default_mask() -> String {
    "[REDACTED]".into()
}

struct Blocklist;

impl Guardrail for Blocklist {
    type Config = Config;
    const DESCRIPTION: &'static str = "Fails or redacts text containing listed words or phrases";
    const CONFIG_SCHEMA: &'static str = r#"{"type":"object","required":["words"],"additionalProperties":false,"properties":{"words":{"type":"array","items":{"type":"string","minLength":1},"minItems":1},"case_sensitive":{"type":"boolean"},"redact":{"type":"boolean"},"mask":{"type":"string"}}}"#;

    fn validate(config: &Config) -> Result<(), Error> {
        if config.words.is_empty() {
            return Err(Error::InvalidConfig(
                "`words` must list at least one word".into(),
            ));
        }
        if config.words.iter().any(|w| w.trim().is_empty()) {
            return Err(Error::InvalidConfig(
                "`words` must not hold empty strings".into(),
            ));
        }
        Ok(())
    }

    fn check(config: &Config, input: &CheckInput) -> Result<Verdict, Error> {
        let words: Vec<String> = config
            .words
            .iter()
            .map(|w| fold(w, config.case_sensitive))
            .collect();
        let mut found: Vec<&str> = Vec::new();
        for text in input.texts() {
            let hay = fold(text, config.case_sensitive);
            for (word, original) in words.iter().zip(&config.words) {
                if !matches(&hay, word).is_empty() && !found.contains(&original.as_str()) {
                    found.push(original);
                }
            }
        }
        if found.is_empty() {
            return Ok(Verdict::pass());
        }
        if config.redact {
            let segments = input.map_texts(|text| redact(text, &words, config));
            return Ok(Verdict::rewrite(segments));
        }
        Ok(Verdict::fail(format!(
            "the text contains a blocked term: {}",
            found.join(", ")
        )))
    }
}

fn fold(s: &str, case_sensitive: bool) -> String {
    if case_sensitive {
        s.to_owned()
    } else if s.is_ascii() {
        // The common case, without Unicode case tables.
        s.to_ascii_lowercase()
    } else {
        s.to_lowercase()
    }
}

/// Byte ranges of whole-word matches of `word` in `hay`.
fn matches(hay: &str, word: &str) -> Vec<(usize, usize)> {
    let boundary = |c: Option<char>| !c.is_some_and(char::is_alphanumeric);
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(at) = hay[from..].find(word) {
        let start = from + at;
        let end = start + word.len();
        if boundary(hay[..start].chars().next_back()) && boundary(hay[end..].chars().next()) {
            out.push((start, end));
        }
        from = start + word.chars().next().map_or(1, char::len_utf8);
    }
    out
}

fn redact(text: &str, words: &[String], config: &Config) -> String {
    // Lowercasing can change byte lengths for some scripts; redact only when the
    // folded text lines up with the original, otherwise mask the whole segment.
    let hay = fold(text, config.case_sensitive);
    if hay.len() != text.len() {
        return config.mask.clone();
    }
    let mut ranges: Vec<(usize, usize)> = words.iter().flat_map(|w| matches(&hay, w)).collect();
    ranges.sort_unstable();
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for (start, end) in ranges {
        if start < at {
            continue;
        }
        out.push_str(&text[at..start]);
        out.push_str(&config.mask);
        at = end;
    }
    out.push_str(&text[at..]);
    out
}

sluice_plugin_sdk::export_guardrail!(Blocklist);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_words_only() {
        assert_eq!(matches("a secret, secrets", "secret"), vec![(2, 8)]);
        assert!(matches("xsecret", "secret").is_empty());
    }
}
