//! Copy one commit from the bundle's `ostree_repo` into the sysroot repo, through our own
//! reader ([`super::stick_repo`]) and libostree's object writers, never libostree's pull:
//! libostree does not open the stick at all.
//!
//! Every object is verified by libostree as it is written: the expected checksum comes from
//! the commit's tree, which [`super::tree_walk`] walks from the TUF-signed commit id over
//! metadata it verifies itself. One thread walks the tree and writes the directory objects;
//! [`WORKERS`] threads inflate and write the content objects it hands them ([`super::import`]),
//! as libostree's own pull writes from a pool: more threads than cores, because each mostly
//! waits on a disk. The declared sizes are bounded before a byte is inflated: by
//! the commit's `ostree.sizes` index when it has one, and always by the free space of the
//! sysroot's filesystem, keeping [`super::import::MARGIN_PERCENT`] % of it free, per object and for the
//! pull as a whole. A decompression bomb costs the device at most that, and only until the
//! transaction is aborted.
//!
//! Everything goes into one repo transaction: on any failure it is aborted and its staging
//! directory removed, so a full disk or a corrupted object leaves the repo as it was; the
//! commit object is written last, once every other object is, so nothing names the commit
//! until its tree is whole. Failures name the object and the class of failure (missing, not
//! a regular file, does not match its checksum, the medium failed, no space), never
//! libostree's own text.

use std::fs;
use std::os::fd::AsRawFd as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use ostree::gio;
use sha2::Digest as _;

use super::import::{Budget, Import};
use super::stick_repo::{Obj, StickRepo};
use super::tree_walk::{lacks, FileObj, RootfsPlan, Step, TreeWalk};
use super::{commit_complete, is_commit_checksum, open_sysroot, SysrootLock};
use crate::config::Pacman;
use crate::core::bundle::Bundle;
use crate::error::Error;
use crate::overlap::Side;

/// How often progress is reported while copying.
const PROGRESS_EVERY: Duration = Duration::from_millis(200);
/// Content objects handed to the workers ahead of them: enough to keep them busy, few
/// enough that the queue costs nothing.
const QUEUE: usize = 64;

/// Where a pull is: objects and their bytes on the stick.
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

/// Copy the commit of `plan` (from [`super::scan_bundle_commit`] on the same bundle) with
/// its full tree into the sysroot repo, reporting progress through `progress`. Skipped when
/// the commit is already complete there.
///
/// Errors: an object missing from the bundle is [`Code::ContentMissing`] (8); an object
/// that is not a regular file is [`Code::InvalidBundle`] (15); a full disk, or declared
/// sizes that do not fit the free space, is [`Code::NoSpace`] (60); an object that does not
/// match its checksum or its declared size, or the medium failing, is [`Code::Copy`] (50).
/// In all of these the sysroot repo is left as it was. Failing to open the sysroot is an
/// internal error (1).
#[cfg(any(test, feature = "internals"))]
pub fn pull_from_bundle(
    pacman: &Pacman,
    bundle: &Bundle,
    plan: &RootfsPlan,
    progress: &mut dyn FnMut(PullProgress),
) -> crate::Result<PullStats> {
    pull_beside(pacman, bundle, plan, progress, &Side::alone())
}

/// [`pull_from_bundle`] beside the apps ([`crate::overlap`]): stopped between two objects
/// once `side` is cancelled, and the transaction committed only if `side` goes ahead;
/// either way aborted, nothing left.
pub fn pull_beside(
    pacman: &Pacman,
    bundle: &Bundle,
    plan: &RootfsPlan,
    progress: &mut dyn FnMut(PullProgress),
    side: &Side,
) -> crate::Result<PullStats> {
    let prologue = crate::failpoint::unit();
    let commit = plan.commit.as_str();
    if !is_commit_checksum(commit) {
        return Err(anyhow::anyhow!("{commit:?} is not an OSTree commit checksum").into());
    }
    let start = Instant::now();
    let sysroot = open_sysroot(&pacman.sysroot)?;
    let repo = sysroot.repo();
    let dest = pacman.sysroot.join("ostree/repo");
    if commit_complete(&repo, &dest, commit)? {
        verify_commit_checksum(&repo, &dest, commit)?;
        tracing::info!(
            "commit {commit} already in {}: nothing to pull",
            dest.display()
        );
        progress(PullProgress::default());
        return Ok(PullStats {
            skipped: true,
            seconds: start.elapsed().as_secs_f64(),
            ..Default::default()
        });
    }
    // Complete when it was scanned, not any more (another tool pruned it): scan again.
    let rescanned;
    let plan = if plan.complete {
        rescanned = super::scan_bundle_commit(pacman, bundle, commit)?;
        &rescanned
    } else {
        plan
    };
    let shown = format!(
        "pulling commit {commit} from {} into {}",
        bundle.path().join("ostree_repo").display(),
        dest.display()
    );
    let context = |e: Error| Error::new(e.code(), format!("{shown}: {}", e.one_line()));
    let _lock = SysrootLock::acquire(&sysroot, &pacman.sysroot)?;
    // A staging directory left by a pull that was killed would be resumed by libostree, its
    // objects trusted as they are on disk; after a power cut they may not be. Start afresh:
    // re-reading from the stick is cheap, and every object gets verified.
    match remove_staging_dirs(&pacman.sysroot) {
        Ok(0) => {}
        Ok(n) => tracing::info!(
            "removed {n} interrupted transaction(s) from {}",
            dest.display()
        ),
        Err(e) => tracing::warn!("{e:#}"),
    }
    tracing::info!(
        "pulling commit {commit}: {} content objects ({} bytes on the stick) and {} directory \
         objects missing from {}",
        plan.files,
        plan.stored_bytes,
        plan.metadata,
        dest.display()
    );
    let mut report = Reporter::new(plan, progress);
    report.send(true);
    drop(prologue);
    // Fault tests pull the stick or fill the disk here: the scan read the commit's tree.
    crate::failpoint::pause("pull-rootfs");
    let prologue = crate::failpoint::unit();
    let stick = StickRepo::open(bundle).map_err(context)?.scanned();
    let budget = Budget::of(&dest).map_err(context)?;
    if let Some(unpacked) = plan.unpacked_bytes {
        budget
            .check(unpacked, "the commit's content")
            .map_err(context)?;
    }
    let main = Import {
        stick,
        repo: repo.clone(),
        dest: &dest,
        budget: &budget,
    };
    let walk = TreeWalk::new(&main.stick, commit).map_err(context)?;
    // What the device had before this pull, as the scan saw it: the transaction's own
    // handle also sees what the pull wrote so far.
    let before = ostree::Repo::new(&gio::File::for_path(&dest));
    before
        .open(gio::Cancellable::NONE)
        .with_context(|| format!("opening {}", dest.display()))?;
    let none = gio::Cancellable::NONE;
    let transaction = repo
        .prepare_transaction(none)
        .map_err(|e| main.store_failed("a transaction", &e));
    drop(prologue);
    let copied = transaction.and_then(|_| {
        copy_tree(&main, &walk, &before, &mut report, side)?;
        let (c, v) = walk.commit();
        main.meta(Obj::Commit, c, v)?;
        report.object(0);
        // The apps' half decides: the commit object names the tree only once both halves
        // succeeded.
        if !side.go_ahead() {
            side.cancel.check(&format!("pulling commit {commit}"))?;
            return Err(crate::overlap::cancelled(&format!(
                "pulling commit {commit}"
            )));
        }
        let _unit = crate::failpoint::unit();
        repo.commit_transaction(none)
            .map_err(|e| main.store_failed("the transaction", &e))
    });
    let stats = match copied {
        Ok(stats) => stats,
        Err(e) => {
            let _ = repo.abort_transaction(none);
            if let Err(err) = remove_staging_dirs(&pacman.sysroot) {
                tracing::warn!("{err:#}");
            }
            return Err(context(e));
        }
    };
    report.send(true);
    if !commit_complete(&repo, &dest, commit)? {
        return Err(anyhow::anyhow!(
            "commit {commit} is not complete in {} after pulling it",
            dest.display()
        )
        .into());
    }
    verify_commit_checksum(&repo, &dest, commit)?;
    Ok(PullStats {
        skipped: false,
        objects: (stats.get_metadata_objects_written() + stats.get_content_objects_written())
            as u64,
        bytes: stats.get_content_bytes_written(),
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// Content objects are written by this many threads, whatever the number of cores: each
/// spends most of its time waiting on the disks (the stick's read, the new file's inode,
/// its link into the repo), not on a core. libostree's own pull keeps up to 16 writes in
/// flight; on 2 cores 8 threads pulled 1 GB in 20,000 files in 0.91x the time of `ostree
/// pull-local`, 2 threads in 1.15x, 16 in 0.91x (docs/benchmarks.md).
const WORKERS: usize = 8;

/// Walk the tree on this thread, writing the directory objects the device lacks and
/// handing the content objects to [`WORKERS`] threads; progress is reported from here.
/// The first error of any thread stops all of them and is returned.
fn copy_tree(
    main: &Import,
    walk: &TreeWalk,
    before: &ostree::Repo,
    report: &mut Reporter,
    side: &Side,
) -> crate::Result<()> {
    let commit = hex::encode(walk.commit().0);
    let failed = AtomicBool::new(false);
    let first_error: Mutex<Option<Error>> = Mutex::new(None);
    let fail = |e: Error| {
        failed.store(true, Ordering::SeqCst);
        if let Ok(mut slot) = first_error.lock() {
            slot.get_or_insert(e);
        }
    };
    let stop = || side.cancel.check(&format!("pulling commit {commit}"));
    let (jobs, queue) = mpsc::sync_channel::<FileObj>(QUEUE);
    let queue = Mutex::new(queue);
    let (done, progress) = mpsc::channel::<u64>();
    let stream = crate::failpoint::current();
    std::thread::scope(|s| {
        for _ in 0..WORKERS {
            let import = Import {
                repo: main.repo.clone(),
                ..*main
            };
            let (queue, done, fail, failed) = (&queue, done.clone(), &fail, &failed);
            s.spawn(move || {
                let _worker = crate::failpoint::join(stream);
                loop {
                    let next = queue.lock().ok().and_then(|q| q.recv().ok());
                    let Some(f) = next else { return };
                    if failed.load(Ordering::SeqCst) {
                        continue;
                    }
                    let _unit = crate::failpoint::unit();
                    match stop().and_then(|()| import.file(&f)) {
                        Ok(stored) => {
                            let _ = done.send(stored);
                        }
                        Err(e) => fail(e),
                    }
                }
            });
        }
        drop(done);
        let mut lacks = |kind: Obj, c: &super::stick_repo::Csum| lacks(before, main.dest, kind, c);
        let walked = walk.run(&mut lacks, &mut |step| {
            stop()?;
            if failed.load(Ordering::SeqCst) {
                return Err(anyhow::anyhow!("pulling commit {commit}: stopped").into());
            }
            while let Ok(bytes) = progress.try_recv() {
                report.object(bytes);
            }
            match step {
                Step::Meta(kind, c, v) => {
                    let _unit = crate::failpoint::unit();
                    main.meta(kind, &c, &v)?;
                    report.object(0);
                }
                // Not a unit of work: while another stream holds a pause, the workers
                // wait before their next unit, and so does this hand-over.
                Step::File(mut f) => loop {
                    // A full queue: take the workers' progress while they make room.
                    match jobs.try_send(f) {
                        Ok(()) => break,
                        Err(mpsc::TrySendError::Full(back)) => {
                            f = back;
                            if failed.load(Ordering::SeqCst) {
                                break;
                            }
                            if let Ok(bytes) = progress.recv_timeout(PROGRESS_EVERY) {
                                report.object(bytes);
                            }
                        }
                        Err(mpsc::TrySendError::Disconnected(_)) => break,
                    }
                },
            }
            Ok(())
        });
        if let Err(e) = walked {
            // A worker's own error comes first: the walk only stopped for it.
            fail(e);
        }
        drop(jobs);
        for bytes in progress.iter() {
            report.object(bytes);
        }
    });
    match first_error.into_inner().ok().flatten() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Progress, at most every [`PROGRESS_EVERY`] (and at the start and the end).
struct Reporter<'a> {
    p: PullProgress,
    sink: &'a mut dyn FnMut(PullProgress),
    last: Instant,
}

impl<'a> Reporter<'a> {
    fn new(plan: &RootfsPlan, sink: &'a mut dyn FnMut(PullProgress)) -> Self {
        let p = PullProgress {
            objects_total: plan.files + plan.metadata + 1,
            bytes_total: plan.stored_bytes,
            ..Default::default()
        };
        Reporter {
            p,
            sink,
            last: Instant::now(),
        }
    }

    fn object(&mut self, bytes: u64) {
        self.p.objects_done += 1;
        self.p.bytes_done += bytes;
        crate::watchdog::beat();
        self.send(self.p.objects_done == self.p.objects_total);
    }

    fn send(&mut self, now: bool) {
        if now || self.last.elapsed() >= PROGRESS_EVERY {
            self.last = Instant::now();
            (self.sink)(self.p);
        }
    }
}

/// Remove the repo's transaction staging directories (`tmp/staging-*`) that nobody holds:
/// libostree keeps the one of the current boot after a failed pull so that a retry can
/// resume, which after a full disk is exactly the space we must give back. The lock
/// protocol is libostree's: an exclusive fcntl lock on `<dir>-lock` next to the directory.
pub(crate) fn remove_staging_dirs(sysroot: &Path) -> anyhow::Result<usize> {
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
