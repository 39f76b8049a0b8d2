//! Every input of every fuzz corpus (`fuzz/corpus/<target>/`) run once through its target,
//! the same code cargo-fuzz runs (`fuzz/targets/<target>.rs`; `fuzz/fuzz_targets/` only
//! wraps it): CI replays what the fuzzers kept without a fuzzing toolchain, and a fixed
//! crash stays fixed once its input is in the corpus.
//!
//! A target plugs in with one `replay!` line below; `every_target_replays` fails for a
//! corpus directory or a cargo-fuzz binary that has none.

use std::path::{Path, PathBuf};

macro_rules! replay {
    ($($name:ident => $file:literal),* $(,)?) => {
        $(
            #[path = $file]
            mod $name;

            #[test]
            fn $name() {
                replay(stringify!($name), $name::run);
            }
        )*

        const TARGETS: &[&str] = &[$(stringify!($name)),*];
    };
}

replay! {
    bundle_discovery => "../../fuzz/targets/bundle_discovery.rs",
    bundle_tree => "../../fuzz/targets/bundle_tree.rs",
    compose_archive => "../../fuzz/targets/compose_archive.rs",
    compose_file => "../../fuzz/targets/compose_file.rs",
    config_policy => "../../fuzz/targets/config_policy.rs",
    metadata => "../../fuzz/targets/metadata.rs",
    oci_chain => "../../fuzz/targets/oci_chain.rs",
    signature_manifest => "../../fuzz/targets/signature_manifest.rs",
}

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// Run `target` on each file of `fuzz/corpus/<name>/` in name order; a panic names the
/// input.
fn replay(name: &str, target: fn(&[u8])) {
    let dir = fuzz_dir().join("corpus").join(name);
    let mut inputs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("corpus entry").path())
        .filter(|p| p.is_file())
        .collect();
    inputs.sort();
    assert!(!inputs.is_empty(), "{}: no input", dir.display());
    for input in &inputs {
        let data = std::fs::read(input).expect("corpus input");
        if std::panic::catch_unwind(|| target(&data)).is_err() {
            panic!("fuzz target {name} failed on {}", input.display());
        }
    }
    eprintln!("{name}: {} input(s) replayed", inputs.len());
}

#[test]
fn every_target_replays() {
    let corpora: Vec<String> = std::fs::read_dir(fuzz_dir().join("corpus"))
        .expect("fuzz/corpus")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    for c in &corpora {
        assert!(
            TARGETS.contains(&c.as_str()),
            "fuzz/corpus/{c} has no replay! line"
        );
    }
    let manifest = std::fs::read_to_string(fuzz_dir().join("Cargo.toml")).expect("Cargo.toml");
    let bins: Vec<&str> = manifest
        .split("[[bin]]")
        .skip(1)
        .filter_map(|b| b.lines().find_map(|l| l.trim().strip_prefix("name = ")))
        .map(|n| n.trim_matches('"'))
        .collect();
    assert!(!bins.is_empty());
    for b in bins {
        assert!(TARGETS.contains(&b), "fuzz target {b} has no replay! line");
        assert!(
            corpora.iter().any(|c| c == b),
            "fuzz target {b} has no corpus"
        );
    }
}
