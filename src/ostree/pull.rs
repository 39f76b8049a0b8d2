//! Pull one commit from the bundle's `ostree_repo` into the sysroot repo.
//!
//! libostree's own local pull does the work: `ostree_repo_pull_with_options` given a
//! `file://` URL instead of a remote name (what `ostree pull-local` does), so no remote that
//! points at the stick is ever written into the sysroot repo, and a commit asked for by
//! checksum writes no ref. `UNTRUSTED` makes libostree re-checksum every object it imports
//! instead of hardlinking or copying it as is: the TUF-signed commit id is the only anchor.
//!
//! We run the pull inside our own repo transaction (`inherit-transaction`), which gives the
//! exact bytes written on success and lets us abort and clean up on failure ourselves: the
//! staging directory of the failed transaction is removed (libostree keeps it for a resume
//! unless its free-space reserve was hit) and so is the `commitpartial` marker, so a full
//! disk or a corrupted object leaves the repo as it was.

use std::fs;
use std::os::fd::AsRawFd as _;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Instant;

use anyhow::Context as _;
use ostree::gio::prelude::FileExt as _;
use ostree::{gio, glib};
use sha2::Digest as _;

use super::{is_commit_checksum, is_no_space, open_sysroot, SysrootLock};
use crate::config::Pacman;
use crate::error::{Code, Error};

/// How often libostree refreshes the progress while pulling.
const PROGRESS_EVERY_MS: u32 = 200;

/// Where a pull is. The totals are what the sysroot repo lacks, counted before the pull;
/// `bytes_done` is estimated from the object count (libostree reports objects, not bytes,
/// for a local pull), so use it for a percentage, not as an exact figure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct PullProgress {
    pub objects_done: u64,
    pub objects_total: u64,
    pub bytes_done: u64,
    /// Size of the missing objects as stored in the bundle (compressed for an archive repo).
    pub bytes_total: u64,
}

impl PullProgress {
    /// 0..=100.
    pub fn percent(&self) -> u8 {
        if self.objects_total == 0 {
            return 100;
        }
        (self.objects_done.min(self.objects_total) * 100 / self.objects_total) as u8
    }
}

/// What a pull did.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize)]
pub struct PullStats {
    /// The commit was already complete in the sysroot repo: nothing was read or written.
    pub skipped: bool,
    /// Objects written to the sysroot repo (metadata and content).
    pub objects: u64,
    /// Content bytes written (libostree's transaction statistics).
    pub bytes: u64,
    pub seconds: f64,
}

/// Whether the repo has `commit` with its whole tree (not a partial or commit-only pull).
/// `name` is the repo's path for messages (libostree only knows the sysroot repo by fd).
pub(super) fn commit_complete(
    repo: &ostree::Repo,
    name: &Path,
    commit: &str,
) -> anyhow::Result<bool> {
    let has = repo
        .has_object(ostree::ObjectType::Commit, commit, gio::Cancellable::NONE)
        .with_context(|| format!("looking up commit {commit} in {}", name.display()))?;
    if !has {
        return Ok(false);
    }
    let (_, state) = repo
        .load_commit(commit)
        .with_context(|| format!("loading commit {commit} from {}", name.display()))?;
    Ok(!state.intersects(ostree::RepoCommitState::PARTIAL | ostree::RepoCommitState::FSCK_PARTIAL))
}

/// The commit object in `repo` hashes to its name: the last check that the sysroot holds
/// exactly the TUF target, independent of how it got there.
fn verify_commit_checksum(repo: &ostree::Repo, name: &Path, commit: &str) -> anyhow::Result<()> {
    let (variant, _) = repo
        .load_commit(commit)
        .with_context(|| format!("loading commit {commit} from {}", name.display()))?;
    let actual = hex::encode(sha2::Sha256::digest(variant.data()));
    if actual != commit {
        anyhow::bail!(
            "commit object {commit} in {} hashes to {actual}",
            name.display()
        );
    }
    Ok(())
}

/// Pull `commit` with its full tree from the repo at `bundle_repo` (any mode; an archive on
/// the stick) into the sysroot repo, verifying every object, reporting progress through
/// `progress` (called on this thread). Skipped when the commit is already complete.
///
/// Errors: a commit absent from the bundle is [`Code::ContentMissing`] (8); a full disk or
/// libostree's free-space reserve is [`Code::NoSpace`] (60); any other pull failure (an
/// object whose content does not match its name, a missing object, an I/O error on the
/// medium) is [`Code::Copy`] (50). In all of these the sysroot repo is left as it was:
/// transaction aborted, its staging directory and the commit's partial marker removed, no
/// ref, no remote. Failing to open the sysroot is an internal error (1).
pub fn pull_from_bundle(
    pacman: &Pacman,
    bundle_repo: &Path,
    commit: &str,
    progress: &mut dyn FnMut(PullProgress),
) -> crate::Result<PullStats> {
    if !is_commit_checksum(commit) {
        return Err(anyhow::anyhow!("{commit:?} is not an OSTree commit checksum").into());
    }
    let start = Instant::now();
    let sysroot_path = pacman.sysroot.clone();
    let bundle = std::path::absolute(bundle_repo)
        .with_context(|| format!("resolving {}", bundle_repo.display()))?;
    let commit = commit.to_string();
    let (tx, rx) = mpsc::channel::<Msg>();
    // libostree drives a local pull from a main loop on the calling thread and reports
    // progress from it; the pull runs on its own thread with its own main context so that the
    // caller's callback (not 'static, not Send) is called here, as messages arrive.
    let worker = std::thread::Builder::new()
        .name("ostree-pull".into())
        .spawn(move || {
            let done = tx.clone();
            let ctx = glib::MainContext::new();
            let result = ctx
                .with_thread_default(|| pull_in_thread(&sysroot_path, &bundle, &commit, tx))
                .unwrap_or_else(|e| {
                    Err(anyhow::anyhow!("acquiring a main context for the pull: {e}").into())
                });
            let _ = done.send(Msg::Done(result));
        })
        .context("starting the pull thread")?;
    let mut result = None;
    for msg in rx {
        match msg {
            Msg::Progress(p) => progress(p),
            Msg::Done(r) => {
                result = Some(r);
                break;
            }
        }
    }
    let _ = worker.join();
    let mut stats =
        result.unwrap_or_else(|| Err(anyhow::anyhow!("the pull thread died").into()))?;
    stats.seconds = start.elapsed().as_secs_f64();
    Ok(stats)
}

enum Msg {
    Progress(PullProgress),
    Done(crate::Result<PullStats>),
}

/// What the sysroot repo lacks of the commit: counted from the bundle before pulling.
#[derive(Default)]
struct Plan {
    objects: u64,
    bytes: u64,
}

fn plan(bundle: &ostree::Repo, dest: &ostree::Repo, commit: &str) -> Result<Plan, glib::Error> {
    let none = gio::Cancellable::NONE;
    let mut plan = Plan::default();
    for obj in bundle.traverse_commit(commit, 0, none)? {
        if dest.has_object(obj.object_type(), obj.checksum(), none)? {
            continue;
        }
        plan.objects += 1;
        plan.bytes += bundle.query_object_storage_size(obj.object_type(), obj.checksum(), none)?;
    }
    Ok(plan)
}

fn pull_in_thread(
    sysroot_path: &Path,
    bundle_path: &Path,
    commit: &str,
    tx: mpsc::Sender<Msg>,
) -> crate::Result<PullStats> {
    let none = gio::Cancellable::NONE;
    let sysroot = open_sysroot(sysroot_path)?;
    let repo = sysroot.repo();
    let dest_path = sysroot_path.join("ostree/repo");
    let dest = dest_path.display();
    if commit_complete(&repo, &dest_path, commit)? {
        verify_commit_checksum(&repo, &dest_path, commit)?;
        tracing::info!("commit {commit} already in {dest}: nothing to pull");
        let _ = tx.send(Msg::Progress(PullProgress::default()));
        return Ok(PullStats {
            skipped: true,
            ..Default::default()
        });
    }
    let medium = |what: &str, e: &dyn std::fmt::Display| {
        Error::new(Code::Copy, format!("{what} {}: {e}", bundle_path.display()))
    };
    let bundle = ostree::Repo::new_for_path(bundle_path);
    bundle
        .open(none)
        .map_err(|e| medium("cannot open the OSTree repo", &e))?;
    let has = bundle
        .has_object(ostree::ObjectType::Commit, commit, none)
        .map_err(|e| medium("cannot read the OSTree repo", &e))?;
    if !has {
        return Err(Error::new(
            Code::ContentMissing,
            format!(
                "commit {commit} is not in the bundle's OSTree repo {}",
                bundle_path.display()
            ),
        ));
    }
    let plan = plan(&bundle, &repo, commit)
        .map_err(|e| medium(&format!("cannot read the tree of commit {commit} in"), &e))?;
    tracing::info!(
        "pulling commit {commit}: {} objects, {} bytes in {} missing from {dest}",
        plan.objects,
        plan.bytes,
        bundle_path.display()
    );

    let _lock = SysrootLock::acquire(&sysroot, sysroot_path)?;
    // A staging directory left by a pull that was killed would be resumed by libostree, its
    // objects trusted as they are on disk; after a power cut they may not be. Start afresh:
    // re-reading from the stick is cheap, and every object gets verified.
    match remove_staging_dirs(sysroot_path) {
        Ok(0) => {}
        Ok(n) => tracing::info!("removed {n} interrupted transaction(s) from {dest}"),
        Err(e) => tracing::warn!("{e:#}"),
    }
    let async_progress = ostree::AsyncProgress::new();
    let (total, total_bytes) = (plan.objects, plan.bytes);
    let ptx = tx.clone();
    async_progress.connect_changed(move |p| {
        let done = u64::from(p.uint("metadata-fetched-localcache"))
            + u64::from(p.uint("content-fetched-localcache"))
            + u64::from(p.uint("fetched"));
        let done = done.min(total);
        let bytes_done = if total == 0 {
            total_bytes
        } else {
            ((u128::from(total_bytes) * u128::from(done)) / u128::from(total)) as u64
        };
        let _ = ptx.send(Msg::Progress(PullProgress {
            objects_done: done,
            objects_total: total,
            bytes_done,
            bytes_total: total_bytes,
        }));
    });

    let _ = tx.send(Msg::Progress(PullProgress {
        objects_done: 0,
        objects_total: total,
        bytes_done: 0,
        bytes_total: total_bytes,
    }));
    let url = gio::File::for_path(bundle_path).uri().to_string();
    let options = glib::VariantDict::new(None);
    options.insert("refs", vec![commit.to_string()]);
    options.insert("flags", ostree::RepoPullFlags::UNTRUSTED.bits() as i32);
    options.insert("inherit-transaction", true);
    options.insert("gpg-verify", false);
    options.insert("gpg-verify-summary", false);
    options.insert("disable-static-deltas", true);
    options.insert("update-frequency", PROGRESS_EVERY_MS);
    let options = options.end();

    let failed = |e: glib::Error, repo: &ostree::Repo| -> Error {
        let _ = repo.abort_transaction(none);
        let removed = remove_staging_dirs(sysroot_path);
        remove_partial_marker(repo, sysroot_path, commit);
        if let Err(err) = removed {
            tracing::warn!("{err:#}");
        }
        let msg = format!(
            "pulling commit {commit} from {} into {dest}: {}",
            bundle_path.display(),
            e.message()
        );
        if is_no_space(&e) {
            Error::new(Code::NoSpace, msg)
        } else if ["Input/output error", "Cannot allocate memory"]
            .iter()
            .any(|m| e.message().contains(m))
        {
            Error::new(Code::Copy, format!("{msg}: was the stick removed?"))
        } else {
            Error::new(Code::Copy, msg)
        }
    };
    // Fault tests pull the stick or fill the disk here: the plan read the commit's tree.
    crate::failpoint::pause("pull-rootfs");
    repo.prepare_transaction(none)
        .map_err(|e| failed(e, &repo))?;
    if let Err(e) = repo.pull_with_options(&url, &options, Some(&async_progress), none) {
        return Err(failed(e, &repo));
    }
    let stats = repo
        .commit_transaction(none)
        .map_err(|e| failed(e, &repo))?;
    async_progress.finish();
    let _ = tx.send(Msg::Progress(PullProgress {
        objects_done: total,
        objects_total: total,
        bytes_done: total_bytes,
        bytes_total: total_bytes,
    }));

    if !commit_complete(&repo, &dest_path, commit)? {
        return Err(anyhow::anyhow!(
            "commit {commit} is not complete in {dest} after pulling it from {}",
            bundle_path.display()
        )
        .into());
    }
    verify_commit_checksum(&repo, &dest_path, commit)?;
    Ok(PullStats {
        skipped: false,
        objects: (stats.get_metadata_objects_written() + stats.get_content_objects_written())
            as u64,
        bytes: stats.get_content_bytes_written(),
        seconds: 0.0,
    })
}

/// Remove the repo's transaction staging directories (`tmp/staging-*`) that nobody holds:
/// libostree keeps the one of the current boot after a failed pull so that a retry can
/// resume, which after a full disk is exactly the space we must give back. The lock
/// protocol is libostree's: an exclusive fcntl lock on `<dir>-lock` next to the directory.
pub fn remove_staging_dirs(sysroot: &Path) -> anyhow::Result<usize> {
    let tmp = sysroot.join("ostree/repo/tmp");
    let entries = fs::read_dir(&tmp).with_context(|| format!("listing {}", tmp.display()))?;
    let mut removed = 0;
    for entry in entries {
        let entry = entry.with_context(|| format!("listing {}", tmp.display()))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !name.starts_with("staging-") || name.ends_with("-lock") {
            continue;
        }
        let dir = entry.path();
        if !fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir()) {
            continue;
        }
        let lock_path = tmp.join(format!("{name}-lock"));
        let Some(lock) = try_lock_exclusive(&lock_path)? else {
            continue;
        };
        fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
        let _ = fs::remove_file(&lock_path);
        drop(lock);
        removed += 1;
    }
    Ok(removed)
}

/// An exclusive open-file-description lock on `path` (created if needed), or `None` when
/// someone else holds it.
fn try_lock_exclusive(path: &PathBuf) -> anyhow::Result<Option<fs::File>> {
    use nix::fcntl::{fcntl, FcntlArg};
    use nix::libc;
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    // SAFETY: flock is plain old data; all-zero is a valid value before we set the fields.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = libc::F_WRLCK as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    match fcntl(file.as_raw_fd(), FcntlArg::F_OFD_SETLK(&fl)) {
        Ok(_) => Ok(Some(file)),
        Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EACCES) => Ok(None),
        Err(e) => Err(e).with_context(|| format!("locking {}", path.display())),
    }
}

/// libostree marks a commit partial (`state/<commit>.commitpartial`) when the pull starts;
/// without the commit object the marker means nothing, so a failed pull drops it too.
fn remove_partial_marker(repo: &ostree::Repo, sysroot: &Path, commit: &str) {
    let has = repo
        .has_object(ostree::ObjectType::Commit, commit, gio::Cancellable::NONE)
        .unwrap_or(true);
    if !has {
        let marker = sysroot.join(format!("ostree/repo/state/{commit}.commitpartial"));
        if let Err(e) = fs::remove_file(&marker) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!("removing {}: {e}", marker.display());
            }
        }
    }
}
