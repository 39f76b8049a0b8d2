//! The unprivileged tier: tests that need no root, no loop device, no udevd and no
//! dockerd (the verifier on real signed metadata, the policy, the generator against the
//! worked example, the units, the fuzz corpora, status and feedback files). Any user runs
//! them with `cargo test --workspace`.

#[path = "../common/mod.rs"]
mod common;

mod check_attacks;
mod check_policy;
mod check_reference;
mod current;
mod feedback;
mod fuzz_replay;
mod gen_vectors;
mod interop;
mod packaging;
mod report_read;
mod units;
