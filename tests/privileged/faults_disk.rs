//! A full disk at the points where `install` writes: the sysroot repo (pull), the
//! deployment (checkout), the state and trusted metadata, the app store (blob copy) and the
//! engine's data root (image load). Each device lives on a small ext4 filesystem of its
//! own, filled to the last block while `install` is held at the point; the expected result
//! is 60 with a message naming the path, nothing lost or half done, and once the space is
//! back the same stick installs.

use crate::common::apps::{app, AppScene, T};
use crate::common::faults::{self, code, usb_update, Out, SmallDisk, Snapshot};
use crate::common::scene::{deployments, scene, scene_in};
use crate::common::Device;

/// `install` held at `point`, the disk filled there, then let go.
fn install_on_full(d: &Device, bundle: &std::path::Path, point: &str, full: &SmallDisk) -> Out {
    let cmd = usb_update(d, &["install"], &["--src-dir", bundle.to_str().unwrap()]);
    let paused = faults::spawn_paused(cmd, point, &d.tmp.path().join("paused"));
    full.fill();
    let o = paused.go();
    full.free();
    o
}

#[track_caller]
fn no_space(o: &Out, path: &std::path::Path) {
    code(o, 60);
    let path = path.display().to_string();
    assert!(o.error().contains(&path), "{path} not in {:?}", o.error());
    assert_eq!(o.error().lines().count(), 1);
}

/// The simulated bootloader counts boots towards a rollback.
fn armed(d: &Device) -> bool {
    std::fs::read_to_string(d.sysroot.join(".usb-update-sim/bootenv"))
        .unwrap_or_default()
        .lines()
        .any(|l| l == "upgrade_available=1")
}

fn pending(d: &Device) -> bool {
    d.state_dir().join("pending").exists()
}

/// The sysroot's disk full during the pull, the deploy and the final records.
#[test]
fn full_sysroot_is_60_at_pull_deploy_and_record_and_the_retry_installs() {
    let disk = SmallDisk::new(64);
    let s = scene_in(Some(&disk.dir), "1", &["1", "2"], &["2"], None);
    let d = &s.d;
    let repo = d.sysroot.join("ostree/repo");
    let before = Snapshot::take(d, None);

    let o = install_on_full(d, s.b.path(), "pull-rootfs", &disk);
    no_space(&o, &repo);
    before.assert_same(None);

    // The pulled objects stay (the retry skips them); nothing is deployed or recorded.
    // Boot counting was armed before the deploy, and the simulated bootloader keeps its
    // environment on this same full disk, so disarming fails too (logged); a real one
    // (fw_setenv, fiovb) writes no filesystem.
    let o = install_on_full(d, s.b.path(), "deploy", &disk);
    no_space(&o, &d.sysroot);
    assert_eq!(deployments(d), vec![s.commits["1"].clone()]);
    assert!(!pending(d));
    assert!(
        o.stderr.contains("boot counting stays armed"),
        "{}",
        o.stderr
    );

    // Deployed, then no room for the trusted metadata and the pending record, and none to
    // take the deployment back (libostree writes new boot entries for that): it stays, as
    // after a power cut there, and the retry reuses it.
    let o = install_on_full(d, s.b.path(), "record", &disk);
    no_space(&o, &d.state_dir());
    assert!(o.stderr.contains("its deployment stays"), "{}", o.stderr);
    assert!(!pending(d));
    assert!(no_tmp_files(d));

    code(&out(d.run("install", s.b.path(), &[])), 100);
    assert!(armed(d));
    assert_eq!(
        deployments(d),
        vec![s.commits["2"].clone(), s.commits["1"].clone()]
    );
    drop(s);
}

/// The state directory on a filesystem of its own (a separate /var), full at the records:
/// the sysroot has room, so the deployment is taken back and boot counting disarmed.
#[test]
fn full_state_disk_at_the_records_takes_the_deployment_back() {
    let s = scene("1", &["1", "2"], &["2"], None);
    let d = &s.d;
    assert!(std::fs::read_dir(d.state_dir()).map_or(true, |mut e| e.next().is_none()));
    let disk = SmallDisk::at(&d.state_dir(), 8);
    let o = install_on_full(d, s.b.path(), "record", &disk);
    no_space(&o, &d.state_dir());
    assert!(o.stderr.contains("is taken back"), "{}", o.stderr);
    assert!(!armed(d), "boot counting left armed");
    assert_eq!(deployments(d), vec![s.commits["1"].clone()]);
    assert!(!pending(d));
    assert!(no_tmp_files(d));

    code(&out(d.run("install", s.b.path(), &[])), 100);
    assert!(armed(d));
    assert_eq!(deployments(d)[0], s.commits["2"]);
    drop(disk);
    drop(s);
}

fn no_tmp_files(d: &Device) -> bool {
    let left: Vec<_> = crate::common::fingerprint(&d.storage)
        .into_keys()
        .filter(|p| p.to_string_lossy().ends_with(".tmp"))
        .collect();
    left.is_empty()
}

/// The store's disk full during the blob copy, then the engine's data root full during
/// the image load.
#[test]
fn full_app_store_and_engine_root_are_60_and_the_retry_installs() {
    let disk = SmallDisk::new(64);
    let mut s = AppScene::in_dir(None, Some(&disk.dir));
    s.docker.stop();
    let engine_disk = SmallDisk::at(&s.docker.root().join("data"), 160);
    s.docker.restart();
    let f = s.f.name.clone();
    let b = s.bundle(vec![T::new("2", vec![app(&f, "app-01", "v2")])]);
    // One copy at a time: the one held is the first, none finished before the disk filled.
    s.d.set_policy("[apps]\nparallel_copies = 1\n");
    let images = s.image_ids();
    let before = Snapshot::take(&s.d, Some(images.clone()));

    let o = install_on_full(&s.d, b.path(), "copy-blob", &disk);
    no_space(&o, &s.store().join("blobs/sha256"));
    assert!(o.error().contains(".partial"), "{}", o.error());
    before.assert_same(Some(s.image_ids()));

    // The blobs are in the store now (complete and verified); the engine has no new image.
    let o = install_on_full(&s.d, b.path(), "load-image", &engine_disk);
    code(&o, 60);
    assert!(
        o.error().starts_with("the Docker engine refused image ")
            && o.error().contains("no space left on device"),
        "{}",
        o.error()
    );
    assert_eq!(deployments(&s.d), vec![s.commits["1"].clone()]);
    assert!(!pending(&s.d));
    assert_eq!(s.image_ids(), images);

    code(&out(s.install(b.path())), 100);
    assert!(pending(&s.d));
    drop(s);
    drop(engine_disk);
}

fn out(r: crate::common::Run) -> Out {
    Out {
        code: r.code,
        stdout: r.stdout,
        stderr: r.stderr,
    }
}
