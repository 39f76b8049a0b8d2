//! The operator signature file and its signed manifest against a fixed tuf/ (see
//! `usb_update::fuzzing::manifest`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| usb_update::fuzzing::manifest::check(data));
