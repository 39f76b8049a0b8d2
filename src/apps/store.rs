//! The device's app store (`[pacman] reset_apps_root`), laid out like a bundle's `apps/`:
//! `blobs/sha256/<hex>` and `apps/<name>/<hex>/{uri,manifest.json}`, so that
//! aktualizr-lite and composectl can read what we wrote.
//!
//! Blobs come from the stick hashed while copied, into a `.partial` file that is renamed into
//! place only once its digest matched: a blob in the store is whole and verified, a partial
//! one never carries a blob's name. Several blobs are copied at once.

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use anyhow::Context as _;
use sha2::{Digest, Sha256};

use super::content::{App, Blob, BlobSource};
use crate::error::{Code, Error, OrCode, Result};

const CHUNK: usize = 1 << 20;

pub struct Store {
    root: PathBuf,
}

/// What [`Store::fetch`] did.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct FetchStats {
    pub copied: usize,
    pub skipped: usize,
    pub bytes: u64,
    pub seconds: f64,
}

/// Progress of a fetch: bytes copied so far of the bytes to copy.
#[derive(Debug, Clone, Copy)]
pub struct FetchProgress {
    pub done: u64,
    pub total: u64,
}

impl Store {
    pub fn new(root: &Path) -> Store {
        Store {
            root: root.to_path_buf(),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn blobs_dir(&self) -> PathBuf {
        self.root.join("blobs/sha256")
    }

    pub(crate) fn blob_path(&self, hex: &str) -> PathBuf {
        self.blobs_dir().join(hex)
    }

    /// Is the blob in the store with the expected size? Blobs only get their name once
    /// verified, so presence with the right size is enough.
    fn has(&self, blob: &Blob) -> bool {
        match fs::symlink_metadata(self.blob_path(&blob.digest)) {
            Ok(m) => m.is_file() && blob.size.is_none_or(|s| s == m.len()),
            Err(_) => false,
        }
    }

    /// Copy every blob of `apps` that the store lacks from `src`, `parallel` at a time, then
    /// record each app version. A blob whose bytes do not match its digest fails the fetch
    /// (50), ENOSPC gives 60; either way the blobs this fetch added are removed again, so
    /// a failed install leaves the store as it found it.
    pub(crate) fn fetch(
        &self,
        src: &dyn BlobSource,
        apps: &[App],
        parallel: usize,
        progress: &(dyn Fn(FetchProgress) + Sync),
    ) -> Result<FetchStats> {
        let start = Instant::now();
        let dir = self.blobs_dir();
        // Directories this fetch creates go again if it fails.
        let created: Vec<PathBuf> = [self.root.clone(), self.root.join("blobs"), dir.clone()]
            .into_iter()
            .filter(|d| !d.exists())
            .collect();
        fs::create_dir_all(&dir)
            .with_context(|| format!("creating {}", dir.display()))
            .map_err(|e| space_or(e, Code::Internal))?;
        let all: BTreeSet<Blob> = apps.iter().flat_map(App::blobs).collect();
        let mut todo: Vec<Blob> = all.iter().filter(|b| !self.has(b)).cloned().collect();
        let mut stats = FetchStats {
            skipped: all.len() - todo.len(),
            copied: todo.len(),
            ..FetchStats::default()
        };
        // Largest first, so the long copies overlap instead of trailing at the end.
        todo.sort_by_key(|b| std::cmp::Reverse(b.size.unwrap_or(0)));
        let total: u64 = todo.iter().filter_map(|b| b.size).sum();
        let queue = Mutex::new(todo);
        let done = AtomicU64::new(0);
        let failed = AtomicBool::new(false);
        let added: Mutex<Vec<String>> = Mutex::new(Vec::new());
        let first_error: Mutex<Option<Error>> = Mutex::new(None);
        std::thread::scope(|s| {
            for _ in 0..parallel.max(1) {
                s.spawn(|| loop {
                    if failed.load(Ordering::Relaxed) {
                        return;
                    }
                    let next = queue.lock().ok().and_then(|mut q| q.pop());
                    let Some(blob) = next else { return };
                    let tick = |n: u64| {
                        let d = done.fetch_add(n, Ordering::Relaxed) + n;
                        // Manifests have no size in advance: the total grows with them.
                        progress(FetchProgress {
                            done: d,
                            total: total.max(d),
                        });
                    };
                    match self.copy_blob(src, &blob, &failed, &tick) {
                        Ok(()) => {
                            if let Ok(mut a) = added.lock() {
                                a.push(blob.digest.clone());
                            }
                        }
                        Err(e) => {
                            failed.store(true, Ordering::Relaxed);
                            if let Ok(mut slot) = first_error.lock() {
                                slot.get_or_insert(e);
                            }
                            return;
                        }
                    }
                });
            }
        });
        if let Some(e) = first_error.into_inner().ok().flatten() {
            for hex in added.into_inner().unwrap_or_default() {
                let _ = fs::remove_file(self.blob_path(&hex));
            }
            for d in created.iter().rev() {
                let _ = fs::remove_dir(d);
            }
            return Err(e);
        }
        sync_dir(&dir)?;
        for app in apps {
            self.record(app)?;
        }
        stats.bytes = done.into_inner();
        stats.seconds = start.elapsed().as_secs_f64();
        Ok(stats)
    }

    fn copy_blob(
        &self,
        src: &dyn BlobSource,
        blob: &Blob,
        stop: &AtomicBool,
        tick: &dyn Fn(u64),
    ) -> Result<()> {
        let hex = &blob.digest;
        let Some((mut from, len)) = src.open_blob(hex)? else {
            return Err(Error::content_missing(format!(
                "blob {hex} is not in {}",
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
        let partial = self.blobs_dir().join(format!(".{hex}.partial"));
        let result = (|| {
            let mut to = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .custom_flags(libc_o_nofollow())
                .open(&partial)
                .or_internal(format!("creating {}", partial.display()))?;
            let mut hasher = Sha256::new();
            let mut buf = vec![0u8; CHUNK];
            let mut copied = 0u64;
            loop {
                if stop.load(Ordering::Relaxed) {
                    return Err(Error::copy(format!(
                        "blob {hex}: stopped: another copy failed"
                    )));
                }
                let n = match from.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(e) => {
                        return Err(Error::copy(format!(
                            "reading blob {hex} from {}: {e}",
                            src.describe()
                        )))
                    }
                };
                hasher.update(&buf[..n]);
                to.write_all(&buf[..n])
                    .or_internal(format!("writing {}", partial.display()))?;
                copied += n as u64;
                crate::watchdog::beat();
                tick(n as u64);
            }
            if copied != len {
                return Err(Error::copy(format!(
                    "blob {hex} in {}: {copied} of {len} bytes read (truncated or removed)",
                    src.describe()
                )));
            }
            if hex::encode(hasher.finalize()) != *hex {
                return Err(Error::copy(format!(
                    "blob {hex} in {} does not match its digest",
                    src.describe()
                )));
            }
            to.sync_all()
                .or_internal(format!("syncing {}", partial.display()))?;
            fs::rename(&partial, self.blob_path(hex))
                .or_internal(format!("renaming {}", partial.display()))
        })();
        if result.is_err() {
            let _ = fs::remove_file(&partial);
        }
        if result.is_ok() {
            crate::failpoint::hit("install-blob-copied");
        }
        result
    }

    /// `apps/<name>/<hex>/{uri,manifest.json}`: how composectl and aktualizr-lite find an
    /// app version in a store.
    fn record(&self, app: &App) -> Result<()> {
        let dir = self.app_dir(&app.name, &app.digest);
        crate::durable::replace(&dir.join("manifest.json"), &app.manifest)
            .and_then(|()| crate::durable::replace(&dir.join("uri"), app.uri.as_bytes()))
            .map_err(|e| space_or(e, Code::Internal))
    }

    fn app_dir(&self, name: &str, hex: &str) -> PathBuf {
        self.root.join("apps").join(name).join(hex)
    }

    /// App versions recorded in the store: `(name, digest hex)`.
    pub fn versions(&self) -> Result<Vec<(String, String)>> {
        let mut out = Vec::new();
        for name in list(&self.root.join("apps"))? {
            for hex in list(&self.root.join("apps").join(&name))? {
                out.push((name.clone(), hex));
            }
        }
        Ok(out)
    }

    /// Remove app versions not in `keep` and every blob none of `keep` uses. Run only after
    /// an update succeeded: until then the previous apps may be needed for a rollback.
    pub fn prune(&self, keep: &[App]) -> Result<usize> {
        let used: BTreeSet<String> = keep.iter().flat_map(App::blobs).map(|b| b.digest).collect();
        for (name, hex) in self.versions()? {
            if !keep.iter().any(|a| a.name == name && a.digest == hex) {
                let dir = self.app_dir(&name, &hex);
                fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
            }
        }
        for name in list(&self.root.join("apps"))? {
            // Only empty directories go; remove_dir refuses the others.
            let _ = fs::remove_dir(self.root.join("apps").join(name));
        }
        let mut removed = 0;
        for hex in list(&self.blobs_dir())? {
            if !used.contains(&hex) {
                let path = self.blob_path(&hex);
                fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

impl BlobSource for Store {
    fn open_blob(&self, hex: &str) -> Result<Option<(File, u64)>> {
        let path = self.blob_path(hex);
        let file = match OpenOptions::new()
            .read(true)
            .custom_flags(libc_o_nofollow())
            .open(&path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(Error::caused(
                    Code::Internal,
                    format!("opening {}", path.display()),
                    e,
                ))
            }
        };
        let meta = file
            .metadata()
            .or_internal(format!("reading {}", path.display()))?;
        if !meta.is_file() {
            return Err(Error::copy(format!(
                "{} is not a regular file",
                path.display()
            )));
        }
        Ok(Some((file, meta.len())))
    }

    fn describe(&self) -> String {
        format!("the app store {}", self.root.display())
    }
}

impl BlobSource for crate::core::bundle::Bundle {
    fn open_blob(&self, hex: &str) -> Result<Option<(File, u64)>> {
        self.open_file(&format!("apps/blobs/sha256/{hex}"))
    }

    fn describe(&self) -> String {
        format!("bundle {}", self.path().display())
    }
}

fn libc_o_nofollow() -> i32 {
    nix::fcntl::OFlag::O_NOFOLLOW.bits()
}

/// Names in `dir` that are not hidden (partial files and temporaries are).
fn list(dir: &Path) -> Result<Vec<String>> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(Error::caused(
                Code::Internal,
                format!("listing {}", dir.display()),
                e,
            ))
        }
    };
    let mut names = Vec::new();
    for entry in entries {
        let name = entry
            .or_internal(format!("listing {}", dir.display()))?
            .file_name()
            .to_string_lossy()
            .into_owned();
        if !name.starts_with('.') {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .or_internal(format!("syncing {}", dir.display()))
}

fn space_or(e: anyhow::Error, code: Code) -> Error {
    if e.chain().any(crate::error::is_disk_full) {
        Error::new(Code::NoSpace, format!("{e:#}"))
    } else if code == Code::Internal {
        Error::Internal(e)
    } else {
        Error::new(code, format!("{e:#}"))
    }
}
