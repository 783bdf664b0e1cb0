//! `pii`: personal data and secrets in the text — emails, phone numbers,
//! credit cards (Luhn-checked), IBANs (mod-97-checked), US SSNs, IP addresses
//! and API-key-like secrets — each detected (the check fails), redacted (the
//! text is rewritten with `[EMAIL]`, `[CREDIT_CARD]`, …) or ignored, per entity.
//! When anything to detect is found the check fails and nothing is rewritten.

use std::sync::OnceLock;

use regex::Regex;
use serde_json::Value;
use sluice_plugin_sdk::guardrail::{CheckInput, Verdict};

/// The entities, in the order overlapping matches are claimed.
const ENTITIES: [Entity; 7] = [
    Entity::Secret,
    Entity::Email,
    Entity::CreditCard,
    Entity::Iban,
    Entity::Ssn,
    Entity::Ip,
    Entity::Phone,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entity {
    Email,
    Phone,
    CreditCard,
    Iban,
    Ssn,
    Ip,
    Secret,
}

impl Entity {
    fn name(self) -> &'static str {
        match self {
            Entity::Email => "email",
            Entity::Phone => "phone",
            Entity::CreditCard => "credit_card",
            Entity::Iban => "iban",
            Entity::Ssn => "ssn",
            Entity::Ip => "ip",
            Entity::Secret => "secret",
        }
    }

    fn mask(self) -> String {
        format!("[{}]", self.name().to_ascii_uppercase())
    }

    fn pattern(self) -> &'static Regex {
        static P: OnceLock<Vec<Regex>> = OnceLock::new();
        let all = P.get_or_init(|| {
            [
                r"(?i)\b[a-z0-9._%+-]+@[a-z0-9-]+(?:\.[a-z0-9-]+)*\.[a-z]{2,}\b",
                r"(?:\+\d{1,3}[\s.-]?)?(?:\(\d{1,4}\)[\s.-]?)?\d{2,4}(?:[\s.-]?\d{2,4}){2,4}",
                r"\b(?:\d[ -]?){12,18}\d\b",
                r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b",
                r"\b\d{3}-\d{2}-\d{4}\b",
                r"\b(?:\d{1,3}\.){3}\d{1,3}\b|(?i)\b(?:[0-9a-f]{1,4}:){2,7}(?::|[0-9a-f]{1,4})\b",
                r"\b(?:sk-(?:proj-|ant-)?[A-Za-z0-9_-]{20,}|(?:AKIA|ASIA)[0-9A-Z]{16}|gh[pousr]_[A-Za-z0-9]{36,}|xox[abposr]-[A-Za-z0-9-]{10,}|AIza[0-9A-Za-z_-]{35}|glpat-[A-Za-z0-9_-]{20,})|-----BEGIN [A-Z ]*PRIVATE KEY-----",
            ]
            .iter()
            .map(|p| Regex::new(p).unwrap_or_else(|e| panic!("pattern {p}: {e}")))
            .collect()
        });
        let i = match self {
            Entity::Email => 0,
            Entity::Phone => 1,
            Entity::CreditCard => 2,
            Entity::Iban => 3,
            Entity::Ssn => 4,
            Entity::Ip => 5,
            Entity::Secret => 6,
        };
        &all[i]
    }

    /// Whether a text with these byte `traits` could hold a match at all: a
    /// cheap test that spares the regex on prose (most text has no `@`, and
    /// much no digit).
    fn possible(self, traits: Traits) -> bool {
        match self {
            Entity::Email => traits.at,
            Entity::Phone | Entity::CreditCard | Entity::Ssn => traits.digit,
            Entity::Ip => traits.digit || traits.colon,
            Entity::Iban => traits.digit && traits.upper,
            Entity::Secret => traits.secret,
        }
    }

    /// Whether a pattern's match is really one (checksums, ranges).
    fn valid(self, m: &str) -> bool {
        let digits: Vec<u32> = m.chars().filter_map(|c| c.to_digit(10)).collect();
        match self {
            Entity::CreditCard => (13..=19).contains(&digits.len()) && luhn(&digits),
            Entity::Phone => (10..=15).contains(&digits.len()) && !luhn_card(&digits),
            Entity::Iban => iban(m),
            Entity::Ssn => {
                let (area, group, serial) = (&m[0..3], &m[4..6], &m[7..11]);
                area != "000"
                    && area != "666"
                    && !area.starts_with('9')
                    && group != "00"
                    && serial != "0000"
            }
            Entity::Ip => m.parse::<std::net::IpAddr>().is_ok(),
            Entity::Email | Entity::Secret => true,
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        ENTITIES.into_iter().find(|e| e.name() == name)
    }
}

/// What a text holds, from one pass over its bytes.
#[derive(Debug, Clone, Copy, Default)]
struct Traits {
    digit: bool,
    at: bool,
    colon: bool,
    upper: bool,
    /// The start of a secret's prefix (`sk-`, `AKIA`, `gh?_`, `xox`, `AIza`,
    /// `glpat-`, `-----BEGIN`).
    secret: bool,
}

impl Traits {
    fn of(text: &str) -> Self {
        let b = text.as_bytes();
        let mut t = Traits::default();
        for (i, &c) in b.iter().enumerate() {
            match c {
                b'0'..=b'9' => t.digit = true,
                b'@' => t.at = true,
                b':' => t.colon = true,
                b'A'..=b'Z' => {
                    t.upper = true;
                    if c == b'A' && matches!(b.get(i + 1), Some(b'K' | b'S' | b'I')) {
                        t.secret = true;
                    }
                }
                b's' if b.get(i + 1) == Some(&b'k') && b.get(i + 2) == Some(&b'-') => {
                    t.secret = true
                }
                b'g' if matches!(b.get(i + 1), Some(b'h' | b'l')) => t.secret = true,
                b'x' if b.get(i + 1) == Some(&b'o') && b.get(i + 2) == Some(&b'x') => {
                    t.secret = true
                }
                b'-' if b.get(i + 1..i + 5) == Some(b"----") => t.secret = true,
                _ => {}
            }
        }
        t
    }
}

fn luhn(digits: &[u32]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            if i % 2 == 1 {
                let x = d * 2;
                if x > 9 { x - 9 } else { x }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// A digit run that is a card number rather than a phone number.
fn luhn_card(digits: &[u32]) -> bool {
    (13..=19).contains(&digits.len()) && luhn(digits)
}

fn iban(m: &str) -> bool {
    let s: String = m.chars().filter(|c| !c.is_whitespace()).collect();
    if !(15..=34).contains(&s.len()) {
        return false;
    }
    let rearranged = s[4..].chars().chain(s[..4].chars());
    let mut rem: u64 = 0;
    for c in rearranged {
        let v = match c.to_digit(36) {
            Some(v) => v as u64,
            None => return false,
        };
        rem = if v >= 10 {
            (rem * 100 + v) % 97
        } else {
            (rem * 10 + v) % 97
        };
    }
    rem == 1
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Detect,
    Redact,
    Ignore,
}

/// The check's configuration.
#[derive(Debug)]
pub struct Pii {
    actions: Vec<(Entity, Action)>,
}

impl Pii {
    pub fn read(parameters: &Value) -> Result<Self, String> {
        let redact = match parameters.get("redact") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err("`redact` must be true or false".into()),
        };
        let default = if redact {
            Action::Redact
        } else {
            Action::Detect
        };
        let listed: Vec<Entity> = match parameters.get("entities") {
            None | Some(Value::Null) => ENTITIES.to_vec(),
            Some(Value::Array(items)) => items
                .iter()
                .map(|i| {
                    i.as_str()
                        .and_then(Entity::from_name)
                        .ok_or_else(|| format!("`entities` holds `{i}`; known: {}", names()))
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err("`entities` must be a list".into()),
        };
        let mut actions: Vec<(Entity, Action)> = ENTITIES
            .iter()
            .map(|e| {
                (
                    *e,
                    if listed.contains(e) {
                        default
                    } else {
                        Action::Ignore
                    },
                )
            })
            .collect();
        if let Some(given) = parameters.get("actions").filter(|v| !v.is_null()) {
            for (name, action) in given.as_object().ok_or("`actions` must be an object")? {
                let entity = Entity::from_name(name)
                    .ok_or_else(|| format!("`actions.{name}`: known entities are {}", names()))?;
                let action = match action.as_str() {
                    Some("detect") => Action::Detect,
                    Some("redact") => Action::Redact,
                    Some("ignore") => Action::Ignore,
                    _ => return Err(format!("`actions.{name}` is detect, redact or ignore")),
                };
                if let Some(slot) = actions.iter_mut().find(|(e, _)| *e == entity) {
                    slot.1 = action;
                }
            }
        }
        Ok(Self { actions })
    }

    fn action(&self, e: Entity) -> Action {
        self.actions
            .iter()
            .find(|(x, _)| *x == e)
            .map_or(Action::Ignore, |(_, a)| *a)
    }

    /// Every match in `text`: (entity, start, end), without overlaps.
    fn matches(&self, text: &str) -> Vec<(Entity, usize, usize)> {
        let mut claimed: Vec<(Entity, usize, usize)> = Vec::new();
        let traits = Traits::of(text);
        for e in ENTITIES {
            if self.action(e) == Action::Ignore || !e.possible(traits) {
                continue;
            }
            for m in e.pattern().find_iter(text) {
                let (s, t) = (m.start(), m.end());
                if claimed.iter().any(|(_, a, b)| s < *b && *a < t) || !e.valid(m.as_str()) {
                    continue;
                }
                claimed.push((e, s, t));
            }
        }
        claimed.sort_by_key(|(_, s, _)| *s);
        claimed
    }

    pub fn run(&self, input: &CheckInput) -> Verdict {
        let mut counts: Vec<(Entity, usize)> = Vec::new();
        let mut detected = Vec::new();
        let mut redact = false;
        let found: Vec<Vec<(Entity, usize, usize)>> =
            input.texts().map(|t| self.matches(t)).collect();
        for (e, _, _) in found.iter().flatten() {
            match counts.iter_mut().find(|(x, _)| x == e) {
                Some(c) => c.1 += 1,
                None => counts.push((*e, 1)),
            }
            match self.action(*e) {
                Action::Detect if !detected.contains(&e.name()) => detected.push(e.name()),
                Action::Redact => redact = true,
                _ => {}
            }
        }
        let data = serde_json::json!({"found": counts.iter().map(|(e, n)| (e.name().to_owned(), serde_json::Value::from(*n))).collect::<serde_json::Map<_, _>>()});
        if !detected.is_empty() {
            return Verdict::fail(format!(
                "personal data or secrets found: {}",
                detected.join(", ")
            ))
            .with_data(&data);
        }
        if !redact {
            return Verdict::pass();
        }
        let mut i = 0;
        Verdict::rewrite(input.map_texts(|text| {
            let mut out = String::with_capacity(text.len());
            let mut at = 0;
            for (e, s, t) in &found[i] {
                if self.action(*e) == Action::Redact {
                    out.push_str(&text[at..*s]);
                    out.push_str(&e.mask());
                    at = *t;
                }
            }
            out.push_str(&text[at..]);
            i += 1;
            out
        }))
        .with_data(&data)
    }
}

fn names() -> String {
    ENTITIES
        .iter()
        .map(|e| e.name())
        .collect::<Vec<_>>()
        .join(", ")
}
