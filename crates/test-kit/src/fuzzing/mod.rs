//! The checks of the fuzz targets that reach the metadata and the manifests (`fuzz/`),
//! here so that ordinary tests can replay a corpus through the same code:
//! `usb_update::fuzzing::check(target)` gives the check of a target by its name.
//!
//! Each check decodes one input, runs it through the real code (the whole TUF verifier
//! with a genuinely signed bundle from the test kit's keys; the operator signature's
//! manifest; the OCI manifest chain of an app) and asserts what must hold for any input.
//! A failed assertion is a panic, which libFuzzer reports as a crash.

pub mod manifest;
pub mod metadata;
pub mod oci;

/// A fuzz target's check.
pub type Check = fn(&[u8]);
/// A fuzz target's seed inputs (`fuzz/corpus/<target>/seed-<n>`).
pub type Seeds = fn() -> Vec<Vec<u8>>;

/// The targets whose checks live here, by their name in `fuzz/Cargo.toml`.
pub const TARGETS: [(&str, Check, Seeds); 3] = [
    ("metadata", metadata::check, metadata::seeds),
    ("signature_manifest", manifest::check, manifest::seeds),
    ("oci_chain", oci::check, oci::seeds),
];

/// The check of `target`, if it is one of [`TARGETS`].
pub fn check(target: &str) -> Option<Check> {
    TARGETS.iter().find(|t| t.0 == target).map(|t| t.1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every seed passes its check, and the checked-in seed files are the seeds as built.
    #[test]
    fn seeds_pass_and_are_checked_in() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus");
        for (name, check, seeds) in TARGETS {
            let dir = root.join(name);
            if std::env::var_os("USB_UPDATE_WRITE_SEEDS").is_some() {
                std::fs::create_dir_all(&dir).unwrap();
                for e in std::fs::read_dir(&dir).unwrap() {
                    let p = e.unwrap().path();
                    if p.file_name()
                        .unwrap()
                        .to_string_lossy()
                        .starts_with("seed-")
                    {
                        std::fs::remove_file(p).unwrap();
                    }
                }
            }
            for (i, seed) in seeds().iter().enumerate() {
                check(seed);
                let file = dir.join(format!("seed-{i}"));
                if std::env::var_os("USB_UPDATE_WRITE_SEEDS").is_some() {
                    std::fs::write(&file, seed).unwrap();
                }
                assert_eq!(
                    std::fs::read(&file).ok().as_ref(),
                    Some(seed),
                    "{} is not the seed as built (USB_UPDATE_WRITE_SEEDS=1 cargo test -p test-kit \
                     --lib fuzzing writes them)",
                    file.display()
                );
            }
        }
    }
}
