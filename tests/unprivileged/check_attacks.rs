//! The attack suite: each case builds a bundle with one thing wrong, runs `usb-update check`
//! as an operator would, and asserts the exit code, the one-line reason, and that neither
//! the device nor the bundle changed.

use std::path::Path;

use crate::common::attack::{bundle, refused, setup};
use crate::common::{Device, DeviceSpec, Unchanged, HWID};
use serde_json::{json, Value};
use test_kit::gen::{
    self, sign, to_bytes, write_bundle, write_content, BundleSpec, BundleTargets, Factory, Role,
    RoleKeys, TargetSpec,
};

const PAST: &str = "2001-01-01T00:00:00Z";

#[test]
fn valid_bundle_passes() {
    let (f, d, b) = setup();
    bundle(&f, b.path(), |_| {});
    let before = Unchanged::new(&d, b.path());
    let r = d.check(b.path(), &[]);
    r.assert(100, "");
    assert!(
        r.line("selected: intel-corei7-64-lmp-2 (version 2)")
            .is_some(),
        "{}",
        r.stdout
    );
    before.assert();
}

#[test]
fn bad_signature() {
    let (f, d, b) = setup();
    let bb = bundle(&f, b.path(), |_| {});
    // Change the signed content, keep the old signature, re-chain honestly.
    let mut t = bb.read("targets.json").unwrap();
    t["signed"]["expires"] = json!("2098-01-01T00:00:00Z");
    bb.write("targets.json", &t).unwrap();
    bb.rechain(&f).unwrap();
    refused(
        &d,
        b.path(),
        11,
        "targets.json: 0 valid signature(s) by targets keys of root v1, 1 required",
    );
}

#[test]
fn unknown_key() {
    let (f, d, b) = setup();
    let bb = bundle(&f, b.path(), |_| {});
    let stranger = gen::ed25519_key("stranger");
    bb.edit_signed("targets.json", &[&stranger], |_| {})
        .unwrap();
    bb.rechain(&f).unwrap();
    refused(&d, b.path(), 11, "targets.json: 0 valid signature(s)");
}

#[test]
fn signed_with_another_roles_key() {
    let (f, d, b) = setup();
    let bb = bundle(&f, b.path(), |_| {});
    bb.edit_signed("targets.json", &f.signers(Role::Snapshot), |_| {})
        .unwrap();
    bb.rechain(&f).unwrap();
    refused(
        &d,
        b.path(),
        11,
        "targets.json: 0 valid signature(s) by targets keys",
    );
}

/// A factory whose root v2 asks for two targets signatures.
fn threshold_two() -> Factory {
    let mut f = Factory::new().unwrap();
    let mut spec = f.next_root_spec();
    let (k1, k2) = (f.fresh_key(), f.fresh_key());
    spec.targets = RoleKeys {
        keys: vec![k1, k2],
        threshold: 2,
    };
    f.push_root(spec).unwrap();
    f
}

/// `file` of a threshold-two bundle with its first signature listed twice.
fn signature_twice(file: &str) -> (Factory, Device, tempfile::TempDir, gen::Bundle) {
    let f = threshold_two();
    let d = Device::new(&f);
    let b = tempfile::tempdir().unwrap();
    let bb = bundle(&f, b.path(), |_| {});
    let mut t = bb.read(file).unwrap();
    let first = t["signatures"][0].clone();
    t["signatures"] = json!([first.clone(), first]);
    bb.write(file, &t).unwrap();
    (f, d, b, bb)
}

#[test]
fn threshold_unmet() {
    let f = threshold_two();
    let d = Device::new(&f);
    let b = tempfile::tempdir().unwrap();
    let bb = bundle(&f, b.path(), |_| {});
    let one = f.signers(Role::Targets)[0];
    bb.edit_signed("targets.json", &[one], |_| {}).unwrap();
    bb.rechain(&f).unwrap();
    refused(
        &d,
        b.path(),
        11,
        "targets.json: 1 valid signature(s) by targets keys of root v2, 2 required",
    );
}

#[test]
fn same_signature_listed_twice() {
    let (f, d, b, bb) = signature_twice("targets.json");
    bb.rechain(&f).unwrap();
    refused(
        &d,
        b.path(),
        11,
        "targets.json: 1 valid signature(s) by targets keys of root v2, 2 required",
    );
}

#[test]
fn bundle_targets_same_signature_twice() {
    let (_f, d, b, _bb) = signature_twice("bundle-targets.json");
    refused(
        &d,
        b.path(),
        15,
        "bundle-targets.json: 1 distinct valid signature(s) by targets keys of root v2, 2 required",
    );
}

#[test]
fn wrong_type() {
    let (f, d, b) = setup();
    let bb = bundle(&f, b.path(), |_| {});
    bb.edit_signed("timestamp.json", &f.signers(Role::Timestamp), |s| {
        s["_type"] = json!("Snapshot");
    })
    .unwrap();
    refused(
        &d,
        b.path(),
        11,
        "timestamp.json: signed as \"Snapshot\", not as \"Timestamp\"",
    );
}

#[test]
fn unsupported_signature_method() {
    let (f, d, b) = setup();
    let bb = bundle(&f, b.path(), |_| {});
    let mut t = bb.read("snapshot.json").unwrap();
    t["signatures"][0]["method"] = json!("rsassa-pkcs1v15");
    bb.write("snapshot.json", &t).unwrap();
    // Re-pin the edited snapshot so that only the method is wrong.
    let mut ts = bb.read("timestamp.json").unwrap();
    let sn = to_bytes(&bb.read("snapshot.json").unwrap()).unwrap();
    ts["signed"]["meta"]["snapshot.json"] = gen::tuf::meta_entry(&sn, 1);
    bb.write(
        "timestamp.json",
        &sign(ts["signed"].clone(), &f.signers(Role::Timestamp)).unwrap(),
    )
    .unwrap();
    refused(
        &d,
        b.path(),
        11,
        "snapshot.json: signature method \"rsassa-pkcs1v15\" is not accepted",
    );
}

#[test]
fn rotation_not_signed_by_the_old_root() {
    let mut f = Factory::new().unwrap();
    let d = Device::new(&f);
    let spec = f.next_root_spec();
    let env = sign(gen::tuf::root_signed(&spec), &spec.root.signers()).unwrap();
    f.push_root_signed(spec, env);
    let b = tempfile::tempdir().unwrap();
    bundle(&f, b.path(), |_| {});
    refused(
        &d,
        b.path(),
        11,
        "2.root.json: 0 valid signature(s) by root keys of root v1, 1 required",
    );
}

#[test]
fn rotation_not_signed_by_the_new_root() {
    let mut f = Factory::new().unwrap();
    let d = Device::new(&f);
    let spec = f.next_root_spec();
    let env = sign(gen::tuf::root_signed(&spec), &f.signers(Role::Root)).unwrap();
    f.push_root_signed(spec, env);
    let b = tempfile::tempdir().unwrap();
    bundle(&f, b.path(), |_| {});
    refused(
        &d,
        b.path(),
        11,
        "2.root.json: 0 valid signature(s) by root keys of root v2, 1 required",
    );
}

#[test]
fn rotation_that_skips_a_version() {
    let mut f = Factory::new().unwrap();
    let d = Device::new(&f);
    f.rotate_root().unwrap();
    f.rotate_root().unwrap();
    let b = tempfile::tempdir().unwrap();
    bundle(&f, b.path(), |s| s.roots_from = 3);
    refused(
        &d,
        b.path(),
        11,
        "tuf/3.root.json: the bundle's root chain has a gap after root v1",
    );
}

#[test]
fn rotation_claiming_the_wrong_version() {
    let mut f = Factory::new().unwrap();
    let d = Device::new(&f);
    let mut spec = f.next_root_spec();
    spec.version = 3;
    f.push_root(spec).unwrap();
    let b = tempfile::tempdir().unwrap();
    let bb = bundle(&f, b.path(), |s| s.roots_from = 3);
    std::fs::rename(bb.tuf_file("3.root.json"), bb.tuf_file("2.root.json")).unwrap();
    refused(
        &d,
        b.path(),
        11,
        "2.root.json: root version 3 does not follow trusted root v1",
    );
}

#[test]
fn root_expired() {
    let mut f = Factory::new().unwrap();
    let d = Device::new(&f);
    let mut spec = f.next_root_spec();
    spec.expires = PAST.into();
    f.push_root(spec).unwrap();
    let b = tempfile::tempdir().unwrap();
    bundle(&f, b.path(), |_| {});
    refused(
        &d,
        b.path(),
        12,
        "root v2: root metadata expired at 2001-01-01T00:00:00Z",
    );
}

#[test]
fn timestamp_expired() {
    let (f, d, b) = setup();
    bundle(&f, b.path(), |s| s.expires.timestamp = PAST.into());
    refused(
        &d,
        b.path(),
        12,
        "timestamp.json: timestamp metadata expired at 2001-01-01T00:00:00Z, device time ",
    );
    // The clock is right and the bundle's newest expiry (2099) ahead: the bundle is old.
    let r = d.check(b.path(), &[]);
    assert!(
        r.error().ends_with("Z: make a newer bundle"),
        "{}",
        r.error()
    );
}

#[test]
fn snapshot_expired() {
    let (f, d, b) = setup();
    bundle(&f, b.path(), |s| s.expires.snapshot = PAST.into());
    refused(&d, b.path(), 12, "snapshot.json: snapshot metadata expired");
}

#[test]
fn targets_expired() {
    let (f, d, b) = setup();
    bundle(&f, b.path(), |s| s.expires.targets = PAST.into());
    refused(&d, b.path(), 12, "targets.json: targets metadata expired");
}

#[test]
fn bundle_targets_expired() {
    let (f, d, b) = setup();
    bundle(&f, b.path(), |s| s.expires.bundle_targets = PAST.into());
    refused(
        &d,
        b.path(),
        12,
        "bundle-targets.json: bundle metadata expired",
    );
}

/// Store role files of version 5 on the device, as an earlier update would have.
fn device_stored_v5(f: &Factory, d: &Device, role: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let bb = bundle(f, tmp.path(), |s| match role {
        "timestamp.json" => s.versions.timestamp = 5,
        "snapshot.json" => s.versions.snapshot = 5,
        _ => s.versions.targets = 5,
    });
    let dir = d.state_dir().join("tuf");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(bb.tuf_file(role), dir.join(role)).unwrap();
}

#[test]
fn timestamp_older_than_the_devices() {
    let (f, d, b) = setup();
    device_stored_v5(&f, &d, "timestamp.json");
    bundle(&f, b.path(), |_| {});
    refused(&d, b.path(), 11, "timestamp.json: version 1 is older than the device's version 5: the bundle's TUF metadata is outdated, make a newer bundle");
}

#[test]
fn snapshot_older_than_the_devices() {
    let (f, d, b) = setup();
    device_stored_v5(&f, &d, "snapshot.json");
    bundle(&f, b.path(), |_| {});
    refused(
        &d,
        b.path(),
        11,
        "snapshot.json: version 1 is older than the device's version 5",
    );
}

#[test]
fn targets_older_than_the_devices() {
    let (f, d, b) = setup();
    device_stored_v5(&f, &d, "targets.json");
    bundle(&f, b.path(), |_| {});
    refused(
        &d,
        b.path(),
        11,
        "targets.json: version 1 is older than the device's version 5",
    );
}

#[test]
fn root_older_than_the_devices() {
    let mut f = Factory::new().unwrap();
    f.rotate_root().unwrap();
    f.rotate_root().unwrap();
    let d = Device::with(
        &f,
        DeviceSpec {
            roots: 3,
            ..Default::default()
        },
    );
    let b = tempfile::tempdir().unwrap();
    bundle(&f, b.path(), |s| {
        s.roots_from = 2;
        s.roots_to = Some(2);
    });
    refused(
        &d,
        b.path(),
        11,
        "tuf/2.root.json: the bundle's newest root is older than the device's root v3",
    );
}

#[test]
fn snapshot_hash_mismatch() {
    let (f, d, b) = setup();
    let bb = bundle(&f, b.path(), |_| {});
    // targets.json validly re-signed, but the snapshot still pins the old file.
    bb.edit_signed("targets.json", &f.signers(Role::Targets), |s| {
        s["expires"] = json!("2098-01-01T00:00:00Z");
    })
    .unwrap();
    refused(
        &d,
        b.path(),
        11,
        "targets.json: hash does not match the one in snapshot.json",
    );
}

#[test]
fn version_link_mismatch() {
    let (f, d, b) = setup();
    let bb = bundle(&f, b.path(), |_| {});
    bb.edit_signed("snapshot.json", &f.signers(Role::Snapshot), |s| {
        s["meta"]["targets.json"]["version"] = json!(7);
    })
    .unwrap();
    let sn = to_bytes(&bb.read("snapshot.json").unwrap()).unwrap();
    bb.edit_signed("timestamp.json", &f.signers(Role::Timestamp), |s| {
        s["meta"]["snapshot.json"] = gen::tuf::meta_entry(&sn, 1);
    })
    .unwrap();
    refused(
        &d,
        b.path(),
        11,
        "targets.json: version 1 does not match version 7 pinned by snapshot.json",
    );
}

#[test]
fn malformed_json() {
    let (f, d, b) = setup();
    let bb = bundle(&f, b.path(), |_| {});
    std::fs::write(bb.tuf_file("timestamp.json"), b"{\"signed\": {").unwrap();
    refused(&d, b.path(), 4, "timestamp.json: not JSON");
}

#[test]
fn malformed_bundle_targets() {
    let (f, d, b) = setup();
    let bb = bundle(&f, b.path(), |_| {});
    std::fs::write(
        bb.tuf_file("bundle-targets.json"),
        b"{\"signed\":{},\"signatures\":{}}",
    )
    .unwrap();
    refused(
        &d,
        b.path(),
        15,
        "bundle-targets.json: `signatures` is not an array",
    );
}

#[test]
fn oversized_json() {
    let (f, d, b) = setup();
    let bb = bundle(&f, b.path(), |_| {});
    let huge = vec![b' '; (16 << 20) + 1];
    std::fs::write(bb.tuf_file("targets.json"), huge).unwrap();
    refused(
        &d,
        b.path(),
        4,
        "tuf/targets.json: larger than the 16777216-byte limit",
    );
}

#[test]
fn pretty_printed_but_valid_metadata_passes() {
    let (f, d, b) = setup();
    let bb = bundle(&f, b.path(), |_| {});
    // Every file of tuf/, rewritten with tabs, newlines and a trailing newline.
    for entry in std::fs::read_dir(bb.tuf_dir()).unwrap() {
        let p = entry.unwrap().path();
        let v: Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
        let pretty = serde_json::to_string_pretty(&v)
            .unwrap()
            .replace("  ", "\t");
        std::fs::write(&p, pretty + "\n").unwrap();
    }
    let r = d.check(b.path(), &[]);
    r.assert(100, "");
}

#[test]
fn bundle_targets_by_an_unknown_key() {
    let (f, d, b) = setup();
    let bb = bundle(&f, b.path(), |_| {});
    let stranger = gen::ed25519_key("stranger");
    bb.edit_signed("bundle-targets.json", &[&stranger], |_| {})
        .unwrap();
    refused(
        &d,
        b.path(),
        15,
        "bundle-targets.json: signed with an unknown key",
    );
}

#[test]
fn bundle_targets_with_a_bad_signature_among_good_ones() {
    let (f, d, b) = setup();
    let bb = bundle(&f, b.path(), |_| {});
    let mut t = bb.read("bundle-targets.json").unwrap();
    t["signed"]["x-fio-offline-bundle"]["targets"] = json!(["intel-corei7-64-lmp-2", "x"]);
    bb.write("bundle-targets.json", &t).unwrap();
    refused(
        &d,
        b.path(),
        15,
        "bundle-targets.json: bad signature by key",
    );
}

#[test]
fn bundle_targets_of_the_wrong_type() {
    let f = Factory::new().unwrap();
    let d = Device::with(
        &f,
        DeviceSpec {
            cert: Some("ci.pem"),
            ..Default::default()
        },
    );
    let b = tempfile::tempdir().unwrap();
    bundle(&f, b.path(), |s| s.kind = "prod".into());
    refused(
        &d,
        b.path(),
        15,
        "bundle-targets.json: bundle type \"prod\" does not match this ci device",
    );
}

#[test]
fn bundle_targets_of_the_wrong_tag() {
    let (f, d, b) = setup();
    bundle(&f, b.path(), |s| s.tag = "main".into());
    refused(
        &d,
        b.path(),
        15,
        "bundle-targets.json: bundle tag \"main\" is not one of the allowed tags [\"devel\"]",
    );
}

#[test]
fn missing_bundle_targets_under_the_default_policy() {
    let (f, d, b) = setup();
    bundle(&f, b.path(), |s| s.bundle_targets = BundleTargets::Omit);
    refused(
        &d,
        b.path(),
        14,
        "tuf/bundle-targets.json: missing, and the policy requires it",
    );
    // ... and accepted when the policy allows it.
    d.set_policy("[update]\nrequire_bundle_targets = false\n");
    let r = d.check(b.path(), &[]);
    r.assert(100, "");
    assert!(
        r.line("bundle ")
            .is_some_and(|l| l.contains("no bundle-targets.json")),
        "{}",
        r.stdout
    );
}

#[test]
fn missing_timestamp() {
    let (f, d, b) = setup();
    let bb = bundle(&f, b.path(), |_| {});
    bb.remove("timestamp.json").unwrap();
    refused(
        &d,
        b.path(),
        14,
        "tuf/timestamp.json: missing from the bundle",
    );
}

/// One target with `custom` changed by `edit`.
fn with_target(f: &Factory, dir: &Path, edit: impl FnOnce(TargetSpec) -> TargetSpec) {
    bundle(f, dir, |s| s.targets[0] = edit(s.targets[0].clone()));
}

#[test]
fn hardware_id_mismatch() {
    let (f, d, b) = setup();
    with_target(&f, b.path(), |t| {
        t.with_custom("hardwareIds", json!(["raspberrypi4-64"]))
    });
    refused(
        &d,
        b.path(),
        6,
        "hardwareIds [\"raspberrypi4-64\"] is not exactly [\"intel-corei7-64\"]",
    );
}

#[test]
fn two_hardware_ids() {
    let (f, d, b) = setup();
    with_target(&f, b.path(), |t| {
        t.with_custom("hardwareIds", json!([HWID, "other"]))
    });
    refused(
        &d,
        b.path(),
        6,
        "hardwareIds [\"intel-corei7-64\", \"other\"] is not exactly",
    );
}

#[test]
fn non_decimal_version() {
    let (f, d, b) = setup();
    with_target(&f, b.path(), |t| t.with_custom("version", json!("0x2")));
    refused(
        &d,
        b.path(),
        6,
        "custom.version \"0x2\" is not a plain decimal number",
    );
}

#[test]
fn not_an_ostree_target() {
    let (f, d, b) = setup();
    with_target(&f, b.path(), |t| {
        t.with_custom("targetFormat", json!("BINARY"))
    });
    refused(
        &d,
        b.path(),
        6,
        "targetFormat is \"BINARY\", not \"OSTREE\"",
    );
}

#[test]
fn target_tag_not_allowed() {
    let (f, d, b) = setup();
    with_target(&f, b.path(), |t| t.with_tags(&["main"]));
    refused(
        &d,
        b.path(),
        6,
        "tags [\"main\"] share none of the allowed tags [\"devel\"]",
    );
}

#[test]
fn target_not_in_the_bundle_list() {
    let (f, d, b) = setup();
    bundle(&f, b.path(), |s| {
        s.bundle_targets = BundleTargets::Only(vec!["intel-corei7-64-lmp-9".into()])
    });
    refused(
        &d,
        b.path(),
        6,
        "none of the bundle's targets are among the TUF targets",
    );
}

#[test]
fn commit_missing() {
    let (f, d, b) = setup();
    let bb = bundle(&f, b.path(), |_| {});
    std::fs::remove_file(bb.commit_object(&bb.targets[0].commit)).unwrap();
    refused(&d, b.path(), 8, "is not in ostree_repo/");
}

#[test]
fn app_missing() {
    let f = Factory::new().unwrap();
    let d = Device::with(
        &f,
        DeviceSpec {
            pacman_type: "ostree+compose_apps",
            ..Default::default()
        },
    );
    let b = tempfile::tempdir().unwrap();
    let apps = [
        gen::AppSpec::tiny(&f.name, "app-01", "a"),
        gen::AppSpec::tiny(&f.name, "app-02", "b"),
    ];
    let content = write_content(b.path(), &f.name, HWID, "2", &apps).unwrap();
    let mut spec = BundleSpec::new(vec![gen::target_for(HWID, "2", &content)]);
    spec.roots_from = 2;
    write_bundle(&f, &spec, b.path()).unwrap();
    std::fs::remove_dir_all(b.path().join("apps/apps/app-02")).unwrap();
    refused(&d, b.path(), 8, "apps missing from apps/: app-02");
}

#[test]
fn symlink_pointing_outside_the_bundle() {
    let (f, d, b) = setup();
    let bb = bundle(&f, b.path(), |_| {});
    let outside = d.tmp.path().join("outside.json");
    std::fs::copy(bb.tuf_file("targets.json"), &outside).unwrap();
    std::fs::remove_file(bb.tuf_file("targets.json")).unwrap();
    std::os::unix::fs::symlink(&outside, bb.tuf_file("targets.json")).unwrap();
    refused(&d, b.path(), 15, "tuf/targets.json is a symlink: refused");
}

#[test]
fn symlinked_commit_object() {
    let (f, d, b) = setup();
    let bb = bundle(&f, b.path(), |_| {});
    let obj = bb.commit_object(&bb.targets[0].commit);
    std::fs::rename(&obj, d.tmp.path().join("c")).unwrap();
    std::os::unix::fs::symlink(d.tmp.path().join("c"), &obj).unwrap();
    refused(&d, b.path(), 15, ".commit is a symlink: refused");
}

#[test]
fn app_directory_named_dot_dot() {
    let f = Factory::new().unwrap();
    let d = Device::with(
        &f,
        DeviceSpec {
            pacman_type: "ostree+compose_apps",
            ..Default::default()
        },
    );
    let b = tempfile::tempdir().unwrap();
    let content = write_content(b.path(), &f.name, HWID, "2", &[]).unwrap();
    let t = gen::target_for(HWID, "2", &content)
        .with_app("..", "hub.foundries.io/factory/..@sha256:0000000000000000000000000000000000000000000000000000000000000000");
    let mut spec = BundleSpec::new(vec![t]);
    spec.roots_from = 2;
    write_bundle(&f, &spec, b.path()).unwrap();
    refused(&d, b.path(), 15, "app name \"..\" is not a valid name");
}

#[test]
fn not_a_bundle() {
    let (_f, d, b) = setup();
    refused(&d, b.path(), 14, "no tuf/ directory");
}

#[test]
fn rsa_factory_bundle_passes() {
    let f = Factory::rsa().unwrap();
    let d = Device::new(&f);
    let b = tempfile::tempdir().unwrap();
    bundle(&f, b.path(), |_| {});
    d.check(b.path(), &[]).assert(100, "");
}

#[test]
fn rotations_are_followed_and_reported() {
    let mut f = Factory::new().unwrap();
    for _ in 0..3 {
        f.rotate_root().unwrap();
    }
    let d = Device::new(&f);
    let b = tempfile::tempdir().unwrap();
    bundle(&f, b.path(), |_| {});
    let r = d.check(b.path(), &[]);
    r.assert(100, "");
    for v in 2..=4 {
        let want = format!("root: v{v} expires 2099-01-01T00:00:00Z (bundle tuf/{v}.root.json)");
        assert!(r.stdout.lines().any(|l| l == want), "{want}\n{}", r.stdout);
    }
}
