//! Usage and cost: what each request used (tokens read from the answer as
//! it passes, [`tokens`]), what that cost ([`pricing`]), and the request log
//! in the state database, written by a background thread in batches
//! ([`Recorder`]) and read by the admin API ([`query`]).
//!
//! A request never waits for the log: a record goes into a bounded queue
//! (when it is full, the record is counted as dropped and the request goes
//! on), and the writer takes what gathered every 100 ms, in one transaction.
//! On graceful shutdown the queue is written out before the process exits. Records older than `[usage] retention_days` are deleted hourly.
//!
//! This module calls only [`crate::state`], [`crate::providers::sse`] to
//! read streams, and [`crate::json_text`] to read answers.

pub mod pricing;
pub mod query;
pub mod tokens;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use pricing::{Price, PriceEntry, Pricing};
pub use tokens::{StreamMeter, Tokens};

use crate::state::{Db, StateError};

/// `[usage]` in the server config.
#[derive(Debug, Clone, PartialEq)]
pub struct UsageSettings {
    /// Whether requests are recorded at all.
    pub enabled: bool,
    /// Records older than this are deleted; 0 keeps them forever.
    pub retention_days: u64,
    /// Whether request and answer bodies are kept (secrets redacted).
    pub log_bodies: bool,
    /// The most of each body kept.
    pub max_body_bytes: usize,
}

impl Default for UsageSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            retention_days: 30,
            log_bodies: false,
            max_body_bytes: 16 * 1024,
        }
    }
}

/// One request, as the log keeps it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Record {
    /// Unix milliseconds when the request arrived.
    pub ts_ms: i64,
    /// The request id (the client's `x-portkey-trace-id` when it sent one).
    pub trace_id: String,
    /// The gateway key's id (never the key).
    pub key_id: Option<String>,
    pub virtual_key: Option<String>,
    pub provider: Option<String>,
    pub model: Option<String>,
    /// The path asked for (`/v1/chat/completions`).
    pub route: String,
    pub status: u16,
    /// Until the answer's last byte left.
    pub latency_ms: u64,
    /// Until its first byte left.
    pub ttft_ms: Option<u64>,
    pub tokens: Option<Tokens>,
    /// US dollars; `None` when the model is not priced.
    pub cost: Option<f64>,
    /// What a cache hit saved: the answer's price.
    pub saved_cost: Option<f64>,
    /// `HIT`, `MISS`, ... when a cache was asked.
    pub cache: Option<String>,
    pub retries: u32,
    /// The config path of the target that answered (`0.1`).
    pub target: Option<String>,
    pub stream: bool,
    /// JSON texts.
    pub hook_results: Option<String>,
    pub metadata: Option<String>,
    pub request_body: Option<String>,
    pub response_body: Option<String>,
    /// The budgets `cost` was added to: bucket and period start.
    pub budgets: Vec<crate::limits::budget::Slot>,
}

enum Msg {
    Record(Box<Record>),
    /// Write what is queued, then answer.
    Flush(SyncSender<()>),
    /// Write what is queued, then stop.
    Stop,
}

/// Queued records at most; past it a record is dropped and counted.
const QUEUE: usize = 64 * 1024;
/// Records written in one transaction at most.
const BATCH: usize = 1024;
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
/// How long records gather before they are written together.
const GATHER: Duration = Duration::from_millis(100);

/// The request log's writer.
pub struct Recorder {
    settings: UsageSettings,
    /// A connection of its own for the admin API's reads.
    reader: Option<Db>,
    tx: Option<SyncSender<Msg>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    written: Arc<AtomicU64>,
    dropped: AtomicU64,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("settings", &self.settings)
            .field("written", &self.written)
            .field("dropped", &self.dropped)
            .finish()
    }
}

impl Recorder {
    /// Starts the writer on its own connection to the database at `path`.
    pub fn start(path: &Path, settings: UsageSettings) -> Result<Self, StateError> {
        if !settings.enabled {
            return Ok(Self::off());
        }
        let db = Db::open(path)?;
        db.with(|c| c.pragma_update(None, "synchronous", "NORMAL"))?;
        let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE);
        let written = Arc::new(AtomicU64::new(0));
        let count = written.clone();
        let retention = settings.retention_days;
        let thread = std::thread::Builder::new()
            .name("sluice-usage".into())
            .spawn(move || write_loop(&db, &rx, &count, retention))
            .map_err(|e| StateError::io(path, e))?;
        Ok(Self {
            settings,
            reader: Some(Db::open(path)?),
            tx: Some(tx),
            thread: Mutex::new(Some(thread)),
            written,
            dropped: AtomicU64::new(0),
        })
    }

    /// A recorder that keeps nothing (`[usage] enabled = false`, tests).
    pub fn off() -> Self {
        Self {
            settings: UsageSettings {
                enabled: false,
                ..UsageSettings::default()
            },
            reader: None,
            tx: None,
            thread: Mutex::new(None),
            written: Arc::default(),
            dropped: AtomicU64::new(0),
        }
    }

    pub fn settings(&self) -> &UsageSettings {
        &self.settings
    }

    pub fn enabled(&self) -> bool {
        self.tx.is_some()
    }

    /// Runs a read on the log (`None` when it is off). It waits on the
    /// disk: call it from the blocking pool.
    pub fn read<T>(
        &self,
        f: impl FnOnce(&rusqlite::Connection) -> rusqlite::Result<T>,
    ) -> Option<Result<T, StateError>> {
        self.reader.as_ref().map(|db| db.with(f))
    }

    /// Queues a record; never waits.
    pub fn record(&self, record: Record) {
        let Some(tx) = &self.tx else { return };
        match tx.try_send(Msg::Record(Box::new(record))) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                if self
                    .dropped
                    .fetch_add(1, Ordering::Relaxed)
                    .is_multiple_of(10_000)
                {
                    tracing::warn!("the request log cannot keep up: records are being dropped");
                }
            }
            Err(TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Waits until every record queued so far is written.
    pub fn flush(&self) {
        let Some(tx) = &self.tx else { return };
        let (done, wait) = std::sync::mpsc::sync_channel(1);
        if tx.send(Msg::Flush(done)).is_ok() {
            let _ = wait.recv();
        }
    }

    /// Writes what is queued and stops the writer (graceful shutdown);
    /// records that come later are counted as dropped.
    pub fn close(&self) {
        let Some(tx) = &self.tx else { return };
        let thread = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(thread) = thread
            && tx.send(Msg::Stop).is_ok()
            && thread.join().is_err()
        {
            tracing::error!("the request log's writer panicked");
        }
    }

    /// Records written and dropped since start.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.written.load(Ordering::Relaxed),
            self.dropped.load(Ordering::Relaxed),
        )
    }
}

fn write_loop(db: &Db, rx: &Receiver<Msg>, written: &AtomicU64, retention_days: u64) {
    let mut batch: Vec<Box<Record>> = Vec::with_capacity(BATCH);
    let mut pruned: Option<Instant> = None;
    let write = |batch: &mut Vec<Box<Record>>| {
        if batch.is_empty() {
            return;
        }
        match db.with(|c| insert(c, batch)) {
            Ok(()) => {
                written.fetch_add(batch.len() as u64, Ordering::Relaxed);
            }
            Err(e) => {
                tracing::warn!(error = %e, records = batch.len(), "cannot write request records")
            }
        }
        batch.clear();
    };
    loop {
        if retention_days > 0 && pruned.is_none_or(|t| t.elapsed() >= PRUNE_EVERY) {
            pruned = Some(Instant::now());
            let cutoff = now_ms() - (retention_days * 86_400_000) as i64;
            if let Err(e) = db.with(|c| c.execute("DELETE FROM requests WHERE ts < ?1", [cutoff])) {
                tracing::warn!(error = %e, "cannot delete old request records");
            }
        }
        let first = match rx.recv_timeout(PRUNE_EVERY) {
            Ok(m) => m,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        // A record woke the writer: let more gather. Records queued while it
        // sleeps wake nobody, and a whole interval's go in one transaction.
        if matches!(first, Msg::Record(_)) {
            std::thread::sleep(GATHER);
        }
        let mut flushes = Vec::new();
        let mut stop = false;
        let mut next = Some(first);
        while let Some(m) = next.take() {
            match m {
                Msg::Record(r) => batch.push(r),
                Msg::Flush(done) => flushes.push(done),
                Msg::Stop => stop = true,
            }
            if batch.len() >= BATCH {
                write(&mut batch);
            }
            if !stop {
                next = rx.try_recv().ok();
            }
        }
        write(&mut batch);
        for done in flushes {
            let _ = done.send(());
        }
        if stop {
            return;
        }
    }
}

/// The request log's columns, in the order [`bind`] binds them.
const COLUMNS: &str = "ts, trace_id, key_id, virtual_key, provider, model, route, status,
    latency_ms, ttft_ms, input_tokens, output_tokens, cached_tokens, cost, cache, retries,
    target, stream, hook_results, metadata, request_body, response_body, saved_cost";
const COLUMN_COUNT: usize = count_columns(COLUMNS);

/// The names in a comma-separated column list.
const fn count_columns(list: &str) -> usize {
    let bytes = list.as_bytes();
    let (mut n, mut i) = (1, 0);
    while i < bytes.len() {
        if bytes[i] == b',' {
            n += 1;
        }
        i += 1;
    }
    n
}
/// Records inserted by one statement: a statement's own cost (compiling is
/// cached, but each run starts and ends the VM) is shared by that many rows.
const ROWS_PER_INSERT: usize = 32;

static INSERT_MANY: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| insert_sql(ROWS_PER_INSERT));
static INSERT_ONE: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| insert_sql(1));

/// `INSERT INTO requests` of `rows` rows.
fn insert_sql(rows: usize) -> String {
    let row = format!("({})", vec!["?"; COLUMN_COUNT].join(","));
    format!(
        "INSERT INTO requests ({COLUMNS}) VALUES {}",
        vec![row; rows].join(",")
    )
}

/// Binds `r`'s columns from parameter `first` (1-based) on.
fn bind(stmt: &mut rusqlite::Statement<'_>, first: usize, r: &Record) -> rusqlite::Result<()> {
    let t = r.tokens;
    let values: [&dyn rusqlite::ToSql; COLUMN_COUNT] = [
        &r.ts_ms,
        &r.trace_id,
        &r.key_id,
        &r.virtual_key,
        &r.provider,
        &r.model,
        &r.route,
        &r.status,
        &(r.latency_ms as i64),
        &r.ttft_ms.map(|v| v as i64),
        &t.map(|t| t.input as i64),
        &t.map(|t| t.output as i64),
        &t.map(|t| t.cached as i64),
        &r.cost,
        &r.cache,
        &r.retries,
        &r.target,
        &r.stream,
        &r.hook_results,
        &r.metadata,
        &r.request_body,
        &r.response_body,
        &r.saved_cost,
    ];
    for (i, v) in values.into_iter().enumerate() {
        stmt.raw_bind_parameter(first + i, v)?;
    }
    Ok(())
}

fn insert(c: &rusqlite::Connection, batch: &[Box<Record>]) -> rusqlite::Result<()> {
    let tx = c.unchecked_transaction()?;
    {
        let (mut many, mut one) = (
            tx.prepare_cached(&INSERT_MANY)?,
            tx.prepare_cached(&INSERT_ONE)?,
        );
        let mut chunks = batch.chunks_exact(ROWS_PER_INSERT);
        for chunk in &mut chunks {
            for (n, r) in chunk.iter().enumerate() {
                bind(&mut many, 1 + n * COLUMN_COUNT, r)?;
            }
            many.raw_execute()?;
        }
        for r in chunks.remainder() {
            bind(&mut one, 1, r)?;
            one.raw_execute()?;
        }
        let mut spend = tx.prepare_cached(
            "INSERT INTO budget_spend (bucket, period_start, usd) VALUES (?1, ?2, ?3)
             ON CONFLICT (bucket, period_start) DO UPDATE SET usd = usd + excluded.usd",
        )?;
        for r in batch {
            if let Some(cost) = r.cost.filter(|c| *c > 0.0) {
                for (bucket, start) in &r.budgets {
                    spend.execute(rusqlite::params![bucket, start, cost])?;
                }
            }
        }
    }
    tx.commit()
}

/// What budgets have spent in periods that may still be running (this
/// month's and every `total`), for [`crate::limits::budget::Budgets::restore`].
pub fn budget_spend(
    db: &Db,
    now: i64,
) -> Result<Vec<(crate::limits::budget::Slot, f64)>, StateError> {
    let since = crate::limits::budget::Period::Month.start(now);
    db.with(|c| {
        let mut stmt = c.prepare(
            "SELECT bucket, period_start, usd FROM budget_spend
             WHERE period_start = 0 OR period_start >= ?1",
        )?;
        let rows = stmt.query_map([since], |r| Ok(((r.get(0)?, r.get(1)?), r.get(2)?)))?;
        rows.collect()
    })
}

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A body as the log keeps it: at most `max` bytes (cut at a character
/// boundary), with the values of JSON fields that name secrets and
/// key-shaped strings replaced by `[REDACTED]`.
pub fn redacted_body(body: &[u8], max: usize) -> String {
    let text = match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(mut value) => {
            redact(&mut value);
            value.to_string()
        }
        Err(_) => crate::telemetry::redact_secrets(&String::from_utf8_lossy(body)),
    };
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…[{} more bytes]", &text[..end], text.len() - end)
}

fn redact(value: &mut serde_json::Value) {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                if v.is_string() && crate::telemetry::names_secret(k) {
                    *v = Value::String("[REDACTED]".into());
                } else {
                    redact(v);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact),
        Value::String(s) => {
            let clean = crate::telemetry::redact_secrets(s);
            if clean != *s {
                *s = clean;
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_lose_their_secrets_and_their_excess() {
        let body = br#"{"model":"m","api_key":"abc","max_tokens":5,
            "messages":[{"role":"user","content":"my key is sk-proj-AAAAAAAAAAAAAAAAAAAAAAAA ok"}]}"#;
        let kept = redacted_body(body, 10_000);
        assert!(!kept.contains("abc"), "{kept}");
        assert!(!kept.contains("sk-proj-AAAA"), "{kept}");
        assert!(kept.contains("\"max_tokens\":5"), "{kept}");
        assert!(kept.contains("[REDACTED]"), "{kept}");
        let long = redacted_body("é".repeat(100).as_bytes(), 11);
        assert!(long.starts_with("ééééé…["), "{long}");
    }

    /// A recorder on a new database: its directory (to remove), its path.
    fn recorder() -> (std::path::PathBuf, std::path::PathBuf, Recorder) {
        let dir = std::env::temp_dir().join(format!("sluice-usage-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("state.db");
        let recorder = Recorder::start(&path, UsageSettings::default()).expect("start");
        (dir, path, recorder)
    }

    #[test]
    fn every_column_is_written_in_batches_and_alone() {
        let (dir, path, recorder) = recorder();
        // One statement of ROWS_PER_INSERT rows, then single rows.
        let records: Vec<Record> = (0..ROWS_PER_INSERT as u64 + 3)
            .map(|i| Record {
                ts_ms: 1_000 + i as i64,
                trace_id: format!("t{i}"),
                key_id: Some(format!("k{i}")),
                virtual_key: (i % 2 == 0).then(|| format!("vk{i}")),
                provider: Some("openai".into()),
                model: Some(format!("m{i}")),
                route: "/v1/chat/completions".into(),
                status: 200 + i as u16,
                latency_ms: 10 + i,
                ttft_ms: Some(i),
                tokens: Some(Tokens {
                    input: i,
                    output: 2 * i,
                    cached: 3 * i,
                }),
                cost: Some(i as f64 / 8.0),
                saved_cost: Some(i as f64 / 4.0),
                cache: Some("MISS".into()),
                retries: i as u32,
                target: Some(format!("0.{i}")),
                stream: i % 3 == 0,
                hook_results: Some(format!("{{\"h\":{i}}}")),
                metadata: Some(format!("{{\"user\":\"u{i}\"}}")),
                request_body: Some(format!("req{i}")),
                response_body: Some(format!("res{i}")),
                budgets: Vec::new(),
            })
            .collect();
        for r in &records {
            recorder.record(r.clone());
        }
        recorder.close();
        let db = Db::open(&path).expect("open");
        let read = db
            .with(|c| {
                let mut stmt = c.prepare(&format!("SELECT {COLUMNS} FROM requests ORDER BY id"))?;
                let rows = stmt.query_map([], |r| {
                    let tokens = |i| r.get::<_, Option<i64>>(i).map(|v| v.map(|v| v as u64));
                    Ok(Record {
                        ts_ms: r.get(0)?,
                        trace_id: r.get(1)?,
                        key_id: r.get(2)?,
                        virtual_key: r.get(3)?,
                        provider: r.get(4)?,
                        model: r.get(5)?,
                        route: r.get(6)?,
                        status: r.get(7)?,
                        latency_ms: r.get::<_, i64>(8)? as u64,
                        ttft_ms: tokens(9)?,
                        tokens: match (tokens(10)?, tokens(11)?, tokens(12)?) {
                            (Some(input), Some(output), Some(cached)) => Some(Tokens {
                                input,
                                output,
                                cached,
                            }),
                            _ => None,
                        },
                        cost: r.get(13)?,
                        cache: r.get(14)?,
                        retries: r.get(15)?,
                        target: r.get(16)?,
                        stream: r.get(17)?,
                        hook_results: r.get(18)?,
                        metadata: r.get(19)?,
                        request_body: r.get(20)?,
                        response_body: r.get(21)?,
                        saved_cost: r.get(22)?,
                        budgets: Vec::new(),
                    })
                })?;
                rows.collect::<rusqlite::Result<Vec<_>>>()
            })
            .expect("read");
        assert_eq!(read, records);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn records_survive_close_and_old_ones_are_pruned() {
        let (dir, path, recorder) = recorder();
        for i in 0..2500 {
            recorder.record(Record {
                ts_ms: now_ms(),
                trace_id: format!("t{i}"),
                route: "/v1/chat/completions".into(),
                status: 200,
                ..Record::default()
            });
        }
        recorder.close();
        assert_eq!(recorder.counts(), (2500, 0));
        let db = Db::open(&path).expect("open");
        let n: i64 = db
            .with(|c| c.query_row("SELECT COUNT(*) FROM requests", [], |r| r.get(0)))
            .expect("count");
        assert_eq!(n, 2500);
        // An old record goes at the writer's first pass.
        db.with(|c| {
            c.execute(
                "INSERT INTO requests (ts, trace_id, route, status, latency_ms, retries, stream)
                 VALUES (1, 'old', '/v1/x', 200, 0, 0, 0)",
                [],
            )
        })
        .expect("insert");
        let recorder = Recorder::start(&path, UsageSettings::default()).expect("start");
        recorder.flush();
        recorder.close();
        let old: i64 = db
            .with(|c| {
                c.query_row(
                    "SELECT COUNT(*) FROM requests WHERE trace_id = 'old'",
                    [],
                    |r| r.get(0),
                )
            })
            .expect("count");
        assert_eq!(old, 0);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
