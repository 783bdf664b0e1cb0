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
    // The HTTP stacks are noisy below warn and say nothing an operator needs;
    // hnsw_rs logs every graph it builds at info.
    let filter = EnvFilter::try_new(format!(
        "{directive},hyper=warn,hyper_util=warn,h2=warn,rustls=warn,reqwest=warn,hnsw_rs=warn"
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

/// Whether a JSON field's name says its value is a credential (`api_key`,
/// `client_secret`, `authorization`, `access_token`, `password`, ...).
pub fn names_secret(name: &str) -> bool {
    let name = name.to_ascii_lowercase().replace('-', "_");
    name == "key"
        || name == "token"
        || name.ends_with("_key")
        || name.ends_with("apikey")
        || name.ends_with("_token")
        || name.contains("secret")
        || name.contains("password")
        || name.contains("authorization")
        || name.contains("credential")
}

/// `text` with key-shaped strings replaced by `[REDACTED]`: OpenAI and
/// Anthropic keys (`sk-…`), gateway keys (`slk_…`), Groq keys, AWS access key
/// ids, Google API keys and bearer tokens.
pub fn redact_secrets(text: &str) -> String {
    static SECRET: std::sync::LazyLock<Option<regex::Regex>> = std::sync::LazyLock::new(|| {
        regex::Regex::new(
            r"\b(?:sk-[A-Za-z0-9_\-]{16,}|slk_[A-Za-z0-9_\-]{20,}|gsk_[A-Za-z0-9]{20,}|AKIA[0-9A-Z]{16}|AIza[0-9A-Za-z_\-]{35}|(?i:bearer)\s+[A-Za-z0-9._~+/\-]{16,}=*)",
        )
        .ok()
    });
    match &*SECRET {
        Some(re) => re.replace_all(text, "[REDACTED]").into_owned(),
        // The pattern is a constant, tested below; were it ever not to
        // compile, nothing is kept rather than a secret.
        None => "[REDACTED]".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_recognised_by_name_and_shape() {
        for name in [
            "api_key",
            "apiKey",
            "x-api-key",
            "client_secret",
            "Authorization",
            "access_token",
            "token",
            "aws_secret_access_key",
        ] {
            assert!(names_secret(name), "{name}");
        }
        for name in ["max_tokens", "model", "keywords", "messages", "monkey"] {
            assert!(!names_secret(name), "{name}");
        }
        let text = "use sk-ant-api03-abcdefghijklmnopqrstu or slk_AAAAAAAAAAAAAAAAAAAAAAAA, \
                    Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.e30.x and AKIAABCDEFGHIJKLMNOP; sk-short";
        let clean = redact_secrets(text);
        assert_eq!(
            clean,
            "use [REDACTED] or [REDACTED], Authorization: [REDACTED] and [REDACTED]; sk-short"
        );
    }
}
