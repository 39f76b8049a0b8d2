//! Real signed metadata that nobody on this project wrote (an ota-tuf server's RSA-PSS
//! output, published as aktualizr test data; see tests/fixtures/interop/ota-tuf-rsa/README.md).
//! Our verifier must accept every signature and reject the set as a chain.

use std::path::{Path, PathBuf};

use usb_update::core::tufdir::TufDir;
use usb_update::tuf::meta::{Envelope, Root};
use usb_update::tuf::verify::{anchor, check_role_signatures, StoredVersions};
use usb_update::tuf::{verify_bundle, BundleRules, MetaSource, Trust};
use usb_update::Code;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/interop/ota-tuf-rsa")
}

fn env(rel: &str) -> Envelope {
    Envelope::parse(&std::fs::read(dir().join(rel)).unwrap()).unwrap()
}

fn root(rel: &str) -> Root {
    anchor(&env(rel), rel).unwrap()
}

#[test]
fn all_six_signatures_verify() {
    let repo = root("repo/root.json");
    for (file, role) in [
        ("repo/root.json", "root"),
        ("repo/timestamp.json", "timestamp"),
        ("repo/snapshot.json", "snapshot"),
        ("repo/targets.json", "targets"),
    ] {
        check_role_signatures(&env(file), &repo, role, file).unwrap();
    }
    let director = root("director/root.json");
    check_role_signatures(&env("director/root.json"), &director, "root", "d").unwrap();
    check_role_signatures(&env("director/targets.json"), &director, "targets", "d").unwrap();
}

#[test]
fn pretty_printing_does_not_matter_but_a_flipped_byte_does() {
    let repo = root("repo/root.json");
    for (file, role) in [
        ("repo/timestamp.json", "timestamp"),
        ("repo/snapshot.json", "snapshot"),
        ("repo/targets.json", "targets"),
    ] {
        let text = std::fs::read_to_string(dir().join(file)).unwrap();
        // Same value, other whitespace: still valid.
        let compact: serde_json::Value = serde_json::from_str(&text).unwrap();
        let e = Envelope::from_value(compact).unwrap();
        check_role_signatures(&e, &repo, role, file).unwrap();
        // One byte inside `signed` changed: the expiry year 2018 -> 2019.
        let tampered = text.replacen("\"2018-", "\"2019-", 1);
        assert_ne!(tampered, text);
        let e = Envelope::parse(tampered.as_bytes()).unwrap();
        let err =
            usb_update::Error::from(check_role_signatures(&e, &repo, role, file).unwrap_err());
        assert_eq!(err.code(), Code::Security, "{file}");
        assert!(
            err.one_line().contains("0 valid signature(s)"),
            "{}",
            err.one_line()
        );
    }
}

/// The repo directory seen as a bundle's `tuf/` (its `root.json` is no `N.root.json`).
fn repo() -> TufDir {
    let mut files = std::collections::BTreeMap::new();
    for f in [
        "root.json",
        "timestamp.json",
        "snapshot.json",
        "targets.json",
    ] {
        files.insert(
            f.to_string(),
            std::fs::read(dir().join("repo").join(f)).unwrap(),
        );
    }
    let t = TufDir::from_files(files);
    assert_eq!(t.root_versions().unwrap(), Vec::<u64>::new());
    t
}

fn trust() -> Trust {
    let root = root("repo/root.json");
    Trust {
        chain: vec![],
        root,
        stored: StoredVersions::default(),
    }
}

const RULES: BundleRules = BundleRules {
    device_type: None,
    allowed_tags: &[],
    require_index: false,
};

#[test]
fn the_set_is_rejected_for_its_broken_links_whatever_the_clock() {
    for now in ["2018-03-01T00:00:00Z", "2026-11-21T00:00:00Z"] {
        let err =
            usb_update::Error::from(verify_bundle(&trust(), &repo(), &RULES, now).unwrap_err());
        assert_eq!(err.code(), Code::Security, "{now}: {}", err.one_line());
        assert_eq!(
            err.one_line(),
            "snapshot.json: hash does not match the one in timestamp.json"
        );
    }
}

#[test]
fn the_snapshot_pins_an_older_targets_version_than_the_file() {
    // The second broken link the data's README names, checked on its own.
    let sn = env("repo/snapshot.json");
    let tg = env("repo/targets.json");
    let pin = usb_update::tuf::meta::snapshot_targets_ref(&sn).unwrap();
    assert_eq!(pin.version, 20);
    assert_eq!(tg.version().unwrap(), 21);
    assert!(!pin.hashes_match(&tg));
}

#[test]
fn every_file_is_expired_by_the_real_clock() {
    let now = usb_update::tuf::now_utc();
    for f in [
        "repo/root.json",
        "repo/timestamp.json",
        "repo/snapshot.json",
        "repo/targets.json",
    ] {
        assert!(env(f).expires().unwrap() < now, "{f}");
    }
}
