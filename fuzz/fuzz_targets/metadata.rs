//! cargo-fuzz entry of `metadata`; the target itself is `fuzz/targets/metadata.rs`, which
//! `tests/unprivileged/fuzz_replay.rs` also runs on every input of `fuzz/corpus/metadata/`.
#![no_main]

#[path = "../targets/metadata.rs"]
mod target;

libfuzzer_sys::fuzz_target!(|data: &[u8]| target::run(data));
