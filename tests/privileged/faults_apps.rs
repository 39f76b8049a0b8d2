//! Crash points on a Compose apps device (a private dockerd): the process killed
//! (SIGKILL, `USB_UPDATE_CRASH_AT`) at every point of `install`, `run` and `agent handle`
//! that concerns apps, then the same command again and the rest of the flow. The final
//! state must be the one an uninterrupted update gives: deployments, state, pending marker,
//! bootloader environment, running containers and their images, images in the engine,
//! store versions and blobs, projects, the record of the previous apps and its copies.
//!
//! Each point is killed on its own (the re-run's exact code is asserted), and the points of
//! one command are also chained once: killed at the first, the re-run is killed at the
//! next, and so on (a crash after a crash), then once more to the end.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::common::apps::{app, AppScene, T};
use crate::common::crashes::*;
use crate::common::stick::Stick;
use crate::common::Run;
use test_kit::gen::AppSpec;

/// A Compose device updating version after version, one bundle per update.
struct AppsProgressive {
    s: AppScene,
    cur: u32,
    /// The version whose rootfs the device runs (apps-only updates keep it).
    rootfs: &'static str,
    next: u32,
    /// Version -> the digests of its bundle's TUF files.
    tuf: BTreeMap<u32, BTreeMap<String, String>>,
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
            tuf: BTreeMap::new(),
        }
    }

    /// The bundle of version `v`, its TUF files recorded for [`AppsProgressive::roles`].
    fn bundle(&mut self, v: u32, targets: Vec<T>) -> tempfile::TempDir {
        let b = self.s.bundle(targets);
        self.tuf.insert(v, file_digests(&b.path().join("tuf")));
        b
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
        let mut pairs = tuf_roles(&self.tuf, new, self.cur);
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
            // Quoted inside a JSON string (aktualizr-lite's rows, current-target).
            pairs.push((format!("\\\"{}\\\"", name(*v)), format!("\\\"{r}\\\"")));
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
            killed(&self.s.d, &self.cmd(cmd, bundle, &[(CRASH, point)]), point);
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
        let b = self.bundle(
            v,
            vec![T::new(ver, vec![app(&f, "app-01", &format!("v{v}"))])],
        );
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
        let b = self.bundle(v, vec![T::new(ver, vec![good, bad])]);
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
        let b = self.bundle(v, vec![T::new(ver, vec![good])]);
        let (_, failed_before) = self.snapshot(v);
        let what = kill.map_or("reference".to_string(), |k| format!("{k:?}"));
        code(&self.cmd("install", Some(b.path()), &[]), 100, &what);
        self.s.reboot_into(self.rootfs, &format!("boot-{v}"));
        match kill {
            Some((point, again)) => {
                killed(&self.s.d, &self.cmd("run", None, &[(CRASH, point)]), point);
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
        let b = self.bundle(
            v,
            vec![T::new(ver, vec![app(&f, "app-01", &format!("v{v}"))]).on(self.rootfs)],
        );
        let stick = Stick::with(b.path(), "UPDATE");
        let (_, failed_before) = self.snapshot(v);
        let what = kill.map_or("reference".to_string(), |k| format!("{k:?}"));
        let d = &self.s.d;
        match kill {
            Some((point, again)) => {
                killed(
                    d,
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

/// Compose device, an update, killed at each point of `install` on its own (the re-run's
/// exact code), then at all of them in one install (each re-run dies at the next: a crash
/// after a crash).
#[test]
fn compose_update_killed_at_every_install_point_converges() {
    let mut p = AppsProgressive::new();
    p.update(&[]);
    let reference = p.update(&[]);
    let install: Vec<_> = APPS_UPDATE.iter().filter(|k| k.1 == Cmd::Install).collect();
    for kill in &install {
        assert_eq!(p.update(&[**kill]), reference, "{kill:?}");
    }
    assert_eq!(p.update(APPS_UPDATE), reference, "{APPS_UPDATE:?}");
}

/// Compose device, an update killed at each point of `run` on its own; then an apps-only
/// stick through the agent, killed at each of its points.
#[test]
fn compose_update_killed_at_every_run_and_agent_point_converges() {
    let mut p = AppsProgressive::new();
    p.update(&[]);
    let reference = p.update(&[]);
    let run: Vec<_> = APPS_UPDATE.iter().filter(|k| k.1 == Cmd::Run).collect();
    for kill in &run {
        assert_eq!(p.update(&[**kill]), reference, "{kill:?}");
    }
    let reference = p.agent_apps_only(None);
    for (point, again) in AGENT_APPS_ONLY {
        assert_eq!(
            p.agent_apps_only(Some((point, *again))),
            reference,
            "{point}"
        );
    }
}

/// Compose device, apps failing on the new rootfs: `run` on it killed at each of its
/// points on its own, then at all points of both runs chained.
#[test]
fn compose_rollback_killed_at_every_point_of_the_first_run_converges() {
    let mut p = AppsProgressive::new();
    p.update(&[]);
    let reference = p.apps_rollback(&[]);
    assert_eq!(reference.1.len(), 1, "{:?}", reference.1);
    for kill in APPS_ROLLBACK.iter().filter(|k| k.1 == 1) {
        assert_eq!(p.apps_rollback(&[*kill]), reference, "{kill:?}");
    }
    assert_eq!(
        p.apps_rollback(APPS_ROLLBACK),
        reference,
        "{APPS_ROLLBACK:?}"
    );
}

/// Compose device, apps failing on the new rootfs: `run` after the rollback reboot killed
/// at each of its points on its own; then the bootloader booting the previous rootfs.
#[test]
fn compose_rollback_killed_at_every_point_after_the_reboot_converges() {
    let mut p = AppsProgressive::new();
    p.update(&[]);
    let reference = p.apps_rollback(&[]);
    for kill in APPS_ROLLBACK.iter().filter(|k| k.1 == 2) {
        assert_eq!(p.apps_rollback(&[*kill]), reference, "{kill:?}");
    }
    let reference = p.bootloader_rollback(None);
    for (point, again) in APPS_BOOTLOADER_ROLLBACK {
        assert_eq!(
            p.bootloader_rollback(Some((point, *again))),
            reference,
            "{point}"
        );
    }
}
