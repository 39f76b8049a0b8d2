//! Metadata through the whole TUF verifier, from a genuinely signed bundle of the test kit
//! with one file replaced or re-signed (the check is `usb_update::fuzzing::metadata`, where
//! its seeds are built).

pub fn run(data: &[u8]) {
    usb_update::fuzzing::check("metadata").expect("a fuzzing target")(data)
}
