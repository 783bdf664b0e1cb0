//! Virtual keys: provider credentials kept encrypted in the state database and
//! named by clients (`x-portkey-virtual-key: NAME`, or `virtual_key` in a
//! config target), so clients never hold provider secrets and rotating one
//! needs no client change.
//!
//! Each secret is sealed with AES-256-GCM (ring) under the master key
//! (`SLUICE_MASTER_KEY`, or `[state] master_key_file`: 32 bytes in base64),
//! a fresh random nonce per write, and the key's name as associated data, so
//! a sealed secret cannot be moved to another name. A row records which
//! master key sealed it (a fingerprint), so a wrong master key is reported as
//! such rather than as corrupt data.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use base64::Engine;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use rusqlite::{OptionalExtension, params};

use super::{StoreError, now};
use crate::config::Secret;
use crate::state::{Cached, Db};

/// The key that seals virtual keys.
pub struct MasterKey {
    key: LessSafeKey,
    /// The first 8 hex digits of its SHA-256: which master key sealed a row.
    id: String,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MasterKey({})", self.id)
    }
}

impl MasterKey {
    /// 32 bytes in base64 (standard or URL-safe, padded or not).
    pub fn from_base64(text: &str) -> Result<Self, StoreError> {
        let text = text.trim();
        let bytes = [
            &base64::engine::general_purpose::STANDARD,
            &base64::engine::general_purpose::URL_SAFE,
            &base64::engine::general_purpose::STANDARD_NO_PAD,
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        ]
        .iter()
        .find_map(|e| e.decode(text).ok())
        .filter(|b| b.len() == 32)
        .ok_or_else(|| {
            StoreError::Invalid(
                "the master key must be 32 bytes in base64 (e.g. `openssl rand -base64 32`)".into(),
            )
        })?;
        let digest = ring::digest::digest(&ring::digest::SHA256, &bytes);
        let id = digest.as_ref()[..4]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let key = UnboundKey::new(&AES_256_GCM, &bytes)
            .map_err(|_| StoreError::Invalid("the master key is not a valid AES-256 key".into()))?;
        Ok(Self {
            key: LessSafeKey::new(key),
            id,
        })
    }

    /// `$SLUICE_MASTER_KEY`, else the file, else none.
    pub fn from_env_or_file(file: Option<&Path>) -> Result<Option<Self>, StoreError> {
        if let Some(text) = std::env::var_os("SLUICE_MASTER_KEY") {
            let text = text
                .into_string()
                .map_err(|_| StoreError::Invalid("SLUICE_MASTER_KEY is not valid text".into()))?;
            return Self::from_base64(&text).map(Some);
        }
        match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    StoreError::Invalid(format!(
                        "cannot read the master key file {}: {e}",
                        path.display()
                    ))
                })?;
                Self::from_base64(&text).map(Some)
            }
            None => Ok(None),
        }
    }

    fn seal(&self, name: &str, secret: &str) -> Result<(Vec<u8>, Vec<u8>), StoreError> {
        let mut nonce = [0u8; NONCE_LEN];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut nonce)
            .map_err(|_| StoreError::Random)?;
        let mut sealed = secret.as_bytes().to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(name.as_bytes()),
                &mut sealed,
            )
            .map_err(|_| StoreError::Invalid("the secret could not be encrypted".into()))?;
        Ok((nonce.to_vec(), sealed))
    }

    fn open(&self, name: &str, nonce: &[u8], sealed: &[u8]) -> Option<String> {
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut buf = sealed.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(name.as_bytes()), &mut buf)
            .ok()?;
        String::from_utf8(plain.to_vec()).ok()
    }
}

/// A virtual key as lists show it (never the secret).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct VirtualKeyInfo {
    pub name: String,
    pub provider: String,
    pub created_at: i64,
    /// When its secret was last set.
    pub updated_at: i64,
    pub revoked_at: Option<i64>,
    pub status: &'static str,
}

/// What a request gets for a virtual key.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub provider: String,
    pub secret: Secret,
}

/// Why a virtual key cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VirtualKeyError {
    #[error("unknown virtual key `{0}`")]
    Unknown(String),
    #[error("virtual key `{0}` has been revoked")]
    Revoked(String),
    #[error(
        "virtual key `{0}` cannot be decrypted: the gateway has no master key, or not the one that sealed it"
    )]
    Sealed(String),
}

type Snapshot = HashMap<String, Result<Arc<Resolved>, VirtualKeyError>>;

/// The virtual keys table and its decrypted snapshot.
#[derive(Debug)]
pub struct VirtualKeys {
    db: Arc<Db>,
    master: Option<MasterKey>,
    snapshot: Cached<Snapshot>,
}

/// A name: 1 to 64 of ASCII letters, digits, `-`, `_`, `.`.
fn check_name(name: &str) -> Result<(), StoreError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(StoreError::Invalid(format!(
            "a virtual key's name is 1 to 64 letters, digits, `-`, `_` or `.`: `{name}`"
        )))
    }
}

impl VirtualKeys {
    pub fn new(db: Arc<Db>, master: Option<MasterKey>) -> Result<Self, StoreError> {
        let keys = Self {
            db,
            master,
            snapshot: Cached::default(),
        };
        keys.reload()?;
        Ok(keys)
    }

    /// No virtual keys: an empty table in memory (for what needs a
    /// `VirtualKeys` without a state database, such as tests).
    pub fn none() -> Result<Self, StoreError> {
        Self::new(Arc::new(Db::open(Path::new(":memory:"))?), None)
    }

    /// Re-reads the table when another connection committed since the last read.
    pub fn refresh(&self) -> Result<(), StoreError> {
        self.snapshot.refresh(&self.db, || self.read())
    }

    fn reload(&self) -> Result<(), StoreError> {
        self.snapshot.reload(&self.db, || self.read())
    }

    /// Every virtual key, opened with the master key, by name.
    fn read(&self) -> Result<Snapshot, StoreError> {
        type Row = (String, String, Vec<u8>, Vec<u8>, String, Option<i64>);
        let rows: Vec<Row> = self.db.with(|c| {
            let mut stmt = c.prepare(
                "SELECT name, provider, nonce, secret, master, revoked_at FROM virtual_keys",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                ))
            })?;
            rows.collect()
        })?;
        Ok(rows
            .into_iter()
            .map(|(name, provider, nonce, sealed, master, revoked)| {
                let value = if revoked.is_some() {
                    Err(VirtualKeyError::Revoked(name.clone()))
                } else {
                    self.master
                        .as_ref()
                        .filter(|m| m.id == master)
                        .and_then(|m| m.open(&name, &nonce, &sealed))
                        .map(|secret| {
                            Arc::new(Resolved {
                                provider,
                                secret: Secret::new(secret),
                            })
                        })
                        .ok_or_else(|| VirtualKeyError::Sealed(name.clone()))
                };
                (name, value)
            })
            .collect())
    }

    /// The provider and secret a virtual key stands for.
    pub fn resolve(&self, name: &str) -> Result<Arc<Resolved>, VirtualKeyError> {
        match self.snapshot.get().get(name) {
            Some(v) => v.clone(),
            None => Err(VirtualKeyError::Unknown(name.to_owned())),
        }
    }

    fn master(&self) -> Result<&MasterKey, StoreError> {
        self.master.as_ref().ok_or(StoreError::NoMasterKey)
    }

    /// Stores a new virtual key for `provider`.
    pub fn create(
        &self,
        name: &str,
        provider: &str,
        secret: &str,
    ) -> Result<VirtualKeyInfo, StoreError> {
        check_name(name)?;
        if secret.is_empty() {
            return Err(StoreError::Invalid("the provider key is empty".into()));
        }
        let master = self.master()?;
        let (nonce, sealed) = master.seal(name, secret)?;
        let t = now();
        let inserted = self.db.with(|c| {
            c.execute(
                "INSERT INTO virtual_keys (name, provider, nonce, secret, master, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6) ON CONFLICT (name) DO NOTHING",
                params![name, provider, nonce, sealed, master.id, t],
            )
        })?;
        if inserted == 0 {
            return Err(StoreError::Invalid(format!(
                "a virtual key named `{name}` exists: rotate it, or choose another name"
            )));
        }
        self.reload()?;
        self.get(name)
    }

    /// Replaces a virtual key's secret (its provider and name stay); clients
    /// using it need no change.
    pub fn rotate(&self, name: &str, secret: &str) -> Result<VirtualKeyInfo, StoreError> {
        let key = self.get(name)?;
        if key.revoked_at.is_some() {
            return Err(StoreError::Revoked(name.to_owned()));
        }
        if secret.is_empty() {
            return Err(StoreError::Invalid("the provider key is empty".into()));
        }
        let master = self.master()?;
        let (nonce, sealed) = master.seal(name, secret)?;
        self.db.with(|c| {
            c.execute(
                "UPDATE virtual_keys SET nonce = ?2, secret = ?3, master = ?4, updated_at = ?5 WHERE name = ?1",
                params![name, nonce, sealed, master.id, now()],
            )
        })?;
        self.reload()?;
        self.get(name)
    }

    /// Revokes a virtual key: requests naming it get 401.
    pub fn revoke(&self, name: &str) -> Result<VirtualKeyInfo, StoreError> {
        let changed = self.db.with(|c| {
            c.execute(
                "UPDATE virtual_keys SET revoked_at = COALESCE(revoked_at, ?2) WHERE name = ?1",
                params![name, now()],
            )
        })?;
        if changed == 0 {
            return Err(StoreError::NoSuchKey(name.to_owned()));
        }
        self.reload()?;
        self.get(name)
    }

    pub fn get(&self, name: &str) -> Result<VirtualKeyInfo, StoreError> {
        self.db
            .with(|c| {
                c.query_row(
                    "SELECT name, provider, created_at, updated_at, revoked_at FROM virtual_keys WHERE name = ?1",
                    [name],
                    info,
                )
                .optional()
            })?
            .ok_or_else(|| StoreError::NoSuchKey(name.to_owned()))
    }

    pub fn list(&self) -> Result<Vec<VirtualKeyInfo>, StoreError> {
        Ok(self.db.with(|c| {
            let mut stmt = c.prepare(
                "SELECT name, provider, created_at, updated_at, revoked_at FROM virtual_keys ORDER BY created_at, rowid",
            )?;
            let rows = stmt.query_map([], info)?;
            rows.collect()
        })?)
    }
}

fn info(r: &rusqlite::Row<'_>) -> rusqlite::Result<VirtualKeyInfo> {
    let revoked_at: Option<i64> = r.get(4)?;
    Ok(VirtualKeyInfo {
        name: r.get(0)?,
        provider: r.get(1)?,
        created_at: r.get(2)?,
        updated_at: r.get(3)?,
        revoked_at,
        status: if revoked_at.is_some() {
            "revoked"
        } else {
            "active"
        },
    })
}
