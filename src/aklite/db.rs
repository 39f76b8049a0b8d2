//! aktualizr-lite's database (`<[storage] path>/<sqldb_path>`, libaktualizr's schema 25):
//! what we read from it and the few rows we write into it, as aktualizr-lite writes them.
//!
//! Never created, never migrated: the file is opened without the create flag, its schema
//! version and the columns we use are checked first, and with anything else nothing is read
//! or written. Each read is one read transaction, each write one immediate transaction, with
//! a busy timeout; the journal mode and the schema stay as aktualizr-lite set them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{params, Connection, OpenFlags, OptionalExtension as _, TransactionBehavior};
use serde_json::{Map, Value};

use crate::state::InstalledTarget;

/// The schema version this build reads and writes (`SELECT version FROM version`).
pub(crate) const SCHEMA_VERSION: i64 = 25;

/// How long a read or write waits for aktualizr-lite's own transaction to finish.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The columns we use, per table: a database without one of them is not one we know.
const COLUMNS: &[(&str, &[&str])] = &[
    ("version", &["version"]),
    (
        "installed_versions",
        &[
            "id",
            "ecu_serial",
            "sha256",
            "name",
            "hashes",
            "length",
            "correlation_id",
            "is_current",
            "is_pending",
            "was_installed",
            "custom_meta",
        ],
    ),
    ("meta", &["meta", "repo", "meta_type", "version"]),
    ("need_reboot", &["unique_mark", "flag"]),
    ("ecus", &["id", "serial", "hardware_id", "is_primary"]),
];

/// `meta.repo` of the image repository (the only one aktualizr-lite uses).
const IMAGE_REPO: i64 = 0;
/// `meta.meta_type` values.
pub(crate) const ROOT: i64 = 0;
pub const SNAPSHOT: i64 = 1;
pub const TARGETS: i64 = 2;
pub const TIMESTAMP: i64 = 3;

/// One `installed_versions` row of the primary ECU.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub id: i64,
    pub name: String,
    pub sha256: String,
    pub custom: Map<String, Value>,
    pub correlation_id: String,
    pub is_current: bool,
    pub is_pending: bool,
    pub was_installed: bool,
}

impl Row {
    pub fn target(&self) -> InstalledTarget {
        super::known_target(&self.name, &self.sha256, &self.custom)
    }
}

/// Everything we read, in one read transaction.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// The primary ECU's serial and hardware id (frozen at aktualizr-lite's first start).
    pub ecu: Option<(String, String)>,
    /// The primary ECU's `installed_versions`, oldest first.
    pub rows: Vec<Row>,
    /// Image repository roots by version (raw metadata).
    pub roots: BTreeMap<u64, Vec<u8>>,
    /// Image repository timestamp, snapshot, targets (raw metadata).
    pub roles: BTreeMap<i64, Vec<u8>>,
}

impl Facts {
    /// The serial rows are written under: the primary's, or `""` (libaktualizr's "lazy"
    /// serial, filled in when it stores its ECUs).
    pub fn serial(&self) -> &str {
        self.ecu.as_ref().map_or("", |(s, _)| s.as_str())
    }

    pub fn pending(&self) -> Option<&Row> {
        self.rows.iter().find(|r| r.is_pending)
    }

    pub(crate) fn by_correlation_id(&self, cid: &str) -> Option<&Row> {
        self.rows.iter().rev().find(|r| r.correlation_id == cid)
    }

    /// What aktualizr-lite runs by its own rule: the current row if its commit is the
    /// booted one, else the newest row with the booted commit.
    pub fn current(&self, booted: &str) -> Option<&Row> {
        self.rows
            .iter()
            .find(|r| r.is_current)
            .filter(|r| r.sha256 == booted)
            .or_else(|| self.rows.iter().rev().find(|r| r.sha256 == booted))
    }
}

/// Why the database cannot be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DbError {
    /// Another version or shape of schema: never read or written.
    #[error("{path}: {why}: not read or written by this build")]
    Unknown { path: PathBuf, why: String },
    /// aktualizr-lite (or someone) holds a write lock longer than the busy timeout.
    #[error("{path} is busy (locked by another writer for more than {} s)", BUSY_TIMEOUT.as_secs())]
    Busy { path: PathBuf },
    #[error("{path}: {source}")]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
}

impl DbError {
    fn of(path: &Path) -> impl Fn(rusqlite::Error) -> DbError + '_ {
        move |e| match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
                DbError::Busy { path: path.into() }
            }
            _ => DbError::Sqlite {
                path: path.into(),
                source: e,
            },
        }
    }
}

/// An open database whose schema we know.
pub(crate) struct Db {
    path: PathBuf,
    conn: Connection,
}

impl Db {
    /// Open an existing database (`None`: there is none) read-only or read-write, and check
    /// that its schema is the one we know.
    pub fn open(path: &Path, write: bool) -> Result<Option<Db>, DbError> {
        if !path.exists() {
            return Ok(None);
        }
        let mode = if write {
            OpenFlags::SQLITE_OPEN_READ_WRITE
        } else {
            OpenFlags::SQLITE_OPEN_READ_ONLY
        };
        // No SQLITE_OPEN_CREATE: a database that went away in between is not re-created.
        let flags = mode | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let err = DbError::of(path);
        let conn = Connection::open_with_flags(path, flags).map_err(&err)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(&err)?;
        let db = Db {
            path: path.into(),
            conn,
        };
        db.check_schema()?;
        Ok(Some(db))
    }

    fn unknown(&self, why: String) -> DbError {
        DbError::Unknown {
            path: self.path.clone(),
            why,
        }
    }

    fn check_schema(&self) -> Result<(), DbError> {
        let err = DbError::of(&self.path);
        let version: Option<i64> = self
            .conn
            .query_row("SELECT version FROM version LIMIT 1", [], |r| r.get(0))
            .optional()
            .map_err(|e| match e {
                rusqlite::Error::SqliteFailure(..) if !is_busy(&e) => {
                    self.unknown(format!("no schema version ({e})"))
                }
                e => err(e),
            })?;
        match version {
            Some(SCHEMA_VERSION) => {}
            Some(v) => {
                return Err(self.unknown(format!("schema version {v}, not {SCHEMA_VERSION}")))
            }
            None => return Err(self.unknown("no schema version".into())),
        }
        for (table, cols) in COLUMNS {
            let mut stmt = self
                .conn
                .prepare(&format!("PRAGMA table_info({table})"))
                .map_err(&err)?;
            let have: Vec<String> = stmt
                .query_map([], |r| r.get::<_, String>(1))
                .map_err(&err)?
                .collect::<Result<_, _>>()
                .map_err(&err)?;
            if let Some(c) = cols.iter().find(|c| !have.iter().any(|h| h == *c)) {
                return Err(self.unknown(format!(
                    "schema version {SCHEMA_VERSION} but table {table} has no column {c}"
                )));
            }
        }
        Ok(())
    }

    /// Everything we read, consistent (one read transaction).
    pub fn read(&mut self) -> Result<Facts, DbError> {
        let path = self.path.clone();
        let err = DbError::of(&path);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Deferred)
            .map_err(&err)?;
        let ecu: Option<(String, String)> = tx
            .query_row(
                "SELECT serial, hardware_id FROM ecus WHERE is_primary = 1 LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(&err)?;
        let serial = ecu.as_ref().map_or(String::new(), |(s, _)| s.clone());
        let mut stmt = tx
            .prepare(
                "SELECT id, name, sha256, custom_meta, correlation_id, is_current, is_pending, \
                 was_installed FROM installed_versions WHERE ecu_serial = ?1 ORDER BY id",
            )
            .map_err(&err)?;
        let rows = stmt
            .query_map([&serial], |r| {
                let custom: String = r.get(3)?;
                Ok(Row {
                    id: r.get(0)?,
                    name: r.get(1)?,
                    sha256: r.get(2)?,
                    // An unreadable custom object is a target without details, as there.
                    custom: serde_json::from_str(&custom).unwrap_or_default(),
                    correlation_id: r.get(4)?,
                    is_current: r.get::<_, i64>(5)? == 1,
                    is_pending: r.get::<_, i64>(6)? == 1,
                    was_installed: r.get::<_, i64>(7)? == 1,
                })
            })
            .map_err(&err)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(&err)?;
        drop(stmt);
        let mut roots = BTreeMap::new();
        let mut roles = BTreeMap::new();
        {
            let mut stmt = tx
                .prepare("SELECT meta_type, version, meta FROM meta WHERE repo = ?1")
                .map_err(&err)?;
            let all = stmt
                .query_map([IMAGE_REPO], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, blob(r, 2)?))
                })
                .map_err(&err)?;
            for m in all {
                let (kind, version, bytes) = m.map_err(&err)?;
                match (kind, u64::try_from(version)) {
                    (ROOT, Ok(v)) => {
                        roots.insert(v, bytes);
                    }
                    (SNAPSHOT | TARGETS | TIMESTAMP, _) => {
                        roles.insert(kind, bytes);
                    }
                    _ => {}
                }
            }
        }
        tx.commit().map_err(&err)?;
        Ok(Facts {
            ecu,
            rows,
            roots,
            roles,
        })
    }

    /// One write step, in one immediate transaction: all of it or nothing.
    pub fn write(
        &mut self,
        step: impl FnOnce(&Writer) -> rusqlite::Result<()>,
    ) -> Result<(), DbError> {
        let path = self.path.clone();
        let err = DbError::of(&path);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(&err)?;
        step(&Writer { tx: &tx }).map_err(&err)?;
        tx.commit().map_err(&err)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

/// `meta.meta` is a BLOB as aktualizr-lite writes it; a TEXT value is read the same.
fn blob(r: &rusqlite::Row, i: usize) -> rusqlite::Result<Vec<u8>> {
    use rusqlite::types::ValueRef;
    Ok(match r.get_ref(i)? {
        ValueRef::Blob(b) | ValueRef::Text(b) => b.to_vec(),
        _ => Vec::new(),
    })
}

/// How a row is saved, as libaktualizr's `saveInstalledVersion` modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Pending: every other row loses its pending flag.
    Pending,
    /// Current: every row loses its current and pending flags; this one was installed.
    Current,
    /// A target that failed: no flag (aktualizr-lite's "known but not installed" list).
    Bad,
}

/// The writes of one step.
pub struct Writer<'a> {
    tx: &'a rusqlite::Transaction<'a>,
}

impl Writer<'_> {
    /// Save `t` in `mode` as libaktualizr does: the newest row of the ECU is updated when it
    /// has the same name and commit, else a row is added.
    pub fn save(
        &self,
        serial: &str,
        t: &InstalledTarget,
        mode: Mode,
        cid: &str,
    ) -> rusqlite::Result<()> {
        let newest: Option<(i64, String, String, i64)> = self
            .tx
            .query_row(
                "SELECT id, sha256, name, was_installed FROM installed_versions \
                 WHERE ecu_serial = ?1 ORDER BY id DESC LIMIT 1",
                [serial],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()?;
        match mode {
            Mode::Current => self.tx.execute(
                "UPDATE installed_versions SET is_current = 0, is_pending = 0 WHERE ecu_serial = ?1",
                [serial],
            )?,
            Mode::Pending => self.tx.execute(
                "UPDATE installed_versions SET is_pending = 0 WHERE ecu_serial = ?1",
                [serial],
            )?,
            Mode::Bad => 0,
        };
        let current = i64::from(mode == Mode::Current);
        let pending = i64::from(mode == Mode::Pending);
        match newest.filter(|(_, sha, name, _)| *sha == t.sha256 && *name == t.name) {
            Some((id, _, _, was)) => {
                self.tx.execute(
                    "UPDATE installed_versions SET correlation_id = ?1, is_current = ?2, \
                     is_pending = ?3, was_installed = ?4 WHERE id = ?5",
                    params![cid, current, pending, current.max(was), id],
                )?;
            }
            None => {
                self.tx.execute(
                    "INSERT INTO installed_versions(ecu_serial, sha256, name, hashes, length, \
                     custom_meta, correlation_id, is_current, is_pending, was_installed) \
                     VALUES (?1, ?2, ?3, ?4, 0, ?5, ?6, ?7, ?8, ?9)",
                    params![
                        serial,
                        t.sha256,
                        t.name,
                        hashes(&t.sha256),
                        custom_meta(t.custom.as_ref()),
                        cid,
                        current,
                        pending,
                        current
                    ],
                )?;
            }
        }
        Ok(())
    }

    /// A root of the image repository: one row per version.
    pub(crate) fn store_root(&self, version: u64, bytes: &[u8]) -> rusqlite::Result<()> {
        let v = i64::try_from(version).unwrap_or(i64::MAX);
        self.tx.execute(
            "DELETE FROM meta WHERE repo = ?1 AND meta_type = ?2 AND version = ?3",
            params![IMAGE_REPO, ROOT, v],
        )?;
        self.tx.execute(
            "INSERT INTO meta(meta, repo, meta_type, version) VALUES (?1, ?2, ?3, ?4)",
            params![bytes, IMAGE_REPO, ROOT, v],
        )?;
        Ok(())
    }

    /// Timestamp, snapshot or targets: the one row of the role is replaced (version -1).
    pub(crate) fn store_role(&self, meta_type: i64, bytes: &[u8]) -> rusqlite::Result<()> {
        self.tx.execute(
            "DELETE FROM meta WHERE repo = ?1 AND meta_type = ?2",
            params![IMAGE_REPO, meta_type],
        )?;
        self.tx.execute(
            "INSERT INTO meta(meta, repo, meta_type, version) VALUES (?1, ?2, ?3, -1)",
            params![bytes, IMAGE_REPO, meta_type],
        )?;
        Ok(())
    }

    /// aktualizr-lite's "a reboot is needed" flag (with the sentinel file, "not yet").
    pub(crate) fn set_need_reboot(&self, on: bool) -> rusqlite::Result<()> {
        if on {
            self.tx.execute(
                "INSERT OR REPLACE INTO need_reboot(unique_mark, flag) VALUES (0, 1)",
                [],
            )?;
        } else {
            self.tx.execute("DELETE FROM need_reboot", [])?;
        }
        Ok(())
    }
}

/// `hashes` as libaktualizr encodes a target's hash list: `sha256:<HEX>` (upper case).
pub fn hashes(sha256: &str) -> String {
    format!("sha256:{}", sha256.to_ascii_uppercase())
}

/// `custom_meta`: the target's `custom` object, compact with sorted members (jsoncpp), with
/// the `"ecuIdentifiers": null` that libaktualizr's target parser adds to every one.
pub fn custom_meta(custom: Option<&Map<String, Value>>) -> String {
    let mut custom = custom.cloned().unwrap_or_default();
    custom.entry("ecuIdentifiers").or_insert(Value::Null);
    let custom = Value::Object(custom);
    crate::tuf::canonical::to_vec(&custom)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .unwrap_or_else(|| custom.to_string())
}

#[cfg(test)]
mod tests;
