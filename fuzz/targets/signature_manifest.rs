//! The operator's signature file and its manifest against a fixed tuf/ (the check is
//! `test_kit::fuzzing::manifest`, where its seeds are built).

pub fn run(data: &[u8]) {
    test_kit::fuzzing::check("signature_manifest").expect("a fuzzing target")(data)
}
