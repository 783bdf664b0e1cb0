//! The server's TOML file. Every setting has its default here, in one place; an
//! empty file (or none) is a working gateway on 127.0.0.1:8787.
//!
//! ```toml
//! default_config = "prod"          # a name under [configs], used when no header names one
//!
//! [server]
//! host = "127.0.0.1"               # port 8787, workers 0 (one per core),
//! port = 8787                      # max_body_bytes 32 MiB, shutdown_grace_ms 30000,
//!                                  # plugins_dir "plugins"
//!
//! [log]
//! format = "human"                 # or "json"; level = "info" (an EnvFilter directive)
//!
//! [upstream]
//! connect_timeout_ms = 10000       # timeout_ms 600000 (-> 504), pool_idle_timeout_ms 90000,
//!                                  # pool_max_idle_per_host 256, max_response_bytes 128 MiB,
//!                                  # total_timeout_ms 600000 (a whole request, -> 504),
//!                                  # stream_idle_timeout_ms 300000 (between chunks)
//! [routing.circuit_breaker]       # per target; see routing/targets.rs
//! consecutive_failures = 5         # error_rate 0.5 over min_requests 20 in window_ms 30000,
//! cool_down_ms = 30000             # enabled true
//!
//! [[rate_limits]]                 # per minute; see limits/mod.rs
//! scope = "metadata.user"          # key | virtual_key | metadata.NAME
//! rpm = 60                         # requests; and/or
//! tpm = 100000                     # tokens (counted from answers)
//!
//! [[budgets]]                     # see limits/budget.rs
//! scope = "virtual_key"            # key | virtual_key | metadata.NAME
//! name = "team-a"                  # only this one (default: each)
//! usd = 50.0
//! period = "month"                 # day | month (default) | total
//!
//! [usage]                          # the request log; see usage/mod.rs
//! enabled = true                   # retention_days 30 (0: forever),
//! log_bodies = false               # max_body_bytes 16384 (secrets redacted)
//!
//! [cache]                          # see cache/mod.rs; configs ask for it
//! max_bytes = 67108864             # (`cache: {mode, max_age}`); 0 turns it off
//!
//! [cache.semantic]                 # `mode: "semantic"`: see cache/semantic.rs
//! embedding_config = "embedder"    # a name under [configs]: where embeddings come from
//! model = "text-embedding-3-small" # optional, when that config sets none
//! threshold = 0.95                 # cosine similarity; max_entries 10000,
//!                                  # max_prompt_bytes 8192
//!
//! [redis]                          # share limits, budgets and the cache between
//! url = "redis://127.0.0.1:6379/0" # gateways (see shared.rs); prefix "sluice:",
//!                                  # timeout_ms 250
//!
//! [[pricing]]                      # USD per million tokens, over usage/pricing.toml
//! provider = "azure-openai"        # optional: any provider
//! model = "gpt-4o"
//! input = 2.5                      # output, cached_input (default: input)
//! output = 10.0
//!
//! [ssrf]
//! allow_loopback = true
//! allow = ["10.1.0.0/16", "models.internal"]
//!
//! [auth]
//! required = true                  # gateway keys on /v1 and /admin; default: on when
//!                                  # the server listens beyond loopback, off on loopback
//!
//! [state]
//! path = "sluice.db"               # SQLite: keys, virtual keys, the request log
//!                                  # (relative to this file)
//! master_key_file = "master.key"   # seals virtual keys; env SLUICE_MASTER_KEY wins
//!
//! [plugins]                      # see config/plugins.rs: cache, watch, limits
//! watch = true
//!
//! [[providers]]                    # same fields as the built-in catalog
//! slug = "my-vllm"
//! base_url = "http://10.1.0.5:8000/v1"
//!
//! [configs.prod]                   # Portkey's config JSON, written in TOML
//! provider = "openai"
//! ```

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::reader::{Obj, Problems, toml_document};
use super::routing::{self, RoutingConfig};
use crate::providers::{ProviderSpec, Registry, specs_from_values};
use crate::upstream::SsrfPolicy;

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Human,
    Json,
}

/// The upstream HTTP client's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamSettings {
    pub connect_timeout: Duration,
    /// The server's own deadline for an upstream answer (504 when passed).
    pub timeout: Duration,
    pub pool_idle_timeout: Duration,
    pub pool_max_idle_per_host: usize,
    /// The largest non-streamed answer the gateway will buffer (502 beyond).
    pub max_response_bytes: usize,
    /// The deadline of a whole request, retries and fallbacks included (504).
    pub total_timeout: Duration,
    /// The longest gap between two chunks of a stream (a config's
    /// `stream_idle_timeout` overrides it).
    pub stream_idle_timeout: Duration,
}

/// `[routing.circuit_breaker]`: when a target's circuit opens (see
/// `routing::targets`).
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerSettings {
    pub enabled: bool,
    pub consecutive_failures: u32,
    pub error_rate: f64,
    pub min_requests: u32,
    pub window: Duration,
    pub cool_down: Duration,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            consecutive_failures: 5,
            error_rate: 0.5,
            min_requests: 20,
            window: Duration::from_secs(30),
            cool_down: Duration::from_secs(30),
        }
    }
}

/// The validated server config.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub host: IpAddr,
    pub port: u16,
    /// Worker threads, each a single-threaded runtime (0: one per core).
    pub workers: usize,
    pub max_body_bytes: usize,
    pub shutdown_grace: Duration,
    pub plugins_dir: PathBuf,
    pub plugins: super::plugins::PluginSettings,
    pub log_format: LogFormat,
    pub log_level: String,
    pub upstream: UpstreamSettings,
    pub ssrf: SsrfPolicy,
    pub breaker: BreakerSettings,
    pub providers: Registry,
    /// Named routing configs, referenced by `x-portkey-config: NAME`.
    pub configs: BTreeMap<String, Arc<RoutingConfig>>,
    pub default_config: Option<String>,
    /// `[auth] required`; when unset, [`ServerConfig::auth_required`] decides
    /// by the address the server listens on.
    pub auth: Option<bool>,
    /// The state database (SQLite): gateway keys, virtual keys.
    pub state_path: PathBuf,
    /// `[state] master_key_file`: the key that seals virtual keys
    /// (`SLUICE_MASTER_KEY` wins).
    pub master_key_file: Option<PathBuf>,
    /// `[[rate_limits]]`: requests and tokens per minute by key, virtual key
    /// or metadata.
    pub rate_limits: Vec<crate::limits::RateRule>,
    /// `[[budgets]]`: dollars per period by key, virtual key or metadata.
    pub budgets: Vec<crate::limits::budget::BudgetRule>,
    /// `[usage]`: the request log.
    pub usage: crate::usage::UsageSettings,
    /// `[[pricing]]`: prices over the shipped list.
    pub pricing: Vec<crate::usage::PriceEntry>,
    /// `[cache]`: the simple cache's store.
    pub cache: crate::cache::CacheSettings,
    /// `[redis]`: state shared by several gateways.
    pub redis: Option<crate::shared::RedisSettings>,
}

impl ServerConfig {
    /// The defaults (what an empty file gives).
    pub fn defaults() -> Result<Self, Problems> {
        Self::parse("")
    }

    /// Reads and validates a file.
    pub fn load(path: &Path) -> Result<Self, Problems> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Problems::one("", format!("cannot read {}: {e}", path.display())))?;
        let mut config = Self::parse(&text)?;
        // Relative to the file that names it, so a config and its state travel
        // together.
        if let Some(dir) = path.parent() {
            config.state_path = dir.join(&config.state_path);
            config.master_key_file = config.master_key_file.map(|f| dir.join(f));
        }
        Ok(config)
    }

    /// Whether `slug` names a provider this config can route to.
    pub fn knows_provider(&self, slug: &str) -> bool {
        provider_known(&self.providers, &self.plugins_dir, slug)
    }

    /// Whether requests need a gateway key: as `[auth] required` says, else
    /// whenever the server listens beyond loopback.
    pub fn auth_required(&self) -> bool {
        self.auth.unwrap_or(!self.host.is_loopback())
    }

    /// Validates TOML text, reporting every problem.
    pub fn parse(text: &str) -> Result<Self, Problems> {
        let mut p = Problems::default();
        let doc = toml_document(text, "")?;
        let empty = Value::Object(Default::default());
        let root = Obj::new(&mut p, "", &doc).ok_or_else(|| p.clone())?;
        root.deny_unknown(
            &mut p,
            &[
                "server",
                "log",
                "upstream",
                "ssrf",
                "providers",
                "configs",
                "default_config",
                "plugins",
                "routing",
                "auth",
                "state",
                "rate_limits",
                "budgets",
                "usage",
                "pricing",
                "cache",
                "redis",
            ],
            |_| false,
        );
        let section = |p: &mut Problems, name: &'static str| -> Option<Obj<'_, 'static>> {
            Obj::new(p, name, root.get(name).unwrap_or(&empty))
        };

        let mut host = IpAddr::from([127, 0, 0, 1]);
        let mut port = 8787;
        let mut workers = 0;
        let mut max_body_bytes = 32 * 1024 * 1024;
        let mut shutdown_grace = Duration::from_secs(30);
        let mut plugins_dir = PathBuf::from("plugins");
        if let Some(s) = section(&mut p, "server") {
            s.deny_unknown(
                &mut p,
                &[
                    "host",
                    "port",
                    "workers",
                    "max_body_bytes",
                    "shutdown_grace_ms",
                    "plugins_dir",
                ],
                |_| false,
            );
            if let Some(h) = s.str(&mut p, "host") {
                match parse_host(&h) {
                    Some(ip) => host = ip,
                    None => p.push("server.host", format!("`{h}` is not an IP address")),
                }
            }
            port = s.uint(&mut p, "port", 0, 65535).map_or(port, |n| n as u16);
            workers = s
                .uint(&mut p, "workers", 0, 1024)
                .map_or(workers, |n| n as usize);
            max_body_bytes = s
                .uint(&mut p, "max_body_bytes", 1024, 1 << 32)
                .map_or(max_body_bytes, |n| n as usize);
            shutdown_grace = s
                .uint(&mut p, "shutdown_grace_ms", 0, 3_600_000)
                .map_or(shutdown_grace, Duration::from_millis);
            plugins_dir = s
                .str(&mut p, "plugins_dir")
                .map_or(plugins_dir, PathBuf::from);
        }

        let mut log_format = LogFormat::Human;
        let mut log_level = "info".to_owned();
        if let Some(s) = section(&mut p, "log") {
            s.deny_unknown(&mut p, &["format", "level"], |_| false);
            if s.choice(&mut p, "format", &["human", "json"]) == Some("json") {
                log_format = LogFormat::Json;
            }
            log_level = s.str(&mut p, "level").unwrap_or(log_level);
        }

        let mut upstream = UpstreamSettings {
            connect_timeout: Duration::from_secs(10),
            timeout: Duration::from_secs(600),
            pool_idle_timeout: Duration::from_secs(90),
            pool_max_idle_per_host: 256,
            max_response_bytes: 128 * 1024 * 1024,
            total_timeout: Duration::from_secs(600),
            stream_idle_timeout: Duration::from_secs(300),
        };
        if let Some(s) = section(&mut p, "upstream") {
            let ms = |p: &mut Problems, key: &str, default: Duration| {
                s.uint(p, key, 1, 86_400_000)
                    .map_or(default, Duration::from_millis)
            };
            s.deny_unknown(
                &mut p,
                &[
                    "connect_timeout_ms",
                    "timeout_ms",
                    "pool_idle_timeout_ms",
                    "pool_max_idle_per_host",
                    "max_response_bytes",
                    "total_timeout_ms",
                    "stream_idle_timeout_ms",
                ],
                |_| false,
            );
            upstream.total_timeout = ms(&mut p, "total_timeout_ms", upstream.total_timeout);
            upstream.stream_idle_timeout = ms(
                &mut p,
                "stream_idle_timeout_ms",
                upstream.stream_idle_timeout,
            );
            upstream.connect_timeout = ms(&mut p, "connect_timeout_ms", upstream.connect_timeout);
            upstream.timeout = ms(&mut p, "timeout_ms", upstream.timeout);
            upstream.pool_idle_timeout =
                ms(&mut p, "pool_idle_timeout_ms", upstream.pool_idle_timeout);
            upstream.max_response_bytes = s
                .uint(&mut p, "max_response_bytes", 1024, 1 << 32)
                .map_or(upstream.max_response_bytes, |n| n as usize);
            upstream.pool_max_idle_per_host = s
                .uint(&mut p, "pool_max_idle_per_host", 0, 65_536)
                .map_or(upstream.pool_max_idle_per_host, |n| n as usize);
        }

        let mut auth = None;
        if let Some(s) = section(&mut p, "auth") {
            s.deny_unknown(&mut p, &["required"], |_| false);
            auth = s.bool(&mut p, "required");
        }
        let mut state_path = PathBuf::from("sluice.db");
        let mut master_key_file = None;
        if let Some(s) = section(&mut p, "state") {
            s.deny_unknown(&mut p, &["path", "master_key_file"], |_| false);
            state_path = s.str(&mut p, "path").map_or(state_path, PathBuf::from);
            master_key_file = s.str(&mut p, "master_key_file").map(PathBuf::from);
        }

        // A rule's scope: key, virtual_key or metadata.NAME.
        let scope = |p: &mut Problems, o: &Obj<'_, '_>, path: &str| match o
            .str(p, "scope")
            .map(|s| crate::limits::Scope::parse(&s))
        {
            Some(Ok(scope)) => Some(scope),
            Some(Err(why)) => {
                p.push(&format!("{path}.scope"), why);
                None
            }
            None => {
                p.push(
                    &format!("{path}.scope"),
                    "missing: key, virtual_key or metadata.NAME",
                );
                None
            }
        };
        let items = |p: &mut Problems, name: &str| root.array(p, name).cloned().unwrap_or_default();

        let mut rate_limits = Vec::new();
        for (i, item) in items(&mut p, "rate_limits").iter().enumerate() {
            let path = format!("rate_limits[{i}]");
            let Some(o) = Obj::new(&mut p, &path, item) else {
                continue;
            };
            o.deny_unknown(&mut p, &["scope", "rpm", "tpm"], |_| false);
            let scope = scope(&mut p, &o, &path);
            let rpm = o.uint(&mut p, "rpm", 1, 100_000_000);
            let tpm = o.uint(&mut p, "tpm", 1, 1 << 50);
            if o.get("rpm").is_none() && o.get("tpm").is_none() {
                p.push(
                    &path,
                    "missing: rpm (requests per minute) or tpm (tokens per minute)",
                );
            }
            if let Some(scope) = scope
                && (rpm.is_some() || tpm.is_some())
            {
                rate_limits.push(crate::limits::RateRule { scope, rpm, tpm });
            }
        }

        let mut budgets = Vec::new();
        for (i, item) in items(&mut p, "budgets").iter().enumerate() {
            let path = format!("budgets[{i}]");
            let Some(o) = Obj::new(&mut p, &path, item) else {
                continue;
            };
            o.deny_unknown(&mut p, &["scope", "name", "usd", "period"], |_| false);
            let scope = scope(&mut p, &o, &path);
            let usd = o.number(&mut p, "usd", 0.0);
            if o.get("usd").is_none() {
                p.push(&format!("{path}.usd"), "missing: dollars per period");
            }
            let period = match o
                .choice(&mut p, "period", &["day", "month", "total"])
                .map(crate::limits::budget::Period::parse)
            {
                Some(Ok(period)) => Some(period),
                Some(Err(_)) => None,
                None if o.get("period").is_none() => Some(crate::limits::budget::Period::Month),
                None => None,
            };
            let budget = match (usd, period) {
                (Some(usd), Some(period)) => {
                    let budget = crate::limits::budget::Budget { usd, period };
                    match budget.check() {
                        Ok(()) => Some(budget),
                        Err(why) => {
                            p.push(&format!("{path}.usd"), why);
                            None
                        }
                    }
                }
                _ => None,
            };
            if let (Some(scope), Some(budget)) = (scope, budget) {
                budgets.push(crate::limits::budget::BudgetRule {
                    scope,
                    name: o.str(&mut p, "name"),
                    budget,
                });
            }
        }

        let mut usage = crate::usage::UsageSettings::default();
        if let Some(s) = section(&mut p, "usage") {
            s.deny_unknown(
                &mut p,
                &["enabled", "retention_days", "log_bodies", "max_body_bytes"],
                |_| false,
            );
            usage.enabled = s.bool(&mut p, "enabled").unwrap_or(usage.enabled);
            usage.retention_days = s
                .uint(&mut p, "retention_days", 0, 36_500)
                .unwrap_or(usage.retention_days);
            usage.log_bodies = s.bool(&mut p, "log_bodies").unwrap_or(usage.log_bodies);
            usage.max_body_bytes = s
                .uint(&mut p, "max_body_bytes", 0, 16 * 1024 * 1024)
                .map_or(usage.max_body_bytes, |n| n as usize);
        }

        let mut cache = crate::cache::CacheSettings::default();
        if let Some(s) = section(&mut p, "cache") {
            s.deny_unknown(&mut p, &["max_bytes", "semantic"], |_| false);
            cache.max_bytes = s
                .uint(&mut p, "max_bytes", 0, 1 << 40)
                .map_or(cache.max_bytes, |n| n as usize);
            if let Some(value) = s.get("semantic") {
                cache.semantic = semantic_cache(&mut p, value);
            }
        }

        let mut redis = None;
        if let Some(s) = root.get("redis").and_then(|_| section(&mut p, "redis")) {
            s.deny_unknown(&mut p, &["url", "prefix", "timeout_ms"], |_| false);
            let url = s.str(&mut p, "url");
            match url.as_deref() {
                None => p.push(
                    "redis.url",
                    "required: redis://HOST:PORT/DB or unix:///PATH",
                ),
                Some(u)
                    if redis::Client::open(u).is_err()
                        || !(u.starts_with("redis://")
                            || u.starts_with("unix://")
                            || u.starts_with("redis+unix://")) =>
                {
                    p.push(
                        "redis.url",
                        format!("`{u}` is not a redis://HOST:PORT/DB or unix:///PATH URL (TLS is not supported)"),
                    );
                }
                Some(u) => {
                    redis = Some(crate::shared::RedisSettings {
                        url: u.to_owned(),
                        prefix: s.str(&mut p, "prefix").unwrap_or_else(|| "sluice:".into()),
                        timeout: s
                            .uint(&mut p, "timeout_ms", 1, 60_000)
                            .map_or(Duration::from_millis(250), Duration::from_millis),
                    });
                }
            }
        }

        let mut pricing = Vec::new();
        for (i, item) in items(&mut p, "pricing").iter().enumerate() {
            let path = format!("pricing[{i}]");
            let Some(o) = Obj::new(&mut p, &path, item) else {
                continue;
            };
            o.deny_unknown(
                &mut p,
                &["provider", "model", "input", "output", "cached_input"],
                |_| false,
            );
            let model = o.str(&mut p, "model");
            if model.is_none() {
                p.push(&format!("{path}.model"), "missing: the model's name");
            }
            let mut price = |key: &str| {
                let n = o.number(&mut p, key, 0.0);
                if n.is_none() && o.get(key).is_none() && key != "cached_input" {
                    p.push(
                        &format!("{path}.{key}"),
                        "missing: US dollars per million tokens",
                    );
                }
                n
            };
            let (input, output, cached) = (price("input"), price("output"), price("cached_input"));
            if let (Some(model), Some(input), Some(output)) = (model, input, output) {
                pricing.push(crate::usage::PriceEntry {
                    provider: o.str(&mut p, "provider"),
                    model,
                    price: crate::usage::Price {
                        input,
                        output,
                        cached_input: cached.unwrap_or(input),
                    },
                });
            }
        }

        let mut ssrf = SsrfPolicy::default();
        if let Some(s) = section(&mut p, "ssrf") {
            s.deny_unknown(&mut p, &["allow_loopback", "allow"], |_| false);
            ssrf.allow_loopback = s.bool(&mut p, "allow_loopback").unwrap_or(true);
            for (i, entry) in s
                .str_list(&mut p, "allow")
                .unwrap_or_default()
                .iter()
                .enumerate()
            {
                if let Err(e) = ssrf.allow(entry) {
                    p.push(&format!("ssrf.allow[{i}]"), e);
                }
            }
        }

        let mut breaker = BreakerSettings::default();
        if let Some(s) = section(&mut p, "routing") {
            s.deny_unknown(&mut p, &["circuit_breaker"], |_| false);
            let empty = Value::Object(Default::default());
            if let Some(b) = Obj::new(
                &mut p,
                "routing.circuit_breaker",
                s.get("circuit_breaker").unwrap_or(&empty),
            ) {
                b.deny_unknown(
                    &mut p,
                    &[
                        "enabled",
                        "consecutive_failures",
                        "error_rate",
                        "min_requests",
                        "window_ms",
                        "cool_down_ms",
                    ],
                    |_| false,
                );
                breaker.enabled = b.bool(&mut p, "enabled").unwrap_or(breaker.enabled);
                breaker.consecutive_failures = b
                    .uint(&mut p, "consecutive_failures", 1, 10_000)
                    .map_or(breaker.consecutive_failures, |n| n as u32);
                breaker.min_requests = b
                    .uint(&mut p, "min_requests", 1, 1_000_000)
                    .map_or(breaker.min_requests, |n| n as u32);
                if let Some(rate) = b.number(&mut p, "error_rate", 0.0) {
                    if rate > 0.0 && rate <= 1.0 {
                        breaker.error_rate = rate;
                    } else {
                        p.push(
                            "routing.circuit_breaker.error_rate",
                            "expected a fraction above 0, at most 1",
                        );
                    }
                }
                breaker.window = b
                    .uint(&mut p, "window_ms", 100, 86_400_000)
                    .map_or(breaker.window, Duration::from_millis);
                breaker.cool_down = b
                    .uint(&mut p, "cool_down_ms", 1, 86_400_000)
                    .map_or(breaker.cool_down, Duration::from_millis);
            }
        }

        let extra: Vec<ProviderSpec> = match root.array(&mut p, "providers") {
            Some(items) => specs_from_values(&mut p, "providers", items),
            None => Vec::new(),
        };
        let providers = match Registry::new(&extra) {
            Ok(r) => r,
            Err(problems) => {
                p.0.extend(problems.0);
                Registry::default()
            }
        };

        let plugins = super::plugins::parse(&mut p, root.get("plugins"));
        // A target's provider is a catalog provider or a provider plugin: a
        // built-in or a file in the plugins directory (its kind is checked when
        // the plugin is loaded; its configuration when the config is).
        let known = |slug: &str| provider_known(&providers, &plugins_dir, slug);
        let mut configs = BTreeMap::new();
        if let Some(table) = root.object(&mut p, "configs") {
            for (name, value) in table {
                match routing::validate(&value, &known) {
                    Ok(c) => {
                        configs.insert(name, Arc::new(c));
                    }
                    Err(problems) => p.0.extend(problems.prefixed(&format!("configs.{name}")).0),
                }
            }
        }
        if let Some(semantic) = &cache.semantic
            && !configs.contains_key(&semantic.embedding_config)
        {
            p.push(
                "cache.semantic.embedding_config",
                format!(
                    "no config named `{}` under [configs]",
                    semantic.embedding_config
                ),
            );
        }
        let default_config = root.str(&mut p, "default_config");
        if let Some(name) = &default_config
            && !configs.contains_key(name)
        {
            p.push(
                "default_config",
                format!("no config named `{name}` under [configs]"),
            );
        }

        if !p.is_empty() {
            return Err(p);
        }
        Ok(Self {
            host,
            port,
            workers,
            max_body_bytes,
            shutdown_grace,
            plugins_dir,
            plugins,
            log_format,
            log_level,
            upstream,
            ssrf,
            breaker,
            providers,
            configs,
            default_config,
            auth,
            state_path,
            master_key_file,
            rate_limits,
            budgets,
            usage,
            pricing,
            cache,
            redis,
        })
    }
}

/// `[cache.semantic]`: where embeddings come from and how close a prompt
/// must be.
fn semantic_cache(
    p: &mut Problems,
    value: &Value,
) -> Option<crate::cache::semantic::SemanticSettings> {
    use crate::cache::semantic::SemanticSettings as S;
    let o = Obj::new(p, "cache.semantic", value)?;
    o.deny_unknown(
        p,
        &[
            "embedding_config",
            "model",
            "threshold",
            "max_entries",
            "max_prompt_bytes",
        ],
        |_| false,
    );
    let embedding_config = o.str(p, "embedding_config");
    if embedding_config.is_none() && o.get("embedding_config").is_none() {
        p.push(
            "cache.semantic.embedding_config",
            "required: the name of a config under [configs] that embeddings are asked of",
        );
    }
    let threshold = match o.number(p, "threshold", 0.0) {
        Some(t) if t > 1.0 => {
            p.push(
                "cache.semantic.threshold",
                format!("a cosine similarity is at most 1, found {t}"),
            );
            None
        }
        t => t,
    };
    Some(S {
        embedding_config: embedding_config?,
        model: o.str(p, "model"),
        threshold: threshold.map_or(S::DEFAULT_THRESHOLD, |t| t as f32),
        max_entries: o
            .uint(p, "max_entries", 0, 100_000_000)
            .map_or(S::DEFAULT_MAX_ENTRIES, |n| n as usize),
        max_prompt_bytes: o
            .uint(p, "max_prompt_bytes", 1, 1 << 20)
            .map_or(S::DEFAULT_MAX_PROMPT_BYTES, |n| n as usize),
    })
}

/// Whether `slug` names a provider: a catalog or `[[providers]]` entry, a
/// built-in provider plugin, or a `.wasm` file in the plugins directory (its
/// kind is checked when it is loaded).
fn provider_known(providers: &Registry, plugins_dir: &Path, slug: &str) -> bool {
    providers.contains(slug)
        || crate::plugins::builtin::BUILTINS
            .iter()
            .any(|(n, _)| *n == slug)
        || plugins_dir.join(format!("{slug}.wasm")).is_file()
}

/// An IP address, or `localhost`.
pub fn parse_host(text: &str) -> Option<IpAddr> {
    if text == "localhost" {
        return Some(IpAddr::from([127, 0, 0, 1]));
    }
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_file_gives_the_defaults() {
        let c = ServerConfig::defaults().expect("defaults");
        assert_eq!(c.port, 8787);
        assert_eq!(c.host, IpAddr::from([127, 0, 0, 1]));
        assert_eq!(c.log_format, LogFormat::Human);
        assert!(c.ssrf.allow_loopback);
        assert!(c.providers.contains("openai"));
        assert_eq!(c.default_config, None);
    }

    #[test]
    fn keys_are_required_beyond_loopback_unless_turned_off() {
        let mut c = ServerConfig::defaults().expect("defaults");
        assert!(!c.auth_required(), "off on loopback");
        c.host = IpAddr::from([0, 0, 0, 0]);
        assert!(c.auth_required(), "on beyond loopback");
        let mut off = ServerConfig::parse("[auth]\nrequired = false").expect("valid");
        off.host = IpAddr::from([10, 0, 0, 1]);
        assert!(!off.auth_required());
        let on = ServerConfig::parse("[auth]\nrequired = true").expect("valid");
        assert!(on.auth_required(), "on by choice on loopback");
        let bad =
            ServerConfig::parse("[auth]\nrequired = \"yes\"\nrequire = true").expect_err("invalid");
        assert_eq!(bad.0.len(), 2, "{bad:?}");
    }

    #[test]
    fn the_state_database_is_found_beside_its_config() {
        let dir = std::env::temp_dir().join(format!("sluice-state-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("sluice.toml");
        std::fs::write(&file, "").expect("write");
        assert_eq!(
            ServerConfig::load(&file).expect("load").state_path,
            dir.join("sluice.db")
        );
        std::fs::write(&file, "[state]\npath = \"/var/lib/sluice/state.db\"").expect("write");
        assert_eq!(
            ServerConfig::load(&file).expect("load").state_path,
            PathBuf::from("/var/lib/sluice/state.db"),
            "an absolute path stays"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_full_file_is_read() {
        let c = ServerConfig::parse(
            r#"
            default_config = "main"
            [server]
            host = "0.0.0.0"
            port = 9000
            workers = 3
            max_body_bytes = 2048
            shutdown_grace_ms = 100
            [log]
            format = "json"
            level = "debug"
            [upstream]
            timeout_ms = 1500
            [ssrf]
            allow_loopback = false
            allow = ["10.0.0.0/8"]
            [[providers]]
            slug = "my-vllm"
            base_url = "http://10.0.0.5/v1"
            [configs.main]
            provider = "my-vllm"
            override_params = { model = "llama" }
            "#,
        )
        .expect("valid");
        assert_eq!(c.port, 9000);
        assert_eq!(c.workers, 3);
        assert_eq!(c.max_body_bytes, 2048);
        assert_eq!(c.log_format, LogFormat::Json);
        assert_eq!(c.upstream.timeout, Duration::from_millis(1500));
        assert!(!c.ssrf.allow_loopback);
        assert!(c.providers.contains("my-vllm"));
        assert_eq!(
            c.configs["main"].root.inherit.override_params["model"],
            "llama"
        );
    }

    #[test]
    fn governance_sections_are_read_and_checked() {
        let ok = ServerConfig::parse(
            r#"
            [redis]
            url = "redis://127.0.0.1:6379/2"
            [cache]
            max_bytes = 1024
            [cache.semantic]
            embedding_config = "embed"
            threshold = 0.9
            [configs.embed]
            provider = "openai"
            [usage]
            log_bodies = true
            [[budgets]]
            scope = "key"
            usd = 5
            [[rate_limits]]
            scope = "key"
            tpm = 1000
            "#,
        )
        .expect("valid");
        let semantic = ok.cache.semantic.as_ref().expect("semantic");
        assert_eq!(
            (
                semantic.embedding_config.as_str(),
                semantic.threshold,
                semantic.max_entries
            ),
            ("embed", 0.9, 10_000)
        );
        let redis = ok.redis.expect("redis");
        assert_eq!(
            (redis.prefix.as_str(), redis.timeout.as_millis()),
            ("sluice:", 250)
        );
        assert_eq!(
            ok.budgets[0].budget.period,
            crate::limits::budget::Period::Month
        );
        assert_eq!(
            (ok.rate_limits[0].rpm, ok.rate_limits[0].tpm),
            (None, Some(1000))
        );
        assert!(ok.usage.log_bodies && ok.cache.max_bytes == 1024);
        assert!(ServerConfig::defaults().expect("defaults").redis.is_none());
        let err = ServerConfig::parse(
            r#"
            [redis]
            url = "rediss://secure:6380"
            [[budgets]]
            scope = "ip"
            usd = 0
            period = "week"
            [[rate_limits]]
            scope = "key"
            [cache.semantic]
            embedding_config = "nowhere"
            threshold = 1.5
            "#,
        )
        .expect_err("invalid");
        let paths: Vec<&str> = err.0.iter().map(|p| p.path.as_str()).collect();
        for want in [
            "cache.semantic.embedding_config",
            "cache.semantic.threshold",
            "redis.url",
            "budgets[0].scope",
            "budgets[0].period",
            "rate_limits[0]",
        ] {
            assert!(paths.contains(&want), "{want} in {paths:?}");
        }
        assert!(ServerConfig::parse("[redis]\nprefix = \"x\"\n").is_err());
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let err = ServerConfig::parse(
            r#"
            default_config = "missing"
            colour = 1
            [server]
            port = 70000
            host = "not-an-ip"
            [log]
            format = "xml"
            [ssrf]
            allow = ["bad entry!"]
            [[providers]]
            base_url = "http://x"
            [configs.bad]
            provider = "nope"
            "#,
        )
        .expect_err("invalid");
        let text = err.to_string();
        for needle in [
            "colour: unknown field",
            "server.port: expected an integer from 0 to 65535",
            "server.host: `not-an-ip` is not an IP address",
            "log.format: `xml` is not one of",
            "ssrf.allow[0]:",
            "providers[0].slug: required",
            "configs.bad.provider: unknown provider `nope`",
            "default_config: no config named `missing`",
        ] {
            assert!(text.contains(needle), "missing `{needle}` in {text}");
        }
        assert!(ServerConfig::parse("not toml [").is_err());
    }
}
