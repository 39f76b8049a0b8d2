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
//!
//! `tuf/` is listed, the signature file checked (trusted key, valid signature), then `tuf/`
//! read once ([`TufDir::read_listed`]) against the signed manifest: names, each size before
//! its bytes are read, each hash after; TUF then verifies those same bytes.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use ed25519_dalek::pkcs8::DecodePrivateKey as _;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::core::bundle::Bundle;
use crate::core::tufdir::TufDir;
use crate::error::{Code, Error, Result};
use crate::policy::SignaturePolicy;

pub(crate) const FILE: &str = "usb-update.sig";
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
    let bundle = Bundle::open(bundle_dir).map_err(|e| anyhow::anyhow!(e.one_line()))?;
    let tuf = TufDir::read(&bundle, None).map_err(|e| anyhow::anyhow!(e.one_line()))?;
    let manifest = manifest(&tuf);
    let file = SigFile {
        version: VERSION,
        key: hex::encode(signing.verifying_key().as_bytes()),
        signature: hex::encode(signing.sign(manifest.as_bytes()).to_bytes()),
        manifest,
    };
    let mut bytes = serde_json::to_vec_pretty(&file).context("serialising the signature")?;
    bytes.push(b'\n');
    let path = bundle_dir.join(FILE);
    crate::durable::replace(&path, &bytes)?;
    Ok(path)
}

/// The manifest of a `tuf/` (see the module doc): the same bytes for the same files
/// whoever computes it.
pub fn manifest(tuf: &TufDir) -> String {
    tuf.files()
        .map(|(name, bytes)| {
            format!(
                "{}  {}  tuf/{name}\n",
                hex::encode(Sha256::digest(bytes)),
                bytes.len()
            )
        })
        .collect()
}

/// The manifest an operator signed, once its signature held: name -> (sha256, size).
#[derive(Debug)]
pub struct Manifest {
    path: PathBuf,
    key: String,
    entries: BTreeMap<String, (String, u64)>,
}

/// `tuf/` as read once, and who signed it.
#[derive(Debug, Default)]
pub struct SignedTuf {
    pub tuf: TufDir,
    /// The operator's key (lowercase hex); `None`: no signature, and none required.
    pub signer: Option<String>,
}

/// Reads `tuf/` of `bundle` once, checked against the operator signature as the policy
/// says. A signature file that is there but fails (untrusted key, bad signature, `tuf/`
/// changed since) is refused even when signatures are not required: it claims something
/// that is not true. Refusals are exit 105.
pub(crate) fn read_tuf(bundle: &Bundle, policy: &SignaturePolicy) -> Result<SignedTuf> {
    // Fault tests pull the stick here: the bundle is open, nothing of it read yet.
    crate::failpoint::pause("read-metadata");
    let names = TufDir::list(bundle)?;
    let manifest = load(bundle, policy)?;
    let tuf = TufDir::read_listed(bundle, names, manifest.as_ref())?;
    Ok(SignedTuf {
        tuf,
        signer: manifest.map(|m| m.key),
    })
}

/// The signed manifest of `bundle`, its key trusted and its signature valid.
pub fn load(bundle: &Bundle, policy: &SignaturePolicy) -> Result<Option<Manifest>> {
    let path = bundle.path().join(FILE);
    let Some(bytes) = read_sig_file(bundle, &path)? else {
        if policy.required {
            return Err(Error::signature(format!(
                "the policy requires an operator signature ({}) and there is none",
                path.display()
            )));
        }
        return Ok(None);
    };
    check_file(&bytes, policy, &path).map(Some)
}

/// The manifest that the signature file `bytes` (named `path` in messages) carries, once
/// its key is trusted by `policy` and its signature verified; every refusal is 105.
pub fn check_file(bytes: &[u8], policy: &SignaturePolicy, path: &Path) -> Result<Manifest> {
    let file: SigFile = serde_json::from_slice(bytes).map_err(|e| {
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
    let mut entries = BTreeMap::new();
    for (i, line) in file.manifest.lines().enumerate() {
        let parsed = match line.splitn(3, "  ").collect::<Vec<_>>()[..] {
            [hash, size, name] if hash.len() == 64 => {
                let name = name.strip_prefix("tuf/").filter(|n| !n.contains('/'));
                match (hex::decode(hash), size.parse::<u64>(), name) {
                    (Ok(_), Ok(size), Some(name)) => Some((name, hash, size)),
                    _ => None,
                }
            }
            _ => None,
        };
        let Some((name, hash, size)) = parsed else {
            return Err(bad(format!(
                "line {} of the signed manifest is not `<sha256>  <size>  tuf/<name>`",
                i + 1
            )));
        };
        if entries
            .insert(name.to_string(), (hash.to_ascii_lowercase(), size))
            .is_some()
        {
            return Err(bad(format!(
                "tuf/{name} is listed twice in the signed manifest"
            )));
        }
    }
    Ok(Manifest {
        path: path.to_path_buf(),
        key: key_hex,
        entries,
    })
}

impl Manifest {
    /// The signer's public key (lowercase hex).
    #[cfg(any(test, feature = "internals"))]
    pub fn key(&self) -> &str {
        &self.key
    }

    /// What was signed: name -> (sha256 hex, size).
    #[cfg(any(test, feature = "internals"))]
    pub fn entries(&self) -> &BTreeMap<String, (String, u64)> {
        &self.entries
    }

    fn refused(&self, what: String) -> Error {
        Error::signature(format!(
            "operator signature {}: {what}",
            self.path.display()
        ))
    }

    /// The names in `tuf/` are exactly the signed ones; else the first difference, by name.
    pub fn check_names(&self, names: &[String]) -> Result<()> {
        let present: std::collections::BTreeSet<&str> = names.iter().map(String::as_str).collect();
        let extra = present.iter().find(|n| !self.entries.contains_key(**n));
        let gone = self.entries.keys().find(|n| !present.contains(n.as_str()));
        let first = match (extra, gone) {
            (Some(e), Some(g)) if g.as_str() < *e => Err(g.as_str()),
            (Some(e), _) => Ok(*e),
            (None, Some(g)) => Err(g.as_str()),
            (None, None) => return Ok(()),
        };
        Err(self.refused(match first {
            Ok(e) => format!("tuf/{e} is in the bundle but was not signed"),
            Err(g) => format!("tuf/{g} was signed but is not in the bundle"),
        }))
    }

    /// Before a byte of `tuf/<name>` is read: it has the signed size.
    pub fn check_size(&self, name: &str, size: u64) -> Result<()> {
        match self.entries.get(name) {
            Some((_, signed)) if *signed == size => Ok(()),
            Some((_, signed)) => Err(self.refused(format!(
                "tuf/{name} changed since the bundle was signed ({size} bytes, {signed} signed)"
            ))),
            None => Err(self.refused(format!("tuf/{name} is in the bundle but was not signed"))),
        }
    }

    /// The bytes read of `tuf/<name>` have the signed hash.
    pub fn check_content(&self, name: &str, bytes: &[u8]) -> Result<()> {
        let digest = hex::encode(Sha256::digest(bytes));
        match self.entries.get(name) {
            Some((signed, _)) if *signed == digest => Ok(()),
            _ => Err(self.refused(format!("tuf/{name} changed since the bundle was signed"))),
        }
    }
}

/// `None` when there is no signature file. A file that cannot be what it claims (a symlink,
/// not a regular file, too large) is a failed claim: 105.
fn read_sig_file(bundle: &Bundle, path: &Path) -> Result<Option<Vec<u8>>> {
    let opened = bundle.open_file(FILE).map_err(|e| match e.code() {
        Code::InvalidBundle => Error::signature(e.one_line()),
        _ => e,
    })?;
    let Some((f, len)) = opened else {
        return Ok(None);
    };
    let too_large =
        || Error::signature(format!("{} is larger than 1 MiB: refused", path.display()));
    if len > MAX_FILE_BYTES {
        return Err(too_large());
    }
    let mut bytes = Vec::new();
    f.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::new(Code::Copy, format!("bundle: {FILE}: read failed: {e}")))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(too_large());
    }
    Ok(Some(bytes))
}

fn decode_hex<const N: usize>(s: &str) -> Option<[u8; N]> {
    let bytes = hex::decode(s).ok()?;
    bytes.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::pkcs8::{spki::der::pem::LineEnding, EncodePrivateKey as _};

    fn verify(dir: &Path, policy: &SignaturePolicy) -> Result<Option<String>> {
        read_tuf(&Bundle::open(dir)?, policy).map(|t| t.signer)
    }

    fn manifest(dir: &Path) -> String {
        super::manifest(&TufDir::read(&Bundle::open(dir).unwrap(), None).unwrap())
    }

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
        let m = manifest(&r.bundle);
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
        let now = manifest(&r.bundle);
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
        let hostile = |fragment: &str| {
            let e = verify(&r.bundle, &r.policy()).expect_err("expected a refusal");
            assert_eq!(e.code(), Code::InvalidBundle, "{}", e.one_line());
            assert!(e.one_line().contains(fragment), "{}", e.one_line());
        };
        std::os::unix::fs::symlink("/etc/passwd", tuf.join("snapshot.json")).unwrap();
        // Not signed: refused by name before anything is opened.
        r.refused(
            &r.policy(),
            "tuf/snapshot.json is in the bundle but was not signed",
        );
        let e = format!("{:#}", sign(&r.key, &r.bundle).unwrap_err());
        assert!(e.contains("tuf/snapshot.json is a symlink"), "{e}");
        fs::remove_file(tuf.join("snapshot.json")).unwrap();
        fs::create_dir(tuf.join("sub")).unwrap();
        r.refused(&r.policy(), "tuf/sub is in the bundle but was not signed");
        let mut optional = r.policy();
        optional.required = false;
        fs::remove_file(r.bundle.join(FILE)).unwrap();
        let e = verify(&r.bundle, &optional).unwrap_err();
        assert!(
            e.one_line()
                .contains("tuf/sub is a directory, not a regular file"),
            "{}",
            e.one_line()
        );
        fs::remove_dir(tuf.join("sub")).unwrap();
        nix::unistd::mkfifo(&tuf.join("fifo"), nix::sys::stat::Mode::S_IRUSR).unwrap();
        let e = verify(&r.bundle, &optional).unwrap_err();
        assert!(
            e.one_line()
                .contains("tuf/fifo is a FIFO, not a regular file"),
            "{}",
            e.one_line()
        );
        fs::remove_file(tuf.join("fifo")).unwrap();
        // A symlink that was signed (by hand) is refused for being a symlink.
        r.sign();
        fs::remove_file(tuf.join("timestamp.json")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", tuf.join("timestamp.json")).unwrap();
        hostile("tuf/timestamp.json is a symlink");
        fs::remove_file(tuf.join("timestamp.json")).unwrap();
        fs::write(tuf.join("timestamp.json"), "{\"t\":1}").unwrap();
        // The signature file itself: a symlink to a valid one is refused too.
        r.sign();
        let real = r.tmp.path().join("elsewhere.sig");
        fs::rename(r.bundle.join(FILE), &real).unwrap();
        std::os::unix::fs::symlink(&real, r.bundle.join(FILE)).unwrap();
        r.refused(&r.policy(), "usb-update.sig is a symlink");
        fs::remove_file(r.bundle.join(FILE)).unwrap();
        fs::create_dir(r.bundle.join(FILE)).unwrap();
        r.refused(
            &r.policy(),
            "usb-update.sig is a directory, not a regular file",
        );
    }

    #[test]
    fn names_and_sizes_are_compared_before_anything_is_read() {
        let r = Rig::new();
        r.sign();
        let tuf = r.bundle.join("tuf");
        // 20 GiB of nothing: refused from its size, not after hashing it.
        let f = fs::File::create(tuf.join("targets.json")).unwrap();
        f.set_len(20 << 30).unwrap();
        let t = std::time::Instant::now();
        r.refused(
            &r.policy(),
            "tuf/targets.json changed since the bundle was signed (21474836480 bytes, 2 signed)",
        );
        assert!(t.elapsed() < std::time::Duration::from_secs(5));
        // A file that is the same size but other bytes: refused after reading it.
        fs::write(tuf.join("targets.json"), "[]").unwrap();
        r.refused(
            &r.policy(),
            "tuf/targets.json changed since the bundle was signed",
        );
    }

    #[test]
    fn a_malformed_signed_manifest_is_refused() {
        let r = Rig::new();
        let signing = SigningKey::from_pkcs8_pem(&fs::read_to_string(&r.key).unwrap()).unwrap();
        for bad in [
            "x  1  tuf/a\n",
            "{}  z  tuf/a\n",
            "{}  1  a\n",
            "{}  1  tuf/a/b\n",
        ] {
            let m = bad.replace("{}", &"0".repeat(64));
            let file = SigFile {
                version: VERSION,
                key: r.public.clone(),
                signature: hex::encode(signing.sign(m.as_bytes()).to_bytes()),
                manifest: m,
            };
            fs::write(r.bundle.join(FILE), serde_json::to_vec(&file).unwrap()).unwrap();
            let want = match bad.lines().count() {
                1 => "line 1 of the signed manifest is not",
                _ => "tuf/a is listed twice in the signed manifest",
            };
            r.refused(&r.policy(), want);
        }
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
