//! What the operator sees, end to end through the public API: LEDs on a stand-in for
//! `/sys/class/leds`, a regular file standing in for a console, `status.json`, the report
//! written onto a stick, and `status()` on a sandboxed device.

use std::fs;
use std::path::PathBuf;

use tempfile::TempDir;
use test_kit::gen::Factory;
use usb_update::policy::Policy;
use usb_update::state::{InstalledTarget, Pending, Phase, State};
use usb_update::status::{self, Feedback, Pattern, Report, StatusFile};

/// A fake LED class with LEDs `a` and `b` (as sysfs has them once the trigger is `timer`),
/// a console file, and a policy that names them plus an LED and a console that do not exist.
struct Rig {
    tmp: TempDir,
    policy: Policy,
}

const ATTRS: [&str; 4] = ["trigger", "brightness", "delay_on", "delay_off"];

impl Rig {
    fn new() -> Rig {
        let tmp = tempfile::tempdir().unwrap();
        let leds = tmp.path().join("leds");
        for name in ["a", "b"] {
            let dir = leds.join(name);
            fs::create_dir_all(&dir).unwrap();
            for attr in ATTRS {
                fs::write(dir.join(attr), "").unwrap();
            }
            fs::write(dir.join("max_brightness"), "1\n").unwrap();
        }
        fs::write(tmp.path().join("console"), "").unwrap();
        let file = tmp.path().join("policy.toml");
        let toml = format!(
            "[agent]\nrun_dir = \"{run}\"\n\n\
             [feedback]\nleds_path = \"{leds}\"\nleds = [\"a\", \"gone\", \"b\"]\n\
             consoles = [\"{console}\", \"{missing}\"]\n",
            run = tmp.path().join("run").display(),
            leds = leds.display(),
            console = tmp.path().join("console").display(),
            missing = tmp.path().join("dev/ttyS9").display(),
        );
        fs::write(&file, toml).unwrap();
        let policy = Policy::load(&[file]).unwrap();
        Rig { tmp, policy }
    }

    fn led(&self, name: &str) -> [String; 4] {
        let dir = self.tmp.path().join("leds").join(name);
        ATTRS.map(|a| fs::read_to_string(dir.join(a)).unwrap())
    }

    fn console(&self) -> Vec<String> {
        let text = fs::read_to_string(self.tmp.path().join("console")).unwrap();
        text.lines().map(str::to_owned).collect()
    }

    fn status(&self) -> serde_json::Value {
        let path = StatusFile::path(&self.policy.agent.run_dir);
        serde_json::from_slice(&fs::read(path).unwrap()).unwrap()
    }
}

#[test]
fn a_sequence_of_patterns_leaves_the_expected_led_attributes() {
    let r = Rig::new();
    let mut fb = Feedback::new(&r.policy);
    // Blinking patterns leave brightness alone (0 would stop the blink): "" is untouched.
    let steps: [(Pattern, [&str; 4]); 7] = [
        (Pattern::Working, ["timer", "", "100", "100"]),
        (Pattern::SafeToRemove, ["none", "1", "100", "100"]),
        (Pattern::Success, ["timer", "1", "1000", "1000"]),
        (Pattern::Error, ["timer", "1", "100", "900"]),
        (Pattern::Busy, ["timer", "1", "250", "250"]),
        (Pattern::Idle, ["none", "0", "250", "250"]),
        (Pattern::SafeToRemove, ["none", "1", "250", "250"]),
    ];
    for (p, want) in steps {
        fb.pattern(p);
        for led in ["a", "b"] {
            assert_eq!(r.led(led), want, "LED {led} after {p}");
        }
        assert_eq!(r.status()["phase"], p.as_str());
    }
    assert!(
        !r.tmp.path().join("leds/gone").exists(),
        "a missing LED is not created"
    );
}

#[test]
fn one_console_line_per_step_and_status_json_follows() {
    let r = Rig::new();
    let mut fb = Feedback::new(&r.policy);
    fb.pattern(Pattern::Working);
    fb.step("stick STICK (/dev/sda1) inserted: do not remove it");
    fb.step("verifying and installing the update");
    fb.pattern(Pattern::SafeToRemove);
    fb.step("the stick can be removed");
    assert_eq!(
        r.console(),
        [
            "usb-update: stick STICK (/dev/sda1) inserted: do not remove it",
            "usb-update: verifying and installing the update",
            "usb-update: the stick can be removed",
        ]
    );
    let s = r.status();
    assert_eq!(s["phase"], "safe_to_remove");
    assert_eq!(s["message"], "the stick can be removed");
    assert_eq!(s["percent"], serde_json::Value::Null);
    let at = s["updated_at"].as_str().unwrap();
    humantime::parse_rfc3339(at).unwrap();
    let lines = fb.lines();
    assert_eq!(lines.len(), 3);
    let (stamp, text) = lines[2].split_once(' ').unwrap();
    humantime::parse_rfc3339(stamp).unwrap();
    assert_eq!(text, "the stick can be removed");
}

#[test]
fn progress_is_rate_limited() {
    let r = Rig::new();
    let mut fb = Feedback::new(&r.policy);
    fb.pattern(Pattern::Working);
    let started = std::time::Instant::now();
    let total = 100_000u64;
    for done in (0..=total).step_by(7).chain([total]) {
        fb.progress("copying apps", done, total);
    }
    // A line per 10 % moved, and besides those at most one per 5 s (a loaded machine may
    // take that long here; the timer itself is tested with a clock of its own in
    // src/status): from 0 % to 100 %, rising, each at least 10 % above the one before
    // except for the timer's and the last.
    let every_5s = started.elapsed().as_secs() / 5;
    let console = r.console();
    let percents: Vec<u64> = console
        .iter()
        .map(|l| {
            let p = l.strip_prefix("usb-update: copying apps: ").unwrap();
            p.strip_suffix('%').unwrap().parse().unwrap()
        })
        .collect();
    assert_eq!(
        (percents.first(), percents.last()),
        (Some(&0), Some(&100)),
        "{console:?}"
    );
    let close = percents.windows(2).filter(|w| w[1] < w[0] + 10).count() as u64;
    assert!(percents.windows(2).all(|w| w[1] > w[0]), "{console:?}");
    assert!(close <= every_5s + 1, "{console:?}");
    if every_5s == 0 {
        let want: Vec<u64> = (0..=10).map(|d| d * 10).collect();
        assert_eq!(percents, want);
    }
    assert_eq!(fb.lines().len(), console.len());
    let s = r.status();
    assert_eq!(
        (s["percent"].as_u64(), s["message"].as_str()),
        (Some(100), Some("copying apps: 100%"))
    );
    fb.step("loading images");
    assert_eq!(r.status()["percent"], serde_json::Value::Null);
}

#[test]
fn the_report_and_its_log_land_on_the_stick() {
    let r = Rig::new();
    let mut fb = Feedback::new(&r.policy);
    fb.step("installed t-2");
    fb.step("rebooting to finish the update");
    let stick = r.tmp.path().join("stick");
    fs::create_dir(&stick).unwrap();
    let mut report = Report {
        device: "gw/07 west".into(),
        stick: "1234-ABCD".into(),
        bundle: "bundle".into(),
        exit_code: 100,
        result: "installed t-2: rebooting".into(),
        before: Some("t-1".into()),
        after: Some("t-2".into()),
        started_at: "2025-01-01T00:00:00Z".into(),
        finished_at: "2025-01-01T00:01:00Z".into(),
        ..Report::default()
    };
    report.durations.insert("total".into(), 60.5);
    let json = status::write_report(&stick, &report, &fb.lines()).unwrap();
    assert_eq!(json, stick.join("usb-update-report-gw_07_west.json"));
    let v: serde_json::Value = serde_json::from_slice(&fs::read(&json).unwrap()).unwrap();
    assert_eq!(v["device"], "gw/07 west");
    assert_eq!(v["exit_code"], 100);
    assert_eq!(v["after"], "t-2");
    assert_eq!(v["error"], serde_json::Value::Null);
    assert_eq!(v["durations"]["total"], 60.5);
    let log = fs::read_to_string(stick.join("usb-update-report-gw_07_west.log")).unwrap();
    let texts: Vec<&str> = log.lines().map(|l| l.split_once(' ').unwrap().1).collect();
    assert_eq!(texts, ["installed t-2", "rebooting to finish the update"]);
    let mut names: Vec<_> = fs::read_dir(&stick)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "usb-update-report-gw_07_west.json",
            "usb-update-report-gw_07_west.log"
        ]
    );
}

fn target(name: &str, version: u64) -> InstalledTarget {
    InstalledTarget {
        name: name.into(),
        version: Some(version),
        sha256: "ab".repeat(32),
        apps: Default::default(),
        ..Default::default()
    }
}

#[test]
fn status_shows_the_live_phase_the_pending_installation_and_the_last_results() {
    let f = Factory::new().unwrap();
    let d = crate::common::Device::new(&f);
    let run_dir = d.tmp.path().join("run/usb-update");
    d.set_policy(&format!(
        "[agent]\nrun_dir = \"{}\"\n[feedback]\nconsoles = []\n",
        run_dir.display()
    ));
    let (conf, policy): (Vec<PathBuf>, Vec<PathBuf>) =
        (vec![d.conf.clone()], vec![d.policy.clone()]);

    let v = status::status(&conf, &policy).unwrap();
    assert_eq!(
        (v.phase, v.message.clone(), v.pending.is_some()),
        (Pattern::Idle, None, false)
    );
    assert_eq!(v.status_file, run_dir.join("status.json"));
    assert_eq!(
        status::human_lines(&v),
        [
            "status: idle (no update since boot)",
            "current: not recorded by an update",
            "pending: none"
        ]
    );

    let mut state = State::load(&d.state_dir()).unwrap();
    state.current = Some(target("t-1", 1));
    for i in 1..=7 {
        state.record(
            "install",
            &format!("t-{i}"),
            100,
            &format!("installed t-{i}"),
        );
    }
    state.pending = Some(Pending {
        target: target("t-2", 2),
        phase: Phase::Deployed,
        boot_id: "boot-1".into(),
        previous: Some(target("t-1", 1)),
        rollback_deployment: None,
        needs_reboot: true,
        installed_at: "2025-01-01T00:00:00Z".into(),
        failed_target: None,
        boot_attempts: 0,
        counted_boot: None,
    });
    state.save(&d.state_dir()).unwrap();
    let mut fb = Feedback::new(&Policy::load(&policy).unwrap());
    fb.pattern(Pattern::Working);
    fb.progress("copying apps", 42, 100);

    let v = status::status(&conf, &policy).unwrap();
    assert_eq!((v.phase, v.percent), (Pattern::Working, Some(42)));
    assert_eq!(v.message.as_deref(), Some("copying apps: 42%"));
    assert_eq!(
        v.pending.as_ref().map(|p| p.target.name.as_str()),
        Some("t-2")
    );
    let shown: Vec<&str> = v.history.iter().map(|h| h.target.as_str()).collect();
    assert_eq!(shown, ["t-3", "t-4", "t-5", "t-6", "t-7"]);
    let lines = status::human_lines(&v);
    assert!(
        lines[0].starts_with("status: working, 42%: copying apps: 42% (at "),
        "{lines:?}"
    );
    assert_eq!(lines[1], "current: t-1 (version 1)");
    assert_eq!(
        lines[2],
        "pending: t-2 (version 2) installed at 2025-01-01T00:00:00Z: reboot, then `usb-update run`"
    );
    assert_eq!(lines.len(), 3 + 5);
    assert!(
        lines[7].ends_with(" install t-7 returned 100: installed t-7"),
        "{lines:?}"
    );
    let json = serde_json::to_value(&v).unwrap();
    assert_eq!(json["phase"], "working");
    assert_eq!(json["pending"]["target"]["name"], "t-2");

    // The command prints the same.
    let out = d.command("status", &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout.lines().collect::<Vec<_>>(), lines);
    let out = d.command("status", &["--json"]);
    let cli: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(
        (
            cli["percent"].as_u64(),
            cli["history"].as_array().map(Vec::len)
        ),
        (Some(42), Some(5))
    );

    // A status file that is not one is an error that names it.
    fs::write(run_dir.join("status.json"), "{").unwrap();
    let e = status::status(&conf, &policy).unwrap_err().one_line();
    assert!(e.contains("status.json: not a status file"), "{e}");
}
