//! The systemd units pass `systemd-analyze verify` (with ExecStart pointing at the binary
//! under test, since /usr/bin/usb-update is not installed here, and the man pages their
//! `Documentation=` names generated as the package does, on a MANPATH of their own; its
//! `file://` targets are what the package installs: tests/unprivileged/packaging.rs) and
//! keep the properties the
//! field taught others: no BindsTo= the device, a start timeout long enough for a big
//! install, and a boot-time unit that starts only when work is pending.

use std::path::{Path, PathBuf};
use std::process::Command;

fn unit(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("systemd")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The package's man pages (generated from the CLI, as scripts/package does) under
/// `<dir>/man1/`, for `man` through MANPATH.
fn man_path(dir: &Path) -> PathBuf {
    let man1 = dir.join("man").join("man1");
    std::fs::create_dir_all(&man1).unwrap();
    for (name, text) in xtask::man_pages().unwrap() {
        std::fs::write(man1.join(format!("{name}.1")), text).unwrap();
    }
    dir.join("man")
}

/// Copies of the units, ExecStart pointing at the built binary; instance `sda1` of the template.
fn verify(files: &[(&str, String)]) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let manpath = man_path(dir.path());
    let mut paths: Vec<PathBuf> = Vec::new();
    for (name, text) in files {
        let text = text.replace("/usr/bin/usb-update", env!("CARGO_BIN_EXE_usb-update"));
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        paths.push(p);
    }
    let out = Command::new("systemd-analyze")
        .env("MANPATH", manpath)
        .arg("verify")
        .args(&paths)
        .output()
        .expect("systemd-analyze (package systemd)");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn units_pass_systemd_analyze_verify() {
    let (code, out) = verify(&[
        ("usb-update@sda1.service", unit("usb-update@.service")),
        (
            "usb-update-finalize.service",
            unit("usb-update-finalize.service"),
        ),
    ]);
    assert_eq!((code, out.trim()), (0, ""), "{out}");
}

/// systemd orders the boot: with aktualizr-lite's unit present, our finalize job runs
/// before its start (`systemd-analyze verify` loads both and checks the ordering graph).
#[test]
fn finalize_is_ordered_before_aktualizr_lite() {
    let aklite = "[Unit]\nDescription=aktualizr-lite (stand-in)\n\n[Service]\n\
                  ExecStart=/bin/true\n\n[Install]\nWantedBy=multi-user.target\n";
    let (code, out) = verify(&[
        (
            "usb-update-finalize.service",
            unit("usb-update-finalize.service"),
        ),
        ("aktualizr-lite.service", aklite.to_string()),
    ]);
    assert_eq!((code, out.trim()), (0, ""), "{out}");
    // The same pair with the order reversed as well is a cycle systemd reports.
    let cyclic = format!("{aklite}\n[Unit]\nBefore=usb-update-finalize.service\n");
    let dir = tempfile::tempdir().unwrap();
    let fin = dir.path().join("usb-update-finalize.service");
    let text = unit("usb-update-finalize.service")
        .replace("/usr/bin/usb-update", env!("CARGO_BIN_EXE_usb-update"));
    std::fs::write(&fin, text).unwrap();
    std::fs::write(dir.path().join("aktualizr-lite.service"), cyclic).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&fin)
        .arg(dir.path().join("aktualizr-lite.service"))
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("cycle"), "{text}");
}

#[test]
fn verify_catches_a_broken_unit() {
    // The check above can fail: a misspelt key and a missing binary are reported.
    let bad = unit("usb-update-finalize.service").replace("TimeoutStartSec", "TimeoutStrtSec");
    let (_, out) = verify(&[("bad.service", bad)]);
    assert!(out.contains("Unknown key 'TimeoutStrtSec'"), "{out}");
    let missing = unit("usb-update-finalize.service")
        .replace("/usr/bin/usb-update", "/nonexistent/usb-update");
    let (code, out) = verify(&[("missing.service", missing)]);
    assert_ne!(code, 0, "{out}");
    // A man page the package does not install is reported.
    let undocumented = unit("usb-update-finalize.service")
        .replace("man:usb-update(1)", "man:usb-update-nonexistent(1)");
    let (code, out) = verify(&[("undocumented.service", undocumented)]);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("usb-update-nonexistent(1)"), "{out}");
}

#[test]
fn stick_unit_is_not_bound_to_the_device_and_waits_long_enough() {
    let u = unit("usb-update@.service");
    assert!(!u.lines().any(|l| l.starts_with("BindsTo=")), "{u}");
    assert!(
        u.contains("ExecStart=/usr/bin/usb-update agent handle /dev/%I"),
        "{u}"
    );
    let timeout = u
        .lines()
        .find_map(|l| l.strip_prefix("TimeoutStartSec="))
        .expect("TimeoutStartSec");
    let secs = humantime::parse_duration(timeout).unwrap().as_secs();
    assert!(secs >= 3600, "{timeout}");
}

#[test]
fn finalize_unit_runs_only_when_work_is_pending() {
    let u = unit("usb-update-finalize.service");
    assert!(
        u.contains("ConditionPathExists=/var/sota/usb-update/pending"),
        "{u}"
    );
    assert!(u.contains("After=local-fs.target docker.service"), "{u}");
    // aktualizr-lite would finalize our pending installation itself if it started first.
    assert!(
        u.lines().any(|l| l == "Before=aktualizr-lite.service"),
        "{u}"
    );
    // The marker the condition names is the one the state keeps in step with `pending`.
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(
        usb_update::state::State::pending_marker(dir.path()),
        dir.path().join("pending")
    );
}

/// The `KEY=` value of the unit's `[Service]` line, if any.
fn value<'a>(unit: &'a str, key: &str) -> Option<&'a str> {
    unit.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
}

#[test]
fn agent_units_hold_the_console_and_log_their_steps_to_the_journal() {
    for name in ["usb-update@.service", "usb-update-finalize.service"] {
        let u = unit(name);
        // A unit with console output is what makes systemd hold back its status display
        // (the redraws that erase the line below) while the agent runs; the system test
        // checks the effect on a booted device's console.
        assert_eq!(
            value(&u, "StandardOutput"),
            Some("journal+console"),
            "{name}"
        );
        // The log is for the journal, not the operator's console.
        assert_eq!(value(&u, "StandardError"), Some("journal"), "{name}");
        let filter = value(&u, "Environment")
            .and_then(|e| e.strip_prefix("USB_UPDATE_LOG="))
            .unwrap_or_else(|| panic!("{name}: no USB_UPDATE_LOG"));
        // The filter the unit sets lets a step through, without colour codes (stderr is
        // the journal's pipe there, as here).
        let dir = tempfile::tempdir().unwrap();
        let (conf, policy) = (dir.path().join("sota.toml"), dir.path().join("policy.toml"));
        std::fs::write(
            &conf,
            format!(
                "[storage]\npath = \"{}\"\n",
                dir.path().join("sota").display()
            ),
        )
        .unwrap();
        std::fs::write(
            &policy,
            format!(
                "[agent]\naklite_unit = \"\"\nrun_dir = \"{}\"\n\n[feedback]\nconsoles = []\n",
                dir.path().join("run").display()
            ),
        )
        .unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_usb-update"))
            .env("USB_UPDATE_LOG", filter)
            .args(["agent", "finalize", "-c"])
            .arg(&conf)
            .arg("-p")
            .arg(&policy)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{name}: {stderr}");
        assert!(stderr.contains("nothing pending"), "{name}: {stderr}");
        assert!(!stderr.contains('\u{1b}'), "{name}: {stderr:?}");
        assert!(out.stdout.is_empty(), "{name}: stdout goes to the console");
    }
}
