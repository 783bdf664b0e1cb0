//! The state database: one SQLite file (`[state] path`) holding gateway keys,
//! virtual keys and the request log. One connection, shared; WAL so the CLI can write while a
//! gateway reads; the schema migrated forward by `PRAGMA user_version`.
//!
//! Stores built on it ([`crate::keys::Store`], [`crate::keys::VirtualKeys`])
//! keep snapshots in memory and re-read them when [`Db::data_version`] says
//! another process committed.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::Connection;

/// The schema, by version: each step runs once, in order.
const MIGRATIONS: &[&str] = &[
    "CREATE TABLE gateway_keys (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        role TEXT NOT NULL CHECK (role IN ('admin', 'member', 'viewer')),
        hash BLOB NOT NULL UNIQUE,
        hint TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        expires_at INTEGER,
        revoked_at INTEGER
    )",
    "CREATE TABLE virtual_keys (
        name TEXT PRIMARY KEY,
        provider TEXT NOT NULL,
        nonce BLOB NOT NULL,
        secret BLOB NOT NULL,
        master TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        revoked_at INTEGER
    )",
    // A gateway key's settings (keys::KeySettings) as JSON.
    "ALTER TABLE gateway_keys ADD COLUMN settings TEXT NOT NULL DEFAULT '{}'",
    // The request log (usage::Record); ts in Unix milliseconds, cost in USD.
    "CREATE TABLE requests (
        id INTEGER PRIMARY KEY,
        ts INTEGER NOT NULL,
        trace_id TEXT NOT NULL,
        key_id TEXT,
        virtual_key TEXT,
        provider TEXT,
        model TEXT,
        route TEXT NOT NULL,
        status INTEGER NOT NULL,
        latency_ms INTEGER NOT NULL,
        ttft_ms INTEGER,
        input_tokens INTEGER,
        output_tokens INTEGER,
        cached_tokens INTEGER,
        cost REAL,
        cache TEXT,
        retries INTEGER NOT NULL,
        target TEXT,
        stream INTEGER NOT NULL,
        hook_results TEXT,
        metadata TEXT,
        request_body TEXT,
        response_body TEXT
    );
    CREATE INDEX requests_ts ON requests (ts);
    CREATE INDEX requests_key_ts ON requests (key_id, ts);
    CREATE INDEX requests_virtual_key_ts ON requests (virtual_key, ts);
    -- limits::budget: dollars spent per bucket and period (start, Unix s).
    CREATE TABLE budget_spend (
        bucket TEXT NOT NULL,
        period_start INTEGER NOT NULL,
        usd REAL NOT NULL,
        PRIMARY KEY (bucket, period_start)
    )",
    // What a cache hit saved (USD).
    "ALTER TABLE requests ADD COLUMN saved_cost REAL",
];

#[derive(Debug, thiserror::Error)]
#[error("the state database {path}: {source}")]
pub struct StateError {
    path: String,
    #[source]
    source: Box<dyn std::error::Error + Send + Sync>,
}

impl StateError {
    /// An I/O error about the database (a thread that would serve it).
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        Self {
            path: path.display().to_string(),
            source: Box::new(source),
        }
    }
}

/// The state database.
pub struct Db {
    path: PathBuf,
    conn: Mutex<Connection>,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db").field("path", &self.path).finish()
    }
}

impl Db {
    /// Opens (creating if needed) the database at `path` and brings its
    /// schema up to date.
    pub fn open(path: &Path) -> Result<Self, StateError> {
        let err = |source: rusqlite::Error| StateError {
            path: path.display().to_string(),
            source: Box::new(source),
        };
        let conn = Connection::open(path).map_err(err)?;
        // WAL: readers (the gateway) and a writer (the CLI) do not block each
        // other; a busy timeout rides out the other's short transactions.
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(err)?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(err)?;
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(err)?;
        for (i, step) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            conn.execute_batch(&format!(
                "BEGIN; {step}; PRAGMA user_version = {}; COMMIT;",
                i + 1
            ))
            .map_err(err)?;
        }
        Ok(Self {
            path: path.to_owned(),
            conn: Mutex::new(conn),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite inconsistent
        // (statements are atomic): the connection is still usable.
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on the connection.
    pub fn with<T>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StateError> {
        f(&self.conn()).map_err(|source| StateError {
            path: self.path.display().to_string(),
            source: Box::new(source),
        })
    }

    /// SQLite's `data_version`: it moves when another connection commits.
    pub fn data_version(&self) -> Result<i64, StateError> {
        self.with(|c| c.pragma_query_value(None, "data_version", |r| r.get(0)))
    }
}

/// A value read from the database and kept in memory: re-read after this
/// process's own writes ([`Cached::reload`]) and when another connection has
/// committed since ([`Cached::refresh`], by `data_version`).
pub struct Cached<T> {
    value: std::sync::RwLock<std::sync::Arc<T>>,
    /// The database's `data_version` when the value was read.
    version: Mutex<i64>,
}

impl<T: Default> Default for Cached<T> {
    fn default() -> Self {
        Self {
            value: std::sync::RwLock::new(std::sync::Arc::default()),
            version: Mutex::new(-1),
        }
    }
}

impl<T: std::fmt::Debug> std::fmt::Debug for Cached<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Cached").field(&self.get()).finish()
    }
}

impl<T> Cached<T> {
    /// The value now.
    pub fn get(&self) -> std::sync::Arc<T> {
        self.value.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Re-reads the value with `load`.
    pub fn reload<E: From<StateError>>(
        &self,
        db: &Db,
        load: impl FnOnce() -> Result<T, E>,
    ) -> Result<(), E> {
        let version = db.data_version()?;
        self.store(version, load()?);
        Ok(())
    }

    /// Re-reads the value with `load` when another connection committed
    /// since the last read.
    pub fn refresh<E: From<StateError>>(
        &self,
        db: &Db,
        load: impl FnOnce() -> Result<T, E>,
    ) -> Result<(), E> {
        let version = db.data_version()?;
        if version != *self.version.lock().unwrap_or_else(|e| e.into_inner()) {
            self.store(version, load()?);
        }
        Ok(())
    }

    fn store(&self, version: i64, value: T) {
        *self.value.write().unwrap_or_else(|e| e.into_inner()) = std::sync::Arc::new(value);
        *self.version.lock().unwrap_or_else(|e| e.into_inner()) = version;
    }
}
