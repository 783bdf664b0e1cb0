//! `promptInjection`: a heuristic detector. Each signal found adds its weight
//! to a score (`1 - Π(1 - w)`, so signals compound without passing 1):
//! instruction-override phrases, role-play and jailbreak markers, requests for
//! the system prompt, chat-template tokens, and base64 payloads (weighed more
//! when what they decode to holds an override). The check fails when the score
//! reaches `threshold`; the score and the signals are in the result.

use base64_lite::decode;
use sluice_plugin_sdk::guardrail::Verdict;

// The signals, each a name and a weight. One pass over the text lowercases
// it (ASCII), cuts it into words (ASCII letters, digits, `'`, `-`, `_`), and
// finds chat-template tokens and base64 runs; the phrases are then matched
// word by word.
// Written out rather than as regular expressions: in WebAssembly, without
// SIMD prefilters, one pass over the bytes and comparisons of short words
// cost a third of a regex set's scan.
const OVERRIDE: (&str, f64) = ("instruction_override", 0.6);
const JAILBREAK: (&str, f64) = ("jailbreak_marker", 0.5);
const ROLE_PLAY: (&str, f64) = ("role_play", 0.3);
const EXFILTRATION: (&str, f64) = ("prompt_exfiltration", 0.5);
const TEMPLATE: (&str, f64) = ("template_tokens", 0.4);

/// Words an override's target may be (after a determiner, within 8 words).
const OVERRIDE_DETERMINERS: &[&str] = &[
    "previous",
    "prior",
    "above",
    "earlier",
    "preceding",
    "all",
    "any",
    "your",
    "the",
    "these",
    "those",
];
const OVERRIDE_TARGETS: &[&str] = &[
    "instruction",
    "instructions",
    "prompt",
    "prompts",
    "rules",
    "directions",
    "guidelines",
    "context",
    "constraints",
];

const WORD: u8 = 1;
const B64: u8 = 2;
const MARK: u8 = 4;

/// Each byte's classes: a word's (ASCII letters, digits, `'`, `-`, `_`), a
/// base64 run's (letters, digits, `+`, `/`), a template token's first (`<`,
/// `[`, `#`).
const CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        if b.is_ascii_alphanumeric() {
            t[c] = WORD | B64;
        }
        c += 1;
    }
    t[b'\'' as usize] = WORD;
    t[b'-' as usize] = WORD;
    t[b'_' as usize] = WORD;
    t[b'+' as usize] = B64;
    t[b'/' as usize] = B64;
    t[b'<' as usize] = MARK;
    t[b'[' as usize] = MARK;
    t[b'#' as usize] = MARK;
    t
};

/// What one pass over the text finds.
struct Scan<'t> {
    text: &'t [u8],
    /// Where each word starts and ends, in pairs.
    bounds: Vec<u32>,
    /// A chat-template token (`<|im_start|>`, `[INST]`, `<<SYS>>`, `### System:`).
    template: bool,
    /// Runs of 24 or more base64 characters, with their `=` padding.
    base64: Vec<std::ops::Range<usize>>,
}

impl Scan<'_> {
    fn words(&self) -> Vec<&[u8]> {
        self.bounds
            .chunks_exact(2)
            .map(|b| &self.text[b[0] as usize..b[1] as usize])
            .collect()
    }
}

fn scan(text: &[u8]) -> Scan<'_> {
    // One loop, and branch-free where prose branches unpredictably: every
    // byte writes its position at `n`, and `n` moves only where a word starts
    // or ends, so a word boundary costs no mispredicted branch. Base64 runs
    // and template marks are rare: their branches are predicted. Nothing is
    // lowercased here: only words that may start a phrase are, later.
    let mut bounds = vec![0u32; text.len() + 2];
    let (mut n, mut in_word, mut run) = (0usize, false, 0usize);
    let mut template = false;
    let mut base64 = Vec::new();
    for (i, &c) in text.iter().enumerate() {
        let class = CLASS[c as usize];
        let word = class & WORD != 0;
        bounds[n] = i as u32;
        n += usize::from(word != in_word);
        in_word = word;
        // `run + 1`, or 0 off a run, without a multiply on the chain.
        run = (run + 1) & usize::from(class & B64 != 0).wrapping_neg();
        if run == 24 {
            base64.push(i + 1 - 24);
        }
        if class & MARK != 0 && !template {
            template = template_at(&text[i..]);
        }
    }
    if in_word {
        bounds[n] = text.len() as u32;
        n += 1;
    }
    bounds.truncate(n);
    let base64 = base64
        .into_iter()
        .map(|start| {
            let len = text[start..]
                .iter()
                .take_while(|&&c| CLASS[c as usize] & B64 != 0)
                .count();
            start..padded(text, start + len)
        })
        .collect();
    Scan {
        text,
        bounds,
        template,
        base64,
    }
}

/// The end of a base64 run at `end` with up to two `=`.
fn padded(text: &[u8], end: usize) -> usize {
    let pad = text[end..]
        .iter()
        .take(2)
        .take_while(|&&b| b == b'=')
        .count();
    end + pad
}

fn template_at(t: &[u8]) -> bool {
    const TOKENS: [&[u8]; 8] = [
        b"<|im_start|>",
        b"<|im_end|>",
        b"<|system|>",
        b"<|endoftext|>",
        b"[inst]",
        b"[/inst]",
        b"<<sys>>",
        b"<</sys>>",
    ];
    if TOKENS.iter().any(|tok| starts_with(t, tok)) {
        return true;
    }
    // `###`, spaces, `system` or `instruction`, spaces, `:`.
    let Some(rest) = t.strip_prefix(b"###") else {
        return false;
    };
    let rest = rest.trim_ascii_start();
    let rest = if starts_with(rest, b"system") {
        &rest[6..]
    } else if starts_with(rest, b"instruction") {
        &rest[11..]
    } else {
        return false;
    };
    rest.trim_ascii_start().starts_with(b":")
}

/// Whether `t` starts with the lowercase `prefix`, in any case.
fn starts_with(t: &[u8], prefix: &[u8]) -> bool {
    t.len() >= prefix.len() && t[..prefix.len()].eq_ignore_ascii_case(prefix)
}

/// Whether `words` starts with `phrase`, each entry a set of alternatives
/// (`|`-separated).
fn phrase(words: &[&[u8]], phrase: &[&str]) -> bool {
    words.len() >= phrase.len()
        && phrase.iter().zip(words).all(|(alts, w)| {
            alts.split('|')
                .any(|a| a.as_bytes().eq_ignore_ascii_case(w))
        })
}

fn is(w: &[u8], set: &[&str]) -> bool {
    set.iter().any(|s| s.as_bytes().eq_ignore_ascii_case(w))
}

/// The words a phrase starts with.
const FIRST_WORDS: [&str; 29] = [
    "ignore",
    "disregard",
    "forget",
    "override",
    "bypass",
    "skip",
    "dan",
    "jailbreak",
    "jailbreaken",
    "jailbreaked",
    "do",
    "developer",
    "unfiltered",
    "no",
    "without",
    "you",
    "from",
    "pretend",
    "act",
    "roleplay",
    "role-play",
    "reveal",
    "show",
    "print",
    "repeat",
    "output",
    "tell",
    "give",
    "what",
];

/// By first letter, the lengths of the words a phrase starts with: most
/// words are ruled out by one lookup, without being lowercased.
const FIRST: [u16; 26] = {
    let mut t = [0u16; 26];
    let mut i = 0;
    while i < FIRST_WORDS.len() {
        let w = FIRST_WORDS[i].as_bytes();
        t[(w[0] - b'a') as usize] |= 1 << w.len();
        i += 1;
    }
    t
};

/// `w` lowercased into `buf`, when a phrase may start with it.
fn first_word<'b>(w: &[u8], buf: &'b mut [u8; 12]) -> Option<&'b [u8]> {
    let letter = w.first()?.to_ascii_lowercase().checked_sub(b'a')?;
    let lengths = *FIRST.get(letter as usize)?;
    if w.len() >= buf.len() || lengths & (1 << w.len()) == 0 {
        return None;
    }
    let out = &mut buf[..w.len()];
    out.copy_from_slice(w);
    out.make_ascii_lowercase();
    Some(out)
}

/// The phrases starting at `words[0]` and the signal each gives.
fn at(words: &[&[u8]]) -> Option<(&'static str, f64)> {
    let mut buf = [0u8; 12];
    let w = first_word(words[0], &mut buf)?;
    let within = |from: usize, n: usize| &words[from.min(words.len())..(from + n).min(words.len())];
    match w {
        b"ignore" | b"disregard" | b"forget" | b"override" | b"bypass" | b"skip" => {
            let next = within(1, 8);
            let det = next.iter().position(|w| is(w, OVERRIDE_DETERMINERS))?;
            within(2 + det, 8)
                .iter()
                .any(|w| is(w, OVERRIDE_TARGETS))
                .then_some(OVERRIDE)
        }
        b"dan" | b"jailbreak" | b"jailbreaken" | b"jailbreaked" => Some(JAILBREAK),
        b"do" | b"developer" | b"unfiltered" | b"no" | b"without" => {
            (phrase(words, &["do", "anything", "now"])
                || phrase(words, &["developer|unfiltered", "mode"])
                || phrase(words, &["no", "restrictions|limits|rules"])
                || phrase(words, &["without", "restrictions|filters|limits"])
                || phrase(words, &["without", "any", "restrictions|filters|limits"]))
            .then_some(JAILBREAK)
        }
        b"you" | b"from" | b"pretend" | b"act" | b"roleplay" | b"role-play" => {
            (phrase(words, &["you", "are", "now"])
                || phrase(words, &["from", "now", "on", "you", "are|will"])
                || phrase(words, &["from", "now", "on", "you're"])
                || phrase(words, &["pretend", "to|you|that", "be|are|you"])
                || phrase(words, &["act", "as", "unrestricted|evil|different"])
                || phrase(words, &["act", "as", "a|an", "unrestricted|evil|different"])
                || phrase(words, &["roleplay|role-play", "as"]))
            .then_some(ROLE_PLAY)
        }
        b"reveal" | b"show" | b"print" | b"repeat" | b"output" | b"tell" | b"give" | b"what" => {
            let skip = match w {
                b"tell" | b"give" => usize::from(phrase(words, &["tell|give", "me"])) * 2,
                b"what" => usize::from(phrase(words, &["what", "is|are"])) * 2,
                _ => 1,
            };
            if skip == 0 {
                return None;
            }
            let rest = within(skip, 6);
            (0..rest.len())
                .any(|i| {
                    let r = &rest[i..];
                    phrase(r, &["system", "prompt"])
                        || phrase(r, &["your", "instructions|prompt|rules|guidelines"])
                        || phrase(r, &["hidden", "prompt|instructions"])
                        || phrase(r, &["initial", "prompt"])
                })
                .then_some(EXFILTRATION)
        }
        _ => None,
    }
}

/// The signals in a scan, each once.
fn signals(scan: &Scan) -> Vec<(&'static str, f64)> {
    let mut found: Vec<(&'static str, f64)> = Vec::new();
    if scan.template {
        found.push(TEMPLATE);
    }
    let words = scan.words();
    for i in 0..words.len() {
        if let Some(signal) = at(&words[i..])
            && !found.iter().any(|(n, _)| *n == signal.0)
        {
            found.push(signal);
        }
    }
    found
}

/// Scores `text` and judges it against `threshold`.
pub fn judge(text: &str, threshold: f64) -> Verdict {
    let scanned = scan(text.as_bytes());
    let mut found = signals(&scanned);
    for run in scanned.base64 {
        let Some(decoded) = decode(&text.as_bytes()[run]) else {
            continue;
        };
        let printable = decoded
            .iter()
            .filter(|b| b.is_ascii_graphic() || **b == b' ')
            .count();
        if printable * 10 < decoded.len() * 9 {
            continue;
        }
        let weight = if signals(&scan(&decoded)).is_empty() {
            0.2
        } else {
            0.7
        };
        found.push(("encoded_payload", weight));
        break;
    }
    let score = 1.0 - found.iter().fold(1.0, |keep, (_, w)| keep * (1.0 - w));
    let score = (score * 1000.0).round() / 1000.0;
    let names: Vec<&str> = found.iter().map(|(n, _)| *n).collect();
    let data = serde_json::json!({"score": score, "signals": names});
    if score >= threshold && !found.is_empty() {
        Verdict::fail(format!(
            "possible prompt injection (score {score}: {})",
            names.join(", ")
        ))
        .with_score(score)
        .with_data(&data)
    } else {
        Verdict::pass().with_score(score).with_data(&data)
    }
}

/// Standard base64 without a crate: the plugin decodes only short runs.
mod base64_lite {
    pub fn decode(s: &[u8]) -> Option<Vec<u8>> {
        let s = s
            .strip_suffix(b"==")
            .or_else(|| s.strip_suffix(b"="))
            .unwrap_or(s);
        let mut out = Vec::with_capacity(s.len() * 3 / 4);
        let (mut acc, mut bits) = (0u32, 0u32);
        for &c in s {
            let v = match c {
                b'A'..=b'Z' => c - b'A',
                b'a'..=b'z' => c - b'a' + 26,
                b'0'..=b'9' => c - b'0' + 52,
                b'+' => 62,
                b'/' => 63,
                _ => return None,
            };
            acc = (acc << 6) | u32::from(v);
            bits += 6;
            if bits >= 8 {
                bits -= 8;
                out.push((acc >> bits) as u8);
                acc &= (1 << bits) - 1;
            }
        }
        Some(out)
    }
}
