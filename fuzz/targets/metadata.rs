//! Metadata through the whole TUF verifier, from a genuinely signed bundle of the test kit
//! with one file replaced or re-signed (the check is `test_kit::fuzzing::metadata`, where
//! its seeds are built).

pub fn run(data: &[u8]) {
    test_kit::fuzzing::check("metadata").expect("a fuzzing target")(data)
}
