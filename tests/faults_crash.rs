//! Faults, part 1: the process killed (SIGKILL, `USB_UPDATE_CRASH_AT`) at every named point
//! of `install`, `run` and `agent handle|finalize`, then the same command again and the
//! rest of the flow (install -> simulated reboot -> run). Each point's final state must be
//! the one an uninterrupted update gives (deployments, state, pending marker, bootloader
//! environment, and on a Compose device containers, images, store and projects), and
//! nothing from before may be lost.
//!
//! Scenes are progressive: one device updates version after version, a reference update
//! without a kill first; states are compared after replacing commits, names and digests by
//! their role (NEW: the version being installed, CUR: the one running before, OLD: older).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::apps::{app, AppScene, T};
use common::stick::Stick;
use common::{Device, DeviceSpec, Run, HWID};
use usb_update::failpoint::POINTS;
use usb_update::gen::{self, write_bundle, write_content, AppSpec, BundleSpec, Factory};

const CRASH: &str = "USB_UPDATE_CRASH_AT";

/// Which command a point is killed in, and what running it again returns.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Cmd {
    Install,
    Run,
}

/// OSTree-only device, a normal update: (point, killed command, code of the re-run).
/// `state-written` kills the first save: install's pending record, run's boot count.
const OSTREE_UPDATE: &[(&str, Cmd, i32)] = &[
    ("install-pulled", Cmd::Install, 100),
    ("install-boot-armed", Cmd::Install, 100),
    ("install-deployed", Cmd::Install, 100),
    ("install-tuf-stored", Cmd::Install, 100),
    ("state-marker-written", Cmd::Install, 100),
    ("state-written", Cmd::Install, 30),
    ("install-recorded", Cmd::Install, 30),
    ("run-boot-counted", Cmd::Run, 0),
    ("state-written", Cmd::Run, 0),
    ("run-boot-ok-set", Cmd::Run, 0),
    ("run-recorded", Cmd::Run, 40),
    ("run-cleaned", Cmd::Run, 40),
];

/// OSTree-only device, the bootloader booted the previous rootfs: (point, re-run code).
const OSTREE_BOOTLOADER_ROLLBACK: &[(&str, i32)] = &[
    ("run-rollback-recorded", 40),
    ("run-failed-deployment-removed", 40),
];

/// Compose device, rootfs and apps updated.
const APPS_UPDATE: &[(&str, Cmd, i32)] = &[
    ("install-blob-copied", Cmd::Install, 100),
    ("install-apps-fetched", Cmd::Install, 100),
    ("install-images-loaded", Cmd::Install, 100),
    ("install-previous-apps-recorded", Cmd::Install, 100),
    ("run-apps-up", Cmd::Run, 0),
    ("run-apps-healthy", Cmd::Run, 0),
    ("run-pruned", Cmd::Run, 40),
];

/// Compose device, the new apps fail: (point, which run, re-run code). The first run is on
/// the new rootfs (restores the previous apps, makes the previous deployment default, 100),
/// the second after the reboot into it (0: rolled back).
const APPS_ROLLBACK: &[(&str, u8, i32)] = &[
    ("run-rollback-apps-restored", 1, 100),
    ("run-rollback-default-set", 1, 100),
    // Recorded: the re-run is before the reboot it asked for.
    ("run-rollback-pending-recorded", 1, 104),
    ("run-rollback-apps-back", 2, 0),
    ("run-rollback-deployment-removed", 2, 0),
    ("run-rollback-finished", 2, 40),
];

/// Compose device, the bootloader booted the previous rootfs.
const APPS_BOOTLOADER_ROLLBACK: &[(&str, i32)] = &[("run-bootloader-apps-restored", 99)];

/// Compose device, an apps-only stick through `agent handle`: (point, re-run code of
/// `handle`). The install is recorded: the re-run is busy (30), `agent finalize` (at the
/// next boot, or after Docker's restart) finishes it.
const AGENT_APPS_ONLY: &[(&str, i32)] = &[
    ("agent-before-docker-restart", 30),
    ("agent-docker-restarted", 30),
];

/// OSTree-only device, a stick through `agent handle`, then `agent finalize` after the
/// reboot: (point, re-run code of `handle`; for finalize's point, of `finalize`).
const AGENT: &[(&str, i32)] = &[
    ("agent-mounted", 100),
    ("agent-aklite-stopped", 100),
    ("agent-installed", 30),
    ("agent-left-in-recorded", 30),
    ("agent-report-written", 30),
    ("agent-before-reboot", 30),
    ("agent-finalize-ran", 0),
];

fn scenario_points() -> Vec<&'static str> {
    let mut all: Vec<&str> = Vec::new();
    all.extend(OSTREE_UPDATE.iter().map(|p| p.0));
    all.extend(OSTREE_BOOTLOADER_ROLLBACK.iter().map(|p| p.0));
    all.extend(APPS_UPDATE.iter().map(|p| p.0));
    all.extend(APPS_ROLLBACK.iter().map(|p| p.0));
    all.extend(APPS_BOOTLOADER_ROLLBACK.iter().map(|p| p.0));
    all.extend(AGENT_APPS_ONLY.iter().map(|p| p.0));
    all.extend(AGENT.iter().map(|p| p.0));
    all
}

/// Every `failpoint::hit("...")` name in src/.
fn call_sites() -> BTreeMap<String, Vec<PathBuf>> {
    fn walk(dir: &Path, out: &mut BTreeMap<String, Vec<PathBuf>>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let text = std::fs::read_to_string(&p).unwrap();
                for (i, _) in text.match_indices("failpoint::hit(") {
                    let rest = &text[i + "failpoint::hit(".len()..];
                    let name = rest
                        .strip_prefix('"')
                        .and_then(|r| r.split('"').next())
                        .unwrap_or_else(|| panic!("{}: hit() without a literal name", p.display()));
                    out.entry(name.to_string()).or_default().push(p.clone());
                }
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut out);
    out
}

#[test]
fn every_point_is_listed_called_and_killed_by_a_scenario() {
    let listed: std::collections::BTreeSet<&str> = POINTS.iter().copied().collect();
    assert_eq!(listed.len(), POINTS.len(), "a point is listed twice");
    let sites = call_sites();
    for (name, files) in &sites {
        assert!(
            listed.contains(name.as_str()),
            "failpoint::hit(\"{name}\") in {files:?} is not in failpoint::POINTS"
        );
    }
    for p in POINTS {
        assert!(
            sites.contains_key(*p),
            "{p} is listed but never hit in src/"
        );
    }
    let killed: std::collections::BTreeSet<&str> = scenario_points().into_iter().collect();
    let missing: Vec<_> = listed.difference(&killed).collect();
    assert!(missing.is_empty(), "no scenario kills at {missing:?}");
    let unknown: Vec<_> = killed.difference(&listed).collect();
    assert!(
        unknown.is_empty(),
        "scenarios name unknown points {unknown:?}"
    );
}

#[track_caller]
fn killed(r: &Run, point: &str) {
    assert!(
        r.code == -1 && r.stderr.contains(&format!("failpoint {point}: SIGKILL")),
        "{point}: expected a SIGKILL there, got {}\nstdout:\n{}\nstderr:\n{}",
        r.code,
        r.stdout,
        r.stderr
    );
}

#[track_caller]
fn code(r: &Run, want: i32, what: &str) {
    assert_eq!(
        r.code, want,
        "{what}\nstdout:\n{}\nstderr:\n{}",
        r.stdout, r.stderr
    );
}

fn name(v: u32) -> String {
    format!("{HWID}-lmp-{v}")
}

/// Commits, target names and digests replaced by their role.
struct Roles(Vec<(String, String)>);

impl Roles {
    fn apply(&self, s: &str) -> String {
        let mut s = s.to_string();
        for (needle, role) in &self.0 {
            s = s.replace(needle.as_str(), role);
        }
        s
    }
}

fn role(v: u32, new: u32, cur: u32) -> &'static str {
    match v {
        _ if v == new => "NEW",
        _ if v == cur => "CUR",
        _ => "OLD",
    }
}

/// `version` numbers differ from update to update; their role is in the name.
fn strip(v: &mut serde_json::Value, keys: &[&str]) {
    match v {
        serde_json::Value::Object(m) => {
            for k in keys {
                m.remove(*k);
            }
            m.values_mut().for_each(|x| strip(x, keys));
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(|x| strip(x, keys)),
        _ => {}
    }
}

fn read_json(p: &Path) -> serde_json::Value {
    std::fs::read(p)
        .ok()
        .map(|b| serde_json::from_slice(&b).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .unwrap_or(serde_json::Value::Null)
}

fn deployments(d: &Device) -> Vec<String> {
    common::scene::deployments(d)
}

/// What the device holds that an update decides, as text; the denylist separately (it
/// only grows: entries from before are checked to be kept).
fn device_state(d: &Device) -> (serde_json::Value, Vec<String>) {
    let dir = d.state_dir();
    let mut st = read_json(&dir.join("state.json"));
    let failed = st["failed"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|f| format!("{} {}", f["name"], f["sha256"]))
                .collect()
        })
        .unwrap_or_default();
    strip(
        &mut st,
        &[
            "history",
            "failed",
            "installed_at",
            "boot_id",
            "version",
            "reason",
        ],
    );
    let bootenv =
        std::fs::read_to_string(d.sysroot.join(".usb-update-sim/bootenv")).unwrap_or_default();
    let mut bootenv: Vec<&str> = bootenv.lines().collect();
    bootenv.sort();
    let tuf: BTreeMap<String, String> = std::fs::read_dir(dir.join("tuf"))
        .map(|r| {
            r.map(|e| {
                let e = e.unwrap();
                let bytes = std::fs::read(e.path()).unwrap();
                let hash = format!("{:x}", <sha2::Sha256 as sha2::Digest>::digest(&bytes));
                (e.file_name().to_string_lossy().into_owned(), hash)
            })
            .collect()
        })
        .unwrap_or_default();
    let v = serde_json::json!({
        "deployments": deployments(d),
        "state": st,
        "pending_marker": std::fs::read_to_string(dir.join("pending")).ok(),
        "bootenv": bootenv,
        "tuf_files": tuf.keys().collect::<Vec<_>>(),
    });
    (v, failed)
}

/// A device running version 1 and one bundle per later version (nothing else in it).
struct Progressive {
    d: Device,
    commits: BTreeMap<u32, String>,
    bundles: BTreeMap<u32, tempfile::TempDir>,
    cur: u32,
    next: u32,
}

impl Progressive {
    fn new(last: u32) -> Progressive {
        let f = Factory::new().unwrap();
        let d = Device::with(
            &f,
            DeviceSpec {
                rollback_mode: "file",
                ..Default::default()
            },
        );
        let image = tempfile::tempdir().unwrap();
        let c1 = write_content(image.path(), &f.name, HWID, "1", &[]).unwrap();
        d.deploy_initial(&image.path().join("ostree_repo"), &c1.commit);
        d.reboot_into(&c1.commit, "sim-0");
        let mut commits = BTreeMap::from([(1, c1.commit)]);
        let mut bundles = BTreeMap::new();
        for v in 2..=last {
            let b = tempfile::tempdir().unwrap();
            let c = write_content(b.path(), &f.name, HWID, &v.to_string(), &[]).unwrap();
            let spec = BundleSpec::new(vec![gen::target_for(HWID, &v.to_string(), &c)]);
            write_bundle(&f, &spec, b.path()).unwrap();
            commits.insert(v, c.commit);
            bundles.insert(v, b);
        }
        Progressive {
            d,
            commits,
            bundles,
            cur: 1,
            next: 2,
        }
    }

    fn roles(&self, new: u32) -> Roles {
        let mut pairs: Vec<(String, String)> = Vec::new();
        for (v, c) in self.commits.iter().rev() {
            let r = role(*v, new, self.cur);
            pairs.push((c.clone(), r.into()));
            pairs.push((format!("\"{}\"", name(*v)), format!("\"{r}\"")));
        }
        Roles(pairs)
    }

    fn install(&self, v: u32, env: &[(&str, &str)]) -> Run {
        let b = self.bundles[&v].path().to_str().unwrap().to_string();
        self.d.command_env("install", &["--src-dir", &b], env)
    }

    fn run(&self, env: &[(&str, &str)]) -> Run {
        self.d.command_env("run", &[], env)
    }

    /// The device after an update step, by role, and the denylist.
    fn snapshot(&self, new: u32) -> (String, Vec<String>) {
        let (v, failed) = device_state(&self.d);
        let roles = self.roles(new);
        let text = roles.apply(&serde_json::to_string_pretty(&v).unwrap());
        (text, failed.iter().map(|f| roles.apply(f)).collect())
    }

    /// Install the next version and finish it, killed at `kill` (point, command, re-run
    /// code). Returns the device's state by role and the denylist entries it added.
    fn update(&mut self, kill: Option<(&str, Cmd, i32)>) -> (String, Vec<String>) {
        let v = self.next;
        self.next += 1;
        let (_, failed_before) = self.snapshot(v);
        let what = kill.map_or("reference".to_string(), |k| format!("{k:?}"));
        match kill {
            Some((point, Cmd::Install, again)) => {
                killed(&self.install(v, &[(CRASH, point)]), point);
                self.nothing_lost(None, &what);
                code(&self.install(v, &[]), again, &what);
            }
            _ => code(&self.install(v, &[]), 100, &what),
        }
        self.d.reboot_into(&self.commits[&v], &format!("boot-{v}"));
        match kill {
            Some((point, Cmd::Run, again)) => {
                killed(&self.run(&[(CRASH, point)]), point);
                self.nothing_lost(Some(v), &what);
                code(&self.run(&[]), again, &what);
            }
            _ => code(&self.run(&[]), 0, &what),
        }
        let r = self.d.command("current", &[]);
        assert!(
            r.stdout.starts_with(&format!("current: {}", name(v))),
            "{what}: {}",
            r.stdout
        );
        let (snap, failed) = self.snapshot(v);
        self.cur = v;
        (snap, added(&failed_before, failed, &what))
    }

    /// The bootloader boots the previous rootfs; `run` killed at `kill`.
    fn bootloader_rollback(&mut self, kill: Option<(&str, i32)>) -> (String, Vec<String>) {
        let v = self.next;
        self.next += 1;
        let (_, failed_before) = self.snapshot(v);
        let what = kill.map_or("reference".to_string(), |k| format!("{k:?}"));
        code(&self.install(v, &[]), 100, &what);
        self.d
            .reboot_into(&self.commits[&self.cur], &format!("boot-{v}"));
        match kill {
            Some((point, again)) => {
                killed(&self.run(&[(CRASH, point)]), point);
                self.nothing_lost(None, &what);
                code(&self.run(&[]), again, &what);
            }
            None => code(&self.run(&[]), 99, &what),
        }
        let r = self.d.command("current", &[]);
        assert!(
            r.stdout
                .starts_with(&format!("current: {}", name(self.cur))),
            "{what}: {}",
            r.stdout
        );
        let (snap, failed) = self.snapshot(v);
        (snap, added(&failed_before, failed, &what))
    }

    /// Whatever the kill: the deployment running is there (an uninterrupted deploy drops
    /// older ones too), and what the state says the device runs has not changed.
    #[track_caller]
    fn nothing_lost(&self, committed: Option<u32>, what: &str) {
        let now = deployments(&self.d);
        let running = &self.commits[&self.cur];
        assert!(
            now.contains(running),
            "{what}: running deployment lost: {now:?}"
        );
        let st = read_json(&self.d.state_dir().join("state.json"));
        // A run killed after its commit: the new target is current.
        let now = &st["current"]["name"];
        if self.cur > 1 && committed.is_none_or(|v| *now != name(v)) {
            assert_eq!(*now, name(self.cur), "{what}");
        }
    }
}

/// The denylist entries added, after checking that none from before went.
#[track_caller]
fn added(before: &[String], after: Vec<String>, what: &str) -> Vec<String> {
    for f in before {
        assert!(
            after.contains(f),
            "{what}: denylist entry {f} lost: {after:?}"
        );
    }
    after.into_iter().filter(|f| !before.contains(f)).collect()
}

#[test]
fn ostree_device_killed_at_every_point_converges() {
    let n = 2 + OSTREE_UPDATE.len() + 1 + OSTREE_BOOTLOADER_ROLLBACK.len() + 1;
    let mut p = Progressive::new(n as u32 + 1);
    // The first update leaves the device's initial image; from the second on, every
    // update has the same shape.
    p.update(None);
    let reference = p.update(None);
    assert!(reference.1.is_empty());
    for (point, cmd, again) in OSTREE_UPDATE {
        assert_eq!(
            p.update(Some((point, *cmd, *again))),
            reference,
            "{point} in {cmd:?}"
        );
    }
    let reference = p.bootloader_rollback(None);
    assert_eq!(reference.1, vec!["\"NEW\" \"NEW\"".to_string()]);
    for (point, again) in OSTREE_BOOTLOADER_ROLLBACK {
        assert_eq!(
            p.bootloader_rollback(Some((point, *again))),
            reference,
            "{point}"
        );
    }
    // After all that, an ordinary update still works.
    p.update(None);
}

/// A boot of the new rootfs that never finishes, `boot_attempts` times over: the next boot
/// rolls back, the target goes on the denylist, the device stays on the good version.
#[test]
fn reboot_loop_ends_on_the_denylist_after_boot_attempts() {
    let mut p = Progressive::new(3);
    p.update(None);
    let good = p.d.command("current", &[]).stdout;
    let dir = p.d.state_dir();
    code(&p.install(3, &[]), 100, "install 3");
    // Default: 3.
    for boot in 1..=3u32 {
        p.d.reboot_into(&p.commits[&3], &format!("loop-{boot}"));
        killed(&p.run(&[(CRASH, "run-boot-counted")]), "run-boot-counted");
        let st = read_json(&dir.join("state.json"));
        assert_eq!(st["pending"]["boot_attempts"], boot, "boot {boot}");
        // run again in the same boot (a crash of run, not of the boot) does not count.
        if boot == 1 {
            killed(&p.run(&[(CRASH, "run-boot-ok-set")]), "run-boot-ok-set");
            let st = read_json(&dir.join("state.json"));
            assert_eq!(
                st["pending"]["boot_attempts"], 1,
                "counted twice in one boot"
            );
        }
    }
    p.d.reboot_into(&p.commits[&3], "loop-4");
    let r = p.run(&[]);
    code(&r, 100, "the boot after the limit");
    assert!(
        r.stdout.starts_with(&format!(
            "{} did not finish booting 3 time(s) ([update] boot_attempts = 3): rollback to {}",
            name(3),
            name(2)
        )),
        "{}",
        r.stdout
    );
    assert_eq!(
        deployments(&p.d)[0],
        p.commits[&2],
        "the good rootfs is default again"
    );
    let st = read_json(&dir.join("state.json"));
    assert_eq!(st["failed"][0]["name"], name(3));
    assert!(
        st["failed"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("did not finish booting"),
        "{st}"
    );
    assert_eq!(st["pending"]["phase"], "rolling_back");
    assert!(dir.join("pending").exists());
    p.d.reboot_into(&p.commits[&2], "loop-5");
    let r = p.run(&[]);
    code(&r, 0, "after the rollback reboot");
    assert!(
        r.stdout.starts_with(&format!(
            "rolled back to {} after {} failed",
            name(2),
            name(3)
        )),
        "{}",
        r.stdout
    );
    assert_eq!(deployments(&p.d)[0], p.commits[&2]);
    assert!(!deployments(&p.d).contains(&p.commits[&3]));
    assert!(!dir.join("pending").exists());
    assert_eq!(
        p.d.command("current", &[]).stdout.lines().next(),
        good.lines().next()
    );
    let bootenv = std::fs::read_to_string(p.d.sysroot.join(".usb-update-sim/bootenv")).unwrap();
    assert!(bootenv.contains("upgrade_available=0"), "{bootenv}");
    // The same bundle again: denylisted.
    let r = p.install(3, &[]);
    code(&r, 103, "the failed target again");
    assert!(r.stdout.contains("failed"), "{}", r.stdout);
}

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

/// The agent's rig: run directory, logged reboot and Docker restart, a console file, no
/// LEDs, loop devices accepted.
fn agent_policy(d: &Device) {
    let root = d.tmp.path();
    std::fs::write(root.join("console"), "").unwrap();
    let log = |what: &str| {
        format!(
            "[\"sh\", \"-c\", \"echo {what} >> {}\"]",
            root.join("actions").display()
        )
    };
    std::fs::write(
        d.policy.join("20-agent.toml"),
        format!(
            "[agent]\nrun_dir = \"{run}\"\nreboot_command = {reboot}\n\
             docker_restart_command = {docker}\naklite_unit = \"\"\n\n\
             [media]\nrequire_usb = false\n\n\
             [feedback]\nleds = []\nconsoles = [\"{console}\"]\n",
            run = root.join("run/usb-update").display(),
            reboot = log("reboot"),
            docker = log("docker-restart"),
            console = root.join("console").display(),
        ),
    )
    .unwrap();
}

fn agent(d: &Device, args: &[&str], env: &[(&str, &str)]) -> Run {
    let (sub, rest) = args.split_first().unwrap();
    let mut all = vec![*sub, "-c", d.conf.to_str().unwrap(), "-p"];
    all.push(d.policy.to_str().unwrap());
    all.extend_from_slice(rest);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_usb-update"))
        .envs(env.iter().copied())
        .arg("agent")
        .args(&all)
        .output()
        .unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Nothing of a stick stays mounted under the run directory.
#[track_caller]
fn no_mounts(d: &Device, what: &str) {
    let run = d.tmp.path().join("run/usb-update");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let run = run.canonicalize().unwrap_or(run);
    assert!(
        !mounts.contains(run.to_str().unwrap()),
        "{what}: a stick is still mounted under {}:\n{mounts}",
        run.display()
    );
}

#[test]
fn agent_killed_at_every_point_converges() {
    let n = 2 + AGENT.len();
    let mut p = Progressive::new(n as u32 + 1);
    agent_policy(&p.d);
    // An aktualizr-lite that runs (a file says so) and a systemctl that drives it.
    let root = p.d.tmp.path().to_path_buf();
    let aklite = root.join("aklite-active");
    let systemctl = root.join("systemctl");
    std::fs::write(
        &systemctl,
        format!(
            "#!/bin/sh\ncase \"$1\" in\n is-active) [ -e {f} ];;\n stop) rm -f {f};;\n              start) touch {f};;\nesac\n",
            f = aklite.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        &systemctl,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    std::fs::write(
        p.d.policy.join("30-aklite.toml"),
        format!(
            "[agent]\nsystemctl = \"{}\"\naklite_unit = \"aktualizr-lite.service\"\n",
            systemctl.display()
        ),
    )
    .unwrap();
    std::fs::write(&aklite, "").unwrap();
    let content = tempfile::tempdir().unwrap();
    for (v, b) in &p.bundles {
        let st = std::process::Command::new("cp")
            .arg("-a")
            .arg(b.path())
            .arg(content.path().join(format!("b{v}")))
            .status()
            .unwrap();
        assert!(st.success());
    }
    let stick = Stick::with(content.path(), "UPDATE");
    let step = |p: &mut Progressive, kill: Option<(&str, i32)>| {
        let v = p.next;
        p.next += 1;
        let (_, failed_before) = p.snapshot(v);
        let what = kill.map_or("reference".to_string(), |k| format!("{k:?}"));
        p.d.set_policy(&format!("[media]\nbundle = \"b{v}\"\n"));
        let handle = |env: &[(&str, &str)]| agent(&p.d, &["handle", stick.devnode()], env);
        match kill {
            Some((point, again)) if point != "agent-finalize-ran" => {
                killed(&handle(&[(CRASH, point)]), point);
                p.nothing_lost(None, &what);
                code(&handle(&[]), again, &what);
            }
            _ => code(&handle(&[]), 100, &what),
        }
        no_mounts(&p.d, &what);
        assert!(
            aklite.exists(),
            "{what}: aktualizr-lite left stopped by handle"
        );
        p.d.reboot_into(&p.commits[&v], &format!("boot-{v}"));
        match kill {
            Some((point @ "agent-finalize-ran", again)) => {
                killed(&agent(&p.d, &["finalize"], &[(CRASH, point)]), point);
                code(&agent(&p.d, &["finalize"], &[]), again, &what);
            }
            _ => code(&agent(&p.d, &["finalize"], &[]), 0, &what),
        }
        assert!(
            aklite.exists(),
            "{what}: aktualizr-lite left stopped by finalize"
        );
        let r = p.d.command("current", &[]);
        assert!(
            r.stdout.starts_with(&format!("current: {}", name(v))),
            "{what}: {}",
            r.stdout
        );
        let (snap, failed) = p.snapshot(v);
        p.cur = v;
        (snap, added(&failed_before, failed, &what))
    };
    step(&mut p, None);
    let reference = step(&mut p, None);
    for (point, again) in AGENT {
        assert_eq!(step(&mut p, Some((point, *again))), reference, "{point}");
    }
}

/// A Compose device updating version after version, one bundle per update.
struct AppsProgressive {
    s: AppScene,
    cur: u32,
    /// The version whose rootfs the device runs (apps-only updates keep it).
    rootfs: &'static str,
    next: u32,
}

impl AppsProgressive {
    fn new() -> AppsProgressive {
        let s = AppScene::new(None);
        agent_policy(&s.d);
        AppsProgressive {
            s,
            cur: 1,
            rootfs: "1",
            next: 2,
        }
    }

    /// Commits, names and every digest that belongs to one version only, by role.
    fn roles(&self, new: u32) -> Roles {
        let mut owners: BTreeMap<String, std::collections::BTreeSet<u32>> = BTreeMap::new();
        for ((v, _), info) in &self.s.written {
            let v: u32 = v.parse().unwrap();
            let mut digests = vec![info.manifest_digest.clone(), info.archive_digest.clone()];
            for i in &info.images {
                digests.push(i.manifest_digest.clone());
                digests.push(i.config_digest.clone());
                digests.extend(i.layer_digests.iter().cloned());
            }
            for d in digests {
                owners.entry(d).or_default().insert(v);
            }
        }
        // A digest written for several versions (the same app again) takes the role of the
        // newest: the same in every round of a scenario.
        let mut pairs = Vec::new();
        for (d, vs) in owners {
            if let Some(v) = vs.iter().next_back() {
                pairs.push((d, format!("{}-digest", role(*v, new, self.cur))));
            }
        }
        let mut versions: Vec<u32> = self.s.commits.keys().map(|v| v.parse().unwrap()).collect();
        versions.extend(
            self.s
                .written
                .keys()
                .map(|(v, _)| v.parse::<u32>().unwrap()),
        );
        versions.sort();
        versions.dedup();
        for v in versions.iter().rev() {
            let r = role(*v, new, self.cur);
            if let Some(c) = self.s.commits.get(&v.to_string()) {
                // Apps-only releases keep the rootfs: the one running has a role of its own.
                let label = if *c == self.s.commits[self.rootfs] {
                    "RUNNING-ROOTFS"
                } else {
                    r
                };
                pairs.push((c.clone(), label.to_string()));
            }
            pairs.push((format!("\"{}\"", name(*v)), format!("\"{r}\"")));
        }
        Roles(pairs)
    }

    /// Everything an update decides, by role.
    fn snapshot(&self, new: u32) -> (String, Vec<String>) {
        let (mut v, failed) = device_state(&self.s.d);
        let ls = |dir: PathBuf| -> Vec<String> {
            let mut names: Vec<String> = std::fs::read_dir(&dir)
                .map(|r| {
                    r.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default();
            names.sort();
            names
        };
        let store = self.s.store();
        let versions: Vec<String> = ls(store.join("apps"))
            .into_iter()
            .flat_map(|a| {
                ls(store.join("apps").join(&a))
                    .into_iter()
                    .map(move |h| format!("{a}/{h}"))
            })
            .collect();
        v["running"] = serde_json::json!(self.s.running());
        v["images"] = serde_json::json!(self.s.image_ids());
        v["store_versions"] = serde_json::json!(versions);
        v["store_blobs"] = serde_json::json!(ls(store.join("blobs/sha256")));
        v["projects"] = serde_json::json!(ls(self.s.compose_root()));
        v["previous_apps"] = read_json(&self.s.d.state_dir().join("previous-apps.json"));
        v["previous_apps_copies"] =
            serde_json::json!(ls(self.s.d.state_dir().join("previous-apps")));
        let roles = self.roles(new);
        let mut v: serde_json::Value =
            serde_json::from_str(&roles.apply(&serde_json::to_string(&v).unwrap())).unwrap();
        // The app bundle index (one per app version) is in no `AppInfo`: blobs of no known
        // version count, by number.
        if let Some(a) = v["store_blobs"].as_array_mut() {
            for x in a.iter_mut() {
                if x.as_str()
                    .is_some_and(|h| h.len() == 64 && h.bytes().all(|c| c.is_ascii_hexdigit()))
                {
                    *x = serde_json::json!("OTHER");
                }
            }
        }
        // Roles reorder lists that were sorted by digest.
        for k in ["images", "store_versions", "store_blobs"] {
            if let Some(a) = v[k].as_array_mut() {
                a.sort_by_key(|x| x.to_string());
            }
        }
        let roles = self.roles(new);
        (
            serde_json::to_string_pretty(&v).unwrap(),
            failed.iter().map(|f| roles.apply(f)).collect(),
        )
    }

    fn cmd(&self, cmd: &str, bundle: Option<&Path>, env: &[(&str, &str)]) -> Run {
        let b = bundle.map(|b| b.to_str().unwrap().to_string());
        let args: Vec<&str> = match &b {
            Some(b) => vec!["--src-dir", b],
            None => vec![],
        };
        self.s.d.command_env(cmd, &args, env)
    }

    #[track_caller]
    fn nothing_lost(&self, committed: Option<u32>, what: &str) {
        let st = read_json(&self.s.d.state_dir().join("state.json"));
        let now = &st["current"]["name"];
        if self.cur > 1 && committed.is_none_or(|v| *now != name(v)) {
            assert_eq!(*now, name(self.cur), "{what}");
        }
        let running = &self.s.commits[self.rootfs];
        assert!(deployments(&self.s.d).contains(running), "{what}");
    }

    fn current_is(&self, v: u32, what: &str) {
        let r = self.s.d.command("current", &[]);
        assert!(
            r.stdout.starts_with(&format!("current: {}", name(v))),
            "{what}: {}",
            r.stdout
        );
    }

    /// `cmd` killed at each point of `chain` in turn (each re-run dies at the next), then
    /// once more to the end: `want` without a chain, else the last point's re-run code.
    fn chained(
        &self,
        cmd: &str,
        bundle: Option<&Path>,
        chain: &[(&str, i32)],
        want: i32,
        committed: Option<u32>,
        what: &str,
    ) {
        for (point, _) in chain {
            killed(&self.cmd(cmd, bundle, &[(CRASH, point)]), point);
            self.nothing_lost(committed, what);
        }
        let want = chain.last().map_or(want, |(_, again)| *again);
        code(&self.cmd(cmd, bundle, &[]), want, what);
    }

    /// A new rootfs and a new app-01; `install` and `run` killed along `kills`.
    fn update(&mut self, kills: &[(&str, Cmd, i32)]) -> (String, Vec<String>) {
        let v = self.next;
        self.next += 1;
        let ver = leak(v.to_string());
        let f = self.s.f.name.clone();
        let b = self
            .s
            .bundle(vec![T::new(ver, vec![app(&f, "app-01", &format!("v{v}"))])]);
        let (_, failed_before) = self.snapshot(v);
        let what = format!("{kills:?}");
        let of = |cmd: Cmd| -> Vec<(&str, i32)> {
            kills
                .iter()
                .filter(|k| k.1 == cmd)
                .map(|k| (k.0, k.2))
                .collect()
        };
        self.chained(
            "install",
            Some(b.path()),
            &of(Cmd::Install),
            100,
            None,
            &what,
        );
        self.s.reboot_into(ver, &format!("boot-{v}"));
        self.chained("run", None, &of(Cmd::Run), 0, Some(v), &what);
        self.current_is(v, &what);
        let (snap, failed) = self.snapshot(v);
        self.cur = v;
        self.rootfs = ver;
        (snap, added(&failed_before, failed, &what))
    }

    /// A new rootfs whose new app-02 fails (app-01 as it runs now): `run` on it rolls back
    /// (100), `run` after the reboot finishes (0); each killed along `kills` (which run).
    fn apps_rollback(&mut self, kills: &[(&str, u8, i32)]) -> (String, Vec<String>) {
        let v = self.next;
        self.next += 1;
        let ver = leak(v.to_string());
        let f = self.s.f.name.clone();
        let mut bad = AppSpec::busybox_running(&f, "app-02", "bad", "exit 3", true);
        bad.images[0].config.healthcheck = None;
        let good = app(&f, "app-01", &format!("v{}", self.cur));
        let b = self.s.bundle(vec![T::new(ver, vec![good, bad])]);
        let (_, failed_before) = self.snapshot(v);
        let what = format!("{kills:?}");
        code(&self.cmd("install", Some(b.path()), &[]), 100, &what);
        self.s.reboot_into(ver, &format!("boot-{v}"));
        for (which, want) in [(1, 100), (2, 0)] {
            let chain: Vec<(&str, i32)> = kills
                .iter()
                .filter(|k| k.1 == which)
                .map(|k| (k.0, k.2))
                .collect();
            self.chained("run", None, &chain, want, None, &what);
            if which == 1 {
                // Whatever the kills: the good rootfs is the default for the reboot.
                assert_eq!(
                    deployments(&self.s.d)[0],
                    self.s.commits[self.rootfs],
                    "{what}"
                );
                self.s.reboot_into(self.rootfs, &format!("back-{v}"));
            }
        }
        self.current_is(self.cur, &what);
        let (snap, failed) = self.snapshot(v);
        (snap, added(&failed_before, failed, &what))
    }

    /// A new rootfs (app-01 as it runs now) that the bootloader does not keep.
    fn bootloader_rollback(&mut self, kill: Option<(&str, i32)>) -> (String, Vec<String>) {
        let v = self.next;
        self.next += 1;
        let ver = leak(v.to_string());
        let f = self.s.f.name.clone();
        let good = app(&f, "app-01", &format!("v{}", self.cur));
        let b = self.s.bundle(vec![T::new(ver, vec![good])]);
        let (_, failed_before) = self.snapshot(v);
        let what = kill.map_or("reference".to_string(), |k| format!("{k:?}"));
        code(&self.cmd("install", Some(b.path()), &[]), 100, &what);
        self.s.reboot_into(self.rootfs, &format!("boot-{v}"));
        match kill {
            Some((point, again)) => {
                killed(&self.cmd("run", None, &[(CRASH, point)]), point);
                self.nothing_lost(None, &what);
                code(&self.cmd("run", None, &[]), again, &what);
            }
            None => code(&self.cmd("run", None, &[]), 99, &what),
        }
        self.current_is(self.cur, &what);
        let (snap, failed) = self.snapshot(v);
        (snap, added(&failed_before, failed, &what))
    }

    /// An apps-only stick (new app-01, same rootfs) through `agent handle`; killed, it is
    /// finished by `agent finalize`.
    fn agent_apps_only(&mut self, kill: Option<(&str, i32)>) -> (String, Vec<String>) {
        let v = self.next;
        self.next += 1;
        let ver = leak(v.to_string());
        let f = self.s.f.name.clone();
        let b = self.s.bundle(vec![
            T::new(ver, vec![app(&f, "app-01", &format!("v{v}"))]).on(self.rootfs)
        ]);
        let stick = Stick::with(b.path(), "UPDATE");
        let (_, failed_before) = self.snapshot(v);
        let what = kill.map_or("reference".to_string(), |k| format!("{k:?}"));
        let d = &self.s.d;
        match kill {
            Some((point, again)) => {
                killed(
                    &agent(d, &["handle", stick.devnode()], &[(CRASH, point)]),
                    point,
                );
                self.nothing_lost(None, &what);
                code(&agent(d, &["handle", stick.devnode()], &[]), again, &what);
                no_mounts(d, &what);
                code(&agent(d, &["finalize"], &[]), 0, &what);
            }
            None => code(&agent(d, &["handle", stick.devnode()], &[]), 0, &what),
        }
        no_mounts(d, &what);
        self.current_is(v, &what);
        let (snap, failed) = self.snapshot(v);
        self.cur = v;
        (snap, added(&failed_before, failed, &what))
    }
}

/// Compose device, an update: the install points killed one after the other in one
/// install (each re-run dies at the next), the run points likewise: a full round with a
/// private dockerd costs seconds, and a chain is the harder case (a crash after a crash).
#[test]
fn compose_update_killed_at_every_point_converges() {
    let mut p = AppsProgressive::new();
    p.update(&[]);
    let reference = p.update(&[]);
    assert_eq!(p.update(APPS_UPDATE), reference, "{APPS_UPDATE:?}");
    let reference = p.agent_apps_only(None);
    for (point, again) in AGENT_APPS_ONLY {
        assert_eq!(
            p.agent_apps_only(Some((point, *again))),
            reference,
            "{point}"
        );
    }
}

/// Compose device, rollbacks: apps failing on the new rootfs (points chained per run), and
/// the bootloader booting the previous rootfs.
#[test]
fn compose_rollback_killed_at_every_point_converges() {
    let mut p = AppsProgressive::new();
    p.update(&[]);
    let reference = p.apps_rollback(&[]);
    assert_eq!(reference.1.len(), 1, "{:?}", reference.1);
    assert_eq!(
        p.apps_rollback(APPS_ROLLBACK),
        reference,
        "{APPS_ROLLBACK:?}"
    );
    let reference = p.bootloader_rollback(None);
    for (point, again) in APPS_BOOTLOADER_ROLLBACK {
        assert_eq!(
            p.bootloader_rollback(Some((point, *again))),
            reference,
            "{point}"
        );
    }
}

/// Killed between the pending marker and the state that it announces: the marker claims
/// work that is not there (the boot unit then runs for nothing); `run` removes it.
#[test]
fn a_marker_ahead_of_its_state_is_removed_by_run() {
    let p = Progressive::new(2);
    let dir = p.d.state_dir();
    killed(
        &p.install(2, &[(CRASH, "state-marker-written")]),
        "state-marker-written",
    );
    assert!(dir.join("pending").exists());
    assert!(read_json(&dir.join("state.json"))["pending"].is_null());
    code(&p.run(&[]), 40, "run with a stale marker");
    assert!(!dir.join("pending").exists());
    code(&p.install(2, &[]), 100, "install again");
    assert!(dir.join("pending").exists());
}
