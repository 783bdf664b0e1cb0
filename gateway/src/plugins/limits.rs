//! Every limit a plugin runs under, in one place: the engine's pool (shared by
//! all plugins), and per plugin the CPU budget of a call, its linear memory and
//! table size, and how its instances are reused.

use std::time::Duration;

use wasmtime::ResourceLimiter;

/// How instances of a plugin are reused between calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isolation {
    /// Warm instances are kept and reused, one call at a time each (fast; state a
    /// plugin keeps in memory survives between requests).
    Pooled,
    /// A fresh instance for every call (nothing survives a request; costs an
    /// instantiation per call: ~20 µs for a small Rust plugin, ~1 ms for Python).
    PerRequest,
}

/// One plugin's limits. Defaults suit Rust, C, Python and JavaScript plugins.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Wall-clock time one call may run; past it the call fails and the instance
    /// is thrown away.
    pub cpu_budget: Duration,
    /// Linear memory per instance (each memory).
    pub max_memory_bytes: usize,
    /// Elements per table.
    pub max_table_elements: usize,
    /// Instances alive at once (busy + idle); further calls wait for one.
    pub max_instances: usize,
    /// An instance is retired after this many calls.
    pub max_calls_per_instance: u64,
    /// An instance is retired once its memory grew past this.
    pub recycle_memory_bytes: usize,
    pub isolation: Isolation,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            cpu_budget: Duration::from_millis(100),
            max_memory_bytes: 64 << 20,
            max_table_elements: 200_000,
            max_instances: 32,
            max_calls_per_instance: 100_000,
            recycle_memory_bytes: 48 << 20,
            isolation: Isolation::Pooled,
        }
    }
}

/// The engine-wide pool of the pooling allocator: the ceiling of every plugin's
/// own limits.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineLimits {
    /// Linear memories alive at once across all plugins.
    pub total_memories: u32,
    /// Largest linear memory any plugin may get.
    pub max_memory_bytes: usize,
    /// Largest table any plugin may get.
    pub max_table_elements: usize,
    /// Component instances alive at once across all plugins.
    pub total_instances: u32,
}

impl Default for EngineLimits {
    fn default() -> Self {
        Self {
            total_memories: 512,
            max_memory_bytes: 256 << 20,
            max_table_elements: 200_000,
            total_instances: 512,
        }
    }
}

/// A store's limiter: refuses growth past the plugin's limits and remembers the
/// largest memory seen, so a bloated instance can be retired.
#[derive(Debug)]
pub struct Limiter {
    pub max_memory_bytes: usize,
    pub max_table_elements: usize,
    pub peak_memory_bytes: usize,
    pub refused_growth: bool,
}

impl Limiter {
    pub fn new(limits: &Limits) -> Self {
        Self {
            max_memory_bytes: limits.max_memory_bytes,
            max_table_elements: limits.max_table_elements,
            peak_memory_bytes: 0,
            refused_growth: false,
        }
    }
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_memory_bytes {
            self.refused_growth = true;
            return Ok(false);
        }
        self.peak_memory_bytes = self.peak_memory_bytes.max(desired);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_table_elements {
            self.refused_growth = true;
            return Ok(false);
        }
        Ok(true)
    }
}
