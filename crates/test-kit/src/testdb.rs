//! An aktualizr-lite database for tests and the demo, made by our own code from the schema
//! facts of libaktualizr's version 25 (the tables and columns we use, their types and
//! constraints), and readers of what the tests check. Never used on a device.

use std::path::Path;

use rusqlite::{params, Connection};

/// Tables as schema 25 has them (the ones we read or write, and the version).
const TABLES: &[&str] = &[
    "CREATE TABLE version(version INTEGER)",
    "CREATE TABLE ecus(id INTEGER PRIMARY KEY, serial TEXT UNIQUE, hardware_id TEXT NOT NULL, \
     is_primary INTEGER NOT NULL DEFAULT 0 CHECK (is_primary IN (0,1)))",
    "CREATE TABLE installed_versions(id INTEGER PRIMARY KEY, ecu_serial TEXT NOT NULL, \
     sha256 TEXT NOT NULL, name TEXT NOT NULL, hashes TEXT NOT NULL, \
     length INTEGER NOT NULL DEFAULT 0, correlation_id TEXT NOT NULL DEFAULT '', \
     is_current INTEGER NOT NULL CHECK (is_current IN (0,1)) DEFAULT 0, \
     is_pending INTEGER NOT NULL CHECK (is_pending IN (0,1)) DEFAULT 0, \
     was_installed INTEGER NOT NULL CHECK (was_installed IN (0,1)) DEFAULT 0, \
     custom_meta TEXT NOT NULL DEFAULT '')",
    "CREATE TABLE meta(meta BLOB NOT NULL, repo INTEGER NOT NULL, meta_type INTEGER NOT NULL, \
     version INTEGER NOT NULL, UNIQUE(repo, meta_type, version))",
    "CREATE TABLE need_reboot(unique_mark INTEGER PRIMARY KEY CHECK (unique_mark = 0), \
     flag INTEGER NOT NULL DEFAULT 0)",
];

/// A database of schema `version` with the primary ECU `serial`/`hwid`, as aktualizr-lite's
/// first start leaves it (before it records what runs).
pub fn create(path: &Path, version: i64, serial: &str, hwid: &str) -> rusqlite::Result<()> {
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let c = Connection::open(path)?;
    for t in TABLES {
        c.execute(t, [])?;
    }
    c.execute(
        "INSERT INTO version(rowid, version) VALUES (1, ?1)",
        [version],
    )?;
    c.execute(
        "INSERT INTO ecus(id, serial, hardware_id, is_primary) VALUES (0, ?1, ?2, 1)",
        params![serial, hwid],
    )?;
    Ok(())
}

/// One `installed_versions` row as a test states it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestRow {
    pub name: String,
    pub sha256: String,
    pub hashes: String,
    pub length: i64,
    pub custom_meta: String,
    pub correlation_id: String,
    /// `is_current`, `is_pending`, `was_installed`.
    pub flags: (bool, bool, bool),
}

/// Add a row as aktualizr-lite would have (flags given).
pub fn insert(path: &Path, serial: &str, row: &TestRow) -> rusqlite::Result<()> {
    let c = Connection::open(path)?;
    c.execute(
        "INSERT INTO installed_versions(ecu_serial, sha256, name, hashes, length, custom_meta, \
         correlation_id, is_current, is_pending, was_installed) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10)",
        params![
            serial,
            row.sha256,
            row.name,
            row.hashes,
            row.length,
            row.custom_meta,
            row.correlation_id,
            row.flags.0,
            row.flags.1,
            row.flags.2
        ],
    )?;
    Ok(())
}

/// Every `installed_versions` row, oldest first.
pub fn rows(path: &Path) -> rusqlite::Result<Vec<TestRow>> {
    let c = Connection::open(path)?;
    let mut s = c.prepare(
        "SELECT name, sha256, hashes, length, custom_meta, correlation_id, is_current, \
         is_pending, was_installed FROM installed_versions ORDER BY id",
    )?;
    let rows = s
        .query_map([], |r| {
            Ok(TestRow {
                name: r.get(0)?,
                sha256: r.get(1)?,
                hashes: r.get(2)?,
                length: r.get(3)?,
                custom_meta: r.get(4)?,
                correlation_id: r.get(5)?,
                flags: (r.get(6)?, r.get(7)?, r.get(8)?),
            })
        })?
        .collect();
    rows
}

/// The reboot flag (`None`: no row).
pub fn need_reboot(path: &Path) -> rusqlite::Result<Option<i64>> {
    use rusqlite::OptionalExtension as _;
    Connection::open(path)?
        .query_row("SELECT flag FROM need_reboot", [], |r| r.get(0))
        .optional()
}

/// `(meta_type, version)` of every image-repository metadata row, sorted.
pub fn meta(path: &Path) -> rusqlite::Result<Vec<(i64, i64)>> {
    let c = Connection::open(path)?;
    let mut s = c.prepare("SELECT meta_type, version FROM meta WHERE repo = 0 ORDER BY 1, 2")?;
    let v = s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect();
    v
}

/// Store metadata as aktualizr-lite does (roots by version, other roles as version -1).
pub fn store_meta(path: &Path, meta_type: i64, version: i64, bytes: &[u8]) -> rusqlite::Result<()> {
    let c = Connection::open(path)?;
    c.execute(
        "INSERT OR REPLACE INTO meta(meta, repo, meta_type, version) VALUES (?1, 0, ?2, ?3)",
        params![bytes, meta_type, version],
    )?;
    Ok(())
}
