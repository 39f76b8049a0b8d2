//! Files on a medium we do not trust (the USB stick, a `--src-dir`): the one place that opens
//! them, for every reader (the bundle, the OSTree objects, the app blobs, the operator's
//! signature, bundle discovery).
//!
//! - Every path is resolved beneath a directory we opened, with `openat2(RESOLVE_BENEATH |
//!   RESOLVE_NO_SYMLINKS)`: no symlink, `..` or absolute path leads anywhere else.
//! - Every entry is first opened `O_PATH` (which reads nothing, never blocks and never opens
//!   a device) and its type checked with `fstat`; only a regular file is then opened for
//!   reading, `O_NONBLOCK`, and checked again to be the same inode: a FIFO cannot hang us, a
//!   device node is never opened, a file swapped between the two opens is refused.
//! - Reads are capped and directory listings streamed and capped, so no file or directory
//!   size turns into memory.
//!
//! Refusals are [`Refused`]: the relative path and what is wrong with it, never a byte of
//! the file; callers map them to exit codes. Each successful open is a sign of life for the
//! [`crate::watchdog`].

use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat, openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fstat, FileStat, Mode, SFlag};

/// What a directory entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Fifo,
    Socket,
    CharDevice,
    BlockDevice,
}

impl Kind {
    fn of(st: &FileStat) -> Kind {
        match SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT {
            SFlag::S_IFDIR => Kind::Dir,
            SFlag::S_IFLNK => Kind::Symlink,
            SFlag::S_IFIFO => Kind::Fifo,
            SFlag::S_IFSOCK => Kind::Socket,
            SFlag::S_IFCHR => Kind::CharDevice,
            SFlag::S_IFBLK => Kind::BlockDevice,
            _ => Kind::File,
        }
    }

    fn of_dirent(t: nix::dir::Type) -> Kind {
        use nix::dir::Type;
        match t {
            Type::Fifo => Kind::Fifo,
            Type::CharacterDevice => Kind::CharDevice,
            Type::Directory => Kind::Dir,
            Type::BlockDevice => Kind::BlockDevice,
            Type::File => Kind::File,
            Type::Symlink => Kind::Symlink,
            Type::Socket => Kind::Socket,
        }
    }

    /// "a FIFO", "a directory": for messages.
    pub fn describe(self) -> &'static str {
        match self {
            Kind::File => "a regular file",
            Kind::Dir => "a directory",
            Kind::Symlink => "a symlink",
            Kind::Fifo => "a FIFO",
            Kind::Socket => "a socket",
            Kind::CharDevice => "a character device",
            Kind::BlockDevice => "a block device",
        }
    }
}

/// Why an entry was not opened or read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// The entry itself is a symlink.
    Symlink,
    /// A directory on the way to it is a symlink.
    ThroughSymlink,
    /// `..` or an absolute path.
    Escapes,
    /// Something on the way to it is not a directory.
    NotADirectory,
    /// It is not the kind of entry that was asked for.
    Kind { found: Kind, want: Kind },
    /// Larger than the reader accepts (`len` as the filesystem reports it).
    TooLarge { len: u64, cap: u64 },
    /// A directory with more entries than the reader accepts.
    TooMany { cap: usize },
    /// Replaced between the check of its type and the open for reading.
    Changed,
    /// The medium fails (a pulled stick's ext4 answers with EIO, ENOMEM, ENODEV, ENXIO).
    Unreadable(Errno),
    /// Any other error of the system call.
    Io(Errno),
}

/// An entry refused: `rel` (relative to the opened directory) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub rel: String,
    pub problem: Problem,
}

impl Refused {
    fn new(rel: &str, problem: Problem) -> Refused {
        Refused {
            rel: rel.to_string(),
            problem,
        }
    }

    /// The medium failed (stick removed, I/O error): not a verdict on the bundle.
    pub(crate) fn is_io(&self) -> bool {
        matches!(self.problem, Problem::Unreadable(_) | Problem::Io(_))
    }
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rel = &self.rel;
        match &self.problem {
            Problem::Symlink => write!(f, "{rel} is a symlink"),
            Problem::ThroughSymlink => write!(f, "{rel} passes through a symlink"),
            Problem::Escapes => write!(f, "{rel} leads outside the bundle"),
            Problem::NotADirectory => write!(f, "{rel} has a file where a directory belongs"),
            Problem::Kind { found, want } => {
                write!(f, "{rel} is {}, not {}", found.describe(), want.describe())
            }
            Problem::TooLarge { len, cap } => {
                write!(f, "{rel} is {len} bytes, over the {cap}-byte limit")
            }
            Problem::TooMany { cap } => write!(f, "{rel} holds more than {cap} entries"),
            Problem::Changed => write!(f, "{rel} changed while it was being opened"),
            Problem::Unreadable(e) => write!(
                f,
                "{rel}: the medium cannot be read ({}): was the stick removed?",
                io::Error::from(*e)
            ),
            Problem::Io(e) => write!(f, "{rel}: {}", io::Error::from(*e)),
        }
    }
}

impl std::error::Error for Refused {}

type Res<T> = Result<T, Refused>;

fn how(flags: OFlag) -> OpenHow {
    OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW)
        .mode(Mode::empty())
        .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS)
}

/// `openat(dir, name)` of one component, never following a symlink, close-on-exec. For the
/// writers that create under a directory they made (archive extraction).
pub(crate) fn openat_nofollow(
    dir: &OwnedFd,
    name: &[u8],
    flags: OFlag,
    mode: Mode,
) -> nix::Result<OwnedFd> {
    let flags = flags | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let fd = openat(Some(dir.as_raw_fd()), name, flags, mode)?;
    // SAFETY: a successful openat returns a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A directory on the hostile medium, and everything beneath it.
#[derive(Debug)]
pub struct Tree {
    path: PathBuf,
    root: OwnedFd,
}

impl Tree {
    /// Open `path` as the root of a tree. The path itself is the caller's (a mount point,
    /// the operator's `--src-dir`) and is followed; it must be a directory, and opening it
    /// cannot block.
    pub fn open(path: &Path) -> Res<Tree> {
        let shown = path.display().to_string();
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
        let fd = nix::fcntl::open(path, flags, Mode::empty()).map_err(|e| match e {
            Errno::ENOTDIR => {
                let found = nix::sys::stat::stat(path).map_or(Kind::File, |st| Kind::of(&st));
                Refused::new(
                    &shown,
                    Problem::Kind {
                        found,
                        want: Kind::Dir,
                    },
                )
            }
            e => Refused::new(&shown, errno_problem(e)),
        })?;
        // SAFETY: a successful open returns a new descriptor that nothing else owns.
        let root = unsafe { OwnedFd::from_raw_fd(fd) };
        crate::watchdog::beat();
        Ok(Tree {
            path: path.to_path_buf(),
            root,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What `rel` is, and its size, without opening it; `None` if it does not exist. The
    /// entry itself may be a symlink (reported as [`Kind::Symlink`], not followed); a
    /// symlink on the way to it is refused.
    pub fn kind(&self, rel: &str) -> Res<Option<(Kind, u64)>> {
        Ok(self
            .inspect(rel)?
            .map(|(_, st)| (Kind::of(&st), st.st_size.max(0) as u64)))
    }

    /// The size of `rel` if it is a `want` (a regular file, a directory), without opening
    /// it; `None` if it does not exist; anything else there is refused, naming what it is.
    pub fn expect(&self, rel: &str, want: Kind) -> Res<Option<u64>> {
        let Some((_, st)) = self.inspect(rel)? else {
            return Ok(None);
        };
        expect_kind(rel, &st, want)?;
        Ok(Some(st.st_size.max(0) as u64))
    }

    /// Open regular file `rel` for reading, with its length; `None` if it does not exist.
    pub fn open_file(&self, rel: &str) -> Res<Option<(File, u64)>> {
        let flags = OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_NOCTTY;
        Ok(self
            .open_checked(rel, Kind::File, flags)?
            .map(|(fd, len)| (File::from(fd), len)))
    }

    /// `rel`, checked to be a `want` while opened `O_PATH`, then opened with `flags` and
    /// checked to be the same inode: a swap in between is refused.
    fn open_checked(&self, rel: &str, want: Kind, flags: OFlag) -> Res<Option<(OwnedFd, u64)>> {
        let Some((_, before)) = self.inspect(rel)? else {
            return Ok(None);
        };
        expect_kind(rel, &before, want)?;
        let fd = self
            .resolve(rel, flags)?
            .ok_or_else(|| Refused::new(rel, Problem::Changed))?;
        let after = stat_fd(rel, &fd)?;
        if (after.st_dev, after.st_ino) != (before.st_dev, before.st_ino)
            || Kind::of(&after) != want
        {
            return Err(Refused::new(rel, Problem::Changed));
        }
        Ok(Some((fd, after.st_size.max(0) as u64)))
    }

    /// The whole of regular file `rel`, at most `cap` bytes (a larger file is refused, also
    /// one that grows while it is read); `None` if it does not exist.
    pub fn read_capped(&self, rel: &str, cap: u64) -> Res<Option<Vec<u8>>> {
        let Some((file, len)) = self.open_file(rel)? else {
            return Ok(None);
        };
        if len > cap {
            return Err(Refused::new(rel, Problem::TooLarge { len, cap }));
        }
        let mut buf = Vec::with_capacity(len as usize);
        file.take(cap + 1)
            .read_to_end(&mut buf)
            .map_err(|e| Refused::new(rel, io_problem(&e)))?;
        if buf.len() as u64 > cap {
            let len = buf.len() as u64;
            return Err(Refused::new(rel, Problem::TooLarge { len, cap }));
        }
        crate::watchdog::beat();
        Ok(Some(buf))
    }

    /// Directory `rel` as a tree of its own; `None` if it does not exist.
    pub(crate) fn open_dir(&self, rel: &str) -> Res<Option<Tree>> {
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NONBLOCK;
        Ok(self
            .open_checked(rel, Kind::Dir, flags)?
            .map(|(fd, _)| Tree {
                path: self.path.join(rel),
                root: fd,
            }))
    }

    /// Every entry of directory `rel` (without `.` and `..`), streamed to `each` with its
    /// type when the filesystem says it (`None`: look with [`Tree::kind`]); more than `cap`
    /// entries is refused when the first one too many is read, so a huge directory costs
    /// neither memory nor much time. Names that are not UTF-8 count, but are not passed on.
    /// `None` if `rel` does not exist.
    pub(crate) fn each_entry(
        &self,
        rel: &str,
        cap: usize,
        mut each: impl FnMut(&str, Option<Kind>),
    ) -> Res<Option<()>> {
        let Some(dir) = self.open_dir(rel)? else {
            return Ok(None);
        };
        // Dir takes the descriptor over and closes it on drop.
        let mut stream =
            nix::dir::Dir::from(dir.root).map_err(|e| Refused::new(rel, errno_problem(e)))?;
        let mut count = 0usize;
        for entry in stream.iter() {
            let entry = entry.map_err(|e| Refused::new(rel, errno_problem(e)))?;
            let name = entry.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            count += 1;
            if count > cap {
                return Err(Refused::new(rel, Problem::TooMany { cap }));
            }
            if let Ok(name) = std::str::from_utf8(name) {
                each(name, entry.file_type().map(Kind::of_dirent));
            }
        }
        crate::watchdog::beat();
        Ok(Some(()))
    }

    /// The names in directory `rel`, sorted, at most `cap` of them (see
    /// [`Tree::each_entry`]); `None` if it does not exist.
    pub fn names(&self, rel: &str, cap: usize) -> Res<Option<Vec<String>>> {
        let mut names = Vec::new();
        let listed = self.each_entry(rel, cap, |name, _| names.push(name.to_string()))?;
        names.sort();
        Ok(listed.map(|()| names))
    }

    /// `rel` opened `O_PATH` (nothing read, nothing that can block) and its `fstat`.
    fn inspect(&self, rel: &str) -> Res<Option<(OwnedFd, FileStat)>> {
        let Some(fd) = self.resolve(rel, OFlag::O_PATH)? else {
            return Ok(None);
        };
        let st = stat_fd(rel, &fd)?;
        Ok(Some((fd, st)))
    }

    /// Open `rel` beneath the root; `None` if it does not exist.
    fn resolve(&self, rel: &str, flags: OFlag) -> Res<Option<OwnedFd>> {
        let opened = match openat2(self.root.as_raw_fd(), rel, how(flags)) {
            // SAFETY: a successful openat2 returns a new descriptor that nothing else owns.
            Ok(fd) => Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) }),
            // Kernels before 5.6 (and valgrind) lack openat2: walk the path ourselves.
            Err(Errno::ENOSYS) => self.walk(rel, flags),
            Err(e) => Err(e),
        };
        match opened {
            Ok(fd) => {
                crate::watchdog::beat();
                Ok(Some(fd))
            }
            Err(Errno::ENOENT) => Ok(None),
            // The last component is never followed (O_NOFOLLOW, and O_PATH opens the link
            // itself), so ELOOP is a link on the way; without O_PATH, the link itself.
            Err(Errno::ELOOP) if flags.contains(OFlag::O_PATH) => {
                Err(Refused::new(rel, Problem::ThroughSymlink))
            }
            Err(Errno::ELOOP) => Err(Refused::new(rel, Problem::Symlink)),
            Err(Errno::EXDEV) => Err(Refused::new(rel, Problem::Escapes)),
            Err(Errno::ENOTDIR) => Err(Refused::new(rel, Problem::NotADirectory)),
            Err(e) => Err(Refused::new(rel, errno_problem(e))),
        }
    }

    /// What `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS` does, one component at a time: `..` and
    /// absolute paths cannot leave the root, and `O_NOFOLLOW` refuses a symlink on the way
    /// (ELOOP, or ENOTDIR where a directory is needed).
    fn walk(&self, rel: &str, flags: OFlag) -> nix::Result<OwnedFd> {
        let parts: Vec<&str> = rel
            .split('/')
            .filter(|p| !p.is_empty() && *p != ".")
            .collect();
        if rel.starts_with('/') || parts.contains(&"..") {
            return Err(Errno::EXDEV);
        }
        let Some((last, dirs)) = parts.split_last() else {
            // The root itself.
            return self.root.try_clone().map_err(|_| Errno::EMFILE);
        };
        let mut dir: Option<OwnedFd> = None;
        for part in dirs {
            let at = dir.as_ref().unwrap_or(&self.root);
            let fd = openat_nofollow(
                at,
                part.as_bytes(),
                OFlag::O_PATH | OFlag::O_DIRECTORY,
                Mode::empty(),
            );
            // A symlink where a directory is needed: O_DIRECTORY says ENOTDIR first.
            let fd = fd.map_err(|e| match e {
                Errno::ENOTDIR if is_symlink_at(at, part) => Errno::ELOOP,
                e => e,
            })?;
            dir = Some(fd);
        }
        let at = dir.as_ref().unwrap_or(&self.root);
        let fd = openat_nofollow(at, last.as_bytes(), flags, Mode::empty());
        fd.map_err(|e| match e {
            // Only with O_PATH is the final link opened rather than refused.
            Errno::ELOOP if flags.contains(OFlag::O_PATH) => Errno::ELOOP,
            e => e,
        })
    }
}

fn is_symlink_at(dir: &OwnedFd, name: &str) -> bool {
    nix::sys::stat::fstatat(
        Some(dir.as_raw_fd()),
        name,
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .is_ok_and(|st| Kind::of(&st) == Kind::Symlink)
}

fn expect_kind(rel: &str, st: &FileStat, want: Kind) -> Res<()> {
    match Kind::of(st) {
        k if k == want => Ok(()),
        Kind::Symlink => Err(Refused::new(rel, Problem::Symlink)),
        found => Err(Refused::new(rel, Problem::Kind { found, want })),
    }
}

fn stat_fd(rel: &str, fd: &OwnedFd) -> Res<FileStat> {
    fstat(fd.as_raw_fd()).map_err(|e| Refused::new(rel, errno_problem(e)))
}

fn errno_problem(e: Errno) -> Problem {
    match e {
        // A pulled stick's ext4 answers lookups with ENOMEM as well as EIO: the errno alone
        // would send the operator looking for a memory problem.
        Errno::EIO | Errno::ENOMEM | Errno::ENODEV | Errno::ENXIO => Problem::Unreadable(e),
        e => Problem::Io(e),
    }
}

/// The problem of a failed read of an opened file.
pub(crate) fn io_problem(e: &io::Error) -> Problem {
    match e.raw_os_error() {
        Some(n) => errno_problem(Errno::from_raw(n)),
        None => Problem::Io(Errno::EIO),
    }
}

/// A reader that fails (rather than ending quietly) once more than `cap` bytes went
/// through: a stream whose length is not known in advance (a decompressor) stays bounded.
pub(crate) struct Capped<R> {
    inner: R,
    left: u64,
    cap: u64,
    what: &'static str,
}

impl<R> Capped<R> {
    /// `what` names the stream in the error ("archive", "object").
    pub fn new(inner: R, cap: u64, what: &'static str) -> Self {
        Capped {
            inner,
            left: cap,
            cap,
            what,
        }
    }
}

/// The error [`Capped`] returns; `is_cap_exceeded` recognises it in an `io::Error`.
#[derive(Debug)]
pub(crate) struct CapExceeded {
    pub what: &'static str,
    pub cap: u64,
}

impl fmt::Display for CapExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} is over {} bytes uncompressed: refused",
            self.what, self.cap
        )
    }
}

impl std::error::Error for CapExceeded {}

/// Is `e` (or what it wraps) the error of a [`Capped`] reader?
#[cfg(test)]
pub(crate) fn is_cap_exceeded(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<CapExceeded>())
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // Read one byte past the cap so that reaching it exactly is still fine.
        let want = buf
            .len()
            .min(usize::try_from(self.left.saturating_add(1)).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        match self.left.checked_sub(n as u64) {
            Some(left) => {
                self.left = left;
                Ok(n)
            }
            None => Err(io::Error::other(CapExceeded {
                what: self.what,
                cap: self.cap,
            })),
        }
    }
}

#[cfg(test)]
mod tests;
