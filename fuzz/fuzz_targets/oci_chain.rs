//! An app's OCI manifest chain from a store of blobs the input writes (see
//! `usb_update::fuzzing::oci`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| usb_update::fuzzing::oci::check(data));
