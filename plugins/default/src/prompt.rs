//! `promptInjection`: a heuristic detector. Each signal found adds its weight
//! to a score (`1 - Π(1 - w)`, so signals compound without passing 1):
//! instruction-override phrases, role-play and jailbreak markers, requests for
//! the system prompt, chat-template tokens, and base64 payloads (weighed more
//! when what they decode to holds an override). The check fails when the score
//! reaches `threshold`; the score and the signals are in the result.

use std::sync::OnceLock;

use base64_lite::decode;
use sluice_plugin_sdk::guardrail::Verdict;

struct Signal {
    name: &'static str,
    weight: f64,
    trigger: &'static str,
    then: Option<&'static str>,
}

// The patterns run on the lowercased text, byte-wise (`(?-u)`): lowercase
// literals and ASCII word boundaries, much cheaper than Unicode
// case-insensitive matching (the phrases are English). A signal is a trigger
// and, optionally, what must follow it within a few words: the follow-up runs
// only where a trigger matched, so the text is scanned by simple patterns.
const SIGNALS: &[Signal] = &[
    Signal {
        name: "instruction_override",
        weight: 0.6,
        trigger: r"(?-u)\b(?:ignore|disregard|forget|override|bypass|skip)\b",
        then: Some(
            r"(?s-u)\A.{0,40}?\b(?:previous|prior|above|earlier|preceding|all|any|your|the|these|those)\b.{0,40}?\b(?:instructions?|prompts?|rules|directions|guidelines|context|constraints)\b",
        ),
    },
    Signal {
        name: "jailbreak_marker",
        weight: 0.5,
        trigger: r"(?-u)\b(?:dan|do anything now|developer mode|jailbreak(?:en|ed)?|unfiltered mode|no (?:restrictions|limits|rules)|without (?:any )?(?:restrictions|filters|limits))\b",
        then: None,
    },
    Signal {
        name: "role_play",
        weight: 0.3,
        trigger: r"(?-u)\b(?:you are now|from now on,? you(?: are|'re| will)|pretend (?:to be|you are|that you)|act as (?:an? )?(?:unrestricted|evil|different)|roleplay as|role-play as)\b",
        then: None,
    },
    Signal {
        name: "prompt_exfiltration",
        weight: 0.5,
        trigger: r"(?-u)\b(?:reveal|show|print|repeat|output|tell me|give me|what (?:is|are))\b",
        then: Some(
            r"(?s-u)\A.{0,30}?\b(?:system prompt|your (?:instructions|prompt|rules|guidelines)|hidden (?:prompt|instructions)|initial prompt)\b",
        ),
    },
    Signal {
        name: "template_tokens",
        weight: 0.4,
        trigger: r"(?-u)<\|(?:im_start|im_end|system|endoftext)\|>|\[/?inst\]|<</?sys>>|###\s*(?:system|instruction)\s*:",
        then: None,
    },
];

/// Every trigger in one set (one pass over the text finds which occur), and
/// each signal's own trigger and follow-up for where one did.
struct Compiled {
    triggers: regex::bytes::RegexSet,
    each: Vec<(regex::bytes::Regex, Option<regex::bytes::Regex>)>,
}

fn compiled() -> &'static Compiled {
    static C: OnceLock<Compiled> = OnceLock::new();
    let build = |p: &str| regex::bytes::Regex::new(p).unwrap_or_else(|e| panic!("{p}: {e}"));
    C.get_or_init(|| Compiled {
        triggers: regex::bytes::RegexSet::new(SIGNALS.iter().map(|s| s.trigger))
            .unwrap_or_else(|e| panic!("triggers: {e}")),
        each: SIGNALS
            .iter()
            .map(|s| (build(s.trigger), s.then.map(build)))
            .collect(),
    })
}

/// Runs of 24 or more base64 characters (with their `=` padding), found in
/// one pass over the bytes.
fn base64_runs(text: &str) -> impl Iterator<Item = &str> {
    let b = text.as_bytes();
    let is_b64 = |c: u8| c.is_ascii_alphanumeric() || c == b'+' || c == b'/';
    let mut at = 0;
    std::iter::from_fn(move || {
        while at < b.len() {
            while at < b.len() && !is_b64(b[at]) {
                at += 1;
            }
            let start = at;
            while at < b.len() && is_b64(b[at]) {
                at += 1;
            }
            let mut end = at;
            while end < b.len() && end - at < 2 && b[end] == b'=' {
                end += 1;
            }
            if at - start >= 24 {
                at = end;
                return Some(&text[start..end]);
            }
        }
        None
    })
}

/// The signals in `text`.
fn signals(text: &str) -> Vec<(&'static str, f64)> {
    let lower = if text.is_ascii() {
        text.to_ascii_lowercase()
    } else {
        text.to_lowercase()
    };
    let text = lower.as_bytes();
    let c = compiled();
    c.triggers
        .matches(text)
        .iter()
        .filter(|&i| match &c.each[i] {
            (_, None) => true,
            (trigger, Some(then)) => trigger
                .find_iter(text)
                .any(|m| then.is_match(&text[m.end()..])),
        })
        .map(|i| (SIGNALS[i].name, SIGNALS[i].weight))
        .collect()
}

/// Scores `text` and judges it against `threshold`.
pub fn judge(text: &str, threshold: f64) -> Verdict {
    let mut found = signals(text);
    for run in base64_runs(text) {
        let Some(decoded) = decode(run) else {
            continue;
        };
        let printable = decoded
            .iter()
            .filter(|b| b.is_ascii_graphic() || **b == b' ')
            .count();
        if printable * 10 < decoded.len() * 9 {
            continue;
        }
        let inner = String::from_utf8_lossy(&decoded);
        let weight = if signals(&inner).is_empty() { 0.2 } else { 0.7 };
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
    pub fn decode(s: &str) -> Option<Vec<u8>> {
        let s = s.trim_end_matches('=');
        let mut out = Vec::with_capacity(s.len() * 3 / 4);
        let (mut acc, mut bits) = (0u32, 0u32);
        for c in s.bytes() {
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
