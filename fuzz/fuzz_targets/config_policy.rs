//! cargo-fuzz entry of `config_policy`; the target itself is `fuzz/targets/config_policy.rs`, which
//! `tests/unprivileged/fuzz_replay.rs` also runs on every input of `fuzz/corpus/config_policy/`.
#![no_main]

#[path = "../targets/config_policy.rs"]
mod target;

libfuzzer_sys::fuzz_target!(|data: &[u8]| target::run(data));
