//! cargo-fuzz entry of `compose_archive`; the target itself is `fuzz/targets/compose_archive.rs`, which
//! `tests/unprivileged/fuzz_replay.rs` also runs on every input of `fuzz/corpus/compose_archive/`.
#![no_main]

#[path = "../targets/compose_archive.rs"]
mod target;

libfuzzer_sys::fuzz_target!(|data: &[u8]| target::run(data));
