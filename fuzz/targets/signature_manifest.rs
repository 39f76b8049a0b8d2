//! The operator's signature file and its manifest against a fixed tuf/ (the check is
//! `usb_update::fuzzing::manifest`, where its seeds are built).

pub fn run(data: &[u8]) {
    usb_update::fuzzing::check("signature_manifest").expect("a fuzzing target")(data)
}
