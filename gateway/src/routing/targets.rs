//! What the gateway knows about each upstream target: recent health (calls in
//! flight, smoothed error rate and latency) for routers and health-aware load
//! balancing, and a circuit breaker. Shared by every worker.
//!
//! A target is identified by what it calls, not by where it sits in a config:
//! provider, custom host, model override and a fingerprint of its key. Two
//! configs that name the same upstream share its state, so an outage seen by one
//! protects the other.
//!
//! The breaker (per target, `[routing.circuit_breaker]`):
//! - closed: calls pass; it opens after `consecutive_failures` failures in a row,
//!   or when at least `min_requests` calls in the last `window_ms` failed at a
//!   rate of `error_rate` or more;
//! - open: calls are refused until `cool_down_ms` has passed;
//! - half-open: one probe call passes; its success closes the circuit, its
//!   failure opens it for another cool-down.
//!
//! A failure is a transport error, a timeout, a 5xx or a 429 (the key is being
//! throttled); other 4xx answers are the client's and count as successes.

use std::collections::HashMap;
use std::hash::Hasher;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde_json::{Value, json};

pub use crate::config::BreakerSettings;
use tokio::time::Instant;

/// Weight of the newest observation in the moving averages.
const ALPHA: f64 = 0.2;
/// The error-rate window is kept in this many buckets.
const BUCKETS: usize = 10;
/// Targets remembered at most. Identities include a key fingerprint, so a
/// client cycling through keys must not grow the map without bound: when full,
/// quiet targets (closed circuit, nothing in flight, no recent failure) are
/// forgotten, and past that new targets are served untracked.
const CAPACITY: usize = 4096;

/// How one call went, for health and the breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Failure,
}

impl Outcome {
    /// The outcome of an answer with `status`.
    pub fn of_status(status: u16) -> Self {
        if status >= 500 || status == 429 {
            Self::Failure
        } else {
            Self::Success
        }
    }
}

/// A snapshot of a target's health, as routers see it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TargetHealth {
    pub requests: u64,
    pub in_flight: u32,
    pub error_rate: f64,
    pub latency_ms: Option<f64>,
    pub circuit_open: bool,
}

/// The breaker's state.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Circuit {
    Closed,
    Open {
        until: Instant,
    },
    /// Since when a probe is out. A probe that never reports (its request was
    /// cancelled) is given up after a cool-down, so the circuit cannot stick.
    HalfOpen {
        probe: Option<Instant>,
    },
}

#[derive(Debug)]
struct State {
    label: String,
    in_flight: AtomicU32,
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    requests: u64,
    failures: u64,
    error_rate: f64,
    latency_ms: Option<f64>,
    circuit: Circuit,
    consecutive: u32,
    /// (bucket start, calls, failures), oldest first.
    window: [(Option<Instant>, u32, u32); BUCKETS],
    opened: u64,
}

/// Every target's state.
#[derive(Debug, Default)]
pub struct Targets {
    settings: BreakerSettings,
    states: RwLock<HashMap<Arc<str>, Arc<State>>>,
}

/// A call in flight; the count drops when this does (for a stream: when the
/// client's body ends).
#[derive(Debug)]
pub struct InFlight {
    state: Arc<State>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.state.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A target's identity: what it calls. The key is fingerprinted, never kept.
pub fn key(
    provider: &str,
    host: Option<&str>,
    model: Option<&str>,
    api_key: Option<&str>,
) -> String {
    let fingerprint = api_key.map(|k| {
        // A fixed-key SipHash: stable across restarts, not reversible, and
        // 32 bits is plenty to tell a handful of keys apart.
        let mut h = std::collections::hash_map::DefaultHasher::new();
        h.write(k.as_bytes());
        format!("key:{:08x}", h.finish() as u32)
    });
    let host = host.map(|h| h.split('?').next().unwrap_or(h));
    let mut out = provider.to_owned();
    for part in [host, model, fingerprint.as_deref()].into_iter().flatten() {
        out.push(' ');
        out.push_str(part);
    }
    out
}

impl Targets {
    pub fn new(settings: BreakerSettings) -> Self {
        Self {
            settings,
            states: RwLock::default(),
        }
    }

    pub fn settings(&self) -> &BreakerSettings {
        &self.settings
    }

    fn state(&self, key: &str) -> Arc<State> {
        if let Some(s) = self.states.read().ok().and_then(|m| m.get(key).cloned()) {
            return s;
        }
        let Ok(mut map) = self.states.write() else {
            return Arc::new(State::new(key));
        };
        if map.len() >= CAPACITY && !map.contains_key(key) {
            map.retain(|_, state| !state.quiet());
            if map.len() >= CAPACITY {
                tracing::warn!(
                    capacity = CAPACITY,
                    "too many upstream targets to track; this one is not"
                );
                return Arc::new(State::new(key));
            }
        }
        map.entry(Arc::from(key))
            .or_insert_with(|| Arc::new(State::new(key)))
            .clone()
    }

    /// How many targets are tracked.
    pub fn len(&self) -> usize {
        self.states.read().map_or(0, |m| m.len())
    }

    /// Whether none are.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Prometheus text for every target: circuit state (0 closed, 1 half-open,
    /// 2 open), times opened, calls in flight, calls and failures seen.
    pub fn prometheus(&self, out: &mut String) {
        use std::fmt::Write;
        let states: Vec<Arc<State>> = self
            .states
            .read()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default();
        let now = Instant::now();
        let mut rows: Vec<(String, [f64; 5])> = states
            .iter()
            .filter_map(|s| {
                let inner = s.inner.lock().ok()?;
                let circuit = match inner.circuit {
                    Circuit::Closed => 0.0,
                    Circuit::Open { until } if now < until => 2.0,
                    Circuit::Open { .. } | Circuit::HalfOpen { .. } => 1.0,
                };
                let values = [
                    circuit,
                    inner.opened as f64,
                    f64::from(s.in_flight.load(Ordering::Relaxed)),
                    inner.requests as f64,
                    inner.failures as f64,
                ];
                Some((crate::telemetry::prometheus_label(&s.label), values))
            })
            .collect();
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        let metrics = [
            (
                "sluice_circuit_state",
                "gauge",
                "Circuit of an upstream target: 0 closed, 1 half-open, 2 open.",
            ),
            (
                "sluice_circuit_opened_total",
                "counter",
                "Times the target's circuit opened.",
            ),
            (
                "sluice_target_in_flight",
                "gauge",
                "Calls to the target in flight (streams until they end).",
            ),
            (
                "sluice_target_calls_total",
                "counter",
                "Calls to the target that ended.",
            ),
            (
                "sluice_target_failures_total",
                "counter",
                "Calls to the target that failed (transport, timeout, 5xx, 429).",
            ),
        ];
        for (i, (name, kind, help)) in metrics.iter().enumerate() {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (label, values) in &rows {
                let _ = writeln!(out, "{name}{{target=\"{label}\"}} {}", values[i]);
            }
        }
    }

    /// What is known of a target now.
    pub fn get(&self, key: &str) -> TargetHealth {
        let Some(state) = self.states.read().ok().and_then(|m| m.get(key).cloned()) else {
            return TargetHealth::default();
        };
        let in_flight = state.in_flight.load(Ordering::Relaxed);
        let Ok(inner) = state.inner.lock() else {
            return TargetHealth::default();
        };
        TargetHealth {
            requests: inner.requests,
            in_flight,
            error_rate: inner.error_rate,
            latency_ms: inner.latency_ms,
            circuit_open: self.settings.enabled
                && inner.wait(Instant::now(), self.settings.cool_down).is_err(),
        }
    }

    /// Whether a call could go to the target now, changing nothing.
    pub fn peek(&self, key: &str) -> Result<(), Duration> {
        if !self.settings.enabled {
            return Ok(());
        }
        let Some(state) = self.states.read().ok().and_then(|m| m.get(key).cloned()) else {
            return Ok(());
        };
        let Ok(inner) = state.inner.lock() else {
            return Ok(());
        };
        inner.wait(Instant::now(), self.settings.cool_down)
    }

    /// Whether a call may go to the target now. In half-open state this takes
    /// the one probe, so call it only right before calling the target.
    pub fn admit(&self, key: &str) -> Result<(), Duration> {
        if !self.settings.enabled {
            return Ok(());
        }
        let state = self.state(key);
        let Ok(mut inner) = state.inner.lock() else {
            return Ok(());
        };
        let now = Instant::now();
        inner.wait(now, self.settings.cool_down)?;
        if !matches!(inner.circuit, Circuit::Closed) {
            tracing::info!(target = %state.label, "circuit half-open: probing");
            inner.circuit = Circuit::HalfOpen { probe: Some(now) };
        }
        Ok(())
    }

    /// A call starts.
    pub fn start(&self, key: &str) -> InFlight {
        let state = self.state(key);
        state.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight { state }
    }

    /// A call ended with `outcome` after `took`.
    pub fn record(&self, key: &str, outcome: Outcome, took: Duration) {
        let state = self.state(key);
        let Ok(mut inner) = state.inner.lock() else {
            return;
        };
        let now = Instant::now();
        let failed = outcome == Outcome::Failure;
        inner.requests += 1;
        inner.failures += u64::from(failed);
        inner.error_rate = inner.error_rate * (1.0 - ALPHA) + if failed { ALPHA } else { 0.0 };
        if !failed {
            // Only answers: a fast failure must not look like a fast target.
            let ms = took.as_secs_f64() * 1000.0;
            inner.latency_ms = Some(match inner.latency_ms {
                Some(avg) => avg * (1.0 - ALPHA) + ms * ALPHA,
                None => ms,
            });
        }
        if !self.settings.enabled {
            return;
        }
        inner.count(now, failed, self.settings.window);
        let open = |inner: &mut Inner, why: &str| {
            inner.circuit = Circuit::Open {
                until: now + self.settings.cool_down,
            };
            inner.opened += 1;
            inner.consecutive = 0;
            inner.window = Default::default();
            tracing::warn!(target = %state.label, reason = why, cool_down_ms = self.settings.cool_down.as_millis() as u64, "circuit opened");
        };
        match inner.circuit {
            Circuit::HalfOpen { .. } if failed => open(&mut inner, "the probe failed"),
            Circuit::HalfOpen { .. } => {
                tracing::info!(target = %state.label, "circuit closed: the probe succeeded");
                inner.circuit = Circuit::Closed;
                inner.consecutive = 0;
            }
            Circuit::Open { .. } => {}
            Circuit::Closed if failed => {
                inner.consecutive += 1;
                let (calls, failures) = inner.totals(now, self.settings.window);
                if inner.consecutive >= self.settings.consecutive_failures {
                    open(&mut inner, "consecutive failures");
                } else if calls >= self.settings.min_requests
                    && f64::from(failures) >= self.settings.error_rate * f64::from(calls)
                {
                    open(&mut inner, "error rate");
                }
            }
            Circuit::Closed => inner.consecutive = 0,
        }
    }

    /// Every target's state, for `/admin/targets`.
    pub fn snapshot(&self) -> Vec<Value> {
        let states: Vec<Arc<State>> = self
            .states
            .read()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default();
        let now = Instant::now();
        let mut out: Vec<Value> = states
            .iter()
            .filter_map(|s| {
                let inner = s.inner.lock().ok()?;
                let (calls, failures) = inner.totals(now, self.settings.window);
                let (circuit, retry_in_ms) = match inner.circuit {
                    Circuit::Closed => ("closed", None),
                    Circuit::Open { until } if now < until => {
                        ("open", Some((until - now).as_millis() as u64))
                    }
                    Circuit::Open { .. } | Circuit::HalfOpen { .. } => ("half_open", None),
                };
                Some(json!({
                    "target": s.label,
                    "circuit": circuit,
                    "retry_in_ms": retry_in_ms,
                    "times_opened": inner.opened,
                    "consecutive_failures": inner.consecutive,
                    "window": {"calls": calls, "failures": failures},
                    "requests": inner.requests,
                    "in_flight": s.in_flight.load(Ordering::Relaxed),
                    "error_rate": inner.error_rate,
                    "latency_ms": inner.latency_ms,
                }))
            })
            .collect();
        out.sort_by(|a, b| a["target"].as_str().cmp(&b["target"].as_str()));
        out
    }
}

impl State {
    /// Nothing to lose by forgetting it.
    fn quiet(&self) -> bool {
        self.in_flight.load(Ordering::Relaxed) == 0
            && self
                .inner
                .lock()
                .is_ok_and(|i| matches!(i.circuit, Circuit::Closed) && i.consecutive == 0)
    }

    fn new(label: &str) -> Self {
        Self {
            label: label.to_owned(),
            in_flight: AtomicU32::new(0),
            inner: Mutex::new(Inner {
                requests: 0,
                failures: 0,
                error_rate: 0.0,
                latency_ms: None,
                circuit: Circuit::Closed,
                consecutive: 0,
                window: Default::default(),
                opened: 0,
            }),
        }
    }
}

impl Inner {
    /// How long until a call may pass (`Ok` when one may now).
    fn wait(&self, now: Instant, cool_down: Duration) -> Result<(), Duration> {
        match self.circuit {
            Circuit::Closed | Circuit::HalfOpen { probe: None } => Ok(()),
            Circuit::Open { until } if now < until => Err(until - now),
            Circuit::Open { .. } => Ok(()),
            Circuit::HalfOpen { probe: Some(since) } if now < since + cool_down => {
                Err(since + cool_down - now)
            }
            Circuit::HalfOpen { probe: Some(_) } => Ok(()),
        }
    }

    fn count(&mut self, now: Instant, failed: bool, window: Duration) {
        let span = window / BUCKETS as u32;
        let newest = self.window[BUCKETS - 1];
        let fresh = newest.0.is_some_and(|start| now < start + span);
        if !fresh {
            self.window.rotate_left(1);
            self.window[BUCKETS - 1] = (Some(now), 0, 0);
        }
        let b = &mut self.window[BUCKETS - 1];
        b.1 += 1;
        b.2 += u32::from(failed);
    }

    fn totals(&self, now: Instant, window: Duration) -> (u32, u32) {
        self.window
            .iter()
            .filter(|(start, ..)| start.is_some_and(|s| now < s + window))
            .fold((0, 0), |(c, f), (_, calls, fails)| (c + calls, f + fails))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> BreakerSettings {
        BreakerSettings {
            consecutive_failures: 3,
            min_requests: 10,
            error_rate: 0.5,
            window: Duration::from_secs(10),
            cool_down: Duration::from_secs(5),
            enabled: true,
        }
    }

    fn fail(t: &Targets, k: &str, n: usize) {
        for _ in 0..n {
            t.record(k, Outcome::Failure, Duration::from_millis(1));
        }
    }

    #[test]
    fn averages_move_toward_what_is_seen() {
        let t = Targets::default();
        let guard = t.start("a");
        assert_eq!(t.get("a").in_flight, 1);
        t.record("a", Outcome::Success, Duration::from_millis(100));
        drop(guard);
        let seen = t.get("a");
        assert_eq!((seen.in_flight, seen.requests), (0, 1));
        assert_eq!(seen.latency_ms, Some(100.0));
        t.record("a", Outcome::Failure, Duration::from_millis(1));
        let seen = t.get("a");
        assert!((seen.error_rate - ALPHA).abs() < 1e-9);
        assert_eq!(seen.latency_ms, Some(100.0), "failures leave latency alone");
    }

    #[tokio::test(start_paused = true)]
    async fn consecutive_failures_open_and_a_probe_closes() {
        let t = Targets::new(settings());
        fail(&t, "k", 2);
        t.record("k", Outcome::Success, Duration::ZERO);
        fail(&t, "k", 2);
        assert!(t.admit("k").is_ok(), "a success reset the run");
        fail(&t, "k", 1);
        let wait = t.admit("k").expect_err("open after 3 in a row");
        assert_eq!(wait, Duration::from_secs(5));
        assert!(t.get("k").circuit_open);

        tokio::time::advance(Duration::from_secs(4)).await;
        assert!(t.admit("k").is_err(), "still cooling down");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(!t.get("k").circuit_open, "ready for a probe");
        assert!(
            t.peek("k").is_ok() && t.peek("k").is_ok(),
            "a look takes nothing"
        );
        assert!(t.admit("k").is_ok(), "the probe");
        assert!(t.admit("k").is_err(), "one probe at a time");
        assert!(t.peek("k").is_err());
        t.record("k", Outcome::Success, Duration::ZERO);
        assert!(t.admit("k").is_ok() && t.admit("k").is_ok(), "closed again");
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_that_never_reports_is_given_up() {
        let t = Targets::new(settings());
        fail(&t, "k", 3);
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(
            t.admit("k").is_ok(),
            "the probe (its request is then cancelled)"
        );
        tokio::time::advance(Duration::from_secs(4)).await;
        assert!(t.admit("k").is_err());
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(t.admit("k").is_ok(), "another probe");
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_probe_opens_again() {
        let t = Targets::new(settings());
        fail(&t, "k", 3);
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(t.admit("k").is_ok());
        fail(&t, "k", 1);
        assert_eq!(t.admit("k"), Err(Duration::from_secs(5)));
        assert_eq!(t.snapshot()[0]["times_opened"], 2);
    }

    #[tokio::test(start_paused = true)]
    async fn the_error_rate_over_the_window_opens() {
        let t = Targets::new(settings());
        // Alternating: never 3 in a row, but 6 of 11 calls failed.
        for i in 0..11 {
            let o = if i % 2 == 0 {
                Outcome::Failure
            } else {
                Outcome::Success
            };
            assert!(t.admit("k").is_ok(), "call {i}");
            t.record("k", o, Duration::ZERO);
            tokio::time::advance(Duration::from_millis(100)).await;
        }
        assert!(t.admit("k").is_err());

        // Spread past the window, the same calls do not open it.
        let t = Targets::new(settings());
        for i in 0..12 {
            let o = if i % 2 == 0 {
                Outcome::Failure
            } else {
                Outcome::Success
            };
            t.record("k", o, Duration::ZERO);
            tokio::time::advance(Duration::from_secs(3)).await;
        }
        assert!(t.admit("k").is_ok());
    }

    #[test]
    fn the_map_is_bounded_and_keeps_what_matters() {
        let t = Targets::new(settings());
        fail(&t, "failing", 3);
        let busy = t.start("busy");
        for i in 0..CAPACITY + 10 {
            t.record(&format!("quiet-{i}"), Outcome::Success, Duration::ZERO);
        }
        assert!(t.len() <= CAPACITY);
        assert!(t.get("failing").circuit_open, "an open circuit is kept");
        assert_eq!(t.get("busy").in_flight, 1, "a target in use is kept");
        drop(busy);
    }

    #[test]
    fn prometheus_text_has_every_target() {
        let t = Targets::new(settings());
        fail(&t, "bad \"one\"", 3);
        t.record("good", Outcome::Success, Duration::ZERO);
        let _held = t.start("good");
        let mut out = String::new();
        t.prometheus(&mut out);
        for line in [
            "# TYPE sluice_circuit_state gauge",
            "sluice_circuit_state{target=\"bad \\\"one\\\"\"} 2",
            "sluice_circuit_state{target=\"good\"} 0",
            "sluice_circuit_opened_total{target=\"bad \\\"one\\\"\"} 1",
            "sluice_target_in_flight{target=\"good\"} 1",
            "sluice_target_calls_total{target=\"good\"} 1",
            "sluice_target_failures_total{target=\"bad \\\"one\\\"\"} 3",
        ] {
            assert!(out.lines().any(|l| l == line), "missing `{line}` in\n{out}");
        }
    }

    #[test]
    fn disabled_breakers_never_refuse() {
        let t = Targets::new(BreakerSettings {
            enabled: false,
            ..settings()
        });
        fail(&t, "k", 50);
        assert!(t.admit("k").is_ok());
        assert!(!t.get("k").circuit_open);
    }

    #[test]
    fn keys_name_the_upstream_and_only_fingerprint_the_secret() {
        let a = key("openai", None, Some("gpt-4o"), Some("sk-secret-1"));
        let b = key("openai", None, Some("gpt-4o"), Some("sk-secret-2"));
        assert_ne!(a, b);
        assert!(a.starts_with("openai gpt-4o key:"));
        assert!(!a.contains("secret"));
        assert_eq!(
            key("mock", Some("http://127.0.0.1:9/v1?x=1"), None, None),
            "mock http://127.0.0.1:9/v1"
        );
    }
}
