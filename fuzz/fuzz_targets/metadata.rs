//! Metadata through the whole TUF verifier, from a genuinely signed bundle of the test
//! kit with one file replaced or re-signed (see `usb_update::fuzzing::metadata`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| usb_update::fuzzing::metadata::check(data));
