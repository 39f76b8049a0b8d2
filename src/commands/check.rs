//! `usb-update check`: everything `install` decides, without changing anything: the
//! [`crate::core::evaluate`] core's report, as lines for people (or JSON, by the CLI).

use std::path::Path;

use serde::Serialize;

use crate::core::evaluate::Report;
use crate::policy::fmt_version;

/// The human lines of a report, one per step.
pub fn human_lines(r: &Report, src: &Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(d) = &r.device {
        out.push(format!(
            "device: hardware id {}, tags {:?}, type {}, package manager {}, booted commit {}",
            d.hardware_id,
            d.tags,
            serde_name(&d.kind),
            serde_name(&d.package_manager),
            d.booted_commit.as_deref().unwrap_or("unknown")
        ));
    }
    let built = r.device.as_ref().and_then(|d| d.built.as_deref());
    out.push(format!(
        "device time: {} (image built {})",
        r.device_time,
        built.unwrap_or("unknown")
    ));
    for s in &r.roots {
        out.push(format!(
            "root: v{} expires {} ({})",
            s.version, s.expires, s.source
        ));
    }
    for (name, role) in [
        ("timestamp", &r.timestamp),
        ("snapshot", &r.snapshot),
        ("targets", &r.targets),
    ] {
        if let Some(i) = role {
            out.push(format!("{name}: v{} expires {}", i.version, i.expires));
        }
    }
    if let Some(key) = &r.signature {
        out.push(format!("operator signature: by trusted key {key}"));
    }
    match (&r.bundle, r.timestamp.is_some()) {
        (Some(b), _) => out.push(format!(
            "bundle {}: type {}, tag {}, v{} expires {}, lists {}",
            src.display(),
            b.index.kind,
            b.index.tag,
            b.version,
            b.expires,
            b.index.targets.join(", ")
        )),
        (None, true) => out.push(format!(
            "bundle {}: no bundle-targets.json (allowed by policy)",
            src.display()
        )),
        (None, false) => {}
    }
    if let Some(s) = &r.selection {
        for c in &s.candidates {
            let verdict = c
                .rejected
                .as_deref()
                .map_or("candidate".to_string(), |w| format!("not a candidate: {w}"));
            out.push(format!(
                "target {} ({}): {verdict}",
                c.name,
                fmt_version(c.version)
            ));
        }
        for n in &s.unknown {
            out.push(format!(
                "target {n}: listed by the bundle but not a TUF target"
            ));
        }
        if s.unlisted > 0 {
            out.push(format!(
                "{} other TUF target(s) are not in this bundle",
                s.unlisted
            ));
        }
    }
    if let Some(c) = &r.selected {
        let apps: Vec<&str> = c.apps.keys().map(String::as_str).collect();
        out.push(format!(
            "selected: {} ({}), commit {}, apps [{}]",
            c.name,
            fmt_version(c.version),
            c.ostree,
            apps.join(", ")
        ));
    }
    if let Some(run) = &r.running {
        out.push(format!(
            "running: {} ({}), commit {}{}",
            run.name,
            fmt_version(run.version),
            run.sha256,
            r.running_from
                .as_deref()
                .map(|f| format!(" ({f})"))
                .unwrap_or_default()
        ));
    }
    for n in &r.notes {
        out.push(format!("note: {n}"));
    }
    if let Some(d) = &r.decision {
        out.push(format!("policy: {d}"));
    }
    if let Some(e) = &r.error {
        out.push(format!("error: {e}"));
    }
    out.push(format!("install would return {}", r.exit_code));
    out
}

/// The name a unit enum has in JSON, for the human lines.
fn serde_name(v: &impl Serialize) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        _ => "?".into(),
    }
}
