//! `usb-update report DIR`: what the agent wrote onto a stick, one report per device, read
//! back as a table (or JSON) after a site visit.
//!
//! The stick is as hostile here as anywhere: the files are read through [`crate::hostile_fs`]
//! (beneath DIR, no symlinks, regular files only, capped). A report is believed only when it
//! parses, carries its own digest ([`crate::status::report`]), and sits under the name the
//! agent gives a report of the device it names; anything else is a row that says what is
//! wrong with the file, and none of its values. A report of an older agent (no digest) is
//! shown, marked unverified.

use std::path::Path;

use serde::Serialize;

use crate::error::{Code, Error, Result};
use crate::hostile_fs::{Problem, Refused, Tree};
use crate::status::{digest_matches, report_file_stem, Report};

/// The largest report read: a report is a few kilobytes (its notes and error are lines).
pub const MAX_REPORT_BYTES: u64 = 1 << 20;
/// The most entries DIR may have (a stick's root, where the reports are written).
pub const MAX_ENTRIES: usize = 4096;

const PREFIX: &str = "usb-update-report-";
const SUFFIX: &str = ".json";

/// How far a report file can be believed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Parsed, its digest matches, its name is that of the device it names.
    Intact,
    /// Parsed and named right, but without a digest (an agent before digests).
    Unverified,
    /// Not to be believed: truncated, edited, renamed, not a regular file, too large.
    Damaged,
}

/// One report file on the stick.
#[derive(Debug, Serialize)]
pub struct Row {
    /// The file name, relative to DIR.
    pub file: String,
    pub verdict: Verdict,
    /// Why the file is damaged (`null` otherwise).
    pub problem: Option<String>,
    /// The report; `null` when damaged: none of its values are shown.
    pub report: Option<Report>,
}

/// Every report in `dir`, by file name. Errors: `dir` missing or not a directory (14), or
/// unreadable (50). No report at all is 14 as well.
pub fn read(dir: &Path) -> Result<Vec<Row>> {
    let shown = dir.display();
    let tree = Tree::open(dir).map_err(|e| dir_error(dir, &e))?;
    let names = tree
        .names(".", MAX_ENTRIES)
        .map_err(|e| dir_error(dir, &e))?
        .unwrap_or_default();
    let rows: Vec<Row> = names
        .into_iter()
        .filter(|n| n.starts_with(PREFIX) && n.ends_with(SUFFIX))
        .map(|n| read_one(&tree, n))
        .collect();
    if rows.is_empty() {
        return Err(Error::new(
            Code::MetadataNotFound,
            format!("{shown}: no report ({PREFIX}*{SUFFIX}) in this directory"),
        ));
    }
    Ok(rows)
}

/// The exit code of a listing: 0 when every report could be believed (intact or from an
/// older agent), 15 when one is damaged.
pub fn code(rows: &[Row]) -> Code {
    if rows.iter().any(|r| r.verdict == Verdict::Damaged) {
        Code::InvalidBundle
    } else {
        Code::Ok
    }
}

fn dir_error(dir: &Path, e: &Refused) -> Error {
    let code = match e.problem {
        Problem::Io(nix::errno::Errno::ENOENT) | Problem::Kind { .. } => Code::MetadataNotFound,
        _ => Code::Copy,
    };
    let shown = dir.display();
    match &e.problem {
        Problem::Io(nix::errno::Errno::ENOENT) => {
            Error::new(code, format!("{shown}: no such directory"))
        }
        Problem::Kind { found, .. } => Error::new(
            code,
            format!("{shown}: {}, not a directory", found.describe()),
        ),
        Problem::TooMany { cap } => Error::new(
            code,
            format!("{shown}: more than {cap} entries: not a stick's root"),
        ),
        _ => Error::new(code, format!("{shown}: cannot be read: {e}")),
    }
}

fn damaged(file: String, problem: String) -> Row {
    Row {
        file,
        verdict: Verdict::Damaged,
        problem: Some(problem),
        report: None,
    }
}

fn read_one(tree: &Tree, file: String) -> Row {
    let bytes = match tree.read_capped(&file, MAX_REPORT_BYTES) {
        Ok(Some(b)) => b,
        Ok(None) => return damaged(file, "removed while the directory was read".into()),
        Err(e) => {
            let why = e.to_string();
            return damaged(file, why);
        }
    };
    let report: Report = match serde_json::from_slice(&bytes) {
        Ok(r) => r,
        Err(e) if e.is_eof() => {
            let why = format!("truncated: ends after {} bytes", bytes.len());
            return damaged(file, why);
        }
        Err(e) => return damaged(file, format!("not a report: {e}")),
    };
    let verdict = match digest_matches(&bytes) {
        Some(true) => Verdict::Intact,
        Some(false) => {
            let why = "edited or damaged: its digest does not match its content".to_string();
            return damaged(file, why);
        }
        None => Verdict::Unverified,
    };
    let named = format!(
        "{}{SUFFIX}",
        report_file_stem(&report.device, report.serial.as_deref())
    );
    if named != file {
        let why = format!("renamed: the device it names writes {named}");
        return damaged(file, why);
    }
    if humantime::parse_rfc3339(&report.started_at).is_err() {
        let why = format!(
            "not a report: started_at {:?} is not a time",
            report.started_at
        );
        return damaged(file, why);
    }
    Row {
        file,
        verdict,
        problem: None,
        report: Some(report),
    }
}

/// A line of the table: aligned cells, or a damaged file's line of its own.
enum Line {
    Cells(Vec<String>),
    Whole(String),
}

/// The table: one row per report (a damaged file's as one line, `<file>  DAMAGED: <why>`),
/// then a line for each error and each clock the device had wrong. Every value is shown on
/// one line, without control characters, and cut at [`MAX_CELL`] characters: a report is
/// read from a stick, not trusted with a terminal.
pub fn human_lines(rows: &[Row], now: &str) -> Vec<String> {
    let header = [
        "DEVICE",
        "SERIAL / HARDWARE ID",
        "BEFORE -> AFTER",
        "RESULT",
        "WHEN (DEVICE CLOCK)",
        "TOOK",
    ];
    let mut table = vec![Line::Cells(header.map(str::to_string).to_vec())];
    let mut after = Vec::new();
    for row in rows {
        let Some(r) = &row.report else {
            let why = row.problem.as_deref().unwrap_or("damaged");
            let line = format!("{}  DAMAGED: {}", cell(&row.file), capped(why, MAX_LINE));
            table.push(Line::Whole(line));
            continue;
        };
        let mut device = cell(&r.device);
        if row.verdict == Verdict::Unverified {
            device.push_str(" (unverified)");
        }
        let id = format!(
            "{} / {}",
            r.serial.as_deref().unwrap_or("-"),
            r.hardware_id.as_deref().unwrap_or("-")
        );
        let versions = format!(
            "{} -> {}",
            r.before.as_deref().unwrap_or("?"),
            r.after.as_deref().unwrap_or("?")
        );
        let took = r
            .durations
            .get("total")
            .map_or(String::new(), |s| seconds(*s));
        table.push(Line::Cells(vec![
            device,
            cell(&id),
            cell(&versions),
            cell(&format!("{} {}", r.exit_code, r.result)),
            cell(&r.started_at),
            took,
        ]));
        // Two devices can share a hostname: the serial says which one a line is about.
        let who = match r.serial.as_deref() {
            Some(serial) => format!("{} ({})", cell(&r.device), cell(serial)),
            None => cell(&r.device),
        };
        if let Some(e) = &r.error {
            after.push(format!("{who}: error: {}", capped(e, MAX_LINE)));
        }
        if let Some(built) = r
            .image_built
            .as_deref()
            .filter(|b| r.started_at.as_str() < *b)
        {
            after.push(format!(
                "{who}: the device clock ({}) was before its image was built ({}): its times \
                 are wrong",
                cell(&r.started_at),
                cell(built)
            ));
        }
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            table
                .iter()
                .filter_map(|l| match l {
                    Line::Cells(c) => Some(c[i].chars().count()),
                    Line::Whole(_) => None,
                })
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out: Vec<String> = table
        .into_iter()
        .map(|l| match l {
            Line::Whole(line) => line,
            Line::Cells(cells) => {
                let cells: Vec<String> = cells
                    .iter()
                    .zip(&widths)
                    .map(|(c, w)| format!("{c:<w$}"))
                    .collect();
                cells.join("  ").trim_end().to_string()
            }
        })
        .collect();
    out.extend(after);
    out.push(format!(
        "{} report(s); this computer's time {now}",
        rows.len()
    ));
    out
}

/// The longest value shown in one cell.
pub const MAX_CELL: usize = 60;

fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// The longest error line shown.
const MAX_LINE: usize = 400;

fn cell(s: &str) -> String {
    capped(s, MAX_CELL)
}

fn capped(s: &str, max: usize) -> String {
    let s = one_line(s);
    if s.chars().count() > max {
        let cut: String = s.chars().take(max - 3).collect();
        format!("{cut}...")
    } else {
        s
    }
}

fn seconds(s: f64) -> String {
    if !s.is_finite() || s < 0.0 {
        return "?".into();
    }
    let whole = s.round() as u64;
    match whole {
        0..=59 => format!("{s:.1} s"),
        _ => format!("{} min {} s", whole / 60, whole % 60),
    }
}
