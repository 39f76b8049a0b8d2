//! One object from the bundle's repo into the sysroot repo's open transaction: content
//! objects are inflated by us, bounded by their own declared size (libostree writes no
//! more than that) and by the free space of the sysroot's filesystem, and written (and
//! checksummed) by libostree; directory objects are written as the walk verified them.
//! Each worker of [`super::pull`] has an [`Import`] of its own; they share the [`Budget`].

use std::fs;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use ostree::gio::prelude::*;
use ostree::{gio, glib};

use super::is_no_space;
use super::stick_repo::{self, object_rel, Obj, StickRepo};
use super::tree_walk::FileObj;
use crate::error::{Code, Error};
use crate::hostile_fs::{io_problem, Problem, Refused};

/// The share of the sysroot's filesystem a pull leaves free (libostree's own default
/// reserve, `min-free-space-percent`).
pub(crate) const MARGIN_PERCENT: u64 = 3;
/// Largest header of a content object (owner, mode, symlink target, xattrs).
const FILE_HEADER_CAP: u64 = 1 << 20;

/// Room the pull may take: the free space of the sysroot's filesystem less the margin.
pub(super) struct Budget {
    left: Mutex<u64>,
    block: u64,
    dest: PathBuf,
}

impl Budget {
    pub(super) fn of(dest: &Path) -> crate::Result<Budget> {
        let st = nix::sys::statvfs::statvfs(dest)
            .with_context(|| format!("the free space of {}", dest.display()))?;
        let block = st.fragment_size().max(1);
        let free = st.blocks_available().saturating_mul(block);
        let margin = st.blocks().saturating_mul(block) / 100 * MARGIN_PERCENT;
        Ok(Budget {
            left: Mutex::new(free.saturating_sub(margin)),
            block,
            dest: dest.to_path_buf(),
        })
    }

    /// Would `bytes` (rounded up to whole blocks) for `what` fit? Else 60.
    pub(super) fn check(&self, bytes: u64, what: &str) -> crate::Result<()> {
        self.charge(bytes, what, false)
    }

    /// Take `bytes` for `what`, or refuse with 60.
    pub(super) fn take(&self, bytes: u64, what: &str) -> crate::Result<()> {
        self.charge(bytes, what, true)
    }

    fn charge(&self, bytes: u64, what: &str, take: bool) -> crate::Result<()> {
        let need = bytes.div_ceil(self.block).saturating_mul(self.block);
        let mut left = self.left.lock().unwrap_or_else(|p| p.into_inner());
        if need > *left {
            return Err(Error::new(
                Code::NoSpace,
                format!(
                    "not enough space: {what} needs {bytes} bytes, {} of {} may still be used \
                     (it keeps {MARGIN_PERCENT}% free)",
                    *left,
                    self.dest.display()
                ),
            ));
        }
        if take {
            *left -= need;
        }
        Ok(())
    }
}

pub(super) struct Import<'a> {
    pub(super) stick: StickRepo<'a>,
    /// A handle of its own on the sysroot repo: a handle may move between threads, and
    /// libostree writes objects into one transaction from many threads (its own pull does).
    pub(super) repo: ostree::Repo,
    pub(super) dest: &'a Path,
    pub(super) budget: &'a Budget,
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
    /// A directory object or the commit, as the walk read and verified it.
    pub(super) fn meta(
        &self,
        kind: Obj,
        c: &stick_repo::Csum,
        v: &glib::Variant,
    ) -> crate::Result<()> {
        let rel = object_rel(kind, c);
        self.budget.take(v.size() as u64, &rel)?;
        self.repo
            .write_metadata(
                kind.ostree_type(),
                Some(&stick_repo::hex(c)),
                v,
                gio::Cancellable::NONE,
            )
            .map_err(|e| self.store_failed(&rel, &e))?;
        Ok(())
    }

    /// A content object: header parsed, declared size bounded, content inflated by us and
    /// written (and checksummed) by libostree.
    /// Returns its size on the stick.
    pub(super) fn file(&self, f: &FileObj) -> crate::Result<u64> {
        let rel = object_rel(Obj::File, &f.csum);
        let (mut file, len) = self.stick.open_file(&rel)?;
        if let Some((archived, _)) = f.indexed.filter(|(a, _)| *a != len) {
            return Err(self.stick.corrupt(
                &rel,
                &format!("has {len} bytes, the commit's size index says {archived}"),
            ));
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
        if let Some((_, unpacked)) = f.indexed {
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
            return Ok(len);
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
    pub(super) fn store_failed(&self, what: &str, e: &glib::Error) -> Error {
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
