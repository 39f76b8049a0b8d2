//! The USB agent's rig for the fault suites: a Compose-apps device with a private dockerd,
//! LEDs and a console in files, reboot and Docker restart as commands that log what they
//! were asked to do, sticks on loop devices; `agent handle` run to the end or held at a
//! named pause point.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::apps::AppScene;
use super::faults::{self, Out, Paused};
use super::stick::Stick;

pub struct Rig {
    pub s: AppScene,
    pub root: PathBuf,
}

impl Rig {
    pub fn new() -> Rig {
        let s = AppScene::new(None);
        let root = s.d.tmp.path().to_path_buf();
        // A console is never created by the agent (it could be /dev/...): it must exist.
        std::fs::write(root.join("console"), "").expect("console");
        let led = root.join("leds/status");
        std::fs::create_dir_all(&led).expect("led");
        for f in ["trigger", "brightness", "delay_on", "delay_off"] {
            std::fs::write(led.join(f), "").expect("led");
        }
        let log = |what: &str| {
            format!(
                "[\"sh\", \"-c\", \"echo {what} >> {}\"]",
                root.join("actions").display()
            )
        };
        std::fs::write(
            s.d.policy.join("20-agent.toml"),
            format!(
                "[agent]\nrun_dir = \"{run}\"\nreboot_command = {reboot}\n\
                 docker_restart_command = {docker}\naklite_unit = \"\"\n\n\
                 [media]\nrequire_usb = false\n\n\
                 [feedback]\nleds_path = \"{leds}\"\nleds = [\"status\"]\nconsoles = [\"{console}\"]\n",
                run = root.join("run/usb-update").display(),
                reboot = log("reboot"),
                docker = log("docker-restart"),
                leds = root.join("leds").display(),
                console = root.join("console").display(),
            ),
        )
        .expect("policy");
        Rig { s, root }
    }

    pub fn agent(&self, args: &[&str]) -> Out {
        let out = faults::usb_update(&self.s.d, &["agent", args[0]], &args[1..])
            .output()
            .expect("spawn usb-update");
        Out::from(out)
    }

    pub fn handle(&self, stick: &Stick) -> Out {
        self.agent(&["handle", stick.devnode()])
    }

    /// `agent handle` in the background, held at `point` until [`Paused::go`].
    pub fn handle_paused(&self, stick: &Stick, point: &str) -> Paused {
        let cmd = faults::usb_update(&self.s.d, &["agent", "handle"], &[stick.devnode()]);
        faults::spawn_paused(cmd, point, &self.root.join("paused"))
    }

    pub fn actions(&self) -> String {
        std::fs::read_to_string(self.root.join("actions")).unwrap_or_default()
    }

    pub fn console(&self) -> String {
        std::fs::read_to_string(self.root.join("console")).unwrap_or_default()
    }

    pub fn phase(&self) -> String {
        let v: serde_json::Value = serde_json::from_slice(
            &std::fs::read(self.root.join("run/usb-update/status.json")).expect("status.json"),
        )
        .expect("status.json");
        v["phase"].as_str().unwrap_or_default().to_string()
    }

    /// The LED's attributes: trigger, delay_on, delay_off.
    pub fn led(&self) -> (String, String, String) {
        led_of(&self.root)
    }

    /// [`fake_systemctl`] for this rig.
    pub fn fake_systemctl(&self) -> PathBuf {
        fake_systemctl(&self.root)
    }

    /// The stick's report, parsed, if there is one.
    pub fn report(&self, stick: &Stick) -> Option<serde_json::Value> {
        let host = nix::unistd::gethostname().expect("hostname");
        let name = format!("usb-update-report-{}.json", host.to_string_lossy());
        stick
            .read(&name)
            .map(|b| serde_json::from_slice(&b).expect("report"))
    }
}

/// The attributes of the LED `status` under `<root>/leds`: trigger, delay_on, delay_off.
pub fn led_of(root: &Path) -> (String, String, String) {
    let read = |f: &str| {
        std::fs::read_to_string(root.join("leds/status").join(f))
            .expect("led")
            .trim()
            .to_string()
    };
    (read("trigger"), read("delay_on"), read("delay_off"))
}

/// A systemctl in `root` that logs its calls to `root/actions` and says every unit is
/// active: aktualizr-lite "runs". Returns its path.
pub fn fake_systemctl(root: &Path) -> PathBuf {
    let systemctl = root.join("systemctl");
    std::fs::write(
        &systemctl,
        format!(
            "#!/bin/sh\necho \"systemctl $*\" >> {}\n",
            root.join("actions").display()
        ),
    )
    .expect("systemctl");
    std::fs::set_permissions(
        &systemctl,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("systemctl");
    systemctl
}

/// An aktualizr-lite that runs while `<root>/aklite-active` exists, and the systemctl
/// (`<root>/systemctl`) that drives it; returns both paths.
pub fn aklite_double(root: &Path) -> (PathBuf, PathBuf) {
    let active = root.join("aklite-active");
    let systemctl = root.join("systemctl");
    std::fs::write(
        &systemctl,
        format!(
            "#!/bin/sh\ncase \"$1\" in\n is-active) [ -e {f} ];;\n stop) rm -f {f};;\n \
             start) touch {f};;\nesac\n",
            f = active.display()
        ),
    )
    .expect("systemctl");
    std::fs::set_permissions(
        &systemctl,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("systemctl");
    std::fs::write(&active, "").expect("aklite");
    (systemctl, active)
}

/// The LED patterns of docs/operator-guide.md.
pub fn led(trigger: &str, on: &str, off: &str) -> (String, String, String) {
    (trigger.into(), on.into(), off.into())
}

pub fn error_led() -> (String, String, String) {
    led("timer", "100", "900")
}

/// A stick holding `bundle` one directory down, as operators copy it.
pub fn stick_with(bundle: &Path) -> Stick {
    stick_labelled(bundle, "UPDATE")
}

/// [`stick_with`] with the filesystem label `label`: a test whose agent watches udev for
/// every stick confines it with `[media] labels` to its own label, and leaves the sticks
/// of tests running beside it alone.
pub fn stick_labelled(bundle: &Path, label: &str) -> Stick {
    let content = tempfile::tempdir().expect("tempdir");
    let dst = content.path().join("update");
    let st = Command::new("cp")
        .arg("-a")
        .arg(bundle)
        .arg(&dst)
        .status()
        .expect("cp");
    assert!(st.success());
    Stick::with(content.path(), label)
}
