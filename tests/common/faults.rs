//! Fault injection for the fault suites: a process held at a named pause point
//! (`failpoint::pause`, debug builds) while the test pulls the stick, corrupts it, fills a
//! disk or stops dockerd; small real filesystems to fill; and snapshots of what the device
//! holds, to show that a fault lost or changed nothing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::stick::Stick;
use super::{fingerprint, Device};

/// A child process held at a pause point until [`Paused::go`]; killed if the test ends
/// (fails) before that, so that it does not go on in a device being removed.
pub struct Paused {
    child: Option<Child>,
    file: PathBuf,
}

pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<std::process::Output> for Out {
    fn from(out: std::process::Output) -> Out {
        let run = super::Run::from(out);
        Out {
            code: run.code,
            stdout: run.stdout,
            stderr: run.stderr,
        }
    }
}

impl Out {
    /// The one-line reason of the CLI (`error: ...`), else the agent's last error line.
    pub fn error(&self) -> &str {
        self.stdout
            .lines()
            .find_map(|l| l.strip_prefix("error: "))
            .unwrap_or("")
    }
}

#[track_caller]
pub fn code(o: &Out, want: i32) {
    assert_eq!(o.code, want, "stdout:\n{}\nstderr:\n{}", o.stdout, o.stderr);
}

/// Spawn `cmd` with `USB_UPDATE_PAUSE_AT=point` and wait until it stands there. `flag` is
/// the pause file (created by the process, removed by [`Paused::go`]).
pub fn spawn_paused(mut cmd: Command, point: &str, flag: &Path) -> Paused {
    let _ = std::fs::remove_file(flag);
    let mut child = cmd
        .env("USB_UPDATE_PAUSE_AT", point)
        .env("USB_UPDATE_PAUSE_FILE", flag)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn usb-update");
    let deadline = Instant::now() + Duration::from_secs(90);
    while !flag.exists() {
        if let Ok(Some(st)) = child.try_wait() {
            let out = child.wait_with_output().expect("output");
            panic!(
                "exited ({st}) before reaching {point}:\n{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        assert!(Instant::now() < deadline, "never reached {point}");
        std::thread::sleep(Duration::from_millis(20));
    }
    Paused {
        child: Some(child),
        file: flag.to_path_buf(),
    }
}

impl Paused {
    pub fn go(mut self) -> Out {
        std::fs::remove_file(&self.file).expect("remove the pause file");
        let child = self.child.take().expect("a paused child");
        let out = child.wait_with_output().expect("wait");
        Out::from(out)
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `cmd` run to its end in a thread of its own, while the test acts on it.
pub fn in_background(mut cmd: Command) -> std::thread::JoinHandle<Out> {
    std::thread::spawn(move || {
        let o = cmd.output().expect("spawn usb-update");
        Out {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    })
}

/// `usb-update <cmd> -c .. -p .. <args>` as a command to spawn.
pub fn usb_update(d: &Device, cmd: &[&str], args: &[&str]) -> Command {
    let mut c = d.bin();
    c.args(cmd)
        .arg("-c")
        .arg(&d.conf)
        .arg("-p")
        .arg(&d.policy)
        .args(args);
    c
}

/// The stick pulled, as the kernel sees it: this kernel has no device-mapper, so the loop
/// device shrinks to its first MiB and every read beyond fails with EIO.
pub fn pull(stick: &Stick) {
    sh(Command::new("truncate")
        .args(["-s", "1M"])
        .arg(&stick.image));
    sh(Command::new("losetup").args(["--set-capacity", stick.devnode()]));
    drop_caches();
}

/// What was read before must not be served from the page cache.
pub fn drop_caches() {
    let _ = std::fs::write("/proc/sys/vm/drop_caches", "3");
}

/// Flip bytes of `file`'s content where they sit in the stick's image (found by content:
/// the 4 KiB block holding `file`'s first 64 bytes): the filesystem reads back bad data
/// without an error, as a worn flash cell does.
pub fn corrupt(stick: &Stick, file: &Path) {
    let head: Vec<u8> = std::fs::read(file).expect("file")[..64].to_vec();
    let mut img = std::fs::read(&stick.image).expect("image");
    let at = img
        .windows(head.len())
        .position(|w| w == head.as_slice())
        .expect("the file's bytes in the image");
    for b in &mut img[at + 16..at + 48] {
        *b ^= 0xff;
    }
    std::fs::write(&stick.image, img).expect("image");
    drop_caches();
}

fn sh(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A loop-mounted ext4 filesystem of a chosen size (no blocks reserved for root: full
/// means full), unmounted on drop.
pub struct SmallDisk {
    pub dir: PathBuf,
    _img: tempfile::TempDir,
}

impl SmallDisk {
    pub fn new(size_mb: u64) -> SmallDisk {
        SmallDisk::make(size_mb, None)
    }

    /// One mounted on `dir` (an engine's data root, say), hiding what was there.
    pub fn at(dir: &Path, size_mb: u64) -> SmallDisk {
        SmallDisk::make(size_mb, Some(dir))
    }

    fn make(size_mb: u64, on: Option<&Path>) -> SmallDisk {
        let img_dir = tempfile::tempdir_in("/tmp").expect("tempdir");
        let img = img_dir.path().join("disk.img");
        std::fs::File::create(&img)
            .and_then(|f| f.set_len(size_mb << 20))
            .expect("image");
        sh(Command::new("mkfs.ext4")
            .args(["-q", "-F", "-m", "0"])
            .arg(&img));
        let dir = on.map_or_else(|| img_dir.path().join("mnt"), Path::to_path_buf);
        std::fs::create_dir_all(&dir).expect("mount point");
        sh(Command::new("mount")
            .args(["-o", "loop"])
            .arg(&img)
            .arg(&dir));
        SmallDisk { dir, _img: img_dir }
    }

    /// Take every free block: one preallocated file, then small writes until ENOSPC.
    pub fn fill(&self) {
        let free = nix::sys::statvfs::statvfs(&self.dir).expect("statvfs");
        let bytes = free.blocks_available() * free.fragment_size();
        let big = self.dir.join("filler");
        // May fail for the blocks its own extent tree needs: dd takes the rest.
        let _ = Command::new("fallocate")
            .args(["-l", &bytes.to_string()])
            .arg(&big)
            .stderr(Stdio::null())
            .status();
        let _ = Command::new("dd")
            .args(["if=/dev/zero", "bs=4k"])
            .arg(format!("of={}", self.dir.join("filler-2").display()))
            .stderr(Stdio::null())
            .status();
        let left = nix::sys::statvfs::statvfs(&self.dir).expect("statvfs");
        assert_eq!(
            left.blocks_available(),
            0,
            "{} not full",
            self.dir.display()
        );
    }

    /// Give the space back.
    pub fn free(&self) {
        for f in ["filler", "filler-2"] {
            let _ = std::fs::remove_file(self.dir.join(f));
        }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        super::dockerd::mounts_under(&self.dir)
            .into_iter()
            .rev()
            .for_each(|m| {
                let _ = Command::new("umount").arg("-l").arg(m).status();
            });
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

/// What the device holds: its sysroot (deployments, repo, boot), its storage (state,
/// trusted metadata, app store, projects) and, on a Compose device, the engine's images.
pub struct Snapshot {
    trees: Vec<(PathBuf, BTreeMap<PathBuf, String>)>,
    images: Option<Vec<String>>,
}

impl Snapshot {
    pub fn take(d: &Device, images: Option<Vec<String>>) -> Snapshot {
        let trees = [&d.sysroot, &d.storage]
            .into_iter()
            .map(|p| (p.clone(), tree(p)))
            .collect();
        Snapshot { trees, images }
    }

    #[track_caller]
    pub fn assert_same(&self, now: Option<Vec<String>>) {
        self.assert_same_but(now, &[]);
    }

    /// [`Snapshot::assert_same`], except for what is under the paths of `expected`.
    #[track_caller]
    pub fn assert_same_but(&self, now: Option<Vec<String>>, expected: &[&Path]) {
        let mut diff = Vec::new();
        for (root, before) in &self.trees {
            let after = tree(root);
            let skip = |k: &Path| expected.iter().any(|e| root.join(k).starts_with(e));
            let before: BTreeMap<_, _> = before.iter().filter(|(k, _)| !skip(k)).collect();
            let after: BTreeMap<_, _> = after.iter().filter(|(k, _)| !skip(k)).collect();
            for (k, v) in &before {
                match after.get(k) {
                    None => diff.push(format!("- {}", root.join(k).display())),
                    Some(w) if w != v => {
                        diff.push(format!("~ {}: {v} -> {w}", root.join(k).display()))
                    }
                    _ => {}
                }
            }
            for k in after.keys().filter(|k| !before.contains_key(**k)) {
                diff.push(format!("+ {}", root.join(k).display()));
            }
        }
        assert!(diff.is_empty(), "the device changed:\n{}", diff.join("\n"));
        assert_eq!(self.images, now, "the engine's images changed");
    }
}

/// A tree's fingerprint without what libostree rewrites on every open (its lock file and
/// the transaction scratch directory) and without directory-only entries.
fn tree(root: &Path) -> BTreeMap<PathBuf, String> {
    fingerprint(root)
        .into_iter()
        .filter(|(k, v)| {
            !v.starts_with("dir ")
                && !k.starts_with("ostree/repo/tmp")
                && !k.ends_with(".lock")
                && !k.starts_with("ostree/lock")
        })
        .collect()
}
