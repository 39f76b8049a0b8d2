//! Crash safety: `install` and `run` aborted (as by a power cut or kill -9) at each named
//! point, then run again: they converge, the state is consistent, and the sysroot holds
//! exactly the deployments it should.

use crate::common::scene::{deployments, scene, state};

const CRASH: &str = "USB_UPDATE_CRASH_AT";

#[track_caller]
fn crashed(r: &crate::common::Run) {
    assert_eq!(
        r.code, -1,
        "expected a SIGKILL\nstdout:\n{}\nstderr:\n{}",
        r.stdout, r.stderr
    );
    assert!(r.stderr.contains(": SIGKILL"), "{}", r.stderr);
}

#[test]
fn install_interrupted_at_each_point_converges() {
    for (point, rerun_code) in [
        ("install-pulled", 100),
        ("install-deployed", 100),
        ("install-tuf-stored", 100),
        // Everything was done: the pending record is there.
        ("install-recorded", 30),
    ] {
        let s = scene("1", &["1", "2"], &["2"], None);
        let src = s.b.path().to_str().unwrap();
        crashed(&s.d.command_env("install", &["--src-dir", src], &[(CRASH, point)]));
        let r = s.d.command("install", &["--src-dir", src]);
        assert_eq!(r.code, rerun_code, "{point}: {}", r.stdout);
        assert_eq!(
            deployments(&s.d),
            vec![s.commits["2"].clone(), s.commits["1"].clone()],
            "{point}"
        );
        assert_eq!(
            state(&s.d)["pending"]["target"]["name"],
            "intel-corei7-64-lmp-2",
            "{point}"
        );
        s.d.reboot_into(&s.commits["2"], "boot-1");
        let r = s.d.command("run", &[]);
        assert_eq!(r.code, 0, "{point}: {}", r.stdout);
        assert_eq!(
            state(&s.d)["current"]["name"],
            "intel-corei7-64-lmp-2",
            "{point}"
        );
    }
}

#[test]
fn run_interrupted_after_recording_success() {
    let s = scene("1", &["1", "2"], &["2"], None);
    let src = s.b.path().to_str().unwrap();
    assert_eq!(s.d.command("install", &["--src-dir", src]).code, 100);
    s.d.reboot_into(&s.commits["2"], "boot-1");
    crashed(&s.d.command_env("run", &[], &[(CRASH, "run-recorded")]));
    let st = state(&s.d);
    assert_eq!(st["current"]["name"], "intel-corei7-64-lmp-2");
    assert!(st["pending"].is_null());
    assert_eq!(s.d.command("run", &[]).code, 40);
    assert_eq!(deployments(&s.d)[0], s.commits["2"]);
}

#[test]
fn run_interrupted_after_recording_a_rollback() {
    let s = scene("1", &["1", "2"], &["2"], None);
    let src = s.b.path().to_str().unwrap();
    assert_eq!(s.d.command("install", &["--src-dir", src]).code, 100);
    s.d.reboot_into(&s.commits["1"], "boot-1");
    crashed(&s.d.command_env("run", &[], &[(CRASH, "run-rollback-recorded")]));
    // The failed deployment is still the default: the next run removes it.
    assert_eq!(deployments(&s.d)[0], s.commits["2"]);
    assert_eq!(s.d.command("run", &[]).code, 40);
    assert_eq!(deployments(&s.d), vec![s.commits["1"].clone()]);
    assert_eq!(state(&s.d)["failed"][0]["name"], "intel-corei7-64-lmp-2");
}
