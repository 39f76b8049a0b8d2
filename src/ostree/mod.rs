//! The device's OSTree sysroot, through libostree.
//!
//! Which deployment counts as booted depends on `[pacman] booted`: the real booted one, the
//! default one (`staged`, aktualizr-lite's test setting for a sysroot that is not booted), or
//! the one named by the simulation files (`simulated`, see docs/architecture.md: a test
//! double for the reboot and the bootloader, active only when configured).
//!
//! - [`scan_bundle_commit`] ([`tree_walk`] over [`stick_repo`]): the bundle's repo, checked
//!   and walked by us;
//! - [`pull_from_bundle`] ([`pull`]): the commit from the stick into the sysroot repo;
//! - [`deploy`], [`make_default`], [`remove_deployment`], [`cleanup`]
//!   ([`deployment_list`]): the deployment list, each under the sysroot lock, as
//!   aktualizr(-lite) manipulates it;
//! - [`deployments`], [`booted`], [`booted_commit`], [`boot_id`]: what the device runs;

mod deployment_list;
mod import;
mod pull;
mod stick_repo;
mod tree_walk;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use ostree::gio::prelude::*;
use ostree::{gio, glib};

use crate::config::{BootedMode, Pacman};

pub use deployment_list::{cleanup, deploy, make_default, remove_deployment};
pub use pull::pull_beside;
#[cfg(feature = "internals")]
pub use pull::pull_from_bundle;
#[cfg(feature = "internals")]
pub use pull::{PullProgress, PullStats};
pub use tree_walk::scan_bundle_commit;
pub(crate) use tree_walk::RootfsPlan;

/// Whether the repo has `commit` with its whole tree (not a partial or commit-only pull).
/// `name` is the repo's path for messages (libostree only knows the sysroot repo by fd).
fn commit_complete(repo: &ostree::Repo, name: &Path, commit: &str) -> anyhow::Result<bool> {
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

/// Directory of the simulated-boot files, relative to the sysroot.
pub const SIM_DIR: &str = ".usb-update-sim";

/// Boot id of a simulated device whose `boot_id` file does not exist yet.
pub(crate) const SIM_INITIAL_BOOT_ID: &str = "sim-0";

/// How long a deployment change waits for another libostree writer (`ostree admin`,
/// a second agent) to release the sysroot lock before it gives up.
const LOCK_TIMEOUT: Duration = Duration::from_secs(120);

/// One deployment of the configured OS.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DeploymentInfo {
    pub osname: String,
    /// The OSTree commit checksum (the TUF target's sha256).
    pub csum: String,
    /// Distinguishes two deployments of the same commit (`<csum>.<serial>`).
    pub serial: i32,
    /// The deployment's root directory (absolute, under the sysroot): read
    /// `usr/lib/firmware/version.txt` or `usr/lib/os-release` of a new deployment here.
    pub path: PathBuf,
    /// Kernel command line of its boot entry (the `options` line), empty when none.
    pub kargs: String,
    /// `refspec` of its origin file: the commit checksum for what we deploy.
    pub origin_refspec: Option<String>,
    pub pinned: bool,
}

fn open_sysroot(path: &Path) -> anyhow::Result<ostree::Sysroot> {
    // libostree g_print()s progress such as "Freed objects: 1.6 kB" after a cleanup; our
    // stdout is the operator's one line per step (and --json), so it goes to the log.
    ostree::glib::set_print_handler(|msg| tracing::info!("libostree: {}", msg.trim_end()));
    let sysroot = ostree::Sysroot::new(Some(&gio::File::for_path(path)));
    sysroot
        .load(gio::Cancellable::NONE)
        .with_context(|| format!("loading the OSTree sysroot at {}", path.display()))?;
    Ok(sysroot)
}

/// The sysroot lock (`<sysroot>/ostree/lock`), held while the deployment list changes, so
/// that `ostree admin` or a second agent never interleaves with us; released on drop.
struct SysrootLock<'a> {
    sysroot: &'a ostree::Sysroot,
}

impl<'a> SysrootLock<'a> {
    fn acquire(sysroot: &'a ostree::Sysroot, path: &Path) -> anyhow::Result<Self> {
        let start = Instant::now();
        let mut told = false;
        loop {
            let got = sysroot
                .try_lock()
                .with_context(|| format!("locking the OSTree sysroot at {}", path.display()))?;
            if got {
                return Ok(SysrootLock { sysroot });
            }
            if start.elapsed() > LOCK_TIMEOUT {
                bail!(
                    "the OSTree sysroot at {} is locked by another process (ostree admin?) for more than {} s",
                    path.display(),
                    LOCK_TIMEOUT.as_secs()
                );
            }
            if !told {
                tracing::info!("waiting for the OSTree sysroot lock of {}", path.display());
                told = true;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for SysrootLock<'_> {
    fn drop(&mut self) {
        self.sysroot.unlock();
    }
}

fn info(sysroot: &ostree::Sysroot, root: &Path, d: &ostree::Deployment) -> DeploymentInfo {
    let kargs = d
        .bootconfig()
        .and_then(|b| b.get("options"))
        .map(|s| s.to_string())
        .unwrap_or_default();
    let origin_refspec = d
        .origin()
        .and_then(|o| o.string("origin", "refspec").ok())
        .map(|s| s.to_string());
    DeploymentInfo {
        osname: d.osname().to_string(),
        csum: d.csum().to_string(),
        serial: d.deployserial(),
        path: root.join(sysroot.deployment_dirpath(d).as_str()),
        kargs,
        origin_refspec,
        pinned: d.is_pinned(),
    }
}

fn os_deployments(sysroot: &ostree::Sysroot, os: &str) -> Vec<ostree::Deployment> {
    sysroot
        .deployments()
        .into_iter()
        .filter(|d| d.osname() == os)
        .collect()
}

/// Deployments of `pacman.os` in boot order: the first is the default (what the next boot
/// starts), the others are rollback candidates.
pub fn deployments(pacman: &Pacman) -> anyhow::Result<Vec<DeploymentInfo>> {
    let sysroot = open_sysroot(&pacman.sysroot)?;
    Ok(os_deployments(&sysroot, &pacman.os)
        .iter()
        .map(|d| info(&sysroot, &pacman.sysroot, d))
        .collect())
}

/// Path of a simulation file (`booted`, `boot_id`).
pub fn sim_file(sysroot: &Path, name: &str) -> PathBuf {
    sysroot.join(SIM_DIR).join(name)
}

fn read_sim(sysroot: &Path, name: &str) -> anyhow::Result<Option<String>> {
    let p = sim_file(sysroot, name);
    match std::fs::read_to_string(&p) {
        Ok(s) => Ok(Some(s.trim().to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", p.display())),
    }
}

/// The deployment that counts as running, from an already loaded sysroot.
fn booted_deployment(
    sysroot: &ostree::Sysroot,
    pacman: &Pacman,
) -> anyhow::Result<Option<ostree::Deployment>> {
    Ok(match pacman.booted {
        BootedMode::Booted => sysroot.booted_deployment(),
        BootedMode::Staged => os_deployments(sysroot, &pacman.os).into_iter().next(),
        BootedMode::Simulated => match read_sim(&pacman.sysroot, "booted")? {
            None => os_deployments(sysroot, &pacman.os).into_iter().next(),
            Some(csum) => {
                let found = os_deployments(sysroot, &pacman.os)
                    .into_iter()
                    .find(|d| d.csum() == csum.as_str());
                match found {
                    Some(d) => Some(d),
                    None => bail!(
                        "simulated boot: {} names commit {csum}, which is not a deployment of {:?} in {}",
                        sim_file(&pacman.sysroot, "booted").display(),
                        pacman.os,
                        pacman.sysroot.display()
                    ),
                }
            }
        },
    })
}

/// The deployment the device runs now (see the module doc for the three modes); `None` for
/// a sysroot nobody booted in `booted = "booted"` mode, or one without deployments.
pub fn booted(pacman: &Pacman) -> anyhow::Result<Option<DeploymentInfo>> {
    let sysroot = open_sysroot(&pacman.sysroot)?;
    Ok(booted_deployment(&sysroot, pacman)?.map(|d| info(&sysroot, &pacman.sysroot, &d)))
}

/// The commit the device runs now, or `None` when no deployment counts as booted (a
/// sysroot that was not booted with `booted = "booted"`). In simulated mode the file's
/// checksum is returned as written, deployed or not (`check` only compares commits).
pub fn booted_commit(pacman: &Pacman) -> anyhow::Result<Option<String>> {
    if pacman.booted == BootedMode::Simulated {
        if let Some(csum) = read_sim(&pacman.sysroot, "booted")? {
            return Ok(Some(csum));
        }
    }
    Ok(booted(pacman)?.map(|d| d.csum))
}

/// The id of the current boot: what `install` records and `run` compares to tell whether
/// the reboot happened. Simulated: `<sysroot>/.usb-update-sim/boot_id`, or `sim-0`.
pub fn boot_id(pacman: &Pacman) -> anyhow::Result<String> {
    if pacman.booted == BootedMode::Simulated {
        return Ok(read_sim(&pacman.sysroot, "boot_id")?
            .unwrap_or_else(|| SIM_INITIAL_BOOT_ID.to_string()));
    }
    let p = Path::new("/proc/sys/kernel/random/boot_id");
    let id = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
    Ok(id.trim().to_string())
}

fn is_commit_checksum(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Message of a libostree failure that means "disk full" (ENOSPC or its own free-space
/// reserve), as aktualizr recognises them.
fn is_no_space(e: &glib::Error) -> bool {
    let msg = e.message();
    // GIO files ENOMEM under NoSpace too, and a pulled stick's ext4 answers with ENOMEM:
    // that is a medium failing (50), not a full disk.
    (e.matches(gio::IOErrorEnum::NoSpace) && !msg.contains("Cannot allocate memory"))
        || msg.contains("No space left on device")
        || (msg.contains("min-free-space") && msg.contains("would be exceeded"))
        || (msg.contains("Delta requires") && msg.contains("free space"))
}

/// The `version` metadata of `commit` in the sysroot's repository (what `ostree commit
/// --add-metadata-string=version=` sets), if the commit is there and has one.
pub fn commit_version(pacman: &Pacman, commit: &str) -> anyhow::Result<Option<String>> {
    let Some(v) = load_commit(pacman, commit)? else {
        return Ok(None);
    };
    let meta = glib::VariantDict::new(Some(&v.child_value(0)));
    Ok(meta
        .lookup_value("version", Some(glib::VariantTy::STRING))
        .and_then(|s| s.str().map(str::to_string)))
}

/// The timestamp of `commit` (seconds since the epoch, as `ostree commit` stored it), if
/// the commit is in the sysroot's repository.
pub fn commit_timestamp(pacman: &Pacman, commit: &str) -> anyhow::Result<Option<u64>> {
    Ok(load_commit(pacman, commit)?.map(|v| ostree::commit_get_timestamp(&v)))
}

fn load_commit(pacman: &Pacman, commit: &str) -> anyhow::Result<Option<glib::Variant>> {
    let sysroot = open_sysroot(&pacman.sysroot)?;
    let repo = sysroot.repo();
    let found = repo
        .has_object(ostree::ObjectType::Commit, commit, gio::Cancellable::NONE)
        .with_context(|| format!("looking up commit {commit} in {}", pacman.sysroot.display()))?;
    if !found {
        return Ok(None);
    }
    let v = repo
        .load_variant(ostree::ObjectType::Commit, commit)
        .with_context(|| format!("reading commit {commit} in {}", pacman.sysroot.display()))?;
    Ok(Some(v))
}

/// A small text file of `commit` in the sysroot's repository (the commit is pulled, so its
/// content is verified), `None` when the commit has no such file. Capped: the file comes
/// from a stick, and only a few lines are ever expected.
pub(crate) fn commit_file(
    pacman: &Pacman,
    commit: &str,
    path: &str,
) -> anyhow::Result<Option<String>> {
    const CAP: i64 = 64 * 1024;
    let what = || format!("{path} in commit {commit} of {}", pacman.sysroot.display());
    let sysroot = open_sysroot(&pacman.sysroot)?;
    let repo = sysroot.repo();
    let (root, _) = repo
        .read_commit(commit, gio::Cancellable::NONE)
        .with_context(what)?;
    let file = root.resolve_relative_path(path);
    let info = match file.query_info(
        "standard::size,standard::type",
        gio::FileQueryInfoFlags::NOFOLLOW_SYMLINKS,
        gio::Cancellable::NONE,
    ) {
        Ok(i) => i,
        Err(e) if e.matches(gio::IOErrorEnum::NotFound) => return Ok(None),
        Err(e) => return Err(e).with_context(what),
    };
    if info.file_type() != gio::FileType::Regular {
        return Ok(None);
    }
    if info.size() > CAP {
        anyhow::bail!("{} is {} bytes, over {CAP}", what(), info.size());
    }
    let (bytes, _) = file
        .load_contents(gio::Cancellable::NONE)
        .with_context(what)?;
    Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_checksums() {
        assert!(is_commit_checksum(&"a".repeat(64)));
        assert!(!is_commit_checksum(&"A".repeat(64)));
        assert!(!is_commit_checksum("lmp"));
        assert!(!is_commit_checksum(&"a".repeat(63)));
    }

    #[test]
    fn no_space_messages() {
        let e = glib::Error::new(
            gio::IOErrorEnum::Failed,
            "min-free-space-percent '3%' would be exceeded, at least 4.1 kB requested",
        );
        assert!(is_no_space(&e));
        let e = glib::Error::new(gio::IOErrorEnum::NoSpace, "fallocate");
        assert!(is_no_space(&e));
        let e = glib::Error::new(
            gio::IOErrorEnum::Failed,
            "Writing content object: No space left on device",
        );
        assert!(is_no_space(&e));
        let e = glib::Error::new(gio::IOErrorEnum::Failed, "Corrupted file object");
        assert!(!is_no_space(&e));
        let e = glib::Error::new(
            gio::IOErrorEnum::NoSpace,
            "opening repo: openat(config): Cannot allocate memory",
        );
        assert!(!is_no_space(&e));
    }
}
