//! The keys table in the state database, and the in-memory snapshot requests
//! are authenticated against.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};

use super::{AuthError, KeyRecord, Role, generate, hash, hint, now};

/// How soon a change made by another process is seen.
pub const RELOAD_EVERY: Duration = Duration::from_millis(500);

/// The schema, by version (`PRAGMA user_version`): each step runs once.
const MIGRATIONS: &[&str] = &["CREATE TABLE gateway_keys (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        role TEXT NOT NULL CHECK (role IN ('admin', 'member', 'viewer')),
        hash BLOB NOT NULL UNIQUE,
        hint TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        expires_at INTEGER,
        revoked_at INTEGER
    )"];

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the state database {path}: {source}")]
    Sqlite {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("no key with id `{0}`")]
    NoSuchKey(String),
    #[error("key `{0}` is revoked")]
    Revoked(String),
    #[error("the system's random number generator failed")]
    Random,
}

type Snapshot = HashMap<[u8; 32], Arc<KeyRecord>>;

/// The keys table and the snapshot of it that requests are checked against.
pub struct Store {
    path: PathBuf,
    db: Mutex<Connection>,
    snapshot: RwLock<Arc<Snapshot>>,
    /// SQLite's `data_version` when the snapshot was taken: it moves when
    /// another connection commits.
    version: Mutex<i64>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

impl Store {
    /// Opens (creating if needed) the state database at `path` and brings its
    /// schema up to date.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let err = |source| StoreError::Sqlite {
            path: path.display().to_string(),
            source,
        };
        let db = Connection::open(path).map_err(err)?;
        // WAL: readers (the gateway) and a writer (the CLI) do not block each
        // other; a busy timeout rides out the other's short transactions.
        db.pragma_update(None, "journal_mode", "WAL").map_err(err)?;
        db.busy_timeout(Duration::from_secs(5)).map_err(err)?;
        let version: i64 = db
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(err)?;
        for (i, step) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            db.execute_batch(&format!(
                "BEGIN; {step}; PRAGMA user_version = {}; COMMIT;",
                i + 1
            ))
            .map_err(err)?;
        }
        let store = Self {
            path: path.to_owned(),
            db: Mutex::new(db),
            snapshot: RwLock::new(Arc::default()),
            version: Mutex::new(-1),
        };
        store.reload()?;
        Ok(store)
    }

    fn err(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Sqlite {
            path: self.path.display().to_string(),
            source,
        }
    }

    fn db(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite inconsistent
        // (statements are atomic): the connection is still usable.
        self.db.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Re-reads the keys when another connection changed the database since
    /// the last read.
    pub fn refresh(&self) -> Result<(), StoreError> {
        let current: i64 = self
            .db()
            .pragma_query_value(None, "data_version", |r| r.get(0))
            .map_err(|e| self.err(e))?;
        let seen = *self.version.lock().unwrap_or_else(|e| e.into_inner());
        if current != seen {
            self.reload()?;
        }
        Ok(())
    }

    fn reload(&self) -> Result<(), StoreError> {
        let db = self.db();
        let version: i64 = db
            .pragma_query_value(None, "data_version", |r| r.get(0))
            .map_err(|e| self.err(e))?;
        let mut stmt = db
            .prepare("SELECT hash, id, name, role, hint, created_at, expires_at, revoked_at FROM gateway_keys")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| {
                let hash: Vec<u8> = r.get(0)?;
                Ok((hash, record(r, 1)?))
            })
            .map_err(|e| self.err(e))?;
        let mut snapshot = Snapshot::new();
        for row in rows {
            let (h, key) = row.map_err(|e| self.err(e))?;
            if let Ok(h) = <[u8; 32]>::try_from(h.as_slice()) {
                snapshot.insert(h, Arc::new(key));
            }
        }
        *self.snapshot.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(snapshot);
        *self.version.lock().unwrap_or_else(|e| e.into_inner()) = version;
        Ok(())
    }

    /// The key a secret belongs to, if it is usable now.
    pub fn authenticate(&self, secret: &str) -> Result<Arc<KeyRecord>, AuthError> {
        let snapshot = self
            .snapshot
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let key = snapshot.get(&hash(secret)).ok_or(AuthError::Unknown)?;
        match key.status(now()) {
            "revoked" => Err(AuthError::Revoked),
            "expired" => Err(AuthError::Expired),
            _ => Ok(key.clone()),
        }
    }

    /// Whether any key could authenticate now.
    pub fn any_active(&self) -> bool {
        let now = now();
        self.snapshot
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .any(|k| k.status(now) == "active")
    }

    /// Creates a key; returns it and its secret (the only time the secret is
    /// seen).
    pub fn create(
        &self,
        name: &str,
        role: Role,
        expires_at: Option<i64>,
    ) -> Result<(KeyRecord, String), StoreError> {
        let secret = generate()?;
        let mut id_bytes = [0u8; 6];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut id_bytes)
            .map_err(|_| StoreError::Random)?;
        let id = format!(
            "key_{}",
            id_bytes
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        );
        let key = KeyRecord {
            id,
            name: name.to_owned(),
            role,
            hint: hint(&secret),
            created_at: now(),
            expires_at,
            revoked_at: None,
        };
        self.db()
            .execute(
                "INSERT INTO gateway_keys (id, name, role, hash, hint, created_at, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    key.id,
                    key.name,
                    key.role.as_str(),
                    hash(&secret).as_slice(),
                    key.hint,
                    key.created_at,
                    key.expires_at
                ],
            )
            .map_err(|e| self.err(e))?;
        self.reload()?;
        Ok((key, secret))
    }

    /// Every key, oldest first.
    pub fn list(&self) -> Result<Vec<KeyRecord>, StoreError> {
        let db = self.db();
        let mut stmt = db
            .prepare("SELECT id, name, role, hint, created_at, expires_at, revoked_at FROM gateway_keys ORDER BY created_at, rowid")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| record(r, 0))
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    /// One key by id.
    pub fn get(&self, id: &str) -> Result<KeyRecord, StoreError> {
        self.db()
            .query_row(
                "SELECT id, name, role, hint, created_at, expires_at, revoked_at FROM gateway_keys WHERE id = ?1",
                [id],
                |r| record(r, 0),
            )
            .optional()
            .map_err(|e| self.err(e))?
            .ok_or_else(|| StoreError::NoSuchKey(id.to_owned()))
    }

    /// Revokes a key: it stops working at once (here) or within
    /// [`RELOAD_EVERY`] (in a gateway sharing the file). Revoking twice keeps
    /// the first time.
    pub fn revoke(&self, id: &str) -> Result<KeyRecord, StoreError> {
        let changed = self
            .db()
            .execute(
                "UPDATE gateway_keys SET revoked_at = COALESCE(revoked_at, ?2) WHERE id = ?1",
                params![id, now()],
            )
            .map_err(|e| self.err(e))?;
        if changed == 0 {
            return Err(StoreError::NoSuchKey(id.to_owned()));
        }
        self.reload()?;
        self.get(id)
    }

    /// Gives a key a new secret; the old one stops working. Its id, name,
    /// role and expiry stay.
    pub fn rotate(&self, id: &str) -> Result<(KeyRecord, String), StoreError> {
        let key = self.get(id)?;
        if key.revoked_at.is_some() {
            return Err(StoreError::Revoked(id.to_owned()));
        }
        let secret = generate()?;
        self.db()
            .execute(
                "UPDATE gateway_keys SET hash = ?2, hint = ?3 WHERE id = ?1",
                params![id, hash(&secret).as_slice(), hint(&secret)],
            )
            .map_err(|e| self.err(e))?;
        self.reload()?;
        Ok((self.get(id)?, secret))
    }
}

/// A key from a row's columns `id, name, role, hint, created_at, expires_at,
/// revoked_at`, starting at `at`.
fn record(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<KeyRecord> {
    let role: String = r.get(at + 2)?;
    Ok(KeyRecord {
        id: r.get(at)?,
        name: r.get(at + 1)?,
        role: role.parse().map_err(|e: String| {
            rusqlite::Error::FromSqlConversionFailure(at + 2, rusqlite::types::Type::Text, e.into())
        })?,
        hint: r.get(at + 3)?,
        created_at: r.get(at + 4)?,
        expires_at: r.get(at + 5)?,
        revoked_at: r.get(at + 6)?,
    })
}
