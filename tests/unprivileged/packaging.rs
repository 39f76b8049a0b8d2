//! The Debian package's contents (`[package.metadata.deb]` in Cargo.toml, scripts/package):
//! the vendor policy it ships names every policy key, commented, with its default; every
//! file it takes from the repository exists; what the units' `Documentation=` names is
//! installed by it; the man pages cover every command. (The system test installs the
//! package in a VM and reads the man page and the documentation there.)

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::Value;
use usb_update::policy::Policy;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    let p = repo().join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// A policy as JSON, without the list of files it came from.
fn json(policy: &Policy) -> Value {
    let mut v = serde_json::to_value(policy).unwrap();
    v.as_object_mut().unwrap().remove("sources");
    v
}

fn load(text: &str) -> Policy {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("policy.toml");
    std::fs::write(&p, text).unwrap();
    Policy::load(&[p]).unwrap_or_else(|e| panic!("{e:#}\n{text}"))
}

/// `# key = value` lines become `key = value`; explanations (`## ...`) stay comments.
fn uncommented(text: &str) -> String {
    text.lines()
        .map(|l| match l.strip_prefix("# ") {
            Some(rest) if rest.split_once(" = ").is_some_and(|(k, _)| is_key(k)) => rest,
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn is_key(k: &str) -> bool {
    !k.is_empty() && k.chars().all(|c| c.is_ascii_lowercase() || c == '_')
}

#[test]
fn vendor_policy_as_shipped_is_the_default_policy() {
    let shipped = read("packaging/policy.toml");
    assert_eq!(json(&load(&shipped)), json(&Policy::default()));
}

#[test]
fn vendor_policy_names_every_key_with_its_default() {
    let text = uncommented(&read("packaging/policy.toml"));
    let all = json(&load(&text));
    let defaults = json(&Policy::default());
    let parsed: toml::Table = toml::from_str(&text).unwrap();
    for (section, keys) in defaults.as_object().unwrap() {
        let written = parsed
            .get(section)
            .and_then(|s| s.as_table())
            .unwrap_or_else(|| panic!("no [{section}] in packaging/policy.toml"));
        for (key, default) in keys.as_object().unwrap() {
            assert!(
                written.contains_key(key),
                "[{section}] {key} is not in packaging/policy.toml"
            );
            // Keys unset by default carry an example; the others their default value.
            if !default.is_null() {
                assert_eq!(&all[section][key], default, "[{section}] {key}");
            }
        }
        assert_eq!(
            written.len(),
            keys.as_object().unwrap().len(),
            "[{section}]"
        );
    }
    // A default written wrong would show.
    let wrong = load(&text.replace("boot_attempts = 3", "boot_attempts = 4"));
    assert_ne!(
        json(&wrong)["update"]["boot_attempts"],
        defaults["update"]["boot_attempts"]
    );
}

/// (source, destination) of each asset of the package.
fn assets() -> Vec<(String, String)> {
    let manifest: toml::Table = toml::from_str(&read("Cargo.toml")).unwrap();
    let deb = &manifest["package"]["metadata"]["deb"];
    deb["assets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let a = a.as_array().unwrap();
            (
                a[0].as_str().unwrap().to_string(),
                a[1].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// The paths the package installs (without the leading `/`), from the repository's files
/// and the generated man pages; the built binary and completions as their destinations.
fn installed() -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    let pages: Vec<String> = xtask::man_pages()
        .unwrap()
        .into_iter()
        .map(|(name, _)| format!("{name}.1"))
        .collect();
    for (src, dest) in assets() {
        let names: Vec<String> = if src.starts_with("target/packaging/man/") {
            pages.iter().map(|p| p.to_string()).collect()
        } else if src.starts_with("target/") {
            vec![Path::new(&src)
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned()]
        } else if let Some((dir, ext)) = src.split_once("/*") {
            let mut names = Vec::new();
            for e in std::fs::read_dir(repo().join(dir)).unwrap() {
                let name = e.unwrap().file_name().to_string_lossy().into_owned();
                if name.ends_with(ext) {
                    names.push(name);
                }
            }
            assert!(!names.is_empty(), "{src} matches nothing");
            names
        } else {
            assert!(
                repo().join(&src).is_file(),
                "the package's {src} does not exist"
            );
            vec![Path::new(&src)
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned()]
        };
        for name in names {
            out.insert(if dest.ends_with('/') {
                Path::new(&dest).join(&name)
            } else {
                PathBuf::from(&dest)
            });
        }
    }
    out
}

#[test]
fn the_package_installs_what_the_units_documentation_names() {
    let installed = installed();
    for unit in ["usb-update@.service", "usb-update-finalize.service"] {
        let text = read(&format!("systemd/{unit}"));
        let docs: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("Documentation="))
            .flat_map(str::split_whitespace)
            .collect();
        assert!(
            docs.iter().any(|d| d.starts_with("man:")),
            "{unit}: {docs:?}"
        );
        for doc in docs {
            let path = if let Some(file) = doc.strip_prefix("file:///") {
                PathBuf::from(file)
            } else if let Some(page) = doc.strip_prefix("man:") {
                let (name, section) = page.trim_end_matches(')').split_once('(').unwrap();
                PathBuf::from(format!("usr/share/man/man{section}/{name}.{section}"))
            } else {
                panic!("{unit}: {doc} is neither file:/// nor man:");
            };
            assert!(
                installed.contains(&path),
                "{unit}: {doc}: {path:?} is not in the package"
            );
        }
    }
    for must in [
        "usr/bin/usb-update",
        "usr/lib/udev/rules.d/90-usb-update.rules",
        "usr/lib/usb-update/policy.toml",
        "usr/share/doc/usb-update/copyright",
        "usr/share/bash-completion/completions/usb-update",
    ] {
        assert!(
            installed.contains(Path::new(must)),
            "{must} is not in the package: {installed:?}"
        );
    }
    // Never over the real aklite-offline.
    assert!(
        !installed.iter().any(|p| p.ends_with("aklite-offline")),
        "{installed:?}"
    );
}

#[test]
fn a_man_page_for_every_command() {
    let pages: BTreeSet<String> = xtask::man_pages()
        .unwrap()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    let mut want = BTreeSet::from(["usb-update".to_string()]);
    fn walk(cmd: &clap::Command, name: &str, want: &mut BTreeSet<String>) {
        for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
            let n = format!("{name}-{}", sub.get_name());
            want.insert(n.clone());
            walk(sub, &n, want);
        }
    }
    walk(&usb_update::cli::command(), "usb-update", &mut want);
    assert_eq!(pages, want);
    assert!(want.contains("usb-update-agent-handle"), "{want:?}");
}
