//! Test sticks: ext4 images on loop devices, announced by a real udevd, as the kernel here
//! has no vfat. The image is filled at mkfs time (`mkfs.ext4 -d`), so no host mount is
//! needed to prepare it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

pub struct Stick {
    pub image: PathBuf,
    pub devnode: PathBuf,
    pub uuid: String,
    _dir: tempfile::TempDir,
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

impl Stick {
    /// A stick whose root holds a copy of `content` (the directory's entries).
    pub fn with(content: &Path, label: &str) -> Stick {
        super::udev::ensure_udevd();
        let dir = tempfile::tempdir().expect("tempdir");
        let image = dir.path().join("stick.img");
        let size = 64 + du_mb(content) * 2;
        run(Command::new("truncate")
            .arg(format!("-s{size}M"))
            .arg(&image));
        let uuid = super::udev::fresh_uuid();
        run(Command::new("mkfs.ext4")
            .args(["-q", "-F", "-L", label, "-U", &uuid, "-d"])
            .arg(content)
            .arg(&image));
        let devnode = PathBuf::from(run(Command::new("losetup")
            .args(["--find", "--show"])
            .arg(&image)));
        // Owned from here on: detached on drop, also when the wait below fails.
        let stick = Stick {
            image,
            devnode,
            uuid,
            _dir: dir,
        };
        // udev has seen it once it knows the filesystem.
        let deadline = Instant::now() + super::udev::UDEV_WAIT;
        loop {
            let props = Command::new("udevadm")
                .args(["info", "--query=property"])
                .arg(&stick.devnode)
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default();
            if props.contains(&format!("ID_FS_UUID={}", stick.uuid)) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "udev never saw {}",
                stick.devnode.display()
            );
            let _ = Command::new("udevadm").args(["settle", "-t", "2"]).status();
        }
        stick
    }

    /// Read a file from the stick through a read-only mount of its own.
    pub fn read(&self, name: &str) -> Option<Vec<u8>> {
        self.mounted(|root| std::fs::read(root.join(name)).ok())
    }

    /// `f` on the stick's root, mounted read-only for it.
    pub fn mounted<T>(&self, f: impl FnOnce(&Path) -> T) -> T {
        let mnt = tempfile::tempdir().expect("tempdir");
        run(Command::new("mount")
            .args(["-o", "ro"])
            .arg(&self.devnode)
            .arg(mnt.path()));
        let out = f(mnt.path());
        run(Command::new("umount").arg(mnt.path()));
        out
    }

    pub fn devnode(&self) -> &str {
        self.devnode.to_str().expect("utf-8 devnode")
    }
}

impl Drop for Stick {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.devnode).status();
        let _ = Command::new("losetup")
            .arg("-d")
            .arg(&self.devnode)
            .status();
    }
}

fn du_mb(dir: &Path) -> u64 {
    let out = Command::new("du").arg("-sm").arg(dir).output();
    out.ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .next()
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(64)
}
