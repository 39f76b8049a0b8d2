//! The bundle's `ostree_repo/`, read by us, never by libostree: libostree would open it
//! itself, follow its symlinks, block on its FIFOs, read its files whole and quote them in
//! its errors. Every file goes through [`crate::hostile_fs`] with the bundle's rules, and
//! every byte that drives anything is checked first:
//!
//! - `config` (at most [`CONFIG_CAP`]) must say an archive repo, what fioctl bundles hold:
//!   their objects are plain files (symlinks of the tree are `.filez` files too), so nothing
//!   in a bundle's repo is legitimately a symlink;
//! - metadata objects are read whole, capped by kind, and must hash to the checksum that
//!   names them, the commit to the TUF-signed one: the tree is walked from trusted bytes only;
//! - content objects are looked at (`O_PATH`, type and size) but not read here; with the
//!   commit's own `ostree.sizes` index, their size on the stick must be the indexed one.
//!
//! [`super::scan_bundle_commit`] (run by `check` and `install` alike, in
//! [`super::tree_walk`]) gives the [`super::RootfsPlan`]: what the device lacks, which
//! [`super::pull_from_bundle`] then copies.

use std::fmt::Write as _;

use ostree::glib;
use sha2::{Digest as _, Sha256};

use crate::core::bundle::Bundle;
use crate::error::{Code, Error, Result};
use crate::hostile_fs::{Kind, Refused};

/// Largest `ostree_repo/config` read (a few hundred bytes in a real one).
pub(crate) const CONFIG_CAP: u64 = 64 << 10;
/// Largest commit object (its `ostree.sizes` index grows ~40 bytes per object).
pub(crate) const COMMIT_CAP: u64 = 16 << 20;
/// Largest dirtree object (~70 bytes per entry of one directory).
pub(crate) const DIRTREE_CAP: u64 = 16 << 20;
/// Largest dirmeta object (owner, mode and xattrs of one directory).
pub(crate) const DIRMETA_CAP: u64 = 1 << 20;

/// A SHA-256 object checksum, raw.
pub(crate) type Csum = [u8; 32];

/// The kinds of object a commit's tree is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Obj {
    Commit,
    DirTree,
    DirMeta,
    File,
}

impl Obj {
    fn ext(self) -> &'static str {
        match self {
            Obj::Commit => "commit",
            Obj::DirTree => "dirtree",
            Obj::DirMeta => "dirmeta",
            Obj::File => "filez",
        }
    }

    fn cap(self) -> u64 {
        match self {
            Obj::Commit => COMMIT_CAP,
            Obj::DirTree => DIRTREE_CAP,
            Obj::DirMeta => DIRMETA_CAP,
            Obj::File => u64::MAX,
        }
    }

    pub(super) fn ostree_type(self) -> ostree::ObjectType {
        match self {
            Obj::Commit => ostree::ObjectType::Commit,
            Obj::DirTree => ostree::ObjectType::DirTree,
            Obj::DirMeta => ostree::ObjectType::DirMeta,
            Obj::File => ostree::ObjectType::File,
        }
    }

    pub(super) fn variant_type(self) -> &'static glib::VariantTy {
        let t = match self {
            Obj::Commit => "(a{sv}aya(say)sstayay)",
            Obj::DirTree => "(a(say)a(sayay))",
            Obj::DirMeta => "(uuua(ayay))",
            Obj::File => "(tuuuusa(ayay))",
        };
        glib::VariantTy::new(t).unwrap_or(glib::VariantTy::ANY)
    }
}

pub fn hex(c: &Csum) -> String {
    let mut s = String::with_capacity(64);
    for b in c {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// `ostree_repo/objects/<2 hex>/<62 hex>.<ext>`, relative to the bundle.
pub(crate) fn object_rel(kind: Obj, c: &Csum) -> String {
    let h = hex(c);
    format!("ostree_repo/objects/{}/{}.{}", &h[..2], &h[2..], kind.ext())
}

pub(super) fn parse_hex(s: &str) -> Option<Csum> {
    let bytes = hex::decode(s).ok()?;
    bytes.try_into().ok()
}

/// A LEB128 unsigned varint (what libostree writes in `ostree.sizes`) and its length.
pub(super) fn varint(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut v = 0u64;
    for (i, b) in bytes.iter().enumerate().take(10) {
        v |= u64::from(b & 0x7f).checked_shl(7 * i as u32)?;
        if b & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

/// The bundle's repo, checked to be an archive repo.
#[derive(Clone, Copy)]
pub(super) struct StickRepo<'a> {
    bundle: &'a Bundle,
    /// Every object was found by a scan before: one not found now is the medium failing
    /// (a FAT stick pulled answers lookups with ENOENT), not the bundle lacking it.
    scanned: bool,
}

impl<'a> StickRepo<'a> {
    pub(super) fn open(bundle: &'a Bundle) -> Result<StickRepo<'a>> {
        let rel = "ostree_repo/config";
        let repo = StickRepo {
            bundle,
            scanned: false,
        };
        let bytes = bundle
            .tree()
            .read_capped(rel, CONFIG_CAP)
            .map_err(|r| repo.refused(r))?
            .ok_or_else(|| repo.invalid(rel, "is missing: not an OSTree repo"))?;
        let text = std::str::from_utf8(&bytes)
            .map_err(|_| repo.invalid(rel, "is not an OSTree repo config"))?;
        match core_mode(text) {
            Some("archive-z2" | "archive") => Ok(repo),
            Some(m @ ("bare" | "bare-user" | "bare-user-only" | "bare-split-xattrs")) => Err(repo
                .invalid(
                    rel,
                    &format!(
                        "says repo mode {m}: a bundle's repo must be an archive repo, as \
                         fioctl writes it"
                    ),
                )),
            Some(_) => Err(repo.invalid(rel, "names an unknown repo mode")),
            None => Err(repo.invalid(rel, "is not an OSTree repo config (no [core] mode)")),
        }
    }

    /// Metadata object `c`, read whole (capped by kind), verified to hash to `c`.
    pub(super) fn read_meta(&self, kind: Obj, c: &Csum) -> Result<glib::Variant> {
        let rel = object_rel(kind, c);
        let bytes = self
            .bundle
            .tree()
            .read_capped(&rel, kind.cap())
            .map_err(|r| self.refused(r))?
            .ok_or_else(|| self.missing(&rel))?;
        if Sha256::digest(&bytes).as_slice() != c {
            return Err(self.corrupt(&rel, "does not match its checksum"));
        }
        Ok(glib::Variant::from_data_with_type(
            bytes,
            kind.variant_type(),
        ))
    }

    /// Content object `rel`, opened for reading.
    pub(super) fn open_file(&self, rel: &str) -> Result<(std::fs::File, u64)> {
        self.bundle
            .tree()
            .open_file(rel)
            .map_err(|r| self.refused(r))?
            .ok_or_else(|| self.missing(rel))
    }

    /// The size on the stick of content object `c`, a regular file.
    pub(super) fn file_size(&self, c: &Csum) -> Result<u64> {
        let rel = object_rel(Obj::File, c);
        let found = self.bundle.tree().expect(&rel, Kind::File);
        found
            .map_err(|r| self.refused(r))?
            .ok_or_else(|| self.missing(&rel))
    }

    /// The checksum in child `i` (an `ay`) of `v`, part of object `of`.
    pub(super) fn csum_child(
        &self,
        v: &glib::Variant,
        i: usize,
        kind: Obj,
        of: &Csum,
    ) -> Result<Csum> {
        v.try_child_value(i)
            .and_then(|c| c.fixed_array::<u8>().ok().and_then(|b| b.try_into().ok()))
            .ok_or_else(|| {
                self.invalid(
                    &object_rel(kind, of),
                    &format!("is not a valid {} object", kind.ext()),
                )
            })
    }

    pub(super) fn refused(&self, r: Refused) -> Error {
        self.bundle.refusal(r)
    }

    fn invalid(&self, rel: &str, what: &str) -> Error {
        self.bundle.invalid(rel, what)
    }

    /// The repo once [`super::scan_bundle_commit`] found every object of the commit in it.
    pub(super) fn scanned(self) -> StickRepo<'a> {
        StickRepo {
            scanned: true,
            ..self
        }
    }

    fn missing(&self, rel: &str) -> Error {
        if self.scanned {
            return Error::copy(format!(
                "bundle {}: {rel}: the medium cannot be read (found when the bundle was \
                 checked, not found now): was the stick removed?",
                self.bundle.path().display()
            ));
        }
        Error::new(
            Code::ContentMissing,
            format!(
                "bundle {}: {rel} is missing from the bundle's OSTree repo",
                self.bundle.path().display()
            ),
        )
    }

    pub(super) fn corrupt(&self, rel: &str, what: &str) -> Error {
        Error::copy(format!(
            "bundle {}: {rel} {what}",
            self.bundle.path().display()
        ))
    }
}

/// `mode` of the `[core]` group of a GKeyFile-style repo config.
fn core_mode(text: &str) -> Option<&str> {
    let mut in_core = false;
    for line in text.lines().map(str::trim) {
        if let Some(group) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            in_core = group.trim() == "core";
        } else if in_core {
            if let Some((k, v)) = line.split_once('=') {
                if k.trim() == "mode" {
                    return Some(v.trim());
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_modes() {
        assert_eq!(
            core_mode("[core]\nrepo_version=1\nmode=archive-z2\n"),
            Some("archive-z2")
        );
        assert_eq!(
            core_mode("[other]\nmode=bare\n[core]\n mode = bare \n"),
            Some("bare")
        );
        assert_eq!(core_mode("[remote \"x\"]\nmode=archive\n"), None);
        assert_eq!(core_mode("root:$6$salt$hash:19000:0:99999:7:::\n"), None);
    }

    #[test]
    fn varints_and_hex() {
        assert_eq!(varint(&[0x05]), Some((5, 1)));
        assert_eq!(varint(&[0x96, 0x01, 0xff]), Some((150, 2)));
        assert_eq!(varint(&[0x80; 11]), None);
        assert_eq!(varint(&[]), None);
        let c = [0xabu8; 32];
        assert_eq!(hex(&c), "ab".repeat(32));
        assert_eq!(parse_hex(&hex(&c)), Some(c));
        assert_eq!(
            object_rel(Obj::DirTree, &c),
            format!("ostree_repo/objects/ab/{}.dirtree", "ab".repeat(31))
        );
    }
}
