//! Target selection and the device policy, through `usb-update check` on a sandboxed device
//! that runs a known target (simulated boot into its commit).

use std::collections::BTreeMap;
use std::path::Path;

use crate::common::{Device, DeviceSpec, Unchanged, HWID};
use test_kit::gen::{self, write_bundle, write_content, BundleSpec, BundleTargets, Factory};

/// A bundle whose TUF targets are versions `all` (commits in its repo), of which it lists
/// `offered`; the device boots the commit of `running`. Returns the commits by version.
fn scenario(
    f: &Factory,
    d: &Device,
    dir: &Path,
    all: &[&str],
    offered: &[&str],
    running: &str,
    edit: impl FnOnce(&mut BundleSpec),
) -> BTreeMap<String, String> {
    let mut targets = Vec::new();
    let mut commits = BTreeMap::new();
    for v in all {
        let c = write_content(dir, &f.name, HWID, v, &[]).unwrap();
        commits.insert(v.to_string(), c.commit.clone());
        targets.push(gen::target_for(HWID, v, &c));
    }
    let mut spec = BundleSpec::new(targets);
    spec.bundle_targets =
        BundleTargets::Only(offered.iter().map(|v| format!("{HWID}-lmp-{v}")).collect());
    edit(&mut spec);
    write_bundle(f, &spec, dir).unwrap();
    d.boot(&commits[running]);
    commits
}

fn setup() -> (Factory, Device, tempfile::TempDir) {
    let f = Factory::new().unwrap();
    let d = Device::new(&f);
    (f, d, tempfile::tempdir().unwrap())
}

#[track_caller]
fn check(d: &Device, b: &Path, args: &[&str], code: i32, reason: &str) -> crate::common::Run {
    let before = Unchanged::new(d, b);
    let r = d.check(b, args);
    r.assert(code, reason);
    before.assert();
    r
}

#[test]
fn upgrade_from_a_known_running_target() {
    let (f, d, b) = setup();
    scenario(&f, &d, b.path(), &["1", "2"], &["2"], "1", |_| {});
    let r = check(&d, b.path(), &[], 100, "");
    assert_eq!(
        r.line("policy: ").unwrap(),
        "policy: install intel-corei7-64-lmp-2 (2) over intel-corei7-64-lmp-1 (version 1): new rootfs, reboot needed"
    );
    assert!(r
        .line("running: intel-corei7-64-lmp-1 (version 1)")
        .is_some());
    assert!(r
        .line("1 other TUF target(s) are not in this bundle")
        .is_some());
}

#[test]
fn highest_version_wins_and_target_picks_another() {
    let (f, d, b) = setup();
    scenario(&f, &d, b.path(), &["1", "2", "3"], &["2", "3"], "1", |_| {});
    let r = check(&d, b.path(), &[], 100, "");
    assert!(
        r.line("selected: intel-corei7-64-lmp-3 (version 3)")
            .is_some(),
        "{}",
        r.stdout
    );
    let r = check(
        &d,
        b.path(),
        &["--target", "intel-corei7-64-lmp-2"],
        100,
        "",
    );
    assert!(
        r.line("selected: intel-corei7-64-lmp-2 (version 2)")
            .is_some(),
        "{}",
        r.stdout
    );
    check(
        &d,
        b.path(),
        &["--target", "intel-corei7-64-lmp-7"],
        20,
        "target \"intel-corei7-64-lmp-7\" is not in the bundle",
    );
}

#[test]
fn downgrade_refused_then_forced_or_allowed() {
    let (f, d, b) = setup();
    scenario(&f, &d, b.path(), &["2", "3"], &["2"], "3", |_| {});
    check(
        &d,
        b.path(),
        &[],
        102,
        "intel-corei7-64-lmp-2 (version 2) is older than the running version 3: downgrade refused",
    );
    check(&d, b.path(), &["--force"], 100, "");
    d.set_policy("[update]\nallow_downgrade = true\n");
    check(&d, b.path(), &[], 100, "");
}

#[test]
fn reinstall_of_the_running_target() {
    let (f, d, b) = setup();
    scenario(&f, &d, b.path(), &["2"], &["2"], "2", |_| {});
    let r = check(&d, b.path(), &[], 0, "");
    assert_eq!(
        r.line("policy: ").unwrap(),
        "policy: intel-corei7-64-lmp-2 is already installed: nothing to do"
    );
    d.set_policy("[update]\nallow_reinstall = true\n");
    let r = check(&d, b.path(), &[], 0, "");
    assert_eq!(
        r.line("policy: ").unwrap(),
        "policy: intel-corei7-64-lmp-2 runs this commit already: nothing to do"
    );
}

#[test]
fn apps_only_change_on_a_compose_device() {
    let f = Factory::new().unwrap();
    let d = Device::with(
        &f,
        DeviceSpec {
            pacman_type: "ostree+compose_apps",
            ..Default::default()
        },
    );
    let b = tempfile::tempdir().unwrap();
    let apps = [gen::AppSpec::tiny(&f.name, "app-01", "a")];
    let c1 = write_content(b.path(), &f.name, HWID, "1", &[]).unwrap();
    let c2 = write_content(b.path(), &f.name, HWID, "2", &apps).unwrap();
    // Version 2 reuses version 1's rootfs and adds an app.
    let mut t2 = gen::target_for(HWID, "2", &c2);
    t2.commit = c1.commit.clone();
    let spec = BundleSpec::new(vec![gen::target_for(HWID, "1", &c1), t2]);
    write_bundle(&f, &spec, b.path()).unwrap();
    d.boot(&c1.commit);
    let r = check(&d, b.path(), &[], 101, "");
    assert!(
        r.line("policy: ")
            .unwrap()
            .ends_with("same rootfs, apps only"),
        "{}",
        r.stdout
    );
    assert!(
        r.line("selected: ").unwrap().ends_with("apps [app-01]"),
        "{}",
        r.stdout
    );
}

#[test]
fn tag_switch_refused_unless_allowed() {
    let (f, d, b) = setup();
    scenario(&f, &d, b.path(), &["1", "2"], &["2"], "1", |s| {
        s.tag = "main".into();
        for t in &mut s.targets {
            t.tags = vec!["main".into()];
        }
    });
    // Not an allowed tag at all: invalid bundle for this device.
    check(
        &d,
        b.path(),
        &[],
        15,
        "bundle tag \"main\" is not one of the allowed tags [\"devel\"]",
    );
    d.set_policy("[update]\nallowed_tags = [\"devel\", \"main\"]\n");
    check(&d, b.path(), &[], 103, "the bundle is for tag \"main\" but the device follows [\"devel\"]; the policy does not allow a tag switch");
    d.set_policy("[update]\nallowed_tags = [\"devel\", \"main\"]\nallow_tag_switch = true\n");
    check(&d, b.path(), &[], 100, "");
}

#[test]
fn version_window() {
    let (f, d, b) = setup();
    scenario(&f, &d, b.path(), &["1", "2"], &["2"], "1", |_| {});
    d.set_policy("[update]\nmin_version = 3\n");
    check(
        &d,
        b.path(),
        &[],
        103,
        "intel-corei7-64-lmp-2 has version 2, below the policy's minimum 3",
    );
    d.set_policy("[update]\nmax_version = 1\n");
    check(
        &d,
        b.path(),
        &[],
        103,
        "intel-corei7-64-lmp-2 has version 2, above the policy's maximum 1",
    );
    d.set_policy("[update]\nmin_version = 2\nmax_version = 2\n");
    check(&d, b.path(), &[], 100, "");
}

#[test]
fn denylisted_target() {
    let (f, d, b) = setup();
    let commits = scenario(&f, &d, b.path(), &["1", "2"], &["2"], "1", |_| {});
    std::fs::create_dir_all(d.state_dir()).unwrap();
    let state = serde_json::json!({
        "schema": 1,
        "failed": [{"name": "intel-corei7-64-lmp-2", "sha256": commits["2"], "reason": "bootloader rollback"}],
    });
    std::fs::write(d.state_dir().join("state.json"), state.to_string()).unwrap();
    check(&d, b.path(), &[], 103, "intel-corei7-64-lmp-2 failed on this device before (bootloader rollback); the policy does not retry failed targets");
    d.set_policy("[update]\nretry_failed_targets = true\n");
    check(&d, b.path(), &[], 100, "");
}

#[test]
fn unknown_running_commit_is_an_initial_target() {
    let (f, d, b) = setup();
    scenario(&f, &d, b.path(), &["2"], &["2"], "2", |_| {});
    d.boot(&"ab".repeat(32));
    let r = check(&d, b.path(), &[], 100, "");
    assert!(
        r.line("running: Initial Target (version unknown)")
            .is_some(),
        "{}",
        r.stdout
    );
}

#[test]
fn json_report() {
    let (f, d, b) = setup();
    scenario(&f, &d, b.path(), &["1", "2"], &["2"], "1", |_| {});
    let before = Unchanged::new(&d, b.path());
    let r = d.check(b.path(), &["--json"]);
    before.assert();
    assert_eq!(r.code, 100);
    let v: serde_json::Value = serde_json::from_str(r.stdout.trim()).unwrap();
    assert_eq!(v["exit_code"], 100);
    assert_eq!(v["selected"]["name"], "intel-corei7-64-lmp-2");
    assert_eq!(v["running"]["version"], 1);
    assert_eq!(v["bundle"]["tag"], "devel");
    assert_eq!(v["bundle"]["type"], "ci");
    assert_eq!(v["roots"][0]["version"], 1);
    assert_eq!(v["targets"]["version"], 1);
    assert_eq!(v["selection"]["candidates"].as_array().unwrap().len(), 1);
    assert!(v["error"].is_null());
}

#[test]
fn json_report_of_a_refusal() {
    let (f, d, b) = setup();
    scenario(&f, &d, b.path(), &["2", "3"], &["2"], "3", |_| {});
    let r = d.check(b.path(), &["--json"]);
    assert_eq!(r.code, 102);
    let v: serde_json::Value = serde_json::from_str(r.stdout.trim()).unwrap();
    assert_eq!(v["exit_code"], 102);
    assert!(v["error"].as_str().unwrap().contains("downgrade refused"));
}

#[test]
fn a_broken_policy_file_is_an_error_naming_file_and_line() {
    let (f, d, b) = setup();
    scenario(&f, &d, b.path(), &["2"], &["2"], "2", |_| {});
    d.set_policy("[update]\nallow_downgrade = \"yes\"\n");
    let r = check(&d, b.path(), &[], 1, "50-test.toml");
    assert!(r.error().contains("line 2"), "{}", r.error());
    d.set_policy("[update]\nallow_downgrad = true\n");
    let r = check(&d, b.path(), &[], 1, "50-test.toml");
    assert!(r.error().contains("allow_downgrad"), "{}", r.error());
}
