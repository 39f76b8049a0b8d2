//! The bundle's `tuf/`, read once into memory: the operator signature and the TUF verifier
//! judge the same bytes, whatever the stick serves on a second read.
//!
//! Every entry must be a regular file (opened through [`Bundle::open_file`]: beneath the
//! bundle, no symlink) with a printable UTF-8 name; there are at most [`MAX_ENTRIES`] of
//! them, each within its cap, [`MAX_TOTAL`] bytes in all. With a signed manifest, the
//! listing is compared with the manifest's names, and each file's size (from `fstat`) with
//! the signed size, before a byte of it is read; its hash after.

use std::collections::BTreeMap;
use std::io::Read as _;

use crate::core::bundle::{Bundle, META_CAP, TARGETS_CAP};
use crate::core::signature::Manifest;
use crate::error::{Code, Error, Result};
use crate::tuf::MetaSource;

/// Entries `tuf/` may hold: a bundle has its roots and five files; a factory rotating its
/// root keys every week for 20 years has about 1,000 roots.
pub(crate) const MAX_ENTRIES: usize = 4096;
/// All of `tuf/`: the largest `targets.json` and as much again for everything else.
pub(crate) const MAX_TOTAL: u64 = TARGETS_CAP + (16 << 20);

/// The regular files of `tuf/`, by name.
#[derive(Debug, Default)]
pub struct TufDir {
    files: BTreeMap<String, Vec<u8>>,
}

/// The cap of one file of `tuf/`.
pub(crate) fn cap_of(name: &str) -> u64 {
    if name == "targets.json" {
        TARGETS_CAP
    } else {
        META_CAP
    }
}

/// Problems with `bundle-targets.json` are "invalid bundle metadata" (15); with the other
/// files, a metadata update failure (4).
fn too_large(name: &str, cap: u64) -> Error {
    let msg = format!("tuf/{name}: larger than the {cap}-byte limit");
    match name {
        "bundle-targets.json" => Error::invalid_bundle(msg),
        _ => Error::metadata_update(msg),
    }
}

impl TufDir {
    /// Read `tuf/` of `bundle`; with `manifest`, check it against the operator's signed
    /// manifest on the way (names, then sizes before reading, then hashes).
    pub fn read(bundle: &Bundle, manifest: Option<&Manifest>) -> Result<TufDir> {
        let names = Self::list(bundle)?;
        Self::read_listed(bundle, names, manifest)
    }

    /// The names in `tuf/`, at most [`MAX_ENTRIES`], each printable UTF-8.
    pub fn list(bundle: &Bundle) -> Result<Vec<String>> {
        let names = bundle.list_dir("tuf")?.ok_or_else(|| {
            Error::not_found(format!(
                "bundle {}: tuf/ disappeared while it was read",
                bundle.path().display()
            ))
        })?;
        if names.len() > MAX_ENTRIES {
            return Err(bundle.invalid(
                "tuf/",
                &format!(
                    "holds {} entries, more than the {MAX_ENTRIES} a bundle may have",
                    names.len()
                ),
            ));
        }
        for name in &names {
            // `list_dir` makes a name that is not UTF-8 lossy: U+FFFD marks it.
            if name.contains('\u{fffd}') {
                return Err(bundle.invalid(&format!("tuf/{name}"), "has a name that is not UTF-8"));
            }
            if name.chars().any(char::is_control) {
                return Err(bundle.invalid(
                    &format!("tuf/{}", name.escape_debug()),
                    "has a control character in its name",
                ));
            }
        }
        Ok(names)
    }

    /// Read the files `names` (from [`TufDir::list`]) of `tuf/`, checked against `manifest`.
    pub(crate) fn read_listed(
        bundle: &Bundle,
        names: Vec<String>,
        manifest: Option<&Manifest>,
    ) -> Result<TufDir> {
        if let Some(m) = manifest {
            m.check_names(&names)?;
        }
        let mut files = BTreeMap::new();
        let mut total = 0u64;
        for name in names {
            let rel = format!("tuf/{name}");
            let (f, len) = bundle.open_file(&rel)?.ok_or_else(|| {
                Error::new(
                    Code::Copy,
                    format!("bundle: {rel}: disappeared while tuf/ was read"),
                )
            })?;
            if let Some(m) = manifest {
                m.check_size(&name, len)?;
            }
            let cap = cap_of(&name);
            if len > cap {
                return Err(too_large(&name, cap));
            }
            total += len;
            if total > MAX_TOTAL {
                return Err(Error::metadata_update(format!(
                    "tuf/: more than the {MAX_TOTAL} bytes of metadata a bundle may have"
                )));
            }
            let mut bytes = Vec::with_capacity(len as usize);
            f.take(len + 1)
                .read_to_end(&mut bytes)
                .map_err(|e| Error::new(Code::Copy, format!("bundle: {rel}: read failed: {e}")))?;
            if bytes.len() as u64 != len {
                return Err(Error::new(
                    Code::Copy,
                    format!(
                        "bundle: {rel}: {} bytes read where the file has {len}: it changed while read",
                        bytes.len()
                    ),
                ));
            }
            if let Some(m) = manifest {
                m.check_content(&name, &bytes)?;
            }
            files.insert(name, bytes);
        }
        Ok(TufDir { files })
    }

    /// A `tuf/` from memory (tests, fuzzing).
    #[cfg(any(test, feature = "internals"))]
    pub fn from_files(files: BTreeMap<String, Vec<u8>>) -> TufDir {
        TufDir { files }
    }

    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.files.get(name).map(Vec::as_slice)
    }

    /// Every file, by name.
    pub fn files(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.files.iter().map(|(n, b)| (n.as_str(), b.as_slice()))
    }
}

impl MetaSource for TufDir {
    fn read(&self, name: &str) -> crate::tuf::Result<Option<&[u8]>> {
        Ok(self.get(name))
    }

    /// `N.root.json` with `N` a plain decimal; a name that only looks like one (`02.root.json`,
    /// a number past 2^64) is refused, naming it: the device would never read it.
    fn root_versions(&self) -> crate::tuf::Result<Vec<u64>> {
        let mut out = Vec::new();
        for name in self.files.keys() {
            let Some(n) = name.strip_suffix(".root.json") else {
                continue;
            };
            if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            match n.parse::<u64>() {
                Ok(v) if v.to_string() == n => out.push(v),
                _ => {
                    return Err(crate::tuf::Error::invalid_bundle(format!(
                        "tuf/{name}: not a root file name (N.root.json, N a decimal number \
                         without leading zeros): refused"
                    )))
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundle_with(files: &[(&str, &[u8])]) -> (tempfile::TempDir, Bundle) {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("tuf")).unwrap();
        for (n, b) in files {
            std::fs::write(d.path().join("tuf").join(n), b).unwrap();
        }
        let b = Bundle::open(d.path()).unwrap();
        (d, b)
    }

    #[test]
    fn reads_every_regular_file_once() {
        let (_d, b) = bundle_with(&[("3.root.json", b"{}"), ("timestamp.json", b"{\"t\":1}")]);
        let t = TufDir::read(&b, None).unwrap();
        assert_eq!(t.get("timestamp.json").unwrap(), b"{\"t\":1}");
        assert!(t.get("snapshot.json").is_none());
        assert_eq!(t.root_versions().unwrap(), vec![3]);
        assert_eq!(t.files().count(), 2);
    }

    #[test]
    fn root_names_with_leading_zeros_are_refused_by_name() {
        let (_d, b) = bundle_with(&[
            ("02.root.json", b"{}"),
            ("root.json", b"{}"),
            ("x.root.json", b"{}"),
        ]);
        let e = Error::from(TufDir::read(&b, None).unwrap().root_versions().unwrap_err());
        assert_eq!(e.code(), Code::InvalidBundle);
        assert!(
            e.one_line()
                .starts_with("tuf/02.root.json: not a root file name"),
            "{}",
            e.one_line()
        );
        let (_d, b) = bundle_with(&[("99999999999999999999.root.json", b"{}")]);
        assert!(TufDir::read(&b, None).unwrap().root_versions().is_err());
    }

    #[test]
    fn caps_and_hostile_entries() {
        let big = vec![b' '; META_CAP as usize + 1];
        let (_d, b) = bundle_with(&[("snapshot.json", &big)]);
        let e = TufDir::read(&b, None).unwrap_err();
        assert_eq!(e.code(), Code::MetadataUpdate);
        assert_eq!(
            e.one_line(),
            format!("tuf/snapshot.json: larger than the {META_CAP}-byte limit")
        );
        let (_d, b) = bundle_with(&[("bundle-targets.json", &big)]);
        assert_eq!(
            TufDir::read(&b, None).unwrap_err().code(),
            Code::InvalidBundle
        );
        let (d, b) = bundle_with(&[]);
        std::os::unix::fs::symlink("/etc/hostname", d.path().join("tuf/timestamp.json")).unwrap();
        let e = TufDir::read(&b, None).unwrap_err();
        assert_eq!(e.code(), Code::InvalidBundle);
        assert!(e.one_line().contains("symlink"), "{}", e.one_line());
        std::fs::remove_file(d.path().join("tuf/timestamp.json")).unwrap();
        std::fs::write(d.path().join("tuf/a\u{1}b"), b"x").unwrap();
        let e = TufDir::read(&b, None).unwrap_err();
        assert!(
            e.one_line().contains("control character"),
            "{}",
            e.one_line()
        );
    }

    #[test]
    fn too_many_entries_are_refused_before_any_is_read() {
        let (d, b) = bundle_with(&[]);
        for i in 0..=MAX_ENTRIES {
            std::fs::write(d.path().join(format!("tuf/{i}")), b"").unwrap();
        }
        let e = TufDir::read(&b, None).unwrap_err();
        assert_eq!(e.code(), Code::InvalidBundle);
        assert!(e.one_line().contains("4097 entries"), "{}", e.one_line());
    }
}
