//! `promptInjection`: a heuristic detector. Each signal found adds its weight
//! to a score (`1 - Π(1 - w)`, so signals compound without passing 1):
//! instruction-override phrases, role-play and jailbreak markers, requests for
//! the system prompt, chat-template tokens, and base64 payloads (weighed more
//! when what they decode to holds an override). The check fails when the score
//! reaches `threshold`; the score and the signals are in the result.

use std::sync::OnceLock;

use base64_lite::decode;
use regex::Regex;
use sluice_plugin_sdk::guardrail::Verdict;

struct Signal {
    name: &'static str,
    weight: f64,
    pattern: &'static str,
}

const SIGNALS: &[Signal] = &[
    Signal {
        name: "instruction_override",
        weight: 0.6,
        pattern: r"(?is)\b(?:ignore|disregard|forget|override|bypass|skip)\b.{0,40}?\b(?:previous|prior|above|earlier|preceding|all|any|your|the|these|those)\b.{0,40}?\b(?:instructions?|prompts?|rules|directions|guidelines|context|constraints)\b",
    },
    Signal {
        name: "jailbreak_marker",
        weight: 0.5,
        pattern: r"(?i)\b(?:DAN|do anything now|developer mode|jailbreak(?:en|ed)?|unfiltered mode|no (?:restrictions|limits|rules)|without (?:any )?(?:restrictions|filters|limits))\b",
    },
    Signal {
        name: "role_play",
        weight: 0.3,
        pattern: r"(?i)\b(?:you are now|from now on,? you(?: are|'re| will)|pretend (?:to be|you are|that you)|act as (?:an? )?(?:unrestricted|evil|different)|roleplay as|role-play as)\b",
    },
    Signal {
        name: "prompt_exfiltration",
        weight: 0.5,
        pattern: r"(?is)\b(?:reveal|show|print|repeat|output|tell me|give me|what (?:is|are))\b.{0,30}?\b(?:system prompt|your (?:instructions|prompt|rules|guidelines)|hidden (?:prompt|instructions)|initial prompt)\b",
    },
    Signal {
        name: "template_tokens",
        weight: 0.4,
        pattern: r"(?im)<\|im_start\|>|<\|im_end\|>|<\|system\|>|<\|endoftext\|>|\[/?INST\]|<</?SYS>>|^\s*###\s*(?:system|instruction)\s*:",
    },
];

fn compiled() -> &'static Vec<Regex> {
    static C: OnceLock<Vec<Regex>> = OnceLock::new();
    C.get_or_init(|| {
        SIGNALS
            .iter()
            .map(|s| Regex::new(s.pattern).unwrap_or_else(|e| panic!("{}: {e}", s.name)))
            .collect()
    })
}

fn base64_runs() -> &'static Regex {
    static R: OnceLock<Regex> = OnceLock::new();
    R.get_or_init(|| Regex::new(r"[A-Za-z0-9+/]{24,}={0,2}").unwrap_or_else(|e| panic!("{e}")))
}

/// The signals in `text`.
fn signals(text: &str) -> Vec<(&'static str, f64)> {
    SIGNALS
        .iter()
        .zip(compiled())
        .filter(|(_, re)| re.is_match(text))
        .map(|(s, _)| (s.name, s.weight))
        .collect()
}

/// Scores `text` and judges it against `threshold`.
pub fn judge(text: &str, threshold: f64) -> Verdict {
    let mut found = signals(text);
    for run in base64_runs().find_iter(text) {
        let Some(decoded) = decode(run.as_str()) else {
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
