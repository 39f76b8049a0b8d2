//! cargo-fuzz entry of `bundle_tree`; the target itself is `fuzz/targets/bundle_tree.rs`,
//! which `tests/unprivileged/fuzz_replay.rs` also runs on every input of `fuzz/corpus/bundle_tree/`.
#![no_main]

#[path = "../targets/bundle_tree.rs"]
mod target;

libfuzzer_sys::fuzz_target!(|data: &[u8]| target::run(data));
