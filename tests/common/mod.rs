//! Test support: a sandboxed device (config, policy, provisioned roots, a real OSTree
//! sysroot, state directory) in a temporary directory, the binary run as an operator would,
//! and fingerprints of whole trees to show that nothing changed.
#![allow(dead_code)]

pub mod agent_rig;
pub mod apps;
pub mod attack;
pub mod crashes;
pub mod dockerd;
pub mod faults;
pub mod gate;
pub mod hostile;
pub mod scene;
pub mod stick;
pub mod udev;

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};
use tempfile::TempDir;
use test_kit::gen::{self, Factory};

pub const HWID: &str = gen::DEFAULT_HWID;
/// The primary ECU serial of a test device's aktualizr-lite database.
pub const AKLITE_SERIAL: &str = "aklite-serial";

pub struct Device {
    pub tmp: TempDir,
    pub conf: PathBuf,
    pub policy: PathBuf,
    pub sysroot: PathBuf,
    pub storage: PathBuf,
    pub tuf: PathBuf,
    /// Environment of every command run on this device (`DOCKER_HOST` of a private engine):
    /// given to each child, never set in the test process, which other tests share under
    /// `cargo test`.
    pub env: Vec<(String, String)>,
}

/// Builder options of a test device.
pub struct DeviceSpec<'a> {
    pub pacman_type: &'a str,
    pub tags: &'a str,
    /// Provisioned roots 1..=N.
    pub roots: u64,
    /// `Some("ci.pem")`: a device certificate from tests/fixtures/certs.
    pub cert: Option<&'a str>,
    /// `[bootloader] rollback_mode`.
    pub rollback_mode: &'a str,
    /// aktualizr-lite has run: its database (made from the schema facts) with the
    /// primary ECU `aklite-serial` / [`HWID`].
    pub aklite_db: bool,
    /// The directory the device's temporary directory is made in (a small filesystem, say);
    /// `None`: the system's.
    pub base: Option<&'a Path>,
}

impl Default for DeviceSpec<'_> {
    fn default() -> Self {
        DeviceSpec {
            pacman_type: "ostree",
            tags: "devel",
            roots: 1,
            cert: None,
            rollback_mode: "none",
            aklite_db: false,
            base: None,
        }
    }
}

impl Device {
    pub fn new(factory: &Factory) -> Device {
        Device::with(factory, DeviceSpec::default())
    }

    pub fn with(factory: &Factory, spec: DeviceSpec) -> Device {
        let tmp = match spec.base {
            Some(base) => tempfile::tempdir_in(base),
            None => tempfile::tempdir(),
        }
        .expect("tempdir");
        let root = tmp.path();
        let import_dir = root.join("var/sota/import");
        let d = Device {
            conf: root.join("etc/sota/conf.d"),
            policy: root.join("etc/usb-update/policy.d"),
            sysroot: root.join("sysroot"),
            storage: root.join("var/sota"),
            tuf: root.join("usr/lib/sota/tuf"),
            env: Vec::new(),
            tmp,
        };
        for dir in [&d.conf, &d.policy, &d.sysroot, &d.storage, &d.tuf] {
            std::fs::create_dir_all(dir).expect("mkdir");
        }
        factory
            .write_provisioned_roots(&d.tuf, spec.roots)
            .expect("roots");
        test_kit::testsys::init(&d.sysroot, "lmp").expect("sysroot");
        // aktualizr-lite's import file and reboot sentinel inside the sandbox too.
        let mut import = format!("[import]\nbase_path = \"{}\"\n", import_dir.display());
        if let Some(c) = spec.cert {
            let p = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/certs")
                .join(c);
            import.push_str(&format!("tls_clientcert_path = \"{}\"\n", p.display()));
        }
        let toml = format!(
            "[provision]\nprimary_ecu_hardware_id = \"{HWID}\"\n\n\
             [pacman]\ntype = \"{}\"\nsysroot = \"{}\"\nos = \"lmp\"\nbooted = \"simulated\"\n\
             tags = \"{}\"\nreset_apps_root = \"{}\"\ncompose_apps_root = \"{}\"\n\n\
             [storage]\npath = \"{}\"\nuptane_metadata_path = \"{}\"\n\n\
             [bootloader]\nrollback_mode = \"{}\"\nreboot_sentinel_dir = \"{}\"\n\n{import}",
            spec.pacman_type,
            d.sysroot.display(),
            spec.tags,
            d.storage.join("reset-apps").display(),
            d.storage.join("compose-apps").display(),
            d.storage.display(),
            d.tuf.display(),
            spec.rollback_mode,
            d.sentinel_dir().display(),
        );
        std::fs::write(d.conf.join("sota.toml"), toml).expect("config");
        // Never the machine's own /var/lock/aklite.lock.
        let lock = d.tmp.path().join("run/lock/aklite.lock");
        let policy = format!("[agent]\nlock_file = \"{}\"\n", lock.display());
        std::fs::write(d.policy.join("00-sandbox.toml"), policy).expect("policy");
        if spec.aklite_db {
            test_kit::testdb::create(&d.sql_db(), 25, AKLITE_SERIAL, HWID)
                .expect("aktualizr-lite database");
        }
        d
    }

    /// aktualizr-lite's database (`[storage] sqldb_path` default).
    pub fn sql_db(&self) -> PathBuf {
        self.storage.join("sql.db")
    }

    /// aktualizr-lite's import file (`[import] base_path`).
    pub fn import_file(&self) -> PathBuf {
        self.tmp.path().join("var/sota/import/installed_versions")
    }

    /// `[bootloader] reboot_sentinel_dir`: a tmpfs on a device, emptied by the reboot.
    pub fn sentinel_dir(&self) -> PathBuf {
        self.tmp.path().join("run/aktualizr-session")
    }

    /// Deploy `commit` from `repo` with the ostree CLI, as the image the device shipped with.
    pub fn deploy_initial(&self, repo: &Path, commit: &str) {
        let sys = test_kit::testsys::TestSysroot::init_existing(&self.sysroot, "lmp");
        sys.deploy_with_cli(repo, commit, &["quiet"])
            .expect("initial deployment");
    }

    /// Reboot (simulated) into `commit` with a new boot id.
    pub fn reboot_into(&self, commit: &str, boot_id: &str) {
        test_kit::testsys::simulate_reboot(&self.sysroot, commit, boot_id).expect("reboot");
        let _ = std::fs::remove_dir_all(self.sentinel_dir());
    }

    pub fn set_policy(&self, toml: &str) {
        std::fs::write(self.policy.join("50-test.toml"), toml).expect("policy");
    }

    /// Simulate a boot into `commit`.
    pub fn boot(&self, commit: &str) {
        let dir = self.sysroot.join(".usb-update-sim");
        std::fs::create_dir_all(&dir).expect("sim dir");
        std::fs::write(dir.join("booted"), commit).expect("sim booted");
    }

    pub fn state_dir(&self) -> PathBuf {
        self.storage.join("usb-update")
    }

    /// `usb-update <cmd> -c <conf> -p <policy> --src-dir <bundle> <args>`.
    pub fn run(&self, cmd: &str, bundle: &Path, args: &[&str]) -> Run {
        let mut all = vec!["--src-dir", bundle.to_str().expect("utf-8 path")];
        all.extend_from_slice(args);
        self.command(cmd, &all)
    }

    /// `usb-update <cmd> -c <conf> -p <policy> <args>`.
    pub fn command(&self, cmd: &str, args: &[&str]) -> Run {
        self.command_env(cmd, args, &[])
    }

    /// The binary with this device's environment, nothing else set.
    pub fn bin(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_usb-update"));
        c.envs(self.env.iter().map(|(k, v)| (k, v)));
        c
    }

    /// [`Device::command`] with extra environment variables.
    pub fn command_env(&self, cmd: &str, args: &[&str], env: &[(&str, &str)]) -> Run {
        let out = self
            .bin()
            .envs(env.iter().copied())
            .arg(cmd)
            .arg("-c")
            .arg(&self.conf)
            .arg("-p")
            .arg(&self.policy)
            .args(args)
            .output()
            .expect("spawn usb-update");
        Run::from(out)
    }

    pub fn check(&self, bundle: &Path, args: &[&str]) -> Run {
        self.run("check", bundle, args)
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        // Deployments carry the immutable bit.
        test_kit::testsys::make_removable(self.tmp.path());
    }
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// A finished process as the tests look at it: its exit code (-1 when a signal ended it).
impl From<std::process::Output> for Run {
    fn from(out: std::process::Output) -> Run {
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

impl Run {
    /// The one-line reason (`error: ...`).
    pub fn error(&self) -> &str {
        self.stdout
            .lines()
            .find_map(|l| l.strip_prefix("error: "))
            .unwrap_or("")
    }

    pub fn line(&self, prefix: &str) -> Option<&str> {
        self.stdout.lines().find(|l| l.starts_with(prefix))
    }

    #[track_caller]
    pub fn assert(&self, code: i32, error_contains: &str) {
        assert_eq!(
            self.code, code,
            "exit code\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        assert!(
            self.error().contains(error_contains),
            "error line {:?} does not contain {error_contains:?}\nstdout:\n{}",
            self.error(),
            self.stdout
        );
        assert_eq!(
            self.line(&format!("install would return {code}")),
            Some(format!("install would return {code}").as_str())
        );
    }
}

/// Every entry under `root`: type, mode, size, content hash or link target.
pub fn fingerprint(root: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, String>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").path())
        .collect();
    entries.sort();
    for p in entries {
        let m = std::fs::symlink_metadata(&p).expect("lstat");
        let rel = p.strip_prefix(root).expect("prefix").to_path_buf();
        let mode = m.permissions().mode();
        let what = if m.is_symlink() {
            format!("link {:?}", std::fs::read_link(&p).expect("readlink"))
        } else if m.is_dir() {
            walk(root, &p, out);
            format!("dir {mode:o}")
        } else {
            let bytes = std::fs::read(&p).expect("read");
            format!(
                "file {mode:o} {} {:x} {}",
                m.len(),
                Sha256::digest(&bytes),
                m.mtime()
            )
        };
        out.insert(rel, what);
    }
}

/// Fingerprints of the device and the bundle, taken before a command, compared after it.
pub struct Unchanged {
    device: BTreeMap<PathBuf, String>,
    bundle: BTreeMap<PathBuf, String>,
    device_root: PathBuf,
    bundle_root: PathBuf,
}

impl Unchanged {
    pub fn new(d: &Device, bundle: &Path) -> Unchanged {
        Unchanged {
            device: fingerprint(d.tmp.path()),
            bundle: fingerprint(bundle),
            device_root: d.tmp.path().to_path_buf(),
            bundle_root: bundle.to_path_buf(),
        }
    }

    /// The lock file (created once, never unlinked) is the one thing that may appear.
    #[track_caller]
    pub fn assert(&self) {
        let mut now = fingerprint(&self.device_root);
        for p in ["run", "run/lock", "run/lock/aklite.lock"] {
            if !self.device.contains_key(Path::new(p)) {
                now.remove(Path::new(p));
            }
        }
        assert_same(&self.device, &now, "the device changed");
        assert_same(
            &self.bundle,
            &fingerprint(&self.bundle_root),
            "the bundle changed",
        );
    }
}

#[track_caller]
fn assert_same(before: &BTreeMap<PathBuf, String>, after: &BTreeMap<PathBuf, String>, what: &str) {
    let mut diff = Vec::new();
    for (k, v) in before {
        match after.get(k) {
            None => diff.push(format!("- {}", k.display())),
            Some(w) if w != v => diff.push(format!("~ {}: {v} -> {w}", k.display())),
            _ => {}
        }
    }
    for k in after.keys().filter(|k| !before.contains_key(*k)) {
        diff.push(format!("+ {}", k.display()));
    }
    assert!(diff.is_empty(), "{what}:\n{}", diff.join("\n"));
}

/// Run `cmd`; the test fails with its stderr unless it succeeds.
#[track_caller]
pub fn succeed(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
