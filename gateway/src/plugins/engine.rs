//! The wasmtime engine all plugins share: pooling allocator, epoch interruption
//! driven by a ticker thread, and wasmtime's on-disk cache of compiled code (keyed
//! by the component's content, wasmtime's version and the engine's settings), so a
//! restart does not recompile.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use wasmtime::component::ResourceTable;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::limits::{EngineLimits, Limiter, Limits};
use super::v0_1::{host, types};

/// How often the epoch advances while plugins run: the granularity of CPU
/// budgets.
pub const EPOCH_TICK: Duration = Duration::from_millis(2);

/// How often it advances once no plugin code has run for [`QUIET_TICKS`]
/// ticks: an idle gateway does not wake 500 times a second. A call wakes the
/// ticker as it begins, so only a guest resumed after a long host call (a
/// fetch), or a call that began just as the ticker went idle, may see its
/// first tick this late: a CPU budget is then overrun by at most this.
const IDLE_TICK: Duration = Duration::from_millis(100);
const QUIET_TICKS: u32 = 250;

/// The shared engine and its ticker.
#[derive(Clone)]
pub struct PluginEngine {
    pub engine: Engine,
    ticker: Arc<Ticker>,
}

/// Whether plugin code ran since the ticker last looked, how to wake it from
/// its idle pace, and whether it is to stop.
struct Pulse {
    ran: AtomicBool,
    idle: AtomicBool,
    stop: AtomicBool,
    /// The ticker's thread (set once it is started; it starts at full pace).
    ticker: std::sync::OnceLock<std::thread::Thread>,
}

impl Pulse {
    /// Plugin code is running (a call begins, or a running guest reached a
    /// tick).
    fn beat(&self) {
        // Read before written: calls on every worker share this line.
        if !self.ran.load(Ordering::Relaxed) {
            self.ran.store(true, Ordering::Relaxed);
        }
        if self.idle.load(Ordering::Relaxed) {
            self.idle.store(false, Ordering::Relaxed);
            if let Some(ticker) = self.ticker.get() {
                ticker.unpark();
            }
        }
    }
}

/// The ticker's loop: a tick every [`EPOCH_TICK`] while plugin code runs,
/// every [`IDLE_TICK`] after [`QUIET_TICKS`] ticks without any.
fn tick(engine: &Engine, pulse: &Pulse) {
    let mut quiet = 0u32;
    while !pulse.stop.load(Ordering::Relaxed) {
        if quiet < QUIET_TICKS {
            std::thread::sleep(EPOCH_TICK);
        } else {
            pulse.idle.store(true, Ordering::Relaxed);
            std::thread::park_timeout(IDLE_TICK);
            pulse.idle.store(false, Ordering::Relaxed);
        }
        engine.increment_epoch();
        quiet = if pulse.ran.swap(false, Ordering::Relaxed) {
            0
        } else {
            quiet.saturating_add(1)
        };
    }
}

impl std::fmt::Debug for PluginEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PluginEngine")
    }
}

/// Held by every clone of the engine: the last one dropped stops the
/// ticker (the stores' pulses do not keep it running).
struct Ticker(Arc<Pulse>);

impl Drop for Ticker {
    fn drop(&mut self) {
        self.0.stop.store(true, Ordering::Relaxed);
    }
}

impl PluginEngine {
    /// An engine with the pooling allocator sized by `limits`, caching compiled
    /// code in `cache_dir` (no cache when `None`).
    pub fn new(limits: &EngineLimits, cache_dir: Option<PathBuf>) -> wasmtime::Result<Self> {
        let mut pool = PoolingAllocationConfig::default();
        pool.total_memories(limits.total_memories)
            .total_tables(limits.total_memories)
            .total_stacks(limits.total_instances)
            .total_component_instances(limits.total_instances)
            .total_core_instances(limits.total_instances.saturating_mul(8))
            .max_memory_size(limits.max_memory_bytes)
            .table_elements(limits.max_table_elements)
            // Python and JavaScript components are large: many core instances,
            // memories and tables per component, big instance records.
            .max_core_instances_per_component(64)
            .max_memories_per_component(16)
            .max_tables_per_component(32)
            .max_component_instance_size(1 << 20)
            .max_core_instance_size(4 << 20);
        let mut config = Config::new();
        config
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
            .epoch_interruption(true);
        if let Some(dir) = cache_dir {
            let mut cache = wasmtime::CacheConfig::new();
            cache.with_directory(dir);
            config.cache(Some(wasmtime::Cache::new(cache)?));
        }
        let engine = Engine::new(&config)?;
        let pulse = Arc::new(Pulse {
            ran: AtomicBool::new(false),
            idle: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            ticker: std::sync::OnceLock::new(),
        });
        let (ticking, beats) = (engine.clone(), pulse.clone());
        let ticker = std::thread::Builder::new()
            .name("sluice-epoch".into())
            .spawn(move || tick(&ticking, &beats))
            .map_err(|e| wasmtime::Error::msg(format!("cannot start the epoch ticker: {e}")))?;
        let _ = pulse.ticker.set(ticker.thread().clone());
        Ok(Self {
            engine,
            ticker: Arc::new(Ticker(pulse)),
        })
    }

    /// A store for one instance of plugin `name`.
    pub fn store(&self, name: &Arc<str>, limits: &Limits) -> Store<HostState> {
        let mut store = Store::new(
            &self.engine,
            HostState {
                plugin: name.clone(),
                pulse: self.ticker.0.clone(),
                limiter: Limiter::new(limits),
                deadline: Instant::now(),
                budget_exceeded: false,
                grants: None,
                fetches_left: 0,
                wasi: None,
                table: ResourceTable::new(),
            },
        );
        store.limiter(|s| &mut s.limiter);
        store.epoch_deadline_callback(|mut ctx| {
            let state = ctx.data_mut();
            state.pulse.beat();
            if Instant::now() >= state.deadline {
                state.budget_exceeded = true;
                return Err(wasmtime::Error::msg("the plugin ran past its CPU budget"));
            }
            // Yield at every tick so a long call never holds a worker thread.
            Ok(wasmtime::UpdateDeadline::Yield(1))
        });
        store
    }
}

/// What the host keeps per instance.
pub struct HostState {
    pub plugin: Arc<str>,
    /// Tells the epoch ticker that plugin code runs.
    pulse: Arc<Pulse>,
    pub limiter: Limiter,
    /// When the running call's budget ends.
    pub deadline: Instant,
    /// Set when the epoch callback stopped a call for its budget.
    pub budget_exceeded: bool,
    /// What the running call may reach (`host.request-header`, `host.fetch`);
    /// `None` between calls and for calls not made for a request.
    pub grants: Option<super::Grants>,
    /// `host.fetch` calls the running call may still make.
    fetches_left: u32,
    /// WASI state, made on first use for plugins that import WASI. It grants
    /// nothing: no preopened directories, no environment, no arguments, no
    /// sockets, no name lookups; stdio reads nothing and writes are discarded.
    wasi: Option<WasiCtx>,
    table: ResourceTable,
}

impl HostState {
    /// Starts a call: the budget counts from now.
    pub fn begin_call(&mut self, budget: Duration) {
        self.pulse.beat();
        self.deadline = Instant::now() + budget;
        self.budget_exceeded = false;
        self.fetches_left = super::grants::MAX_FETCHES_PER_CALL;
    }
}

fn sandbox() -> WasiCtx {
    WasiCtx::builder()
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .build()
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: self.wasi.get_or_insert_with(sandbox),
            table: &mut self.table,
        }
    }
}

impl types::Host for HostState {}

impl host::Host for HostState {
    fn log(&mut self, level: host::Level, message: String) {
        // A plugin may log, not flood: long lines are cut.
        let message: String = message.chars().take(2000).collect();
        let plugin = &*self.plugin;
        match level {
            host::Level::Debug => tracing::debug!(plugin, "{message}"),
            host::Level::Info => tracing::info!(plugin, "{message}"),
            host::Level::Warn => tracing::warn!(plugin, "{message}"),
            host::Level::Error => tracing::error!(plugin, "{message}"),
        }
    }

    fn now_millis(&mut self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    }

    fn request_header(&mut self, name: String) -> Option<String> {
        self.grants.as_ref()?.header(&name)
    }

    async fn fetch(&mut self, request: host::HttpRequest) -> Result<host::HttpResponse, String> {
        let outbound = self
            .grants
            .as_ref()
            .and_then(|g| g.outbound.clone())
            .ok_or("HTTP calls are granted only to calls made for a request")?;
        if self.fetches_left == 0 {
            return Err(format!(
                "a call may make at most {} HTTP calls",
                super::grants::MAX_FETCHES_PER_CALL
            ));
        }
        self.fetches_left -= 1;
        let request = fetch_request(request)?;
        let (method, host) = (
            request.method.clone(),
            request.url.host_str().unwrap_or_default().to_owned(),
        );
        let timeout = request.timeout;
        let started = Instant::now();
        let answer = tokio::time::timeout(timeout, outbound.fetch(request))
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {} ms", timeout.as_millis())));
        // Waiting is not running: the budget is for the plugin's own work.
        self.deadline += started.elapsed();
        let plugin = &*self.plugin;
        match &answer {
            Ok(r) => tracing::debug!(plugin, %method, host, status = r.status, "plugin fetch"),
            Err(e) => tracing::info!(plugin, %method, host, error = %e, "plugin fetch failed"),
        }
        answer.map(|r| host::HttpResponse {
            status: r.status,
            headers: r
                .headers
                .into_iter()
                .map(|(key, value)| types::Pair { key, value })
                .collect(),
            body: r.body,
        })
    }
}

/// A plugin's request, checked: a known method, an `http(s)` URL, a timeout
/// within the cap.
fn fetch_request(r: host::HttpRequest) -> Result<super::FetchRequest, String> {
    let method = match r.method.to_ascii_uppercase().as_str() {
        "GET" => http::Method::GET,
        "POST" => http::Method::POST,
        "PUT" => http::Method::PUT,
        "PATCH" => http::Method::PATCH,
        "DELETE" => http::Method::DELETE,
        other => return Err(format!("method `{other}` is not allowed")),
    };
    let url = url::Url::parse(&r.url).map_err(|e| format!("bad URL: {e}"))?;
    let timeout =
        Duration::from_millis(u64::from(r.timeout_ms.max(1))).min(super::grants::MAX_FETCH_TIMEOUT);
    Ok(super::FetchRequest {
        method,
        url,
        headers: r.headers.into_iter().map(|p| (p.key, p.value)).collect(),
        body: r.body,
        timeout,
        cache_for: Duration::from_secs(u64::from(r.cache_seconds)),
    })
}

/// A small engine shared by unit tests (one pool for the whole test binary).
#[cfg(test)]
pub fn test_engine() -> PluginEngine {
    static ENGINE: std::sync::OnceLock<PluginEngine> = std::sync::OnceLock::new();
    ENGINE
        .get_or_init(|| {
            let limits = EngineLimits {
                total_memories: 64,
                total_instances: 64,
                ..EngineLimits::default()
            };
            PluginEngine::new(&limits, None).unwrap_or_else(|e| panic!("engine: {e}"))
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ticker_slows_down_when_no_plugin_runs_and_a_call_wakes_it() {
        let engine = PluginEngine::new(&EngineLimits::default(), None).expect("engine");
        let pulse = &engine.ticker.0;
        let waited = Instant::now();
        while !pulse.idle.load(Ordering::Relaxed) {
            assert!(waited.elapsed() < Duration::from_secs(10), "never idle");
            std::thread::sleep(EPOCH_TICK);
        }
        // A call wakes it back to full pace (the end-to-end plugin tests
        // stop a looping guest that began while the ticker was idle).
        pulse.beat();
        assert!(!pulse.idle.load(Ordering::Relaxed));
        assert!(pulse.ran.load(Ordering::Relaxed));
    }
}
