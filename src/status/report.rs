//! The report written back onto the stick: the operator walks away with the stick, and it
//! tells whoever reads it later what happened on which device, without access to the device.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// `usb-update-report-<device>[-<serial>].json`. Fields are only ever added (readers of
/// older reports find the new ones `null`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Report {
    /// The device id (hostname), as given; the file name uses a sanitised form.
    pub device: String,
    /// The primary ECU serial (aktualizr-lite's database, else `[provision]
    /// primary_ecu_serial`), `null` when neither has one: with the hardware id, what tells
    /// two devices of the same hostname apart.
    pub serial: Option<String>,
    pub hardware_id: Option<String>,
    /// When the image the device ran was built (its booted commit's timestamp), if known:
    /// a `started_at` before it means the device clock was wrong.
    pub image_built: Option<String>,
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
    /// `sha256:<hex>` of this file with the hex written as zeros: `usb-update report`
    /// shows a file whose digest does not match as damaged. Not a signature: it catches a
    /// truncated or hand-edited report, not a forger who recomputes it.
    pub digest: Option<String>,
}

/// The digest's prefix; its 64 hex digits follow.
pub const DIGEST_PREFIX: &str = "sha256:";
const DIGEST_HEX: usize = 64;

/// Longest device part of a report file name: FAT allows 255 characters per name, and a
/// name should stay readable in a file manager.
const MAX_DEVICE_CHARS: usize = 64;

/// `usb-update-report-<device>`: the device id kept to `[A-Za-z0-9._-]` (anything else
/// becomes `_`), no leading dot (no hidden file, no `..`), at most 64 characters, so a
/// hostname can neither leave the stick's root nor make a name FAT refuses. Several devices
/// updated from one stick each leave their own report.
pub fn report_file_stem(device: &str, serial: Option<&str>) -> String {
    let name = safe_name(device).unwrap_or_else(|| "device".into());
    match serial.and_then(safe_name) {
        Some(serial) => format!("usb-update-report-{name}-{serial}"),
        None => format!("usb-update-report-{name}"),
    }
}

/// `s` kept to `[A-Za-z0-9._-]`, no leading dot, at most 64 characters; `None` if nothing
/// is left.
fn safe_name(s: &str) -> Option<String> {
    let safe: String = s
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
    (!safe.is_empty()).then_some(safe)
}

/// `json` (a report serialised with its digest set to [`digest_placeholder`]) with the
/// placeholder replaced by the digest of those bytes.
fn seal(mut json: Vec<u8>) -> Vec<u8> {
    let hex = hex::encode(Sha256::digest(&json));
    let placeholder = digest_placeholder();
    if let Some(at) = find(&json, placeholder.as_bytes()) {
        let start = at + DIGEST_PREFIX.len();
        json[start..start + DIGEST_HEX].copy_from_slice(hex.as_bytes());
    }
    json
}

/// `sha256:000…0`: what the digest's hex is while the digest is computed.
pub fn digest_placeholder() -> String {
    format!("{DIGEST_PREFIX}{}", "0".repeat(DIGEST_HEX))
}

/// Does `bytes` carry its own digest? `None`: there is no digest member (an older agent);
/// `Some(false)`: the digest is there, and the bytes are not those it was computed over.
pub fn digest_matches(bytes: &[u8]) -> Option<bool> {
    let key = b"\"digest\": \"";
    let at = find(bytes, key)?;
    let start = at + key.len();
    let Some(found) = bytes.get(start..start + DIGEST_PREFIX.len() + DIGEST_HEX) else {
        return Some(false);
    };
    let Some(hex) = found.strip_prefix(DIGEST_PREFIX.as_bytes()) else {
        return Some(false);
    };
    // One digest member only: a second one (a key inside a string is escaped and cannot
    // match) means a file put together by hand.
    if find(&bytes[start..], key).is_some() {
        return Some(false);
    }
    let mut zeroed = bytes.to_vec();
    zeroed[start + DIGEST_PREFIX.len()..start + DIGEST_PREFIX.len() + DIGEST_HEX].fill(b'0');
    Some(hex::encode(Sha256::digest(&zeroed)).as_bytes() == hex)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Writes `<stem>.json` (the report, pretty) and `<stem>.log` (the lines) into `dir`, the
/// root of the stick mounted writable, each replaced whole and fsynced with the directory:
/// the operator pulls the stick as soon as the LED says so. The log goes first, so a report
/// that exists always has its log. Returns the JSON's path.
pub fn write_report(dir: &Path, report: &Report, log: &[String]) -> anyhow::Result<PathBuf> {
    let stem = report_file_stem(&report.device, report.serial.as_deref());
    let json_path = dir.join(format!("{stem}.json"));
    let log_path = dir.join(format!("{stem}.log"));
    let mut text: String = log.iter().map(|l| format!("{l}\n")).collect();
    if text.is_empty() {
        text.push_str("(no lines)\n");
    }
    crate::durable::replace(&log_path, text.as_bytes())
        .with_context(|| format!("writing the report log {}", log_path.display()))?;
    let sealed = Report {
        digest: Some(digest_placeholder()),
        ..report.clone()
    };
    let mut json = serde_json::to_vec_pretty(&sealed).context("serialising the report")?;
    json.push(b'\n');
    let json = seal(json);
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
                report_file_stem(id, None),
                format!("usb-update-report-{want}"),
                "{id:?}"
            );
        }
        let long = report_file_stem(&"x".repeat(300), None);
        assert_eq!(long.len(), "usb-update-report-".len() + MAX_DEVICE_CHARS);
        // The serial keeps two devices of one hostname apart; an unusable one is left out.
        assert_eq!(
            report_file_stem("imx8", Some("SN/42")),
            "usb-update-report-imx8-SN_42"
        );
        assert_eq!(
            report_file_stem("imx8", Some("..")),
            "usb-update-report-imx8"
        );
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

    #[test]
    fn the_digest_catches_any_change() {
        let t = tempfile::tempdir().unwrap();
        let r = Report {
            device: "d".into(),
            result: "installed".into(),
            ..Report::default()
        };
        let p = write_report(t.path(), &r, &[]).unwrap();
        let bytes = std::fs::read(&p).unwrap();
        assert_eq!(digest_matches(&bytes), Some(true));
        let back: Report = serde_json::from_slice(&bytes).unwrap();
        assert_ne!(back.digest, Some(digest_placeholder()));
        let edited = String::from_utf8(bytes.clone())
            .unwrap()
            .replace("installed", "installeD");
        assert_eq!(digest_matches(edited.as_bytes()), Some(false));
        assert_eq!(digest_matches(&bytes[..bytes.len() - 10]), Some(false));
        assert_eq!(digest_matches(b"{\"device\": \"d\"}"), None);
    }
}
