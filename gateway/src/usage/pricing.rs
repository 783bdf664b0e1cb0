//! What tokens cost: the price list shipped as data (`pricing.toml`),
//! overridden and extended by the server config's `[[pricing]]` entries.

use std::collections::HashMap;
use std::sync::RwLock;

use super::Tokens;

/// US dollars per million tokens.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Price {
    pub input: f64,
    pub output: f64,
    /// A prompt token read from the provider's cache.
    pub cached_input: f64,
}

impl Price {
    /// The cost of `tokens` in US dollars.
    pub fn cost(&self, tokens: &Tokens) -> f64 {
        let cached = tokens.cached.min(tokens.input);
        ((tokens.input - cached) as f64 * self.input
            + cached as f64 * self.cached_input
            + tokens.output as f64 * self.output)
            / 1_000_000.0
    }
}

/// A `[[pricing]]` entry: one model's price, on one provider or any.
#[derive(Debug, Clone, PartialEq)]
pub struct PriceEntry {
    pub provider: Option<String>,
    pub model: String,
    pub price: Price,
}

/// Prices by provider and model.
#[derive(Debug, Default)]
pub struct Pricing {
    /// The config's entries, looked at first.
    overrides: Vec<PriceEntry>,
    /// The shipped list, by provider, in the file's order.
    tables: Vec<(String, HashMap<String, Price>)>,
    /// What [`Pricing::price`] found, by provider and model: finding walks
    /// the lists (every one, for a model no list has), and every answer
    /// asks. Emptied when it holds [`MAX_FOUND`] models.
    found: RwLock<HashMap<String, HashMap<String, Option<Price>>>>,
}

/// Models whose prices are remembered at most (clients name the models).
const MAX_FOUND: usize = 4096;

const BUILT_IN: &str = include_str!("pricing.toml");

impl Pricing {
    /// The shipped list with the config's entries over it.
    pub fn new(overrides: Vec<PriceEntry>) -> Self {
        Self {
            overrides,
            tables: built_in(),
            found: RwLock::default(),
        }
    }

    /// The price of `model` on `provider`: a config entry for the provider,
    /// then one for any provider, then the shipped list's table for the
    /// provider, then the first table that lists the model.
    pub fn price(&self, provider: &str, model: &str) -> Option<Price> {
        let found = |f: &HashMap<String, HashMap<String, Option<Price>>>| {
            f.get(provider)?.get(model).copied()
        };
        if let Some(price) = found(&self.found.read().unwrap_or_else(|e| e.into_inner())) {
            return price;
        }
        let price = self.find(provider, model);
        let mut found = self.found.write().unwrap_or_else(|e| e.into_inner());
        if found.values().map(HashMap::len).sum::<usize>() >= MAX_FOUND {
            found.clear();
        }
        found
            .entry(provider.to_owned())
            .or_default()
            .insert(model.to_owned(), price);
        price
    }

    fn find(&self, provider: &str, model: &str) -> Option<Price> {
        let model = bare(model);
        let best = |entries: &mut dyn Iterator<Item = (&str, Price)>| {
            entries
                .filter_map(|(name, price)| stamped(name, model).then_some((name.len(), price)))
                .max_by_key(|(len, _)| *len)
                .map(|(_, price)| price)
        };
        let config = |on_provider: bool| {
            best(&mut self.overrides.iter().filter_map(|e| {
                (e.provider.as_deref().is_some_and(|p| p == provider) == on_provider
                    && (on_provider || e.provider.is_none()))
                .then_some((e.model.as_str(), e.price))
            }))
        };
        config(true)
            .or_else(|| config(false))
            .or_else(|| {
                self.tables
                    .iter()
                    .filter(|(p, _)| p == provider)
                    .find_map(|(_, t)| best(&mut t.iter().map(|(m, p)| (m.as_str(), *p))))
            })
            .or_else(|| {
                self.tables
                    .iter()
                    .find_map(|(_, t)| best(&mut t.iter().map(|(m, p)| (m.as_str(), *p))))
            })
    }

    /// The cost of `tokens` of `model` on `provider`, if it is priced.
    pub fn cost(&self, provider: &str, model: &str, tokens: &Tokens) -> Option<f64> {
        self.price(provider, model).map(|p| p.cost(tokens))
    }
}

/// The model's own name: without a router's `vendor/` prefix (OpenRouter)
/// or Bedrock's `us.anthropic.` region and vendor prefixes.
fn bare(model: &str) -> &str {
    let mut model = model.rsplit('/').next().unwrap_or(model);
    while let Some((head, rest)) = model.split_once('.')
        && !head.is_empty()
        && head.bytes().all(|b| b.is_ascii_lowercase())
    {
        model = rest;
    }
    model
}

/// Whether `model` is `listed`, or `listed` with a version stamp after it
/// (`-2024-08-06`, `-20250929`, `@20241022`, `-latest`, `-v1:0`).
fn stamped(listed: &str, model: &str) -> bool {
    let Some(rest) = model.strip_prefix(listed) else {
        return false;
    };
    let Some(stamp) = rest.strip_prefix('-').or_else(|| rest.strip_prefix('@')) else {
        return rest.is_empty();
    };
    !stamp.is_empty()
        && stamp.split('-').all(|part| {
            let version = part.strip_prefix('v').unwrap_or(part);
            part == "latest"
                || (!version.is_empty() && version.bytes().all(|b| b.is_ascii_digit() || b == b':'))
        })
}

fn built_in() -> Vec<(String, HashMap<String, Price>)> {
    #[derive(serde::Deserialize)]
    struct Entry {
        input: f64,
        output: f64,
        cached_input: Option<f64>,
    }
    // A unit test parses the file: a broken list fails the build's tests, so
    // a parse error here leaves the list empty rather than panicking.
    let Ok(doc) = toml::from_str::<toml::Table>(BUILT_IN) else {
        return Vec::new();
    };
    doc.into_iter()
        .filter_map(|(provider, table)| {
            let entries: HashMap<String, Entry> = table.try_into().ok()?;
            let prices = entries
                .into_iter()
                .map(|(model, e)| {
                    let price = Price {
                        input: e.input,
                        output: e.output,
                        cached_input: e.cached_input.unwrap_or(e.input),
                    };
                    (model, price)
                })
                .collect();
            Some((provider, prices))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_list_parses_whole() {
        let doc: toml::Table = toml::from_str(BUILT_IN).expect("pricing.toml is TOML");
        let tables = built_in();
        assert_eq!(tables.len(), doc.len(), "every provider table reads");
        for (provider, table) in &doc {
            let parsed = tables.iter().find(|(p, _)| p == provider).expect("table");
            assert_eq!(
                parsed.1.len(),
                table.as_table().expect("a table").len(),
                "{provider}"
            );
        }
    }

    #[test]
    fn models_are_priced_by_name_and_version_stamp() {
        let p = Pricing::new(Vec::new());
        let price = |provider, model| p.price(provider, model).map(|p| (p.input, p.output));
        assert_eq!(price("openai", "gpt-4o"), Some((2.5, 10.0)));
        assert_eq!(price("openai", "gpt-4o-2024-08-06"), Some((2.5, 10.0)));
        // A longer name is another model, not a version of a shorter one.
        assert_eq!(price("openai", "gpt-4o-mini-2024-07-18"), Some((0.15, 0.6)));
        assert_eq!(price("openai", "gpt-4o-audio-preview"), None);
        assert_eq!(
            price("anthropic", "claude-sonnet-4-5-20250929"),
            Some((3.0, 15.0))
        );
        assert_eq!(
            price("vertex-ai", "claude-3-5-haiku@20241022"),
            Some((0.8, 4.0))
        );
        assert_eq!(
            price("bedrock", "us.anthropic.claude-3-5-sonnet-20240620-v1:0"),
            Some((3.0, 15.0))
        );
        assert_eq!(price("openrouter", "openai/gpt-4.1-mini"), Some((0.4, 1.6)));
        assert_eq!(price("azure-openai", "gpt-4o"), Some((2.5, 10.0)));
        assert_eq!(
            price("mistral-ai", "mistral-large-latest"),
            Some((2.0, 6.0))
        );
        assert_eq!(price("openai", "mock-model"), None);
    }

    #[test]
    fn prices_found_are_remembered_within_a_bound() {
        let p = Pricing::new(Vec::new());
        for _ in 0..2 {
            assert_eq!(p.price("openai", "gpt-4o").map(|p| p.input), Some(2.5));
            assert_eq!(p.price("openai", "no-such-model"), None);
        }
        for i in 0..MAX_FOUND + 10 {
            assert_eq!(p.price("mock", &format!("m{i}")), None);
        }
        let held: usize = p
            .found
            .read()
            .expect("lock")
            .values()
            .map(HashMap::len)
            .sum();
        assert!(held <= MAX_FOUND, "{held}");
        assert_eq!(p.price("openai", "gpt-4o").map(|p| p.input), Some(2.5));
    }

    #[test]
    fn config_entries_win_for_their_provider() {
        let entry = |provider: Option<&str>, input| PriceEntry {
            provider: provider.map(str::to_owned),
            model: "gpt-4o".into(),
            price: Price {
                input,
                output: 1.0,
                cached_input: input,
            },
        };
        let p = Pricing::new(vec![entry(Some("azure-openai"), 3.0), entry(None, 2.0)]);
        assert_eq!(
            p.price("azure-openai", "gpt-4o").map(|p| p.input),
            Some(3.0)
        );
        assert_eq!(p.price("openai", "gpt-4o").map(|p| p.input), Some(2.0));
    }

    #[test]
    fn cost_splits_cached_input() {
        let price = Price {
            input: 2.0,
            output: 10.0,
            cached_input: 0.5,
        };
        let tokens = Tokens {
            input: 1_000_000,
            output: 100_000,
            cached: 400_000,
        };
        // 600k × $2 + 400k × $0.5 + 100k × $10, per million.
        assert!((price.cost(&tokens) - 2.4).abs() < 1e-9);
    }
}
