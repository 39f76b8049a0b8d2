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
//! [`scan_bundle_commit`] (run by `check` and `install` alike) gives the [`RootfsPlan`]:
//! what the device lacks, which [`super::pull_from_bundle`] then copies.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;

use ostree::glib;
use sha2::{Digest as _, Sha256};

use super::pull::commit_complete;
use super::{is_commit_checksum, open_sysroot};
use crate::core::bundle::Bundle;
use crate::config::Pacman;
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

/// A content object the device lacks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileObj {
    pub csum: Csum,
    /// Its size on the stick (compressed).
    pub stored: u64,
    /// Its size once inflated, from the commit's `ostree.sizes`, when it has one.
    pub unpacked: Option<u64>,
}

/// What installing one commit from the bundle takes.
#[derive(Debug, Clone, Default)]
pub struct RootfsPlan {
    pub commit: String,
    /// The device's repo already holds the whole commit: nothing to read or copy.
    pub complete: bool,
    /// Directory objects the device lacks (the commit is always written, last).
    pub metadata: Vec<(Obj, Csum)>,
    pub files: Vec<FileObj>,
    /// Size on the stick of the missing content objects.
    pub stored_bytes: u64,
    /// Their inflated size, when the commit indexes every one of them.
    pub unpacked_bytes: Option<u64>,
}

/// The scan of `commit` in the bundle (see the module doc), against the device's repo:
/// refusals are 15 (a symlink, a FIFO, a device, an oversized object, a repo that is not
/// an archive), 8 (an object missing), 50 (an object that does not hash to its name, or
/// whose size differs from the commit's index; the medium failing).
pub fn scan_bundle_commit(pacman: &Pacman, bundle: &Bundle, commit: &str) -> Result<RootfsPlan> {
    if !is_commit_checksum(commit) {
        return Err(anyhow::anyhow!("{commit:?} is not an OSTree commit checksum").into());
    }
    let sysroot = open_sysroot(&pacman.sysroot)?;
    let dest = sysroot.repo();
    let dest_path = pacman.sysroot.join("ostree/repo");
    let mut plan = RootfsPlan {
        commit: commit.to_string(),
        ..Default::default()
    };
    if commit_complete(&dest, &dest_path, commit)? {
        plan.complete = true;
        return Ok(plan);
    }
    let repo = StickRepo::open(bundle)?;
    let commit_csum = parse_hex(commit).ok_or_else(|| anyhow::anyhow!("{commit:?}: not hex"))?;
    let commit_v = repo.read_meta(Obj::Commit, &commit_csum)?;
    let sizes = sizes_index(&commit_v);
    let root_tree = repo.csum_child(&commit_v, 6, Obj::Commit, &commit_csum)?;
    let root_meta = repo.csum_child(&commit_v, 7, Obj::Commit, &commit_csum)?;
    let has = |kind: Obj, c: &Csum| -> Result<bool> {
        dest.has_object(kind.ostree_type(), &hex(c), ostree::gio::Cancellable::NONE)
            .map_err(|e| {
                anyhow::anyhow!(
                    "looking up object {} in {}: {}",
                    hex(c),
                    dest_path.display(),
                    e.message()
                )
                .into()
            })
    };
    // Each directory object once, however often the tree shares it.
    let mut seen: HashSet<(Obj, Csum)> = HashSet::new();
    let mut seen_files: HashSet<Csum> = HashSet::new();
    let mut todo = vec![(Obj::DirMeta, root_meta), (Obj::DirTree, root_tree)];
    let mut unpacked_known = true;
    let mut unpacked_total = 0u64;
    while let Some((kind, c)) = todo.pop() {
        if !seen.insert((kind, c)) {
            continue;
        }
        // Read (and verified) even when the device has it: every object of the tree is
        // then known to be well formed, and a dirtree is needed to walk on.
        let v = repo.read_meta(kind, &c)?;
        if !has(kind, &c)? {
            plan.metadata.push((kind, c));
        }
        if kind != Obj::DirTree {
            continue;
        }
        for file in v.child_value(0).iter() {
            let f = repo.csum_child(&file, 1, Obj::DirTree, &c)?;
            if !seen_files.insert(f) || has(Obj::File, &f)? {
                continue;
            }
            let stored = repo.file_size(&f)?;
            let indexed = sizes.as_ref().and_then(|s| s.get(&f)).copied();
            if let Some((archived, unpacked)) = indexed {
                if archived != stored {
                    return Err(repo.corrupt(
                        &object_rel(Obj::File, &f),
                        &format!("has {stored} bytes, the commit's size index says {archived}"),
                    ));
                }
                unpacked_total = unpacked_total.saturating_add(unpacked);
            } else {
                unpacked_known = false;
            }
            plan.stored_bytes = plan.stored_bytes.saturating_add(stored);
            plan.files.push(FileObj {
                csum: f,
                stored,
                unpacked: indexed.map(|(_, u)| u),
            });
        }
        for dir in v.child_value(1).iter() {
            todo.push((Obj::DirMeta, repo.csum_child(&dir, 2, Obj::DirTree, &c)?));
            todo.push((Obj::DirTree, repo.csum_child(&dir, 1, Obj::DirTree, &c)?));
        }
    }
    plan.unpacked_bytes = unpacked_known.then_some(unpacked_total);
    Ok(plan)
}

/// `ostree.sizes` of a commit: content checksum -> (archived, unpacked) size. `None`
/// without an index (most commits: `ostree commit --generate-sizes` makes one) or when it
/// does not parse, which only costs the checks it would allow.
fn sizes_index(commit: &glib::Variant) -> Option<HashMap<Csum, (u64, u64)>> {
    let dict = glib::VariantDict::new(Some(&commit.child_value(0)));
    let aay = glib::VariantTy::new("aay").ok()?;
    let index = dict.lookup_value("ostree.sizes", Some(aay))?;
    let mut out = HashMap::with_capacity(index.n_children());
    for entry in index.iter() {
        let bytes = entry.fixed_array::<u8>().ok()?;
        let csum: Csum = bytes.get(..32)?.try_into().ok()?;
        let (archived, n) = varint(&bytes[32..])?;
        let (unpacked, m) = varint(&bytes[32 + n..])?;
        // A trailing object type: 1 is a content object, the only kind we look up.
        match bytes.get(32 + n + m) {
            None | Some(1) => {
                out.insert(csum, (archived, unpacked));
            }
            Some(_) => {}
        }
    }
    Some(out)
}

/// A LEB128 unsigned varint (what libostree writes in `ostree.sizes`) and its length.
fn varint(bytes: &[u8]) -> Option<(u64, usize)> {
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
pub(super) struct StickRepo<'a> {
    bundle: &'a Bundle,
}

impl<'a> StickRepo<'a> {
    pub(super) fn open(bundle: &'a Bundle) -> Result<StickRepo<'a>> {
        let rel = "ostree_repo/config";
        let repo = StickRepo { bundle };
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
    fn file_size(&self, c: &Csum) -> Result<u64> {
        let rel = object_rel(Obj::File, c);
        let found = self.bundle.tree().expect(&rel, Kind::File);
        found
            .map_err(|r| self.refused(r))?
            .ok_or_else(|| self.missing(&rel))
    }

    /// The checksum in child `i` (an `ay`) of `v`, part of object `of`.
    fn csum_child(&self, v: &glib::Variant, i: usize, kind: Obj, of: &Csum) -> Result<Csum> {
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

    fn missing(&self, rel: &str) -> Error {
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
