//! Parsed `x-portkey-config` JSON, by its text.
//!
//! Clients send the same config with every request; parsing and validating it
//! costs ~5 µs (criterion: `plan/config_header`), a lookup well under one. Only
//! valid configs are kept. The cache is bounded: when full it is emptied, so a
//! client that sends a new config every time costs a clear now and then, nothing
//! more. One cache per worker, so the lock is never contended.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::GatewayError;
use crate::config::RoutingConfig;

const CAPACITY: usize = 256;

/// Valid configs by header text.
#[derive(Debug, Default)]
pub struct ConfigCache {
    entries: Mutex<HashMap<Box<str>, Arc<RoutingConfig>>>,
}

impl ConfigCache {
    /// The config for `text`, parsed by `parse` on a miss.
    pub fn get_or_parse(
        &self,
        text: &str,
        parse: impl FnOnce() -> Result<RoutingConfig, GatewayError>,
    ) -> Result<Arc<RoutingConfig>, GatewayError> {
        if let Some(hit) = self.entries.lock().ok().and_then(|e| e.get(text).cloned()) {
            return Ok(hit);
        }
        let parsed = Arc::new(parse()?);
        if let Ok(mut entries) = self.entries.lock() {
            if entries.len() >= CAPACITY {
                entries.clear();
            }
            entries.insert(text.into(), parsed.clone());
        }
        Ok(parsed)
    }

    /// How many configs are held.
    pub fn len(&self) -> usize {
        self.entries.lock().map_or(0, |e| e.len())
    }

    /// Whether none are held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::routing::parse_json;

    fn parse(text: &str) -> Result<RoutingConfig, GatewayError> {
        parse_json(text, &|s| s == "openai").map_err(GatewayError::InvalidConfig)
    }

    #[test]
    fn valid_configs_are_parsed_once_and_invalid_ones_never_kept() {
        let cache = ConfigCache::default();
        let text = r#"{"provider":"openai"}"#;
        let mut parses = 0;
        for _ in 0..3 {
            cache
                .get_or_parse(text, || {
                    parses += 1;
                    parse(text)
                })
                .expect("valid");
        }
        assert_eq!(parses, 1);
        let bad = r#"{"provider":"nope"}"#;
        assert!(cache.get_or_parse(bad, || parse(bad)).is_err());
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn a_full_cache_starts_over() {
        let cache = ConfigCache::default();
        for i in 0..CAPACITY + 1 {
            let text = format!(r#"{{"provider":"openai","name":"c{i}"}}"#);
            cache.get_or_parse(&text, || parse(&text)).expect("valid");
        }
        assert_eq!(cache.len(), 1);
    }
}
