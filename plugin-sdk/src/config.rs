//! Typed per-use configuration: parsed from the JSON text the host passes, and
//! kept parsed between calls of the same configuration.

use std::cell::RefCell;

use serde::de::DeserializeOwned;

/// Parses a configuration. An empty text means `{}` (a use with no parameters).
pub fn parse_config<T: DeserializeOwned>(text: &str) -> Result<T, String> {
    let text = if text.trim().is_empty() { "{}" } else { text };
    serde_json::from_str(text).map_err(|e| format!("invalid configuration: {e}"))
}

/// How many configurations a [`ConfigCache`] keeps parsed (a component that
/// serves several checks sees several at once).
const KEPT: usize = 16;

/// The configurations parsed most recently, kept so that repeated calls with
/// the same configuration (the usual case) do not parse it again.
pub struct ConfigCache<T> {
    kept: RefCell<Vec<(String, std::rc::Rc<T>)>>,
}

impl<T> Default for ConfigCache<T> {
    fn default() -> Self {
        Self {
            kept: RefCell::new(Vec::new()),
        }
    }
}

impl<T: DeserializeOwned> ConfigCache<T> {
    /// The parsed form of `text`, from the cache when it was seen lately.
    pub fn get(&self, text: &str) -> Result<std::rc::Rc<T>, String> {
        let mut kept = self.kept.borrow_mut();
        if let Some(at) = kept.iter().position(|(seen, _)| seen == text) {
            let hit = kept.remove(at);
            let parsed = hit.1.clone();
            kept.insert(0, hit);
            return Ok(parsed);
        }
        let parsed = std::rc::Rc::new(parse_config::<T>(text)?);
        kept.insert(0, (text.to_owned(), parsed.clone()));
        kept.truncate(KEPT);
        Ok(parsed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug, PartialEq)]
    struct C {
        #[serde(default)]
        n: u32,
    }

    #[test]
    fn empty_means_no_parameters_and_errors_say_why() {
        assert_eq!(parse_config::<C>(""), Ok(C { n: 0 }));
        let err = parse_config::<C>("{\"n\": \"x\"}").expect_err("wrong type");
        assert!(err.contains("invalid configuration"), "{err}");
        let cache = ConfigCache::<C>::default();
        assert_eq!(cache.get("{\"n\":2}").map(|c| c.n), Ok(2));
        assert_eq!(cache.get("{\"n\":2}").map(|c| c.n), Ok(2));
        assert_eq!(cache.get("{\"n\":3}").map(|c| c.n), Ok(3));
        // Several configurations stay parsed, the least recent going first.
        for n in 0..20 {
            assert_eq!(cache.get(&format!("{{\"n\":{n}}}")).map(|c| c.n), Ok(n));
        }
        assert_eq!(cache.kept.borrow().len(), KEPT);
        assert_eq!(cache.kept.borrow()[0].0, "{\"n\":19}");
    }
}
