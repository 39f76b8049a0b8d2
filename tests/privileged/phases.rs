//! The phase events that bench/sizes.sh reads: `install` and `run` of a rootfs + apps update
//! (a real sysroot, a private dockerd) report each phase once it finished, with its
//! duration, under the `usb_update::phase` target; the default log level shows none.

use std::collections::BTreeMap;

use crate::common::apps::{app, AppScene, T};

const PHASES_ON: &[(&str, &str)] = &[("USB_UPDATE_LOG", "warn,usb_update::phase=info")];

/// `text` without ANSI colour sequences (the log has them only when stderr is a terminal).
fn plain(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            chars.by_ref().find(|&c| c == 'm');
        } else {
            out.push(c);
        }
    }
    out
}

/// phase -> durations in ms, in the order logged.
fn phases(stderr: &str) -> BTreeMap<String, Vec<f64>> {
    let mut out: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let stderr = plain(stderr);
    for line in stderr.lines().filter(|l| l.contains("usb_update::phase")) {
        let field = |name: &str| {
            let start = line.find(&format!("{name}="))? + name.len() + 1;
            let rest = &line[start..];
            Some(rest.split(' ').next()?.trim_matches('"').to_string())
        };
        let (Some(name), Some(ms)) = (field("phase"), field("ms")) else {
            panic!("a phase event without phase= or ms=: {line}");
        };
        out.entry(name)
            .or_default()
            .push(ms.parse().unwrap_or_else(|_| panic!("ms={ms} in {line}")));
    }
    out
}

#[test]
fn install_and_run_report_each_phase_with_its_duration() {
    let mut s = AppScene::new(None);
    let f = s.f.name.clone();
    let b2 = s.bundle(vec![T::new("2", vec![app(&f, "app-01", "v2")])]);
    let r = s.d.command_env(
        "install",
        &["--src-dir", b2.path().to_str().unwrap()],
        PHASES_ON,
    );
    assert_eq!(r.code, 100, "{}\n{}", r.stdout, r.stderr);
    let got = phases(&r.stderr);
    let names: Vec<&str> = got.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        ["blob-copy", "deploy", "image-load", "pull", "verify"],
        "{}",
        r.stderr
    );
    // The bundle's metadata, then the apps' manifests and archives.
    assert_eq!(got["verify"].len(), 2, "{}", r.stderr);
    for (name, ms) in &got {
        assert!(ms.iter().all(|&m| m >= 0.0), "{name}: {ms:?}");
    }
    // The deployment is made from the pulled commit: neither can take no time at all.
    assert!(got["pull"][0] > 0.0 && got["deploy"][0] > 0.0, "{got:?}");

    s.reboot_into("2", "boot-1");
    let r = s.d.command_env("run", &[], PHASES_ON);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let got = phases(&r.stderr);
    let names: Vec<&str> = got.keys().map(String::as_str).collect();
    assert_eq!(names, ["compose-up", "finalize"], "{}", r.stderr);
    // Starting a container and seeing it up takes longer than a millisecond.
    assert!(got["compose-up"][0] > 1.0, "{got:?}");

    // Without the filter: not a line of it.
    let b3 = s.bundle(vec![T::new("3", vec![app(&f, "app-01", "v3")])]);
    let r = s.install(b3.path());
    assert_eq!(r.code, 100, "{}\n{}", r.stdout, r.stderr);
    assert!(!r.stderr.contains("usb_update::phase"), "{}", r.stderr);
}
