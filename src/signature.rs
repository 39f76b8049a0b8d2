//! The operator's signature over a bundle: `usb-update.sig` at the bundle root.
//!
//! TUF proves that Foundries' factory made a target; it does not prove that this site's
//! operator meant this stick for these devices. Everything in a bundle outside `tuf/` is
//! content-addressed by TUF-signed hashes (OSTree commit, app digests), so a signature over
//! a manifest of `tuf/` alone binds the whole bundle to the operator's Ed25519 key.
//!
//! The manifest lists every regular file directly in `tuf/`, sorted by name, one line each:
//! `<sha256 hex>  <size>  tuf/<name>\n`. Anything else in `tuf/` (a symlink, a directory, a
//! device node) is refused rather than skipped: an unsigned file next to signed ones is a
//! hole. The file is JSON: `{"version":1,"key":"<64 hex>","manifest":"...",
//! "signature":"<128 hex>"}`, the signature over the manifest's bytes.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{ErrorKind, Read as _};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use ed25519_dalek::pkcs8::DecodePrivateKey as _;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::error::{Error, Result};
use crate::policy::SignaturePolicy;

pub const FILE: &str = "usb-update.sig";
/// The format this build writes and reads.
pub const VERSION: u32 = 1;
/// A real file is a few KiB (one line per `tuf/` file); the stick is hostile.
const MAX_FILE_BYTES: u64 = 1 << 20;

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SigFile {
    version: u32,
    key: String,
    manifest: String,
    signature: String,
}

/// Signs `<bundle_dir>/tuf/` with an Ed25519 private key in PKCS#8 PEM (`openssl genpkey
/// -algorithm ed25519`) and writes `<bundle_dir>/usb-update.sig`. Returns its path.
pub fn sign(key: &Path, bundle_dir: &Path) -> anyhow::Result<PathBuf> {
    let pem =
        fs::read_to_string(key).with_context(|| format!("reading the key {}", key.display()))?;
    let signing = SigningKey::from_pkcs8_pem(&pem).map_err(|e| {
        anyhow::anyhow!(
            "{}: not an Ed25519 private key in PKCS#8 PEM ({e})",
            key.display()
        )
    })?;
    let manifest = manifest(bundle_dir)?;
    let file = SigFile {
        version: VERSION,
        key: hex::encode(signing.verifying_key().as_bytes()),
        signature: hex::encode(signing.sign(manifest.as_bytes()).to_bytes()),
        manifest,
    };
    let mut bytes = serde_json::to_vec_pretty(&file).context("serialising the signature")?;
    bytes.push(b'\n');
    let path = bundle_dir.join(FILE);
    crate::state::write_atomic(&path, &bytes)?;
    Ok(path)
}

/// Checks the bundle's operator signature against the policy. `Ok(None)`: there is none and
/// none is required; `Ok(Some(key))`: signed by that trusted key (lowercase hex). A file that
/// is there but fails (untrusted key, bad signature, `tuf/` changed since) is refused even
/// when signatures are not required: it claims something that is not true. Refusals are
/// exit 105.
pub fn verify(bundle_dir: &Path, policy: &SignaturePolicy) -> Result<Option<String>> {
    let path = bundle_dir.join(FILE);
    let Some(file) = read_sig_file(&path)? else {
        if policy.required {
            return Err(Error::signature(format!(
                "the policy requires an operator signature ({}) and there is none",
                path.display()
            )));
        }
        return Ok(None);
    };
    let bad =
        |what: String| Error::signature(format!("operator signature {}: {what}", path.display()));
    let key_bytes: [u8; 32] = decode_hex(&file.key)
        .ok_or_else(|| bad(format!("key {:?} is not 64 hex digits", file.key)))?;
    let key_hex = hex::encode(key_bytes);
    if !policy
        .trusted_keys
        .iter()
        .any(|k| k.trim().eq_ignore_ascii_case(&key_hex))
    {
        return Err(bad(format!(
            "key {key_hex} is not one of the policy's [signature] trusted_keys"
        )));
    }
    let key = VerifyingKey::from_bytes(&key_bytes)
        .map_err(|_| bad(format!("key {key_hex} is not a valid Ed25519 public key")))?;
    let sig: [u8; 64] = decode_hex(&file.signature)
        .ok_or_else(|| bad("the signature is not 128 hex digits".into()))?;
    // Strict: no malleable signatures or small-order keys.
    key.verify_strict(file.manifest.as_bytes(), &Signature::from_bytes(&sig))
        .map_err(|_| bad(format!("the signature by key {key_hex} does not verify")))?;
    let now = manifest(bundle_dir)?;
    if now != file.manifest {
        return Err(bad(first_difference(&file.manifest, &now)));
    }
    Ok(Some(key_hex))
}

/// The manifest of `<bundle_dir>/tuf/` (see the module doc): the same bytes for the same
/// files whoever computes it. Anything but a regular file with a printable UTF-8 name is
/// refused (105), naming it; a read error is exit 1, naming the file.
pub fn manifest(bundle_dir: &Path) -> Result<String> {
    let dir = bundle_dir.join("tuf");
    let is_dir = fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir());
    if !is_dir {
        return Err(Error::signature(format!(
            "{} is not a directory: nothing to sign or verify",
            dir.display()
        )));
    }
    let listing = || format!("listing {}", dir.display());
    let mut files = BTreeMap::new();
    for entry in fs::read_dir(&dir).with_context(listing)? {
        let entry = entry.with_context(listing)?;
        let path = entry.path();
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            return Err(hostile(&path, "its name is not UTF-8"));
        };
        if name.chars().any(char::is_control) {
            return Err(hostile(&path, "its name has a control character"));
        }
        // `file_type` does not follow a symlink.
        let kind = entry
            .file_type()
            .with_context(|| format!("inspecting {}", path.display()))?;
        if !kind.is_file() {
            let what = if kind.is_symlink() {
                "a symlink"
            } else if kind.is_dir() {
                "a directory"
            } else {
                "not a regular file"
            };
            return Err(hostile(&path, what));
        }
        files.insert(name, path);
    }
    let mut out = String::new();
    for (name, path) in files {
        let (digest, size) = hash_file(&path)?;
        out += &format!("{digest}  {size}  tuf/{name}\n");
    }
    Ok(out)
}

/// An I/O failure (stick pulled, bad sector) is no verdict on the signature: exit 1, naming
/// the file.
fn io_error(e: std::io::Error, doing: &str, path: &Path) -> Error {
    anyhow::Error::new(e)
        .context(format!("{doing} {}", path.display()))
        .into()
}

fn hostile(path: &Path, what: &str) -> Error {
    Error::signature(format!(
        "{}: {what}; tuf/ may hold regular files only",
        path.display()
    ))
}

/// SHA-256 and size, streamed. `O_NOFOLLOW|O_NONBLOCK` and a check of the opened file: the
/// stick may swap a file for a symlink or a FIFO after it was listed.
fn hash_file(path: &Path) -> Result<(String, u64)> {
    let mut f = open_regular(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut size = 0u64;
    loop {
        let n = match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_error(e, "reading", path)),
        };
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((hex::encode(hasher.finalize()), size))
}

/// Opens `path` if it is a regular file, not through a symlink, without blocking (a FIFO is
/// refused by its type before it is opened for reading); anything else is refused.
fn open_regular(path: &Path) -> Result<File> {
    use crate::hostile_fs::{Problem, Tree};
    let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) else {
        return Err(hostile(path, "not a file name"));
    };
    let io = |p: Problem| match p {
        Problem::Unreadable(e) | Problem::Io(e) => {
            io_error(std::io::Error::from_raw_os_error(e as i32), "opening", path)
        }
        Problem::Symlink | Problem::ThroughSymlink => hostile(path, "a symlink"),
        _ => hostile(path, "not a regular file"),
    };
    let tree = Tree::open(dir).map_err(|r| io(r.problem))?;
    match tree.open_file(name) {
        Ok(Some((f, _))) => Ok(f),
        Ok(None) => Err(io_error(
            std::io::Error::from(ErrorKind::NotFound),
            "opening",
            path,
        )),
        Err(r) => Err(io(r.problem)),
    }
}

/// `None` when there is no signature file.
fn read_sig_file(path: &Path) -> Result<Option<SigFile>> {
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error(e, "inspecting", path)),
        Ok(m) if m.file_type().is_symlink() => {
            return Err(Error::signature(format!(
                "{} is a symlink: refused",
                path.display()
            )))
        }
        Ok(m) if !m.is_file() => {
            return Err(Error::signature(format!(
                "{} is not a regular file: refused",
                path.display()
            )))
        }
        Ok(_) => {}
    }
    let f = open_regular(path)?;
    let mut bytes = Vec::new();
    f.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("reading {}", path.display()))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(Error::signature(format!(
            "{} is larger than 1 MiB: refused",
            path.display()
        )));
    }
    let file: SigFile = serde_json::from_slice(&bytes).map_err(|e| {
        Error::signature(format!(
            "{} is not an operator signature file: {e}",
            path.display()
        ))
    })?;
    if file.version != VERSION {
        return Err(Error::signature(format!(
            "{}: version {} is not one this build knows ({VERSION})",
            path.display(),
            file.version
        )));
    }
    Ok(Some(file))
}

fn decode_hex<const N: usize>(s: &str) -> Option<[u8; N]> {
    let bytes = hex::decode(s).ok()?;
    bytes.try_into().ok()
}

/// Names the first file (in manifest order) where the signed manifest and the bundle differ.
fn first_difference(signed: &str, now: &str) -> String {
    // "<hash>  <size>  tuf/<name>": the name is all after the second separator.
    let by_name = |m: &'_ str| -> BTreeMap<String, String> {
        m.lines()
            .map(|l| {
                (
                    l.splitn(3, "  ").nth(2).unwrap_or(l).to_owned(),
                    l.to_owned(),
                )
            })
            .collect()
    };
    let (signed, now) = (by_name(signed), by_name(now));
    let mut names: Vec<&String> = signed.keys().chain(now.keys()).collect();
    names.sort();
    names.dedup();
    for name in names {
        match (signed.get(name), now.get(name)) {
            (Some(a), Some(b)) if a == b => continue,
            (Some(_), Some(_)) => return format!("{name} changed since the bundle was signed"),
            (Some(_), None) => return format!("{name} was signed but is not in the bundle"),
            (None, _) => return format!("{name} is in the bundle but was not signed"),
        }
    }
    "the signed manifest does not match the bundle's tuf/".into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Code;
    use ed25519_dalek::pkcs8::{spki::der::pem::LineEnding, EncodePrivateKey as _};

    struct Rig {
        tmp: tempfile::TempDir,
        bundle: PathBuf,
        key: PathBuf,
        public: String,
    }

    impl Rig {
        fn new() -> Rig {
            let signing = SigningKey::generate(&mut rand::rngs::OsRng);
            let pem = signing.to_pkcs8_pem(LineEnding::LF).unwrap();
            Rig::with_key(
                pem.as_bytes(),
                hex::encode(signing.verifying_key().as_bytes()),
            )
        }

        fn with_key(pem: &[u8], public: String) -> Rig {
            let tmp = tempfile::tempdir().unwrap();
            let bundle = tmp.path().join("bundle");
            fs::create_dir_all(bundle.join("tuf")).unwrap();
            fs::create_dir_all(bundle.join("ostree_repo")).unwrap();
            for (name, text) in [
                ("1.root.json", "{\"r\":1}"),
                ("targets.json", "{}"),
                ("timestamp.json", "{\"t\":1}"),
            ] {
                fs::write(bundle.join("tuf").join(name), text).unwrap();
            }
            let key = tmp.path().join("key.pem");
            fs::write(&key, pem).unwrap();
            Rig {
                tmp,
                bundle,
                key,
                public,
            }
        }

        fn policy(&self) -> SignaturePolicy {
            SignaturePolicy {
                required: true,
                trusted_keys: vec!["00".repeat(32), self.public.to_uppercase()],
            }
        }

        fn sign(&self) -> PathBuf {
            sign(&self.key, &self.bundle).unwrap()
        }

        fn refused(&self, policy: &SignaturePolicy, fragment: &str) {
            let e = verify(&self.bundle, policy).expect_err("expected a refusal");
            assert_eq!(e.code(), Code::Signature, "{}", e.one_line());
            assert!(
                e.one_line().contains(fragment),
                "{:?} lacks {fragment:?}",
                e.one_line()
            );
        }

        fn edit_sig(&self, edit: impl FnOnce(&mut serde_json::Value)) {
            let p = self.bundle.join(FILE);
            let mut v: serde_json::Value = serde_json::from_slice(&fs::read(&p).unwrap()).unwrap();
            edit(&mut v);
            fs::write(&p, serde_json::to_vec(&v).unwrap()).unwrap();
        }
    }

    #[test]
    fn round_trip_and_deterministic_manifest() {
        let r = Rig::new();
        let p = r.sign();
        assert_eq!(p, r.bundle.join(FILE));
        assert_eq!(
            verify(&r.bundle, &r.policy()).unwrap(),
            Some(r.public.clone())
        );
        let mut optional = r.policy();
        optional.required = false;
        assert_eq!(
            verify(&r.bundle, &optional).unwrap(),
            Some(r.public.clone())
        );
        let m = manifest(&r.bundle).unwrap();
        let digest = hex::encode(Sha256::digest(b"{}"));
        assert_eq!(
            m.lines().nth(1).unwrap(),
            format!("{digest}  2  tuf/targets.json")
        );
        assert_eq!(
            m.lines()
                .map(|l| l.rsplit(' ').next().unwrap())
                .collect::<Vec<_>>(),
            ["tuf/1.root.json", "tuf/targets.json", "tuf/timestamp.json"]
        );
        let v: serde_json::Value = serde_json::from_slice(&fs::read(&p).unwrap()).unwrap();
        assert_eq!(v["version"], 1);
        assert_eq!(v["manifest"], m.as_str());
        assert_eq!(v["signature"].as_str().unwrap().len(), 128);
    }

    #[test]
    fn a_key_made_by_openssl_signs() {
        let t = tempfile::tempdir().unwrap();
        let pem = t.path().join("k.pem");
        let ok = std::process::Command::new("openssl")
            .args(["genpkey", "-algorithm", "ed25519", "-out"])
            .arg(&pem)
            .status()
            .expect("openssl is installed");
        assert!(ok.success());
        let pem = fs::read(&pem).unwrap();
        let signing = SigningKey::from_pkcs8_pem(std::str::from_utf8(&pem).unwrap()).unwrap();
        let r = Rig::with_key(&pem, hex::encode(signing.verifying_key().as_bytes()));
        r.sign();
        assert_eq!(
            verify(&r.bundle, &r.policy()).unwrap(),
            Some(r.public.clone())
        );
    }

    #[test]
    fn missing_signature() {
        let r = Rig::new();
        let mut p = r.policy();
        r.refused(&p, "the policy requires an operator signature (");
        r.refused(&p, "usb-update.sig) and there is none");
        p.required = false;
        assert_eq!(verify(&r.bundle, &p).unwrap(), None);
    }

    #[test]
    fn tampered_added_and_removed_files() {
        let r = Rig::new();
        r.sign();
        let tuf = r.bundle.join("tuf");
        fs::write(tuf.join("targets.json"), "{ }").unwrap();
        r.refused(
            &r.policy(),
            "tuf/targets.json changed since the bundle was signed",
        );
        fs::write(tuf.join("targets.json"), "{}").unwrap();
        verify(&r.bundle, &r.policy()).unwrap();
        fs::write(tuf.join("2.root.json"), "{}").unwrap();
        r.refused(
            &r.policy(),
            "tuf/2.root.json is in the bundle but was not signed",
        );
        fs::remove_file(tuf.join("2.root.json")).unwrap();
        fs::remove_file(tuf.join("timestamp.json")).unwrap();
        r.refused(
            &r.policy(),
            "tuf/timestamp.json was signed but is not in the bundle",
        );
        // A bad signature is refused even when signatures are optional.
        let mut optional = r.policy();
        optional.required = false;
        r.refused(&optional, "tuf/timestamp.json was signed");
    }

    #[test]
    fn untrusted_key() {
        let r = Rig::new();
        r.sign();
        let p = SignaturePolicy {
            required: false,
            trusted_keys: vec!["11".repeat(32)],
        };
        r.refused(
            &p,
            &format!(
                "key {} is not one of the policy's [signature] trusted_keys",
                r.public
            ),
        );
    }

    #[test]
    fn corrupted_signature_manifest_or_file() {
        let r = Rig::new();
        r.sign();
        r.edit_sig(|v| {
            let s = v["signature"].as_str().unwrap();
            let flipped = if s.starts_with('0') { "1" } else { "0" };
            v["signature"] = format!("{flipped}{}", &s[1..]).into();
        });
        r.refused(
            &r.policy(),
            &format!("the signature by key {} does not verify", r.public),
        );
        // A manifest edited to match a tampered tuf/ no longer matches the signature.
        r.sign();
        fs::write(r.bundle.join("tuf/targets.json"), "{ }").unwrap();
        let now = manifest(&r.bundle).unwrap();
        r.edit_sig(|v| v["manifest"] = now.into());
        r.refused(&r.policy(), "does not verify");
        r.edit_sig(|v| v["signature"] = "zz".into());
        r.refused(&r.policy(), "the signature is not 128 hex digits");
        r.edit_sig(|v| v["version"] = 2.into());
        r.refused(&r.policy(), "version 2 is not one this build knows");
        r.edit_sig(|v| v["extra"] = 1.into());
        r.refused(&r.policy(), "is not an operator signature file");
        fs::write(r.bundle.join(FILE), "not json").unwrap();
        r.refused(&r.policy(), "is not an operator signature file");
        fs::write(
            r.bundle.join(FILE),
            vec![b' '; (MAX_FILE_BYTES + 1) as usize],
        )
        .unwrap();
        r.refused(&r.policy(), "larger than 1 MiB");
    }

    #[test]
    fn hostile_entries_are_refused() {
        let r = Rig::new();
        r.sign();
        let tuf = r.bundle.join("tuf");
        std::os::unix::fs::symlink("/etc/passwd", tuf.join("snapshot.json")).unwrap();
        r.refused(&r.policy(), "tuf/snapshot.json: a symlink");
        let e = format!("{:#}", sign(&r.key, &r.bundle).unwrap_err());
        assert!(e.contains("tuf/snapshot.json: a symlink"), "{e}");
        fs::remove_file(tuf.join("snapshot.json")).unwrap();
        fs::create_dir(tuf.join("sub")).unwrap();
        r.refused(&r.policy(), "tuf/sub: a directory");
        fs::remove_dir(tuf.join("sub")).unwrap();
        nix::unistd::mkfifo(&tuf.join("fifo"), nix::sys::stat::Mode::S_IRUSR).unwrap();
        r.refused(&r.policy(), "tuf/fifo: not a regular file");
        fs::remove_file(tuf.join("fifo")).unwrap();
        // The signature file itself: a symlink to a valid one is refused too.
        r.sign();
        let real = r.tmp.path().join("elsewhere.sig");
        fs::rename(r.bundle.join(FILE), &real).unwrap();
        std::os::unix::fs::symlink(&real, r.bundle.join(FILE)).unwrap();
        r.refused(&r.policy(), "usb-update.sig is a symlink");
        fs::remove_file(r.bundle.join(FILE)).unwrap();
        fs::create_dir(r.bundle.join(FILE)).unwrap();
        r.refused(&r.policy(), "usb-update.sig is not a regular file");
    }

    #[test]
    fn a_bad_key_file_is_named() {
        let r = Rig::with_key(
            b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
            String::new(),
        );
        let e = format!("{:#}", sign(&r.key, &r.bundle).unwrap_err());
        assert!(
            e.contains("key.pem: not an Ed25519 private key in PKCS#8 PEM"),
            "{e}"
        );
        let e = format!(
            "{:#}",
            sign(&r.tmp.path().join("none.pem"), &r.bundle).unwrap_err()
        );
        assert!(e.contains("none.pem"), "{e}");
    }
}
