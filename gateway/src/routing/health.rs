//! What the gateway has seen of each target lately — calls, calls in flight,
//! smoothed error rate and latency — for routers (and, with the routing engine,
//! circuit breakers and least-latency balancing). Keyed by the target's path in
//! its config and its provider, shared by every worker.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// Weight of the newest observation in the moving averages.
const ALPHA: f64 = 0.2;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct TargetHealth {
    pub requests: u64,
    pub in_flight: u32,
    pub error_rate: f64,
    pub latency_ms: Option<f64>,
}

#[derive(Debug, Default)]
pub struct Health {
    targets: Mutex<HashMap<String, TargetHealth>>,
}

impl Health {
    pub fn key(path: &str, provider: &str) -> String {
        format!("{path}#{provider}")
    }

    pub fn get(&self, key: &str) -> TargetHealth {
        self.targets
            .lock()
            .ok()
            .and_then(|t| t.get(key).cloned())
            .unwrap_or_default()
    }

    /// A call to the target starts.
    pub fn start(&self, key: &str) {
        if let Ok(mut t) = self.targets.lock() {
            let h = t.entry(key.to_owned()).or_default();
            h.in_flight += 1;
            h.requests += 1;
        }
    }

    /// A call ended, well or not, after `took`.
    pub fn end(&self, key: &str, ok: bool, took: Duration) {
        if let Ok(mut t) = self.targets.lock() {
            let h = t.entry(key.to_owned()).or_default();
            h.in_flight = h.in_flight.saturating_sub(1);
            let failed = if ok { 0.0 } else { 1.0 };
            h.error_rate = h.error_rate * (1.0 - ALPHA) + failed * ALPHA;
            let ms = took.as_secs_f64() * 1000.0;
            h.latency_ms = Some(match h.latency_ms {
                Some(avg) => avg * (1.0 - ALPHA) + ms * ALPHA,
                None => ms,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn averages_move_toward_what_is_seen() {
        let h = Health::default();
        h.start("a");
        assert_eq!(h.get("a").in_flight, 1);
        h.end("a", false, Duration::from_millis(100));
        let seen = h.get("a");
        assert_eq!((seen.in_flight, seen.requests), (0, 1));
        assert_eq!(seen.latency_ms, Some(100.0));
        assert!((seen.error_rate - ALPHA).abs() < 1e-9);
        h.end("a", true, Duration::from_millis(0));
        assert!(h.get("a").latency_ms.is_some_and(|l| l < 100.0));
    }
}
