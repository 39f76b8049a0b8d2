//! The report written back onto the stick: the operator walks away with the stick, and it
//! tells whoever reads it later what happened on which device, without access to the device.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

/// `usb-update-report-<device>.json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Report {
    /// The device id (hostname), as given; the file name uses a sanitised form.
    pub device: String,
    /// The stick's filesystem UUID.
    pub stick: String,
    /// The bundle directory, relative to the stick's root.
    pub bundle: String,
    pub exit_code: u8,
    /// One line for a person: "installed t-3: rebooting",
    /// "failed: the device still runs what it ran before".
    pub result: String,
    pub error: Option<String>,
    /// Target names before and after.
    pub before: Option<String>,
    pub after: Option<String>,
    /// RFC 3339, UTC.
    pub started_at: String,
    pub finished_at: String,
    /// Seconds per phase ("total", "install", ...).
    pub durations: BTreeMap<String, f64>,
    /// What the operator must know besides the result: aktualizr-lite's database not
    /// used or not written yet, the running version unknown.
    pub notes: Vec<String>,
}

/// Longest device part of a report file name: FAT allows 255 characters per name, and a
/// name should stay readable in a file manager.
const MAX_DEVICE_CHARS: usize = 64;

/// `usb-update-report-<device>`: the device id kept to `[A-Za-z0-9._-]` (anything else
/// becomes `_`), no leading dot (no hidden file, no `..`), at most 64 characters, so a
/// hostname can neither leave the stick's root nor make a name FAT refuses. Several devices
/// updated from one stick each leave their own report.
pub(crate) fn report_file_stem(device: &str) -> String {
    let safe: String = device
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let safe = safe.trim_start_matches('.');
    let safe: String = safe.chars().take(MAX_DEVICE_CHARS).collect();
    let safe = if safe.is_empty() { "device" } else { &safe };
    format!("usb-update-report-{safe}")
}

/// Writes `<stem>.json` (the report, pretty) and `<stem>.log` (the lines) into `dir`, the
/// root of the stick mounted writable, each replaced whole and fsynced with the directory:
/// the operator pulls the stick as soon as the LED says so. The log goes first, so a report
/// that exists always has its log. Returns the JSON's path.
pub fn write_report(dir: &Path, report: &Report, log: &[String]) -> anyhow::Result<PathBuf> {
    let stem = report_file_stem(&report.device);
    let json_path = dir.join(format!("{stem}.json"));
    let log_path = dir.join(format!("{stem}.log"));
    let mut text: String = log.iter().map(|l| format!("{l}\n")).collect();
    if text.is_empty() {
        text.push_str("(no lines)\n");
    }
    crate::durable::replace(&log_path, text.as_bytes())
        .with_context(|| format!("writing the report log {}", log_path.display()))?;
    let mut json = serde_json::to_vec_pretty(report).context("serialising the report")?;
    json.push(b'\n');
    crate::durable::replace(&json_path, &json)
        .with_context(|| format!("writing the report {}", json_path.display()))?;
    Ok(json_path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_ids_become_safe_file_names() {
        let cases = [
            ("imx8-0042", "imx8-0042"),
            ("../../etc/passwd", "_.._etc_passwd"),
            ("..", "device"),
            ("", "device"),
            ("a b:c\\d*?\u{e9}", "a_b_c_d___"),
            (".hidden", "hidden"),
        ];
        for (id, want) in cases {
            assert_eq!(
                report_file_stem(id),
                format!("usb-update-report-{want}"),
                "{id:?}"
            );
        }
        let long = report_file_stem(&"x".repeat(300));
        assert_eq!(long.len(), "usb-update-report-".len() + MAX_DEVICE_CHARS);
    }

    #[test]
    fn writes_both_files_and_reads_back() {
        let t = tempfile::tempdir().unwrap();
        let r = Report {
            device: "dev 1".into(),
            exit_code: 100,
            result: "installed".into(),
            ..Report::default()
        };
        let p = write_report(t.path(), &r, &["one".into(), "two".into()]).unwrap();
        assert_eq!(p, t.path().join("usb-update-report-dev_1.json"));
        let back: Report = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
        assert_eq!((back.device.as_str(), back.exit_code), ("dev 1", 100));
        let log = std::fs::read_to_string(t.path().join("usb-update-report-dev_1.log")).unwrap();
        assert_eq!(log, "one\ntwo\n");
    }
}
