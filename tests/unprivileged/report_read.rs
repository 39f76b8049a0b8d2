//! `usb-update report DIR` on a stick's root holding reports written by the agent's own
//! writer: two devices of one hostname stay apart, a report edited, truncated, renamed or
//! replaced by a symlink is a row that says so (exit 15), a missing or empty DIR is 14, and
//! the stick is never changed.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use serde_json::Value;
use usb_update::status::{write_report, Report};

use crate::common::{fingerprint, Run};

fn report(device: &str, serial: Option<&str>, before: &str, after: &str, code: u8) -> Report {
    let mut durations = BTreeMap::new();
    durations.insert("total".to_string(), 83.4);
    Report {
        device: device.into(),
        serial: serial.map(str::to_owned),
        hardware_id: Some("intel-corei7-64".into()),
        image_built: Some("2023-11-14T22:13:20Z".into()),
        stick: "1234-ABCD".into(),
        bundle: "bundle".into(),
        exit_code: code,
        result: if code == 100 {
            format!("installed {after}: rebooting")
        } else {
            "failed: the device still runs what it ran before".into()
        },
        error: (code != 100).then(|| "timestamp.json: timestamp metadata expired".into()),
        before: Some(before.into()),
        after: Some(after.into()),
        started_at: "2026-12-01T10:00:00Z".into(),
        finished_at: "2026-12-01T10:01:23Z".into(),
        durations,
        ..Report::default()
    }
}

/// A stick with the reports of two devices both called `gateway`.
fn stick() -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    write_report(
        t.path(),
        &report("gateway", Some("SN-1"), "lmp-1", "lmp-2", 100),
        &[],
    )
    .unwrap();
    let failed = report("gateway", Some("SN-2"), "lmp-1", "lmp-1", 12);
    write_report(t.path(), &failed, &["a line".into()]).unwrap();
    std::fs::write(t.path().join("unrelated.json"), "{").unwrap();
    t
}

/// `usb-update report [args] DIR`; the directory unchanged.
#[track_caller]
fn run(dir: &Path, args: &[&str]) -> Run {
    let before = fingerprint(dir);
    let r = report_of(dir, args);
    assert_eq!(fingerprint(dir), before, "the stick changed");
    r
}

/// `usb-update report [args] PATH`.
fn report_of(path: &Path, args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_usb-update"))
        .arg("report")
        .args(args)
        .arg(path)
        .output()
        .unwrap();
    Run::from(out)
}

fn rows(dir: &Path) -> Vec<Value> {
    let r = run(dir, &["--json"]);
    serde_json::from_str(&r.stdout).unwrap()
}

fn row<'a>(r: &'a Run, file: &str) -> &'a str {
    r.stdout
        .lines()
        .find(|l| l.starts_with(file) || l.contains(file))
        .unwrap_or_else(|| panic!("no row {file}:\n{}", r.stdout))
}

#[test]
fn two_devices_of_one_hostname_stay_apart() {
    let t = stick();
    let r = run(t.path(), &[]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert!(
        lines[0].starts_with("DEVICE   SERIAL / HARDWARE ID"),
        "{}",
        r.stdout
    );
    assert_eq!(
        lines[1].split_whitespace().collect::<Vec<_>>().join(" "),
        "gateway SN-1 / intel-corei7-64 lmp-1 -> lmp-2 100 installed lmp-2: rebooting \
         2026-12-01T10:00:00Z 1 min 23 s"
    );
    assert_eq!(
        lines[2].split_whitespace().collect::<Vec<_>>().join(" "),
        "gateway SN-2 / intel-corei7-64 lmp-1 -> lmp-1 12 failed: the device still runs \
         what it ran before 2026-12-01T10:00:00Z 1 min 23 s"
    );
    assert_eq!(
        lines[3],
        "gateway (SN-2): error: timestamp.json: timestamp metadata expired"
    );
    assert!(
        lines[4].starts_with("2 report(s); this computer's time "),
        "{}",
        r.stdout
    );
    let rows = rows(t.path());
    assert_eq!(rows.len(), 2);
    for (row, serial) in rows.iter().zip(["SN-1", "SN-2"]) {
        assert_eq!(row["verdict"], "intact");
        assert_eq!(
            row["file"],
            format!("usb-update-report-gateway-{serial}.json")
        );
        assert_eq!(row["report"]["serial"], serial);
        assert_eq!(row["report"]["hardware_id"], "intel-corei7-64");
    }
}

/// `edit` the first device's report, then expect its row to say `why` and exit 15, the
/// other row still read.
#[track_caller]
fn damaged(edit: impl FnOnce(&Path), file: &str, why: &str) {
    let t = stick();
    edit(&t.path().join("usb-update-report-gateway-SN-1.json"));
    let r = run(t.path(), &[]);
    assert_eq!(r.code, 15, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(
        row(&r, file)
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" "),
        format!("{file} DAMAGED: {why}")
    );
    assert!(row(&r, "SN-2 / intel-corei7-64").starts_with("gateway "));
    let json = run(t.path(), &["--json"]);
    assert_eq!(json.code, 15);
    let rows: Vec<Value> = serde_json::from_str(&json.stdout).unwrap();
    let bad = rows.iter().find(|r| r["file"] == file).unwrap();
    assert_eq!(bad["verdict"], "damaged");
    assert_eq!(bad["problem"], why);
    assert_eq!(
        bad["report"],
        Value::Null,
        "no value of a damaged report is shown"
    );
}

#[test]
fn an_edited_report_is_shown_as_damaged() {
    damaged(
        |p| {
            let text = std::fs::read_to_string(p).unwrap();
            std::fs::write(p, text.replace("\"exit_code\": 100", "\"exit_code\": 0")).unwrap();
        },
        "usb-update-report-gateway-SN-1.json",
        "edited or damaged: its digest does not match its content",
    );
}

#[test]
fn a_truncated_report_is_shown_as_truncated() {
    damaged(
        |p| {
            let bytes = std::fs::read(p).unwrap();
            std::fs::write(p, &bytes[..200]).unwrap();
        },
        "usb-update-report-gateway-SN-1.json",
        "truncated: ends after 200 bytes",
    );
}

#[test]
fn a_renamed_report_is_not_believed() {
    let moved = "usb-update-report-gateway-SN-9.json";
    damaged(
        |p| std::fs::rename(p, p.with_file_name(moved)).unwrap(),
        moved,
        "renamed: the device it names writes usb-update-report-gateway-SN-1.json",
    );
}

#[test]
fn a_symlinked_report_is_not_followed() {
    damaged(
        |p| {
            std::fs::remove_file(p).unwrap();
            std::os::unix::fs::symlink("/etc/passwd", p).unwrap();
        },
        "usb-update-report-gateway-SN-1.json",
        "usb-update-report-gateway-SN-1.json is a symlink",
    );
}

#[test]
fn a_report_of_an_older_agent_is_read_unverified() {
    let t = tempfile::tempdir().unwrap();
    // Written before serials and digests: the fields of that time only.
    let old = r#"{"device": "imx8", "stick": "u", "bundle": "b", "exit_code": 0,
        "result": "nothing to do", "error": null, "before": "lmp-3", "after": "lmp-3",
        "started_at": "2026-01-01T00:00:00Z", "finished_at": "2026-01-01T00:00:05Z",
        "durations": {"total": 5.0}, "notes": []}"#;
    std::fs::write(t.path().join("usb-update-report-imx8.json"), old).unwrap();
    let r = run(t.path(), &[]);
    assert_eq!(r.code, 0, "{}", r.stdout);
    assert_eq!(
        row(&r, "imx8")
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" "),
        "imx8 (unverified) - / - lmp-3 -> lmp-3 0 nothing to do 2026-01-01T00:00:00Z 5.0 s"
    );
}

#[test]
fn control_characters_in_a_report_do_not_reach_the_terminal() {
    let t = tempfile::tempdir().unwrap();
    let mut r = report("gw", None, "a", "b", 100);
    r.result = "ok\u{1b}[2J\nFAKE ROW".into();
    write_report(t.path(), &r, &[]).unwrap();
    let out = run(t.path(), &[]);
    assert_eq!(out.code, 0);
    assert!(!out.stdout.contains('\u{1b}'), "{:?}", out.stdout);
    assert_eq!(out.stdout.lines().count(), 3, "{}", out.stdout);
}

#[test]
fn bad_directories_have_their_codes() {
    let t = tempfile::tempdir().unwrap();
    let r = run(t.path(), &[]);
    assert_eq!((r.code, r.stdout.as_str()), (14, ""));
    assert_eq!(
        r.stderr.trim_end(),
        format!(
            "error: {}: no report (usb-update-report-*.json) in this directory",
            t.path().display()
        )
    );
    let missing = t.path().join("nope");
    let r = report_of(&missing, &[]);
    assert_eq!((r.code, r.stdout.as_str()), (14, ""));
    assert_eq!(
        r.stderr.trim_end(),
        format!("error: {}: no such directory", missing.display())
    );
    let file = t.path().join("file");
    std::fs::write(&file, "").unwrap();
    let r = report_of(&file, &[]);
    assert_eq!((r.code, r.stdout.as_str()), (14, ""));
    assert_eq!(
        r.stderr.trim_end(),
        format!("error: {}: a regular file, not a directory", file.display())
    );
    // More entries than a stick's root has: not listed to the end, 50.
    let many = stick();
    for i in 0..4096 {
        std::fs::write(many.path().join(format!("f{i}")), "").unwrap();
    }
    let r = run(many.path(), &[]);
    assert_eq!((r.code, r.stdout.as_str()), (50, ""));
    assert_eq!(
        r.stderr.trim_end(),
        format!(
            "error: {}: more than 4096 entries: not a stick's root",
            many.path().display()
        )
    );
}

#[test]
fn a_device_clock_before_its_image_is_called_wrong() {
    let t = tempfile::tempdir().unwrap();
    let mut r = report("gw", Some("S"), "a", "b", 100);
    r.started_at = "2001-01-01T00:00:07Z".into();
    write_report(t.path(), &r, &[]).unwrap();
    let out = run(t.path(), &[]);
    assert_eq!(out.code, 0);
    assert_eq!(
        out.stdout.lines().nth(2).unwrap(),
        "gw (S): the device clock (2001-01-01T00:00:07Z) was before its image was built \
         (2023-11-14T22:13:20Z): its times are wrong"
    );
}
