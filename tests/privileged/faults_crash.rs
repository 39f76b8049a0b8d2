//! Crash points: the process killed (SIGKILL, `USB_UPDATE_CRASH_AT`) at every named point
//! of `install`, `run` and `agent handle|finalize` on an OSTree-only device, then the same
//! command again and the rest of the flow (install -> simulated reboot -> run). Each
//! point's final state must be the one an uninterrupted update gives (deployments, state,
//! pending marker, bootloader environment), and nothing from before may be lost. Also: the
//! list of points against the call sites, and the reboot loop (`[update] boot_attempts`).
//! Compose devices: tests/privileged/faults_apps.rs.
//!
//! Scenes are progressive: one device updates version after version, a reference update
//! without a kill first; states are compared after replacing commits, names and digests by
//! their role (NEW: the version being installed, CUR: the one running before, OLD: older).

use std::collections::BTreeMap;

use crate::common::crashes::*;
use crate::common::stick::Stick;
use crate::common::{Device, DeviceSpec, Run, HWID};
use test_kit::gen::{self, write_bundle, write_content, BundleSpec, Factory};
use usb_update::failpoint::POINTS;

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
                aklite_db: true,
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
        let tuf = (self.bundles.iter())
            .map(|(v, b)| (*v, file_digests(&b.path().join("tuf"))))
            .collect();
        let mut pairs = tuf_roles(&tuf, new, self.cur);
        for (v, c) in self.commits.iter().rev() {
            let r = role(*v, new, self.cur);
            pairs.push((c.clone(), r.into()));
            pairs.push((format!("\"{}\"", name(*v)), format!("\"{r}\"")));
            // Quoted inside a JSON string (aktualizr-lite's rows, current-target).
            pairs.push((format!("\\\"{}\\\"", name(*v)), format!("\\\"{r}\\\"")));
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
                killed(&self.d, &self.install(v, &[(CRASH, point)]), point);
                self.nothing_lost(None, &what);
                code(&self.install(v, &[]), again, &what);
            }
            _ => code(&self.install(v, &[]), 100, &what),
        }
        self.d.reboot_into(&self.commits[&v], &format!("boot-{v}"));
        match kill {
            Some((point, Cmd::Run, again)) => {
                killed(&self.d, &self.run(&[(CRASH, point)]), point);
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
                killed(&self.d, &self.run(&[(CRASH, point)]), point);
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
        killed(
            &p.d,
            &p.run(&[(CRASH, "run-boot-counted")]),
            "run-boot-counted",
        );
        let st = read_json(&dir.join("state.json"));
        assert_eq!(st["pending"]["boot_attempts"], boot, "boot {boot}");
        // run again in the same boot (a crash of run, not of the boot) does not count.
        if boot == 1 {
            killed(
                &p.d,
                &p.run(&[(CRASH, "run-boot-ok-set")]),
                "run-boot-ok-set",
            );
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

#[test]
fn agent_killed_at_every_point_converges() {
    let n = 2 + AGENT.len();
    let mut p = Progressive::new(n as u32 + 1);
    agent_policy(&p.d);
    // An aktualizr-lite that runs (a file says so) and a systemctl that drives it.
    let root = p.d.tmp.path().to_path_buf();
    let (systemctl, aklite) = crate::common::agent_rig::aklite_double(&root);
    std::fs::write(
        p.d.policy.join("30-aklite.toml"),
        format!(
            "[agent]\nsystemctl = \"{}\"\naklite_unit = \"aktualizr-lite.service\"\n",
            systemctl.display()
        ),
    )
    .unwrap();
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
                killed(&p.d, &handle(&[(CRASH, point)]), point);
                p.nothing_lost(None, &what);
                code(&handle(&[]), again, &what);
            }
            _ => code(&handle(&[]), 100, &what),
        }
        no_mounts(&p.d, &what);
        assert!(
            !aklite.exists(),
            "{what}: aktualizr-lite started again before the reboot"
        );
        p.d.reboot_into(&p.commits[&v], &format!("boot-{v}"));
        match kill {
            Some((point @ "agent-finalize-ran", again)) => {
                killed(&p.d, &agent(&p.d, &["finalize"], &[(CRASH, point)]), point);
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

/// Killed between the pending marker and the state that it announces: the marker claims
/// work that is not there (the boot unit then runs for nothing); `run` removes it.
#[test]
fn a_marker_ahead_of_its_state_is_removed_by_run() {
    let p = Progressive::new(2);
    let dir = p.d.state_dir();
    killed(
        &p.d,
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
