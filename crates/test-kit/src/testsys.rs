//! A throw-away OSTree sysroot in a directory, for tests, benchmarks and the demo.
//!
//! Made the way an image build makes one, with the `ostree` CLI (`admin init-fs --modern`,
//! `admin os-init`, `sysroot.bootloader none` so that no bootloader is touched), so that the
//! code under test and its fixture do not share a code path. Nothing here is used by the
//! agent itself.
//!
//! libostree sets the immutable attribute on every deployment directory: a plain
//! `remove_dir_all` (or `TempDir`'s drop) fails with EPERM. [`TestSysroot`] clears it when
//! dropped; for a sysroot made elsewhere call [`make_removable`] or [`remove`].
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! use test_kit::testsys::TestSysroot;
//! let sys = TestSysroot::new("lmp")?;
//! // a commit made with test_kit::gen::ostree in some repo:
//! # let (repo, commit) = (std::path::Path::new("/tmp/repo"), "0".repeat(64));
//! sys.deploy_with_cli(repo, &commit, &["root=LABEL=otaroot", "console=ttyS0"])?;
//! sys.simulate_reboot(&commit, "boot-1")?;
//! # Ok(()) }
//! ```

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context as _};

use usb_update::ostree::{sim_file, SIM_DIR};

/// A sysroot in its own temporary directory, removed (immutable bits cleared) on drop.
#[derive(Debug)]
pub struct TestSysroot {
    /// The sysroot (`[pacman] sysroot`).
    pub path: PathBuf,
    /// The OS name (`[pacman] os`).
    pub os: String,
    tmp: Option<tempfile::TempDir>,
}

impl TestSysroot {
    /// A new empty sysroot for `os` in a temporary directory under `$TMPDIR`.
    pub fn new(os: &str) -> anyhow::Result<TestSysroot> {
        let tmp = tempfile::Builder::new()
            .prefix("usb-update-sysroot-")
            .tempdir()
            .context("creating a temporary directory")?;
        let path = tmp.path().join("sysroot");
        init(&path, os)?;
        Ok(TestSysroot {
            path,
            os: os.to_string(),
            tmp: Some(tmp),
        })
    }

    /// Use an existing directory (e.g. a loop-mounted filesystem) as the sysroot; nothing is
    /// removed on drop.
    pub fn init_at(path: &Path, os: &str) -> anyhow::Result<TestSysroot> {
        init(path, os)?;
        Ok(TestSysroot {
            path: path.to_path_buf(),
            os: os.to_string(),
            tmp: None,
        })
    }

    /// The sysroot's repo (`ostree/repo`, bare mode).
    /// A sysroot that [`init`] already made (owned by the caller: not removed on drop).
    pub fn init_existing(path: &Path, os: &str) -> TestSysroot {
        TestSysroot {
            path: path.to_path_buf(),
            os: os.to_string(),
            tmp: None,
        }
    }

    pub fn repo(&self) -> PathBuf {
        self.path.join("ostree/repo")
    }

    /// `ostree pull-local --untrusted` of `commit` from `repo`, then `ostree admin deploy`
    /// with `kargs`: the factory image's first deployment.
    pub fn deploy_with_cli(&self, repo: &Path, commit: &str, kargs: &[&str]) -> anyhow::Result<()> {
        run(Command::new("ostree")
            .arg(format!("--repo={}", self.repo().display()))
            .arg("pull-local")
            .arg("--untrusted")
            .arg(repo)
            .arg(commit))?;
        let mut deploy = Command::new("ostree");
        deploy
            .arg("admin")
            .arg("deploy")
            .arg(format!("--sysroot={}", self.path.display()))
            .arg(format!("--os={}", self.os));
        for k in kargs {
            deploy.arg(format!("--karg={k}"));
        }
        run(deploy.arg(commit))
    }

    /// Write the simulated-boot files: the device now "runs" `csum` in boot `boot_id`.
    pub fn simulate_reboot(&self, csum: &str, boot_id: &str) -> anyhow::Result<()> {
        simulate_reboot(&self.path, csum, boot_id)
    }

    /// Refs of the sysroot repo (`ostree refs`), one per line.
    pub fn refs(&self) -> anyhow::Result<Vec<String>> {
        lines(
            Command::new("ostree")
                .arg(format!("--repo={}", self.repo().display()))
                .arg("refs"),
        )
    }

    /// Remotes of the sysroot repo (`ostree remote list`), one per line.
    pub fn remotes(&self) -> anyhow::Result<Vec<String>> {
        lines(
            Command::new("ostree")
                .arg(format!("--repo={}", self.repo().display()))
                .arg("remote")
                .arg("list"),
        )
    }
}

impl Drop for TestSysroot {
    fn drop(&mut self) {
        if let Some(tmp) = &self.tmp {
            make_removable(tmp.path());
        }
    }
}

/// `ostree admin init-fs --modern`, `ostree admin os-init`, `sysroot.bootloader none`.
pub fn init(sysroot: &Path, os: &str) -> anyhow::Result<()> {
    fs::create_dir_all(sysroot).with_context(|| format!("creating {}", sysroot.display()))?;
    run(Command::new("ostree")
        .args(["admin", "init-fs", "--modern"])
        .arg(sysroot))?;
    run(Command::new("ostree")
        .args(["admin", "os-init"])
        .arg(format!("--sysroot={}", sysroot.display()))
        .arg(os))?;
    run(Command::new("ostree")
        .arg("config")
        .arg(format!("--repo={}", sysroot.join("ostree/repo").display()))
        .args(["set", "sysroot.bootloader", "none"]))
}

/// Write `<sysroot>/.usb-update-sim/{booted,boot_id}` (the simulated reboot of
/// docs/architecture.md).
pub fn simulate_reboot(sysroot: &Path, csum: &str, boot_id: &str) -> anyhow::Result<()> {
    let dir = sysroot.join(SIM_DIR);
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    for (name, value) in [("booted", csum), ("boot_id", boot_id)] {
        let p = sim_file(sysroot, name);
        fs::write(&p, format!("{value}\n")).with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}

/// Clear the immutable attribute that libostree puts on deployment directories, anywhere
/// under `dir` (best effort: errors are ignored, a later removal reports them).
pub fn make_removable(dir: &Path) {
    let _ = Command::new("chattr")
        .args(["-R", "-f", "-i"])
        .arg(dir)
        .stderr(std::process::Stdio::null())
        .status();
}

/// [`make_removable`], then remove `dir` and everything under it.
pub fn remove(dir: &Path) -> anyhow::Result<()> {
    make_removable(dir);
    fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))
}

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    lines(cmd).map(drop)
}

fn lines(cmd: &mut Command) -> anyhow::Result<Vec<String>> {
    let out = cmd
        .output()
        .with_context(|| format!("running {cmd:?} (is ostree installed?)"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect())
}
