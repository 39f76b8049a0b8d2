//! Shared by the kill -9 suites (tests/privileged/faults_crash.rs, tests/privileged/faults_apps.rs): which scenario kills the process at
//! which crash point (`USB_UPDATE_CRASH_AT`), how a kill is recognised, and the device's
//! state by role (NEW: the version being installed, CUR: the one running before, OLD:
//! older), so that an interrupted update can be compared with an uninterrupted one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{Device, Run, HWID};

pub const CRASH: &str = "USB_UPDATE_CRASH_AT";

/// Which command a point is killed in, and what running it again returns.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Cmd {
    Install,
    Run,
}

/// OSTree-only device, a normal update: (point, killed command, code of the re-run).
/// `state-written` kills the first save: install's pending record, run's boot count.
pub const OSTREE_UPDATE: &[(&str, Cmd, i32)] = &[
    ("install-pulled", Cmd::Install, 100),
    ("install-boot-armed", Cmd::Install, 100),
    ("install-deployed", Cmd::Install, 100),
    ("install-tuf-stored", Cmd::Install, 100),
    ("state-marker-written", Cmd::Install, 100),
    ("state-written", Cmd::Install, 30),
    ("install-recorded", Cmd::Install, 30),
    ("run-boot-counted", Cmd::Run, 0),
    ("state-written", Cmd::Run, 0),
    ("run-boot-ok-set", Cmd::Run, 0),
    ("run-recorded", Cmd::Run, 40),
    ("run-cleaned", Cmd::Run, 40),
    // Between our state and aktualizr-lite's database: install's pending row is written
    // (the re-run is busy), run's current row is written (nothing pending any more).
    ("aklite-mirrored", Cmd::Install, 30),
    ("aklite-mirrored", Cmd::Run, 40),
];

/// OSTree-only device, the bootloader booted the previous rootfs: (point, re-run code).
pub const OSTREE_BOOTLOADER_ROLLBACK: &[(&str, i32)] = &[
    ("run-rollback-recorded", 40),
    ("aklite-mirrored", 40),
    ("run-failed-deployment-removed", 40),
];

/// Compose device, rootfs and apps updated.
pub const APPS_UPDATE: &[(&str, Cmd, i32)] = &[
    ("install-blob-copied", Cmd::Install, 100),
    ("install-images-loaded", Cmd::Install, 100),
    ("install-apps-fetched", Cmd::Install, 100),
    ("install-previous-apps-recorded", Cmd::Install, 100),
    ("run-apps-up", Cmd::Run, 0),
    ("run-apps-healthy", Cmd::Run, 0),
    ("run-pruned", Cmd::Run, 40),
];

/// Compose device, the new apps fail: (point, which run, re-run code). The first run is on
/// the new rootfs (restores the previous apps, makes the previous deployment default, 100),
/// the second after the reboot into it (0: rolled back).
pub const APPS_ROLLBACK: &[(&str, u8, i32)] = &[
    ("run-rollback-apps-restored", 1, 100),
    ("run-rollback-default-set", 1, 100),
    // Recorded: the re-run is before the reboot it asked for.
    ("run-rollback-pending-recorded", 1, 104),
    ("run-rollback-apps-back", 2, 0),
    ("run-rollback-deployment-removed", 2, 0),
    ("run-rollback-finished", 2, 40),
];

/// Compose device, the bootloader booted the previous rootfs.
pub const APPS_BOOTLOADER_ROLLBACK: &[(&str, i32)] = &[("run-bootloader-apps-restored", 99)];

/// Compose device, an apps-only stick through `agent handle`: (point, re-run code of
/// `handle`). The install is recorded: the re-run is busy (30), `agent finalize` (at the
/// next boot, or after Docker's restart) finishes it.
pub const AGENT_APPS_ONLY: &[(&str, i32)] = &[
    ("agent-before-docker-restart", 30),
    ("agent-docker-restarted", 30),
];

/// OSTree-only device, a stick through `agent handle`, then `agent finalize` after the
/// reboot: (point, re-run code of `handle`; for finalize's point, of `finalize`).
pub const AGENT: &[(&str, i32)] = &[
    ("agent-mounted", 100),
    ("agent-aklite-stopped", 100),
    ("agent-installed", 30),
    ("agent-left-in-recorded", 30),
    ("agent-report-written", 30),
    ("agent-before-reboot", 30),
    ("agent-finalize-ran", 0),
];

pub fn scenario_points() -> Vec<&'static str> {
    let mut all: Vec<&str> = Vec::new();
    all.extend(OSTREE_UPDATE.iter().map(|p| p.0));
    all.extend(OSTREE_BOOTLOADER_ROLLBACK.iter().map(|p| p.0));
    all.extend(APPS_UPDATE.iter().map(|p| p.0));
    all.extend(APPS_ROLLBACK.iter().map(|p| p.0));
    all.extend(APPS_BOOTLOADER_ROLLBACK.iter().map(|p| p.0));
    all.extend(AGENT_APPS_ONLY.iter().map(|p| p.0));
    all.extend(AGENT.iter().map(|p| p.0));
    all
}

/// Every `failpoint::hit("...")` name in src/.
pub fn call_sites() -> BTreeMap<String, Vec<PathBuf>> {
    fn walk(dir: &Path, out: &mut BTreeMap<String, Vec<PathBuf>>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let text = std::fs::read_to_string(&p).unwrap();
                for (i, _) in text.match_indices("failpoint::hit(") {
                    let rest = &text[i + "failpoint::hit(".len()..];
                    let name = rest
                        .strip_prefix('"')
                        .and_then(|r| r.split('"').next())
                        .unwrap_or_else(|| panic!("{}: hit() without a literal name", p.display()));
                    out.entry(name.to_string()).or_default().push(p.clone());
                }
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut out);
    out
}

/// `r` died by SIGKILL at `point`; returns once the update lock of `d` is free again.
///
/// The kernel releases a killed process's flock with its files, but once (in 6 suite runs
/// of about 60 kills each, under load) a re-run started right after the kill still found
/// the lock taken, by nobody /proc/locks could name (exit 30): the test waits for the
/// release it relies on (a lock still held after 60 s fails here, naming it).
#[track_caller]
pub fn killed(d: &Device, r: &Run, point: &str) {
    assert!(
        r.code == -1 && r.stderr.contains(&format!("failpoint {point}: SIGKILL")),
        "{point}: expected a SIGKILL there, got {}\nstdout:\n{}\nstderr:\n{}",
        r.code,
        r.stdout,
        r.stderr
    );
    let lock = d.tmp.path().join("run/lock/aklite.lock");
    let Ok(file) = std::fs::File::open(&lock) else {
        return; // never taken
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while file.try_lock().is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "{point}: {} still locked 60 s after the kill",
            lock.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

#[track_caller]
pub fn code(r: &Run, want: i32, what: &str) {
    assert_eq!(
        r.code, want,
        "{what}\nstdout:\n{}\nstderr:\n{}",
        r.stdout, r.stderr
    );
}

pub fn name(v: u32) -> String {
    format!("{HWID}-lmp-{v}")
}

/// Commits, target names and digests replaced by their role.
pub struct Roles(pub Vec<(String, String)>);

impl Roles {
    pub fn apply(&self, s: &str) -> String {
        let mut s = s.to_string();
        for (needle, role) in &self.0 {
            s = s.replace(needle.as_str(), role);
        }
        s
    }
}

pub fn role(v: u32, new: u32, cur: u32) -> &'static str {
    match v {
        _ if v == new => "NEW",
        _ if v == cur => "CUR",
        _ => "OLD",
    }
}

/// `version` numbers differ from update to update; their role is in the name.
pub fn strip(v: &mut serde_json::Value, keys: &[&str]) {
    match v {
        serde_json::Value::Object(m) => {
            for k in keys {
                m.remove(*k);
            }
            m.values_mut().for_each(|x| strip(x, keys));
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(|x| strip(x, keys)),
        _ => {}
    }
}

pub fn read_json(p: &Path) -> serde_json::Value {
    std::fs::read(p)
        .ok()
        .map(|b| serde_json::from_slice(&b).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .unwrap_or(serde_json::Value::Null)
}

pub fn deployments(d: &Device) -> Vec<String> {
    super::scene::deployments(d)
}

/// What the device holds that an update decides, as text; the denylist separately (it
/// only grows: entries from before are checked to be kept).
pub fn device_state(d: &Device) -> (serde_json::Value, Vec<String>) {
    let dir = d.state_dir();
    let mut st = read_json(&dir.join("state.json"));
    let failed = st["failed"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|f| format!("{} {}", f["name"], f["sha256"]))
                .collect()
        })
        .unwrap_or_default();
    strip(
        &mut st,
        &[
            "history",
            "failed",
            "installed_at",
            "boot_id",
            "version",
            "reason",
            // Differ from update to update (the build's URI) or run to run (random).
            "custom",
            "correlation_id",
        ],
    );
    let bootenv =
        std::fs::read_to_string(d.sysroot.join(".usb-update-sim/bootenv")).unwrap_or_default();
    let mut bootenv: Vec<&str> = bootenv.lines().collect();
    bootenv.sort();
    let v = serde_json::json!({
        "deployments": deployments(d),
        "state": st,
        "pending_marker": std::fs::read_to_string(dir.join("pending")).ok(),
        "bootenv": bootenv,
        // By content: the digest of each file, which [`tuf_roles`] names by the bundle
        // (and role) it came from.
        "tuf_files": file_digests(&dir.join("tuf")),
        "aklite": aklite_state(d),
    });
    (v, failed)
}

/// Name -> sha256 of each file in `dir` (none: empty).
pub fn file_digests(dir: &Path) -> BTreeMap<String, String> {
    std::fs::read_dir(dir)
        .map(|r| {
            r.map(|e| {
                let e = e.unwrap();
                let bytes = std::fs::read(e.path()).unwrap();
                let hash = format!("{:x}", <sha2::Sha256 as sha2::Digest>::digest(&bytes));
                (e.file_name().to_string_lossy().into_owned(), hash)
            })
            .collect()
        })
        .unwrap_or_default()
}

/// The digest of every TUF file of every bundle (version -> its `tuf/` by
/// [`file_digests`]) replaced by `<role>'s <name>` (the same bytes in several bundles:
/// `any bundle's <name>`), so that a device holding the metadata of the wrong bundle, or
/// a file that is none of them, differs from the reference.
pub fn tuf_roles(
    bundles: &BTreeMap<u32, BTreeMap<String, String>>,
    new: u32,
    cur: u32,
) -> Vec<(String, String)> {
    let mut owners: BTreeMap<&str, (Vec<u32>, &str)> = BTreeMap::new();
    for (v, files) in bundles {
        for (name, hash) in files {
            owners.entry(hash).or_insert((Vec::new(), name)).0.push(*v);
        }
    }
    owners
        .into_iter()
        .map(|(hash, (vs, name))| {
            let label = match vs.as_slice() {
                [v] => format!("{}'s {name}", role(*v, new, cur)),
                _ => format!("any bundle's {name}"),
            };
            (hash.to_string(), label)
        })
        .collect()
}

/// What aktualizr-lite would read: of its database the current and pending rows and the
/// newest one with its flags (a failed target's), its reboot flag and sentinel, the
/// metadata it holds; without a database, its import file's entries; `current-target` but
/// its version line.
pub fn aklite_state(d: &Device) -> serde_json::Value {
    use test_kit::testdb;
    let db = d.sql_db();
    let database = db.exists().then(|| {
        let rows = testdb::rows(&db).unwrap();
        let named = |r: &testdb::TestRow| format!("\"{}\" {}", r.name, r.sha256);
        let flagged = |f: fn(&testdb::TestRow) -> bool| {
            rows.iter().filter(|r| f(r)).map(named).collect::<Vec<_>>()
        };
        serde_json::json!({
            "current": flagged(|r| r.flags.0),
            "pending": flagged(|r| r.flags.1),
            "newest": rows.last().map(|r| format!("{} {:?}", named(r), r.flags)),
            "need_reboot": testdb::need_reboot(&db).unwrap(),
            "meta": testdb::meta(&db).unwrap(),
        })
    });
    let import = std::fs::read(d.import_file()).ok().map(|b| {
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        v.as_object()
            .unwrap()
            .iter()
            .map(|(k, t)| format!("\"{k}\" {} {}", t["hashes"]["sha256"], t["is_current"]))
            .collect::<Vec<_>>()
    });
    let current_target = std::fs::read_to_string(d.storage.join("current-target"))
        .ok()
        .map(|t| {
            t.lines()
                .filter(|l| !l.starts_with("CUSTOM_VERSION="))
                .collect::<Vec<_>>()
                .join("\n")
        });
    serde_json::json!({
        "database": database,
        "import": import,
        "current_target": current_target,
        "sentinel": d.sentinel_dir().join("need_reboot").exists(),
    })
}

/// The denylist entries added, after checking that none from before went.
#[track_caller]
pub fn added(before: &[String], after: Vec<String>, what: &str) -> Vec<String> {
    for f in before {
        assert!(
            after.contains(f),
            "{what}: denylist entry {f} lost: {after:?}"
        );
    }
    after.into_iter().filter(|f| !before.contains(f)).collect()
}

pub fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

/// The agent's rig: run directory, logged reboot and Docker restart, a console file, no
/// LEDs, loop devices accepted.
pub fn agent_policy(d: &Device) {
    let root = d.tmp.path();
    std::fs::write(root.join("console"), "").unwrap();
    let log = |what: &str| {
        format!(
            "[\"sh\", \"-c\", \"echo {what} >> {}\"]",
            root.join("actions").display()
        )
    };
    std::fs::write(
        d.policy.join("20-agent.toml"),
        format!(
            "[agent]\nrun_dir = \"{run}\"\nreboot_command = {reboot}\n\
             docker_restart_command = {docker}\naklite_unit = \"\"\n\n\
             [media]\nrequire_usb = false\n\n\
             [feedback]\nleds = []\nconsoles = [\"{console}\"]\n",
            run = root.join("run/usb-update").display(),
            reboot = log("reboot"),
            docker = log("docker-restart"),
            console = root.join("console").display(),
        ),
    )
    .unwrap();
}

pub fn agent(d: &Device, args: &[&str], env: &[(&str, &str)]) -> Run {
    let (sub, rest) = args.split_first().unwrap();
    let mut all = vec![*sub, "-c", d.conf.to_str().unwrap(), "-p"];
    all.push(d.policy.to_str().unwrap());
    all.extend_from_slice(rest);
    let out = d
        .bin()
        .envs(env.iter().copied())
        .arg("agent")
        .args(&all)
        .output()
        .unwrap();
    Run::from(out)
}

/// Nothing of a stick stays mounted under the run directory.
#[track_caller]
pub fn no_mounts(d: &Device, what: &str) {
    let run = d.tmp.path().join("run/usb-update");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let run = run.canonicalize().unwrap_or(run);
    assert!(
        !mounts.contains(run.to_str().unwrap()),
        "{what}: a stick is still mounted under {}:\n{mounts}",
        run.display()
    );
}
