//! The automatic flow end to end: a real udevd, ext4 sticks on loop devices, a real (private)
//! dockerd, a real OSTree sysroot; reboot and Docker restart are the policy's commands, here
//! scripts that log what they were asked to do, and the reboot is then simulated.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::apps::{app, AppScene, T};
use crate::common::faults::{spawn_paused, usb_update, Out, Paused};
use crate::common::scene::{deployments, state};
use crate::common::stick::Stick;
use crate::common::succeed;
use test_kit::gen::AppSpec;

struct Rig {
    s: AppScene,
    root: PathBuf,
}

impl Rig {
    /// The fault suites' rig (tests/common/agent_rig.rs): the same device, LEDs, console
    /// and logged reboot and Docker restart commands.
    fn new() -> Rig {
        let crate::common::agent_rig::Rig { s, root } = crate::common::agent_rig::Rig::new();
        Rig { s, root }
    }

    fn agent(&self, args: &[&str]) -> Out {
        self.agent_env(args, &[])
    }

    fn agent_env(&self, args: &[&str], env: &[(&str, &Path)]) -> Out {
        let (sub, rest) = args.split_first().unwrap();
        let out = self
            .s
            .d
            .bin()
            .envs(env.iter().copied())
            .args(["agent", sub, "-c"])
            .arg(&self.s.d.conf)
            .arg("-p")
            .arg(&self.s.d.policy)
            .args(rest)
            .output()
            .unwrap();
        Out::from(out)
    }

    fn handle(&self, stick: &Stick) -> Out {
        self.agent(&["handle", stick.devnode()])
    }

    fn actions(&self) -> String {
        std::fs::read_to_string(self.root.join("actions")).unwrap_or_default()
    }

    fn console(&self) -> String {
        std::fs::read_to_string(self.root.join("console")).unwrap_or_default()
    }

    fn phase(&self) -> String {
        let v: serde_json::Value = serde_json::from_slice(
            &std::fs::read(self.root.join("run/usb-update/status.json")).unwrap(),
        )
        .unwrap();
        v["phase"].as_str().unwrap_or_default().to_string()
    }

    /// The stick's report, parsed.
    fn report(&self, stick: &Stick) -> serde_json::Value {
        let host = nix::unistd::gethostname().unwrap();
        let name = format!("usb-update-report-{}.json", host.to_string_lossy());
        let bytes = stick
            .read(&name)
            .unwrap_or_else(|| panic!("no {name} on the stick"));
        serde_json::from_slice(&bytes).unwrap()
    }
}

impl Rig {
    /// `agent handle` in the background, held at its first blob copy (lock taken, LEDs on
    /// "working") until [`Paused::go`].
    fn handle_paused(&self, devnode: &Path) -> Paused {
        let cmd = usb_update(
            &self.s.d,
            &["agent", "handle"],
            &[devnode.to_str().unwrap()],
        );
        spawn_paused(cmd, "copy-blob", &self.root.join("paused"))
    }

    /// The LED's attributes: trigger, delay_on, delay_off.
    fn led(&self) -> (String, String, String) {
        let read = |f: &str| {
            std::fs::read_to_string(self.root.join("leds/status").join(f))
                .unwrap()
                .trim()
                .to_string()
        };
        (read("trigger"), read("delay_on"), read("delay_off"))
    }
}

/// A rig and a bundle of version 2 (a new rootfs) with app-01.
fn rig_with_v2() -> (Rig, tempfile::TempDir) {
    let mut r = Rig::new();
    let f = r.s.f.name.clone();
    let b = r.s.bundle(vec![T::new("2", vec![app(&f, "app-01", "v2")])]);
    (r, b)
}

#[track_caller]
fn code(o: &Out, want: i32) {
    assert_eq!(o.code, want, "stdout:\n{}\nstderr:\n{}", o.stdout, o.stderr);
}

/// A stick holding `bundle` one directory down, as operators copy it.
fn stick_with(bundle: &Path) -> Stick {
    let content = tempfile::tempdir().unwrap();
    let dst = content.path().join("update");
    copy_dir(bundle, &dst);
    std::fs::write(content.path().join("._update"), b"AppleDouble noise").unwrap();
    Stick::with(content.path(), "UPDATE")
}

fn copy_dir(from: &Path, to: &Path) {
    let st = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(st.success());
}

#[test]
fn stick_installs_reboots_and_finalizes() {
    let (r, b) = rig_with_v2();
    let stick = stick_with(b.path());
    let paused = r.handle_paused(&stick.devnode);
    assert_eq!(r.phase(), "working");
    assert_eq!(r.led(), ("timer".into(), "100".into(), "100".into()));
    let o = paused.go();
    code(&o, 100);
    assert_eq!(r.actions(), "reboot\n");
    // Safe to remove: the one steady pattern.
    assert_eq!(r.led().0, "none");
    let console = r.console();
    for line in [
        "do not remove it",
        "copying the apps: 100%",
        "copying the rootfs: 100%",
        "installed: ",
        "the stick can be removed",
        "rebooting",
    ] {
        assert!(console.contains(line), "{line}: {console}");
    }
    assert_eq!(r.phase(), "safe_to_remove");
    let report = r.report(&stick);
    assert_eq!(report["exit_code"], 100);
    assert_eq!(report["bundle"], "update");
    assert!(report["error"].is_null(), "{report}");
    // Nothing left mounted.
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&stick.uuid), "{mounts}");

    r.s.reboot_into("2", "boot-1");
    let o = r.agent(&["finalize"]);
    code(&o, 0);
    assert_eq!(r.phase(), "success");
    assert_eq!(r.led(), ("timer".into(), "1000".into(), "1000".into()));
    assert_eq!(r.s.running().keys().collect::<Vec<_>>(), ["app-01"]);
    assert!(!r.s.d.state_dir().join("pending").exists());

    // Left in across the reboot: announced again at boot, not installed again.
    let history = state(&r.s.d)["history"].as_array().unwrap().len();
    let o = r.handle(&stick);
    code(&o, 0);
    assert!(
        r.console().contains("left in across the reboot"),
        "{}",
        r.console()
    );
    assert_eq!(state(&r.s.d)["history"].as_array().unwrap().len(), history);
    assert_eq!(r.actions(), "reboot\n");
    // The stick still carries the report of the install it did, not of the sighting.
    let report = r.report(&stick);
    assert_eq!(report["exit_code"], 100, "{report}");
    assert!(
        report["result"]
            .as_str()
            .unwrap()
            .starts_with("installed: "),
        "{report}"
    );
}

#[test]
fn apps_only_stick_restarts_docker_without_reboot() {
    let mut r = Rig::new();
    let f = r.s.f.name.clone();
    let b =
        r.s.bundle(vec![T::new("2", vec![app(&f, "app-01", "v2")]).on("1")]);
    let stick = stick_with(b.path());
    let o = r.handle(&stick);
    code(&o, 0);
    assert_eq!(r.actions(), "docker-restart\n");
    assert_eq!(r.phase(), "success");
    assert_eq!(r.s.running().keys().collect::<Vec<_>>(), ["app-01"]);
    assert_eq!(deployments(&r.s.d).len(), 1);
    let report = r.report(&stick);
    assert_eq!(report["exit_code"], 0);
}

#[test]
fn tampered_bundle_is_refused_with_error_pattern_and_report() {
    let (r, b) = rig_with_v2();
    // A signed field changed, the file still well-formed: a security error (11), the
    // snapshot's hash of targets.json no longer matching.
    let path = b.path().join("tuf/targets.json");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let version = v["signed"]["version"].as_u64().unwrap();
    v["signed"]["version"] = (version + 1).into();
    std::fs::write(&path, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
    let stick = stick_with(b.path());
    // systemd's notification socket: `systemctl status` shows the STATUS= lines.
    let notify = r.root.join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&notify).unwrap();
    sock.set_nonblocking(true).unwrap();
    let o = r.agent_env(&["handle", stick.devnode()], &[("NOTIFY_SOCKET", &notify)]);
    assert_eq!(o.code, 11, "{}{}", o.stdout, o.stderr);
    let mut buf = [0u8; 4096];
    let mut statuses = Vec::new();
    while let Ok(n) = sock.recv(&mut buf) {
        statuses.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    assert!(
        statuses
            .iter()
            .any(|m| m.starts_with("STATUS=") && m.contains("do not remove it")),
        "{statuses:?}"
    );
    assert!(
        statuses.iter().any(|m| m.starts_with("STATUS=error: ")),
        "{statuses:?}"
    );
    assert_eq!(r.phase(), "error");
    let report = r.report(&stick);
    assert_eq!(report["exit_code"], o.code);
    assert_eq!(
        report["result"],
        "failed: the device still runs what it ran before"
    );
    assert_eq!(
        report["error"],
        "targets.json: hash does not match the one in snapshot.json"
    );
    assert_eq!(deployments(&r.s.d).len(), 1);
    assert!(r.actions().is_empty());
}

#[test]
fn operator_signature_missing_or_untrusted_is_refused() {
    let (r, b) = rig_with_v2();
    let keys = tempfile::tempdir().unwrap();
    let key = |name: &str| {
        let k = keys.path().join(name);
        let st = Command::new("openssl")
            .args(["genpkey", "-algorithm", "ed25519", "-out"])
            .arg(&k)
            .status()
            .unwrap();
        assert!(st.success());
        k
    };
    let (trusted, other) = (key("trusted.pem"), key("other.pem"));
    let public = |k: &Path| {
        let out = Command::new("openssl")
            .args(["pkey", "-pubout", "-outform", "DER", "-in"])
            .arg(k)
            .output()
            .unwrap();
        hex::encode(&out.stdout[out.stdout.len() - 32..])
    };
    std::fs::write(
        r.s.d.policy.join("30-signature.toml"),
        format!(
            "[signature]\nrequired = true\ntrusted_keys = [\"{}\"]\n",
            public(&trusted)
        ),
    )
    .unwrap();

    let unsigned = stick_with(b.path());
    let o = r.handle(&unsigned);
    code(&o, 105);
    assert_eq!(r.phase(), "error");
    assert!(r.report(&unsigned)["error"]
        .as_str()
        .unwrap()
        .contains("signature"));
    drop(unsigned);

    let sign = |k: &Path| {
        succeed(
            Command::new(env!("CARGO_BIN_EXE_usb-update"))
                .args(["bundle", "sign", "--key"])
                .arg(k)
                .arg(b.path()),
        )
    };
    sign(&other);
    let wrong = stick_with(b.path());
    code(&r.handle(&wrong), 105);
    drop(wrong);
    assert_eq!(deployments(&r.s.d).len(), 1);

    sign(&trusted);
    let good = stick_with(b.path());
    code(&r.handle(&good), 100);
}

#[test]
fn second_stick_while_busy_gets_busy_and_installs_nothing() {
    let (r, b) = rig_with_v2();
    let first = stick_with(b.path());
    let second = stick_with(b.path());
    // The first stick is installing (held at its copy, with the lock).
    let paused = r.handle_paused(&first.devnode);
    let o = r.handle(&second);
    code(&o, 30);
    assert_eq!(r.phase(), "busy");
    assert_eq!(r.led(), ("timer".into(), "250".into(), "250".into()));
    assert!(
        r.console().contains("another updater holds"),
        "{}",
        r.console()
    );
    assert!(r.report(&second)["error"]
        .as_str()
        .unwrap()
        .contains("another updater holds"));
    // The first goes on and installs; the second installed nothing.
    code(&paused.go(), 100);
    assert_eq!(deployments(&r.s.d).len(), 2);
    assert_eq!(r.actions(), "reboot\n");
    let installs = state(&r.s.d)["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["command"] == "install")
        .count();
    assert_eq!(installs, 1);
}

#[test]
fn stick_left_in_after_a_rollback_is_not_tried_again() {
    let mut r = Rig::new();
    let f = r.s.f.name.clone();
    let bad = AppSpec::busybox_running(&f, "app-02", "bad", "exit 3", true);
    let b =
        r.s.bundle(vec![T::new("2", vec![app(&f, "app-01", "v2"), bad])]);
    let stick = stick_with(b.path());
    code(&r.handle(&stick), 100);
    r.s.reboot_into("2", "boot-1");
    let o = r.agent(&["finalize"]);
    code(&o, 100);
    assert_eq!(r.actions(), "reboot\nreboot\n");
    r.s.reboot_into("1", "boot-2");
    code(&r.agent(&["finalize"]), 0);
    assert_eq!(r.phase(), "success");
    // At boot the stick is announced again: not a new insertion.
    let o = r.handle(&stick);
    code(&o, 0);
    assert!(
        r.console().contains("left in across the reboot"),
        "{}",
        r.console()
    );
    // Inserted again by hand: the target failed here, the policy refuses it.
    let o = r.handle(&stick);
    code(&o, 103);
    assert_eq!(r.actions(), "reboot\nreboot\n");
}

/// Stopped for the install and kept stopped across the reboot (it would finalize our
/// pending installation itself), started again once `run` finished it.
#[test]
fn aktualizr_lite_is_stopped_for_the_update_and_started_after_run() {
    let (r, b) = rig_with_v2();
    // A systemctl that logs its calls and says the unit is active.
    let systemctl = crate::common::agent_rig::fake_systemctl(&r.root);
    std::fs::write(
        r.s.d.policy.join("30-aklite.toml"),
        format!(
            "[agent]\nsystemctl = \"{}\"\naklite_unit = \"aktualizr-lite.service\"\n",
            systemctl.display()
        ),
    )
    .unwrap();
    let stick = stick_with(b.path());
    code(&r.handle(&stick), 100);
    assert_eq!(
        r.actions(),
        "systemctl is-active --quiet aktualizr-lite.service\n\
         systemctl stop aktualizr-lite.service\n\
         reboot\n"
    );
    // Booted into the new version: finalize runs, then aktualizr-lite starts.
    r.s.reboot_into("2", "boot-1");
    code(&r.agent(&["finalize"]), 0);
    assert!(
        r.actions().ends_with(
            "reboot\nsystemctl is-active --quiet aktualizr-lite.service\n\
                               systemctl stop aktualizr-lite.service\n\
                               systemctl start aktualizr-lite.service\n"
        ),
        "{}",
        r.actions()
    );
}

#[test]
fn boot_firmware_pending_reboots_then_the_same_stick_installs() {
    let (r, b) = rig_with_v2();
    let env = r.s.d.sysroot.join(".usb-update-sim/bootenv");
    std::fs::write(&env, "bootupgrade_available=1\nbootfirmware_version=4\n").unwrap();
    let stick = stick_with(b.path());
    code(&r.handle(&stick), 90);
    assert_eq!(r.actions(), "reboot\n");
    assert_eq!(
        deployments(&r.s.d).len(),
        1,
        "nothing deployed before the reboot"
    );
    // The reboot completes the firmware update; the stick is still in: installed this time.
    std::fs::write(&env, "bootupgrade_available=0\nbootfirmware_version=4\n").unwrap();
    r.s.reboot_into("1", "boot-1");
    code(&r.handle(&stick), 100);
    assert_eq!(r.actions(), "reboot\nreboot\n");
    assert_eq!(deployments(&r.s.d).len(), 2);
}

/// The stick pulled, as the kernel sees it: this kernel has no device-mapper, so the loop
/// device shrinks to its first MiB and every read beyond fails with EIO.
fn pull(stick: &Stick) {
    let st = Command::new("truncate")
        .args(["-s", "1M"])
        .arg(&stick.image)
        .status()
        .unwrap();
    assert!(st.success());
    let st = Command::new("losetup")
        .args(["--set-capacity", stick.devnode()])
        .status()
        .unwrap();
    assert!(st.success());
    // What was read before must not be served from the page cache.
    let _ = std::fs::write("/proc/sys/vm/drop_caches", "3");
}

#[test]
fn stick_pulled_mid_copy_is_50_and_the_next_stick_installs() {
    let (r, b) = rig_with_v2();
    let stick = stick_with(b.path());
    let images = r.s.image_ids();
    let paused = r.handle_paused(&stick.devnode);
    pull(&stick);
    let o = paused.go();
    code(&o, 50);
    assert!(o.stderr.contains("Input/output error"), "{}", o.stderr);
    assert!(o.stderr.contains("was the stick removed?"), "{}", o.stderr);
    assert_eq!(r.phase(), "error");
    // Nothing on the device changed: no deployment, nothing pending, no blob, no image.
    assert_eq!(deployments(&r.s.d).len(), 1);
    assert!(!r.s.d.state_dir().join("pending").exists());
    let blobs = r.s.store().join("blobs/sha256");
    assert!(
        std::fs::read_dir(&blobs).map_or(true, |mut d| d.next().is_none()),
        "blobs left in {}",
        blobs.display()
    );
    assert_eq!(r.s.image_ids(), images);
    drop(stick);

    // The next stick works.
    let good = stick_with(b.path());
    code(&r.handle(&good), 100);
}
