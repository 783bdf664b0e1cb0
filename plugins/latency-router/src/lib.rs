//! `latency-router`: orders targets by their smoothed observed latency, fastest
//! first. Targets never tried come first (so that every target gets measured),
//! targets whose error rate is above `max_error_rate` go after the healthy ones,
//! and targets whose circuit is open go last.
//!
//! ```json
//! {"strategy": {"mode": "router", "router": "latency-router", "parameters": {"max_error_rate": 0.5}}}
//! ```

use serde::Deserialize;
use sluice_plugin_sdk::router::*;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default = "default_max_error_rate")]
    max_error_rate: f64,
}

fn default_max_error_rate() -> f64 {
    0.5
}

struct LatencyRouter;

impl Router for LatencyRouter {
    type Config = Config;
    const DESCRIPTION: &'static str =
        "Lowest observed latency first; untried targets are measured first";
    const CONFIG_SCHEMA: &'static str = r#"{"type":"object","additionalProperties":false,"properties":{"max_error_rate":{"type":"number","minimum":0,"maximum":1}}}"#;

    fn validate(config: &Config) -> Result<(), Error> {
        if !(0.0..=1.0).contains(&config.max_error_rate) {
            return Err(Error::InvalidConfig(
                "`max_error_rate` must be within [0, 1]".into(),
            ));
        }
        Ok(())
    }

    fn route(config: &Config, input: &RouteInput) -> Result<Vec<u32>, Error> {
        let mut ranked: Vec<&Candidate> = input.candidates.iter().collect();
        ranked.sort_by(|a, b| {
            let key = |c: &Candidate| {
                (
                    c.circuit_open,
                    c.error_rate > config.max_error_rate,
                    c.latency_ms.unwrap_or(-1.0),
                    c.in_flight,
                )
            };
            let (ka, kb) = (key(a), key(b));
            ka.0.cmp(&kb.0)
                .then(ka.1.cmp(&kb.1))
                .then(ka.2.total_cmp(&kb.2))
                .then(ka.3.cmp(&kb.3))
                .then(a.index.cmp(&b.index))
        });
        Ok(ranked.into_iter().map(|c| c.index).collect())
    }
}

sluice_plugin_sdk::export_router!(LatencyRouter);
