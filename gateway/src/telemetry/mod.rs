//! Telemetry: log set-up. Logs go to stderr as human-readable lines or JSON, with
//! the level from `SLUICE_LOG` (or `RUST_LOG`), else the config's `log.level`;
//! `SLUICE_LOG_FORMAT=json|human` overrides the config's `log.format`.
//!
//! Secrets stay out by construction: request and response headers are never
//! logged, keys are [`crate::config::Secret`]s that print `[redacted]`, upstream
//! auth headers are marked sensitive, and transport errors are logged without URLs.

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber. Call once, from `main`.
pub fn init(format: LogFormat, level: &str) -> Result<(), String> {
    let directive = std::env::var("SLUICE_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| level.to_owned());
    // The HTTP stacks are noisy below warn and say nothing an operator needs.
    let filter = EnvFilter::try_new(format!(
        "{directive},hyper=warn,hyper_util=warn,h2=warn,rustls=warn,reqwest=warn"
    ))
    .map_err(|e| format!("invalid log filter `{directive}`: {e}"))?;
    let format = match std::env::var("SLUICE_LOG_FORMAT").as_deref() {
        Ok("json") => LogFormat::Json,
        Ok("human") => LogFormat::Human,
        _ => format,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
        LogFormat::Human => builder.with_ansi(false).try_init(),
    };
    result.map_err(|e| e.to_string())
}

/// A Prometheus label value: backslash, quote and newline escaped.
pub fn prometheus_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
