//! The hostile-stick rig: a rootfs device running version 1 (a real sysroot), a good bundle
//! of version 2, and sticks made from it with one hostile thing planted (a symlink to a
//! host secret, a FIFO, a device node, a sparse giant, a decompression bomb, a huge root
//! listing). Each is run through `check`, `install` (from a read-only, nodev mount, as the
//! agent mounts) and `agent handle`, and the suite asserts for every run: the exact code,
//! one clear error line, no byte of the host secret anywhere (output, console, status,
//! report), the device unchanged, aktualizr-lite (a test double: a systemctl script and a
//! flag file) running again, the stick unmounted.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use test_kit::gen::{self, write_bundle, BundleSpec, Factory};

use super::faults::{Out, Snapshot};
use super::stick::Stick;
use super::{Device, DeviceSpec, HWID};

/// How long a run may take before the rig calls it hung, kills it and fails the test (the
/// FIFO cases hung forever before the fix). Not a timing assertion: a safety net.
const HUNG_AFTER: Duration = Duration::from_secs(240);

pub struct Hostile {
    pub f: Factory,
    pub d: Device,
    pub root: PathBuf,
    /// The good bundle: version 2, a new rootfs with a 1 MiB incompressible payload.
    pub bundle: tempfile::TempDir,
    pub v2: String,
    /// A host file the stick points at; its marker must never show up anywhere.
    pub secret: PathBuf,
    pub marker: String,
    aklite: PathBuf,
}

/// Every command that reads the bundle.
pub const ALL: &[Via] = &[Via::Check, Via::Install, Via::Agent];
/// The commands that install (`check` does not read content objects).
pub const INSTALLING: &[Via] = &[Via::Install, Via::Agent];

/// What a run was.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Via {
    Check,
    Install,
    Agent,
}

impl Hostile {
    pub fn new() -> Hostile {
        Hostile::with_sizes(false)
    }

    /// `sizes`: the v2 commit carries an `ostree.sizes` index.
    pub fn with_sizes(sizes: bool) -> Hostile {
        let f = Factory::new().expect("factory");
        let d = Device::with(
            &f,
            DeviceSpec {
                rollback_mode: "file",
                ..Default::default()
            },
        );
        let image = tempfile::tempdir().expect("tempdir");
        let c1 = gen::write_content(image.path(), &f.name, HWID, "1", &[]).expect("v1");
        d.deploy_initial(&image.path().join("ostree_repo"), &c1.commit);
        d.reboot_into(&c1.commit, "sim-0");
        let bundle = tempfile::tempdir().expect("tempdir");
        // Incompressible (xorshift): its object is the largest, about 1 MiB on the stick.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let payload: Vec<u8> = (0..1 << 20)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 32) as u8
            })
            .collect();
        let tree = gen::ostree::bootable_tree(
            "2",
            vec![gen::ostree::TreeFile::file(
                "usr/share/payload",
                payload,
                0o644,
            )],
        );
        let mut opts = gen::ostree::CommitOptions::new(&format!("{HWID}-lmp-2"), Some("2"));
        opts.generate_sizes = sizes;
        let v2 = gen::ostree::commit_tree_with(
            &bundle.path().join("ostree_repo"),
            &format!("{HWID}-lmp"),
            &tree,
            &opts,
        )
        .expect("v2");
        let content = gen::Content {
            commit: v2.clone(),
            apps: Vec::new(),
        };
        write_bundle(
            &f,
            &BundleSpec::new(vec![gen::target_for(HWID, "2", &content)]),
            bundle.path(),
        )
        .expect("bundle");

        let root = d.tmp.path().to_path_buf();
        let marker = format!(
            "HOSTSECRET{:x}{:x}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        );
        let secret = root.join("host/shadow");
        std::fs::create_dir_all(secret.parent().unwrap()).unwrap();
        // Shaped like /etc/shadow: the first line is what a parser error would quote.
        std::fs::write(&secret, format!("root:$6${marker}$x:19000:0:99999:7:::\n")).unwrap();

        let (systemctl, aklite) = super::agent_rig::aklite_double(&root);
        std::fs::write(root.join("console"), "").unwrap();
        let led = root.join("leds/status");
        std::fs::create_dir_all(&led).unwrap();
        for f in ["trigger", "brightness", "delay_on", "delay_off"] {
            std::fs::write(led.join(f), "").unwrap();
        }
        std::fs::write(
            d.policy.join("20-agent.toml"),
            format!(
                "[agent]\nrun_dir = \"{run}\"\nreboot_command = [\"sh\", \"-c\", \"echo reboot >> {actions}\"]\n\
                 systemctl = \"{systemctl}\"\naklite_unit = \"aktualizr-lite.service\"\n\n\
                 [media]\nrequire_usb = false\n\n\
                 [feedback]\nleds_path = \"{leds}\"\nleds = [\"status\"]\nconsoles = [\"{console}\"]\n",
                run = root.join("run/usb-update").display(),
                actions = root.join("actions").display(),
                systemctl = systemctl.display(),
                leds = root.join("leds").display(),
                console = root.join("console").display(),
            ),
        )
        .unwrap();
        drop(image);
        Hostile {
            f,
            d,
            root,
            bundle,
            v2,
            secret,
            marker,
            aklite,
        }
    }

    /// A stick with the bundle at `update/`, `plant` applied to that copy (and given the
    /// stick's root too).
    pub fn stick(&self, plant: impl FnOnce(&Path, &Path)) -> Stick {
        let content = tempfile::tempdir().expect("tempdir");
        let dst = content.path().join("update");
        let st = Command::new("cp")
            .arg("-a")
            .arg(self.bundle.path())
            .arg(&dst)
            .status()
            .expect("cp");
        assert!(st.success());
        plant(content.path(), &dst);
        Stick::with(content.path(), "UPDATE")
    }

    /// A stick whose payload object is a [`bomb`] (declaring `declared` bytes, inflating
    /// to `inflates_to`, padded to the original's size with `pad`); returns it, the object's
    /// path, the original's and the bomb's sizes.
    pub fn bomb_stick(
        &self,
        declared: u64,
        inflates_to: u64,
        pad: bool,
    ) -> (Stick, PathBuf, usize, usize) {
        let obj = self.payload_object();
        let orig = std::fs::read(self.bundle.path().join(&obj)).unwrap();
        let bomb = bomb(&orig, declared, inflates_to, pad.then_some(orig.len()));
        let stick = self.stick(|_, b| std::fs::write(b.join(&obj), &bomb).unwrap());
        (stick, obj, orig.len(), bomb.len())
    }

    /// The `.filez` object of the 1 MiB payload (the largest), relative to a bundle.
    pub fn payload_object(&self) -> PathBuf {
        self.largest("filez")
    }

    /// The largest object of kind `ext` in the bundle's repo, relative to the bundle.
    pub fn largest(&self, ext: &str) -> PathBuf {
        let objects = self.bundle.path().join("ostree_repo/objects");
        let mut best: Option<(u64, PathBuf)> = None;
        for dir in std::fs::read_dir(&objects).unwrap() {
            for e in std::fs::read_dir(dir.unwrap().path()).unwrap() {
                let p = e.unwrap().path();
                if p.extension().and_then(|x| x.to_str()) != Some(ext) {
                    continue;
                }
                let len = std::fs::metadata(&p).unwrap().len();
                if best.as_ref().is_none_or(|(l, _)| len > *l) {
                    best = Some((len, p));
                }
            }
        }
        let (_, p) = best.expect("an object");
        p.strip_prefix(self.bundle.path()).unwrap().to_path_buf()
    }

    /// `agent handle` on the stick.
    pub fn handle(&self, stick: &Stick) -> Out {
        let mut cmd = super::faults::usb_update(&self.d, &["agent", "handle"], &[stick.devnode()]);
        guarded(&mut cmd)
    }

    /// `check` or `install` with `--src-dir` on the stick mounted as the agent mounts it
    /// (read-only, nosuid, nodev, noexec).
    pub fn cli(&self, via: Via, stick: &Stick) -> Out {
        let mnt = tempfile::tempdir_in(&self.root).expect("mount point");
        let st = Command::new("mount")
            .args(["-o", "ro,nosuid,nodev,noexec"])
            .arg(&stick.devnode)
            .arg(mnt.path())
            .status()
            .expect("mount");
        assert!(st.success(), "mounting {}", stick.devnode.display());
        let src = mnt.path().join("update");
        let out = self.cli_on(via, &src);
        let st = Command::new("umount")
            .arg(mnt.path())
            .status()
            .expect("umount");
        if !st.success() {
            let _ = Command::new("umount").arg("-l").arg(mnt.path()).status();
        }
        out
    }

    /// `check` or `install` with `--src-dir src`.
    pub fn cli_on(&self, via: Via, src: &Path) -> Out {
        let cmd = match via {
            Via::Check => "check",
            Via::Install => "install",
            Via::Agent => panic!("agent runs take a stick"),
        };
        let mut c =
            super::faults::usb_update(&self.d, &[cmd], &["--src-dir", src.to_str().unwrap()]);
        guarded(&mut c)
    }

    pub fn console(&self) -> String {
        std::fs::read_to_string(self.root.join("console")).unwrap_or_default()
    }

    pub fn led(&self) -> (String, String, String) {
        super::agent_rig::led_of(&self.root)
    }

    pub fn status_json(&self) -> String {
        std::fs::read_to_string(self.root.join("run/usb-update/status.json")).unwrap_or_default()
    }

    pub fn report(&self, stick: &Stick) -> Option<String> {
        let host = nix::unistd::gethostname().unwrap();
        let name = format!("usb-update-report-{}.json", host.to_string_lossy());
        stick
            .read(&name)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
    }

    pub fn aklite_running(&self) -> bool {
        self.aklite.exists()
    }

    pub fn set_policy(&self, toml: &str) {
        self.d.set_policy(toml);
    }

    /// Run `via` on `stick` and assert a refusal: `code`, one error line containing
    /// `reason`, nothing of the secret anywhere, the device unchanged, aktualizr-lite running,
    /// the stick not mounted, and for the agent the error pattern and a report saying it.
    #[track_caller]
    pub fn refused(&self, via: Via, stick: &Stick, code: i32, reason: &str) -> Out {
        let before = Snapshot::take(&self.d, None);
        let console_before = self.console().len();
        let o = match via {
            Via::Agent => self.handle(stick),
            _ => self.cli(via, stick),
        };
        self.assert_refused(via, &o, code, reason, console_before);
        before.assert_same(None);
        if via == Via::Agent {
            let report = self.report(stick).expect("a report on the stick");
            assert!(
                report.contains(&format!("\"exit_code\": {code}")),
                "{report}"
            );
            assert!(
                report.contains(reason),
                "{reason:?} not in the report:\n{report}"
            );
            assert!(
                !report.contains(&self.marker),
                "the secret in the report:\n{report}"
            );
        }
        assert!(!mounted(stick), "{} left mounted", stick.devnode.display());
        o
    }

    /// [`Hostile::refused`] for each of `vias` in turn.
    #[track_caller]
    pub fn refused_by(&self, vias: &[Via], stick: &Stick, code: i32, reason: &str) {
        for via in vias {
            self.refused(*via, stick, code, reason);
        }
    }

    /// The assertions of [`Hostile::refused`] on an output already taken.
    #[track_caller]
    pub fn assert_refused(&self, via: Via, o: &Out, code: i32, reason: &str, console_from: usize) {
        let all = format!("stdout:\n{}\nstderr:\n{}", o.stdout, o.stderr);
        assert_eq!(o.code, code, "{via:?}: exit code\n{all}");
        let stream = match via {
            Via::Agent => &o.stderr,
            _ => &o.stdout,
        };
        let errors: Vec<&str> = stream
            .lines()
            .filter(|l| l.starts_with("error: "))
            .collect();
        assert_eq!(errors.len(), 1, "{via:?}: one error line\n{all}");
        assert!(
            errors[0].contains(reason),
            "{via:?}: {reason:?} not in {:?}",
            errors[0]
        );
        for (what, text) in [("stdout", &o.stdout), ("stderr", &o.stderr)] {
            assert!(
                !text.contains(&self.marker),
                "{via:?}: the secret in {what}\n{all}"
            );
        }
        if via == Via::Agent {
            let console = self.console();
            let new = &console[console_from.min(console.len())..];
            assert!(
                new.lines()
                    .any(|l| l.starts_with("usb-update: error: ") && l.contains(reason)),
                "{reason:?} not on the console:\n{new}"
            );
            assert!(!console.contains(&self.marker), "the secret on the console");
            assert!(
                !self.status_json().contains(&self.marker),
                "the secret in status.json"
            );
            assert_eq!(
                self.led(),
                ("timer".into(), "100".into(), "900".into()),
                "error pattern"
            );
            assert!(self.aklite_running(), "aktualizr-lite left stopped");
        }
    }
}

/// Run `cmd` to its end, or kill it once it has run [`HUNG_AFTER`] (then the code is -1
/// and stderr says HUNG). Its output is drained as it comes, so a chatty run never blocks.
pub fn guarded(cmd: &mut Command) -> Out {
    use std::io::Read as _;
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn usb-update");
    let drain = |mut r: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let out = drain(Box::new(child.stdout.take().expect("stdout")));
    let err = drain(Box::new(child.stderr.take().expect("stderr")));
    let start = Instant::now();
    let (code, hung) = loop {
        match child.try_wait().expect("wait") {
            Some(st) => break (st.code().unwrap_or(-1), false),
            None if start.elapsed() > HUNG_AFTER => {
                let _ = child.kill();
                let _ = child.wait();
                break (-1, true);
            }
            None => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    let stdout = out.join().unwrap_or_default();
    let mut stderr = err.join().unwrap_or_default();
    if hung {
        stderr = format!("HUNG: killed after {HUNG_AFTER:?}\n{stderr}");
    }
    Out {
        code,
        stdout,
        stderr,
    }
}

/// Is the stick's device mounted anywhere?
pub fn mounted(stick: &Stick) -> bool {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let dev = stick.devnode.display().to_string();
    mounts
        .lines()
        .any(|l| l.split(' ').next() == Some(dev.as_str()))
}

/// A FIFO at `path` (replacing what is there).
pub fn fifo(path: &Path) {
    let _ = std::fs::remove_file(path);
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
}

/// A symlink at `path` to `target` (replacing what is there).
pub fn link(path: &Path, target: &Path) {
    let _ = std::fs::remove_file(path);
    std::os::unix::fs::symlink(target, path).unwrap();
}

/// `/dev/zero`'s device node at `path` (replacing what is there).
pub fn zero_device(path: &Path) {
    let _ = std::fs::remove_file(path);
    nix::sys::stat::mknod(
        path,
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o644),
        nix::sys::stat::makedev(1, 5),
    )
    .unwrap();
}

/// A sparse file of `len` bytes at `path` (replacing what is there).
pub fn sparse(path: &Path, len: u64) {
    let _ = std::fs::remove_file(path);
    std::fs::File::create(path).unwrap().set_len(len).unwrap();
}

/// An archive content object (`.filez`) built from `orig`'s header, with its declared size
/// set to `declared`, whose data inflates to `inflates_to` zero bytes; padded with zeros
/// after the deflate stream to `pad_to` bytes when given (a stream's end ignores them).
pub fn bomb(orig: &[u8], declared: u64, inflates_to: u64, pad_to: Option<usize>) -> Vec<u8> {
    use std::io::Write as _;
    let hsize = u32::from_be_bytes(orig[..4].try_into().unwrap()) as usize;
    let mut out = orig[..8 + hsize].to_vec();
    // The header's first member is the size, a `t` holding the big-endian value.
    out[8..16].copy_from_slice(&declared.to_be_bytes());
    let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    let zeros = vec![0u8; 1 << 20];
    let mut left = inflates_to;
    while left > 0 {
        let n = left.min(zeros.len() as u64) as usize;
        enc.write_all(&zeros[..n]).unwrap();
        left -= n as u64;
    }
    out.extend_from_slice(&enc.finish().unwrap());
    if let Some(len) = pad_to {
        assert!(
            out.len() <= len,
            "the bomb ({} bytes) is larger than {len}",
            out.len()
        );
        out.resize(len, 0);
    }
    out
}
