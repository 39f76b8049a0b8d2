//! Living beside aktualizr-lite, on a real sysroot with its database made from the schema
//! facts (`test_kit::testdb`): what we read from it (its pending installation,
//! what it says runs, its hardware id, roots and role versions), what we write into it
//! (pending, current, bad, the reboot flag and sentinel, the metadata), its import file
//! when it has no database yet, `current-target`, the callback program, the policy for an
//! unknown running version, and the aklite-offline personality. Kills between our state
//! and the database: tests/privileged/faults_crash.rs.

use std::collections::BTreeMap;

use crate::common::{Device, DeviceSpec, Run, Unchanged, AKLITE_SERIAL, HWID};
use serde_json::json;
use test_kit::gen::{self, ostree as gost, write_bundle, write_content, BundleSpec, Factory};
use test_kit::testdb::{self, TestRow};

#[track_caller]
fn code(r: &Run, want: i32) {
    assert_eq!(r.code, want, "stdout:\n{}\nstderr:\n{}", r.stdout, r.stderr);
}

fn name(v: u32) -> String {
    format!("{HWID}-lmp-{v}")
}

/// A device running version `running` (its own commit), aktualizr-lite's database or not.
struct Dev {
    d: Device,
    f: Factory,
    commits: BTreeMap<u32, String>,
    _image: tempfile::TempDir,
}

fn device_with(f: Factory, running: u32, db: bool) -> Dev {
    device_full(f, running, db, true)
}

/// `versioned`: the running commit carries `version` metadata (as LmP's do).
fn device_full(f: Factory, running: u32, db: bool, versioned: bool) -> Dev {
    let d = Device::with(
        &f,
        DeviceSpec {
            rollback_mode: "file",
            aklite_db: db,
            ..Default::default()
        },
    );
    let image = tempfile::tempdir().unwrap();
    let v = running.to_string();
    let repo = image.path().join("ostree_repo");
    let commit = if versioned {
        write_content(image.path(), &f.name, HWID, &v, &[])
            .unwrap()
            .commit
    } else {
        let tree = gost::bootable_tree(&v, Vec::new());
        gost::commit_tree_with(&repo, "lmp", &tree, &gost::CommitOptions::new("lmp", None)).unwrap()
    };
    d.deploy_initial(&repo, &commit);
    d.reboot_into(&commit, "sim-0");
    Dev {
        d,
        f,
        commits: BTreeMap::from([(running, commit)]),
        _image: image,
    }
}

fn device(running: u32, db: bool) -> Dev {
    device_with(Factory::new().unwrap(), running, db)
}

impl Dev {
    /// A bundle offering `versions` (content in it).
    fn bundle(
        &mut self,
        versions: &[u32],
        edit: impl FnOnce(&mut BundleSpec),
    ) -> tempfile::TempDir {
        let b = tempfile::tempdir().unwrap();
        let mut targets = Vec::new();
        for v in versions {
            let c = write_content(b.path(), &self.f.name, HWID, &v.to_string(), &[]).unwrap();
            self.commits.insert(*v, c.commit.clone());
            targets.push(gen::target_for(HWID, &v.to_string(), &c));
        }
        let mut spec = BundleSpec::new(targets);
        edit(&mut spec);
        write_bundle(&self.f, &spec, b.path()).unwrap();
        b
    }

    /// A row as aktualizr-lite writes it.
    fn row(&self, name: &str, commit: &str, version: &str, cid: &str, flags: (bool, bool, bool)) {
        let custom = json!({"ecuIdentifiers": null, "hardwareIds": [HWID],
                            "targetFormat": "OSTREE", "version": version});
        let row = TestRow {
            name: name.into(),
            sha256: commit.into(),
            hashes: format!("sha256:{}", commit.to_uppercase()),
            length: 0,
            custom_meta: custom.to_string(),
            correlation_id: cid.into(),
            flags,
        };
        testdb::insert(&self.d.sql_db(), AKLITE_SERIAL, &row).unwrap();
    }

    /// What aktualizr-lite's first start leaves: the booted commit as "Initial Target".
    fn initial_target(&self, v: u32) {
        self.row(
            "Initial Target",
            &self.commits[&v],
            "",
            "",
            (true, false, true),
        );
    }

    fn flags(&self) -> Vec<(String, (bool, bool, bool))> {
        testdb::rows(&self.d.sql_db())
            .unwrap()
            .into_iter()
            .map(|r| (r.name, r.flags))
            .collect()
    }

    fn sentinel(&self) -> bool {
        self.d.sentinel_dir().join("need_reboot").exists()
    }
}

#[test]
fn install_and_run_are_mirrored_into_its_database() {
    let mut x = device(1, true);
    x.initial_target(1);
    let b = x.bundle(&[2], |_| {});
    let db = x.d.sql_db();
    let r = x.d.run("install", b.path(), &[]);
    code(&r, 100);
    // Pending, as aktualizr-lite writes it, with the reboot flag and the sentinel.
    let rows = testdb::rows(&db).unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(
        rows[0].flags,
        (true, false, true),
        "the running one stays current"
    );
    let p = &rows[1];
    assert_eq!(
        (p.name.as_str(), p.flags),
        (name(2).as_str(), (false, true, false))
    );
    assert_eq!(p.sha256, x.commits[&2]);
    assert_eq!(p.hashes, format!("sha256:{}", x.commits[&2].to_uppercase()));
    assert_eq!(p.length, 0);
    assert!(p.correlation_id.starts_with("2-"), "{}", p.correlation_id);
    assert_eq!(p.correlation_id.len(), "2-".len() + 36);
    let custom: serde_json::Value = serde_json::from_str(&p.custom_meta).unwrap();
    assert_eq!(custom["version"], "2");
    assert_eq!(custom["ecuIdentifiers"], serde_json::Value::Null);
    assert!(!p.custom_meta.contains(' '), "compact: {}", p.custom_meta);
    assert_eq!(testdb::need_reboot(&db).unwrap(), Some(1));
    assert!(x.sentinel());
    assert_eq!(testdb::meta(&db).unwrap(), vec![(1, -1), (2, -1), (3, -1)]);
    // Before the reboot: 104, nothing written.
    let before = Unchanged::new(&x.d, b.path());
    code(&x.d.command("run", &[]), 104);
    before.assert();
    // After it: current, flag and sentinel gone, current-target written.
    x.d.reboot_into(&x.commits[&2], "boot-1");
    code(&x.d.command("run", &[]), 0);
    assert_eq!(
        x.flags(),
        vec![
            ("Initial Target".into(), (false, false, true)),
            (name(2), (true, false, true))
        ]
    );
    assert_eq!(
        testdb::rows(&db).unwrap()[1].correlation_id,
        p.correlation_id
    );
    assert_eq!(testdb::need_reboot(&db).unwrap(), None);
    assert!(!x.sentinel());
    assert_eq!(
        std::fs::read_to_string(x.d.storage.join("current-target")).unwrap(),
        format!(
            "TARGET_NAME=\"{}\"\nCUSTOM_VERSION=\"2\"\nTAG=\"devel\"\n",
            name(2)
        )
    );
    assert!(!x.d.import_file().exists(), "a database: no import file");
    // The same bundle again: nothing to do, nothing written.
    let before = Unchanged::new(&x.d, b.path());
    code(&x.d.run("install", b.path(), &[]), 0);
    before.assert();
}

#[test]
fn its_pending_installation_is_30_and_nothing_changes() {
    let mut x = device(1, true);
    x.initial_target(1);
    let b = x.bundle(&[2, 3], |_| {});
    x.row(
        &name(2),
        &x.commits[&2],
        "2",
        "2-theirs",
        (false, true, false),
    );
    let before = Unchanged::new(&x.d, b.path());
    let want = format!(
        "aktualizr-lite's installation of {} (commit {}) is pending in {}: reboot so that \
         aktualizr-lite finishes it, then try again",
        name(2),
        x.commits[&2],
        x.d.sql_db().display()
    );
    x.d.check(b.path(), &[]).assert(30, &want);
    let r = x.d.run("install", b.path(), &[]);
    code(&r, 30);
    assert_eq!(r.error(), want);
    before.assert();
}

#[test]
fn its_newer_current_target_makes_an_older_bundle_a_downgrade() {
    let mut x = device(3, true);
    let b = x.bundle(&[2], |_| {});
    let three = x.commits[&3].clone();
    x.row(&name(3), &three, "3", "3-theirs", (true, false, true));
    let before = Unchanged::new(&x.d, b.path());
    let r = x.d.check(b.path(), &[]);
    r.assert(
        102,
        "is older than the running version 3: downgrade refused",
    );
    assert_eq!(
        r.line("running: "),
        Some(
            format!(
                "running: {} (version 3), commit {three} (known to aktualizr-lite)",
                name(3)
            )
            .as_str()
        )
    );
    code(&x.d.run("install", b.path(), &[]), 102);
    before.assert();
    // Its current row counts only on its commit: booted elsewhere, it says nothing.
    let mut y = device_full(Factory::new().unwrap(), 3, true, false);
    let b = y.bundle(&[2], |_| {});
    y.row(&name(5), &"ab".repeat(32), "5", "", (true, false, true));
    let r = y.d.check(b.path(), &[]);
    r.assert(100, "");
    assert!(
        r.line("running: ")
            .unwrap()
            .starts_with("running: Initial Target (version unknown)"),
        "{}",
        r.stdout
    );
}

#[test]
fn without_a_database_the_import_file_names_our_target() {
    let mut x = device(1, false);
    let b = x.bundle(&[2], |_| {});
    code(&x.d.run("install", b.path(), &[]), 100);
    assert!(!x.d.import_file().exists(), "only what runs is imported");
    x.d.reboot_into(&x.commits[&2], "boot-1");
    code(&x.d.command("run", &[]), 0);
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(x.d.import_file()).unwrap()).unwrap();
    let t = &v[name(2)];
    assert_eq!(t["is_current"], true);
    assert_eq!(t["hashes"]["sha256"], x.commits[&2]);
    assert_eq!(t["length"], 0);
    assert_eq!(t["custom"]["version"], "2");
    assert_eq!(v.as_object().unwrap().len(), 1);
    assert!(!x.d.sql_db().exists(), "never created by us");
    // A factory image's import file naming the running target (3): 2 is a downgrade.
    let mut y = device(3, false);
    let b = y.bundle(&[2], |_| {});
    let file = json!({"factory-3": {"hashes": {"sha256": y.commits[&3]}, "length": 0,
                      "is_current": true, "custom": {"version": "3"}}});
    std::fs::create_dir_all(y.d.import_file().parent().unwrap()).unwrap();
    std::fs::write(y.d.import_file(), file.to_string()).unwrap();
    let r = y.d.check(b.path(), &[]);
    r.assert(102, "older than the running version 3");
    assert!(
        r.stdout.contains("running: factory-3 (version 3)"),
        "{}",
        r.stdout
    );
}

#[test]
fn another_schema_is_neither_read_nor_written_and_said_so() {
    let mut x = device(1, false);
    testdb::create(&x.d.sql_db(), 24, AKLITE_SERIAL, "another-hw").unwrap();
    let bytes = std::fs::read(x.d.sql_db()).unwrap();
    let b = x.bundle(&[2], |_| {});
    let r = x.d.run("install", b.path(), &[]);
    code(&r, 100);
    let note = format!(
        "note: aktualizr-lite's database {}: schema version 24, not 25: not read or written by this build",
        x.d.sql_db().display()
    );
    assert!(r.stdout.lines().any(|l| l == note), "{}", r.stdout);
    x.d.reboot_into(&x.commits[&2], "boot-1");
    let r = x.d.command("run", &[]);
    code(&r, 0);
    assert!(
        r.stdout.contains("schema version 24, not 25"),
        "{}",
        r.stdout
    );
    assert_eq!(
        std::fs::read(x.d.sql_db()).unwrap(),
        bytes,
        "the database changed"
    );
    assert!(
        !x.d.import_file().exists(),
        "a database exists: no import file"
    );
}

#[test]
fn its_hardware_id_wins_over_the_config() {
    let mut x = device(1, false);
    testdb::create(&x.d.sql_db(), 25, AKLITE_SERIAL, "frozen-hw").unwrap();
    let b = x.bundle(&[2], |_| {});
    let r = x.d.check(b.path(), &[]);
    r.assert(6, "is not exactly [\"frozen-hw\"] (this device)");
    assert!(
        r.stdout.starts_with("device: hardware id frozen-hw,"),
        "{}",
        r.stdout
    );
}

#[test]
fn its_roots_extend_trust_and_its_versions_are_rollback_floors() {
    let mut f = Factory::new().unwrap();
    f.rotate_root().unwrap();
    f.rotate_root().unwrap();
    let root2 = serde_json::to_vec(f.root(2).unwrap()).unwrap();
    // The device was provisioned with root 1; aktualizr-lite stored root 2.
    let mut x = device_with(f, 1, true);
    let b = x.bundle(&[2], |s| s.roots_from = 3);
    let r = x.d.check(b.path(), &[]);
    r.assert(11, "gap");
    testdb::store_meta(&x.d.sql_db(), 0, 2, &root2).unwrap();
    let r = x.d.check(b.path(), &[]);
    r.assert(100, "");
    assert!(
        r.stdout.contains(&format!(
            "root: v2 expires {} ({} (aktualizr-lite) root v2)",
            gen::FAR_FUTURE,
            x.d.sql_db().display()
        )),
        "{}",
        r.stdout
    );
    // aktualizr-lite holds targets version 5: this bundle's 1 is a rollback.
    let newer = x.bundle(&[4], |s| s.versions.targets = 5);
    let targets = std::fs::read(newer.path().join("tuf/targets.json")).unwrap();
    testdb::store_meta(&x.d.sql_db(), 2, -1, &targets).unwrap();
    x.d.check(b.path(), &[]).assert(11, "");
    // The roots it lacks are written with the rest at install.
    code(&x.d.run("install", newer.path(), &[]), 100);
    let meta = testdb::meta(&x.d.sql_db()).unwrap();
    assert!(meta.contains(&(0, 3)), "{meta:?}");
}

#[test]
fn a_bootloader_rollback_marks_ours_bad_and_the_previous_current() {
    let mut x = device(1, true);
    x.initial_target(1);
    let b = x.bundle(&[2], |_| {});
    code(&x.d.run("install", b.path(), &[]), 100);
    x.d.reboot_into(&x.commits[&1], "boot-1");
    code(&x.d.command("run", &[]), 99);
    assert_eq!(
        x.flags(),
        vec![
            ("Initial Target".into(), (true, false, true)),
            (name(2), (false, false, false))
        ],
        "aktualizr-lite's bad-target list: known, never installed"
    );
    assert_eq!(testdb::need_reboot(&x.d.sql_db()).unwrap(), None);
}

#[test]
fn the_callback_program_runs_at_its_steps() {
    let mut x = device(1, true);
    x.initial_target(1);
    let b = x.bundle(&[2], |_| {});
    let log = x.d.tmp.path().join("callbacks");
    let prog = x.d.tmp.path().join("callback.sh");
    std::fs::write(
        &prog,
        format!(
            "#!/bin/sh\necho \"$MESSAGE|${{INSTALL_TARGET_NAME-}}|${{RESULT-}}|$CURRENT_TARGET_NAME|$CURRENT_TARGET\" >> {}\necho on stdout\n",
            log.display()
        ),
    )
    .unwrap();
    std::process::Command::new("chmod")
        .arg("755")
        .arg(&prog)
        .status()
        .unwrap();
    std::fs::write(
        x.d.conf.join("zz-callback.toml"),
        format!("[pacman]\ncallback_program = \"{}\"\n", prog.display()),
    )
    .unwrap();
    let r = x.d.run("install", b.path(), &["--json"]);
    code(&r, 100);
    serde_json::from_str::<serde_json::Value>(&r.stdout)
        .expect("the program's output is not on our stdout");
    x.d.reboot_into(&x.commits[&2], "boot-1");
    code(&x.d.command("run", &[]), 0);
    let ct = x.d.storage.join("current-target");
    let two = name(2);
    let want: Vec<String> = [
        "check-for-update-pre||".to_string(),
        format!("check-for-update-post|{two}|OK"),
        format!("download-pre|{two}|"),
        format!("download-post|{two}|OK"),
        format!("install-pre|{two}|"),
        format!("install-post|{two}|NEEDS_COMPLETION"),
        format!("install-final-pre|{two}|"),
        format!("install-post|{two}|OK"),
    ]
    .iter()
    .enumerate()
    .map(|(i, l)| {
        let current = if i < 6 {
            "Initial Target".to_string()
        } else {
            two.clone()
        };
        format!("{l}|{current}|{}", ct.display())
    })
    .collect();
    let got: Vec<String> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(got, want);
}

#[test]
fn an_unknown_running_version_is_said_and_may_be_refused() {
    // The bundle does not list the running commit, but the commit says its version.
    let mut x = device(1, false);
    let b = x.bundle(&[2], |_| {});
    let r = x.d.check(b.path(), &[]);
    r.assert(100, "");
    let want = format!(
        "running: Initial Target (version 1), commit {} (the booted commit's version metadata)",
        x.commits[&1]
    );
    assert_eq!(r.line("running: "), Some(want.as_str()));
    // Nothing knows its version.
    let mut x = device_full(Factory::new().unwrap(), 1, false, false);
    let b = x.bundle(&[2], |_| {});
    let r = x.d.check(b.path(), &[]);
    r.assert(100, "");
    let note = format!(
        "note: the running version is unknown (Initial Target, commit {}): the downgrade rule cannot apply",
        x.commits[&1]
    );
    assert!(r.stdout.lines().any(|l| l == note), "{}", r.stdout);
    x.d.set_policy("[update]\nallow_unknown_running_version = false\n");
    let before = Unchanged::new(&x.d, b.path());
    let r = x.d.run("install", b.path(), &[]);
    code(&r, 103);
    assert!(
        r.error()
            .starts_with("the running version is unknown, so the downgrade rule cannot apply"),
        "{}",
        r.stdout
    );
    before.assert();
    code(&x.d.run("install", b.path(), &["--force"]), 100);
}

fn aklite_offline(d: &Device, args: &[&str]) -> Run {
    let bin = d.tmp.path().join("aklite-offline");
    if !bin.exists() {
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_usb-update"), &bin).unwrap();
    }
    let out = std::process::Command::new(&bin)
        .args(args)
        .output()
        .unwrap();
    Run::from(out)
}

#[test]
fn aklite_offline_prints_current_as_there_logs_on_stdout_and_exits_1_on_usage() {
    let mut x = device(1, false);
    let b = x.bundle(&[2], |_| {});
    let conf = x.d.conf.to_str().unwrap().to_string();
    let pol = x.d.policy.to_str().unwrap().to_string();
    let src = b.path().to_str().unwrap().to_string();
    let r = aklite_offline(&x.d, &["install", "-c", &conf, "-p", &pol, "-s", &src]);
    code(&r, 100);
    assert!(
        r.stdout.contains(&format!("pulled {}", x.commits[&2])),
        "info logs on stdout:\n{}",
        r.stdout
    );
    x.d.reboot_into(&x.commits[&2], "boot-1");
    let r = aklite_offline(&x.d, &["run", "-c", &conf, "-p", &pol, "--log-level", "4"]);
    code(&r, 0);
    assert!(
        !r.stdout.contains("INFO") && !r.stdout.contains("libostree"),
        "{}",
        r.stdout
    );
    let r = aklite_offline(&x.d, &["current", "-c", &conf, "--log-level", "3"]);
    code(&r, 0);
    assert_eq!(
        r.stdout,
        format!("Target: {}\nOstree hash: {}\n", name(2), x.commits[&2])
    );
    assert_eq!(aklite_offline(&x.d, &[]).code, 1, "no command");
    assert_eq!(aklite_offline(&x.d, &["frobnicate"]).code, 1);
    assert_eq!(
        aklite_offline(&x.d, &["install", "-c", &conf]).code,
        1,
        "no --src-dir"
    );
    assert_eq!(aklite_offline(&x.d, &["run", "--log-level", "x"]).code, 1);
    assert_eq!(aklite_offline(&x.d, &["--help"]).code, 0);
}
