//! The device's app store (`[pacman] reset_apps_root`), laid out like a bundle's `apps/`:
//! `blobs/sha256/<hex>` and `apps/<name>/<hex>/{uri,manifest.json}`, so that
//! aktualizr-lite and composectl can read what we wrote.
//!
//! Blobs come from the stick hashed while copied, into a `.partial` file that is renamed into
//! place only once its digest matched: a blob in the store is whole and verified, a partial
//! one never carries a blob's name ([`super::copy`]). The fetch copies several blobs at once;
//! the blobs of the images to load are copied by the load instead, as it reads them.

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use anyhow::Context as _;

use super::content::{App, Blob, BlobSource};
use super::copy::BlobCopy;
use crate::error::{Code, Error, OrCode, Result};
use crate::overlap::Cancel;

pub(crate) const CHUNK: usize = 1 << 20;

pub struct Store {
    root: PathBuf,
}

/// What [`Store::fetch`] did.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct FetchStats {
    /// The blobs this fetch put in the store, and the app versions it recorded that were
    /// not there before: what [`Store::undo`] takes back.
    #[serde(skip)]
    pub added: Vec<String>,
    #[serde(skip)]
    pub new_versions: Vec<PathBuf>,
    /// The store's directories this fetch created (only empty ones go on undo).
    #[serde(skip)]
    pub created: Vec<PathBuf>,
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
    pub(crate) fn has(&self, blob: &Blob) -> bool {
        match fs::symlink_metadata(self.blob_path(&blob.digest)) {
            Ok(m) => m.is_file() && blob.size.is_none_or(|s| s == m.len()),
            Err(_) => false,
        }
    }

    /// Copy every blob of `apps` that the store lacks from `src`, `parallel` at a time, but
    /// those in `on_load`: the image load copies them as it reads them (they are looked up
    /// here all the same). A blob whose bytes do not match its digest fails the fetch (50),
    /// ENOSPC gives 60; either way the blobs this fetch added are removed again, so a
    /// failed install leaves the store as it found it. The app versions are recorded by
    /// [`Store::record_versions`] once every blob is in.
    pub(crate) fn fetch(
        &self,
        src: &dyn BlobSource,
        apps: &[App],
        on_load: &BTreeSet<String>,
        parallel: usize,
        progress: &(dyn Fn(FetchProgress) + Sync),
        cancel: &Cancel,
    ) -> Result<FetchStats> {
        let start = Instant::now();
        let all: BTreeSet<Blob> = apps.iter().flat_map(App::blobs).collect();
        let missing: Vec<Blob> = all.iter().filter(|b| !self.has(b)).cloned().collect();
        // Every blob is looked up before the first byte is copied: a bundle that lacks one
        // is refused (8) with the store untouched, and one that is gone later is the medium
        // failing (50), whatever errno its filesystem gives for a lookup on a pulled stick.
        for blob in &missing {
            if src.open_blob(&blob.digest)?.is_none() {
                return Err(Error::content_missing(format!(
                    "blob {} is not in {}",
                    blob.digest,
                    src.describe()
                )));
            }
        }
        // Fault tests take a blob away here: found, not yet opened for the copy.
        crate::failpoint::pause("blobs-found");
        let dir = self.blobs_dir();
        // Directories this fetch creates go again if it fails.
        let created: Vec<PathBuf> = [self.root.clone(), self.root.join("blobs"), dir.clone()]
            .into_iter()
            .filter(|d| !d.exists())
            .collect();
        fs::create_dir_all(&dir)
            .with_context(|| format!("creating {}", dir.display()))
            .map_err(|e| space_or(e, Code::Internal))?;
        let skipped = all.len() - missing.len();
        let mut todo: Vec<Blob> = (missing.into_iter())
            .filter(|b| !on_load.contains(&b.digest))
            .collect();
        let mut stats = FetchStats {
            skipped,
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
        let stream = crate::failpoint::current();
        std::thread::scope(|s| {
            for _ in 0..parallel.max(1) {
                s.spawn(|| loop {
                    let _worker = crate::failpoint::join(stream);
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
                    match self.copy_blob(src, &blob, &failed, cancel, &tick) {
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
        stats.added = added.into_inner().unwrap_or_default();
        stats.created = created;
        stats.bytes = done.into_inner();
        stats.seconds = start.elapsed().as_secs_f64();
        Ok(stats)
    }

    /// Once every blob of `apps` is in: the blobs' directory synced, then each app version
    /// recorded (the new ones noted in `stats` for [`Store::undo`]).
    pub(crate) fn record_versions(&self, apps: &[App], stats: &mut FetchStats) -> Result<()> {
        sync_dir(&self.blobs_dir())?;
        for app in apps {
            let version = self.app_dir(&app.name, &app.digest);
            if !version.exists() {
                stats.new_versions.push(version);
            }
            self.record(app)?;
        }
        Ok(())
    }

    /// Take back what a fetch did (its blobs, the app versions it recorded): the install
    /// failed after it. Best effort: what cannot be removed is logged.
    pub fn undo(&self, stats: &FetchStats) {
        for hex in &stats.added {
            let path = self.blob_path(hex);
            if let Err(e) = fs::remove_file(&path) {
                tracing::warn!("removing {}: {e}", path.display());
            }
        }
        for dir in &stats.new_versions {
            if let Err(e) = fs::remove_dir_all(dir) {
                tracing::warn!("removing {}: {e}", dir.display());
            }
            // The app's directory, if this was its only version.
            if let Some(parent) = dir.parent() {
                let _ = fs::remove_dir(parent);
            }
        }
        if stats.created.contains(&self.root) {
            let _ = fs::remove_dir(self.root.join("apps"));
        }
        // remove_dir refuses the directories that are not empty.
        for dir in stats.created.iter().rev() {
            let _ = fs::remove_dir(dir);
        }
    }

    fn copy_blob(
        &self,
        src: &dyn BlobSource,
        blob: &Blob,
        stop: &AtomicBool,
        cancel: &Cancel,
        tick: &(dyn Fn(u64) + Sync),
    ) -> Result<()> {
        let stopped = || {
            if stop.load(Ordering::Relaxed) {
                return Err(Error::copy(format!(
                    "blob {}: stopped: another copy failed",
                    blob.digest
                )));
            }
            Ok(())
        };
        BlobCopy::start(self, src, blob, cancel, tick)?.complete(&stopped)
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
