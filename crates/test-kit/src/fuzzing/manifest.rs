//! The operator signature file and its signed manifest, against a fixed `tuf/`.
//!
//! Input: `[mode] [policy] payload`. Mode 0 (even): the payload is `usb-update.sig` as it
//! is. Mode 1 (odd): the payload is a manifest, which the kit signs with its key and wraps
//! in a signature file, so that the manifest's parsing and its comparison with `tuf/` run.
//! `policy` bit 0: signatures required; bit 1: the kit's key trusted; bit 2: it is listed
//! in upper case with spaces around, as an operator might type it.
//!
//! What must hold: no panic; every refusal is 105 with a one-line reason; a manifest that
//! passes every check (names, then sizes, then hashes, as [`usb_update::core::tufdir::TufDir::read`]
//! applies them) lists exactly the files of `tuf/`, each with its size and SHA-256.

use std::collections::BTreeMap;
use std::path::Path;

use ed25519_dalek::Signer as _;
use sha2::{Digest as _, Sha256};

use usb_update::core::signature::{self, Manifest};
use usb_update::core::tufdir::TufDir;
use usb_update::error::{Code, Result};
use usb_update::policy::SignaturePolicy;

fn key() -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::from_bytes(&[42u8; 32])
}

fn tuf() -> TufDir {
    let files: BTreeMap<String, Vec<u8>> = [
        ("1.root.json", &b"{\"signed\":{}}"[..]),
        ("bundle-targets.json", b"{}"),
        ("targets.json", b"{\"targets\":{}}"),
        ("timestamp.json", b""),
    ]
    .into_iter()
    .map(|(n, b)| (n.to_string(), b.to_vec()))
    .collect();
    TufDir::from_files(files)
}

/// A signature file over `manifest` by the kit's key.
fn signed_file(manifest: &str) -> Vec<u8> {
    let k = key();
    serde_json::json!({
        "version": signature::VERSION,
        "key": hex::encode(k.verifying_key().as_bytes()),
        "manifest": manifest,
        "signature": hex::encode(k.sign(manifest.as_bytes()).to_bytes()),
    })
    .to_string()
    .into_bytes()
}

/// The checks `TufDir::read` makes with a manifest, over the kit's `tuf/`.
fn against(m: &Manifest, tuf: &TufDir) -> Result<()> {
    let names: Vec<String> = tuf.files().map(|(n, _)| n.to_string()).collect();
    m.check_names(&names)?;
    for (name, bytes) in tuf.files() {
        m.check_size(name, bytes.len() as u64)?;
        m.check_content(name, bytes)?;
    }
    Ok(())
}

/// The check of one fuzz input (see the module doc).
pub fn check(data: &[u8]) {
    let [mode, policy, payload @ ..] = data else {
        return;
    };
    let file = if mode & 1 == 0 {
        payload.to_vec()
    } else {
        match std::str::from_utf8(payload) {
            Ok(m) => signed_file(m),
            Err(_) => return,
        }
    };
    let public = hex::encode(key().verifying_key().as_bytes());
    let listed = match policy & 4 {
        0 => public.clone(),
        _ => format!("  {}  ", public.to_uppercase()),
    };
    let policy = SignaturePolicy {
        required: policy & 1 != 0,
        trusted_keys: match policy & 2 {
            0 => vec!["11".repeat(32)],
            _ => vec!["00".repeat(32), listed],
        },
    };
    let tuf = tuf();
    let verdict = signature::check_file(&file, &policy, Path::new("usb-update.sig"))
        .and_then(|m| against(&m, &tuf).map(|()| m));
    match verdict {
        Err(e) => {
            assert_eq!(e.code(), Code::Signature, "{}", e.one_line());
            assert!(!e.one_line().contains('\n'), "{:?}", e.one_line());
        }
        Ok(m) => {
            assert_eq!(m.key(), public);
            let want: BTreeMap<String, (String, u64)> = tuf
                .files()
                .map(|(n, b)| {
                    let digest = hex::encode(Sha256::digest(b));
                    (n.to_string(), (digest, b.len() as u64))
                })
                .collect();
            assert_eq!(m.entries(), &want, "accepted a manifest that is not tuf/'s");
        }
    }
}

/// Seeds: the kit's genuine manifest signed and as a whole file, a tampered one, junk.
pub fn seeds() -> Vec<Vec<u8>> {
    let manifest = signature::manifest(&tuf());
    let tampered = manifest.replacen("  2  ", "  3  ", 1);
    vec![
        [&[1u8, 3][..], manifest.as_bytes()].concat(),
        [&[1u8, 7][..], manifest.as_bytes()].concat(),
        [&[0u8, 3][..], &signed_file(&manifest)].concat(),
        [&[1u8, 3][..], tampered.as_bytes()].concat(),
        [&[0u8, 1][..], b"{\"version\":1}"].concat(),
        // Found by the fuzzer: serde_json quotes an unknown member's name, newline and all.
        [&[0u8, 3][..], b"{\"manife\nx\":1}"].concat(),
    ]
}
