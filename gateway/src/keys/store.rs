//! The keys table in the state database, and the in-memory snapshot requests
//! are authenticated against.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{OptionalExtension, params};

use crate::state::{Cached, Db, StateError};

use super::{AuthError, KeyRecord, KeySettings, Role, generate, hash, hint, now};

/// How soon a change made by another process is seen.
pub const RELOAD_EVERY: Duration = Duration::from_millis(500);

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("no key with id `{0}`")]
    NoSuchKey(String),
    #[error("key `{0}` is revoked")]
    Revoked(String),
    #[error("the system's random number generator failed")]
    Random,
    #[error("{0}")]
    Invalid(String),
    #[error(
        "virtual keys need a master key: set SLUICE_MASTER_KEY (32 bytes in base64) or [state] master_key_file"
    )]
    NoMasterKey,
}

type Snapshot = HashMap<[u8; 32], Arc<KeyRecord>>;

/// The keys table and the snapshot of it that requests are checked against.
#[derive(Debug)]
pub struct Store {
    db: Arc<Db>,
    snapshot: Cached<Snapshot>,
}

impl Store {
    /// The keys in `db`.
    pub fn new(db: Arc<Db>) -> Result<Self, StoreError> {
        let store = Self {
            db,
            snapshot: Cached::default(),
        };
        store.reload()?;
        Ok(store)
    }

    /// Opens the database at `path` for its keys alone (the CLI).
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::new(Arc::new(Db::open(path)?))
    }

    /// Re-reads the keys when another connection changed the database since
    /// the last read.
    pub fn refresh(&self) -> Result<(), StoreError> {
        self.snapshot.refresh(&self.db, || self.read())
    }

    fn reload(&self) -> Result<(), StoreError> {
        self.snapshot.reload(&self.db, || self.read())
    }

    /// Every key, by the hash of its secret.
    fn read(&self) -> Result<Snapshot, StoreError> {
        let rows = self.db.with(|c| {
            let mut stmt = c.prepare(
                "SELECT hash, id, name, role, hint, created_at, expires_at, revoked_at, settings FROM gateway_keys",
            )?;
            let rows = stmt.query_map([], |r| {
                let hash: Vec<u8> = r.get(0)?;
                Ok((hash, record(r, 1)?))
            })?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })?;
        Ok(rows
            .into_iter()
            .filter_map(|(h, key)| Some((<[u8; 32]>::try_from(h.as_slice()).ok()?, Arc::new(key))))
            .collect())
    }

    /// The key a secret belongs to, if it is usable now.
    pub fn authenticate(&self, secret: &str) -> Result<Arc<KeyRecord>, AuthError> {
        let snapshot = self.snapshot.get();
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
            .get()
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
        settings: KeySettings,
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
            settings,
        };
        let settings =
            serde_json::to_string(&key.settings).map_err(|e| StoreError::Invalid(e.to_string()))?;
        self.db.with(|c| {
            c.execute(
                "INSERT INTO gateway_keys (id, name, role, hash, hint, created_at, expires_at, settings)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    key.id,
                    key.name,
                    key.role.as_str(),
                    hash(&secret).as_slice(),
                    key.hint,
                    key.created_at,
                    key.expires_at,
                    settings
                ],
            )
        })?;
        self.reload()?;
        Ok((key, secret))
    }

    /// Every key, oldest first.
    pub fn list(&self) -> Result<Vec<KeyRecord>, StoreError> {
        Ok(self.db.with(|c| {
            let mut stmt = c.prepare(
                "SELECT id, name, role, hint, created_at, expires_at, revoked_at, settings FROM gateway_keys ORDER BY created_at, rowid",
            )?;
            let rows = stmt.query_map([], |r| record(r, 0))?;
            rows.collect()
        })?)
    }

    /// One key by id.
    pub fn get(&self, id: &str) -> Result<KeyRecord, StoreError> {
        self.db
            .with(|c| {
                c.query_row(
                    "SELECT id, name, role, hint, created_at, expires_at, revoked_at, settings FROM gateway_keys WHERE id = ?1",
                    [id],
                    |r| record(r, 0),
                )
                .optional()
            })?
            .ok_or_else(|| StoreError::NoSuchKey(id.to_owned()))
    }

    /// Revokes a key: it stops working at once (here) or within
    /// [`RELOAD_EVERY`] (in a gateway sharing the file). Revoking twice keeps
    /// the first time.
    pub fn revoke(&self, id: &str) -> Result<KeyRecord, StoreError> {
        let changed = self.db.with(|c| {
            c.execute(
                "UPDATE gateway_keys SET revoked_at = COALESCE(revoked_at, ?2) WHERE id = ?1",
                params![id, now()],
            )
        })?;
        if changed == 0 {
            return Err(StoreError::NoSuchKey(id.to_owned()));
        }
        self.reload()?;
        self.get(id)
    }

    /// Replaces a key's name, role, expiry and settings (its secret stays);
    /// the change applies to the next request.
    pub fn update(&self, key: &KeyRecord) -> Result<KeyRecord, StoreError> {
        let settings =
            serde_json::to_string(&key.settings).map_err(|e| StoreError::Invalid(e.to_string()))?;
        let changed = self.db.with(|c| {
            c.execute(
                "UPDATE gateway_keys SET name = ?2, role = ?3, expires_at = ?4, settings = ?5 WHERE id = ?1",
                params![key.id, key.name, key.role.as_str(), key.expires_at, settings],
            )
        })?;
        if changed == 0 {
            return Err(StoreError::NoSuchKey(key.id.clone()));
        }
        self.reload()?;
        self.get(&key.id)
    }

    /// Gives a key a new secret; the old one stops working. Its id, name,
    /// role and expiry stay.
    pub fn rotate(&self, id: &str) -> Result<(KeyRecord, String), StoreError> {
        let key = self.get(id)?;
        if key.revoked_at.is_some() {
            return Err(StoreError::Revoked(id.to_owned()));
        }
        let secret = generate()?;
        self.db.with(|c| {
            c.execute(
                "UPDATE gateway_keys SET hash = ?2, hint = ?3 WHERE id = ?1",
                params![id, hash(&secret).as_slice(), hint(&secret)],
            )
        })?;
        self.reload()?;
        Ok((self.get(id)?, secret))
    }
}

/// A key from a row's columns `id, name, role, hint, created_at, expires_at,
/// revoked_at, settings`, starting at `at`.
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
        settings: {
            let text: String = r.get(at + 7)?;
            serde_json::from_str(&text).map_err(|e| {
                rusqlite::Error::FromSqlConversionFailure(
                    at + 7,
                    rusqlite::types::Type::Text,
                    e.into(),
                )
            })?
        },
    })
}
