//! What the attack suites share: a bundle of version 2 for the default device, the check
//! that a refusal has its code and reason and changed nothing, and an operator's key.

use std::path::{Path, PathBuf};
use std::process::Command;

use test_kit::gen::{self, write_bundle, write_content, BundleSpec, Factory};

use super::{Device, Unchanged, HWID};

/// A bundle with one target (version 2) for the default device, with `edit` applied to
/// the spec; roots from 2 are carried, so rotations are exercised.
pub fn bundle(f: &Factory, dir: &Path, edit: impl FnOnce(&mut BundleSpec)) -> gen::Bundle {
    let content = write_content(dir, &f.name, HWID, "2", &[]).expect("content");
    let mut spec = BundleSpec::new(vec![gen::target_for(HWID, "2", &content)]);
    spec.roots_from = 2;
    edit(&mut spec);
    write_bundle(f, &spec, dir).expect("bundle")
}

/// Run check on `b` and assert code, reason and that nothing changed.
#[track_caller]
pub fn refused(d: &Device, b: &Path, code: i32, reason: &str) {
    let before = Unchanged::new(d, b);
    d.check(b, &[]).assert(code, reason);
    before.assert();
}

pub fn setup() -> (Factory, Device, tempfile::TempDir) {
    let f = Factory::new().expect("factory");
    let d = Device::new(&f);
    (f, d, tempfile::tempdir().expect("tempdir"))
}

/// An operator's Ed25519 key from `seed` (PKCS#8 PEM in `dir`) and its public half in hex.
pub fn operator_key(dir: &Path, seed: u8) -> (PathBuf, String) {
    use ed25519_dalek::pkcs8::{spki::der::pem::LineEnding, EncodePrivateKey as _};
    let signing = ed25519_dalek::SigningKey::from_bytes(&[seed; 32]);
    let pem = dir.join("operator.pem");
    let text = signing.to_pkcs8_pem(LineEnding::LF).expect("pem");
    std::fs::write(&pem, text.as_bytes()).expect("key");
    (pem, hex::encode(signing.verifying_key().as_bytes()))
}

/// `usb-update bundle sign --key PEM BUNDLE`.
pub fn sign_bundle(pem: &Path, bundle: &Path) {
    let out = Command::new(env!("CARGO_BIN_EXE_usb-update"))
        .args(["bundle", "sign", "--key"])
        .arg(pem)
        .arg(bundle)
        .output()
        .expect("spawn usb-update");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
