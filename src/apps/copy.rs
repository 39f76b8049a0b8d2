//! One blob on its way from a source (the stick) into the store: every byte read through a
//! [`BlobCopy`] is hashed and written to the blob's `.partial` file; [`BlobCopy::finish`]
//! checks the size and the digest, syncs the file and renames it into place. Dropped
//! before that, the partial file goes. The store's own copies drive it in a loop; an image
//! load reads the blob's bytes through it for the engine, so the stick is read once for
//! both, and hands the verified file to [`super::settle`] to be synced and put in place.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, ErrorKind, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use sha2::{Digest, Sha256};

use super::content::{App, Blob, BlobSource};
use super::docker::Engine;
use super::settle::{Settler, Written};
use super::store::{FetchProgress, Store};
use crate::core::bundle::Bundle;
use crate::error::{Error, OrCode, Result};
use crate::overlap::Cancel;

pub(crate) struct BlobCopy<'a> {
    hex: String,
    from: File,
    len: u64,
    to: File,
    partial: PathBuf,
    dest: PathBuf,
    hasher: Sha256,
    copied: u64,
    src: String,
    cancel: &'a Cancel,
    tick: &'a (dyn Fn(u64) + Sync),
    finished: bool,
}

impl<'a> BlobCopy<'a> {
    /// Open `blob` in `src` (its size checked against the descriptor's) and its partial
    /// file. Every blob was looked up before the first copy: one not found now is the
    /// medium failing, not the bundle lacking it.
    pub(crate) fn start(
        store: &Store,
        src: &dyn BlobSource,
        blob: &Blob,
        cancel: &'a Cancel,
        tick: &'a (dyn Fn(u64) + Sync),
    ) -> Result<BlobCopy<'a>> {
        let hex = &blob.digest;
        let Some((from, len)) = src.open_blob(hex)? else {
            return Err(Error::copy(format!(
                "blob {hex} in {}: the medium cannot be read (found when the copy began, \
                 not found now): was the stick removed?",
                src.describe()
            )));
        };
        if let Some(size) = blob.size.filter(|s| *s != len) {
            return Err(Error::copy(format!(
                "blob {hex} in {} has {len} bytes, its descriptor says {size}",
                src.describe()
            )));
        }
        crate::failpoint::pause("copy-blob");
        let dest = store.blob_path(hex);
        let partial = dest.with_file_name(format!(".{hex}.partial"));
        let to = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
            .open(&partial)
            .or_internal(format!("creating {}", partial.display()))?;
        Ok(BlobCopy {
            hex: hex.clone(),
            from,
            len,
            to,
            partial,
            dest,
            hasher: Sha256::new(),
            copied: 0,
            src: src.describe(),
            cancel,
            tick,
            finished: false,
        })
    }

    /// The blob's size on the source.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// Read the next bytes into `buf`, hashed and written to the partial file; 0 at the end
    /// of the source file.
    pub(crate) fn step(&mut self, buf: &mut [u8]) -> Result<usize> {
        let hex = &self.hex;
        self.cancel.check(&format!("copying blob {hex}"))?;
        let n = loop {
            match self.from.read(buf) {
                Ok(n) => break n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(Error::copy(format!(
                        "reading blob {hex} from {}: the medium cannot be read ({e}): \
                         was the stick removed?",
                        self.src
                    )))
                }
            }
        };
        if n == 0 {
            return Ok(0);
        }
        self.hasher.update(&buf[..n]);
        self.to
            .write_all(&buf[..n])
            .or_internal(format!("writing {}", self.partial.display()))?;
        self.copied += n as u64;
        crate::watchdog::beat();
        (self.tick)(n as u64);
        Ok(n)
    }

    /// Every byte was read: the source must end here, with the size and digest of the
    /// blob; then the blob is put in place under its name.
    pub(crate) fn finish(&mut self) -> Result<()> {
        if self.finished {
            return Ok(());
        }
        self.verify()?;
        let written = self.written()?;
        written.settle()
    }

    /// The source ended with the size and digest of the blob.
    fn verify(&mut self) -> Result<()> {
        // Not at the end yet if the reader stopped at exactly `len` bytes: one read more
        // tells a file that grew from one that ended.
        let mut probe = [0u8; 1];
        if self.copied == self.len {
            self.step(&mut probe)?;
        }
        let (hex, src, copied, len) = (&self.hex, &self.src, self.copied, self.len);
        if copied > len {
            return Err(Error::copy(format!(
                "blob {hex} in {src}: longer than its {len} bytes (changed while read)"
            )));
        }
        if copied < len {
            return Err(Error::copy(format!(
                "blob {hex} in {src}: {copied} of {len} bytes read (truncated or removed)"
            )));
        }
        if hex::encode(std::mem::take(&mut self.hasher).finalize()) != *hex {
            return Err(Error::copy(format!(
                "blob {hex} in {src} does not match its digest"
            )));
        }
        Ok(())
    }

    /// The verified partial file, handed over: from now on the [`Written`] removes it
    /// should it not be put in place.
    fn written(&mut self) -> Result<Written> {
        let to = self
            .to
            .try_clone()
            .or_internal(format!("holding {}", self.partial.display()))?;
        self.finished = true;
        Ok(Written::new(
            self.hex.clone(),
            self.len,
            to,
            self.partial.clone(),
            self.dest.clone(),
        ))
    }

    /// Copy the whole blob, a chunk at a time, `stop` asked before each chunk.
    pub(crate) fn complete(mut self, stop: &dyn Fn() -> Result<()>) -> Result<()> {
        let mut buf = vec![0u8; super::store::CHUNK];
        loop {
            let _unit = crate::failpoint::unit();
            stop()?;
            if self.step(&mut buf)? == 0 {
                return self.finish();
            }
        }
    }
}

/// For the tar writer of an image load: errors come out as `io::Error`s that carry ours,
/// [`from_io`] gets them back.
impl Read for BlobCopy<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.step(buf).map_err(to_io)
    }
}

/// Our error inside an `io::Error`, for what only speaks `io::Read`.
pub(crate) fn to_io(e: Error) -> io::Error {
    io::Error::other(e)
}

/// The error of ours an `io::Error` carries, if it does ([`to_io`]).
pub(crate) fn from_io(e: io::Error) -> std::result::Result<Error, io::Error> {
    if !e.get_ref().is_some_and(|i| i.is::<Error>()) {
        return Err(e);
    }
    match e.into_inner().map(|i| i.downcast::<Error>()) {
        Some(Ok(ours)) => Ok(*ours),
        Some(Err(other)) => Err(io::Error::other(other)),
        None => Err(io::Error::other("an I/O error without its cause")),
    }
}

impl BlobCopy<'_> {
    /// The copy is given up: its partial file goes.
    fn discard(&mut self) {
        if !self.finished {
            let _ = fs::remove_file(&self.partial);
            self.finished = true;
        }
    }
}

impl Drop for BlobCopy<'_> {
    fn drop(&mut self) {
        self.discard();
    }
}

/// Where the tar writer reads an image's blobs, by their path in the store.
pub(crate) trait Blobs: Sync {
    /// The blob at `path`, or to be put there. Errors of ours travel inside the
    /// `io::Error` (see [`to_io`]).
    fn open(&self, path: &Path) -> io::Result<Box<dyn BlobRead + '_>>;
}

/// One blob's bytes for the tar.
pub(crate) trait BlobRead: Read {
    /// The bytes the tar entry promises.
    fn size(&self) -> u64;
    /// All of them were read: `Err` if they are not the blob's.
    fn done(&mut self) -> io::Result<()>;
}

/// The store's files as they are (verified when they were copied).
pub(crate) struct StoreFiles;

impl Blobs for StoreFiles {
    fn open(&self, path: &Path) -> io::Result<Box<dyn BlobRead + '_>> {
        let file = File::open(path)?;
        let size = file.metadata()?.len();
        Ok(Box::new(StoreFile { file, size }))
    }
}

struct StoreFile {
    file: File,
    size: u64,
}

impl Read for StoreFile {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.file.read(buf)
    }
}

impl BlobRead for StoreFile {
    fn size(&self) -> u64 {
        self.size
    }

    fn done(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The blobs of the images the engine lacks that the store lacks too, by their path in the
/// store: the load copies them.
pub(super) fn blobs_on_load(
    engine: &Engine,
    store: &Store,
    apps: &[App],
) -> Result<BTreeMap<PathBuf, Blob>> {
    let mut on_load = BTreeMap::new();
    for image in apps.iter().flat_map(|a| &a.images) {
        if engine.has_image(&image.id())? {
            continue;
        }
        for blob in std::iter::once(&image.config).chain(&image.layers) {
            if !store.has(blob) {
                on_load.insert(store.blob_path(&blob.digest), blob.clone());
            }
        }
    }
    Ok(on_load)
}

/// An image load's blobs: those in `blobs` and not yet in the store come from the stick
/// through a [`BlobCopy`] that puts them in the store; the others are the store's files.
pub(super) struct Tee<'a> {
    store: &'a Store,
    src: &'a Bundle,
    blobs: BTreeMap<PathBuf, Blob>,
    cancel: &'a Cancel,
    tick: Box<dyn Fn(u64) + Sync + 'a>,
    /// The blobs copied through the loads, on their way into place.
    settler: Settler,
    /// The blobs [`Tee::rest`] copied, verified and in place, with their sizes.
    copied: Mutex<Vec<(String, u64)>>,
}

impl<'a> Tee<'a> {
    /// `blobs` ([`blobs_on_load`]) copied from `src` as loads read them; `progress` goes on
    /// from `done` bytes of `total`.
    pub(super) fn new(
        store: &'a Store,
        src: &'a Bundle,
        blobs: BTreeMap<PathBuf, Blob>,
        cancel: &'a Cancel,
        progress: &'a (dyn Fn(FetchProgress) + Sync),
        (done, total): (u64, u64),
    ) -> Result<Tee<'a>> {
        let done = AtomicU64::new(done);
        let tick = move |n: u64| {
            let d = done.fetch_add(n, Ordering::Relaxed) + n;
            progress(FetchProgress {
                done: d,
                total: total.max(d),
            });
        };
        Ok(Tee {
            store,
            src,
            blobs,
            cancel,
            tick: Box::new(tick),
            settler: Settler::start()?,
            copied: Mutex::new(Vec::new()),
        })
    }

    /// The blobs copied and in place, with their sizes, once every copy is settled; `Err`
    /// if one could not be put in place.
    pub(super) fn finish(self) -> (Vec<(String, u64)>, Result<()>) {
        let (mut copied, settled) = self.settler.finish();
        copied.extend(self.copied.into_inner().unwrap_or_default());
        (copied, settled)
    }

    /// Copy the blobs no load read (an image found in the engine after all, loaded under
    /// another tag): the store must hold every blob of the apps it records.
    pub(super) fn rest(&self) -> Result<()> {
        // A blob still settling is not in the store yet, and must not be copied twice.
        self.settler.wait_all();
        for blob in self.blobs.values().filter(|b| !self.store.has(b)) {
            let copy = BlobCopy::start(self.store, self.src, blob, self.cancel, &*self.tick)?;
            copy.complete(&|| Ok(()))?;
            if let Ok(mut copied) = self.copied.lock() {
                copied.push((blob.digest.clone(), blob.size.unwrap_or(0)));
            }
        }
        Ok(())
    }
}

impl Blobs for Tee<'_> {
    fn open(&self, path: &Path) -> std::io::Result<Box<dyn BlobRead + '_>> {
        // Two images can share a layer: the first load to reach it copies it, the others
        // read the store's copy.
        let copy_it = self
            .blobs
            .get(path)
            .filter(|b| self.settler.claim(path, || self.store.has(b)));
        let Some(blob) = copy_it else {
            return StoreFiles.open(path);
        };
        let copy = match BlobCopy::start(self.store, self.src, blob, self.cancel, &*self.tick) {
            Ok(copy) => copy,
            Err(e) => {
                self.settler.release(path);
                return Err(to_io(e));
            }
        };
        Ok(Box::new(Copying {
            size: copy.len(),
            copy: BufReader::with_capacity(super::store::CHUNK, copy),
            settler: &self.settler,
            path: path.to_path_buf(),
            handed_over: false,
        }))
    }
}

/// A blob read from the stick for the engine, into the store on the way.
struct Copying<'a> {
    copy: BufReader<BlobCopy<'a>>,
    size: u64,
    settler: &'a Settler,
    /// Its path in the store: claimed until handed over to the settler.
    path: PathBuf,
    handed_over: bool,
}

impl std::io::Read for Copying<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.copy.read(buf)
    }
}

impl BlobRead for Copying<'_> {
    fn size(&self) -> u64 {
        self.size
    }

    fn done(&mut self) -> std::io::Result<()> {
        // Bytes read ahead past the entry mean a source longer than it said: `finish`
        // counts them and refuses.
        let copy = self.copy.get_mut();
        if copy.finished {
            return Ok(());
        }
        copy.verify().map_err(to_io)?;
        let written = copy.written().map_err(to_io)?;
        self.settler.hand_over(written)?;
        self.handed_over = true;
        Ok(())
    }
}

impl Drop for Copying<'_> {
    fn drop(&mut self) {
        if !self.handed_over {
            // The partial file goes before the claim: a copy begun after must not lose its
            // own partial file to this one's removal.
            self.copy.get_mut().discard();
            self.settler.release(&self.path);
        }
    }
}
