//! A device with a wrong clock (`USB_UPDATE_NOW`, the simulated clock of the `simulation`
//! build) against real generated bundles: every expiry error names the device time and
//! which of clock and bundle is likely wrong; `check` prints the device time and the
//! image's build date (the booted commit's timestamp); exit codes stay those of expiry.

use std::path::Path;
use std::process::Command;

use crate::common::{succeed, Device, Run, Unchanged, HWID};
use test_kit::gen::{self, write_bundle, write_content, BundleSpec, Factory};

/// The generator's commit time (`gen::ostree::COMMIT_TIME`): the device image's build date.
const BUILT: &str = "2023-11-14T22:13:20Z";

/// A factory whose root v2 (carried by the bundle) expires at `root_expires`.
fn factory(root_expires: &str) -> Factory {
    let mut f = Factory::new().unwrap();
    let mut spec = f.next_root_spec();
    spec.expires = root_expires.into();
    f.push_root(spec).unwrap();
    f
}

/// Every role of the bundle expiring at `expires`.
fn expiring(s: &mut BundleSpec, expires: &str) {
    for e in [
        &mut s.expires.timestamp,
        &mut s.expires.snapshot,
        &mut s.expires.targets,
        &mut s.expires.bundle_targets,
    ] {
        *e = expires.into();
    }
}

/// A bundle of targets 1 and 2 (roots from 2, `edit` applied) for a device that boots
/// target 1, its commit pulled into the device's own repository as the image it shipped
/// with (so the build date is that commit's timestamp).
fn scene(f: &Factory, d: &Device, b: &Path, edit: impl FnOnce(&mut BundleSpec)) {
    let c1 = write_content(b, &f.name, HWID, "1", &[]).unwrap();
    let c2 = write_content(b, &f.name, HWID, "2", &[]).unwrap();
    let mut spec = BundleSpec::new(vec![
        gen::target_for(HWID, "1", &c1),
        gen::target_for(HWID, "2", &c2),
    ]);
    spec.roots_from = 2;
    edit(&mut spec);
    write_bundle(f, &spec, b).unwrap();
    succeed(
        Command::new("ostree")
            .arg(format!(
                "--repo={}",
                d.sysroot.join("ostree/repo").display()
            ))
            .arg("pull-local")
            .arg(b.join("ostree_repo"))
            .arg(&c1.commit),
    );
    d.boot(&c1.commit);
}

/// `check` at `now`; the device and the bundle unchanged.
#[track_caller]
fn check_at(d: &Device, b: &Path, now: &str) -> Run {
    let before = Unchanged::new(d, b);
    let mut all = vec!["--src-dir", b.to_str().unwrap()];
    all.push("--json");
    let json = d.command_env("check", &all, &[("USB_UPDATE_NOW", now)]);
    let v: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(v["device_time"], now, "{}", json.stdout);
    let r = d.command_env(
        "check",
        &["--src-dir", b.to_str().unwrap()],
        &[("USB_UPDATE_NOW", now)],
    );
    before.assert();
    r
}

#[test]
fn a_clock_at_2040_is_blamed_not_the_bundle() {
    let f = factory("2031-01-01T00:00:00Z");
    let d = Device::new(&f);
    let b = tempfile::tempdir().unwrap();
    scene(&f, &d, b.path(), |s| expiring(s, "2030-06-01T00:00:00Z"));
    let r = check_at(&d, b.path(), "2040-05-01T00:00:00Z");
    r.assert(12, "");
    assert_eq!(
        r.error(),
        "root v2: root metadata expired at 2031-01-01T00:00:00Z, device time \
         2040-05-01T00:00:00Z, more than 1 year(s) past the newest expiry in the bundle \
         (2031-01-01T00:00:00Z): the device clock is likely wrong, set it and retry (make a \
         newer bundle only if this one really is that old)"
    );
    assert_eq!(
        r.line("device time: ").unwrap(),
        format!("device time: 2040-05-01T00:00:00Z (image built {BUILT})")
    );
    // The same bundle with the clock right is accepted.
    check_at(&d, b.path(), "2030-01-01T00:00:00Z").assert(100, "");
}

#[test]
fn a_clock_just_past_the_expiry_blames_the_bundle() {
    let f = factory("2031-01-01T00:00:00Z");
    let d = Device::new(&f);
    let b = tempfile::tempdir().unwrap();
    scene(&f, &d, b.path(), |s| expiring(s, "2030-06-01T00:00:00Z"));
    let r = check_at(&d, b.path(), "2030-07-01T00:00:00Z");
    r.assert(12, "");
    assert_eq!(
        r.error(),
        "bundle-targets.json: bundle metadata expired at 2030-06-01T00:00:00Z, device time \
         2030-07-01T00:00:00Z: make a newer bundle"
    );
}

#[test]
fn a_clock_at_2001_is_before_the_image_was_built() {
    let f = Factory::new().unwrap();
    let d = Device::new(&f);
    let b = tempfile::tempdir().unwrap();
    scene(&f, &d, b.path(), |_| {});
    // A valid bundle is still accepted (the code is unchanged), and the clock is named.
    let r = check_at(&d, b.path(), "2001-01-01T00:00:00Z");
    r.assert(100, "");
    assert_eq!(
        r.line("device time: ").unwrap(),
        format!("device time: 2001-01-01T00:00:00Z (image built {BUILT})")
    );
    assert_eq!(
        r.line("note: the device clock").unwrap(),
        format!(
            "note: the device clock (2001-01-01T00:00:00Z) is before this image was built \
             ({BUILT}): it is wrong, and expiry dates are judged against it; set it"
        )
    );
    // With the clock right: no note.
    let r = check_at(&d, b.path(), "2026-01-01T00:00:00Z");
    r.assert(100, "");
    assert_eq!(r.line("note: the device clock"), None);
}

#[test]
fn an_expiry_seen_by_a_clock_at_2001_blames_both() {
    let f = Factory::new().unwrap();
    let d = Device::new(&f);
    let b = tempfile::tempdir().unwrap();
    scene(&f, &d, b.path(), |s| expiring(s, "2000-06-01T00:00:00Z"));
    let r = check_at(&d, b.path(), "2001-01-01T00:00:00Z");
    r.assert(12, "");
    assert_eq!(
        r.error(),
        format!(
            "bundle-targets.json: bundle metadata expired at 2000-06-01T00:00:00Z, device time \
             2001-01-01T00:00:00Z, before this image was built ({BUILT}): the device clock is \
             wrong, set it; the bundle expired before the image was built too: make a newer \
             bundle"
        )
    );
}
