//! Typed per-use configuration: parsed from the JSON text the host passes, and
//! kept parsed between calls of the same configuration.

use std::cell::RefCell;

use serde::de::DeserializeOwned;

/// Parses a configuration. An empty text means `{}` (a use with no parameters).
pub fn parse_config<T: DeserializeOwned>(text: &str) -> Result<T, String> {
    let text = if text.trim().is_empty() { "{}" } else { text };
    serde_json::from_str(text).map_err(|e| format!("invalid configuration: {e}"))
}

/// The last configuration parsed, kept so that repeated calls with the same
/// configuration (the usual case) do not parse it again.
pub struct ConfigCache<T> {
    last: RefCell<Option<(String, std::rc::Rc<T>)>>,
}

impl<T> Default for ConfigCache<T> {
    fn default() -> Self {
        Self {
            last: RefCell::new(None),
        }
    }
}

impl<T: DeserializeOwned> ConfigCache<T> {
    /// The parsed form of `text`, from the cache when it is the last one seen.
    pub fn get(&self, text: &str) -> Result<std::rc::Rc<T>, String> {
        if let Some((seen, parsed)) = &*self.last.borrow()
            && seen == text
        {
            return Ok(parsed.clone());
        }
        let parsed = std::rc::Rc::new(parse_config::<T>(text)?);
        *self.last.borrow_mut() = Some((text.to_owned(), parsed.clone()));
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
    }
}
