//! cargo-fuzz entry of `signature_manifest`; the target itself is `fuzz/targets/signature_manifest.rs`, which
//! `tests/unprivileged/fuzz_replay.rs` also runs on every input of `fuzz/corpus/signature_manifest/`.
#![no_main]

#[path = "../targets/signature_manifest.rs"]
mod target;

libfuzzer_sys::fuzz_target!(|data: &[u8]| target::run(data));
