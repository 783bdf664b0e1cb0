//! Reading text the way the checks need it: which text is judged, counting,
//! JSON in prose, URLs, fenced code, and whole-word lists.

use std::borrow::Cow;

use sluice_plugin_sdk::guardrail::{CheckInput, Stage};

/// The text a check judges: after the response, the answer (every choice);
/// before the request, the last message — the run of trailing segments with
/// the last segment's role. Borrowed when that is one segment (the usual
/// case: one user message, one choice), joined with newlines otherwise.
pub fn judged(input: &CheckInput) -> Cow<'_, str> {
    let segments = &input.segments;
    let from = if input.stage == Stage::AfterResponse {
        0
    } else {
        match segments.last() {
            Some(last) => segments
                .iter()
                .rposition(|s| s.role != last.role)
                .map_or(0, |i| i + 1),
            None => return Cow::Borrowed(""),
        }
    };
    match &segments[from..] {
        [one] => Cow::Borrowed(&one.text),
        run => Cow::Owned(
            run.iter()
                .map(|s| s.text.as_str())
                .collect::<Vec<_>>()
                .join("\n"),
        ),
    }
}

/// What a count check counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Sentences,
    Words,
    Characters,
}

impl Unit {
    pub fn count(self, text: &str) -> u64 {
        match self {
            Unit::Characters => text.chars().count() as u64,
            Unit::Words => text.split_whitespace().count() as u64,
            Unit::Sentences => {
                // A sentence ends at `.`, `!` or `?` (runs of them) followed by
                // whitespace or the end; text after the last one is a sentence too.
                let mut n = 0;
                let mut in_sentence = false;
                let mut chars = text.chars().peekable();
                while let Some(c) = chars.next() {
                    if matches!(c, '.' | '!' | '?') {
                        while chars.peek().is_some_and(|c| matches!(c, '.' | '!' | '?')) {
                            chars.next();
                        }
                        if in_sentence && chars.peek().is_none_or(|c| c.is_whitespace()) {
                            n += 1;
                            in_sentence = false;
                        }
                    } else if !c.is_whitespace() {
                        in_sentence = true;
                    }
                }
                n + u64::from(in_sentence)
            }
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Unit::Sentences => "sentences",
            Unit::Words => "words",
            Unit::Characters => "characters",
        }
    }
}

/// `[min, max]` for messages.
pub fn range(min: Option<u64>, max: Option<u64>) -> String {
    match (min, max) {
        (Some(a), Some(b)) => format!("[{a}, {b}]"),
        (Some(a), None) => format!("at least {a}"),
        (None, Some(b)) => format!("at most {b}"),
        (None, None) => "any".into(),
    }
}

/// The first JSON object in the text: the whole text, a fenced block, or the
/// first balanced `{...}` that parses.
pub fn json_object(text: &str) -> Option<serde_json::Map<String, serde_json::Value>> {
    let mut found = None;
    json_values(text, |v| match v {
        serde_json::Value::Object(o) => {
            found = Some(o);
            true
        }
        _ => false,
    });
    found
}

/// Hands `visit` the JSON in the text, in order, until it returns true: the
/// whole text when it parses, else each balanced `{...}` that parses (a
/// fenced block's object among them).
pub fn json_values(text: &str, mut visit: impl FnMut(serde_json::Value) -> bool) {
    let parse = |s: &str| serde_json::from_str::<serde_json::Value>(s.trim()).ok();
    if let Some(v) = parse(text)
        && (v.is_object() || v.is_array())
    {
        visit(v);
        return;
    }
    let bytes = text.as_bytes();
    let mut start = 0;
    while let Some(at) = text[start..].find('{') {
        let open = start + at;
        let (mut depth, mut in_string, mut escaped) = (0i32, false, false);
        let mut next = open + 1;
        for (i, &b) in bytes.iter().enumerate().skip(open) {
            match (in_string, escaped, b) {
                (true, true, _) => escaped = false,
                (true, false, b'\\') => escaped = true,
                (true, false, b'"') => in_string = false,
                (false, _, b'"') => in_string = true,
                (false, _, b'{') => depth += 1,
                (false, _, b'}') => {
                    depth -= 1;
                    if depth == 0 {
                        if let Some(v) = parse(&text[open..=i]) {
                            if visit(v) {
                                return;
                            }
                            next = i + 1;
                        }
                        break;
                    }
                }
                _ => {}
            }
        }
        start = next;
    }
}

/// The URLs in the text, and those of them whose syntax is not valid.
pub fn urls(text: &str) -> (Vec<String>, Vec<String>) {
    let mut all = Vec::new();
    let mut bad = Vec::new();
    for word in text.split(|c: char| {
        c.is_whitespace() || matches!(c, '<' | '>' | '"' | '\'' | '(' | ')' | '[' | ']')
    }) {
        let Some(at) = word.find("://").filter(|&i| {
            let scheme = &word[..i];
            !scheme.is_empty()
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        }) else {
            continue;
        };
        let url = word.trim_end_matches(['.', ',', ';', ':', '!', '?']);
        let scheme = &url[..at];
        let rest = &url[at + 3..];
        let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
        let host = host.rsplit('@').next().unwrap_or_default();
        let host = match host.rsplit_once(':') {
            Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) && !port.is_empty() => h,
            _ => host,
        };
        all.push(url.to_owned());
        if !(matches!(scheme, "http" | "https") && valid_host(host)) {
            bad.push(url.to_owned());
        }
    }
    (all, bad)
}

fn valid_host(host: &str) -> bool {
    if host.starts_with('[') && host.ends_with(']') {
        return host[1..host.len() - 1]
            .parse::<std::net::Ipv6Addr>()
            .is_ok();
    }
    if host.parse::<std::net::Ipv4Addr>().is_ok() {
        return true;
    }
    let labels: Vec<&str> = host.split('.').collect();
    labels.len() >= 2
        && host.len() <= 253
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_alphanumeric() || c == '-')
        })
        && labels
            .last()
            .is_some_and(|tld| tld.len() >= 2 && tld.chars().all(char::is_alphabetic))
}

/// The language tags of fenced code blocks (```python).
pub fn code_blocks(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut open = false;
    for line in text.lines() {
        let line = line.trim_start();
        if let Some(rest) = line.strip_prefix("```") {
            if !open {
                out.push(
                    rest.split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_ascii_lowercase(),
                );
            }
            open = !open;
        }
    }
    out
}

/// The fence tags that mean `format` (Portkey's language names).
pub fn code_tags(format: &str) -> Option<Vec<&'static str>> {
    let tags: &[&str] = match format.to_ascii_lowercase().as_str() {
        "sql" => &[
            "sql",
            "mysql",
            "postgresql",
            "postgres",
            "sqlite",
            "plsql",
            "tsql",
        ],
        "python" => &["python", "py", "python3"],
        "typescript" => &["typescript", "ts", "tsx"],
        "javascript" => &["javascript", "js", "jsx", "node", "mjs"],
        "java" => &["java"],
        "c#" | "csharp" => &["csharp", "cs", "c#"],
        "c++" | "cpp" => &["cpp", "c++", "cxx", "hpp"],
        "c" => &["c", "h"],
        "ruby" => &["ruby", "rb"],
        "php" => &["php"],
        "swift" => &["swift"],
        "kotlin" => &["kotlin", "kt"],
        "go" => &["go", "golang"],
        "rust" => &["rust", "rs"],
        "scala" => &["scala"],
        "r" => &["r"],
        "perl" => &["perl", "pl"],
        "shell" | "bash" => &["shell", "sh", "bash", "zsh"],
        "html" => &["html", "htm"],
        "css" => &["css", "scss"],
        "xml" => &["xml"],
        "json" => &["json", "jsonc"],
        "yaml" => &["yaml", "yml"],
        "markdown" => &["markdown", "md"],
        "dockerfile" => &["dockerfile", "docker"],
        _ => return None,
    };
    Some(tags.to_vec())
}

/// A word list matched as whole words (or phrases), case-folded unless asked.
#[derive(Debug)]
pub struct Words {
    words: Vec<String>,
    folded: Vec<String>,
    case_sensitive: bool,
}

impl Words {
    pub fn new(words: &[String], case_sensitive: bool) -> Result<Self, String> {
        if words.iter().any(|w| w.trim().is_empty()) {
            return Err("word lists must not hold empty strings".into());
        }
        Ok(Self {
            words: words.to_vec(),
            folded: words.iter().map(|w| fold(w, case_sensitive)).collect(),
            case_sensitive,
        })
    }

    /// The listed words found in `text`, as listed.
    pub fn found(&self, text: &str) -> Vec<String> {
        let hay = fold(text, self.case_sensitive);
        self.folded
            .iter()
            .zip(&self.words)
            .filter(|(w, _)| whole_word(&hay, w))
            .map(|(_, original)| original.clone())
            .collect()
    }
}

fn fold(s: &str, case_sensitive: bool) -> String {
    if case_sensitive {
        s.to_owned()
    } else {
        s.to_lowercase()
    }
}

/// Whether `word` occurs in `hay` with no letter or digit on either side.
pub fn whole_word(hay: &str, word: &str) -> bool {
    let boundary = |c: Option<char>| !c.is_some_and(char::is_alphanumeric);
    let mut from = 0;
    while let Some(at) = hay[from..].find(word) {
        let start = from + at;
        let end = start + word.len();
        if boundary(hay[..start].chars().next_back()) && boundary(hay[end..].chars().next()) {
            return true;
        }
        from = start + word.chars().next().map_or(1, char::len_utf8);
    }
    false
}
