//! Rate limits and budgets.
//!
//! Rate limits: requests and tokens per minute per gateway key, per virtual
//! key and per metadata value (`[[rate_limits]]` in the server config; a
//! key's own `rpm` and `tpm` replace the rule for its scope). Windows are
//! fixed minutes (the same arithmetic an `INCR` + `EXPIRE` store does),
//! counted in memory. A request is counted against every bucket that applies
//! or none: when one is full it is refused (429, `Retry-After` the seconds to
//! the bucket's next minute) and the others are not charged. Tokens are
//! known only when the answer ends, so they are charged then: a bucket
//! refuses once the minute's tokens have reached its `tpm`. The tightest
//! bucket's state is reported in OpenAI's `x-ratelimit-*-requests` and
//! `x-ratelimit-*-tokens` headers.
//!
//! Budgets ([`budget`]): US dollars per day, month or in total.
//!
//! This module calls nothing else in the pipeline.

pub mod budget;

use std::collections::HashMap;
use std::sync::Mutex;

/// What a rule counts by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// The gateway key (requests without one are not counted).
    Key,
    /// The virtual key the request names.
    VirtualKey,
    /// A metadata value (`metadata.user`).
    Metadata(String),
}

impl Scope {
    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "key" => Ok(Self::Key),
            "virtual_key" => Ok(Self::VirtualKey),
            _ => match text.strip_prefix("metadata.") {
                Some(name) if !name.is_empty() => Ok(Self::Metadata(name.to_owned())),
                _ => Err(format!(
                    "unknown scope `{text}`: expected key, virtual_key or metadata.NAME"
                )),
            },
        }
    }

    pub fn label(&self) -> String {
        match self {
            Self::Key => "key".into(),
            Self::VirtualKey => "virtual_key".into(),
            Self::Metadata(name) => format!("metadata.{name}"),
        }
    }
}

/// `[[rate_limits]]`: requests and/or tokens per minute for each value of a
/// scope.
#[derive(Debug, Clone, PartialEq)]
pub struct RateRule {
    pub scope: Scope,
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
}

/// What a limit counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Requests,
    Tokens,
}

impl Unit {
    /// OpenAI's word for it (its 429's error type, its headers' suffix).
    pub fn label(self) -> &'static str {
        match self {
            Self::Requests => "requests",
            Self::Tokens => "tokens",
        }
    }
}

/// One bucket a request is counted in: its identity (scope and value) and
/// its limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bucket {
    /// `key:key_…`, `virtual_key:NAME`, `metadata.user:alice`: what a 429
    /// names (never a secret).
    pub id: String,
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
}

/// One limit's state after a request was let through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub limit: u64,
    pub remaining: u64,
    /// Seconds until its window restarts.
    pub reset: u64,
}

/// A request let through: the tightest bucket's state for each unit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Admitted {
    pub requests: Option<Quota>,
    pub tokens: Option<Quota>,
}

/// A request refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limited {
    pub bucket: String,
    pub unit: Unit,
    pub limit: u64,
    /// Seconds until the bucket's next window.
    pub retry_after: u64,
}

/// One bucket's counts in its current minute.
#[derive(Debug, Clone, Copy, Default)]
struct Window {
    minute: u64,
    requests: u64,
    tokens: u64,
}

/// Counters of the current minute, by bucket.
#[derive(Debug, Default)]
pub struct RateLimiter {
    windows: Mutex<HashMap<String, Window>>,
}

/// Past this many buckets, counts of finished minutes are dropped.
const SWEEP_AT: usize = 10_000;

impl RateLimiter {
    fn windows(&self, minute: u64) -> std::sync::MutexGuard<'_, HashMap<String, Window>> {
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        if windows.len() > SWEEP_AT {
            windows.retain(|_, w| w.minute == minute);
        }
        windows
    }

    /// Counts one request in every bucket, or in none when one is full: its
    /// requests have reached `rpm`, or its tokens `tpm` (tokens are counted
    /// when answers end, [`RateLimiter::charge_tokens`]). `now` is Unix
    /// seconds.
    pub fn admit(&self, buckets: &[Bucket], now: u64) -> Result<Admitted, Limited> {
        if buckets.is_empty() {
            return Ok(Admitted::default());
        }
        let minute = now / 60;
        let mut windows = self.windows(minute);
        let current = |w: &HashMap<String, Window>, id: &str| match w.get(id) {
            Some(w) if w.minute == minute => *w,
            _ => Window::default(),
        };
        let used: Vec<(u64, u64)> = buckets
            .iter()
            .map(|b| {
                let w = current(&windows, &b.id);
                (w.requests, w.tokens)
            })
            .collect();
        refused(buckets, &used, now)?;
        let mut after = Vec::with_capacity(buckets.len());
        for b in buckets {
            let w = windows.entry(b.id.clone()).or_default();
            if w.minute != minute {
                *w = Window {
                    minute,
                    ..Window::default()
                };
            }
            w.requests += 1;
            after.push((w.requests, w.tokens));
        }
        Ok(admitted(buckets, &after, now))
    }

    /// Adds an answer's tokens to the current minute of every bucket with a
    /// token limit.
    pub fn charge_tokens(&self, buckets: &[Bucket], tokens: u64, now: u64) {
        if tokens == 0 || buckets.iter().all(|b| b.tpm.is_none()) {
            return;
        }
        let minute = now / 60;
        let mut windows = self.windows(minute);
        for b in buckets.iter().filter(|b| b.tpm.is_some()) {
            let w = windows.entry(b.id.clone()).or_default();
            if w.minute != minute {
                *w = Window {
                    minute,
                    ..Window::default()
                };
            }
            w.tokens += tokens;
        }
    }
}

/// The first bucket that is full, given each bucket's (requests, tokens)
/// this minute before the request. Shared with stores elsewhere (Redis).
pub fn refused(buckets: &[Bucket], used: &[(u64, u64)], now: u64) -> Result<(), Limited> {
    for (b, &(requests, tokens)) in buckets.iter().zip(used) {
        let full = [
            (Unit::Requests, b.rpm, requests),
            (Unit::Tokens, b.tpm, tokens),
        ]
        .into_iter()
        .find_map(|(unit, limit, used)| limit.filter(|l| used >= *l).map(|limit| (unit, limit)));
        if let Some((unit, limit)) = full {
            return Err(Limited {
                bucket: b.id.clone(),
                unit,
                limit,
                retry_after: 60 - now % 60,
            });
        }
    }
    Ok(())
}

/// The tightest bucket's state for each unit, given each bucket's
/// (requests, tokens) this minute with the request counted.
pub fn admitted(buckets: &[Bucket], after: &[(u64, u64)], now: u64) -> Admitted {
    let reset = 60 - now % 60;
    let mut out = Admitted::default();
    let tighter = |q: &mut Option<Quota>, limit: u64, used: u64| {
        let remaining = limit.saturating_sub(used);
        if q.is_none_or(|q| remaining < q.remaining) {
            *q = Some(Quota {
                limit,
                remaining,
                reset,
            });
        }
    };
    for (b, &(requests, tokens)) in buckets.iter().zip(after) {
        if let Some(rpm) = b.rpm {
            tighter(&mut out.requests, rpm, requests);
        }
        if let Some(tpm) = b.tpm {
            tighter(&mut out.tokens, tpm, tokens);
        }
    }
    out
}

/// OpenAI's `x-ratelimit-{limit,remaining,reset}-{requests,tokens}` headers.
pub fn headers(headers: &mut http::HeaderMap, unit: Unit, quota: Quota) {
    use http::HeaderName;
    // Written on every limited answer: names made once, not formatted.
    let [limit, remaining, reset] = match unit {
        Unit::Requests => [
            "x-ratelimit-limit-requests",
            "x-ratelimit-remaining-requests",
            "x-ratelimit-reset-requests",
        ],
        Unit::Tokens => [
            "x-ratelimit-limit-tokens",
            "x-ratelimit-remaining-tokens",
            "x-ratelimit-reset-tokens",
        ],
    };
    headers.insert(HeaderName::from_static(limit), quota.limit.into());
    headers.insert(HeaderName::from_static(remaining), quota.remaining.into());
    if let Ok(v) = http::HeaderValue::from_str(&format!("{}s", quota.reset)) {
        headers.insert(HeaderName::from_static(reset), v);
    }
}

/// Every header of an admitted request.
pub fn admitted_headers(h: &mut http::HeaderMap, admitted: &Admitted) {
    if let Some(q) = admitted.requests {
        headers(h, Unit::Requests, q);
    }
    if let Some(q) = admitted.tokens {
        headers(h, Unit::Tokens, q);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket(id: &str, rpm: u64) -> Bucket {
        Bucket {
            id: id.into(),
            rpm: Some(rpm),
            tpm: None,
        }
    }

    fn requests(a: Result<Admitted, Limited>) -> Result<Option<u64>, Limited> {
        a.map(|a| a.requests.map(|q| q.remaining))
    }

    #[test]
    fn a_full_bucket_refuses_and_charges_no_other() {
        let l = RateLimiter::default();
        let both = [bucket("key:a", 2), bucket("metadata.user:u", 10)];
        let t = 120; // the start of a minute
        assert_eq!(
            l.admit(&both, t),
            Ok(Admitted {
                requests: Some(Quota {
                    limit: 2,
                    remaining: 1,
                    reset: 60
                }),
                tokens: None,
            })
        );
        assert_eq!(requests(l.admit(&both, t + 1)), Ok(Some(0)));
        let refused = l.admit(&both, t + 15).expect_err("full");
        assert_eq!(
            refused,
            Limited {
                bucket: "key:a".into(),
                unit: Unit::Requests,
                limit: 2,
                retry_after: 45
            }
        );
        // The user's bucket was not charged for the refused request.
        let user_only = [bucket("metadata.user:u", 10)];
        assert_eq!(requests(l.admit(&user_only, t + 16)), Ok(Some(7)));
        // The next minute starts empty.
        assert_eq!(requests(l.admit(&both, t + 60)), Ok(Some(1)));
        assert_eq!(l.admit(&[], t), Ok(Admitted::default()));
    }

    #[test]
    fn tokens_are_charged_after_and_refuse_once_spent() {
        let l = RateLimiter::default();
        let b = [Bucket {
            id: "key:a".into(),
            rpm: None,
            tpm: Some(100),
        }];
        let t = 600;
        let tokens = |a: Result<Admitted, Limited>| a.map(|a| a.tokens.map(|q| q.remaining));
        assert_eq!(tokens(l.admit(&b, t)), Ok(Some(100)));
        l.charge_tokens(&b, 60, t + 1);
        // Under the limit: let through, though this answer may go over it.
        assert_eq!(tokens(l.admit(&b, t + 2)), Ok(Some(40)));
        l.charge_tokens(&b, 60, t + 3);
        let refused = l.admit(&b, t + 4).expect_err("spent");
        assert_eq!(refused.unit, Unit::Tokens);
        assert_eq!(refused.retry_after, 56);
        assert_eq!(tokens(l.admit(&b, t + 60)), Ok(Some(100)));
    }

    #[test]
    fn scopes_parse() {
        assert_eq!(Scope::parse("key"), Ok(Scope::Key));
        assert_eq!(
            Scope::parse("metadata.user"),
            Ok(Scope::Metadata("user".into()))
        );
        assert!(Scope::parse("metadata.").is_err());
        assert!(Scope::parse("ip").is_err());
    }
}
