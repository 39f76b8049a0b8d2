//! cargo-fuzz entry of `compose_file`; the target itself is `fuzz/targets/compose_file.rs`, which
//! `tests/unprivileged/fuzz_replay.rs` also runs on every input of `fuzz/corpus/compose_file/`.
#![no_main]

#[path = "../targets/compose_file.rs"]
mod target;

libfuzzer_sys::fuzz_target!(|data: &[u8]| target::run(data));
