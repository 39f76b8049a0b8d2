//! The database module against a database made from the schema facts (`testdb`).

use super::*;
use serde_json::json;
use test_kit::testdb::{self, TestRow};

fn target(name: &str, sha: &str, version: &str) -> InstalledTarget {
    let custom = json!({"version": version, "targetFormat": "OSTREE", "hardwareIds": ["hw"],
                        "tags": ["main"], "name": "é"});
    crate::aklite::known_target(name, sha, custom.as_object().unwrap())
}

fn new_db() -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("sql.db");
    testdb::create(&p, SCHEMA_VERSION, "serial-1", "hw").unwrap();
    (d, p)
}

fn flags(p: &Path) -> Vec<(String, (bool, bool, bool))> {
    testdb::rows(p)
        .unwrap()
        .into_iter()
        .map(|r| (r.name, r.flags))
        .collect()
}

#[test]
fn absent_is_none_and_never_created() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("sql.db");
    assert!(Db::open(&p, true).unwrap().is_none());
    assert!(Db::open(&p, false).unwrap().is_none());
    assert!(!p.exists());
}

#[test]
fn another_schema_or_shape_is_neither_read_nor_written() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("sql.db");
    testdb::create(&p, 24, "s", "hw").unwrap();
    let before = std::fs::read(&p).unwrap();
    let e = Db::open(&p, true).err().unwrap().to_string();
    assert_eq!(
        e,
        format!(
            "{}: schema version 24, not 25: not read or written by this build",
            p.display()
        )
    );
    assert_eq!(std::fs::read(&p).unwrap(), before);
    let p2 = d.path().join("other.db");
    testdb::create(&p2, 25, "s", "hw").unwrap();
    rusqlite::Connection::open(&p2)
        .unwrap()
        .execute_batch("DROP TABLE need_reboot; CREATE TABLE need_reboot(x INTEGER);")
        .unwrap();
    let e = Db::open(&p2, false).err().unwrap().to_string();
    assert!(
        e.contains("table need_reboot has no column unique_mark"),
        "{e}"
    );
    let p3 = d.path().join("empty.db");
    rusqlite::Connection::open(&p3)
        .unwrap()
        .execute_batch("CREATE TABLE x(y);")
        .unwrap();
    let e = Db::open(&p3, false).err().unwrap().to_string();
    assert!(e.contains("no schema version"), "{e}");
}

#[test]
fn a_write_lock_held_past_the_timeout_is_busy() {
    let (_d, p) = new_db();
    let other = rusqlite::Connection::open(&p).unwrap();
    other.execute_batch("BEGIN EXCLUSIVE;").unwrap();
    let t0 = std::time::Instant::now();
    let e = Db::open(&p, true).and_then(|d| d.unwrap().read().map(|_| ()));
    assert!(matches!(e, Err(DbError::Busy { .. })), "{e:?}");
    assert!(t0.elapsed() >= BUSY_TIMEOUT);
    other.execute_batch("ROLLBACK;").unwrap();
}

#[test]
fn saves_as_libaktualizr_does() {
    let (_d, p) = new_db();
    let mut db = Db::open(&p, true).unwrap().unwrap();
    let (t1, t2) = (target("t-1", "aa", "1"), target("t-2", "bb", "2"));
    db.write(|w| w.save("serial-1", &t1, Mode::Current, "1-x"))
        .unwrap();
    db.write(|w| w.save("serial-1", &t2, Mode::Pending, "2-x"))
        .unwrap();
    // Pending keeps the current flag of the running one.
    assert_eq!(
        flags(&p),
        vec![
            ("t-1".into(), (true, false, true)),
            ("t-2".into(), (false, true, false))
        ]
    );
    let rows = testdb::rows(&p).unwrap();
    assert_eq!(rows[1].hashes, "sha256:BB");
    assert_eq!(rows[1].sha256, "bb");
    assert_eq!(rows[1].length, 0);
    assert_eq!(rows[1].correlation_id, "2-x");
    assert_eq!(
        rows[1].custom_meta,
        r#"{"ecuIdentifiers":null,"hardwareIds":["hw"],"name":"\u00e9","tags":["main"],"targetFormat":"OSTREE","version":"2"}"#
    );
    // The same target again updates its (newest) row.
    db.write(|w| w.save("serial-1", &t2, Mode::Current, "2-y"))
        .unwrap();
    assert_eq!(
        flags(&p),
        vec![
            ("t-1".into(), (false, false, true)),
            ("t-2".into(), (true, false, true))
        ]
    );
    assert_eq!(testdb::rows(&p).unwrap()[1].correlation_id, "2-y");
    // A failed target: no flag, and was_installed kept from before (here: never).
    let t3 = target("t-3", "cc", "3");
    db.write(|w| w.save("serial-1", &t3, Mode::Pending, "3-x"))
        .unwrap();
    db.write(|w| w.save("serial-1", &t3, Mode::Bad, "3-x"))
        .unwrap();
    assert_eq!(flags(&p)[2], ("t-3".into(), (false, false, false)));
    // Not the newest row: a new one.
    db.write(|w| w.save("serial-1", &t1, Mode::Current, "1-z"))
        .unwrap();
    assert_eq!(flags(&p).len(), 4);
    assert_eq!(flags(&p)[3], ("t-1".into(), (true, false, true)));
}

#[test]
fn reads_the_primary_ecu_its_rows_metadata_and_the_reboot_flag() {
    let (_d, p) = new_db();
    let row = |name: &str, sha: &str, f| TestRow {
        name: name.into(),
        sha256: sha.into(),
        hashes: format!("sha256:{}", sha.to_uppercase()),
        length: 0,
        custom_meta: r#"{"version":"7","docker_compose_apps":{"a":{"uri":"u"}}}"#.into(),
        correlation_id: format!("{name}-cid"),
        flags: f,
    };
    testdb::insert(&p, "serial-1", &row("t-7", "aa", (true, false, true))).unwrap();
    testdb::insert(&p, "serial-1", &row("t-8", "bb", (false, true, false))).unwrap();
    testdb::insert(&p, "serial-1", &row("t-9", "aa", (false, false, false))).unwrap();
    testdb::insert(&p, "other-ecu", &row("x", "aa", (true, true, true))).unwrap();
    testdb::store_meta(&p, ROOT, 2, b"{\"r\":2}").unwrap();
    testdb::store_meta(&p, ROOT, 3, b"{\"r\":3}").unwrap();
    testdb::store_meta(&p, TARGETS, -1, b"{\"t\":1}").unwrap();
    let mut db = Db::open(&p, false).unwrap().unwrap();
    db.write(|w| w.set_need_reboot(true)).unwrap_err();
    let f = db.read().unwrap();
    assert_eq!(f.ecu, Some(("serial-1".into(), "hw".into())));
    assert_eq!(f.rows.len(), 3, "the primary's rows only");
    assert_eq!(f.pending().unwrap().name, "t-8");
    assert_eq!(
        f.current("aa").unwrap().name,
        "t-7",
        "the current row on its commit"
    );
    assert_eq!(
        f.current("bb").unwrap().name,
        "t-8",
        "else the newest with the commit"
    );
    assert!(f.current("cc").is_none());
    let t = f.current("aa").unwrap().target();
    assert_eq!((t.version, t.apps.len()), (Some(7), 1));
    assert_eq!(f.by_correlation_id("t-9-cid").unwrap().sha256, "aa");
    assert_eq!(f.roots.keys().copied().collect::<Vec<_>>(), vec![2, 3]);
    assert_eq!(f.roots[&3], b"{\"r\":3}");
    assert_eq!(f.roles[&TARGETS], b"{\"t\":1}");
    assert_eq!(testdb::need_reboot(&p).unwrap(), None);
    drop(db);
    let mut db = Db::open(&p, true).unwrap().unwrap();
    db.write(|w| {
        w.set_need_reboot(true)?;
        w.store_root(4, b"r4")?;
        w.store_role(TARGETS, b"t2")
    })
    .unwrap();
    assert_eq!(testdb::need_reboot(&p).unwrap(), Some(1));
    assert_eq!(
        testdb::meta(&p).unwrap(),
        vec![(ROOT, 2), (ROOT, 3), (ROOT, 4), (TARGETS, -1)]
    );
    db.write(|w| w.set_need_reboot(false)).unwrap();
    assert_eq!(testdb::need_reboot(&p).unwrap(), None);
}

#[test]
fn a_failed_step_writes_nothing() {
    let (_d, p) = new_db();
    let mut db = Db::open(&p, true).unwrap().unwrap();
    let t = target("t-1", "aa", "1");
    let r = db.write(|w| {
        w.save("serial-1", &t, Mode::Current, "c")?;
        w.store_root(1, b"x")?;
        Err(rusqlite::Error::InvalidQuery)
    });
    assert!(r.is_err());
    assert!(testdb::rows(&p).unwrap().is_empty());
    assert!(testdb::meta(&p).unwrap().is_empty());
}
