//! Hostile metadata that went around the verifier: duplicate JSON members,
//! unsigned files far larger than any signed pin allows, `tuf/` read twice, huge listings,
//! a fast-forwarded timestamp, and messages that named the wrong thing. Each case runs the
//! binary as an operator would and asserts the exit code, the one-line reason, and that
//! nothing on the device (stored TUF files, state, deployments) or the bundle changed.
//! Peak memory of these cases is measured by `bench/hostile-meta.sh`, not here.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::common::attack::{bundle, operator_key, refused, setup, sign_bundle};
use crate::common::scene::{deployments, scene};
use crate::common::{Device, Unchanged, HWID};
use serde_json::{json, Value};
use test_kit::gen::{self, to_bytes, write_bundle, write_content, BundleSpec, Factory};

/// The length of `file`'s canonical form, as its pin states it.
fn stated(b: &gen::Bundle, file: &str) -> usize {
    to_bytes(&b.read(file).unwrap()).unwrap().len()
}

/// `tuf/<file>` with `insert` spliced in right after the first occurrence of `after`.
fn splice(b: &gen::Bundle, file: &str, after: &str, insert: &str) {
    let p = b.tuf_file(file);
    let text = std::fs::read_to_string(&p).unwrap();
    let at = text
        .find(after)
        .unwrap_or_else(|| panic!("{after} in {file}"))
        + after.len();
    std::fs::write(&p, format!("{}{insert}{}", &text[..at], &text[at..])).unwrap();
}

#[test]
fn a_duplicate_signed_member_in_front_of_the_real_one_is_refused() {
    let (mut f, d, b) = setup();
    f.rotate_root().unwrap();
    let bb = bundle(&f, b.path(), |_| {});
    let junk = format!("{{\"junk\":\"{}\"}}", "x".repeat(64 << 10));
    let dup = |file: &str| {
        format!(
            "{file}: duplicate member \"signed\" in the top-level object \
             (a JSON object must not name a member twice)"
        )
    };
    let longer = |file: &str, by: &str| {
        format!(
            "{file}: longer than the {} bytes that {by} states for it",
            stated(&bb, file)
        )
    };
    for (file, code, reason) in [
        ("timestamp.json", 4, dup("timestamp.json")),
        ("bundle-targets.json", 15, dup("bundle-targets.json")),
        ("2.root.json", 4, dup("2.root.json")),
        // Pinned files: the junk makes them longer than their pin allows.
        (
            "snapshot.json",
            11,
            longer("snapshot.json", "timestamp.json"),
        ),
        ("targets.json", 11, longer("targets.json", "snapshot.json")),
    ] {
        let p = bb.tuf_file(file);
        let original = std::fs::read(&p).unwrap();
        // A later member replaces an earlier one of the same name when parsed: the
        // signature and the pinned hash still hold for the real one behind the junk.
        splice(&bb, file, "],", &format!("\"signed\":{junk},"));
        refused(&d, b.path(), code, &reason);
        std::fs::write(&p, original).unwrap();
    }
    d.check(b.path(), &[]).assert(100, "");
}

#[test]
fn a_duplicate_target_deep_in_targets_json_is_refused_with_its_path() {
    let (f, d, b) = setup();
    let bb = bundle(&f, b.path(), |_| {});
    // A snapshot that pins targets.json by hash only (length is optional): only the
    // duplicate is wrong with the file below.
    bb.edit_signed("snapshot.json", &f.signers(gen::Role::Snapshot), |s| {
        s["meta"]["targets.json"]
            .as_object_mut()
            .unwrap()
            .remove("length");
    })
    .unwrap();
    let sn = to_bytes(&bb.read("snapshot.json").unwrap()).unwrap();
    bb.edit_signed("timestamp.json", &f.signers(gen::Role::Timestamp), |s| {
        s["meta"]["snapshot.json"] = gen::tuf::meta_entry(&sn, 1);
    })
    .unwrap();
    d.check(b.path(), &[]).assert(100, "");
    let name = format!("{HWID}-lmp-2");
    splice(
        &bb,
        "targets.json",
        "\"targets\":{",
        &format!("\"{name}\":{{\"junk\":[{}0]}},", "0,".repeat(1 << 16)),
    );
    refused(
        &d,
        b.path(),
        4,
        &format!("targets.json: duplicate member \"{name}\" in `signed.targets`"),
    );
}

#[test]
fn install_stores_the_canonical_form_never_the_sticks_bytes() {
    let s = scene("1", &["1", "2"], &["2"], None);
    let tuf = s.b.path().join("tuf");
    let mut canonical = Vec::new();
    for entry in std::fs::read_dir(&tuf).unwrap() {
        let p = entry.unwrap().path();
        let v: Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
        let pretty = serde_json::to_string_pretty(&v).unwrap() + "\n";
        std::fs::write(&p, &pretty).unwrap();
        canonical.push((p.file_name().unwrap().to_owned(), to_bytes(&v).unwrap()));
    }
    let r = s.d.run("install", s.b.path(), &[]);
    assert_eq!(r.code, 100, "{}\n{}", r.stdout, r.stderr);
    let stored = s.d.state_dir().join("tuf");
    let mut n = 0;
    for (name, bytes) in canonical {
        let Ok(got) = std::fs::read(stored.join(&name)) else {
            continue; // bundle-targets.json is not trusted metadata
        };
        assert_eq!(got, bytes, "{name:?} is not stored in canonical form");
        n += 1;
    }
    assert_eq!(n, 3, "timestamp, snapshot and targets are stored");
}

#[test]
fn targets_json_far_larger_than_the_snapshot_states_is_refused_unparsed() {
    let (f, d, b) = setup();
    let bb = bundle(&f, b.path(), |_| {});
    let stated = stated(&bb, "targets.json");
    // 16 MiB of tiny JSON values, just under the file cap.
    let mut bomb = b"[".to_vec();
    bomb.extend(b"0,".repeat(((16 << 20) - 16) / 2));
    bomb.extend(b"0]");
    std::fs::write(bb.tuf_file("targets.json"), bomb).unwrap();
    refused(
        &d,
        b.path(),
        11,
        &format!("targets.json: longer than the {stated} bytes that snapshot.json states for it"),
    );
}

#[test]
fn snapshot_json_far_larger_than_the_timestamp_states_is_refused_unparsed() {
    let (f, d, b) = setup();
    let bb = bundle(&f, b.path(), |_| {});
    let stated = stated(&bb, "snapshot.json");
    let objects = vec!["{\"a\":0}"; 120_000].join(",");
    std::fs::write(bb.tuf_file("snapshot.json"), format!("[{objects}]")).unwrap();
    refused(
        &d,
        b.path(),
        11,
        &format!("snapshot.json: longer than the {stated} bytes that timestamp.json states for it"),
    );
}

#[test]
fn a_canonical_form_beyond_the_stated_length_stops_the_parse() {
    let (f, d, b) = setup();
    let bb = bundle(&f, b.path(), |_| {});
    let stated = stated(&bb, "targets.json");
    // Within the room left for pretty-printing, but not canonically the stated length.
    splice(
        &bb,
        "targets.json",
        "\"signed\":{",
        &format!("\"padding\":\"{}\",", "p".repeat(4096)),
    );
    refused(
        &d,
        b.path(),
        11,
        &format!("targets.json: longer than the {stated} bytes that snapshot.json states for it"),
    );
}

#[test]
fn a_root_of_tiny_objects_is_refused_by_the_old_roots_keys() {
    let (f, d, b) = setup();
    bundle(&f, b.path(), |_| {});
    let objects = vec!["{\"a\":0}"; 125_000].join(",");
    std::fs::write(
        b.path().join("tuf/2.root.json"),
        format!(
            "{{\"signatures\":[],\"signed\":{{\"_type\":\"Root\",\"version\":2,\"x\":[{objects}]}}}}"
        ),
    )
    .unwrap();
    refused(
        &d,
        b.path(),
        11,
        "2.root.json: 0 valid signature(s) by root keys of root v1, 1 required",
    );
}

#[test]
fn a_tuf_directory_with_too_many_names_is_refused() {
    let (f, d, b) = setup();
    bundle(&f, b.path(), |_| {});
    for i in 0..5000 {
        std::fs::write(b.path().join(format!("tuf/x{i}")), b"").unwrap();
    }
    refused(
        &d,
        b.path(),
        15,
        "tuf/ holds 5004 entries, more than the 4096 a bundle may have: refused",
    );
}

/// A policy that requires an operator signature by a key made in `dir`: its PEM and hex.
fn require_signature(d: &Device, dir: &Path) -> (std::path::PathBuf, String) {
    let (pem, public) = operator_key(dir, 7);
    d.set_policy(&format!(
        "[signature]\nrequired = true\ntrusted_keys = [\"{public}\"]\n"
    ));
    (pem, public)
}

#[test]
fn tuf_is_read_once_and_both_checks_judge_the_same_bytes() {
    let (f, d, b) = setup();
    let keys = tempfile::tempdir().unwrap();
    let (pem, public) = require_signature(&d, keys.path());
    bundle(&f, b.path(), |_| {});
    sign_bundle(&pem, b.path());
    // Another valid bundle (version 3), never signed by the operator.
    let other = tempfile::tempdir().unwrap();
    let content = write_content(b.path(), &f.name, HWID, "3", &[]).unwrap();
    let mut spec = BundleSpec::new(vec![gen::target_for(HWID, "3", &content)]);
    spec.roots_from = 2;
    write_bundle(&f, &spec, other.path()).unwrap();

    let flag = d.tmp.path().join("paused");
    let mut child = Command::new(env!("CARGO_BIN_EXE_usb-update"))
        .args(["check", "-c"])
        .arg(&d.conf)
        .arg("-p")
        .arg(&d.policy)
        .arg("--src-dir")
        .arg(b.path())
        .env("USB_UPDATE_PAUSE_AT", "verify-metadata")
        .env("USB_UPDATE_PAUSE_FILE", &flag)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !flag.exists() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "exited before the pause"
        );
        assert!(std::time::Instant::now() < deadline, "never paused");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // The stick now serves other bytes: the second bundle's tuf/.
    for name in [
        "targets.json",
        "snapshot.json",
        "timestamp.json",
        "bundle-targets.json",
    ] {
        std::fs::copy(
            other.path().join("tuf").join(name),
            b.path().join("tuf").join(name),
        )
        .unwrap();
    }
    std::fs::remove_file(&flag).unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(100), "{stdout}");
    assert!(
        stdout.contains(&format!("operator signature: by trusted key {public}")),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("selected: {HWID}-lmp-2 (version 2)")),
        "{stdout}"
    );
    // Read afresh, the swapped files are refused by the signature.
    refused(
        &d,
        b.path(),
        105,
        "tuf/bundle-targets.json changed since the bundle was signed",
    );
}

#[test]
fn a_huge_sparse_file_in_signed_tuf_is_refused_by_its_size_before_any_hashing() {
    let (f, d, b) = setup();
    let keys = tempfile::tempdir().unwrap();
    let (pem, _) = require_signature(&d, keys.path());
    let bb = bundle(&f, b.path(), |_| {});
    sign_bundle(&pem, b.path());
    let signed = std::fs::metadata(bb.tuf_file("targets.json"))
        .unwrap()
        .len();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(bb.tuf_file("targets.json"))
        .unwrap();
    // The device only: fingerprinting the bundle would read the 20 GiB.
    let before = crate::common::fingerprint(d.tmp.path());
    file.set_len(20 << 30).unwrap();
    d.check(b.path(), &[]).assert(
        105,
        &format!(
            "tuf/targets.json changed since the bundle was signed (21474836480 bytes, {signed} signed)"
        ),
    );
    let mut after = crate::common::fingerprint(d.tmp.path());
    for p in ["run", "run/lock", "run/lock/aklite.lock"] {
        if !before.contains_key(Path::new(p)) {
            after.remove(Path::new(p));
        }
    }
    assert_eq!(before, after, "the device changed");
}

/// Store `file` of `bb` as the device's trusted copy, as an earlier update would have.
fn store(d: &Device, bb: &gen::Bundle, file: &str) {
    let dir = d.state_dir().join("tuf");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(bb.tuf_file(file), dir.join(file)).unwrap();
}

#[test]
fn a_fast_forwarded_timestamp_is_recovered_from_by_rotating_its_key() {
    let mut f = Factory::new().unwrap();
    let d = Device::new(&f);
    // A stolen timestamp key signed version 2^64-1, and the device stored it.
    let stolen = tempfile::tempdir().unwrap();
    let ff = bundle(&f, stolen.path(), |s| s.versions.timestamp = u64::MAX);
    store(&d, &ff, "timestamp.json");
    let b = tempfile::tempdir().unwrap();
    bundle(&f, b.path(), |_| {});
    refused(
        &d,
        b.path(),
        11,
        "timestamp.json: version 1 is older than the device's version 18446744073709551615",
    );

    // Root v2 replaces the timestamp key: the stored timestamp no longer binds.
    let mut spec = f.next_root_spec();
    spec.root = f.spec().root.clone();
    spec.timestamp = gen::RoleKeys::single(f.fresh_key());
    f.push_root(spec).unwrap();
    let b = tempfile::tempdir().unwrap();
    bundle(&f, b.path(), |_| {});
    let before = Unchanged::new(&d, b.path());
    d.check(b.path(), &[]).assert(100, "");
    before.assert();

    // A bundle that keeps the old keys (root v1 only) is still refused.
    let old = Factory::new().unwrap();
    let b = tempfile::tempdir().unwrap();
    bundle(&old, b.path(), |_| {});
    refused(
        &d,
        b.path(),
        11,
        "version 1 is older than the device's version 18446744073709551615",
    );
}

#[test]
fn a_fast_forwarded_snapshot_is_recovered_from_by_rotating_its_key() {
    let mut f = Factory::new().unwrap();
    let d = Device::new(&f);
    let stolen = tempfile::tempdir().unwrap();
    let ff = bundle(&f, stolen.path(), |s| {
        s.versions.snapshot = u64::MAX;
        s.versions.targets = u64::MAX;
    });
    store(&d, &ff, "snapshot.json");
    store(&d, &ff, "targets.json");
    let mut spec = f.next_root_spec();
    spec.snapshot = gen::RoleKeys::single(f.fresh_key());
    f.push_root(spec).unwrap();
    let b = tempfile::tempdir().unwrap();
    bundle(&f, b.path(), |_| {});
    let before = Unchanged::new(&d, b.path());
    d.check(b.path(), &[]).assert(100, "");
    before.assert();
}

#[test]
fn a_root_file_name_with_a_leading_zero_is_named_as_such() {
    let (mut f, d, b) = setup();
    f.rotate_root().unwrap();
    let bb = bundle(&f, b.path(), |_| {});
    std::fs::rename(bb.tuf_file("2.root.json"), bb.tuf_file("02.root.json")).unwrap();
    refused(
        &d,
        b.path(),
        15,
        "tuf/02.root.json: not a root file name (N.root.json, N a decimal number without leading zeros): refused",
    );
}

#[test]
fn a_symlinked_tuf_is_called_a_symlink() {
    let (f, d, b) = setup();
    bundle(&f, b.path(), |_| {});
    std::fs::rename(b.path().join("tuf"), b.path().join("meta")).unwrap();
    std::os::unix::fs::symlink("meta", b.path().join("tuf")).unwrap();
    refused(
        &d,
        b.path(),
        15,
        &format!("bundle {}: tuf is a symlink: refused", b.path().display()),
    );
}

#[test]
fn an_integer_custom_version_is_named_as_a_number() {
    let (f, d, b) = setup();
    bundle(&f, b.path(), |s| {
        s.targets[0] = s.targets[0].clone().with_custom("version", json!(2));
    });
    refused(
        &d,
        b.path(),
        6,
        "custom.version is the number 2, not a string holding a plain decimal number",
    );
}

#[test]
fn a_dangling_policy_file_fails_closed() {
    let (f, d, b) = setup();
    bundle(&f, b.path(), |_| {});
    let link = d.policy.join("60-site.toml");
    std::os::unix::fs::symlink("/nonexistent/site.toml", &link).unwrap();
    refused(
        &d,
        b.path(),
        1,
        &format!("policy file {} cannot be read (", link.display()),
    );
    std::fs::remove_file(&link).unwrap();
    d.set_policy("[update]\nallowed_tags = []\n");
    refused(&d, b.path(), 1, "[update] allowed_tags = [] is not allowed");
}

#[test]
fn a_refused_install_stores_nothing() {
    let s = scene("1", &["1", "2"], &["2"], None);
    let bb = gen::Bundle::open(s.b.path());
    splice(&bb, "timestamp.json", "],", "\"signed\":{\"junk\":1},");
    let before = Unchanged::new(&s.d, s.b.path());
    let r = s.d.run("install", s.b.path(), &[]);
    assert_eq!(r.code, 4, "{}", r.stdout);
    assert!(
        r.error()
            .starts_with("timestamp.json: duplicate member \"signed\""),
        "{}",
        r.stdout
    );
    before.assert();
    assert_eq!(deployments(&s.d).len(), 1);
    assert!(!s.d.state_dir().join("tuf").exists());
}
