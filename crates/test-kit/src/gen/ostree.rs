//! A real archive-mode OSTree repo with a commit, written through libostree.
//!
//! Trees are always materialised in a staging directory and committed with
//! `write_directory_to_mtree`, so a 500 MB tree streams from disk instead of sitting in
//! memory, and small and big trees go through one code path. Ownership is forced to 0:0,
//! xattrs are skipped and the commit time is fixed, so the same files give the same checksum
//! on every machine and every run.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{symlink, PermissionsExt as _};
use std::path::{Component, Path};

use anyhow::Context as _;
use ostree::glib::prelude::Cast as _;
use ostree::{gio, glib};

/// The commit time of every generated commit (2023-11-14T22:13:20Z).
pub const COMMIT_TIME: u64 = 1_700_000_000;

/// Kernel version of [`bootable_tree`]: `usr/lib/modules/<KERNEL_VERSION>/vmlinuz`.
pub const KERNEL_VERSION: &str = "6.1.0-lmp-standard";

const S_IFMT: u32 = 0o170000;
const S_IFDIR: u32 = 0o040000;
const S_IFLNK: u32 = 0o120000;

/// One entry of a tree. `mode` holds the permission bits and, optionally, the file type:
/// no type bits (or `S_IFREG`) is a regular file, `S_IFDIR` a directory, `S_IFLNK` a
/// symlink whose target is `contents`. Parent directories are created with mode 0755.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TreeFile {
    /// Relative, `/`-separated, e.g. `usr/lib/os-release`.
    pub path: String,
    pub contents: Vec<u8>,
    pub mode: u32,
}

impl TreeFile {
    pub fn file(path: &str, contents: impl Into<Vec<u8>>, mode: u32) -> TreeFile {
        TreeFile {
            path: path.to_string(),
            contents: contents.into(),
            mode: mode & 0o7777,
        }
    }

    pub fn dir(path: &str) -> TreeFile {
        TreeFile {
            path: path.to_string(),
            contents: Vec::new(),
            mode: S_IFDIR | 0o755,
        }
    }

    pub fn symlink(path: &str, target: &str) -> TreeFile {
        TreeFile {
            path: path.to_string(),
            contents: target.as_bytes().to_vec(),
            mode: S_IFLNK | 0o777,
        }
    }
}

/// What goes into the commit object besides the tree.
#[derive(Clone, Debug)]
pub struct CommitOptions {
    pub subject: String,
    /// `version` commit metadata (what `ostree commit --add-metadata-string=version=` sets).
    pub version: Option<String>,
    /// Seconds since the epoch.
    pub timestamp: u64,
    /// Index every object's size in the commit (`ostree commit --generate-sizes`).
    pub generate_sizes: bool,
}

impl CommitOptions {
    pub fn new(subject: &str, version: Option<&str>) -> CommitOptions {
        CommitOptions {
            subject: subject.to_string(),
            version: version.map(str::to_string),
            timestamp: COMMIT_TIME,
            generate_sizes: false,
        }
    }
}

/// Create an archive (= archive-z2) repo at `path`, or open the one already there.
pub fn init_archive_repo(path: &Path) -> anyhow::Result<()> {
    open_or_create(path).map(|_| ())
}

fn open_or_create(path: &Path) -> anyhow::Result<ostree::Repo> {
    let repo = ostree::Repo::new_for_path(path);
    if path.join("config").exists() {
        repo.open(gio::Cancellable::NONE)
            .with_context(|| format!("opening OSTree repo {}", path.display()))?;
    } else {
        fs::create_dir_all(path).with_context(|| format!("creating {}", path.display()))?;
        repo.create(ostree::RepoMode::Archive, gio::Cancellable::NONE)
            .with_context(|| format!("creating OSTree repo {}", path.display()))?;
    }
    Ok(repo)
}

/// Commit `files` on `branch` of the repo at `repo` (created if missing); returns the commit
/// checksum. The subject is the branch, no `version` metadata (see [`commit_tree_with`]).
pub fn commit_tree(repo: &Path, branch: &str, files: &[TreeFile]) -> anyhow::Result<String> {
    commit_tree_with(repo, branch, files, &CommitOptions::new(branch, None))
}

/// [`commit_tree`] with explicit commit options.
pub fn commit_tree_with(
    repo: &Path,
    branch: &str,
    files: &[TreeFile],
    opts: &CommitOptions,
) -> anyhow::Result<String> {
    let staging = staging_dir(repo)?;
    write_tree(staging.path(), files)?;
    commit_dir(repo, branch, staging.path(), opts)
}

/// A bootable LmP-like tree of `version` plus `extra`, and [`many_files`] generated content:
/// the benchmark path, streamed through a staging directory inside the repo.
pub fn commit_big_tree(
    repo: &Path,
    branch: &str,
    version: &str,
    extra: Vec<TreeFile>,
    count: usize,
    total_bytes: u64,
) -> anyhow::Result<String> {
    let staging = staging_dir(repo)?;
    write_tree(staging.path(), &bootable_tree(version, extra))?;
    many_files(staging.path(), count, total_bytes, seed_of(version))?;
    commit_dir(
        repo,
        branch,
        staging.path(),
        &CommitOptions::new(branch, Some(version)),
    )
}

fn staging_dir(repo: &Path) -> anyhow::Result<tempfile::TempDir> {
    // Inside the repo's own tmp/: same filesystem as the objects, and /tmp may be a small tmpfs.
    open_or_create(repo)?;
    tempfile::Builder::new()
        .prefix("gen-tree-")
        .tempdir_in(repo.join("tmp"))
        .with_context(|| format!("creating a staging directory in {}/tmp", repo.display()))
}

/// Commit the directory `dir` as it is (owners forced to 0:0, xattrs skipped, the top
/// directory 0755) on `branch`, in one repo transaction; returns the commit checksum.
pub fn commit_dir(
    repo_path: &Path,
    branch: &str,
    dir: &Path,
    opts: &CommitOptions,
) -> anyhow::Result<String> {
    let ctx = || format!("committing {} into {}", dir.display(), repo_path.display());
    let repo = open_or_create(repo_path)?;
    // Test data: a crash just means regenerating it, and fsync dominates small commits.
    repo.set_disable_fsync(true);
    let none = gio::Cancellable::NONE;
    let tx = repo.auto_transaction(none).with_context(ctx)?;
    let mtree = ostree::MutableTree::new();
    let filter = |_: &ostree::Repo, path: &str, info: &gio::FileInfo| {
        info.set_attribute_uint32("unix::uid", 0);
        info.set_attribute_uint32("unix::gid", 0);
        if path == "/" {
            info.set_attribute_uint32("unix::mode", S_IFDIR | 0o755);
        }
        ostree::RepoCommitFilterResult::Allow
    };
    let mut flags = ostree::RepoCommitModifierFlags::SKIP_XATTRS;
    if opts.generate_sizes {
        flags |= ostree::RepoCommitModifierFlags::GENERATE_SIZES;
    }
    let modifier = ostree::RepoCommitModifier::new(flags, Some(Box::new(filter)));
    repo.write_directory_to_mtree(&gio::File::for_path(dir), &mtree, Some(&modifier), none)
        .with_context(ctx)?;
    let root = repo.write_mtree(&mtree, none).with_context(ctx)?;
    let root = root
        .downcast::<ostree::RepoFile>()
        .map_err(|_| anyhow::anyhow!("write_mtree did not return a RepoFile"))
        .with_context(ctx)?;
    let meta = glib::VariantDict::new(None);
    if let Some(v) = &opts.version {
        meta.insert("version", v.as_str());
    }
    let checksum = repo
        .write_commit_with_time(
            None,
            Some(&opts.subject),
            None,
            Some(&meta.end()),
            &root,
            opts.timestamp,
            none,
        )
        .with_context(ctx)?;
    repo.transaction_set_ref(None, branch, Some(&checksum));
    tx.commit(none).with_context(ctx)?;
    Ok(checksum.to_string())
}

/// Materialise `files` under `dir`, with exact modes (umask does not matter).
pub fn write_tree(dir: &Path, files: &[TreeFile]) -> anyhow::Result<()> {
    for f in files {
        let rel = Path::new(&f.path);
        if rel
            .components()
            .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
        {
            anyhow::bail!("tree path {:?} is not relative", f.path);
        }
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            make_dirs(dir, parent)?;
        }
        let ctx = || format!("writing {}", path.display());
        match f.mode & S_IFMT {
            S_IFDIR => {
                make_dirs(dir, &path)?;
                fs::set_permissions(&path, fs::Permissions::from_mode(f.mode & 0o7777))
                    .with_context(ctx)?;
            }
            S_IFLNK => {
                let target = std::str::from_utf8(&f.contents)
                    .with_context(|| format!("symlink target of {} is not UTF-8", f.path))?;
                symlink(target, &path).with_context(ctx)?;
            }
            _ => {
                fs::write(&path, &f.contents).with_context(ctx)?;
                fs::set_permissions(&path, fs::Permissions::from_mode(f.mode & 0o7777))
                    .with_context(ctx)?;
            }
        }
    }
    Ok(())
}

fn make_dirs(top: &Path, dir: &Path) -> anyhow::Result<()> {
    if dir == top || dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        make_dirs(top, parent)?;
    }
    fs::create_dir(dir).with_context(|| format!("creating {}", dir.display()))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755))
        .with_context(|| format!("chmod {}", dir.display()))
}

/// What `ostree admin deploy` needs and an LmP rootfs has: `usr/lib/os-release` with the
/// version, a kernel and initramfs under `usr/lib/modules/<kver>/`, `usr/etc/` (becomes `/etc`),
/// the usual top-level directories; then `extra` (later entries win on the same path).
pub fn bootable_tree(version: &str, extra: Vec<TreeFile>) -> Vec<TreeFile> {
    let os_release = format!(
        "ID=lmp\nNAME=\"Linux-microPlatform\"\nVERSION=\"{version}\"\nVERSION_ID={version}\n\
         IMAGE_VERSION={version}\nPRETTY_NAME=\"Linux-microPlatform {version}\"\n"
    );
    let modules = format!("usr/lib/modules/{KERNEL_VERSION}");
    let mut files = vec![
        TreeFile::file("usr/lib/os-release", os_release, 0o644),
        TreeFile::symlink("usr/etc/os-release", "../lib/os-release"),
        TreeFile::file("usr/etc/hostname", "lmp\n", 0o644),
        TreeFile::file(
            "usr/etc/issue",
            format!("Linux-microPlatform {version}\n"),
            0o644,
        ),
        // Same kernel in every version: only what the test changes differs between commits.
        TreeFile::file(
            &format!("{modules}/vmlinuz"),
            "usb-update test kernel\n",
            0o644,
        ),
        TreeFile::file(
            &format!("{modules}/initramfs.img"),
            "usb-update test initramfs\n",
            0o644,
        ),
        TreeFile::dir("usr/bin"),
        TreeFile::dir("usr/sbin"),
        TreeFile::dir("usr/share"),
        TreeFile::symlink("bin", "usr/bin"),
        TreeFile::symlink("sbin", "usr/sbin"),
        TreeFile::symlink("lib", "usr/lib"),
        TreeFile::symlink("ostree", "sysroot/ostree"),
        TreeFile::dir("boot"),
        TreeFile::dir("dev"),
        TreeFile::dir("proc"),
        TreeFile::dir("run"),
        TreeFile::dir("sys"),
        TreeFile::dir("sysroot"),
        TreeFile::dir("var"),
    ];
    files.extend(extra);
    // Keep the last entry per path so `extra` can override defaults.
    let mut seen = std::collections::HashSet::new();
    let mut out: Vec<TreeFile> = files
        .into_iter()
        .rev()
        .filter(|f| seen.insert(f.path.clone()))
        .collect();
    out.reverse();
    out
}

/// `usr/lib/firmware/version.txt` as LmP ships it, read by the boot firmware checks.
pub fn firmware_version_file(bootfirmware_version: u64) -> TreeFile {
    TreeFile::file(
        "usr/lib/firmware/version.txt",
        format!("bootfirmware_version={bootfirmware_version}\n"),
        0o644,
    )
}

/// Write `count` regular files totalling `total_bytes` under `dir/usr/share/bulk/`
/// (100 files per directory), pseudo-random content from `seed`, streamed in 64 KiB chunks.
/// The same seed gives the same bytes; random data does not compress, which keeps archive
/// objects as big as the tree.
pub fn many_files(dir: &Path, count: usize, total_bytes: u64, seed: u64) -> anyhow::Result<()> {
    if count == 0 {
        return Ok(());
    }
    let per_file = total_bytes / count as u64;
    let remainder = total_bytes % count as u64;
    let mut buf = vec![0u8; 64 * 1024];
    for i in 0..count {
        let sub = dir.join(format!("usr/share/bulk/d{:04}", i / 100));
        if i % 100 == 0 {
            make_dirs(dir, &sub)?;
        }
        let path = sub.join(format!("f{i:06}"));
        let file =
            fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        let mut out = std::io::BufWriter::with_capacity(buf.len(), file);
        let mut left = per_file + u64::from(i == 0) * remainder;
        let mut state = (seed ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)) | 1;
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            fill_random(&mut buf[..n], &mut state);
            out.write_all(&buf[..n])
                .with_context(|| format!("writing {}", path.display()))?;
            left -= n as u64;
        }
        out.flush()
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn fill_random(buf: &mut [u8], state: &mut u64) {
    // xorshift64*: fast and deterministic; not for anything but filler.
    for chunk in buf.chunks_mut(8) {
        *state ^= *state >> 12;
        *state ^= *state << 25;
        *state ^= *state >> 27;
        let v = state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
        chunk.copy_from_slice(&v[..chunk.len()]);
    }
}

/// A stable seed from a version string, so different versions get different bulk content.
pub fn seed_of(version: &str) -> u64 {
    version.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// Path of the `.commit` object of `checksum`, as fioctl and the device look it up.
pub fn commit_object_path(repo: &Path, checksum: &str) -> std::path::PathBuf {
    let (head, tail) = checksum.split_at(checksum.len().min(2));
    repo.join("objects")
        .join(head)
        .join(format!("{tail}.commit"))
}
