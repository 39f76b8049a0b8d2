//! Faults of the medium: the stick pulled (the loop device shrunk under the mount, every
//! read EIO) at the points that matter, and a stick that reads back bad data. Each case:
//! the exact exit code and message, the LEDs and status the operator sees, nothing on the
//! device changed (sysroot, state, store, images), and a good stick installs afterwards.
//! The pull at the first blob copy is in tests/privileged/agent.rs.

use crate::common::agent_rig::{error_led, led, stick_with, Rig};
use crate::common::apps::{app, T};
use crate::common::faults::{code, corrupt, pull, Snapshot};
use crate::common::scene::deployments;

/// Pulled while the TUF metadata is read, then a stick whose largest blob reads back
/// corrupted, then pulled during the rootfs pull: 50 each time, nothing changed; a good
/// stick installs.
#[test]
fn stick_pulled_or_corrupt_before_the_deploy_is_50_and_the_next_stick_installs() {
    let mut r = Rig::new();
    let f = r.s.f.name.clone();
    let b = r.s.bundle(vec![T::new("2", vec![app(&f, "app-01", "v2")])]);
    let before = Snapshot::take(&r.s.d, Some(r.s.image_ids()));

    // 1. While the metadata is read: the bundle directory is open, no TUF file read yet.
    let stick = stick_with(b.path());
    let paused = r.handle_paused(&stick, "read-metadata");
    assert_eq!(r.led(), led("timer", "100", "100"), "working while held");
    pull(&stick);
    let o = paused.go();
    code(&o, 50);
    let console = r.console();
    assert!(
        console.contains("/update: tuf: the medium cannot be read (")
            && console.contains("): was the stick removed?"),
        "{console}"
    );
    assert_eq!(r.phase(), "error");
    assert_eq!(r.led(), error_led());
    before.assert_same(Some(r.s.image_ids()));
    drop(stick);

    // 2. Present but corrupt: ext4 has no data checksums, the blob reads back wrong.
    let stick = stick_with(b.path());
    let blob = largest_blob(b.path());
    corrupt(&stick, &blob);
    let o = r.handle(&stick);
    code(&o, 50);
    let hex = blob.file_name().unwrap().to_string_lossy().into_owned();
    let report = r.report(&stick).expect("a report on the corrupt stick");
    assert_eq!(report["exit_code"], 50);
    assert!(
        report["error"]
            .as_str()
            .unwrap()
            .contains(&format!("blob {hex} in ")),
        "{report}"
    );
    assert!(
        report["error"]
            .as_str()
            .unwrap()
            .ends_with("does not match its digest"),
        "{report}"
    );
    assert_eq!(r.led(), error_led());
    before.assert_same(Some(r.s.image_ids()));
    drop(stick);

    // 3. During the rootfs pull: the apps are in the store and their images loaded (the
    // retry skips both), the rootfs is not, nothing is deployed or pending.
    let stick = stick_with(b.path());
    let paused = r.handle_paused(&stick, "pull-rootfs");
    pull(&stick);
    let o = paused.go();
    code(&o, 50);
    let line = last_error(&r);
    assert!(line.contains("error: pulling commit "), "{line}");
    assert!(line.ends_with(": was the stick removed?"), "{line}");
    assert!(line.contains(&format!(
        " into {}",
        r.s.d.sysroot.join("ostree/repo").display()
    )));
    assert_eq!(r.led(), error_led());
    assert_eq!(deployments(&r.s.d), vec![r.s.commits["1"].clone()]);
    assert!(!r.s.d.state_dir().join("pending").exists());
    let state = r.s.d.state_dir().join("state.json");
    assert!(!state.exists() || crate::common::scene::state(&r.s.d)["pending"].is_null());
    assert!(!has_commit(&r, &r.s.commits["2"]));
    assert!(no_partial_blobs(&r), "partial blobs left in the store");
    drop(stick);

    let good = stick_with(b.path());
    code(&r.handle(&good), 100);
    assert_eq!(deployments(&r.s.d)[0], r.s.commits["2"]);
    assert_eq!(r.actions(), "reboot\n");
}

/// Pulled while held before the first image load of an apps-only update: the load reads
/// the image's blobs from the stick (they go into the store on the way), so it fails: 50,
/// nothing changed (no blob, no partial file, no image; the old apps run) and a good stick
/// installs. Then pulled just before the report is written after a rootfs install
/// (installed: it reboots, only the report is missing).
#[test]
fn stick_pulled_during_the_image_load_is_50_and_just_before_the_report_installs() {
    let mut r = Rig::new();
    let f = r.s.f.name.clone();
    let b =
        r.s.bundle(vec![T::new("2", vec![app(&f, "app-01", "v2")]).on("1")]);
    let before = Snapshot::take(&r.s.d, Some(r.s.image_ids()));
    let running = r.s.running();

    let stick = stick_with(b.path());
    let paused = r.handle_paused(&stick, "load-image");
    pull(&stick);
    let o = paused.go();
    code(&o, 50);
    let line = last_error(&r);
    assert!(line.ends_with("was the stick removed?"), "{line}");
    // The first blob the load reads, the image's config, named with the bundle (whether
    // its lookup or its first read failed).
    let config = r.s.image_id("2", "app-01").replace("sha256:", "");
    assert!(
        line.contains(&config) && line.contains("bundle /"),
        "{line}"
    );
    assert_eq!(r.phase(), "error");
    assert_eq!(r.led(), error_led());
    assert!(r.actions().is_empty(), "{}", r.actions());
    before.assert_same(Some(r.s.image_ids()));
    assert!(no_partial_blobs(&r), "partial blobs left in the store");
    assert_eq!(r.s.running(), running, "the old apps run");
    drop(stick);

    let good = stick_with(b.path());
    code(&r.handle(&good), 0);
    assert_eq!(r.actions(), "docker-restart\n");
    assert_eq!(r.phase(), "success");
    assert_eq!(r.led(), led("timer", "1000", "1000"));
    assert_eq!(
        r.s.running()["app-01"][0].1,
        r.s.image_id("2", "app-01"),
        "app-01 of 2 runs"
    );
    drop(good);

    let b = r.s.bundle(vec![T::new("3", vec![app(&f, "app-01", "v3")])]);
    let stick = stick_with(b.path());
    let paused = r.handle_paused(&stick, "write-report");
    pull(&stick);
    let o = paused.go();
    code(&o, 100);
    assert!(o.stderr.contains("no report on the stick"), "{}", o.stderr);
    assert_eq!(r.actions(), "docker-restart\nreboot\n");
    assert_eq!(r.phase(), "safe_to_remove");
    assert_eq!(r.led().0, "none", "safe to remove: steady");
    assert_eq!(deployments(&r.s.d)[0], r.s.commits["3"]);
    assert!(r.s.d.state_dir().join("pending").exists());
    r.s.reboot_into("3", "boot-1");
    code(&r.agent(&["finalize"]), 0);
    assert_eq!(r.s.running()["app-01"][0].1, r.s.image_id("3", "app-01"));
}

/// The console's last error line.
fn last_error(r: &Rig) -> String {
    let console = r.console();
    let line = console.lines().rev().find(|l| l.contains("error: "));
    line.unwrap_or_default().to_string()
}

fn largest_blob(bundle: &std::path::Path) -> std::path::PathBuf {
    let dir = bundle.join("apps/blobs/sha256");
    std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap()
}

fn has_commit(r: &Rig, commit: &str) -> bool {
    let repo = r.s.d.sysroot.join("ostree/repo");
    std::process::Command::new("ostree")
        .arg(format!("--repo={}", repo.display()))
        .args(["show", commit])
        .output()
        .unwrap()
        .status
        .success()
}

fn no_partial_blobs(r: &Rig) -> bool {
    std::fs::read_dir(r.s.store().join("blobs/sha256")).map_or(true, |d| {
        d.filter_map(Result::ok)
            .all(|e| !e.file_name().to_string_lossy().ends_with(".partial"))
    })
}

/// aktualizr-lite holds the update lock (`[agent] lock_file`) when the stick comes: busy
/// (30, the busy pattern), nothing installed; once it lets go, the same stick installs.
#[test]
fn stick_while_aktualizr_lite_holds_the_lock_is_busy_then_installs() {
    let mut r = Rig::new();
    let f = r.s.f.name.clone();
    let b = r.s.bundle(vec![T::new("2", vec![app(&f, "app-01", "v2")])]);
    let stick = stick_with(b.path());
    let before = Snapshot::take(&r.s.d, Some(r.s.image_ids()));
    // aktualizr-lite's flock, taken here before the agent starts: a flock belongs to the
    // open file, so the agent's own open of the same file conflicts with it.
    let lock = r.s.d.tmp.path().join("run/lock/aklite.lock");
    std::fs::create_dir_all(lock.parent().unwrap()).unwrap();
    let holder = std::fs::File::create(&lock).unwrap();
    holder.lock().unwrap();
    let o = r.handle(&stick);
    drop(holder);
    code(&o, 30);
    assert_eq!(r.phase(), "busy");
    assert_eq!(r.led(), led("timer", "250", "250"));
    let console = r.console();
    assert!(console.contains("another updater holds"), "{console}");
    assert!(console.contains(&lock.display().to_string()), "{console}");
    let report = r.report(&stick).expect("a report");
    assert_eq!(report["exit_code"], 30);
    assert!(report["error"]
        .as_str()
        .unwrap()
        .contains("another updater holds"));
    // The report went onto the stick; the device is as it was.
    before.assert_same(Some(r.s.image_ids()));
    assert!(r.actions().is_empty());

    code(&r.handle(&stick), 100);
    assert_eq!(deployments(&r.s.d)[0], r.s.commits["2"]);
    assert_eq!(r.actions(), "reboot\n");
}
