//! Safe extraction of an app's compose archive (layer 0 of the app manifest, a `.tgz` read
//! from the USB stick) into the app's project directory.
//!
//! The archive is hostile until proven otherwise: its digest is checked upstream, but the
//! digest only says the factory published it, and a bug or a crafted app must still not be
//! able to write outside the project directory or plant anything but plain files. So we own
//! the rules instead of `tar::Entry::unpack`: only regular files and directories, paths
//! strictly below the destination, no links or special files, bounded size and count.
//! Everything is created relative to directory descriptors we opened ourselves with
//! `O_NOFOLLOW`, in a destination we just created, so no path can be redirected.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context};
use flate2::read::MultiGzDecoder;
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::{fchmod, mkdirat, Mode};
use tar::EntryType;

use crate::hostile_fs::{openat_nofollow, Capped};

/// Bounds on what one archive may unpack to.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Tar members, of any kind.
    pub max_entries: usize,
    /// Sum of the sizes of the regular files.
    pub max_bytes: u64,
}

/// A compose archive holds a compose file and a few small files: these are generous.
pub(crate) const LIMITS: Limits = Limits {
    max_entries: 10_000,
    max_bytes: 256 << 20,
};

/// Extract gzip'd tar `src` into `dest`, which must not exist (it is created 0755).
///
/// Only regular files and directories are accepted; absolute paths, `..` components,
/// symlinks, hard links, devices, fifos, duplicate files and anything past `limits` are
/// refused with an error naming the entry and the rule. `./` prefixes are fine. Permission
/// bits are kept without setuid/setgid/sticky. On any error `dest` is removed entirely.
/// Returns the relative paths of the files written, in archive order.
pub fn extract_tgz(src: impl Read, dest: &Path, limits: &Limits) -> anyhow::Result<Vec<PathBuf>> {
    // Creating it ourselves (not reusing one) is what makes the descriptor walk below
    // trustworthy: every directory under it was made by this function.
    std::fs::DirBuilder::new()
        .mode(0o755)
        .create(dest)
        .with_context(|| format!("cannot create {}", dest.display()))?;
    match extract_into(src, dest, limits) {
        Ok(files) => Ok(files),
        Err(e) => {
            if let Err(rm) = std::fs::remove_dir_all(dest) {
                tracing::warn!(
                    "cannot remove {} after a failed extraction: {rm}",
                    dest.display()
                );
            }
            Err(e.context(format!("extracting an archive into {}", dest.display())))
        }
    }
}

/// The bytes of member `name` (compared after stripping leading `./`), at most `cap` bytes
/// (a larger member is an error), or `None` if there is no such member. Links are never
/// followed: a link named `name` is an error. The first matching member wins
/// ([`extract_tgz`] refuses archives where it would matter).
pub fn read_member(src: impl Read, name: &str, cap: u64) -> anyhow::Result<Option<Vec<u8>>> {
    let want = strip_dot(name.as_bytes());
    let stream = Capped::new(MultiGzDecoder::new(src), stream_cap(&LIMITS), "archive");
    let mut archive = tar::Archive::new(stream);
    for entry in archive.entries().context("reading the archive")? {
        let mut entry = entry.context("reading the archive")?;
        if strip_dot(&entry.path_bytes()) != want {
            continue;
        }
        match entry.header().entry_type() {
            EntryType::Regular => {}
            EntryType::Symlink | EntryType::Link => {
                bail!("archive member {name:?} is a link: refused")
            }
            other => bail!("archive member {name:?} is not a regular file ({other:?})"),
        }
        let size = entry.size();
        if size > cap {
            bail!("archive member {name:?} is {size} bytes, over the limit of {cap}");
        }
        let mut data = Vec::with_capacity(size as usize);
        entry
            .by_ref()
            .take(cap)
            .read_to_end(&mut data)
            .with_context(|| format!("reading archive member {name:?}"))?;
        return Ok(Some(data));
    }
    Ok(None)
}

fn strip_dot(mut path: &[u8]) -> &[u8] {
    while let Some(rest) = path.strip_prefix(b"./") {
        path = rest;
    }
    path
}

/// Bound on the decompressed tar stream: file data plus, per entry, a header, padding and
/// room for a long-name or pax header. Without it a gzip bomb of padding or a huge GNU
/// long-name member (which the tar crate reads into memory) could exhaust the device
/// before any per-entry rule sees it.
fn stream_cap(limits: &Limits) -> u64 {
    let per_entry = 4096u64;
    let entries = u64::try_from(limits.max_entries).unwrap_or(u64::MAX);
    limits
        .max_bytes
        .saturating_add(entries.saturating_add(2).saturating_mul(per_entry))
}

fn extract_into(src: impl Read, dest: &Path, limits: &Limits) -> anyhow::Result<Vec<PathBuf>> {
    let root: OwnedFd = File::options()
        .read(true)
        .custom_flags((OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW).bits())
        .open(dest)
        .with_context(|| format!("cannot open {}", dest.display()))?
        .into();
    // DirBuilder's mode is filtered by the umask: "created 0755" is set explicitly.
    fchmod(root.as_raw_fd(), Mode::from_bits_truncate(0o755))
        .with_context(|| format!("cannot chmod {}", dest.display()))?;

    let stream = Capped::new(MultiGzDecoder::new(src), stream_cap(limits), "archive");
    let mut archive = tar::Archive::new(stream);
    // Directory modes are applied last (deepest first) so that a read-only directory in the
    // archive does not stop its own files from being written.
    let mut dirs: BTreeMap<PathBuf, u32> = BTreeMap::new();
    let mut files = Vec::new();
    let (mut count, mut bytes) = (0usize, 0u64);
    for entry in archive.entries().context("reading the archive")? {
        let mut entry = entry.context("reading the archive")?;
        let raw = entry.path_bytes().into_owned();
        let name = String::from_utf8_lossy(&raw).into_owned();
        let refuse = |rule: String| anyhow!("archive entry {name:?}: {rule}");
        count += 1;
        if count > limits.max_entries {
            return Err(refuse(format!(
                "more than {} entries: refused",
                limits.max_entries
            )));
        }
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() {
            continue; // archive-wide metadata (`git archive` writes one), nothing to create
        }
        let parts = components(&raw).map_err(|r| refuse(r.into()))?;
        // Only the permission bits: setuid/setgid/sticky have no business in a compose app.
        let mode = entry
            .header()
            .mode()
            .map_err(|e| refuse(format!("bad mode field: {e}")))?
            & 0o777;
        match kind {
            EntryType::Directory => {
                // `./` itself is the destination, which keeps its 0755.
                if !parts.is_empty() {
                    walk(&root, &parts, Some(&mut dirs)).map_err(refuse)?;
                    dirs.insert(join(&parts), mode);
                }
            }
            EntryType::Regular => {
                let Some((leaf, parents)) = parts.split_last() else {
                    return Err(refuse("a file without a name: refused".into()));
                };
                let size = entry.size();
                bytes = bytes.saturating_add(size);
                if bytes > limits.max_bytes {
                    let max = limits.max_bytes;
                    return Err(refuse(format!("files over {max} bytes in total: refused")));
                }
                let parent = walk(&root, parents, Some(&mut dirs)).map_err(refuse)?;
                let file = create_file(&parent, leaf, mode).map_err(refuse)?;
                let written = io::copy(&mut entry, &mut &file)
                    .map_err(|e| refuse(format!("cannot extract it: {e}")))?;
                if written != size {
                    return Err(refuse(format!("{written} of {size} bytes in the archive")));
                }
                files.push(join(&parts));
            }
            EntryType::Symlink => return Err(refuse("symbolic link refused".into())),
            EntryType::Link => return Err(refuse("hard link refused".into())),
            EntryType::Char => return Err(refuse("character device refused".into())),
            EntryType::Block => return Err(refuse("block device refused".into())),
            EntryType::Fifo => return Err(refuse("fifo refused".into())),
            other => return Err(refuse(format!("entry type {other:?} refused"))),
        }
    }
    // Read to the end of the gzip stream, past the tar's end-of-archive blocks, so that its
    // CRC and length trailer are checked: a stream cut after the last member is an error.
    io::copy(&mut archive.into_inner(), &mut io::sink()).context("reading the archive")?;
    for (rel, mode) in dirs.iter().rev() {
        let parts: Vec<&[u8]> = rel.iter().map(|c| c.as_encoded_bytes()).collect();
        let dir =
            walk(&root, &parts, None).map_err(|r| anyhow!("{}: {r}", dest.join(rel).display()))?;
        fchmod(dir.as_raw_fd(), Mode::from_bits_truncate(*mode))
            .with_context(|| format!("cannot chmod {}", dest.join(rel).display()))?;
    }
    Ok(files)
}

/// The path's components below the destination: `.` and empty ones dropped (so `./a/` is
/// `a`), absolute paths and `..` refused.
fn components(path: &[u8]) -> Result<Vec<&[u8]>, &'static str> {
    if path.starts_with(b"/") {
        return Err("absolute path refused");
    }
    let parts: Vec<&[u8]> = path
        .split(|b| *b == b'/')
        .filter(|p| !p.is_empty() && *p != b".")
        .collect();
    if parts.iter().any(|p| *p == b"..") {
        return Err("path with a '..' component refused");
    }
    Ok(parts)
}

fn join(parts: &[&[u8]]) -> PathBuf {
    use std::os::unix::ffi::OsStrExt;
    parts
        .iter()
        .map(|p| std::ffi::OsStr::from_bytes(p))
        .collect()
}

/// The directory `parts` below `root`, opened one component at a time with `O_NOFOLLOW`.
/// With `made`, missing directories are created (0700 while we work; recorded in `made`
/// as 0755, applied at the end, unless the archive gives a mode for them).
fn walk(
    root: &OwnedFd,
    parts: &[&[u8]],
    mut made: Option<&mut BTreeMap<PathBuf, u32>>,
) -> Result<OwnedFd, String> {
    let mut cur: Option<OwnedFd> = None;
    for (i, part) in parts.iter().enumerate() {
        let at = cur.as_ref().unwrap_or(root);
        if let Some(made) = made.as_deref_mut() {
            match mkdirat(Some(at.as_raw_fd()), *part, Mode::from_bits_truncate(0o700)) {
                Ok(()) => {
                    made.entry(join(&parts[..=i])).or_insert(0o755);
                }
                Err(Errno::EEXIST) => {}
                Err(e) => return Err(format!("cannot create directory: {e}")),
            }
        }
        let opened = openat_nofollow(
            at,
            part,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY,
            Mode::empty(),
        );
        cur = Some(opened.map_err(|e| match e {
            Errno::ENOTDIR | Errno::ELOOP => {
                let p = join(&parts[..=i]);
                format!("{:?} is not a directory: refused", p.display().to_string())
            }
            e => format!("cannot open directory: {e}"),
        })?);
    }
    match cur {
        Some(dir) => Ok(dir),
        None => root
            .try_clone()
            .map_err(|e| format!("cannot open the destination: {e}")),
    }
}

/// A new regular file: `O_EXCL` so that a second entry of the same name (or a directory of
/// that name) is refused rather than overwritten.
fn create_file(dir: &OwnedFd, leaf: &[u8], mode: u32) -> Result<File, String> {
    let flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL;
    let fd = openat_nofollow(dir, leaf, flags, Mode::from_bits_truncate(0o600)).map_err(
        |e| match e {
            Errno::EEXIST => "duplicate entry refused".to_string(),
            e => format!("cannot create it: {e}"),
        },
    )?;
    // The umask must not decide the mode: set it on the descriptor we wrote through.
    fchmod(fd.as_raw_fd(), Mode::from_bits_truncate(mode))
        .map_err(|e| format!("cannot chmod it: {e}"))?;
    Ok(File::from(fd))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;

    /// One archive member; `name` and `link` go into the header as raw bytes because
    /// `Header::set_path` refuses the hostile names we need.
    struct Member<'a> {
        name: &'a [u8],
        kind: EntryType,
        mode: u32,
        data: &'a [u8],
        link: &'a [u8],
    }

    fn file<'a>(name: &'a str, mode: u32, data: &'a [u8]) -> Member<'a> {
        Member {
            name: name.as_bytes(),
            kind: EntryType::Regular,
            mode,
            data,
            link: b"",
        }
    }

    fn dir(name: &str, mode: u32) -> Member<'_> {
        Member {
            name: name.as_bytes(),
            kind: EntryType::Directory,
            mode,
            data: b"",
            link: b"",
        }
    }

    fn special<'a>(name: &'a str, kind: EntryType, link: &'a str) -> Member<'a> {
        Member {
            name: name.as_bytes(),
            kind,
            mode: 0o644,
            data: b"",
            link: link.as_bytes(),
        }
    }

    fn tar(members: &[Member]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for m in members {
            let mut h = tar::Header::new_gnu();
            let gnu = h.as_gnu_mut().unwrap();
            gnu.name[..m.name.len()].copy_from_slice(m.name);
            gnu.linkname[..m.link.len()].copy_from_slice(m.link);
            h.set_entry_type(m.kind);
            h.set_mode(m.mode);
            h.set_size(m.data.len() as u64);
            h.set_cksum();
            b.append(&h, m.data).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn gz(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn tgz(members: &[Member]) -> Vec<u8> {
        gz(&tar(members))
    }

    fn mode_of(p: &Path) -> u32 {
        std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
    }

    /// Extraction into `<tmp>/out` must fail with `fragment`, leaving `<tmp>` empty.
    fn refused(members: &[Member], limits: &Limits, fragment: &str) {
        let tmp = tempfile::tempdir().unwrap();
        let dest = tmp.path().join("out");
        let err = extract_tgz(tgz(members).as_slice(), &dest, limits).unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains(fragment), "{fragment:?} not in {msg:?}");
        assert!(msg.contains(&dest.display().to_string()), "{msg}");
        let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
        assert!(left.is_empty(), "left behind: {left:?}");
    }

    #[test]
    fn good_archive_extracts_files_dirs_and_modes() {
        let tmp = tempfile::tempdir().unwrap();
        let dest = tmp.path().join("app");
        let members = [
            dir("./", 0o700),
            file("./docker-compose.yml", 0o644, b"services: {}\n"),
            dir("./conf/", 0o750),
            file("conf/deep/run.sh", 0o4755, b"#!/bin/sh\n"),
            file("conf//x.env", 0o2640, b"A=1\n"),
            dir("ro", 0o555),
            file("ro/f", 0o444, b"read only"),
        ];
        let files = extract_tgz(tgz(&members).as_slice(), &dest, &LIMITS).unwrap();
        let want: Vec<PathBuf> = [
            "docker-compose.yml",
            "conf/deep/run.sh",
            "conf/x.env",
            "ro/f",
        ]
        .iter()
        .map(PathBuf::from)
        .collect();
        assert_eq!(files, want);
        let read = |p: &str| std::fs::read(dest.join(p)).unwrap();
        assert_eq!(read("docker-compose.yml"), b"services: {}\n");
        assert_eq!(read("conf/deep/run.sh"), b"#!/bin/sh\n");
        assert_eq!(read("ro/f"), b"read only");
        assert_eq!(
            mode_of(&dest),
            0o755,
            "the destination keeps 0755 despite ./"
        );
        assert_eq!(mode_of(&dest.join("docker-compose.yml")), 0o644);
        assert_eq!(mode_of(&dest.join("conf")), 0o750);
        assert_eq!(mode_of(&dest.join("conf/deep")), 0o755, "implicit parent");
        assert_eq!(
            mode_of(&dest.join("conf/deep/run.sh")),
            0o755,
            "setuid stripped"
        );
        assert_eq!(mode_of(&dest.join("conf/x.env")), 0o640, "setgid stripped");
        assert_eq!(mode_of(&dest.join("ro")), 0o555);
    }

    #[test]
    fn hostile_entries_are_refused_and_dest_removed() {
        use EntryType::*;
        let ok = file("docker-compose.yml", 0o644, b"services: {}\n");
        let cases: Vec<(Member, &str)> = vec![
            (
                file("../x", 0o644, b"evil"),
                "\"../x\": path with a '..' component refused",
            ),
            (file("a/../../x", 0o644, b"evil"), "'..' component refused"),
            (dir("./../d", 0o755), "'..' component refused"),
            (
                file("/tmp/abs", 0o644, b"evil"),
                "\"/tmp/abs\": absolute path refused",
            ),
            (
                special("link", Symlink, "/etc"),
                "\"link\": symbolic link refused",
            ),
            (
                special("hl", Link, "/etc/passwd"),
                "\"hl\": hard link refused",
            ),
            (
                special("null", Char, ""),
                "\"null\": character device refused",
            ),
            (special("sda", Block, ""), "\"sda\": block device refused"),
            (special("p", Fifo, ""), "\"p\": fifo refused"),
            (
                special("c", Continuous, ""),
                "\"c\": entry type Continuous refused",
            ),
            (ok, "duplicate entry refused"),
            (
                file("docker-compose.yml/x", 0o644, b""),
                "\"docker-compose.yml\" is not a directory",
            ),
            (
                dir("docker-compose.yml", 0o755),
                "\"docker-compose.yml\" is not a directory",
            ),
            (file("./", 0o644, b""), "a file without a name"),
        ];
        for (bad, fragment) in cases {
            // A good file first, so there is something in dest to clean up.
            let good = file("docker-compose.yml", 0o644, b"services: {}\n");
            refused(&[dir("sub", 0o755), good, bad], &LIMITS, fragment);
        }
    }

    #[test]
    fn link_then_write_through_it_is_refused() {
        let members = [
            special("d", EntryType::Symlink, "/tmp"),
            file("d/planted", 0o644, b"evil"),
        ];
        refused(&members, &LIMITS, "symbolic link refused");
    }

    #[test]
    fn limits_are_enforced() {
        let four = [
            file("a", 0o644, b"1"),
            file("b", 0o644, b"2"),
            file("c", 0o644, b"3"),
            file("d", 0o644, b"4"),
        ];
        let limits = Limits {
            max_entries: 3,
            max_bytes: 1 << 20,
        };
        refused(&four, &limits, "\"d\": more than 3 entries: refused");
        let limits = Limits {
            max_entries: 10,
            max_bytes: 3,
        };
        refused(
            &four,
            &limits,
            "\"d\": files over 3 bytes in total: refused",
        );
        // Exactly at the limits is fine.
        let tmp = tempfile::tempdir().unwrap();
        let limits = Limits {
            max_entries: 4,
            max_bytes: 4,
        };
        let got = extract_tgz(tgz(&four).as_slice(), &tmp.path().join("o"), &limits).unwrap();
        assert_eq!(got.len(), 4);
    }

    #[test]
    fn oversized_metadata_hits_the_stream_cap() {
        // A pax header is read into memory by the tar crate before any entry rule applies.
        let mut b = tar::Builder::new(Vec::new());
        let big = vec![b'a'; 64 << 10];
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(EntryType::XHeader);
        h.set_size(big.len() as u64);
        h.set_path("pax").unwrap();
        h.set_cksum();
        b.append(&h, big.as_slice()).unwrap();
        let archive = gz(&b.into_inner().unwrap());
        let tmp = tempfile::tempdir().unwrap();
        let dest = tmp.path().join("o");
        let limits = Limits {
            max_entries: 2,
            max_bytes: 100,
        };
        let err = extract_tgz(archive.as_slice(), &dest, &limits).unwrap_err();
        assert!(
            format!("{err:#}").contains("bytes uncompressed: refused"),
            "{err:#}"
        );
        assert!(!dest.exists());
    }

    #[test]
    fn truncated_gzip_is_an_error_and_dest_removed() {
        // Incompressible data, so that the cut lands inside the file's contents.
        let data: Vec<u8> = (0u32..200_000)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let whole = tgz(&[file("a", 0o644, b"first"), file("big", 0o644, &data)]);
        let tmp = tempfile::tempdir().unwrap();
        let dest = tmp.path().join("o");
        let err = extract_tgz(&whole[..whole.len() / 2], &dest, &LIMITS).unwrap_err();
        assert!(format!("{err:#}").contains("\"big\""), "{err:#}");
        assert!(!dest.exists());
        // Cut in the gzip trailer, after every tar block: still an error.
        let err = extract_tgz(&whole[..whole.len() - 4], &dest, &LIMITS).unwrap_err();
        assert!(
            format!("{err:#}").contains("reading the archive"),
            "{err:#}"
        );
        assert!(!dest.exists());
        // Not gzip at all.
        let err = extract_tgz(&b"not gzip"[..], &dest, &LIMITS).unwrap_err();
        assert!(
            format!("{err:#}").contains("reading the archive"),
            "{err:#}"
        );
        assert!(!dest.exists());
    }

    #[test]
    fn existing_dest_is_refused_and_left_alone() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("keep"), b"mine").unwrap();
        let err = extract_tgz(
            tgz(&[file("a", 0o644, b"1")]).as_slice(),
            tmp.path(),
            &LIMITS,
        );
        assert!(format!("{:#}", err.unwrap_err()).contains("cannot create"));
        assert_eq!(std::fs::read(tmp.path().join("keep")).unwrap(), b"mine");
    }

    #[test]
    fn read_member_finds_bytes_and_refuses_links() {
        let archive = tgz(&[
            dir("./", 0o755),
            file("./sub/docker-compose.yml", 0o644, b"nested"),
            file("./docker-compose.yml", 0o644, b"services: {}\n"),
            special("compose.yaml", EntryType::Symlink, "/etc/shadow"),
            dir("dir", 0o755),
        ]);
        let read = |name: &str, cap: u64| read_member(archive.as_slice(), name, cap);
        assert_eq!(
            read("docker-compose.yml", 100).unwrap().unwrap(),
            b"services: {}\n"
        );
        assert_eq!(
            read("./docker-compose.yml", 13).unwrap().unwrap(),
            b"services: {}\n"
        );
        assert_eq!(
            read("sub/docker-compose.yml", 100).unwrap().unwrap(),
            b"nested"
        );
        assert!(read("missing.yml", 100).unwrap().is_none());
        let err = read("docker-compose.yml", 12).unwrap_err().to_string();
        assert!(err.contains("13 bytes, over the limit of 12"), "{err}");
        let err = read("compose.yaml", 100).unwrap_err().to_string();
        assert!(err.contains("\"compose.yaml\" is a link: refused"), "{err}");
        let err = read("dir", 100).unwrap_err().to_string();
        assert!(err.contains("not a regular file"), "{err}");
    }
}
