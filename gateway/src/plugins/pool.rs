//! Warm instances of one plugin version, one call at a time each.
//!
//! A call leases an instance (an idle one, or a fresh one from the
//! `InstancePre`), runs, and gives it back through [`Pool::finish`]. An instance
//! is thrown away instead of kept after a trap or a timeout (it is poisoned),
//! after `max_calls_per_instance` calls, once its memory passed
//! `recycle_memory_bytes`, always under `isolation = "per-request"`, and whenever
//! a lease is dropped without `finish` (a stream the client left).

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmtime::Store;

use super::engine::{HostState, PluginEngine};
use super::limits::{Isolation, Limits};
use super::{PluginError, describe};

/// A world's pre-instantiated component: how to make one more instance.
pub trait WorldPre: Send + Sync + 'static {
    type Bindings: Send + Sync + 'static;
    fn instantiate<'a>(
        &'a self,
        store: &'a mut Store<HostState>,
    ) -> impl Future<Output = wasmtime::Result<Self::Bindings>> + Send + 'a;
}

macro_rules! world_pre {
    ($pre:ty, $bindings:ty) => {
        impl WorldPre for $pre {
            type Bindings = $bindings;
            fn instantiate<'a>(
                &'a self,
                store: &'a mut Store<HostState>,
            ) -> impl Future<Output = wasmtime::Result<$bindings>> + Send + 'a {
                self.instantiate_async(store)
            }
        }
    };
}
use super::v0_1::{guardrail, provider, router};
world_pre!(guardrail::GuardrailPre<HostState>, guardrail::Guardrail);
world_pre!(provider::ProviderPre<HostState>, provider::Provider);
world_pre!(router::RouterPre<HostState>, router::Router);

/// One live instance.
pub struct Instance<B> {
    pub store: Store<HostState>,
    pub bindings: B,
    calls: u64,
}

/// Counters of one plugin version, for `plugins list` and the admin API.
#[derive(Debug, Default)]
pub struct Stats {
    pub calls: AtomicU64,
    pub errors: AtomicU64,
    pub timeouts: AtomicU64,
    pub traps: AtomicU64,
    pub instances_created: AtomicU64,
    pub busy_micros: AtomicU64,
}

impl Stats {
    pub fn snapshot(&self) -> serde_json::Value {
        let calls = self.calls.load(Ordering::Relaxed);
        let busy = self.busy_micros.load(Ordering::Relaxed);
        serde_json::json!({
            "calls": calls,
            "errors": self.errors.load(Ordering::Relaxed),
            "timeouts": self.timeouts.load(Ordering::Relaxed),
            "traps": self.traps.load(Ordering::Relaxed),
            "instances_created": self.instances_created.load(Ordering::Relaxed),
            "mean_latency_us": busy.checked_div(calls).unwrap_or(0),
        })
    }
}

pub struct Pool<P: WorldPre> {
    name: Arc<str>,
    engine: PluginEngine,
    pre: P,
    pub limits: Limits,
    idle: Mutex<Vec<Instance<P::Bindings>>>,
    permits: Arc<Semaphore>,
    pub stats: Stats,
}

/// An instance leased for one call (or one stream). Dropped without
/// [`Pool::finish`], the instance is thrown away.
pub struct Lease<P: WorldPre> {
    pub instance: Instance<P::Bindings>,
    started: Instant,
    _permit: OwnedSemaphorePermit,
}

impl<P: WorldPre> Pool<P> {
    pub fn new(name: Arc<str>, engine: PluginEngine, pre: P, limits: Limits) -> Self {
        let permits = Arc::new(Semaphore::new(limits.max_instances.max(1)));
        Self {
            name,
            engine,
            pre,
            limits,
            idle: Mutex::new(Vec::new()),
            permits,
            stats: Stats::default(),
        }
    }

    /// An instance for one call, with the call's CPU budget started.
    pub async fn lease(&self) -> Result<Lease<P>, PluginError> {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| PluginError::Unavailable(self.name.to_string()))?;
        let idle = self.idle.lock().ok().and_then(|mut idle| idle.pop());
        let mut instance = match idle {
            Some(instance) => instance,
            None => self.fresh().await?,
        };
        instance.store.data_mut().begin_call(self.limits.cpu_budget);
        instance.store.set_epoch_deadline(1);
        Ok(Lease {
            instance,
            started: Instant::now(),
            _permit: permit,
        })
    }

    async fn fresh(&self) -> Result<Instance<P::Bindings>, PluginError> {
        let mut store = self.engine.store(&self.name, &self.limits);
        store.data_mut().begin_call(self.limits.cpu_budget);
        store.set_epoch_deadline(1);
        let bindings = self.pre.instantiate(&mut store).await.map_err(|e| {
            self.stats.errors.fetch_add(1, Ordering::Relaxed);
            PluginError::Instantiate {
                plugin: self.name.to_string(),
                detail: describe(&e),
            }
        })?;
        self.stats.instances_created.fetch_add(1, Ordering::Relaxed);
        Ok(Instance {
            store,
            bindings,
            calls: 0,
        })
    }

    /// Ends a call: keeps the instance when it is healthy, and turns a trap or a
    /// timeout into an error naming the plugin.
    pub fn finish<R>(
        &self,
        lease: Lease<P>,
        result: wasmtime::Result<R>,
    ) -> Result<R, PluginError> {
        let Lease {
            mut instance,
            started,
            _permit,
            ..
        } = lease;
        let elapsed = started.elapsed();
        self.stats.calls.fetch_add(1, Ordering::Relaxed);
        self.stats
            .busy_micros
            .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
        match result {
            Ok(value) => {
                instance.calls += 1;
                let keep = self.limits.isolation == Isolation::Pooled
                    && instance.calls < self.limits.max_calls_per_instance
                    && instance.store.data().limiter.peak_memory_bytes
                        <= self.limits.recycle_memory_bytes;
                if keep && let Ok(mut idle) = self.idle.lock() {
                    idle.push(instance);
                }
                Ok(value)
            }
            Err(e) => {
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
                let state = instance.store.data();
                if state.budget_exceeded {
                    self.stats.timeouts.fetch_add(1, Ordering::Relaxed);
                    return Err(PluginError::Timeout {
                        plugin: self.name.to_string(),
                        budget_ms: self.limits.cpu_budget.as_millis() as u64,
                    });
                }
                self.stats.traps.fetch_add(1, Ordering::Relaxed);
                let mut detail = describe(&e);
                if state.limiter.refused_growth {
                    detail.push_str(&format!(
                        " (memory or table growth past the plugin's limit of {} MiB was refused)",
                        self.limits.max_memory_bytes >> 20
                    ));
                }
                Err(PluginError::Trap {
                    plugin: self.name.to_string(),
                    detail,
                })
            }
        }
    }

    /// Idle instances now.
    pub fn idle(&self) -> usize {
        self.idle.lock().map(|i| i.len()).unwrap_or(0)
    }
}
