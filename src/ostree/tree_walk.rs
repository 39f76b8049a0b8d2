//! One walk of a commit's tree in the bundle's repo, from the TUF-signed commit down, over
//! metadata objects verified as they are read: what the scan counts and what the pull
//! copies, in the same order and by the same rules, so the scan's totals are the pull's.
//!
//! Nothing here grows with the number of files: the walk keeps the directories it has
//! entered (a tree that shares a subtree many times is walked once, not exponentially)
//! and, when the commit has an `ostree.sizes` index, one bit per indexed object (a file
//! that several paths share counts once) and the index's order (12 bytes per object).
//! Without an index a shared file counts once per path: the totals are then an upper
//! bound, which only the progress shows.

use std::collections::HashSet;

use ostree::glib;

use super::stick_repo::{hex, object_rel, parse_hex, varint, Csum, Obj, StickRepo};
use super::{commit_complete, is_commit_checksum, open_sysroot};
use crate::config::Pacman;
use crate::core::bundle::Bundle;
use crate::error::Result;

/// A content object of the tree that the device lacks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileObj {
    pub csum: Csum,
    /// Its size on the stick and inflated, from the commit's `ostree.sizes`, when indexed.
    pub indexed: Option<(u64, u64)>,
}

/// What the walk meets, in order: each directory object the device lacks (its bytes
/// verified), then the files it lists that the device lacks.
pub(super) enum Step {
    Meta(Obj, Csum, glib::Variant),
    File(FileObj),
}

/// The commit object (verified) and the walk's state.
pub(super) struct TreeWalk<'a> {
    repo: &'a StickRepo<'a>,
    commit: Csum,
    commit_v: glib::Variant,
    sizes: Option<SizeIndex>,
}

impl<'a> TreeWalk<'a> {
    /// Read and verify commit `commit` (hex) of the bundle.
    pub(super) fn new(repo: &'a StickRepo<'a>, commit: &str) -> Result<TreeWalk<'a>> {
        let csum = parse_hex(commit).ok_or_else(|| anyhow::anyhow!("{commit:?}: not hex"))?;
        let commit_v = repo.read_meta(Obj::Commit, &csum)?;
        let sizes = SizeIndex::of(&commit_v);
        Ok(TreeWalk {
            repo,
            commit: csum,
            commit_v,
            sizes,
        })
    }

    /// The commit object, to be written last.
    pub(super) fn commit(&self) -> (&Csum, &glib::Variant) {
        (&self.commit, &self.commit_v)
    }

    /// Does the commit index every object's size?
    pub(super) fn indexed(&self) -> bool {
        self.sizes.is_some()
    }

    /// Walk the tree: `lacks` says whether the device lacks an object, `each` takes every
    /// [`Step`]; an `Err` from either ends the walk.
    pub(super) fn run(
        &self,
        lacks: &mut dyn FnMut(Obj, &Csum) -> Result<bool>,
        each: &mut dyn FnMut(Step) -> Result<()>,
    ) -> Result<()> {
        let (commit, repo) = (&self.commit, self.repo);
        let root_tree = repo.csum_child(&self.commit_v, 6, Obj::Commit, commit)?;
        let root_meta = repo.csum_child(&self.commit_v, 7, Obj::Commit, commit)?;
        // One bit per indexed file: set once it was counted.
        let mut counted = self
            .sizes
            .as_ref()
            .map(|s| vec![0u64; s.len().div_ceil(64)]);
        let mut seen: HashSet<(Obj, Csum)> = HashSet::new();
        let mut todo = vec![(Obj::DirMeta, root_meta), (Obj::DirTree, root_tree)];
        while let Some((kind, c)) = todo.pop() {
            if !seen.insert((kind, c)) {
                continue;
            }
            // Read (and verified) even when the device has it: every object of the tree is
            // then known to be well formed, and a dirtree is needed to walk on.
            let v = repo.read_meta(kind, &c)?;
            let is_tree = kind == Obj::DirTree;
            if lacks(kind, &c)? {
                each(Step::Meta(kind, c, v.clone()))?;
            }
            if !is_tree {
                continue;
            }
            for file in v.child_value(0).iter() {
                let f = repo.csum_child(&file, 1, Obj::DirTree, &c)?;
                if !lacks(Obj::File, &f)? {
                    continue;
                }
                let found = self.sizes.as_ref().and_then(|s| s.find(&f));
                let indexed = match (found, &mut counted) {
                    (Some((at, archived, unpacked)), Some(counted)) => {
                        let (word, bit) = (at / 64, 1u64 << (at % 64));
                        if counted[word] & bit != 0 {
                            continue;
                        }
                        counted[word] |= bit;
                        Some((archived, unpacked))
                    }
                    _ => None,
                };
                each(Step::File(FileObj { csum: f, indexed }))?;
            }
            for dir in v.child_value(1).iter() {
                todo.push((Obj::DirMeta, repo.csum_child(&dir, 2, Obj::DirTree, &c)?));
                todo.push((Obj::DirTree, repo.csum_child(&dir, 1, Obj::DirTree, &c)?));
            }
        }
        Ok(())
    }
}

/// `ostree.sizes` of a commit (content checksum -> size archived and inflated), searched
/// in place: the entries stay in the commit object, this keeps their order by checksum.
struct SizeIndex {
    entries: glib::Variant,
    /// (first 8 bytes of the checksum, entry number), sorted.
    order: Vec<(u64, u32)>,
}

impl SizeIndex {
    /// `None` without an index (`ostree commit --generate-sizes` makes one), or when it
    /// does not parse: that only costs the checks it would allow.
    fn of(commit: &glib::Variant) -> Option<SizeIndex> {
        let dict = glib::VariantDict::new(Some(&commit.child_value(0)));
        let aay = glib::VariantTy::new("aay").ok()?;
        let entries = dict.lookup_value("ostree.sizes", Some(aay))?;
        let n = u32::try_from(entries.n_children()).ok()?;
        let mut order = Vec::with_capacity(n as usize);
        for i in 0..n {
            let (csum, _, _, content) = entry(&entries, i as usize)?;
            if !content {
                continue;
            }
            let mut prefix = [0u8; 8];
            prefix.copy_from_slice(&csum[..8]);
            order.push((u64::from_be_bytes(prefix), i));
        }
        order.sort_unstable();
        Some(SizeIndex { entries, order })
    }

    fn len(&self) -> usize {
        self.order.len()
    }

    /// Where `c` is in [`SizeIndex::order`], with its sizes.
    fn find(&self, c: &Csum) -> Option<(usize, u64, u64)> {
        let mut prefix = [0u8; 8];
        prefix.copy_from_slice(&c[..8]);
        let key = u64::from_be_bytes(prefix);
        let from = self.order.partition_point(|(p, _)| *p < key);
        self.order[from..]
            .iter()
            .take_while(|(p, _)| *p == key)
            .enumerate()
            .find_map(|(k, (_, i))| {
                let (csum, archived, unpacked, _) = entry(&self.entries, *i as usize)?;
                (csum == *c).then_some((from + k, archived, unpacked))
            })
    }
}

/// Entry `i` of the index: a checksum, two LEB128 sizes and an optional object type; with
/// whether it is a content object (type 1, or none given), the only kind looked up.
fn entry(entries: &glib::Variant, i: usize) -> Option<(Csum, u64, u64, bool)> {
    let v = entries.try_child_value(i)?;
    let bytes = v.fixed_array::<u8>().ok()?;
    let csum: Csum = bytes.get(..32)?.try_into().ok()?;
    let (archived, n) = varint(&bytes[32..])?;
    let (unpacked, m) = varint(&bytes[32 + n..])?;
    let content = matches!(bytes.get(32 + n + m), None | Some(1));
    Some((csum, archived, unpacked, content))
}

/// What installing one commit from the bundle takes: totals only (the pull walks the tree
/// again, [`super::tree_walk`]), so it does not grow with the commit.
#[derive(Debug, Clone, Default)]
pub struct RootfsPlan {
    pub commit: String,
    /// The device's repo already holds the whole commit: nothing to read or copy.
    pub complete: bool,
    /// Directory objects the device lacks (the commit is always written, last).
    pub metadata: u64,
    /// Content objects the device lacks (see [`super::tree_walk`] on shared files).
    pub files: u64,
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
    let walk = TreeWalk::new(&repo, commit)?;
    let mut unpacked_known = walk.indexed();
    let mut unpacked_total = 0u64;
    walk.run(
        &mut |kind, c| lacks(&dest, &dest_path, kind, c),
        &mut |step| {
            match step {
                Step::Meta(..) => plan.metadata += 1,
                Step::File(f) => {
                    let stored = repo.file_size(&f.csum)?;
                    if let Some((archived, unpacked)) = f.indexed {
                        if archived != stored {
                            return Err(repo.corrupt(
                                &object_rel(Obj::File, &f.csum),
                                &format!(
                                    "has {stored} bytes, the commit's size index says {archived}"
                                ),
                            ));
                        }
                        unpacked_total = unpacked_total.saturating_add(unpacked);
                    } else {
                        unpacked_known = false;
                    }
                    plan.files += 1;
                    plan.stored_bytes = plan.stored_bytes.saturating_add(stored);
                }
            }
            Ok(())
        },
    )?;
    plan.unpacked_bytes = unpacked_known.then_some(unpacked_total);
    Ok(plan)
}

/// Does `repo` (the device's, at `path`) lack object `c`?
pub(super) fn lacks(
    repo: &ostree::Repo,
    path: &std::path::Path,
    kind: Obj,
    c: &Csum,
) -> Result<bool> {
    repo.has_object(kind.ostree_type(), &hex(c), ostree::gio::Cancellable::NONE)
        .map(|has| !has)
        .map_err(|e| {
            anyhow::anyhow!(
                "looking up object {} in {}: {}",
                hex(c),
                path.display(),
                e.message()
            )
            .into()
        })
}
