//! State shared by several gateways through Redis (`[redis] url`): rate-limit
//! windows, budgets' spend and the simple cache. Without it each gateway
//! keeps them in memory.
//!
//! - Rate limits: one Lua script checks every bucket of a request and counts
//!   it in all or none, atomically (keys `PREFIXrl:MINUTE:BUCKET:r|t`,
//!   expiring after two minutes); tokens are added with `INCRBY` when an
//!   answer ends.
//! - Budgets: `INCRBYFLOAT` on `PREFIXbudget:PERIOD_START:BUCKET` (a day's
//!   kept two days, a month's forty).
//! - Cache: `PREFIXcache:KEY` holds an encoded entry, expiring after the
//!   storing request's `max_age`; Redis's own `maxmemory` policy bounds it.
//! - The semantic cache's vectors: each kept answer's prompt embedding is
//!   added to the stream `PREFIXsemantic` (trimmed to about `max_entries`)
//!   after its entry; every gateway reads the stream from its start and
//!   indexes what it finds ([`tail_vectors`]), its own vectors included. So
//!   all gateways find every answer by meaning, and a gateway that starts
//!   finds the answers kept before it. Redis's own vector search is not
//!   used: it is a module (RediSearch) or Redis 8's vector sets, and neither
//!   is in the Redis that Debian ships.
//!
//! When Redis cannot be reached (each command waits at most `timeout_ms`),
//! a request is not failed for it: limits and budgets fall back to this
//! gateway's own counters, and the cache misses. Each worker keeps one
//! multiplexed connection that reconnects by itself.
//!
//! This module calls [`crate::limits`] and [`crate::cache`] for their
//! arithmetic and encodings.

use std::time::Duration;

use redis::AsyncCommands;
use redis::aio::ConnectionManager;

use crate::cache::Entry;
use crate::limits::budget::{Charge, Exhausted, Period};
use crate::limits::{Admitted, Bucket, Limited};

/// `[redis]` in the server config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisSettings {
    /// `redis://HOST:PORT/DB` or `unix:///PATH`.
    pub url: String,
    /// Put before every key, so gateways of different deployments can
    /// share a server.
    pub prefix: String,
    /// The longest a command may take before the gateway goes on without it.
    pub timeout: Duration,
}

/// One worker's handle on Redis.
pub struct Redis {
    client: redis::Client,
    prefix: String,
    timeout: Duration,
    conn: tokio::sync::OnceCell<ConnectionManager>,
    admit: redis::Script,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// KEYS: each bucket's requests key then its tokens key. ARGV[1]: the keys'
/// lifetime; then each bucket's rpm and tpm (-1: none). Refused: {i, unit,
/// used}; admitted: {0, 0, 0, then each bucket's requests and tokens}.
const ADMIT: &str = r"
local n = #KEYS / 2
for i = 1, n do
  local rpm = tonumber(ARGV[2 * i])
  local tpm = tonumber(ARGV[2 * i + 1])
  if rpm >= 0 then
    local used = tonumber(redis.call('GET', KEYS[2 * i - 1]) or '0')
    if used >= rpm then return {i, 1, used} end
  end
  if tpm >= 0 then
    local used = tonumber(redis.call('GET', KEYS[2 * i]) or '0')
    if used >= tpm then return {i, 2, used} end
  end
end
local out = {0, 0, 0}
for i = 1, n do
  local r = redis.call('INCR', KEYS[2 * i - 1])
  if r == 1 then redis.call('EXPIRE', KEYS[2 * i - 1], ARGV[1]) end
  table.insert(out, r)
  table.insert(out, tonumber(redis.call('GET', KEYS[2 * i]) or '0'))
end
return out
";

type Failed = redis::RedisError;

impl Redis {
    pub fn new(settings: &RedisSettings) -> Result<Self, String> {
        let client =
            redis::Client::open(settings.url.as_str()).map_err(|e| format!("[redis] url: {e}"))?;
        Ok(Self {
            client,
            prefix: settings.prefix.clone(),
            timeout: settings.timeout,
            conn: tokio::sync::OnceCell::new(),
            admit: redis::Script::new(ADMIT),
        })
    }

    async fn conn(&self) -> Result<ConnectionManager, Failed> {
        let timeout = self.timeout;
        self.conn
            .get_or_try_init(|| async {
                let config = redis::aio::ConnectionManagerConfig::new()
                    .set_connection_timeout(timeout)
                    .set_response_timeout(timeout)
                    .set_number_of_retries(1)
                    .set_max_delay(1000);
                ConnectionManager::new_with_config(self.client.clone(), config).await
            })
            .await
            .cloned()
    }

    /// Runs `op` within the timeout.
    async fn run<T>(
        &self,
        op: impl AsyncFnOnce(ConnectionManager) -> Result<T, Failed>,
    ) -> Result<T, Failed> {
        let io = async { op(self.conn().await?).await };
        match tokio::time::timeout(self.timeout, io).await {
            Ok(result) => result,
            Err(_) => Err(Failed::from(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "no answer from Redis in time",
            ))),
        }
    }

    fn window_key(&self, minute: u64, bucket: &str, unit: char) -> String {
        format!("{}rl:{minute}:{bucket}:{unit}", self.prefix)
    }

    /// [`crate::limits::RateLimiter::admit`], counted in Redis.
    pub async fn admit(
        &self,
        buckets: &[Bucket],
        now: u64,
    ) -> Result<Result<Admitted, Limited>, Failed> {
        if buckets.is_empty() {
            return Ok(Ok(Admitted::default()));
        }
        let minute = now / 60;
        let mut invocation = self.admit.prepare_invoke();
        invocation.arg(120);
        for b in buckets {
            invocation
                .key(self.window_key(minute, &b.id, 'r'))
                .key(self.window_key(minute, &b.id, 't'))
                .arg(b.rpm.map_or(-1, |n| n as i64))
                .arg(b.tpm.map_or(-1, |n| n as i64));
        }
        let out: Vec<i64> = self
            .run(async |mut c| invocation.invoke_async(&mut c).await)
            .await?;
        let at = |i: usize| out.get(i).copied().unwrap_or(0).max(0) as u64;
        if at(0) > 0 {
            // Refused: rebuild the bucket's counts for the shared arithmetic.
            let i = at(0) as usize - 1;
            let mut used = vec![(0, 0); buckets.len()];
            used[i] = if at(1) == 1 { (at(2), 0) } else { (0, at(2)) };
            return Ok(crate::limits::refused(buckets, &used, now).map(|()| Admitted::default()));
        }
        let after: Vec<(u64, u64)> = (0..buckets.len())
            .map(|i| (at(3 + 2 * i), at(4 + 2 * i)))
            .collect();
        Ok(Ok(crate::limits::admitted(buckets, &after, now)))
    }

    /// Adds an answer's tokens to the buckets with a token limit.
    pub async fn charge_tokens(
        &self,
        buckets: &[Bucket],
        tokens: u64,
        now: u64,
    ) -> Result<(), Failed> {
        let minute = now / 60;
        let mut pipe = redis::pipe();
        for b in buckets.iter().filter(|b| b.tpm.is_some()) {
            let key = self.window_key(minute, &b.id, 't');
            pipe.incr(&key, tokens).ignore().expire(&key, 120).ignore();
        }
        self.run(async |mut c| pipe.query_async::<()>(&mut c).await)
            .await
    }

    fn budget_key(&self, c: &Charge, now: i64) -> String {
        let (bucket, start) = c.slot(now);
        format!("{}budget:{start}:{bucket}", self.prefix)
    }

    /// [`crate::limits::budget::Budgets::check`] against Redis.
    pub async fn check_budgets(
        &self,
        charges: &[Charge],
        now: i64,
    ) -> Result<Result<(), Exhausted>, Failed> {
        if charges.is_empty() {
            return Ok(Ok(()));
        }
        let keys: Vec<String> = charges.iter().map(|c| self.budget_key(c, now)).collect();
        let spent: Vec<Option<f64>> = self
            .run(async |mut c| redis::cmd("MGET").arg(&keys).query_async(&mut c).await)
            .await?;
        let spent: Vec<f64> = spent.into_iter().map(Option::unwrap_or_default).collect();
        Ok(crate::limits::budget::exhausted(charges, &spent))
    }

    /// Adds `usd` to every budget in `charges`.
    pub async fn spend(&self, charges: &[Charge], usd: f64, now: i64) -> Result<(), Failed> {
        let mut pipe = redis::pipe();
        for c in charges {
            let key = self.budget_key(c, now);
            pipe.cmd("INCRBYFLOAT").arg(&key).arg(usd).ignore();
            let keep = match c.budget.period {
                Period::Day => Some(2 * 86_400),
                Period::Month => Some(40 * 86_400),
                Period::Total => None,
            };
            if let Some(secs) = keep {
                pipe.expire(&key, secs).ignore();
            }
        }
        self.run(async |mut c| pipe.query_async::<()>(&mut c).await)
            .await
    }

    fn cache_key(&self, key: &crate::cache::Key) -> String {
        use std::fmt::Write;
        let mut out = format!("{}cache:", self.prefix);
        for b in key {
            let _ = write!(out, "{b:02x}");
        }
        out
    }

    /// The entry for `key` if it is at most `max_age_s` old.
    pub async fn cache_get(
        &self,
        key: &crate::cache::Key,
        max_age_s: u64,
        now_ms: i64,
    ) -> Result<Option<Entry>, Failed> {
        let key = self.cache_key(key);
        let bytes: Option<Vec<u8>> = self.run(async |mut c| c.get(&key).await).await?;
        Ok(bytes
            .as_deref()
            .and_then(Entry::decode)
            .filter(|e| e.fresh(max_age_s, now_ms)))
    }

    /// Keeps `entry` for `max_age_s`.
    pub async fn cache_put(
        &self,
        key: &crate::cache::Key,
        entry: &Entry,
        max_age_s: u64,
    ) -> Result<(), Failed> {
        let key = self.cache_key(key);
        let bytes = entry.encode();
        self.run(async |mut c| c.set_ex(&key, bytes, max_age_s.max(1)).await)
            .await
    }
}

/// Reads the semantic cache's vectors from the stream in Redis into this
/// gateway's index, from the stream's start, for as long as the process
/// runs (on a thread of its own, with a connection of its own: each read
/// waits up to a second for new vectors). Redis failures are said in the log
/// and the reading starts again a second later where it stopped.
pub fn tail_vectors(settings: &RedisSettings, cache: std::sync::Arc<crate::cache::Cache>) {
    let Ok(redis) = Redis::new(settings) else {
        return;
    };
    let spawned = std::thread::Builder::new()
        .name("sluice-vectors".into())
        .spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                let mut last = "0".to_owned();
                loop {
                    if let Err(e) = redis.read_vectors(&cache, &mut last).await {
                        failed("reading the semantic cache's vectors", &e);
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            });
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the semantic cache's reader");
    }
}

impl Redis {
    fn vectors_key(&self) -> String {
        format!("{}semantic", self.prefix)
    }

    /// Keeps `entry` for `max_age_s`, then adds its prompt's embedding in
    /// `scope` to the stream every gateway indexes (after the entry: a
    /// vector found always has its answer, until the answer expires).
    pub async fn cache_put_semantic(
        &self,
        key: &crate::cache::Key,
        entry: &Entry,
        max_age_s: u64,
        scope: &crate::cache::Key,
        vector: &[f32],
        max_entries: usize,
    ) -> Result<(), Failed> {
        self.cache_put(key, entry, max_age_s).await?;
        let stream = self.vectors_key();
        let bytes: Vec<u8> = vector.iter().flat_map(|x| x.to_le_bytes()).collect();
        let fields: [(&str, &[u8]); 3] = [("s", scope), ("k", key), ("v", &bytes)];
        let trim = redis::streams::StreamMaxlen::Approx(max_entries.max(1));
        self.run(async |mut c| {
            c.xadd_maxlen::<_, _, _, _, ()>(&stream, trim, "*", &fields)
                .await
        })
        .await
    }

    /// Indexes the stream's vectors after `last` until a read fails.
    async fn read_vectors(
        &self,
        cache: &crate::cache::Cache,
        last: &mut String,
    ) -> Result<(), Failed> {
        use redis::streams::{StreamReadOptions, StreamReadReply};
        let Some((_, index)) = cache.semantic() else {
            return Ok(());
        };
        let mut conn = self.client.get_multiplexed_async_connection().await?;
        let stream = self.vectors_key();
        let options = StreamReadOptions::default().block(1000).count(512);
        loop {
            let reply: Option<StreamReadReply> = conn
                .xread_options(&[&stream], &[last.as_str()], &options)
                .await?;
            for id in reply.iter().flat_map(|r| &r.keys).flat_map(|k| &k.ids) {
                let field = |name: &str| match id.map.get(name) {
                    Some(redis::Value::BulkString(b)) => Some(b.as_slice()),
                    _ => None,
                };
                let key =
                    |name: &str| -> Option<crate::cache::Key> { field(name)?.try_into().ok() };
                if let (Some(scope), Some(k), Some(v)) = (key("s"), key("k"), field("v")) {
                    let vector = v
                        .chunks_exact(4)
                        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                        .collect();
                    index.insert(scope, k, vector);
                }
                last.clone_from(&id.id);
            }
        }
    }
}

/// What `op` answers when the gateways share state and Redis answers in
/// time; `None` without Redis or when it fails (said in the log), so the
/// caller goes on with this gateway's own state.
pub async fn ask<T>(
    redis: Option<&Redis>,
    what: &str,
    op: impl AsyncFnOnce(&Redis) -> Result<T, Failed>,
) -> Option<T> {
    match op(redis?).await {
        Ok(answer) => Some(answer),
        Err(e) => {
            failed(what, &e);
            None
        }
    }
}

/// Sends `op` to Redis without waiting for it, on the current runtime (the
/// meter and the cache's keeper end outside any async function); a failure
/// is said in the log.
pub fn tell<F>(
    redis: std::sync::Arc<Redis>,
    what: &'static str,
    op: impl FnOnce(std::sync::Arc<Redis>) -> F,
) where
    F: std::future::Future<Output = Result<(), Failed>> + Send + 'static,
{
    if let Ok(handle) = tokio::runtime::Handle::try_current() {
        let work = op(redis);
        handle.spawn(async move {
            if let Err(e) = work.await {
                failed(what, &e);
            }
        });
    }
}

/// Says once a second at most that Redis failed and what the gateway did
/// instead.
fn failed(what: &str, e: &Failed) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = crate::usage::now_ms().max(0) as u64 / 1000;
    if LAST.swap(now, Ordering::Relaxed) != now {
        tracing::warn!(error = %e, "Redis failed ({what}): going on with this gateway's own state");
    }
}
