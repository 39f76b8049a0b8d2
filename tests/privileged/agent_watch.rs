//! `agent watch` itself, run as a process: ext4 sticks on loop devices that a stand-in for
//! an automounter (this test) mounts under a watched directory go through the same flow as
//! a stick udev hands to `agent handle` (operator signature, aktualizr-lite stopped and
//! started again, LEDs, the report, the reboot), and the same insertion is never taken
//! twice when udev announced it and the "automounter" mounts it too.

use std::io::BufRead as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::common::agent_rig::{error_led, stick_labelled, Rig};
use crate::common::apps::{app, T};
use crate::common::attack::{operator_key, sign_bundle};
use crate::common::scene::{deployments, state};

/// The label of this test's sticks: `agent watch` sees every block device udev announces,
/// and with `[media] labels` it leaves other tests' sticks alone.
const LABEL: &str = "WATCHTEST";

/// `usb-update agent watch` in the background; its log lines (stderr, ours alone) come
/// through a channel, so no line can be missed or overwritten.
struct Watch {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Watch {
    fn start(r: &Rig) -> Watch {
        let mut child = Command::new(env!("CARGO_BIN_EXE_usb-update"))
            .args(["agent", "watch", "-c"])
            .arg(&r.s.d.conf)
            .arg("-p")
            .arg(&r.s.d.policy)
            .env("USB_UPDATE_LOG", "info")
            .env("NO_COLOR", "1")
            .env("DOCKER_HOST", r.s.docker.host())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn agent watch");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut w = Watch {
            child,
            lines,
            seen: Vec::new(),
        };
        w.wait_for(|l| l.contains("watching udev for sticks"));
        w
    }

    /// The first line from now on for which `pred` holds.
    #[track_caller]
    fn wait_for(&mut self, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if pred(&line) {
                        return line;
                    }
                }
                Err(_) => panic!("no such line; agent watch said:\n{}", self.seen.join("\n")),
            }
        }
    }

    /// The exit code `agent watch` reports for `medium` (its own log line).
    #[track_caller]
    fn done(&mut self, medium: &str) -> i32 {
        let line = self.wait_for(|l| l.contains(medium) && l.contains(": done, exit code "));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A stick mounted read-write at `dir`, as udisks2 or udev-extraconf mount one.
struct Automounted {
    dir: PathBuf,
}

impl Automounted {
    fn new(devnode: &Path, dir: &Path) -> Automounted {
        std::fs::create_dir(dir).unwrap();
        let st = Command::new("mount")
            .args(["-o", "rw,nosuid,nodev"])
            .arg(devnode)
            .arg(dir)
            .status()
            .unwrap();
        assert!(st.success());
        Automounted {
            dir: dir.to_path_buf(),
        }
    }

    fn report(&self) -> serde_json::Value {
        let host = nix::unistd::gethostname().unwrap();
        let name = format!("usb-update-report-{}.json", host.to_string_lossy());
        serde_json::from_slice(&std::fs::read(self.dir.join(name)).unwrap()).unwrap()
    }

    fn is_mounted(&self) -> bool {
        use std::os::unix::fs::MetadataExt as _;
        let dev = |p: &Path| std::fs::metadata(p).unwrap().dev();
        dev(&self.dir) != dev(self.dir.parent().unwrap())
    }
}

impl Drop for Automounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).status();
    }
}

#[test]
fn watched_media_go_through_the_whole_flow_and_each_insertion_once() {
    let mut r = Rig::new();
    let f = r.s.f.name.clone();
    let b = r.s.bundle(vec![T::new("2", vec![app(&f, "app-01", "v2")])]);
    let media = r.root.join("media");
    let (pem, public) = operator_key(&r.root, 9);
    let systemctl = r.fake_systemctl();
    std::fs::write(
        r.s.d.policy.join("40-watch.toml"),
        format!(
            "[media]\nwatch_dirs = [\"{}\"]\nlabels = [\"{LABEL}\"]\n\n[signature]\nrequired = true\n\
             trusted_keys = [\"{public}\"]\n\n[agent]\nsystemctl = \"{}\"\n\
             aklite_unit = \"aktualizr-lite.service\"\n",
            media.display(),
            systemctl.display()
        ),
    )
    .unwrap();
    // Both sticks exist before the watch starts: only the "automounter" brings them.
    let unsigned = stick_labelled(b.path(), LABEL);
    sign_bundle(&pem, b.path());
    let signed = stick_labelled(b.path(), LABEL);
    let state_before = std::fs::read(r.s.d.state_dir().join("state.json")).ok();

    let mut w = Watch::start(&r);

    // Unsigned: refused with 105 as `agent handle` refuses it, report and LEDs included.
    let m1 = Automounted::new(&unsigned.devnode, &media.join("UNSIGNED"));
    assert_eq!(w.done("UNSIGNED"), 105);
    let report = m1.report();
    assert_eq!(report["exit_code"], 105, "{report}");
    assert!(
        report["error"]
            .as_str()
            .unwrap()
            .starts_with("the policy requires an operator signature ("),
        "{report}"
    );
    assert_eq!(r.led(), error_led());
    assert!(
        r.console()
            .contains("error: the policy requires an operator signature"),
        "{}",
        r.console()
    );
    assert_eq!(r.actions(), "", "nothing was stopped, nothing rebooted");
    assert_eq!(deployments(&r.s.d).len(), 1);
    assert_eq!(
        std::fs::read(r.s.d.state_dir().join("state.json")).ok(),
        state_before
    );
    assert!(!r.s.d.state_dir().join("tuf").exists());
    assert!(m1.is_mounted(), "another program's mount is left to it");

    // Signed: installed, with aktualizr-lite stopped (it stays stopped until `run` has
    // finished the pending installation after the reboot), and the reboot.
    let m2 = Automounted::new(&signed.devnode, &media.join("SIGNED"));
    assert_eq!(w.done("SIGNED"), 100);
    assert_eq!(m2.report()["exit_code"], 100);
    assert_eq!(
        r.actions(),
        "systemctl is-active --quiet aktualizr-lite.service\n\
         systemctl stop aktualizr-lite.service\n\
         reboot\n"
    );
    assert!(
        r.console()
            .contains(&format!("operator signature by {public}: trusted")),
        "{}",
        r.console()
    );
    assert_eq!(deployments(&r.s.d).len(), 2);
    assert_eq!(
        state(&r.s.d)["pending"]["target"]["name"],
        "intel-corei7-64-lmp-2"
    );
    assert!(m2.is_mounted());

    // A stick udev announces while the watch runs: `agent watch` takes it through udev
    // (30: the install above is pending) and, mounted by the automounter after, not again.
    let third = stick_labelled(b.path(), LABEL);
    let devnode = third.devnode.display().to_string();
    assert_eq!(w.done(&devnode), 30);
    let _m3 = Automounted::new(&third.devnode, &media.join("AGAIN"));
    w.wait_for(|l| l.contains("AGAIN") && l.contains("was taken already at this insertion"));
    drop(w);
    assert_eq!(deployments(&r.s.d).len(), 2);
}
