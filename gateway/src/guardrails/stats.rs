//! Every check's outcomes and latency, by check id and stage, for `/metrics`:
//! `sluice_guardrail_checks_total{check,stage,result}` (pass, fail, error) and
//! `sluice_guardrail_check_duration_seconds{check,stage}` (sum and count).
//! Check ids come from configs, which clients may send: past
//! [`MAX_SERIES`] ids the rest are counted under `check="other"`.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

pub const PASS: usize = 0;
pub const FAIL: usize = 1;
pub const ERROR: usize = 2;
const RESULTS: [&str; 3] = ["pass", "fail", "error"];

/// How many (check, stage) series are kept apart.
const MAX_SERIES: usize = 512;

#[derive(Debug, Default, Clone, Copy)]
struct Series {
    counts: [u64; 3],
    seconds: f64,
}

/// Shared by every worker.
#[derive(Debug, Default)]
pub struct Stats {
    series: Mutex<BTreeMap<(String, &'static str), Series>>,
}

impl Stats {
    /// Counts one check run.
    pub fn record(&self, check: &str, stage: &'static str, result: usize, took: Duration) {
        let mut series = self.series.lock().unwrap_or_else(|e| e.into_inner());
        let key = (check.to_owned(), stage);
        let key = if series.contains_key(&key) || series.len() < MAX_SERIES {
            key
        } else {
            ("other".to_owned(), stage)
        };
        let s = series.entry(key).or_default();
        s.counts[result.min(ERROR)] += 1;
        s.seconds += took.as_secs_f64();
    }

    /// The series in Prometheus' text format.
    pub fn prometheus(&self, out: &mut String) {
        use std::fmt::Write as _;
        let series = self.series.lock().unwrap_or_else(|e| e.into_inner());
        let label = crate::telemetry::prometheus_label;
        out.push_str("# HELP sluice_guardrail_checks_total Guardrail check runs by outcome.\n");
        out.push_str("# TYPE sluice_guardrail_checks_total counter\n");
        for ((check, stage), s) in series.iter() {
            for (i, result) in RESULTS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "sluice_guardrail_checks_total{{check=\"{}\",stage=\"{stage}\",result=\"{result}\"}} {}",
                    label(check),
                    s.counts[i]
                );
            }
        }
        out.push_str(
            "# HELP sluice_guardrail_check_duration_seconds Time spent in guardrail checks.\n",
        );
        out.push_str("# TYPE sluice_guardrail_check_duration_seconds summary\n");
        for ((check, stage), s) in series.iter() {
            let check = label(check);
            let _ = writeln!(
                out,
                "sluice_guardrail_check_duration_seconds_sum{{check=\"{check}\",stage=\"{stage}\"}} {}",
                s.seconds
            );
            let _ = writeln!(
                out,
                "sluice_guardrail_check_duration_seconds_count{{check=\"{check}\",stage=\"{stage}\"}} {}",
                s.counts.iter().sum::<u64>()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_and_time_are_counted_per_check_and_stage_within_a_bound() {
        let stats = Stats::default();
        let ms = Duration::from_millis(2);
        stats.record("default.blocklist", "before_request", PASS, ms);
        stats.record("default.blocklist", "before_request", FAIL, ms);
        stats.record("default.blocklist", "after_request", ERROR, ms);
        stats.record("we\"ird", "before_request", PASS, ms);
        let mut out = String::new();
        stats.prometheus(&mut out);
        assert!(out.contains("sluice_guardrail_checks_total{check=\"default.blocklist\",stage=\"before_request\",result=\"pass\"} 1\n"), "{out}");
        assert!(out.contains("sluice_guardrail_checks_total{check=\"default.blocklist\",stage=\"before_request\",result=\"fail\"} 1\n"));
        assert!(out.contains("sluice_guardrail_checks_total{check=\"default.blocklist\",stage=\"after_request\",result=\"error\"} 1\n"));
        assert!(out.contains("sluice_guardrail_check_duration_seconds_count{check=\"default.blocklist\",stage=\"before_request\"} 2\n"));
        assert!(out.contains("sluice_guardrail_check_duration_seconds_sum{check=\"default.blocklist\",stage=\"before_request\"} 0.004\n"), "{out}");
        assert!(out.contains("check=\"we\\\"ird\""));
        for i in 0..MAX_SERIES + 5 {
            stats.record(&format!("c{i}"), "before_request", PASS, ms);
        }
        let series = stats.series.lock().expect("lock");
        assert!(series.len() <= MAX_SERIES + 2, "{}", series.len());
        assert!(series.contains_key(&("other".to_owned(), "before_request")));
    }
}
