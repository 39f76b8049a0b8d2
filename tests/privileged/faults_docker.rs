//! The Docker engine going away: stopped while `install` loads the images, before `run`'s
//! compose `up`, and stopped while the compose CLI's `up` is creating containers. Expected:
//! 52, nothing lost, the work still pending for `run`, and the retry succeeds once the
//! engine is back. And what is not an app failure: the engine restarted under `up`, or
//! the compose CLI killed mid-way, while the engine answers: `up` once more, no rollback.

use std::time::{Duration, Instant};

use crate::common::apps::{app, AppScene, T};
use crate::common::faults::{self, code, usb_update, Out, Snapshot};
use crate::common::gate::{Gate, Hold};
use crate::common::scene::{deployments, state};

fn out(r: crate::common::Run) -> Out {
    Out {
        code: r.code,
        stdout: r.stdout,
        stderr: r.stderr,
    }
}

#[track_caller]
fn pending_untouched(s: &AppScene, target: &str) {
    let st = state(&s.d);
    assert_eq!(st["pending"]["target"]["name"], target);
    assert!(st["failed"].as_array().is_none_or(|f| f.is_empty()), "{st}");
}

#[test]
fn engine_stopped_during_the_image_load_is_52_and_the_retry_installs() {
    let mut s = AppScene::new(None);
    let f = s.f.name.clone();
    let b = s.bundle(vec![T::new("2", vec![app(&f, "app-01", "v2")])]);
    let images = s.image_ids();

    let cmd = usb_update(
        &s.d,
        &["install"],
        &["--src-dir", b.path().to_str().unwrap()],
    );
    let paused = faults::spawn_paused(cmd, "load-image", &s.d.tmp.path().join("paused"));
    s.docker.stop();
    let o = paused.go();
    code(&o, 52);
    assert!(
        o.error().starts_with(&format!(
            "lost the Docker engine at {} while loading image ",
            s.docker.socket().display()
        )),
        "{}",
        o.error()
    );
    // The blobs are in the store (verified; the retry skips them); nothing else changed.
    assert_eq!(deployments(&s.d), vec![s.commits["1"].clone()]);
    assert!(!s.d.state_dir().join("pending").exists());
    s.docker.restart();
    assert_eq!(s.image_ids(), images);

    let r = s.install(b.path());
    code(&out(r), 100);
    assert_eq!(deployments(&s.d)[0], s.commits["2"]);
}

/// An apps-only update installed (101); `run` held before compose `up`, the engine stopped.
#[test]
fn engine_stopped_before_compose_up_is_52_and_stays_pending() {
    let mut s = AppScene::new(None);
    let f = s.f.name.clone();
    let b = s.bundle(vec![T::new("2", vec![app(&f, "app-01", "v2")]).on("1")]);
    code(&out(s.install(b.path())), 101);
    let before = Snapshot::take(&s.d, None);

    let cmd = usb_update(&s.d, &["run"], &[]);
    let paused = faults::spawn_paused(cmd, "compose-up", &s.d.tmp.path().join("paused"));
    s.docker.stop();
    let o = paused.go();
    code(&o, 52);
    assert!(o.error().contains("is not reachable"), "{}", o.error());
    pending_untouched(&s, "intel-corei7-64-lmp-2");
    assert_eq!(deployments(&s.d), vec![s.commits["1"].clone()]);
    // run's first step put the project in place; the retry puts it there again.
    before.assert_same_but(None, &[&s.compose_root().join("app-01")]);

    s.docker.restart();
    code(&out(s.run()), 0);
    assert_eq!(s.running()["app-01"][0].1, s.image_id("2", "app-01"));
}

/// The engine stopped while the compose CLI's `up` runs, between creating the app's
/// container and starting it: a gate in front of the engine holds the start request, so
/// the engine is stopped exactly there (SIGTERM: after a SIGKILL its containerd lingers and
/// this rig cannot start it again).
#[test]
fn engine_stopped_during_compose_up_is_52_and_stays_pending() {
    let mut s = AppScene::new(None);
    let f = s.f.name.clone();
    let b = s.bundle(vec![T::new("2", vec![app(&f, "app-01", "v2")]).on("1")]);
    code(&out(s.install(b.path())), 101);
    let before = Snapshot::take(&s.d, None);

    let gate = Gate::new(
        &s.docker.socket(),
        Hold {
            method: "POST",
            path: |p| p.starts_with("/containers/") && p.ends_with("/start"),
            pass: 0,
        },
    );
    let mut cmd = usb_update(&s.d, &["run"], &[]);
    cmd.env("DOCKER_HOST", gate.host());
    let run = faults::in_background(cmd);
    gate.wait_held(|| {
        run.is_finished()
            .then(|| "run ended before compose started a container".to_string())
    });
    // Created, never started.
    let created = s.engine().project_containers("app-01").unwrap();
    assert_eq!(
        created
            .iter()
            .map(|c| c.status.as_str())
            .collect::<Vec<_>>(),
        ["created"],
        "{created:#?}"
    );
    s.docker.stop();
    let o = run.join().unwrap();
    code(&o, 52);
    pending_untouched(&s, "intel-corei7-64-lmp-2");
    // run's first step put the project in place; the retry puts it there again.
    before.assert_same_but(None, &[&s.compose_root().join("app-01")]);

    s.docker.restart();
    code(&out(s.run()), 0);
    assert_eq!(s.running()["app-01"][0].1, s.image_id("2", "app-01"));
}

/// The engine restarted under the compose CLI's `up` (as systemd restarts a dockerd that
/// died): away while `up` runs, back before `run` decides. A good target must not be
/// called failed, rolled back and denylisted for it: `up` is tried once more and the
/// update completes.
#[test]
fn engine_restarted_during_compose_up_is_not_an_app_failure() {
    let mut s = AppScene::new(None);
    let f = s.f.name.clone();
    let b = s.bundle(vec![T::new("2", vec![app(&f, "app-01", "v2")]).on("1")]);
    code(&out(s.install(b.path())), 101);
    let hold = compose_hook(
        &s,
        "touch \"$H/before\"; while [ -e \"$H/before\" ]; do sleep 0.02; done\n\
         \"$REAL\" \"$@\"; rc=$?\n\
         touch \"$H/after\"; while [ -e \"$H/after\" ]; do sleep 0.02; done\n\
         exit $rc",
    );

    let run = faults::in_background(usb_update(&s.d, &["run"], &[]));
    let wait_for = |p: &std::path::Path| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !p.exists() {
            assert!(Instant::now() < deadline, "never reached {}", p.display());
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    wait_for(&hold.join("before"));
    s.docker.stop();
    std::fs::remove_file(hold.join("before")).unwrap();
    wait_for(&hold.join("after"));
    s.docker.restart();
    std::fs::remove_file(hold.join("after")).unwrap();
    let o = run.join().unwrap();
    code(&o, 0);
    assert!(o.stderr.contains("trying once more"), "{}", o.stderr);
    let st = state(&s.d);
    assert!(st["pending"].is_null(), "{st}");
    assert_eq!(st["current"]["name"], "intel-corei7-64-lmp-2");
    assert!(st["failed"].as_array().is_none_or(|f| f.is_empty()), "{st}");
    assert_eq!(s.running()["app-01"][0].1, s.image_id("2", "app-01"));
}

/// The compose CLI killed (SIGKILL, as the OOM killer does) in the middle of `up`, once the
/// app's container exists: the engine answers, `up` is run once more, the update completes.
#[test]
fn compose_up_killed_mid_way_is_run_once_more() {
    let mut s = AppScene::new(None);
    let f = s.f.name.clone();
    let b = s.bundle(vec![T::new("2", vec![app(&f, "app-01", "v2")]).on("1")]);
    code(&out(s.install(b.path())), 101);
    let hold = compose_hook(
        &s,
        "\"$REAL\" \"$@\" & pid=$!\n\
         until docker -H \"$DOCKER_HOST\" ps -aq \\\n\
         --filter label=com.docker.compose.project=app-01 | grep -q .; do sleep 0.02; done\n\
         kill -9 $pid; wait $pid; exit 137",
    );
    let o = out(s.run());
    code(&o, 0);
    assert!(
        !hold.join("armed").exists(),
        "the first up was not the held one"
    );
    assert!(o.stderr.contains("trying once more"), "{}", o.stderr);
    let st = state(&s.d);
    assert!(st["pending"].is_null(), "{st}");
    assert!(st["failed"].as_array().is_none_or(|f| f.is_empty()), "{st}");
    assert_eq!(s.running()["app-01"][0].1, s.image_id("2", "app-01"));
}

/// The real compose CLI as `[pacman] docker_compose_bin`, with a hook: the first `up`
/// runs `armed_up` (a shell snippet; `$REAL` is the CLI, `$H` the returned directory)
/// instead of the plain CLI. A test hook around the real thing, not a stand-in.
fn compose_hook(s: &AppScene, armed_up: &str) -> std::path::PathBuf {
    let hold = s.d.tmp.path().join("hold");
    std::fs::create_dir_all(&hold).unwrap();
    let real = std::process::Command::new("sh")
        .args(["-c", "command -v docker-compose"])
        .output()
        .unwrap()
        .stdout;
    let wrapper = s.d.tmp.path().join("compose-with-hook");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nH={h}\nREAL={real}\ncase \" $* \" in *\" up \"*)\n\
             if rm \"$H/armed\" 2>/dev/null; then\n{armed_up}\nfi;;\nesac\nexec \"$REAL\" \"$@\"\n",
            h = hold.display(),
            real = String::from_utf8_lossy(&real).trim()
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let conf = s.d.conf.join("sota.toml");
    let text = std::fs::read_to_string(&conf).unwrap().replace(
        "[pacman]\n",
        &format!("[pacman]\ndocker_compose_bin = \"{}\"\n", wrapper.display()),
    );
    std::fs::write(&conf, text).unwrap();
    std::fs::write(hold.join("armed"), "").unwrap();
    hold
}
