//! Copy one commit from the bundle's `ostree_repo` into the sysroot repo, through our own
//! reader ([`super::stick_repo`]) and libostree's object writers, never libostree's pull:
//! libostree does not open the stick at all.
//!
//! Every object is verified by libostree as it is written: the expected checksum comes from
//! the commit's tree, which [`super::scan_bundle_commit`] walked from the TUF-signed commit
//! id over metadata it verified itself. Content objects are inflated by us, bounded by
//! their own declared size (libostree writes no more than that), and the declared sizes are
//! bounded before a byte is inflated: by the commit's `ostree.sizes` index when it has one,
//! and always by the free space of the sysroot's filesystem, keeping [`MARGIN_PERCENT`] %
//! of it free, per object and for the pull as a whole. A decompression bomb costs the
//! device at most that, and only until the transaction is aborted.
//!
//! Everything goes into one repo transaction: on any failure it is aborted and its staging
//! directory removed, so a full disk or a corrupted object leaves the repo as it was; the
//! commit object is written last, so nothing names the commit until its tree is whole.
//! Failures name the object and the class of failure (missing, not a regular file, does not
//! match its checksum, the medium failed, no space), never libostree's own text.

use std::fs;
use std::io::{BufReader, Read};
use std::os::fd::AsRawFd as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use ostree::gio::prelude::*;
use ostree::{gio, glib};
use sha2::Digest as _;

use super::stick_repo::{self, object_rel, FileObj, Obj, RootfsPlan, StickRepo};
use super::{is_commit_checksum, is_no_space, open_sysroot, SysrootLock};
use crate::core::bundle::Bundle;
use crate::config::Pacman;
use crate::error::{Code, Error};
use crate::hostile_fs::{io_problem, Problem, Refused};

/// How often progress is reported while copying.
const PROGRESS_EVERY: Duration = Duration::from_millis(200);
/// The share of the sysroot's filesystem a pull leaves free (libostree's own default
/// reserve, `min-free-space-percent`).
pub(crate) const MARGIN_PERCENT: u64 = 3;
/// Largest header of a content object (owner, mode, symlink target, xattrs).
const FILE_HEADER_CAP: u64 = 1 << 20;

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
pub fn pull_from_bundle(
    pacman: &Pacman,
    bundle: &Bundle,
    plan: &RootfsPlan,
    progress: &mut dyn FnMut(PullProgress),
) -> crate::Result<PullStats> {
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
        plan.files.len(),
        plan.stored_bytes,
        plan.metadata.len(),
        dest.display()
    );
    let mut report = Reporter::new(plan, progress);
    report.send(true);
    // Fault tests pull the stick or fill the disk here: the scan read the commit's tree.
    crate::failpoint::pause("pull-rootfs");
    let mut import = Import {
        stick: StickRepo::open(bundle).map_err(context)?,
        repo: &repo,
        dest: &dest,
        budget: Budget::of(&dest).map_err(context)?,
    };
    if let Some(unpacked) = plan.unpacked_bytes {
        import
            .budget
            .check(unpacked, "the commit's content")
            .map_err(context)?;
    }
    let none = gio::Cancellable::NONE;
    let transaction = repo
        .prepare_transaction(none)
        .map_err(|e| import.store_failed("a transaction", &e));
    let copied = transaction.and_then(|_| {
        for f in &plan.files {
            import.file(f)?;
            report.object(f.stored);
        }
        for (kind, c) in &plan.metadata {
            import.meta(*kind, c)?;
            report.object(0);
        }
        let c =
            stick_repo::parse_hex(commit).ok_or_else(|| anyhow::anyhow!("{commit}: not hex"))?;
        import.meta(Obj::Commit, &c)?;
        report.object(0);
        repo.commit_transaction(none)
            .map_err(|e| import.store_failed("the transaction", &e))
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

/// Progress, at most every [`PROGRESS_EVERY`] (and at the start and the end).
struct Reporter<'a> {
    p: PullProgress,
    sink: &'a mut dyn FnMut(PullProgress),
    last: Instant,
}

impl<'a> Reporter<'a> {
    fn new(plan: &RootfsPlan, sink: &'a mut dyn FnMut(PullProgress)) -> Self {
        let p = PullProgress {
            objects_total: (plan.files.len() + plan.metadata.len() + 1) as u64,
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

/// Room the pull may take: the free space of the sysroot's filesystem less the margin.
struct Budget {
    left: u64,
    block: u64,
    dest: PathBuf,
}

impl Budget {
    fn of(dest: &Path) -> crate::Result<Budget> {
        let st = nix::sys::statvfs::statvfs(dest)
            .with_context(|| format!("the free space of {}", dest.display()))?;
        let block = st.fragment_size().max(1);
        let free = st.blocks_available().saturating_mul(block);
        let margin = st.blocks().saturating_mul(block) / 100 * MARGIN_PERCENT;
        Ok(Budget {
            left: free.saturating_sub(margin),
            block,
            dest: dest.to_path_buf(),
        })
    }

    /// Take `bytes` (rounded up to whole blocks) for `what`, or refuse with 60.
    fn check(&mut self, bytes: u64, what: &str) -> crate::Result<()> {
        let need = bytes.div_ceil(self.block).saturating_mul(self.block);
        if need > self.left {
            return Err(Error::new(
                Code::NoSpace,
                format!(
                    "not enough space: {what} needs {bytes} bytes, {} of {} may still be used \
                     (it keeps {MARGIN_PERCENT}% free)",
                    self.left,
                    self.dest.display()
                ),
            ));
        }
        Ok(())
    }

    fn take(&mut self, bytes: u64, what: &str) -> crate::Result<()> {
        self.check(bytes, what)?;
        let need = bytes.div_ceil(self.block).saturating_mul(self.block);
        self.left -= need;
        Ok(())
    }
}

struct Import<'a> {
    stick: StickRepo<'a>,
    repo: &'a ostree::Repo,
    dest: &'a Path,
    budget: Budget,
}

/// Why reading a content object's stream failed, kept by the reader: the error libostree
/// returns for it says nothing we may show.
#[derive(Debug, Clone)]
enum ReadFailure {
    Medium(Problem),
    Corrupt,
    Short(u64),
}

impl Import<'_> {
    /// A directory object or the commit: read and verified again (the stick may not
    /// return the same bytes twice), then written.
    fn meta(&mut self, kind: Obj, c: &stick_repo::Csum) -> crate::Result<()> {
        let rel = object_rel(kind, c);
        let v = self.stick.read_meta(kind, c)?;
        self.budget.take(v.size() as u64, &rel)?;
        self.repo
            .write_metadata(
                kind.ostree_type(),
                Some(&stick_repo::hex(c)),
                &v,
                gio::Cancellable::NONE,
            )
            .map_err(|e| self.store_failed(&rel, &e))?;
        Ok(())
    }

    /// A content object: header parsed, declared size bounded, content inflated by us and
    /// written (and checksummed) by libostree.
    fn file(&mut self, f: &FileObj) -> crate::Result<()> {
        let rel = object_rel(Obj::File, &f.csum);
        let (mut file, len) = self.stick.open_file(&rel)?;
        if len != f.stored {
            return Err(self
                .stick
                .corrupt(&rel, "changed on the stick since it was checked"));
        }
        let header = read_header(&mut file, len).map_err(|p| match p {
            Some(problem) => self.stick.refused(Refused {
                rel: rel.clone(),
                problem,
            }),
            None => self
                .stick
                .corrupt(&rel, "is not a valid archive object (its header)"),
        })?;
        let Some(h) = Header::parse(&header) else {
            return Err(self
                .stick
                .corrupt(&rel, "is not a valid archive object (its header)"));
        };
        let declared = if h.regular { h.size } else { 0 };
        if let Some(unpacked) = f.unpacked {
            if unpacked != declared {
                return Err(self.stick.corrupt(
                    &rel,
                    &format!("declares {declared} bytes, the commit's size index says {unpacked}"),
                ));
            }
        }
        self.budget.take(declared, &rel)?;
        let info = gio::FileInfo::new();
        info.set_attribute_uint32("unix::uid", h.uid);
        info.set_attribute_uint32("unix::gid", h.gid);
        info.set_attribute_uint32("unix::mode", h.mode);
        info.set_size(i64::try_from(declared).unwrap_or(i64::MAX));
        let failure = Arc::new(Mutex::new(None));
        let input: gio::InputStream = if h.regular {
            info.set_file_type(gio::FileType::Regular);
            let inflate = Inflate {
                dec: flate2::bufread::DeflateDecoder::new(BufReader::with_capacity(64 << 10, file)),
                left: declared,
                got: 0,
                failure: failure.clone(),
            };
            gio::ReadInputStream::new(inflate).upcast()
        } else {
            info.set_file_type(gio::FileType::SymbolicLink);
            info.set_symlink_target(&h.target);
            gio::MemoryInputStream::new().upcast()
        };
        let none = gio::Cancellable::NONE;
        let written = ostree::raw_file_to_content_stream(&input, &info, Some(&h.xattrs), none)
            .and_then(|(stream, length)| {
                self.repo
                    .write_content(Some(&stick_repo::hex(&f.csum)), &stream, length, none)
            });
        let Err(e) = written else {
            return Ok(());
        };
        let why = failure.lock().ok().and_then(|mut f| f.take());
        Err(match why {
            Some(ReadFailure::Medium(problem)) => self.stick.refused(Refused { rel, problem }),
            Some(ReadFailure::Corrupt) => self
                .stick
                .corrupt(&rel, "holds no valid compressed content"),
            Some(ReadFailure::Short(got)) => self.stick.corrupt(
                &rel,
                &format!("inflates to {got} bytes, fewer than the {declared} it declares"),
            ),
            None if e.message().contains("Corrupted") => {
                self.stick.corrupt(&rel, "does not match its checksum")
            }
            None => self.store_failed(&rel, &e),
        })
    }

    /// libostree refused to store something: 60 for a full disk, else 50 naming the object
    /// and libostree's error class; its text only goes to the log, escaped.
    fn store_failed(&self, what: &str, e: &glib::Error) -> Error {
        tracing::warn!("libostree, storing {what}: {:?}", e.message());
        let dest = self.dest.display();
        if is_no_space(e) {
            return Error::new(Code::NoSpace, format!("no space left in {dest} for {what}"));
        }
        let class = match e.kind::<gio::IOErrorEnum>() {
            Some(k) => format!("{k:?}"),
            None => e.domain().as_str().to_string(),
        };
        Error::copy(format!("{what}: {dest} refused to store it ({class})"))
    }
}

/// The length-prefixed header of an archive content object: `None` for a bad one, the
/// problem of the medium when reading failed.
fn read_header(file: &mut fs::File, len: u64) -> Result<Vec<u8>, Option<Problem>> {
    let mut prefix = [0u8; 8];
    file.read_exact(&mut prefix).map_err(|e| medium(&e))?;
    let size = u64::from(u32::from_be_bytes([
        prefix[0], prefix[1], prefix[2], prefix[3],
    ]));
    if size == 0 || size > FILE_HEADER_CAP || size + 8 > len {
        return Err(None);
    }
    let mut buf = vec![0u8; size as usize];
    file.read_exact(&mut buf).map_err(|e| medium(&e))?;
    Ok(buf)
}

/// An unexpected end is a bad object; anything else, the medium.
fn medium(e: &std::io::Error) -> Option<Problem> {
    (e.kind() != std::io::ErrorKind::UnexpectedEof).then(|| io_problem(e))
}

/// The fields of `(tuuuusa(ayay))`, integers stored big-endian.
struct Header {
    size: u64,
    uid: u32,
    gid: u32,
    mode: u32,
    regular: bool,
    target: String,
    xattrs: glib::Variant,
}

impl Header {
    fn parse(bytes: &[u8]) -> Option<Header> {
        let v = glib::Variant::from_data_with_type(bytes, Obj::File.variant_type());
        let u32_at = |i| v.try_child_value(i)?.get::<u32>().map(u32::from_be);
        let size = u64::from_be(v.try_child_value(0)?.get::<u64>()?);
        let mode = u32_at(3)?;
        let rdev = u32_at(4)?;
        let kind = mode & 0o170000;
        let regular = kind == 0o100000;
        if rdev != 0 || !(regular || kind == 0o120000) {
            return None;
        }
        Some(Header {
            size,
            uid: u32_at(1)?,
            gid: u32_at(2)?,
            mode,
            regular,
            target: v.try_child_value(5)?.str()?.to_string(),
            xattrs: v.try_child_value(6)?,
        })
    }
}

/// A content object's data, inflated, never past its declared size (libostree reads exactly
/// that many bytes); what went wrong is kept in `failure`.
struct Inflate<R> {
    dec: flate2::bufread::DeflateDecoder<R>,
    left: u64,
    got: u64,
    failure: Arc<Mutex<Option<ReadFailure>>>,
}

impl<R: std::io::BufRead> Read for Inflate<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let failed = |f: ReadFailure| {
            if let Ok(mut slot) = self.failure.lock() {
                slot.get_or_insert(f);
            }
        };
        match self.dec.read(&mut buf[..want]) {
            Ok(0) => {
                failed(ReadFailure::Short(self.got));
                Ok(0)
            }
            Ok(n) => {
                self.left -= n as u64;
                self.got += n as u64;
                crate::watchdog::beat();
                Ok(n)
            }
            Err(e) => {
                failed(match e.raw_os_error() {
                    Some(_) => ReadFailure::Medium(io_problem(&e)),
                    None => ReadFailure::Corrupt,
                });
                Err(e)
            }
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
