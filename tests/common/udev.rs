//! Real udev for tests: `systemd-udevd` started once for the machine (and left running, as
//! other tests use it), and sticks: ext4 images on loop devices that udev has processed.
//!
//! Attaching an image to an existing `/dev/loopN` is a `change` event, like a card reader
//! getting a card; a partition added with `partx -a` is an `add` event, like a stick being
//! plugged. This kernel parses no partition tables itself (no MSDOS/EFI partition support),
//! so the helper writes the MBR and `partx` tells the kernel about the partition.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// How long udev may take to process an event before a test gives up: a guard against a
/// hang, generous for a loaded machine.
pub const UDEV_WAIT: Duration = Duration::from_secs(60);

pub fn run(cmd: &str, args: &[&str]) -> Output {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn udevd_alive() -> bool {
    Command::new("udevadm")
        .args(["control", "--ping", "--timeout=5"])
        .status()
        .is_ok_and(|s| s.success())
}

/// Starts `systemd-udevd --daemon` unless one runs. Test processes run in parallel: the check
/// and the start happen under a lock, as two daemons would both process every event.
pub fn ensure_udevd() {
    let lock = File::create("/run/lock/usb-update-tests-udevd.lock").expect("udevd lock file");
    lock.lock().expect("udevd lock");
    if !udevd_alive() {
        let bin = [
            "/lib/systemd/systemd-udevd",
            "/usr/lib/systemd/systemd-udevd",
        ]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("systemd-udevd is not installed (apt-get install udev)");
        run(bin, &["--daemon"]);
        let deadline = Instant::now() + UDEV_WAIT;
        while !udevd_alive() {
            assert!(Instant::now() < deadline, "systemd-udevd does not answer");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A UUID no other test (or earlier run) uses.
pub fn fresh_uuid() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{:08x}-{:04x}-4{:03x}-8000-{:012x}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed) & 0xffff,
        nanos & 0xfff,
        u64::from(nanos) << 8
    )
}

/// udev's properties of a device (`udevadm info`), empty while udev has not processed it.
pub fn properties(devnode: &Path) -> BTreeMap<String, String> {
    let Ok(out) = Command::new("udevadm")
        .args(["info", "--query=property", "--name"])
        .arg(devnode)
        .output()
    else {
        return BTreeMap::new();
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let props: BTreeMap<_, _> = text
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    // Without a database entry udevadm still prints the kernel's uevent variables.
    if props.contains_key("USEC_INITIALIZED") {
        props
    } else {
        BTreeMap::new()
    }
}

/// Waits until udev's database says what `done` wants about `devnode`.
pub fn wait_udev(devnode: &Path, what: &str, done: impl Fn(&BTreeMap<String, String>) -> bool) {
    let _ = Command::new("udevadm")
        .args(["settle", "--timeout=60"])
        .status();
    let deadline = Instant::now() + UDEV_WAIT;
    loop {
        let props = properties(devnode);
        if done(&props) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "udev never reported {what} for {}: {props:?}",
            devnode.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What goes on a test stick.
pub struct Fs<'a> {
    pub label: &'a str,
    pub uuid: &'a str,
    /// Copied in by `mkfs.ext4 -d`.
    pub populate: Option<&'a Path>,
}

/// An image file attached to a loop device; detached on drop.
pub struct LoopStick {
    pub dir: TempDir,
    /// `/dev/loopN`.
    pub loopdev: PathBuf,
    /// The device holding the filesystem: `/dev/loopN`, or `/dev/loopNp1` if partitioned.
    pub devnode: PathBuf,
    partitioned: bool,
    /// A shared BSD lock on the whole disk while it is partitioned (see
    /// [`LoopStick::partitioned`]).
    hold: Option<File>,
}

const MIB: u64 = 1 << 20;

fn mkfs(img: &Path, fs: &Fs, size_mib: u64) {
    run(
        "truncate",
        &["-s", &format!("{size_mib}M"), img.to_str().unwrap()],
    );
    let mut args = vec!["-q", "-F", "-L", fs.label, "-U", fs.uuid];
    if let Some(dir) = fs.populate {
        args.extend(["-d", dir.to_str().unwrap()]);
    }
    args.push(img.to_str().unwrap());
    run("mkfs.ext4", &args);
}

impl LoopStick {
    /// A 32 MiB image, ext4 on the whole device (`None`: no filesystem at all), attached to
    /// a loop device and known to udev.
    pub fn whole(fs: Option<Fs>) -> LoopStick {
        ensure_udevd();
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("stick.img");
        match &fs {
            Some(fs) => mkfs(&img, fs, 32),
            None => drop(run("truncate", &["-s", "32M", img.to_str().unwrap()])),
        }
        let loopdev = attach(&img, false);
        let stick = LoopStick {
            dir,
            devnode: loopdev.clone(),
            loopdev,
            partitioned: false,
            hold: None,
        };
        match fs {
            Some(fs) => wait_udev(&stick.devnode, fs.uuid, |p| {
                p.get("ID_FS_UUID").map(String::as_str) == Some(fs.uuid)
            }),
            None => wait_udev(&stick.devnode, "the new backing file", |p| {
                !p.is_empty() && !p.contains_key("ID_FS_TYPE") && !p.contains_key("SYSTEMD_READY")
            }),
        }
        stick
    }

    /// A stick with an MBR and one partition at 1 MiB (ext4, or nothing), the partition
    /// announced to the kernel: udev gets an `add` event for `/dev/loopNp1`.
    pub fn partitioned(fs: Option<Fs>) -> LoopStick {
        ensure_udevd();
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("disk.img");
        let part_mib = 24;
        {
            let mut disk = OpenOptions::new()
                .create(true)
                .truncate(true)
                .write(true)
                .open(&img)
                .unwrap();
            disk.set_len((part_mib + 1) * MIB).unwrap();
            let mut entry = [0u8; 16];
            entry[1..4].copy_from_slice(&[0xfe, 0xff, 0xff]); // CHS: unused
            entry[4] = 0x83; // Linux
            entry[5..8].copy_from_slice(&[0xfe, 0xff, 0xff]);
            entry[8..12].copy_from_slice(&((MIB / 512) as u32).to_le_bytes());
            entry[12..16].copy_from_slice(&((part_mib * MIB / 512) as u32).to_le_bytes());
            disk.seek(SeekFrom::Start(446)).unwrap();
            disk.write_all(&entry).unwrap();
            disk.seek(SeekFrom::Start(510)).unwrap();
            disk.write_all(&[0x55, 0xaa]).unwrap();
            if let Some(fs) = &fs {
                let part = dir.path().join("part.img");
                mkfs(&part, fs, part_mib);
                disk.seek(SeekFrom::Start(MIB)).unwrap();
                std::io::copy(&mut File::open(&part).unwrap(), &mut disk).unwrap();
                fs::remove_file(part).unwrap();
            }
            disk.sync_all().unwrap();
        }
        let loopdev = attach(&img, true);
        // Kernels without an MBR parser (CONFIG_MSDOS_PARTITION off, as in some VMs) see the
        // partition only through partx, and drop it again on any re-read of the table. udevd
        // re-reads it after a close of the disk opened for writing (losetup's, just now)
        // unless it cannot lock the disk: a shared lock held for the stick's life keeps the
        // partition, and udev's own processing (which takes a shared lock) goes on.
        let hold = File::open(&loopdev).unwrap();
        hold.lock_shared().unwrap();
        let devnode = PathBuf::from(format!("{}p1", loopdev.display()));
        let stick = LoopStick {
            dir,
            loopdev,
            devnode,
            partitioned: true,
            hold: Some(hold),
        };
        // A loop device reused right after another test may still serve that test's sector
        // 0 from its buffer cache, and partx then finds no partition: flush and retry.
        let dev = stick.loopdev.to_str().unwrap();
        let sys = PathBuf::from("/sys/class/block").join(stick.kernel_name());
        let deadline = Instant::now() + UDEV_WAIT;
        while !sys.exists() {
            assert!(
                Instant::now() < deadline,
                "the kernel never saw {dev}'s partition"
            );
            run("blockdev", &["--flushbufs", dev]);
            let _ = Command::new("partx").args(["-a", dev]).output();
            if !sys.exists() {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let uuid = fs.as_ref().map(|f| f.uuid.to_string());
        wait_udev(&stick.devnode, "the partition", |p| {
            p.get("DEVTYPE").map(String::as_str) == Some("partition")
                && p.get("ID_FS_UUID") == uuid.as_ref()
        });
        stick
    }

    /// `loopN`.
    pub fn kernel_name(&self) -> String {
        self.devnode
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned()
    }
}

fn attach(img: &Path, partscan: bool) -> PathBuf {
    let mut args = vec!["--find", "--show"];
    if partscan {
        args.push("--partscan");
    }
    args.push(img.to_str().unwrap());
    let out = run("losetup", &args);
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

impl Drop for LoopStick {
    fn drop(&mut self) {
        drop(self.hold.take());
        if self.partitioned {
            let _ = Command::new("partx").arg("-d").arg(&self.loopdev).status();
        }
        let _ = Command::new("losetup")
            .arg("-d")
            .arg(&self.loopdev)
            .status();
    }
}

/// Where `path` is mounted in this process: (per-mount options, fstype, source, super
/// options), one entry per mount stacked there.
pub fn mounts_at(path: &Path) -> Vec<(String, String, String, String)> {
    let text = fs::read_to_string("/proc/self/mountinfo").unwrap();
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let f: Vec<&str> = left.split(' ').collect();
            let r: Vec<&str> = right.split(' ').collect();
            (Path::new(f[4]) == path).then(|| {
                (
                    f[5].to_string(),
                    r[0].to_string(),
                    r[1].to_string(),
                    r[2].to_string(),
                )
            })
        })
        .collect()
}
