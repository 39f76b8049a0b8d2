//! The running-target rule, source by source.

use super::*;
use crate::aklite::Store;
use crate::state::InstalledTarget;
use serde_json::json;
use test_kit::testdb;

fn tuf(name: &str, sha: &str, version: &str) -> Target {
    Target {
        name: name.into(),
        sha256: sha.into(),
        custom: json!({"version": version, "hardwareIds": ["hw"]})
            .as_object()
            .unwrap()
            .clone(),
    }
}

fn view(store: Store) -> View {
    View {
        db_path: "/nonexistent/sql.db".into(),
        store,
        warning: None,
        busy: false,
    }
}

type Flags = (bool, bool, bool);

fn db_view(rows: &[(&str, &str, &str, Flags)]) -> (tempfile::TempDir, View) {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("sql.db");
    testdb::create(&p, 25, "s", "hw").unwrap();
    for (name, sha, version, flags) in rows {
        let row = testdb::TestRow {
            name: name.to_string(),
            sha256: sha.to_string(),
            hashes: String::new(),
            length: 0,
            custom_meta: json!({"version": version}).to_string(),
            correlation_id: String::new(),
            flags: *flags,
        };
        testdb::insert(&p, "s", &row).unwrap();
    }
    let mut db = crate::aklite::db::Db::open(&p, false).unwrap().unwrap();
    let facts = db.read().unwrap();
    (d, view(Store::Database(facts)))
}

fn no_version(_: &str) -> Option<String> {
    None
}

fn named(r: Option<(InstalledTarget, Source)>) -> (String, Option<u64>, Source) {
    let (t, s) = r.unwrap();
    (t.name, t.version, s)
}

#[test]
fn our_record_counts_only_while_its_commit_is_booted() {
    let state = State {
        current: Some(InstalledTarget {
            name: "t-3".into(),
            version: Some(3),
            sha256: "cc".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let none = view(Store::Import(Vec::new()));
    let r = running(&state, Some("cc"), &none, &[], "hw", &no_version);
    assert_eq!(named(r), ("t-3".into(), Some(3), Source::Recorded));
    // Another agent moved the device to dd: the database says what that is.
    let (_d, v) = db_view(&[
        ("t-3", "cc", "3", (false, false, true)),
        ("t-5", "dd", "5", (true, false, true)),
    ]);
    let r = running(
        &state,
        Some("dd"),
        &v,
        &[tuf("t-4", "dd", "4")],
        "hw",
        &no_version,
    );
    assert_eq!(named(r), ("t-5".into(), Some(5), Source::Aklite));
    // Nothing booted (a sysroot nobody booted): the record.
    let r = running(&state, None, &none, &[], "hw", &no_version);
    assert_eq!(named(r).2, Source::Recorded);
}

#[test]
fn then_trusted_targets_then_commit_metadata_then_unknown() {
    let state = State::default();
    // aktualizr-lite's own "Initial Target" (no version) is no better than nothing.
    let (_d, v) = db_view(&[("Initial Target", "aa", "", (true, false, true))]);
    let r = running(
        &state,
        Some("aa"),
        &v,
        &[tuf("t-2", "aa", "2")],
        "hw",
        &no_version,
    );
    assert_eq!(named(r), ("t-2".into(), Some(2), Source::TufTarget));
    let two = [
        tuf("t-2", "aa", "2"),
        tuf("t-1", "aa", "1"),
        tuf("x", "aa", "9"),
    ];
    let mut other_hw = two.clone();
    other_hw[2]
        .custom
        .insert("hardwareIds".into(), json!(["other"]));
    let r = running(&state, Some("aa"), &v, &other_hw, "hw", &no_version);
    assert_eq!(named(r), (INITIAL.into(), Some(1), Source::TufTarget));
    let meta = |c: &str| (c == "aa").then(|| "7".to_string());
    let r = running(&state, Some("aa"), &v, &[], "hw", &meta);
    assert_eq!(named(r), (INITIAL.into(), Some(7), Source::CommitMetadata));
    let odd = |_: &str| Some("4.0.11-91".to_string());
    let r = running(&state, Some("aa"), &v, &[], "hw", &odd);
    assert_eq!(named(r), (INITIAL.into(), None, Source::Unknown));
    let none = view(Store::Import(Vec::new()));
    let r = running(&state, Some("bb"), &none, &[], "hw", &no_version);
    assert_eq!(named(r), (INITIAL.into(), None, Source::Unknown));
}

#[test]
fn the_import_file_of_a_factory_image_names_the_running_target() {
    let state = State::default();
    let custom = json!({"version": "2"});
    let t = crate::aklite::known_target("factory-2", "aa", custom.as_object().unwrap());
    let entries = crate::aklite::import::with_current(&t);
    let v = view(Store::Import(entries));
    let r = running(
        &state,
        Some("aa"),
        &v,
        &[tuf("t-1", "bb", "1")],
        "hw",
        &no_version,
    );
    assert_eq!(named(r), ("factory-2".into(), Some(2), Source::Aklite));
}
