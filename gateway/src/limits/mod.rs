//! Rate limits: requests per minute per gateway key, per virtual key and per
//! metadata value (`[[rate_limits]]` in the server config; a key's own `rpm`
//! replaces the rule for its scope).
//!
//! Windows are fixed minutes (the same arithmetic an `INCR` + `EXPIRE` store
//! does), counted in memory. A request is counted against every bucket that
//! applies or none: when one is full it is refused (429, `Retry-After` the
//! seconds to the bucket's next minute) and the others are not charged. The
//! tightest bucket's state is reported in OpenAI's `x-ratelimit-*-requests`
//! headers.
//!
//! This module calls nothing else in the pipeline.

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

/// `[[rate_limits]]`: requests per minute for each value of a scope.
#[derive(Debug, Clone, PartialEq)]
pub struct RateRule {
    pub scope: Scope,
    pub rpm: u64,
}

/// One bucket a request is counted in: its identity (scope and value) and
/// its limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bucket {
    /// `key:key_…`, `virtual_key:NAME`, `metadata.user:alice`: what a 429
    /// names (never a secret).
    pub id: String,
    pub rpm: u64,
}

/// A request let through: the tightest bucket's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admitted {
    pub limit: u64,
    pub remaining: u64,
    /// Seconds until its window restarts.
    pub reset: u64,
}

/// A request refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limited {
    pub bucket: String,
    pub limit: u64,
    /// Seconds until the bucket's next window.
    pub retry_after: u64,
}

/// Counters of the current minute, by bucket.
#[derive(Debug, Default)]
pub struct RateLimiter {
    windows: Mutex<HashMap<String, (u64, u64)>>,
}

/// Past this many buckets, counts of finished minutes are dropped.
const SWEEP_AT: usize = 10_000;

impl RateLimiter {
    /// Counts one request in every bucket, or in none when one is full.
    /// `now` is Unix seconds. `None` when no bucket applies.
    pub fn admit(&self, buckets: &[Bucket], now: u64) -> Result<Option<Admitted>, Limited> {
        if buckets.is_empty() {
            return Ok(None);
        }
        let minute = now / 60;
        let reset = 60 - now % 60;
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        if windows.len() > SWEEP_AT {
            windows.retain(|_, (m, _)| *m == minute);
        }
        let used = |w: &HashMap<String, (u64, u64)>, id: &str| match w.get(id) {
            Some((m, n)) if *m == minute => *n,
            _ => 0,
        };
        if let Some(full) = buckets.iter().find(|b| used(&windows, &b.id) >= b.rpm) {
            return Err(Limited {
                bucket: full.id.clone(),
                limit: full.rpm,
                retry_after: reset,
            });
        }
        let mut tightest: Option<Admitted> = None;
        for b in buckets {
            let entry = windows.entry(b.id.clone()).or_insert((minute, 0));
            if entry.0 != minute {
                *entry = (minute, 0);
            }
            entry.1 += 1;
            let remaining = b.rpm.saturating_sub(entry.1);
            if tightest.is_none_or(|t| remaining < t.remaining) {
                tightest = Some(Admitted {
                    limit: b.rpm,
                    remaining,
                    reset,
                });
            }
        }
        Ok(tightest)
    }
}

/// OpenAI's `x-ratelimit-*-requests` headers.
pub fn headers(headers: &mut http::HeaderMap, limit: u64, remaining: u64, reset: u64) {
    headers.insert("x-ratelimit-limit-requests", limit.into());
    headers.insert("x-ratelimit-remaining-requests", remaining.into());
    if let Ok(v) = http::HeaderValue::from_str(&format!("{reset}s")) {
        headers.insert("x-ratelimit-reset-requests", v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket(id: &str, rpm: u64) -> Bucket {
        Bucket { id: id.into(), rpm }
    }

    #[test]
    fn a_full_bucket_refuses_and_charges_no_other() {
        let l = RateLimiter::default();
        let both = [bucket("key:a", 2), bucket("metadata.user:u", 10)];
        let t = 120; // the start of a minute
        assert_eq!(
            l.admit(&both, t),
            Ok(Some(Admitted {
                limit: 2,
                remaining: 1,
                reset: 60
            }))
        );
        assert_eq!(
            l.admit(&both, t + 1).map(|a| a.map(|a| a.remaining)),
            Ok(Some(0))
        );
        let refused = l.admit(&both, t + 15).expect_err("full");
        assert_eq!(
            refused,
            Limited {
                bucket: "key:a".into(),
                limit: 2,
                retry_after: 45
            }
        );
        // The user's bucket was not charged for the refused request.
        let user_only = [bucket("metadata.user:u", 10)];
        assert_eq!(
            l.admit(&user_only, t + 16).map(|a| a.map(|a| a.remaining)),
            Ok(Some(7))
        );
        // The next minute starts empty.
        assert_eq!(
            l.admit(&both, t + 60).map(|a| a.map(|a| a.remaining)),
            Ok(Some(1))
        );
        assert_eq!(l.admit(&[], t), Ok(None));
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
