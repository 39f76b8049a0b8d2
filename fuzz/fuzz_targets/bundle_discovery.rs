//! cargo-fuzz entry of `bundle_discovery`; the target itself is `fuzz/targets/bundle_discovery.rs`, which
//! `tests/unprivileged/fuzz_replay.rs` also runs on every input of `fuzz/corpus/bundle_discovery/`.
#![no_main]

#[path = "../targets/bundle_discovery.rs"]
mod target;

libfuzzer_sys::fuzz_target!(|data: &[u8]| target::run(data));
