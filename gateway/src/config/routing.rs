//! Portkey's routing config — the JSON sent in `x-portkey-config`, or written
//! under `[configs.NAME]` in the server's TOML file with the same field names.
//!
//! The whole schema is validated here, at any depth, and every problem is
//! reported with its path. Execution of the strategy tree lives in `routing`.
//!
//! Unknown fields are refused, with one exception decided on purpose: Portkey's
//! provider-specific settings (`azure_*`, `aws_*`, `vertex_*`, `openai_*`,
//! `anthropic_*`, ...) and the Azure trio `resource_name`, `deployment_id`,
//! `api_version` are kept in [`Target::provider_options`] for the adapters, so a
//! config written for Portkey keeps working as adapters for those providers land.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use super::Secret;
use super::reader::{Obj, Problems, join};

/// Strategy modes Portkey defines.
/// Portkey's modes, plus `router`: a router plugin orders the targets
/// (`strategy: {"mode": "router", "router": "latency-router", "parameters": {...}}`).
pub const MODES: &[&str] = &["single", "fallback", "loadbalance", "conditional", "router"];

const NODE_FIELDS: &[&str] = &[
    "strategy",
    "targets",
    "name",
    "weight",
    "on_status_codes",
    "provider",
    "api_key",
    "virtual_key",
    "custom_host",
    "override_params",
    "request_timeout",
    "total_timeout",
    "stream_idle_timeout",
    "forward_headers",
    "retry",
    "cache",
    "strict_open_ai_compliance",
    "before_request_hooks",
    "after_request_hooks",
    "input_guardrails",
    "output_guardrails",
    "input_mutators",
    "output_mutators",
    "stream_guardrails",
];

/// Prefixes of provider-specific target settings, kept for the adapters.
const PROVIDER_OPTION_PREFIXES: &[&str] = &[
    "azure_",
    "aws_",
    "vertex_",
    "openai_",
    "anthropic_",
    "google_",
    "bedrock_",
    "sagemaker_",
    "workers_ai_",
    "fireworks_",
    "mistral_",
    "huggingface_",
    "hugging_face_",
    "snowflake_",
    "oracle_",
    "stability_",
];
const PROVIDER_OPTION_NAMES: &[&str] = &["resource_name", "deployment_id", "api_version"];

/// Whether `key` is a provider-specific setting rather than a typo.
pub fn is_provider_option(key: &str) -> bool {
    PROVIDER_OPTION_NAMES.contains(&key)
        || PROVIDER_OPTION_PREFIXES.iter().any(|p| key.starts_with(p))
}

/// A validated routing config: one node, which may hold a strategy and targets.
///
/// Inheritance is resolved when the config is validated: every node's
/// [`Node::inherit`] holds its effective settings, so requests never merge.
#[derive(Debug, Clone, PartialEq)]
pub struct RoutingConfig {
    pub root: Node,
    /// Sluice's `total_timeout` (ms, top level only): a deadline for the whole
    /// request across retries and fallbacks.
    pub total_timeout_ms: Option<u64>,
}

/// Load-balancing policies (`strategy.balance`, Sluice's extension).
pub const BALANCE: &[&str] = &["weighted", "least_latency", "least_in_flight"];

/// A node of the strategy tree: a strategy over targets, or a single target.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub strategy: Option<Strategy>,
    pub targets: Vec<Node>,
    /// Referenced by `conditional` strategies.
    pub name: Option<String>,
    /// Load-balancing weight (default 1).
    pub weight: f64,
    /// Portkey's per-target `on_status_codes`.
    pub on_status_codes: Option<Vec<u16>>,
    pub target: Target,
    /// Settings children inherit unless they set their own.
    pub inherit: Inherited,
}

/// What a leaf needs to call a provider. Never inherited (credentials stay put).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Target {
    pub provider: Option<String>,
    pub api_key: Option<Secret>,
    pub virtual_key: Option<String>,
    pub provider_options: Map<String, Value>,
}

/// Settings passed from parent to child.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Inherited {
    pub custom_host: Option<String>,
    pub request_timeout_ms: Option<u64>,
    /// Sluice's `stream_idle_timeout` (ms): the longest gap between two chunks
    /// of a stream before it is ended with an error event.
    pub stream_idle_timeout_ms: Option<u64>,
    pub forward_headers: Option<Vec<String>>,
    pub retry: Option<Retry>,
    pub cache: Option<Cache>,
    pub strict_open_ai_compliance: Option<bool>,
    /// Merged parent → child, child wins per key.
    pub override_params: Map<String, Value>,
    pub hooks: Hooks,
}

/// `strategy: {mode, on_status_codes, conditions, default, balance}`.
#[derive(Debug, Clone, PartialEq)]
pub struct Strategy {
    pub mode: &'static str,
    /// For `loadbalance`: one of [`BALANCE`] (default `weighted`).
    pub balance: &'static str,
    pub on_status_codes: Option<Vec<u16>>,
    pub conditions: Vec<Condition>,
    pub default: Option<String>,
    /// For `router`: the router plugin's name and its parameters.
    pub router: Option<String>,
    pub parameters: Option<Value>,
}

/// One rule of a conditional strategy.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    pub query: Query,
    pub then: String,
}

/// `retry: {attempts, on_status_codes, use_retry_after_header}`, plus Sluice's
/// backoff settings `backoff_base_ms`, `backoff_max_ms`, `max_retry_after_ms`.
#[derive(Debug, Clone, PartialEq)]
pub struct Retry {
    /// Retries after the first try (0 to 10).
    pub attempts: u32,
    pub on_status_codes: Option<Vec<u16>>,
    pub use_retry_after_header: bool,
    /// Full-jitter exponential backoff: retry `n` waits a random time up to
    /// `min(backoff_max_ms, backoff_base_ms * 2^n)`.
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
    /// A `Retry-After` longer than this ends the retries (Portkey: 60 s).
    pub max_retry_after_ms: u64,
}

impl Retry {
    /// The most retries a config may ask for.
    pub const MAX_ATTEMPTS: u32 = 10;
    /// Portkey's retry statuses when `on_status_codes` is not given.
    pub const DEFAULT_STATUS_CODES: &'static [u16] = &[429, 500, 502, 503, 504];

    /// `attempts` retries with the default settings.
    pub fn attempts(attempts: u32) -> Self {
        Self {
            attempts: attempts.min(Self::MAX_ATTEMPTS),
            on_status_codes: None,
            use_retry_after_header: false,
            backoff_base_ms: 250,
            backoff_max_ms: 10_000,
            max_retry_after_ms: 60_000,
        }
    }

    /// Whether an answer with `status` is retried.
    pub fn retries(&self, status: u16) -> bool {
        self.on_status_codes
            .as_deref()
            .unwrap_or(Self::DEFAULT_STATUS_CODES)
            .contains(&status)
    }
}

/// `cache: {mode, max_age}` (`max_age` in seconds).
#[derive(Debug, Clone, PartialEq)]
pub struct Cache {
    pub mode: &'static str,
    pub max_age_s: Option<u64>,
}

pub use super::hooks::{CheckSpec, HookSpec, Hooks, StreamPolicy};
use super::query::Query;

/// Parses and validates a config from its JSON text.
pub fn parse_json(
    text: &str,
    known_provider: &dyn Fn(&str) -> bool,
) -> Result<RoutingConfig, Problems> {
    let value: Value = serde_json::from_str(text)
        .map_err(|e| Problems::one("", format!("not valid JSON: {e}")))?;
    validate(&value, known_provider)
}

/// Validates a parsed config document.
pub fn validate(
    value: &Value,
    known_provider: &dyn Fn(&str) -> bool,
) -> Result<RoutingConfig, Problems> {
    let mut problems = Problems::default();
    let root = node(&mut problems, "", value, known_provider);
    let total_timeout_ms = match value {
        Value::Object(_) => Obj::new(&mut problems, "", value)
            .and_then(|o| o.uint(&mut problems, "total_timeout", 1, u64::from(u32::MAX))),
        _ => None,
    };
    match root {
        Some(mut root) if problems.is_empty() => {
            resolve_inheritance(&mut root, &Inherited::default());
            Ok(RoutingConfig {
                root,
                total_timeout_ms,
            })
        }
        _ => Err(problems),
    }
}

/// Gives every node its effective settings, parent first.
fn resolve_inheritance(node: &mut Node, parent: &Inherited) {
    node.inherit = inherit(parent, &node.inherit);
    let effective = node.inherit.clone();
    for child in &mut node.targets {
        resolve_inheritance(child, &effective);
    }
}

/// A child's settings over its parent's: the child's own win, `override_params`
/// merge per key, hooks are replaced as a whole.
pub fn inherit(parent: &Inherited, child: &Inherited) -> Inherited {
    let mut override_params = parent.override_params.clone();
    for (k, v) in &child.override_params {
        override_params.insert(k.clone(), v.clone());
    }
    Inherited {
        custom_host: child
            .custom_host
            .clone()
            .or_else(|| parent.custom_host.clone()),
        request_timeout_ms: child.request_timeout_ms.or(parent.request_timeout_ms),
        stream_idle_timeout_ms: child
            .stream_idle_timeout_ms
            .or(parent.stream_idle_timeout_ms),
        forward_headers: child
            .forward_headers
            .clone()
            .or_else(|| parent.forward_headers.clone()),
        retry: child.retry.clone().or_else(|| parent.retry.clone()),
        cache: child.cache.clone().or_else(|| parent.cache.clone()),
        strict_open_ai_compliance: child
            .strict_open_ai_compliance
            .or(parent.strict_open_ai_compliance),
        override_params,
        hooks: if child.hooks.is_empty() {
            parent.hooks.clone()
        } else {
            child.hooks.clone()
        },
    }
}

fn node(p: &mut Problems, path: &str, value: &Value, known: &dyn Fn(&str) -> bool) -> Option<Node> {
    let o = Obj::new(p, path, value)?;
    o.deny_unknown(p, NODE_FIELDS, is_provider_option);
    if !path.is_empty() && o.get("total_timeout").is_some() {
        p.push(
            &o.path_of("total_timeout"),
            "only allowed at the top level of a config",
        );
    }

    let strategy = o
        .get("strategy")
        .and_then(|v| strategy(p, &o.path_of("strategy"), v));
    let targets_path = o.path_of("targets");
    let targets: Vec<Node> = o
        .array(p, "targets")
        .map(|items| {
            items
                .iter()
                .enumerate()
                .filter_map(|(i, t)| node(p, &join(&targets_path, &format!("[{i}]")), t, known))
                .collect()
        })
        .unwrap_or_default();

    let provider = o.str(p, "provider");
    if let Some(slug) = &provider
        && !known(slug)
    {
        p.push(&o.path_of("provider"), format!("unknown provider `{slug}`"));
    }
    let target = Target {
        provider,
        api_key: o.str(p, "api_key").map(Secret::new),
        virtual_key: o.str(p, "virtual_key"),
        provider_options: o
            .map
            .iter()
            .filter(|(k, v)| is_provider_option(k) && !v.is_null())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    };

    let custom_host = o.str(p, "custom_host");
    if let Some(host) = &custom_host {
        match url::Url::parse(host) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => {}
            Ok(u) => p.push(
                &o.path_of("custom_host"),
                format!("scheme `{}` is not allowed; use http or https", u.scheme()),
            ),
            Err(e) => p.push(&o.path_of("custom_host"), format!("not a valid URL: {e}")),
        }
    }
    let forward_headers = o.str_list(p, "forward_headers");
    if let Some(names) = &forward_headers {
        for (i, n) in names.iter().enumerate() {
            if http::HeaderName::from_bytes(n.as_bytes()).is_err() {
                p.push(
                    &join(&o.path_of("forward_headers"), &format!("[{i}]")),
                    format!("`{n}` is not a valid header name"),
                );
            }
        }
    }
    let inherit = Inherited {
        custom_host,
        request_timeout_ms: o.uint(p, "request_timeout", 1, u64::from(u32::MAX)),
        stream_idle_timeout_ms: o.uint(p, "stream_idle_timeout", 1, u64::from(u32::MAX)),
        forward_headers,
        retry: o
            .get("retry")
            .and_then(|v| retry(p, &o.path_of("retry"), v)),
        cache: o
            .get("cache")
            .and_then(|v| cache(p, &o.path_of("cache"), v)),
        strict_open_ai_compliance: o.bool(p, "strict_open_ai_compliance"),
        override_params: o.object(p, "override_params").unwrap_or_default(),
        hooks: hooks(p, &o),
    };

    // Judge the shape by what was written, even when the strategy itself is invalid.
    if o.get("strategy").is_none() {
        if o.get("targets").is_some() {
            p.push(&targets_path, "`targets` needs a `strategy` beside it");
        }
        if target.provider.is_none() && target.virtual_key.is_none() {
            p.push(
                path,
                "a target needs `provider` (or `virtual_key`), or a `strategy` with `targets`",
            );
        }
    } else {
        match o.get("targets") {
            None => p.push(
                &targets_path,
                "a strategy needs a non-empty `targets` array",
            ),
            Some(Value::Array(items)) if items.is_empty() => {
                p.push(&targets_path, "must not be empty")
            }
            Some(_) => {}
        }
    }
    if let Some(s) = &strategy {
        check_condition_names(p, &o.path_of("strategy"), s, &targets);
    }

    Some(Node {
        strategy,
        targets,
        name: o.str(p, "name"),
        weight: o.number(p, "weight", 0.0).unwrap_or(1.0),
        on_status_codes: o.status_list(p, "on_status_codes"),
        target,
        inherit,
    })
}

fn strategy(p: &mut Problems, path: &str, value: &Value) -> Option<Strategy> {
    let o = Obj::new(p, path, value)?;
    o.deny_unknown(
        p,
        &[
            "mode",
            "on_status_codes",
            "conditions",
            "default",
            "router",
            "parameters",
            "balance",
        ],
        |_| false,
    );
    let mode = match o.get("mode") {
        None => {
            p.push(
                &o.path_of("mode"),
                format!("required; one of: {}", MODES.join(", ")),
            );
            None
        }
        Some(_) => o.choice(p, "mode", MODES),
    };
    let conditions_path = o.path_of("conditions");
    let mut conditions = Vec::new();
    for (i, c) in o.array(p, "conditions").into_iter().flatten().enumerate() {
        let cpath = join(&conditions_path, &format!("[{i}]"));
        let Some(co) = Obj::new(p, &cpath, c) else {
            continue;
        };
        co.deny_unknown(p, &["query", "then"], |_| false);
        let query = co
            .object(p, "query")
            .and_then(|q| Query::parse(p, &co.path_of("query"), &q));
        let then = co.str(p, "then");
        if query.is_none() && co.get("query").is_none() {
            p.push(&co.path_of("query"), "required");
        }
        if then.is_none() && co.get("then").is_none() {
            p.push(&co.path_of("then"), "required: the `name` of a target");
        }
        if let (Some(query), Some(then)) = (query, then) {
            conditions.push(Condition { query, then });
        }
    }
    if mode == Some("conditional") && o.get("conditions").is_none() {
        p.push(&conditions_path, "required when mode is `conditional`");
    }
    let router = o.str(p, "router");
    if mode == Some("router") && router.is_none() && o.get("router").is_none() {
        p.push(
            &o.path_of("router"),
            "required when mode is `router`: the name of a router plugin",
        );
    }
    let parameters = o.object(p, "parameters").map(Value::Object);
    let balance = o.choice(p, "balance", BALANCE);
    if balance.is_some() && mode.is_some_and(|m| m != "loadbalance") {
        p.push(&o.path_of("balance"), "only for mode `loadbalance`");
    }
    Some(Strategy {
        mode: mode?,
        balance: balance.unwrap_or("weighted"),
        on_status_codes: o.status_list(p, "on_status_codes"),
        conditions,
        default: o.str(p, "default"),
        router,
        parameters,
    })
}

fn check_condition_names(p: &mut Problems, path: &str, s: &Strategy, targets: &[Node]) {
    let names: BTreeSet<&str> = targets.iter().filter_map(|t| t.name.as_deref()).collect();
    for (i, c) in s.conditions.iter().enumerate() {
        if !names.contains(c.then.as_str()) {
            p.push(
                &format!("{}.conditions[{i}].then", path),
                format!("no target is named `{}`", c.then),
            );
        }
    }
    if let Some(d) = &s.default
        && !names.contains(d.as_str())
    {
        p.push(&join(path, "default"), format!("no target is named `{d}`"));
    }
}

fn retry(p: &mut Problems, path: &str, value: &Value) -> Option<Retry> {
    let o = Obj::new(p, path, value)?;
    o.deny_unknown(
        p,
        &[
            "attempts",
            "on_status_codes",
            "use_retry_after_header",
            "backoff_base_ms",
            "backoff_max_ms",
            "max_retry_after_ms",
        ],
        |_| false,
    );
    if o.get("attempts").is_none() {
        p.push(&o.path_of("attempts"), "required (0 to 10)");
    }
    let defaults = Retry::attempts(0);
    let ms =
        |p: &mut Problems, key: &str, default: u64| o.uint(p, key, 0, 3_600_000).unwrap_or(default);
    let backoff_base_ms = ms(p, "backoff_base_ms", defaults.backoff_base_ms);
    let backoff_max_ms = ms(p, "backoff_max_ms", defaults.backoff_max_ms);
    let max_retry_after_ms = ms(p, "max_retry_after_ms", defaults.max_retry_after_ms);
    Some(Retry {
        attempts: o.uint(p, "attempts", 0, u64::from(Retry::MAX_ATTEMPTS))? as u32,
        on_status_codes: o.status_list(p, "on_status_codes"),
        use_retry_after_header: o.bool(p, "use_retry_after_header").unwrap_or(false),
        backoff_base_ms,
        backoff_max_ms,
        max_retry_after_ms,
    })
}

fn cache(p: &mut Problems, path: &str, value: &Value) -> Option<Cache> {
    let o = Obj::new(p, path, value)?;
    o.deny_unknown(p, &["mode", "max_age"], |_| false);
    if o.get("mode").is_none() {
        p.push(&o.path_of("mode"), "required: simple or semantic");
    }
    Some(Cache {
        mode: o.choice(p, "mode", &["simple", "semantic"])?,
        max_age_s: o.uint(p, "max_age", 0, u64::from(u32::MAX)),
    })
}

/// A hook's own settings, checked where they are given.
fn hook_settings(p: &mut Problems, path: &str, value: &Value) {
    let Some(o) = Obj::new(p, path, value) else {
        return;
    };
    if o.get("type").is_some() {
        o.choice(p, "type", &["guardrail", "mutator"]);
    }
    if o.get("on_error").is_some() {
        o.choice(p, "on_error", &["fail-open", "fail-closed"]);
    }
    for key in ["deny", "async", "sequential", "failOnError"] {
        o.bool(p, key);
    }
    for key in ["on_fail", "on_success"] {
        if o.get(key).is_some_and(|v| !v.is_object() && !v.is_null()) {
            p.push(
                &o.path_of(key),
                "expected a feedback object ({\"value\", \"weight\", \"metadata\"})",
            );
        }
    }
}

fn hooks(p: &mut Problems, o: &Obj<'_, '_>) -> Hooks {
    // Full hooks take objects; the shorthands also take bare check ids.
    let full = |p: &mut Problems, key: &str| -> Option<Vec<Value>> {
        let items = o.array(p, key)?;
        for (i, item) in items.iter().enumerate() {
            let at = join(&o.path_of(key), &format!("[{i}]"));
            if item.is_object() {
                hook_settings(p, &at, item);
            } else {
                p.push(&at, "expected a hook object");
            }
        }
        Some(items.clone())
    };
    let short = |p: &mut Problems, key: &str| -> Option<Vec<Value>> {
        let items = o.array(p, key)?;
        for (i, item) in items.iter().enumerate() {
            let at = join(&o.path_of(key), &format!("[{i}]"));
            if item.is_object() {
                hook_settings(p, &at, item);
            } else if !item.is_string() {
                p.push(&at, "expected a guardrail id or a check object");
            }
        }
        Some(items.clone())
    };
    let before = [
        full(p, "before_request_hooks"),
        short(p, "input_guardrails"),
        short(p, "input_mutators"),
    ];
    let after = [
        full(p, "after_request_hooks"),
        short(p, "output_guardrails"),
        short(p, "output_mutators"),
    ];
    Hooks {
        before: super::hooks::stage(&before.each_ref().map(Option::as_ref), "before_request"),
        after: super::hooks::stage(&after.each_ref().map(Option::as_ref), "after_request"),
        stream: o
            .get("stream_guardrails")
            .and_then(|v| stream_policy(p, &o.path_of("stream_guardrails"), v))
            .unwrap_or_default(),
    }
}

fn stream_policy(
    p: &mut Problems,
    path: &str,
    value: &Value,
) -> Option<super::hooks::StreamPolicy> {
    use super::hooks::StreamPolicy;
    let o = Obj::new(p, path, value)?;
    o.deny_unknown(p, &["mode", "window_chars", "every_chars"], |_| false);
    let mode = if o.get("mode").is_some() {
        o.choice(p, "mode", &["buffer", "window"])?
    } else {
        "buffer"
    };
    let (window, every) = match StreamPolicy::WINDOW {
        StreamPolicy::Window {
            window_chars,
            every_chars,
        } => (window_chars, every_chars),
        StreamPolicy::Buffer => (0, 0),
    };
    let window_chars = o
        .uint(p, "window_chars", 1, 1 << 20)
        .map_or(window, |n| n as usize);
    let every_chars = o
        .uint(p, "every_chars", 1, 1 << 20)
        .map_or(every, |n| n as usize);
    if mode == "buffer" {
        for key in ["window_chars", "every_chars"] {
            if o.get(key).is_some() {
                p.push(&o.path_of(key), "only for `\"mode\": \"window\"`");
            }
        }
        return Some(StreamPolicy::Buffer);
    }
    Some(StreamPolicy::Window {
        window_chars,
        every_chars,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known(s: &str) -> bool {
        ["openai", "groq", "azure-openai"].contains(&s)
    }

    #[test]
    fn a_single_target_config_parses() {
        let c = parse_json(
            r#"{"provider":"openai","api_key":"sk-x","override_params":{"model":"m"},"request_timeout":500,"forward_headers":["x-a"]}"#,
            &known,
        )
        .expect("valid");
        assert_eq!(c.root.target.provider.as_deref(), Some("openai"));
        assert_eq!(c.root.inherit.request_timeout_ms, Some(500));
        assert_eq!(c.root.inherit.override_params["model"], "m");
        assert_eq!(c.root.weight, 1.0);
    }

    #[test]
    fn a_nested_tree_with_every_section_parses() {
        let c = parse_json(
            r#"{
              "strategy": {"mode": "fallback", "on_status_codes": [429, 500]},
              "retry": {"attempts": 3, "on_status_codes": [503], "use_retry_after_header": true},
              "cache": {"mode": "simple", "max_age": 60},
              "targets": [
                {"provider": "openai", "api_key": "a", "weight": 0.5, "openai_organization": "org"},
                {"strategy": {"mode": "conditional",
                              "conditions": [{"query": {"metadata.tier": {"$eq": "pro"}}, "then": "pro"}],
                              "default": "free"},
                 "targets": [{"name": "pro", "provider": "groq"}, {"name": "free", "provider": "azure-openai",
                              "resource_name": "r", "deployment_id": "d", "api_version": "2024-10-21"}]}
              ],
              "input_guardrails": ["pii", {"default.contains": {"words": ["x"]}}]
            }"#,
            &known,
        )
        .expect("valid");
        assert_eq!(c.root.strategy.as_ref().map(|s| s.mode), Some("fallback"));
        assert_eq!(
            c.root.targets[0].target.provider_options["openai_organization"],
            "org"
        );
        assert_eq!(
            c.root.targets[1].targets[1].target.provider_options.len(),
            3
        );
        assert_eq!(c.root.inherit.retry.as_ref().map(|r| r.attempts), Some(3));
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let err = parse_json(
            r#"{"strategy":{"mode":"roundrobin"},"targets":[{"provider":"nope","weight":-1},{"providr":"openai"}],"retry":{"attempts":11},"cache":{"mode":"x"}}"#,
            &known,
        )
        .expect_err("invalid");
        let text = err.to_string();
        for needle in [
            "strategy.mode: `roundrobin` is not one of",
            "targets[0].provider: unknown provider `nope`",
            "targets[0].weight: expected a number >= 0",
            "targets[1].providr: unknown field",
            "retry.attempts: expected an integer from 0 to 10",
            "cache.mode: `x` is not one of",
        ] {
            assert!(text.contains(needle), "missing `{needle}` in {text}");
        }
    }

    #[test]
    fn structural_mistakes_are_caught() {
        let cases = [
            (
                r#"{"targets":[{"provider":"openai"}]}"#,
                "targets: `targets` needs a `strategy`",
            ),
            (
                r#"{"strategy":{"mode":"fallback"}}"#,
                "targets: a strategy needs a non-empty",
            ),
            (
                r#"{"strategy":{"mode":"fallback"},"targets":[]}"#,
                "targets: must not be empty",
            ),
            (r#"{"api_key":"k"}"#, "a target needs `provider`"),
            (
                r#"{"provider":"openai","custom_host":"ftp://x"}"#,
                "custom_host: scheme `ftp`",
            ),
            (
                r#"{"provider":"openai","forward_headers":["bad header"]}"#,
                "forward_headers[0]",
            ),
            (
                r#"{"strategy":{"mode":"conditional","conditions":[{"query":{},"then":"a"}]},"targets":[{"provider":"openai"}]}"#,
                "strategy.conditions[0].then: no target is named `a`",
            ),
            ("[1]", "expected an object"),
            ("{", "not valid JSON"),
        ];
        for (text, needle) in cases {
            let err = parse_json(text, &known).expect_err(text).to_string();
            assert!(err.contains(needle), "{text}: `{err}` lacks `{needle}`");
        }
    }

    #[test]
    fn settings_are_inherited_when_the_config_is_loaded() {
        let c = parse_json(
            r#"{"strategy":{"mode":"fallback"},"request_timeout":100,"retry":{"attempts":2},
                "override_params":{"model":"a","temperature":1},"custom_host":"http://127.0.0.1:1/v1",
                "api_key":"parent-key","input_guardrails":["blocklist"],
                "targets":[
                  {"provider":"openai","override_params":{"model":"b"}},
                  {"strategy":{"mode":"loadbalance","balance":"least_latency"},"request_timeout":5,
                   "targets":[{"provider":"groq","retry":{"attempts":0},"input_guardrails":["other"]}]}]}"#,
            &known,
        )
        .expect("valid");
        let first = &c.root.targets[0].inherit;
        assert_eq!(first.override_params["model"], "b");
        assert_eq!(first.override_params["temperature"], 1);
        assert_eq!(first.request_timeout_ms, Some(100));
        assert_eq!(first.retry.as_ref().map(|r| r.attempts), Some(2));
        assert_eq!(first.custom_host.as_deref(), Some("http://127.0.0.1:1/v1"));
        assert_eq!(first.hooks.before[0].checks[0].plugin, "blocklist");
        assert_eq!(
            c.root.targets[0].target.api_key, None,
            "credentials stay put"
        );
        let deep = &c.root.targets[1].targets[0].inherit;
        assert_eq!(deep.request_timeout_ms, Some(5));
        assert_eq!(deep.retry.as_ref().map(|r| r.attempts), Some(0));
        assert_eq!(deep.override_params["model"], "a");
        assert_eq!(deep.hooks.before[0].checks[0].plugin, "other");
        assert_eq!(
            c.root.targets[1].strategy.as_ref().map(|s| s.balance),
            Some("least_latency")
        );
    }

    #[test]
    fn sluice_extensions_are_validated() {
        let c = parse_json(
            r#"{"provider":"openai","total_timeout":2000,"stream_idle_timeout":100,
                "retry":{"attempts":1,"backoff_base_ms":5,"backoff_max_ms":50,"max_retry_after_ms":0}}"#,
            &known,
        )
        .expect("valid");
        assert_eq!(c.total_timeout_ms, Some(2000));
        let r = c.root.inherit.retry.expect("retry");
        assert_eq!(
            (r.backoff_base_ms, r.backoff_max_ms, r.max_retry_after_ms),
            (5, 50, 0)
        );
        assert!(r.retries(503) && !r.retries(400));

        let err = parse_json(
            r#"{"strategy":{"mode":"fallback","balance":"least_latency"},
                "targets":[{"provider":"openai","total_timeout":5},
                  {"strategy":{"mode":"loadbalance","balance":"random"},"targets":[{"provider":"groq"}]},
                  {"strategy":{"mode":"conditional","conditions":[{"query":{"params.x":{"$like":1}},"then":"n"}]},
                   "targets":[{"name":"n","provider":"groq"}]}]}"#,
            &known,
        )
        .expect_err("invalid")
        .to_string();
        for needle in [
            "strategy.balance: only for mode `loadbalance`",
            "targets[0].total_timeout: only allowed at the top level",
            "targets[1].strategy.balance: `random` is not one of",
            "targets[2].strategy.conditions[0].query.\"params.x\".$like: unknown operator",
        ] {
            assert!(err.contains(needle), "missing `{needle}` in {err}");
        }
    }
}
