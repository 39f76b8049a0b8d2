//! cargo-fuzz entry of `oci_chain`; the target itself is `fuzz/targets/oci_chain.rs`, which
//! `tests/unprivileged/fuzz_replay.rs` also runs on every input of `fuzz/corpus/oci_chain/`.
#![no_main]

#[path = "../targets/oci_chain.rs"]
mod target;

libfuzzer_sys::fuzz_target!(|data: &[u8]| target::run(data));
