//! `install` and `run` for an OSTree-only device, on a real libostree sysroot in a temp dir,
//! with the reboot and the bootloader simulated through the documented files.

use std::path::Path;

use crate::common::scene::{deployments, scene, state, Scene};
use crate::common::{Unchanged, HWID};
use test_kit::gen::{ostree as gost, TargetSpec};
use test_kit::testsys::TestSysroot;

#[track_caller]
fn code(r: &crate::common::Run, want: i32) {
    assert_eq!(r.code, want, "stdout:\n{}\nstderr:\n{}", r.stdout, r.stderr);
}

#[test]
fn ostree_update_install_reboot_run() {
    let s = scene("1", &["1", "2"], &["2"], None);
    let (v1, v2) = (&s.commits["1"], &s.commits["2"]);
    let r = s.d.run("install", s.b.path(), &[]);
    code(&r, 100);
    assert!(r.stdout.contains("install returned 100"), "{}", r.stdout);
    let policy = r.line("policy: ").unwrap();
    assert!(
        policy.contains(" objects, ") && policy.ends_with("reboot, then run"),
        "{policy}"
    );
    assert_eq!(deployments(&s.d), vec![v2.clone(), v1.clone()]);
    assert_eq!(
        state(&s.d)["pending"]["target"]["name"],
        "intel-corei7-64-lmp-2"
    );
    assert!(s.d.state_dir().join("tuf/targets.json").exists());
    // The boot-time unit's condition: the marker exists exactly while work is pending.
    assert_eq!(
        std::fs::read_to_string(s.d.state_dir().join("pending")).unwrap(),
        "intel-corei7-64-lmp-2"
    );
    let env = std::fs::read_to_string(s.d.sysroot.join(".usb-update-sim/bootenv")).unwrap();
    assert!(env.contains("upgrade_available=1"), "{env}");

    // Before the reboot: 104, nothing changed.
    let before = Unchanged::new(&s.d, s.b.path());
    let r = s.d.command("run", &[]);
    code(&r, 104);
    assert!(r.stdout.contains("has not rebooted yet"), "{}", r.stdout);
    before.assert();

    s.d.reboot_into(v2, "boot-1");
    let r = s.d.command("run", &[]);
    code(&r, 0);
    assert!(
        r.stdout.starts_with("updated to intel-corei7-64-lmp-2"),
        "{}",
        r.stdout
    );
    let st = state(&s.d);
    assert_eq!(st["current"]["name"], "intel-corei7-64-lmp-2");
    assert!(st["pending"].is_null());
    assert!(!s.d.state_dir().join("pending").exists());
    let env = std::fs::read_to_string(s.d.sysroot.join(".usb-update-sim/bootenv")).unwrap();
    assert!(env.contains("upgrade_available=0"), "{env}");
    let r = s.d.command("current", &[]);
    assert!(
        r.stdout.starts_with(&format!(
            "current: intel-corei7-64-lmp-2 (version 2), commit {v2}"
        )),
        "{}",
        r.stdout
    );

    code(&s.d.command("run", &[]), 40);
    let r = s.d.run("install", s.b.path(), &[]);
    code(&r, 0);
    assert!(r.stdout.contains("already installed"), "{}", r.stdout);
}

#[test]
fn kernel_arguments_and_origin_are_carried_over() {
    let s = scene("1", &["1", "2"], &["2"], None);
    code(&s.d.run("install", s.b.path(), &[]), 100);
    let cfg = usb_update::config::Config::load(std::slice::from_ref(&s.d.conf)).unwrap();
    let new = &usb_update::ostree::deployments(&cfg.pacman).unwrap()[0];
    assert!(
        new.kargs.split_whitespace().any(|k| k == "quiet"),
        "{}",
        new.kargs
    );
    assert_eq!(new.origin_refspec.as_deref(), Some(s.commits["2"].as_str()));
}

#[test]
fn install_while_pending_and_lock_held() {
    let s = scene("1", &["1", "2"], &["2"], None);
    code(&s.d.run("install", s.b.path(), &[]), 100);
    let r = s.d.run("install", s.b.path(), &[]);
    code(&r, 30);
    assert!(r.error().contains("is pending"), "{}", r.stdout);

    // Another updater's flock, taken here before `run` starts (a flock belongs to the open
    // file, so the child's own open of the same file conflicts with it).
    let lock = s.d.tmp.path().join("run/lock/aklite.lock");
    let holder = std::fs::File::open(&lock).unwrap();
    holder.lock().unwrap();
    let r = s.d.command("run", &[]);
    drop(holder);
    code(&r, 30);
    assert!(r.stdout.contains("another updater holds"), "{}", r.stdout);
    assert!(
        r.stdout.contains(&lock.display().to_string()),
        "{}",
        r.stdout
    );
}

#[test]
fn downgrade_refused_then_forced() {
    let s = scene("3", &["2", "3"], &["2"], None);
    let before = Unchanged::new(&s.d, s.b.path());
    code(&s.d.run("install", s.b.path(), &[]), 102);
    before.assert();
    code(&s.d.run("install", s.b.path(), &["--force"]), 100);
    assert_eq!(deployments(&s.d)[0], s.commits["2"]);
}

#[test]
fn bootloader_rollback_then_denylist() {
    let s = scene("1", &["1", "2"], &["2"], None);
    code(&s.d.run("install", s.b.path(), &[]), 100);
    // The new rootfs does not come up: the bootloader boots the old one.
    s.d.reboot_into(&s.commits["1"], "boot-1");
    let r = s.d.command("run", &[]);
    code(&r, 99);
    assert!(r.stdout.contains("bootloader rollback"), "{}", r.stdout);
    assert_eq!(deployments(&s.d), vec![s.commits["1"].clone()]);
    assert_eq!(state(&s.d)["failed"][0]["name"], "intel-corei7-64-lmp-2");

    let r = s.d.run("install", s.b.path(), &[]);
    code(&r, 103);
    assert!(
        r.error().contains("failed on this device before"),
        "{}",
        r.stdout
    );
    s.d.set_policy("[update]\nretry_failed_targets = true\n");
    code(&s.d.run("install", s.b.path(), &[]), 100);
}

fn firmware_target(dir: &Path, version: &str, fw: u64) -> TargetSpec {
    let tree = gost::bootable_tree(version, vec![gost::firmware_version_file(fw)]);
    let opts = gost::CommitOptions::new(&format!("{HWID}-lmp-{version}"), Some(version));
    let commit = gost::commit_tree_with(
        &dir.join("ostree_repo"),
        &format!("{HWID}-lmp"),
        &tree,
        &opts,
    )
    .unwrap();
    TargetSpec::new(HWID, version, &commit)
}

/// A scene whose target "2" carries boot firmware version `fw`.
fn firmware_scene(fw: u64) -> (tempfile::TempDir, Scene) {
    let b0 = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(b0.path().join("ostree_repo")).unwrap();
    gost::init_archive_repo(&b0.path().join("ostree_repo")).unwrap();
    let t = firmware_target(b0.path(), "2", fw);
    let s = scene("1", &["1"], &["2"], Some(t));
    // The firmware content lives in b0's repo: copy its objects into the bundle's repo.
    gost::init_archive_repo(&s.b.path().join("ostree_repo")).unwrap();
    let status = std::process::Command::new("ostree")
        .arg(format!(
            "--repo={}",
            s.b.path().join("ostree_repo").display()
        ))
        .args(["pull-local", "--untrusted"])
        .arg(b0.path().join("ostree_repo"))
        .arg(&s.commits["2"])
        .status()
        .unwrap();
    assert!(status.success());
    (b0, s)
}

#[test]
fn boot_firmware_downgrade_refused_with_rollback_protection() {
    let (_b0, s) = firmware_scene(3);
    let env = s.d.sysroot.join(".usb-update-sim/bootenv");
    std::fs::create_dir_all(env.parent().unwrap()).unwrap();
    let before_env = "bootfirmware_version=4\nrollback_protection=1\n";
    std::fs::write(&env, before_env).unwrap();
    let before = deployments(&s.d);
    let r = s.d.run("install", s.b.path(), &[]);
    code(&r, 102);
    assert_eq!(
        r.error(),
        format!("{HWID}-lmp-2: boot firmware rollback from version 4 to 3 refused (rollback_protection=1)")
    );
    // Nothing deployed, nothing armed, nothing pending.
    assert_eq!(deployments(&s.d), before);
    assert_eq!(std::fs::read_to_string(&env).unwrap(), before_env);
    code(&s.d.command("run", &[]), 40);

    // Without the protection the same target installs (and flags the firmware update).
    std::fs::write(&env, "bootfirmware_version=4\n").unwrap();
    code(&s.d.run("install", s.b.path(), &[]), 100);
}

#[test]
fn boot_firmware_pending_then_new_firmware() {
    let (_b0, s) = firmware_scene(5);
    let env = s.d.sysroot.join(".usb-update-sim/bootenv");
    std::fs::create_dir_all(env.parent().unwrap()).unwrap();
    std::fs::write(&env, "bootupgrade_available=1\nbootfirmware_version=4\n").unwrap();
    let before = Unchanged::new(&s.d, s.b.path());
    let r = s.d.run("install", s.b.path(), &[]);
    code(&r, 90);
    before.assert();

    // The reboot applied the old firmware update: install goes through, and the new
    // deployment's version.txt (5) differs from the running firmware (4).
    std::fs::write(&env, "bootupgrade_available=0\nbootfirmware_version=4\n").unwrap();
    code(&s.d.run("install", s.b.path(), &[]), 100);
    assert!(std::fs::read_to_string(&env)
        .unwrap()
        .contains("bootupgrade_available=1"));
    s.d.reboot_into(&s.commits["2"], "boot-1");
    let r = s.d.command("run", &[]);
    code(&r, 90);
    assert!(r.stdout.contains("boot firmware"), "{}", r.stdout);
}

#[test]
fn corrupted_object_in_the_bundle() {
    let s = scene("1", &["1", "2"], &["2"], None);
    let objects = s.b.path().join("ostree_repo/objects");
    let mut corrupted = Vec::new();
    for dir in std::fs::read_dir(&objects).unwrap() {
        for f in std::fs::read_dir(dir.unwrap().path()).unwrap() {
            let p = f.unwrap().path();
            if p.extension().is_some_and(|e| e == "filez") {
                let dir = p.parent().unwrap().file_name().unwrap().to_string_lossy();
                let stem = p.file_stem().unwrap().to_string_lossy();
                corrupted.push(format!("{dir}/{stem}"));
                let mut bytes = std::fs::read(&p).unwrap();
                let last = bytes.len() - 1;
                bytes[last] ^= 0xff;
                std::fs::write(&p, bytes).unwrap();
            }
        }
    }
    let r = s.d.run("install", s.b.path(), &[]);
    code(&r, 50);
    // The first of the damaged objects that the device lacks is named.
    let expected = |object: &String| {
        format!(
            "pulling commit {} from {} into {}: bundle {}: ostree_repo/objects/{object}.filez \
             holds no valid compressed content",
            s.commits["2"],
            s.b.path().join("ostree_repo").display(),
            s.d.sysroot.join("ostree/repo").display(),
            s.b.path().display(),
        )
    };
    assert!(
        corrupted.iter().any(|o| r.error() == expected(o)),
        "{}",
        r.error()
    );
    assert_eq!(deployments(&s.d), vec![s.commits["1"].clone()]);
    let sys = TestSysroot::init_existing(&s.d.sysroot, "lmp");
    assert!(sys.remotes().unwrap().is_empty());
    let st: serde_json::Value = std::fs::read(s.d.state_dir().join("state.json"))
        .map(|b| serde_json::from_slice(&b).unwrap())
        .unwrap_or(serde_json::json!({}));
    assert!(st["pending"].is_null());
}

#[test]
fn aklite_offline_personality_gives_the_same_codes() {
    let s = scene("1", &["1", "2"], &["2"], None);
    let bin = s.d.tmp.path().join("aklite-offline");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_usb-update"), &bin).unwrap();
    let run = |args: &[&str]| {
        std::process::Command::new(&bin)
            .args(args)
            .arg("--config")
            .arg(&s.d.conf)
            .arg("-p")
            .arg(&s.d.policy)
            .args(["--log-level", "2"])
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap()
            .code()
    };
    let src = s.b.path().to_str().unwrap();
    assert_eq!(run(&["install", "--src-dir", src]), Some(100));
    assert_eq!(run(&["run"]), Some(104));
    s.d.reboot_into(&s.commits["2"], "boot-1");
    assert_eq!(run(&["run"]), Some(0));
    assert_eq!(run(&["run"]), Some(40));
}
